//! The docker runtime against the local engine, with the image `scripts/docker-test-image`
//! builds (busybox). With CI=true and an engine socket, a test that cannot reach the engine
//! fails; elsewhere, without an engine, the tests say so and do not run.

mod support;

use support::registry::Registry;

use std::io::Write;
use std::time::{Duration, Instant};

use iris_worker::proto;
use iris_worker::proto::TaskState;
use iris_worker::proto::worker::KillTaskRequest;
use support::*;
use tonic::Code;

const IMAGE: &str = "iris-test:busybox-uv";
const LIMIT: Duration = Duration::from_secs(60);

/// Whether to run: the engine answers and the test image exists (or CI insists).
fn engine() -> bool {
    docker_image_ready(IMAGE, "docker tests")
}

fn docker_worker(name: &str, extra: &[&str]) -> WorkerProcess {
    let worker_id = format!("dockertest-{name}-{}", std::process::id());
    let mut args = vec![
        "--runtime",
        "docker",
        "--default-image",
        IMAGE,
        "--worker-id",
        &worker_id,
    ];
    args.extend_from_slice(extra);
    WorkerProcess::start(&temp_dir(name), &args)
}

/// A docker worker reporting to a test controller, started again on the same cache dir and
/// worker id after a stop or a crash.
struct Restartable {
    dir: std::path::PathBuf,
    worker_id: String,
    args: Vec<String>,
}

