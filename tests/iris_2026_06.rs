//! The real Iris controller of the reconcile era (marin-iris 0.2.20.dev202606180959 from PyPI,
//! installed by `scripts/setup-test-deps`) runs jobs on the real binary: submitted with the
//! controller's own client (`tests/iris2026_06/drive.py`), checked through the controller and
//! its log service. With CI=true a missing venv fails; elsewhere these tests say so and skip.

mod support;

#[path = "iris2026_06/controller.rs"]
#[allow(dead_code)] // Iris's own worker serves tests/iris_reference.rs and the bench
mod controller;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use controller::{Controller, parse, python};
use serde_json::Value;
use support::*;

const DOCKER_IMAGE: &str = "iris-test:busybox-uv";

fn worker(controller: &Controller, dir: &Path, protocol: &str, id: &str) -> WorkerProcess {
    let addr = controller.address();
    WorkerProcess::start(
        dir,
        &[
            "--controller-address",
            &addr,
            "--iris-protocol",
            protocol,
            "--worker-id",
            id,
        ],
    )
}

/// The flags of a 2026-06 worker in the docker runtime on the test image.
const DOCKER: &[&str] = &["--runtime", "docker", "--default-image", DOCKER_IMAGE];

fn lines_of(job: &Value, key: &str) -> Vec<String> {
    job["logs"][key]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|l| format!("{} {}", l[0].as_str().unwrap(), l[1].as_str().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

fn task_states(job: &Value) -> Vec<(String, i64, String)> {
    job["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["state"].as_str().unwrap().to_string(),
                t["exit_code"].as_i64().unwrap(),
                t["error"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Processes of the task `task_path` still alive.
fn processes_of(task_path: &str) -> usize {
    task_processes(|task| task == task_path).len()
}

#[test]
fn jobs_run_end_to_end_under_the_real_controller() {
    let Some(python) = python() else {
        return;
    };
    let controller = Controller::start(python);
    let dir = temp_dir("iris-2026-06-worker");
    // `auto` finds the 2026-06 controller by its Register.
    let worker = worker(&controller, &dir, "auto", "w-e2e");

    let script = "echo hello $IRIS_TASK_ID; echo num=$IRIS_NUM_TASKS; \
                  [ \"$(pwd)\" = \"$IRIS_WORKDIR\" ] && echo workdir-ok; echo url=$IRIS_CONTROLLER_URL; \
                  echo oops >&2";
    let ok = controller.drive("/alice/ok", 3, &[], &["sh", "-c", script]);
    assert_eq!(ok["state"], "JOB_STATE_SUCCEEDED", "{ok}");
    for i in 0..3 {
        let lines = lines_of(&ok, &format!("/alice/ok/{i}:0"));
        let url = format!("stdout url={}", controller.url());
        for want in [
            &format!("stdout hello /alice/ok/{i}"),
            "stdout num=3",
            "stdout workdir-ok",
            &url,
            "stderr oops",
        ] {
            let n = lines.iter().filter(|l| l.as_str() == want).count();
            assert_eq!(n, 1, "{want:?} once in the log service: {lines:?}");
        }
    }

    let fail = controller.drive(
        "/alice/fail",
        1,
        &[],
        &["sh", "-c", "echo boom >&2; exit 3"],
    );
    assert_eq!(fail["state"], "JOB_STATE_FAILED", "{fail}");
    let (state, code, error) = &task_states(&fail)[0];
    assert_eq!((state.as_str(), *code), ("TASK_STATE_FAILED", 3), "{fail}");
    // Iris's wording: the exit code and the last line on stderr.
    assert_eq!(error, "Exit code: 3. stderr: boom", "{fail}");

    let files = controller.drive(
        "/alice/files",
        1,
        &[
            "--files",
            "data.txt=hello from a workdir file,sub/more.txt=nested",
        ],
        &["sh", "-c", "cat data.txt; echo; cat sub/more.txt"],
    );
    assert_eq!(files["state"], "JOB_STATE_SUCCEEDED", "{files}");
    let lines = lines_of(&files, "/alice/files/0:0");
    assert_eq!(
        lines,
        ["stdout hello from a workdir file", "stdout nested"],
        "{files}"
    );

    let killed = controller.drive(
        "/alice/kill",
        1,
        &["--terminate-after", "2"],
        &["sh", "-c", "echo up; sleep 600"],
    );
    assert_eq!(killed["state"], "JOB_STATE_KILLED", "{killed}");
    assert!(killed["seconds"].as_f64().unwrap() < 15.0, "{killed}");
    let start = Instant::now();
    while processes_of("/alice/kill/0") > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the killed task's processes live on"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (status, metrics) = http_get(&worker.dashboard, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("iris_worker_iris_protocol{era=\"2026-06\"} 1"),
        "{metrics}"
    );
    let pushed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("iris_worker_log_lines_pushed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pushed-lines counter: {metrics}"));
    assert!(pushed >= 20.0, "{pushed} lines pushed");
    assert!(
        metrics.contains("iris_worker_log_push_lag_lines "),
        "{metrics}"
    );
    let (status, page) = http_get(&worker.dashboard, "/", &[]);
    assert_eq!(status, 200);
    assert!(
        page.contains("Iris 2026-06 (reconcile)"),
        "the dashboard names the era: {page}"
    );
}

/// The bytes drive.py's `--big-file` makes: numbered lines, cut to `size`.
fn big_file(size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0.. {
        if out.len() >= size {
            break;
        }
        out.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    out.truncate(size);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What Iris's own client sends beyond inline files: a file past the controller's 10 KB
/// threshold (a blob ref, fetched from `/blobs/<sha256>` and checked), a bundle zip (bundle_id)
/// and setup_commands whose `.venv` the command then runs in; a failing setup fails the task
/// with its output. `run` adds the runtime's own flags.
fn blobs_bundles_and_setup(controller: &Controller, prefix: &str) {
    let want_sha = sha256_hex(&big_file(200_000));
    let blob = controller.drive(
        &format!("{prefix}-blob"),
        1,
        &[
            "--big-file",
            "big.bin=200000",
            "--files",
            "small.txt=inline",
        ],
        &["sh", "-c", "sha256sum big.bin; cat small.txt; echo"],
    );
    assert_eq!(blob["state"], "JOB_STATE_SUCCEEDED", "{blob}");
    let lines = lines_of(&blob, &format!("{prefix}-blob/0:0"));
    let stdout: Vec<&String> = lines.iter().filter(|l| l.starts_with("stdout")).collect();
    assert_eq!(
        stdout,
        [&format!("stdout {want_sha}  big.bin"), "stdout inline"],
        "{blob}"
    );

    let bundled = controller.drive(
        &format!("{prefix}-bundle"),
        1,
        &[
            "--bundle",
            "run.sh=echo from the bundle $IRIS_BUNDLE_ID,pkg/data.txt=packaged",
        ],
        &["sh", "-c", "sh run.sh; cat pkg/data.txt; echo"],
    );
    assert_eq!(bundled["state"], "JOB_STATE_SUCCEEDED", "{bundled}");
    let lines = lines_of(&bundled, &format!("{prefix}-bundle/0:0"));
    let stdout: Vec<&String> = lines.iter().filter(|l| l.starts_with("stdout")).collect();
    assert_eq!(stdout.len(), 2, "{bundled}");
    let from_bundle = stdout[0].strip_prefix("stdout from the bundle ").unwrap();
    assert!(
        from_bundle.len() == 64 && from_bundle.bytes().all(|b| b.is_ascii_hexdigit()),
        "IRIS_BUNDLE_ID is the bundle's sha256: {bundled}"
    );
    assert_eq!(stdout[1], "stdout packaged", "{bundled}");

    let setup = [
        "--setup",
        "echo setting up in $(pwd)",
        "--setup",
        "mkdir -p .venv/bin && printf '#!/bin/sh\\necho venv tool runs\\n' > .venv/bin/tool",
        "--setup",
        "chmod +x .venv/bin/tool",
    ];
    let set_up = controller.drive(&format!("{prefix}-setup"), 1, &setup, &["tool"]);
    assert_eq!(set_up["state"], "JOB_STATE_SUCCEEDED", "{set_up}");
    let lines = lines_of(&set_up, &format!("{prefix}-setup/0:0"));
    assert!(
        lines.iter().any(|l| l.starts_with("build setting up in /")),
        "setup output is the build log: {lines:?}"
    );
    assert!(
        lines.contains(&"stdout venv tool runs".to_string()),
        "the command runs in the setup's .venv: {lines:?}"
    );

    let broken = controller.drive(
        &format!("{prefix}-setup-fails"),
        1,
        &[
            "--setup",
            "echo about to fail",
            "--setup",
            "exit 7",
            "--setup",
            "echo never",
        ],
        &["sh", "-c", "echo the command never runs"],
    );
    assert_eq!(broken["state"], "JOB_STATE_FAILED", "{broken}");
    let (state, _, error) = &task_states(&broken)[0];
    assert_eq!(state, "TASK_STATE_FAILED", "{broken}");
    assert!(
        error.contains("setup_commands failed with exit code 7") && error.contains("about to fail"),
        "{error}"
    );
    let lines = lines_of(&broken, &format!("{prefix}-setup-fails/0:0"));
    assert!(
        !lines.iter().any(|l| l.contains("never")),
        "nothing after the failing line ran: {lines:?}"
    );
}

#[test]
fn blobs_bundles_and_setup_commands_in_the_process_runtime() {
    let Some(python) = python() else {
        return;
    };
    let controller = Controller::start(python);
    let dir = temp_dir("iris-2026-06-blobs");
    // These setup commands are written for the host, so the process runtime is told to run
    // them (by default it skips them, as Iris's: the client's are written for a container).
    let _worker = controller.start_worker(&dir, "w-blobs", &["--setup-commands", "run"]);
    blobs_bundles_and_setup(&controller, "/alice/process");
    let cached: Vec<_> = std::fs::read_dir(dir.join("blobs")).unwrap().collect();
    assert_eq!(
        cached.len(),
        2,
        "the file and the bundle, each kept once by sha256"
    );
}

#[test]
fn docker_blobs_bundles_and_setup_commands_in_the_image_at_app() {
    if !docker_image_ready(DOCKER_IMAGE, "the docker 2026-06 setup test") {
        return;
    }
    let Some(python) = python() else {
        return;
    };
    let controller = Controller::start(python);
    let dir = temp_dir("iris-2026-06-docker-setup");
    let worker_id = format!("w-docker-setup-{}", std::process::id());
    let _worker = controller.start_worker(&dir, &worker_id, DOCKER);
    blobs_bundles_and_setup(&controller, "/alice/docker");
    let at_app = controller.drive(
        "/alice/docker-app",
        1,
        &[],
        &["sh", "-c", "echo $(pwd) $IRIS_WORKDIR"],
    );
    let stdout: Vec<String> = lines_of(&at_app, "/alice/docker-app/0:0")
        .into_iter()
        .filter(|l| l.starts_with("stdout"))
        .collect();
    assert_eq!(
        stdout,
        ["stdout /app /app"],
        "Iris mounts the workdir at /app: {at_app}"
    );
    let left = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", "label=iris.setup=true"])
        .args(["--filter", &format!("label=iris.worker_id={worker_id}")])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "setup containers are removed");
}

/// Process runtime: a worker SIGKILLed mid-task loses the task with it; the restarted worker
/// observes it lost and the controller's retry runs to the end.
#[test]
fn a_killed_worker_loses_its_task_and_the_controller_retries_it() {
    let Some(python) = python() else {
        return;
    };
    let controller = Controller::start(python);
    let dir = temp_dir("iris-2026-06-crash");
    let mark = dir.join("ran-once");
    let first = worker(&controller, &dir, "2026-06", "w-crash");
    let script = format!(
        "if [ -e {m} ]; then echo second; exit 0; fi; touch {m}; echo first; sleep 600",
        m = mark.display()
    );
    let drive = controller.drive_child(
        "/alice/crash",
        1,
        &["--wait", "120"],
        &["sh", "-c", &script],
    );
    let start = Instant::now();
    while !mark.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the task never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    first.signal(libc::SIGKILL);
    drop(first);
    let _second = worker(&controller, &dir, "2026-06", "w-crash");
    let job = parse(&drive.wait_with_output().unwrap());
    assert_eq!(job["state"], "JOB_STATE_SUCCEEDED", "{job}");
    assert_eq!(
        lines_of(&job, "/alice/crash/0:0")[0],
        "stdout first",
        "{job}"
    );
    assert_eq!(
        lines_of(&job, "/alice/crash/0:1"),
        ["stdout second"],
        "{job}"
    );
    assert_eq!(processes_of("/alice/crash/0"), 0);
}

/// An explicit 2026-06 worker facing a task-era controller fails at start and names the era
/// that controller speaks.
#[tokio::test(flavor = "multi_thread")]
async fn an_explicit_era_the_controller_does_not_serve_fails_naming_the_other() {
    let server = ControllerServer::start(TestController::default()).await;
    let dir = temp_dir("iris-2026-06-wrong-era");
    let out = Command::new(BIN)
        .args(["serve", "--port", "0", "--cache-dir"])
        .arg(&dir)
        .args([
            "--controller-address",
            &server.addr.to_string(),
            "--iris-protocol",
            "2026-06",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--iris-protocol 2026-01"), "{stderr}");
    assert!(
        server
            .controller
            .state
            .lock()
            .unwrap()
            .registrations
            .is_empty()
    );
}

/// Docker: a worker SIGKILLed while its container runs adopts the container when it comes back:
/// the same attempt runs to the end, and the log service holds every line once.
#[test]
fn docker_a_killed_worker_adopts_its_container_and_no_line_is_pushed_twice() {
    if !docker_image_ready(DOCKER_IMAGE, "the docker 2026-06 test") {
        return;
    }
    let Some(python) = python() else {
        return;
    };
    let controller = Controller::start(python);
    let dir = temp_dir("iris-2026-06-adopt");
    let worker_id = format!("w-adopt-{}", std::process::id());
    let args = controller.worker_args(&worker_id, DOCKER);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = WorkerProcess::start(&dir, &args);
    let script = "for i in 1 2 3 4 5; do echo before $i; done; sleep 8; echo after";
    let drive =
        controller.drive_child("/alice/adopt", 1, &["--wait", "120"], &["sh", "-c", script]);
    let start = Instant::now();
    let running = || {
        let out = Command::new("docker")
            .args([
                "ps",
                "--filter",
                &format!("label=iris.worker_id={worker_id}"),
                "-q",
            ])
            .output()
            .unwrap();
        !out.stdout.is_empty()
    };
    while !running() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the container never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Long enough for the first lines to be pushed by the first worker.
    std::thread::sleep(Duration::from_millis(2_000));
    first.signal(libc::SIGKILL);
    drop(first);
    let _second = WorkerProcess::start(&dir, &args);
    let job = parse(&drive.wait_with_output().unwrap());
    assert_eq!(job["state"], "JOB_STATE_SUCCEEDED", "{job}");
    assert!(
        job["logs"].get("/alice/adopt/0:1").is_none(),
        "no second attempt: {job}"
    );
    let stdout: Vec<String> = lines_of(&job, "/alice/adopt/0:0")
        .into_iter()
        .filter(|l| l.starts_with("stdout"))
        .collect();
    let want: Vec<String> = (1..=5)
        .map(|i| format!("stdout before {i}"))
        .chain(["stdout after".to_string()])
        .collect();
    assert_eq!(stdout, want, "{job}");
}

/// A controller that stops calling (here: frozen with SIGSTOP) makes the worker kill every task
/// after `--reconcile-timeout` and register again once the controller is back, as Iris's does.
#[test]
fn a_silent_controller_makes_the_worker_reset() {
    let Some(python) = python() else {
        return;
    };
    let controller = Controller::start(python);
    let dir = temp_dir("iris-2026-06-silent");
    let _worker = controller.start_worker(&dir, "w-silent", &["--reconcile-timeout", "3s"]);
    let mark = dir.join("started");
    let script = format!("touch {}; sleep 600", mark.display());
    let drive =
        controller.drive_child("/alice/silent", 1, &["--wait", "5"], &["sh", "-c", &script]);
    let start = Instant::now();
    while processes_of("/alice/silent/0") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the task never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = drive.wait_with_output();
    let registrations = || {
        std::fs::read_to_string(controller.dir.join("controller.log"))
            .unwrap_or_default()
            .matches("Worker registered: w-silent")
            .count()
    };
    let registered_before = registrations();
    let pid = controller.child.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let frozen = Instant::now();
    while processes_of("/alice/silent/0") > 0 {
        assert!(
            frozen.elapsed() < Duration::from_secs(20),
            "the task outlived a silent controller"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let waited = frozen.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(
        waited >= Duration::from_secs(2),
        "killed after {waited:?}, before the timeout"
    );
    // And it registers again.
    let back = Instant::now();
    while registrations() <= registered_before {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "no second registration"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, and the exit awaited.
fn stop(mut worker: WorkerProcess) {
    worker.signal(libc::SIGTERM);
    let _ = worker.child.wait();
}

/// `ExecStart` of `deploy/iris-worker.service`, its paths moved under `dir` (the token file
/// written there), as argv after the binary.
fn unit_exec_start(dir: &Path) -> (Vec<String>, std::path::PathBuf) {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/iris-worker.service"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let (cache, token) = (dir.join("var-lib-iris-worker"), dir.join("token"));
    std::fs::write(&token, "s3cret\n").unwrap();
    let args = exec
        .split_whitespace()
        .skip(1)
        .map(|a| match a {
            "/var/lib/iris-worker" => cache.display().to_string(),
            "/etc/iris-worker/token" => token.display().to_string(),
            a => a.to_string(),
        })
        .collect();
    (args, cache)
}

/// The stdout lines the log service holds of a job's first attempt.
fn stdout_of(job: &Value, task: &str) -> Vec<String> {
    lines_of(job, task)
        .into_iter()
        .filter(|l| l.starts_with("stdout"))
        .collect()
}

/// How Iris deploys a worker, both ways we take it: the systemd unit we ship (its `ExecStart`,
/// its environment file's variables) and Iris's own bootstrap (`serve --worker-config` with the
/// JSON it writes). Each registers with the real controller and runs its job; the unit's worker
/// asks callers from elsewhere for the token while the controller's Reconcile gets in without.
#[tokio::test(flavor = "multi_thread")]
async fn docker_the_shipped_unit_and_irises_worker_config_run_the_controllers_jobs() {
    if !docker_image_ready(DOCKER_IMAGE, "the deployment test") {
        return;
    }
    let Some(python) = python() else {
        return;
    };
    let controller = Controller::start(python);
    let dir = temp_dir("iris-2026-06-deploy");
    let pid = std::process::id();

    let (args, cache) = unit_exec_start(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (url, port, unit_id) = (
        controller.url(),
        free_port().to_string(),
        format!("w-unit-{pid}"),
    );
    let env = [
        ("IRIS_CONTROLLER_ADDRESS", url.as_str()),
        ("IRIS_WORKER_ID", unit_id.as_str()),
        ("IRIS_WORKER_PORT", port.as_str()),
        ("IRIS_DEFAULT_IMAGE", DOCKER_IMAGE),
        ("IRIS_WORKER_ATTRIBUTES", "pool=unit"),
    ];
    let unit = WorkerProcess::spawn_exactly(&args, &env, &cache);
    assert!(
        unit.addr.ip().is_unspecified(),
        "the unit serves the network"
    );
    let job = controller.drive(
        "/alice/unit",
        1,
        &["--constraint", "pool=unit"],
        &["sh", "-c", "echo ran on $IRIS_WORKER_ID"],
    );
    assert_eq!(job["state"], "JOB_STATE_SUCCEEDED", "{job}");
    let ran = format!("stdout ran on {unit_id}");
    assert_eq!(stdout_of(&job, "/alice/unit/0:0"), [ran], "{job}");
    // On the host's network, a port the job never declared is reached from the host.
    let undeclared = free_port();
    let listen = format!("echo hello from the task | nc -l -p {undeclared}");
    let listener = controller.drive_child(
        "/alice/undeclared",
        1,
        &["--constraint", "pool=unit", "--wait", "60"],
        &["sh", "-c", &listen],
    );
    let start = Instant::now();
    let heard = loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", undeclared)) {
            let mut heard = String::new();
            std::io::Read::read_to_string(&mut stream, &mut heard).unwrap();
            break heard;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the task's port never opened"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(heard, "hello from the task\n");
    let job = parse(&listener.wait_with_output().unwrap());
    assert_eq!(job["state"], "JOB_STATE_SUCCEEDED", "{job}");

    // A caller from elsewhere (a container on docker's bridge) shows the token; the
    // controller's Reconcile came in without one, and /health is open to the bootstrap's probe.
    let call = |auth: &str, path: &str| {
        let post = "--header 'content-type: application/json' --post-data '{}'";
        let body = if path == "/health" { "" } else { post };
        format!(
            "r=$(wget -q -O- {auth} {body} http://host.docker.internal:{port}{path} 2>&1); echo \"$r rc=$?\""
        )
    };
    let health_check = "/iris.cluster.WorkerService/HealthCheck";
    let script = [
        call("", health_check),
        call("--header 'authorization: Bearer s3cret'", health_check),
        call("", "/health"),
    ]
    .join("; ");
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "bridge"])
        .args(["--add-host=host.docker.internal:host-gateway", DOCKER_IMAGE])
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("401 Unauthorized") && lines[0].ends_with("rc=1"),
        "{out}"
    );
    assert!(
        lines[1].contains("\"healthy\":true") && lines[1].ends_with("rc=0"),
        "{out}"
    );
    assert!(
        lines[2].contains("\"healthy\":true") && lines[2].ends_with("rc=0"),
        "{out}"
    );
    stop(unit);

    // Iris's bootstrap: the JSON its `build_worker_bootstrap_script` writes.
    let config_id = format!("w-config-{pid}");
    let config_cache = dir.join("config-cache");
    let config = serde_json::json!({
        "docker_image": "ghcr.io/marin-community/iris-worker:latest",
        "host": "127.0.0.1",
        "port": free_port(),
        "port_range": "31000-31099",
        "worker_id": config_id,
        "controller_address": controller.address(),
        "cache_dir": config_cache.display().to_string(),
        "default_task_image": DOCKER_IMAGE,
        "runtime": "docker",
        "worker_attributes": {"pool": "config", "region": "test-region-9"},
        "task_env": {"FROM_CONFIG": "yes"},
        "heartbeat_timeout": {"milliseconds": "600000"},
        "platform": {"manual": {}},
    });
    let path = dir.join("worker_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let path = path.display().to_string();
    let from_config =
        WorkerProcess::spawn_exactly(&["serve", "--worker-config", &path], &[], &config_cache);
    let job = controller.drive(
        "/alice/config",
        1,
        &["--constraint", "pool=config"],
        &[
            "sh",
            "-c",
            "echo $FROM_CONFIG $IRIS_WORKER_REGION $IRIS_WORKER_ID",
        ],
    );
    assert_eq!(job["state"], "JOB_STATE_SUCCEEDED", "{job}");
    let ran = format!("stdout yes test-region-9 {config_id}");
    assert_eq!(stdout_of(&job, "/alice/config/0:0"), [ran], "{job}");
    stop(from_config);
    for id in [&unit_id, &config_id] {
        let left = Command::new("docker")
            .args([
                "ps",
                "-a",
                "-q",
                "--filter",
                &format!("label=iris.worker_id={id}"),
            ])
            .output()
            .unwrap();
        assert!(left.stdout.is_empty(), "{id} left containers");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
