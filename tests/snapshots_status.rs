//! Snapshots of what users see: the env of a canonical request, and the TaskStatus proto.

mod common;

use std::collections::BTreeMap;

use common::*;
use iris_worker::core::*;

fn canonical_spec() -> TaskSpec {
    let mut req = request("train/task-3", 2, &["python3", "-m", "train"]);
    req.task_index = 3;
    req.num_tasks = 8;
    req.bundle_gcs_path = "file:///bundles/train.zip".into();
    req.ports = vec!["http".into(), "debug_1".into()];
    req.environment = Some(iris_worker::proto::EnvironmentConfig {
        env_vars: [
            ("PYTHONUNBUFFERED", "1"),
            ("IRIS_TASK_ID", "user-tried-to-override"),
            ("ALPHA", "a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    });
    spec_with(req)
}

fn render_env(env: &[(String, String)]) -> String {
    env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn env_for(flavour: RuntimeFlavour) -> Vec<(String, String)> {
    let spec = canonical_spec();
    let ports: BTreeMap<String, u16> =
        [("http".to_string(), 30001), ("debug_1".to_string(), 30002)]
            .into_iter()
            .collect();
    let ctx = EnvContext {
        flavour,
        worker_id: Some("worker-1"),
        controller_address: Some("http://127.0.0.1:10000"),
        advertise_host: "10.1.2.3",
        workdir: "/workdir",
        // Bridged containers: a loopback controller is reached through the gateway.
        host_network: false,
        python: "python3",
        cache_root: "/cache",
        worker_region: None,
        task_env: &[],
    };
    build_iris_env(&spec, &ports, &ctx)
}

#[test]
fn env_docker_flavour() {
    let env = env_for(RuntimeFlavour::Docker);
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        get("IRIS_TASK_ID"),
        Some("train/task-3"),
        "IRIS_ wins a clash"
    );
    assert_eq!(get("IRIS_BIND_HOST"), Some("0.0.0.0"));
    assert_eq!(
        get("IRIS_CONTROLLER_ADDRESS"),
        Some("http://host.docker.internal:10000")
    );
    assert_eq!(env.iter().filter(|(k, _)| k == "IRIS_TASK_ID").count(), 1);
    insta::assert_snapshot!(render_env(&env));
}

#[test]
fn env_process_flavour() {
    let env = env_for(RuntimeFlavour::Process);
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("IRIS_BIND_HOST"), Some("127.0.0.1"));
    assert_eq!(
        get("IRIS_CONTROLLER_ADDRESS"),
        Some("http://127.0.0.1:10000")
    );
    assert_eq!(get("IRIS_PORT_HTTP"), Some("30001"));
    assert_eq!(get("IRIS_PORT_DEBUG_1"), Some("30002"));
    insta::assert_snapshot!(render_env(&env));
}

#[test]
fn env_without_worker_id_or_controller_omits_them() {
    let spec = spec("job/task-0", 0);
    let ctx = EnvContext {
        flavour: RuntimeFlavour::Process,
        worker_id: None,
        controller_address: None,
        advertise_host: "127.0.0.1",
        workdir: "/cache/tasks/w",
        host_network: true,
        python: "python3",
        cache_root: "/cache",
        worker_region: None,
        task_env: &[],
    };
    let env = build_iris_env(&spec, &BTreeMap::new(), &ctx);
    let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert!(!keys.contains(&"IRIS_WORKER_ID"));
    assert!(!keys.contains(&"IRIS_CONTROLLER_ADDRESS"));
    assert!(!keys.contains(&"IRIS_BUNDLE_GCS_PATH"));
}

/// A 2026-06 request as Iris's client sends it (a callable, env vars, pip packages, a region
/// constraint, a port), through the era's adapter.
fn reconcile_spec() -> TaskSpec {
    use iris_worker::proto::v2026_06::iris::job;
    let req = job::RunTaskRequest {
        task_id: "/alice/train/1".into(),
        num_tasks: 2,
        attempt_id: 3,
        attempt_uid: "u-1".into(),
        ports: vec!["actor".into()],
        entrypoint: Some(job::RuntimeEntrypoint {
            run_command: Some(job::CommandEntrypoint {
                argv: [
                    "bash",
                    "-c",
                    "exec $IRIS_PYTHON -u $IRIS_WORKDIR/_callable_runner.py",
                ]
                .map(String::from)
                .to_vec(),
            }),
            ..Default::default()
        }),
        environment: Some(job::EnvironmentConfig {
            env_vars: [
                ("HF_TOKEN", "t0ken"),
                ("IRIS_BIND_HOST", "127.0.0.9"),
                ("DATA", "/app/data"),
                ("IRIS_WORKER_REGION", "spoofed"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            pip_packages: vec!["six".into()],
            ..Default::default()
        }),
        resources: Some(job::ResourceSpecProto {
            cpu_millicores: 500,
            ..Default::default()
        }),
        constraints: vec![job::Constraint {
            key: "region".into(),
            value: Some(job::AttributeValue {
                value: Some(job::attribute_value::Value::StringValue("us-east5".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    iris_worker::shell::era2026_06::spec::task_spec(&req, "u-1").unwrap()
}

fn reconcile_env(flavour: RuntimeFlavour, workdir: &str) -> Vec<(String, String)> {
    let ports: BTreeMap<String, u16> = [("actor".to_string(), 30005)].into_iter().collect();
    let ctx = EnvContext {
        flavour,
        worker_id: Some("worker-1"),
        controller_address: Some("127.0.0.1:10000"),
        advertise_host: "10.1.2.3",
        workdir,
        host_network: true,
        python: "/opt/venv/bin/python",
        cache_root: "/cache",
        worker_region: Some("us-east5"),
        task_env: &[],
    };
    build_iris_env(&reconcile_spec(), &ports, &ctx)
}

fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What Iris 0.2.20's worker gives a task (`build_common_iris_env` and `_create_container`):
/// the job's env_vars override the IRIS_ set, the controller is a URL, children inherit the
/// job's env, packages and region constraint as JSON.
#[test]
fn env_2026_06_docker() {
    let env = reconcile_env(RuntimeFlavour::Docker, "/app");
    assert_eq!(get(&env, "IRIS_TASK_ID"), Some("/alice/train/1:3"));
    assert_eq!(
        get(&env, "IRIS_BIND_HOST"),
        Some("127.0.0.9"),
        "the job's own wins"
    );
    assert_eq!(
        get(&env, "IRIS_CONTROLLER_ADDRESS"),
        Some("http://127.0.0.1:10000")
    );
    assert_eq!(
        get(&env, "IRIS_CONTROLLER_URL"),
        Some("http://127.0.0.1:10000")
    );
    assert_eq!(get(&env, "IRIS_PYTHON"), Some("python"));
    assert_eq!(get(&env, "IRIS_BUNDLE_ID"), Some(""));
    assert_eq!(get(&env, "IRIS_JOB_PIP_PACKAGES"), Some(r#"["six"]"#));
    assert_eq!(get(&env, "DATA"), Some("/app/data"));
    assert_eq!(env.iter().filter(|(k, _)| k == "IRIS_BIND_HOST").count(), 1);
    assert_eq!(
        get(&env, "IRIS_WORKER_REGION"),
        Some("us-east5"),
        "the worker's region, which the job's env cannot spoof"
    );
    assert_eq!(
        env.iter()
            .filter(|(k, _)| k == "IRIS_WORKER_REGION")
            .count(),
        1
    );
    insta::assert_snapshot!(render_env(&env));
}

/// The process runtime runs the same request on the host: IRIS_PYTHON is the worker's, the
/// container layout's paths point at the workdir and the worker's cache dir.
#[test]
fn env_2026_06_process() {
    let env = reconcile_env(RuntimeFlavour::Process, "/cache/tasks/w");
    assert_eq!(get(&env, "IRIS_PYTHON"), Some("/opt/venv/bin/python"));
    assert_eq!(get(&env, "IRIS_WORKDIR"), Some("/cache/tasks/w"));
    assert_eq!(get(&env, "DATA"), Some("/cache/tasks/w/data"));
    assert_eq!(
        get(&env, "UV_PYTHON_INSTALL_DIR"),
        Some("/cache/uv-cache/python")
    );
    assert_eq!(get(&env, "CARGO_TARGET_DIR"), Some("/cache/cargo-target"));
    assert_eq!(get(&env, "IRIS_PORT_ACTOR"), Some("30005"));
    insta::assert_snapshot!(render_env(&env));
}

#[test]
fn status_of_a_finished_task() {
    let mut h = Harness::registered();
    h.submit(spec("job/task-0", 0)).unwrap();
    let first = key("job/task-0", 0);
    h.now = 1_000;
    h.start(&first);
    h.now = 5_000;
    h.event(Event::Exited {
        attempt: first,
        status: ExitStatus::code(1),
    });
    h.now = 6_000;
    let mut req = request("job/task-0", 1, &["python3", "train.py"]);
    req.ports = vec!["http".into()];
    h.submit(spec_with(req)).unwrap();
    let second = key("job/task-0", 1);
    h.now = 6_500;
    h.start(&second);
    for (at, memory_mb) in [(7_000, 300), (8_000, 120)] {
        h.now = at;
        h.event(Event::Stats {
            attempt: second.clone(),
            usage: ResourceUsage {
                memory_mb,
                cpu_millicores: 1500,
                cpu_percent: 150,
                process_count: 3,
                disk_mb: 12,
                ..Default::default()
            },
        });
    }
    h.now = 9_000;
    h.event(Event::Exited {
        attempt: second,
        status: ExitStatus {
            code: Some(137),
            signal: Some(9),
            oom_killed: true,
            ..ExitStatus::default()
        },
    });
    let status = h
        .core
        .task_status(&TaskId::new("job/task-0").unwrap())
        .unwrap();
    assert!(status.oom_killed);
    assert_eq!(status.resource_usage.unwrap().memory_peak_mb, 300);
    assert_eq!(status.attempts.len(), 2);
    insta::assert_debug_snapshot!(status);
}