impl Restartable {
    fn new(name: &str, server: &ControllerServer, extra: &[&str]) -> Restartable {
        let worker_id = format!("dockertest-{name}-{}", std::process::id());
        let mut args: Vec<String> = [
            "--runtime",
            "docker",
            "--default-image",
            IMAGE,
            "--worker-id",
            &worker_id,
            "--controller-address",
            &server.addr.to_string(),
            "--heartbeat-interval-ms",
            "300",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        Restartable {
            dir: temp_dir(name),
            worker_id,
            args,
        }
    }

    fn start(&self) -> WorkerProcess {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        WorkerProcess::start(&self.dir, &args)
    }
}

/// A task's stdout lines with their numbers.
async fn numbered_stdout(
    c: &mut proto::worker_service_client::WorkerServiceClient<tonic::transport::Channel>,
    task_id: &str,
) -> Vec<(i64, String)> {
    logs(c, task_id)
        .await
        .into_iter()
        .filter(|e| e.source == "stdout")
        .map(|e| (e.line_number, e.data))
        .collect()
}

/// Containers of this worker still on the engine, after giving removal a moment.
fn leftovers(worker_id_prefix: &str) -> Vec<String> {
    let start = Instant::now();
    loop {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                "label=iris.managed=true",
                "--format",
                "{{.Label \"iris.worker_id\"}} {{.Names}}",
            ])
            .output()
            .unwrap();
        let mine: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(worker_id_prefix))
            .map(str::to_string)
            .collect();
        if mine.is_empty() || start.elapsed() > Duration::from_secs(10) {
            return mine;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn env_and_ports_inside_the_container_and_exit_codes() {
    if !engine() {
        return;
    }
    let worker = docker_worker("env", &[]);
    let mut c = worker.client().await;
    let script = "echo BIND=$IRIS_BIND_HOST; echo TASK=$IRIS_TASK_ID; echo PORT=$IRIS_PORT_HTTP; nc -l -p $IRIS_PORT_HTTP";
    let mut req = command_request("dock/task-0", &["sh", "-c", script]);
    req.ports = vec!["http".into()];
    c.run_task(req).await.unwrap();
    let running = wait_for(&mut c, "dock/task-0", LIMIT, is_state(TaskState::Running)).await;
    let port = running.ports["http"];
    // Reach the task through its host port binding. The engine's proxy accepts a connection
    // even before `nc` listens (and then drops it), so send until the task has the message.
    let start = Instant::now();
    while !finished(&status(&mut c, "dock/task-0").await) {
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port as u16)) {
            let _ = conn.write_all(b"hello-through-the-port\n");
        }
        assert!(start.elapsed() < LIMIT, "port {port} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = wait_for(&mut c, "dock/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    let out = stdout_of(&logs(&mut c, "dock/task-0").await);
    assert!(out.contains(&"BIND=0.0.0.0".to_string()), "{out:?}");
    assert!(out.contains(&"TASK=dock/task-0".to_string()));
    assert!(out.contains(&format!("PORT={port}")));
    assert!(
        out.contains(&"hello-through-the-port".to_string()),
        "{out:?}"
    );

    let failed = run_to_end(&mut c, "dock/task-1", &["sh", "-c", "echo bye >&2; exit 3"]).await;
    assert_eq!(failed.state, TaskState::Failed as i32);
    assert_eq!(
        (failed.exit_code, failed.error.as_str(), failed.oom_killed),
        (3, "Exit code: 3", false)
    );
    assert!(leftovers(&format!("dockertest-env-{}", std::process::id())).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_under_a_memory_limit_is_reported_as_such() {
    if !engine() {
        return;
    }
    let worker = docker_worker("oom", &[]);
    let mut c = worker.client().await;
    let mut req = command_request(
        "oom/task-0",
        &[
            "sh",
            "-c",
            "x=0123456789abcdef; while true; do x=$x$x; done",
        ],
    );
    req.resources = Some(proto::ResourceSpecProto {
        memory_bytes: 32 << 20,
        ..Default::default()
    });
    c.run_task(req).await.unwrap();
    let done = wait_for(&mut c, "oom/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Failed as i32);
    assert!(done.oom_killed, "{done:?}");
    assert!(done.error.contains("Out of memory"), "{}", done.error);
}

#[tokio::test(flavor = "multi_thread")]
async fn term_ignoring_container_is_killed_and_timeouts_fail() {
    if !engine() {
        return;
    }
    let worker = docker_worker("kill", &[]);
    let mut c = worker.client().await;
    c.run_task(command_request(
        "stub/task-0",
        &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
    ))
    .await
    .unwrap();
    wait_for(&mut c, "stub/task-0", LIMIT, is_state(TaskState::Running)).await;
    let (done, took) = kill_and_wait(&mut c, "stub/task-0", 1000).await;
    assert_eq!(done.state, TaskState::Killed as i32);
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(
        took < Duration::from_millis(2000),
        "KILLED {took:?} after the kill, term timeout 1 s"
    );
    assert!(!done.oom_killed, "a plain SIGKILL is not an OOM");

    let mut req = command_request("slow/task-0", &["sleep", "100"]);
    req.timeout_seconds = 1;
    c.run_task(req).await.unwrap();
    let done = wait_for(&mut c, "slow/task-0", LIMIT, finished).await;
    assert_eq!(
        (done.state, done.error.as_str()),
        (TaskState::Failed as i32, "Timeout exceeded")
    );
    assert!(leftovers(&format!("dockertest-kill-{}", std::process::id())).is_empty());
}

/// The entrypoint is not PID 1 (docker-init is): SIGTERM acts by default and a self-inflicted
/// SIGKILL ends the task by that signal. With `--container-init=false` the old PID 1 behaviour
/// comes back, which shows the test can tell the difference.
#[tokio::test(flavor = "multi_thread")]
async fn the_entrypoint_is_not_pid_1_so_signals_act() {
    if !engine() {
        return;
    }
    let worker = docker_worker("init", &[]);
    let mut c = worker.client().await;
    c.run_task(command_request("pid1/task-0", &["sleep", "1000"]))
        .await
        .unwrap();
    wait_for(&mut c, "pid1/task-0", LIMIT, is_state(TaskState::Running)).await;
    let (done, took) = kill_and_wait(&mut c, "pid1/task-0", 10_000).await;
    assert_eq!(done.state, TaskState::Killed as i32);
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM acted: KILLED after {took:?}, not at the 10 s SIGKILL"
    );

    let suicide = ["sh", "-c", "echo pid $$; kill -9 $$"];
    let done = run_to_end(&mut c, "pid1/task-1", &suicide).await;
    assert_ne!(stdout_of(&logs(&mut c, "pid1/task-1").await), ["pid 1"]);
    assert_eq!(done.state, TaskState::Failed as i32, "{done:?}");
    assert_eq!((done.exit_signal, done.oom_killed), (9, false), "{done:?}");

    let bare = docker_worker("noinit", &["--container-init=false"]);
    let mut c = bare.client().await;
    let done = run_to_end(&mut c, "pid1/task-2", &suicide).await;
    assert_eq!(stdout_of(&logs(&mut c, "pid1/task-2").await), ["pid 1"]);
    assert_eq!(
        done.state,
        TaskState::Succeeded as i32,
        "PID 1 survives its own SIGKILL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_engine_does_not_stop_health_checks_or_kills() {
    // An "engine" that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hung.local_addr().unwrap();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hung.incoming().flatten() {
            held.push(conn);
        }
    });
    let dir = temp_dir("hung");
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--port",
            "0",
            "--no-dashboard",
            "--runtime",
            "docker",
            "--default-image",
            IMAGE,
            "--cache-dir",
        ])
        .arg(&dir)
        .env("DOCKER_HOST", format!("tcp://{addr}"))
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let grpc = line.split_whitespace().nth(3).unwrap().to_string();
    let mut c =
        proto::worker_service_client::WorkerServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
    c.run_task(command_request("hung/task-0", &["true"]))
        .await
        .unwrap();
    wait_for(&mut c, "hung/task-0", LIMIT, is_state(TaskState::Building)).await;
    let asked = Instant::now();
    let health = c.health_check(proto::Empty {}).await.unwrap().into_inner();
    assert!(health.healthy && asked.elapsed() < Duration::from_secs(1));
    c.kill_task(KillTaskRequest {
        task_id: "hung/task-0".into(),
        term_timeout_ms: 0,
    })
    .await
    .unwrap();
    let done = wait_for(&mut c, "hung/task-0", Duration::from_secs(5), finished).await;
    assert_eq!(done.state, TaskState::Killed as i32);
    let err = c
        .kill_task(KillTaskRequest {
            task_id: "hung/task-0".into(),
            term_timeout_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_worker_adopts_its_running_container() {
    if !engine() {
        return;
    }
    let server = ControllerServer::start(TestController::default()).await;
    let worker = Restartable::new("adopt", &server, &["--preserve-containers-on-stop"]);
    let worker_id = worker.worker_id.clone();
    let mut first = worker.start();
    let mut c = first.client().await;
    c.run_task(command_request(
        "adopt/task-0",
        &["sh", "-c", "echo before; sleep 12; echo after"],
    ))
    .await
    .unwrap();
    server
        .wait_report("adopt/task-0", TaskState::Running, LIMIT)
        .await;
    let start = Instant::now();
    let before = loop {
        let entries = logs(&mut c, "adopt/task-0").await;
        if let Some(e) = entries.iter().find(|e| e.source == "stdout") {
            break e.line_number;
        }
        assert!(start.elapsed() < LIMIT);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    first.signal(libc::SIGTERM);
    let status = first.child.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        leftovers(&worker_id).len(),
        1,
        "the container outlives a preserving stop"
    );

    let second = worker.start();
    let mut c = second.client().await;
    // Adopted and still sleeping: what was served before the restart is served again.
    let adopted = support::status(&mut c, "adopt/task-0").await;
    assert_eq!(adopted.state, TaskState::Running as i32, "{adopted:?}");
    let served = numbered_stdout(&mut c, "adopt/task-0").await;
    assert_eq!(
        served,
        [(before, "before".to_string())],
        "served while adopted"
    );
    let report = server
        .wait_report("adopt/task-0", TaskState::Succeeded, LIMIT)
        .await;
    assert_eq!(report.attempt_id, 0);
    let done = status_of_finished(&mut c, "adopt/task-0").await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    let lines = numbered_stdout(&mut c, "adopt/task-0").await;
    // Nothing lost or taken twice across the restart, and numbering carries on.
    assert_eq!(
        lines,
        vec![
            (before, "before".to_string()),
            (before + 1, "after".to_string())
        ]
    );
    assert!(leftovers(&worker_id).is_empty());
}

/// A worker SIGKILLed while its container runs; the container exits (code 4) while the worker is
/// down. The restarted worker reads the exit and the rest of the output from the engine: FAILED
/// with exit code 4 at the container's own finish time, every line once, in order, under the
/// numbers served before the crash.
#[tokio::test(flavor = "multi_thread")]
async fn an_exit_while_the_worker_is_down_is_recovered_from_the_engine() {
    if !engine() {
        return;
    }
    let server = ControllerServer::start(TestController::default()).await;
    let worker = Restartable::new("recover", &server, &[]);
    let worker_id = worker.worker_id.clone();
    let first = worker.start();
    let mut c = first.client().await;
    let script = "echo one; echo two; sleep 2; echo three; sleep 0.2; echo four >&2; exit 4";
    c.run_task(command_request("recover/task-0", &["sh", "-c", script]))
        .await
        .unwrap();
    let start = Instant::now();
    let served = loop {
        let entries = logs(&mut c, "recover/task-0").await;
        let out: Vec<(i64, String)> = entries
            .into_iter()
            .filter(|e| e.source == "stdout")
            .map(|e| (e.line_number, e.data))
            .collect();
        if out.len() == 2 {
            break out;
        }
        assert!(start.elapsed() < LIMIT, "{out:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    first.signal(libc::SIGKILL);
    drop(first);
    // The container finishes while nobody watches.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    let second = worker.start();
    let mut c = second.client().await;
    let report = server
        .wait_report("recover/task-0", TaskState::Failed, LIMIT)
        .await;
    assert_eq!(
        (report.exit_code, report.error.as_str()),
        (4, "Exit code: 4")
    );
    assert!(
        report.finished_at_ms < restarted_at_ms - 500,
        "the container's own finish time ({}), not the restart's ({restarted_at_ms})",
        report.finished_at_ms
    );
    let done = status_of_finished(&mut c, "recover/task-0").await;
    assert_eq!((done.state, done.exit_code), (TaskState::Failed as i32, 4));
    let output: Vec<(i64, String, String)> = logs(&mut c, "recover/task-0")
        .await
        .into_iter()
        .filter(|e| e.source == "stdout" || e.source == "stderr")
        .map(|e| (e.line_number, e.source, e.data))
        .collect();
    let (first_number, _) = served[0];
    assert_eq!(served[1].0, first_number + 1);
    let want: Vec<(i64, String, String)> = [
        ("stdout", "one"),
        ("stdout", "two"),
        ("stdout", "three"),
        ("stderr", "four"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (s, d))| (first_number + i as i64, s.to_string(), d.to_string()))
    .collect();
    assert_eq!(output, want, "every line once, in order, numbers unchanged");
    assert!(leftovers(&worker_id).is_empty());
}

async fn status_of_finished(
    c: &mut proto::worker_service_client::WorkerServiceClient<tonic::transport::Channel>,
    task_id: &str,
) -> proto::TaskStatus {
    wait_for(c, task_id, LIMIT, finished).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bundle_builds_an_image_once_then_reuses_it() {
    if !engine() {
        return;
    }
    let worker = docker_worker("build", &[]);
    let mut c = worker.client().await;
    let dir = worker.cache_dir.clone();
    let zip_path = dir.join("bundle.zip");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        zip.start_file("main.sh", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"echo ran-from-bundle; cat /app/uv-calls; echo $PATH\n")
            .unwrap();
        zip.start_file("pyproject.toml", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(format!("[project]\nname = \"t{}\"\n", std::process::id()).as_bytes())
            .unwrap();
        zip.start_file("uv.lock", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"version = 1\n").unwrap();
        zip.finish().unwrap();
    }
    let request = |attempt: i32| {
        let mut req = command_request("Build Job!/task-0", &["sh", "/workdir/main.sh"]);
        req.job_id = "Build Job!".into();
        req.attempt_id = attempt;
        req.bundle_gcs_path = format!("file://{}", zip_path.display());
        // As Iris sends it: no workspace; extras and pip packages to install.
        req.environment = Some(proto::EnvironmentConfig {
            docker_image: IMAGE.into(),
            extras: vec!["tpu".into()],
            pip_packages: vec!["numpy==2.1".into()],
            ..Default::default()
        });
        req
    };
    c.run_task(request(0)).await.unwrap();
    let first = wait_for(&mut c, "Build Job!/task-0", LIMIT, finished).await;
    let entries = logs(&mut c, "Build Job!/task-0").await;
    assert_eq!(first.state, TaskState::Succeeded as i32, "{entries:?}");
    let built = first.build_metrics.clone().unwrap();
    assert!(!built.from_cache);
    assert!(
        built.image_tag.starts_with("iris-build-job:"),
        "{}",
        built.image_tag
    );
    assert!(
        entries
            .iter()
            .any(|e| e.source == "build" && e.data.contains("building image"))
    );
    let path = format!("/app/.venv/bin:{}", "/bin");
    assert_eq!(
        stdout_of(&entries),
        vec![
            "ran-from-bundle",
            "uv sync --frozen --no-install-project --extra tpu",
            "uv pip install numpy==2.1",
            path.as_str(),
        ]
    );

    c.run_task(request(1)).await.unwrap();
    let second = wait_for(&mut c, "Build Job!/task-0", LIMIT, |s| {
        s.current_attempt_id == 1 && finished(s)
    })
    .await;
    assert_eq!(second.state, TaskState::Succeeded as i32);
    let reused = second.build_metrics.unwrap();
    assert!(reused.from_cache, "second attempt reuses the image");
    assert_eq!(reused.image_tag, built.image_tag);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &built.image_tag])
        .output();
}

/// The tags of the images a worker built, as the engine lists them.
fn built_by(worker_id: &str) -> Vec<String> {
    let listed = docker(&[
        "images",
        "--filter",
        &format!("label=iris.built_by={worker_id}"),
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    listed.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn built_images_go_once_unused_and_never_while_a_task_uses_them() {
    if !engine() {
        return;
    }
    let worker = docker_worker("image-ttl", &["--built-image-ttl", "2s"]);
    let worker_id = format!("dockertest-image-ttl-{}", std::process::id());
    let mut c = worker.client().await;
    let mut req = command_request("ttl-job/task-0", &["sleep", "5"]);
    req.job_id = "ttl-job".into();
    req.environment = Some(proto::EnvironmentConfig {
        docker_image: IMAGE.into(),
        pip_packages: vec!["six".into()],
        ..Default::default()
    });
    c.run_task(req).await.unwrap();
    wait_for(&mut c, "ttl-job/task-0", LIMIT, |s| {
        s.state == TaskState::Running as i32
    })
    .await;
    let built = built_by(&worker_id);
    assert_eq!(built.len(), 1, "one image built: {built:?}");
    // Past the ttl while the task still runs: the image stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(built_by(&worker_id), built, "removed while in use");
    let done = wait_for(&mut c, "ttl-job/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    let finished_at = Instant::now();
    while !built_by(&worker_id).is_empty() {
        assert!(
            finished_at.elapsed() < Duration::from_secs(20),
            "built image {built:?} still there 20 s after its last task"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        finished_at.elapsed() >= Duration::from_millis(1500),
        "removed before its ttl ({:?})",
        finished_at.elapsed()
    );
    // The base image, which the worker did not build, stays.
    assert_eq!(docker(&["images", "-q", IMAGE]).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_taken_before_the_start_is_retried_with_a_fresh_one() {
    if !engine() {
        return;
    }
    let worker = docker_worker("ports", &["--port-range", "31100-31109"]);
    let mut c = worker.client().await;
    // A bundle that arrives only when the test says so holds the task between port allocation
    // and container start; meanwhile someone else takes its port.
    let fifo = worker.cache_dir.join("late-bundle.zip");
    make_fifo(&fifo);
    let mut req = command_request("ports/task-0", &["sh", "-c", "echo port=$IRIS_PORT_HTTP"]);
    req.ports = vec!["http".into()];
    req.bundle_gcs_path = format!("file://{}", fifo.display());
    c.run_task(req).await.unwrap();
    let building = wait_for(&mut c, "ports/task-0", LIMIT, is_state(TaskState::Building)).await;
    let taken = building.ports["http"];
    let _squatter = std::net::TcpListener::bind(("0.0.0.0", taken as u16)).unwrap();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("readme.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"late").unwrap();
    std::fs::write(&fifo, zip.finish().unwrap().into_inner()).unwrap();
    let done = wait_for(&mut c, "ports/task-0", LIMIT, finished).await;
    let entries = logs(&mut c, "ports/task-0").await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{entries:?}");
    let fresh = done.ports["http"];
    assert_ne!(fresh, taken);
    assert!(
        entries
            .iter()
            .any(|e| e.source == "error" && e.data.contains("Port conflict")),
        "{entries:?}"
    );
    assert_eq!(stdout_of(&entries), vec![format!("port={fresh}")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_during_building_creates_no_container() {
    if !engine() {
        return;
    }
    let worker = docker_worker("killbuild", &[]);
    let mut c = worker.client().await;
    let fifo = worker.cache_dir.join("never.zip");
    make_fifo(&fifo);
    let mut req = command_request("kb/task-0", &["true"]);
    req.bundle_gcs_path = format!("file://{}", fifo.display());
    req.environment = Some(proto::EnvironmentConfig {
        workspace: ".".into(),
        ..Default::default()
    });
    c.run_task(req).await.unwrap();
    wait_for(&mut c, "kb/task-0", LIMIT, is_state(TaskState::Building)).await;
    c.kill_task(KillTaskRequest {
        task_id: "kb/task-0".into(),
        term_timeout_ms: 0,
    })
    .await
    .unwrap();
    let done = wait_for(&mut c, "kb/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Killed as i32);
    std::fs::write(&fifo, b"").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(leftovers(&format!("dockertest-killbuild-{}", std::process::id())).is_empty());
    assert_eq!(
        status(&mut c, "kb/task-0").await.state,
        TaskState::Killed as i32
    );
}

/// The settings Iris runs its containers with, seen from inside one and through the engine:
/// core dumps off, the nofile limit (Iris's, or the engine's own hard limit where that is
/// lower), SYS_PTRACE the one capability, a tmpfs /tmp of its own, the host's network.
#[tokio::test(flavor = "multi_thread")]
async fn containers_run_as_iriss_do() {
    if !engine() {
        return;
    }
    let worker = docker_worker("settings", &[]);
    let mut c = worker.client().await;
    let script = "ulimit -c; ulimit -Sn; ulimit -Hn; grep CapEff /proc/self/status; \
                  grep ' /tmp ' /proc/mounts | cut -d' ' -f3";
    let done = run_to_end(&mut c, "settings/task-0", &["sh", "-c", script]).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    let out = stdout_of(&logs(&mut c, "settings/task-0").await);
    let engine_hard = iris_worker::shell::runtime::docker::engine_nofile_hard();
    let (soft, hard) = iris_worker::shell::runtime::docker::within((65_536, 524_288), engine_hard);
    // CAP_SYS_PTRACE is bit 19.
    let ptrace_only = format!("CapEff:\t{:016x}", 1u64 << 19);
    assert_eq!(
        out,
        [
            "0".to_string(),
            soft.to_string(),
            hard.to_string(),
            ptrace_only,
            "tmpfs".into()
        ],
        "engine's hard nofile: {engine_hard:?}"
    );

    // A sleeper, inspected through the engine while it runs.
    c.run_task(command_request("settings/task-1", &["sleep", "1000"]))
        .await
        .unwrap();
    wait_for(
        &mut c,
        "settings/task-1",
        LIMIT,
        is_state(TaskState::Running),
    )
    .await;
    let name = format!("iris-dockertest-settings-{}", std::process::id());
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=iris.worker_id={}", &name[5..]),
        ])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!id.is_empty(), "the sleeper's container runs");
    let inspect = std::process::Command::new("docker")
        .args(["inspect", "--format"])
        .arg("{{.HostConfig.NetworkMode}} {{.HostConfig.CapAdd}} {{.HostConfig.CapDrop}} {{.HostConfig.Tmpfs}} {{.HostConfig.Init}}")
        .arg(&id)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "host [SYS_PTRACE] [ALL] map[/tmp:] true"
    );
    let (done, _) = kill_and_wait(&mut c, "settings/task-1", 1_000).await;
    assert_eq!(done.state, TaskState::Killed as i32);
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_image(task_id: &str, image: &str) -> proto::worker::RunTaskRequest {
    let mut req = command_request(task_id, &["echo", "ran"]);
    req.environment = Some(proto::EnvironmentConfig {
        docker_image: image.to_string(),
        ..Default::default()
    });
    req
}

fn build_log(entries: &[proto::worker::LogEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.source == "build")
        .map(|e| e.data.clone())
        .collect()
}

/// A missing image is pulled from a real registry, once for two attempts that want it at once;
/// a tag the registry lacks fails the attempt with the registry's words; a registry that is
/// down is the machine's fault (WORKER_FAILED).
#[tokio::test(flavor = "multi_thread")]
async fn missing_images_are_pulled_and_a_registry_down_is_the_machines_fault() {
    if !engine() {
        return;
    }
    let dir = temp_dir("registry");
    let registry = Registry::start(&dir);
    let image = format!("{}/iris/busybox:1", registry.addr);
    docker(&["tag", IMAGE, &image]);
    docker(&["push", "-q", &image]);
    docker(&["rmi", &image]);
    let worker = docker_worker("pull", &[]);
    let mut c = worker.client().await;
    for task in ["pull/task-0", "pull/task-1"] {
        c.run_task(in_image(task, &image)).await.unwrap();
    }
    let mut pulls = 0;
    for task in ["pull/task-0", "pull/task-1"] {
        let done = wait_for(&mut c, task, LIMIT, finished).await;
        assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
        let entries = logs(&mut c, task).await;
        assert_eq!(stdout_of(&entries), ["ran"]);
        let build = build_log(&entries);
        if build.iter().any(|l| l == &format!("pulling image {image}")) {
            pulls += 1;
            assert!(
                build.contains(&format!("pulled image {image}")),
                "{build:?}"
            );
        }
    }
    assert_eq!(pulls, 1, "one pull for both attempts");
    assert!(
        !docker(&["images", "-q", &image]).trim().is_empty(),
        "a pulled image is kept"
    );

    let missing = format!("{}/iris/busybox:nope", registry.addr);
    c.run_task(in_image("pull/task-2", &missing)).await.unwrap();
    let done = wait_for(&mut c, "pull/task-2", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Failed as i32, "{done:?}");
    assert!(
        done.error.contains("manifest unknown") || done.error.contains("not found"),
        "{done:?}"
    );

    let unpulled = format!("{}/iris/busybox:2", registry.addr);
    drop(registry);
    c.run_task(in_image("pull/task-3", &unpulled))
        .await
        .unwrap();
    let done = wait_for(&mut c, "pull/task-3", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::WorkerFailed as i32, "{done:?}");
    assert!(
        done.error.contains("connection refused"),
        "the reason: {done:?}"
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", &image])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
}
