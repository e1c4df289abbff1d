//! Every bad-input rule of a submission, and the message that names the field.

use iris_worker_core::proto;
use iris_worker_core::testing::request;
use iris_worker_core::*;

fn refused(req: proto::worker::RunTaskRequest) -> ValidationError {
    TaskSpec::from_request(&req).expect_err("must be refused")
}

fn ok() -> proto::worker::RunTaskRequest {
    request("job/task-0", 0, &["echo", "hi"])
}

#[test]
fn canonical_request_is_accepted() {
    let spec = TaskSpec::from_request(&ok()).unwrap();
    assert_eq!(spec.task_id.as_str(), "job/task-0");
    assert_eq!(
        spec.entrypoint,
        Entrypoint::Command(vec!["echo".into(), "hi".into()])
    );
}

#[test]
fn bad_task_ids_name_the_field() {
    for bad in ["", "a/../b", "/job/t", "job/t/", "job\0x", "job\nx", "a//b"] {
        let mut req = ok();
        req.task_id = bad.into();
        let err = refused(req);
        assert_eq!(err.field, "task_id", "{bad:?}");
        assert!(err.to_string().starts_with("task_id "), "{err}");
    }
    let mut req = ok();
    req.task_id = "x".repeat(ID_LEN_MAX_FOR_TEST + 1);
    assert_eq!(refused(req).field, "task_id");
}

const ID_LEN_MAX_FOR_TEST: usize = iris_worker_core::ID_LEN_MAX;

#[test]
fn bad_job_id() {
    let mut req = ok();
    req.job_id = "../etc".into();
    assert_eq!(refused(req).field, "job_id");
    let mut req = ok();
    req.job_id = String::new();
    assert_eq!(refused(req).field, "job_id");
}

#[test]
fn port_names() {
    for bad in [
        vec!["http-1"],
        vec![""],
        vec!["a b"],
        vec!["ü"],
        vec!["http", "http"],
        vec!["http", "HTTP"],
    ] {
        let mut req = ok();
        req.ports = bad.iter().map(|s| s.to_string()).collect();
        let err = refused(req);
        assert_eq!(err.field, "ports", "{bad:?}");
    }
    let mut req = ok();
    req.ports = (0..65).map(|i| format!("p{i}")).collect();
    assert!(refused(req).message.contains("limit"));
    let mut req = ok();
    req.ports = vec!["http".into(), "grpc_2".into()];
    assert!(TaskSpec::from_request(&req).is_ok());
}

#[test]
fn entrypoint_rules() {
    let mut req = ok();
    req.entrypoint = None;
    assert_eq!(refused(req).field, "entrypoint");
    let mut req = request("job/task-0", 0, &[]);
    assert_eq!(refused(req.clone()).field, "entrypoint.command.argv");
    req = request("job/task-0", 0, &["", "x"]);
    assert_eq!(refused(req).field, "entrypoint.command.argv");
    let req = request("job/task-0", 0, &["echo", "a\0b"]);
    assert!(refused(req).message.contains("NUL"));
    let mut req = ok();
    req.entrypoint = Some(proto::Entrypoint {
        kind: Some(proto::entrypoint::Kind::Callable(Vec::new())),
    });
    assert_eq!(refused(req).field, "entrypoint.callable");
    let mut req = ok();
    req.entrypoint = Some(proto::Entrypoint {
        kind: Some(proto::entrypoint::Kind::Callable(vec![0x80, 4, 0x95])),
    });
    assert!(matches!(
        TaskSpec::from_request(&req).unwrap().entrypoint,
        Entrypoint::Callable(_)
    ));
}

#[test]
fn numeric_fields() {
    let mut req = ok();
    req.timeout_seconds = -1;
    assert_eq!(refused(req).field, "timeout_seconds");
    let mut req = ok();
    req.attempt_id = -1;
    assert_eq!(refused(req).field, "attempt_id");
    let mut req = ok();
    req.task_index = -1;
    assert_eq!(refused(req).field, "task_index");
    let mut req = ok();
    req.task_index = 4;
    req.num_tasks = 4;
    assert_eq!(refused(req).field, "task_index");
    let mut req = ok();
    req.resources = Some(proto::ResourceSpecProto {
        memory_bytes: -5,
        ..Default::default()
    });
    assert_eq!(refused(req).field, "resources.memory_bytes");
}

#[test]
fn env_vars_and_paths() {
    let with_env = |k: &str, v: &str| {
        let mut req = ok();
        req.environment = Some(proto::EnvironmentConfig {
            env_vars: [(k.to_string(), v.to_string())].into_iter().collect(),
            ..Default::default()
        });
        req
    };
    assert_eq!(refused(with_env("", "v")).field, "environment.env_vars");
    assert_eq!(refused(with_env("A=B", "v")).field, "environment.env_vars");
    let err = refused(with_env("SECRET", "hunter2\0"));
    assert!(
        !err.to_string().contains("hunter2"),
        "values are never echoed: {err}"
    );
    assert!(TaskSpec::from_request(&with_env("A", "")).is_ok());
    let mut req = ok();
    req.bundle_gcs_path = "file:///x\n.zip".into();
    assert_eq!(refused(req).field, "bundle_gcs_path");
    let mut req = ok();
    req.environment = Some(proto::EnvironmentConfig {
        docker_image: "img\0".into(),
        ..Default::default()
    });
    assert_eq!(refused(req).field, "environment.docker_image");
}

#[test]
fn timeout_and_resources_convert() {
    let mut req = ok();
    req.timeout_seconds = 30;
    req.resources = Some(proto::ResourceSpecProto {
        cpu: 2,
        memory_bytes: 1 << 30,
        ..Default::default()
    });
    let spec = TaskSpec::from_request(&req).unwrap();
    assert_eq!(spec.timeout_ms, 30_000);
    assert_eq!(spec.resources.cpu_millicores, 2000);
    assert_eq!(spec.resources.memory_bytes, 1 << 30);
}
