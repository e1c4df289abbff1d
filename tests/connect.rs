//! Connect interop with clients nobody here wrote: the real connect-python client (generated from
//! our proto at test time) drives every WorkerService method of the binary in protobuf and JSON;
//! grpcio and our gRPC client use the same port; curl checks the error mapping and limits; a
//! connect-python controller (its ASGI server under uvicorn) receives the worker's registrations
//! and reports, across an outage. The venv comes from scripts/setup-test-deps.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use iris_worker::proto::TaskState;
use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

fn python() -> PathBuf {
    let venv = std::env::var("IRIS_TEST_VENV").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv"),
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "no connect-python venv at {}: run scripts/setup-test-deps (scripts/test does)",
        venv.display()
    );
    python
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

fn run_python(name: &str, args: &[&str]) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .expect("running python");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr),
    );
    assert!(status.success(), "{name} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[test]
fn connect_python_drives_every_method_in_proto_and_json() {
    let worker = WorkerProcess::start(&temp_dir("connect-py"), &[]);
    let out = run_python("worker_client.py", &[&format!("http://{}", worker.addr)]);
    for line in [
        "ok: connect proto: every method",
        "ok: connect json: every method",
        "ok: connect plain: every method",
        "ok: grpcio on the same port",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    // Both protocols were counted under the same method names.
    let (_, metrics) = http_get(&worker.dashboard, "/metrics", &[]);
    for protocol in ["connect", "grpc"] {
        let series = format!(
            "iris_worker_rpc_latency_seconds_count{{method=\"HealthCheck\",protocol=\"{protocol}\"}}"
        );
        assert!(metrics.contains(&series), "no {series} in /metrics");
    }
}

#[test]
fn connect_python_needs_the_bearer_token() {
    let dir = temp_dir("connect-auth");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let worker = WorkerProcess::start(
        &dir.join("cache"),
        &["--auth-token-file", token_file.to_str().unwrap()],
    );
    let out = run_python(
        "worker_client.py",
        &[
            &format!("http://{}", worker.addr),
            "--token",
            "s3cret-token",
        ],
    );
    assert!(out.contains("ok: connect bearer token"), "{out}");
}

/// `curl` with a body file; returns the HTTP status and the body.
fn curl(addr: &str, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
    let file =
        std::env::temp_dir().join(format!("iris-curl-{}-{}", std::process::id(), path.len()));
    std::fs::File::create(&file)
        .unwrap()
        .write_all(body)
        .unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--data-binary"])
        .arg(format!("@{}", file.display()));
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn connect_error(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (
        v["code"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn curl_sees_the_documented_statuses_and_limits() {
    let worker = WorkerProcess::start(&temp_dir("connect-curl"), &[]);
    let addr = worker.addr.to_string();
    let json = "content-type: application/json";
    let health = "/iris.cluster.WorkerService/HealthCheck";
    // The README's command.
    let (code, body) = curl(&addr, health, &[json], b"{}");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["healthy"],
        true
    );

    let run = "/iris.cluster.WorkerService/RunTask";
    // (headers, body, HTTP status, Connect code, a word the message must hold)
    type Case<'a> = (&'a [&'a str], &'a [u8], u16, &'a str, &'a str);
    let cases: [Case; 7] = [
        (
            &["content-type: application/proto"],
            b"\xff\xff\xff",
            400,
            "invalid_argument",
            "protobuf",
        ),
        (&[json], b"{\"taskId\": ", 400, "invalid_argument", "JSON"),
        (
            &[json],
            b"{\"jobId\": \"a\", \"taskId\": \"a/task-0\", \"entrypoint\": {}}",
            400,
            "invalid_argument",
            "entrypoint",
        ),
        (
            &["content-type: text/plain"],
            b"{}",
            415,
            "unimplemented",
            "application/proto",
        ),
        (
            &[json, "connect-timeout-ms: soon"],
            b"{}",
            400,
            "invalid_argument",
            "connect-timeout-ms",
        ),
        (
            &[json, "content-encoding: br"],
            b"{}",
            501,
            "unimplemented",
            "gzip",
        ),
        (
            &[json, "connect-protocol-version: 2"],
            b"{}",
            400,
            "invalid_argument",
            "connect-protocol-version",
        ),
    ];
    for (headers, body, status, code_name, fragment) in cases {
        let (code, answer) = curl(&addr, run, headers, body);
        assert_eq!(code, status, "{headers:?}: {answer}");
        let (name, message) = connect_error(&answer);
        assert_eq!(name, code_name, "{headers:?}: {answer}");
        assert!(message.contains(fragment), "{headers:?}: {answer}");
    }
    let (code, answer) = curl(&addr, "/iris.cluster.WorkerService/Nope", &[json], b"{}");
    assert_eq!(
        (code, connect_error(&answer).0.as_str()),
        (404, "unimplemented")
    );

    // A gzip bomb: 33 MiB of zeros in about 33 KB is refused before it is inflated in full.
    let bomb = iris_worker::shell::connect::codec::gzip(&vec![b' '; 33 << 20]);
    assert!(bomb.len() < 1 << 20);
    let (code, answer) = curl(&addr, run, &[json, "content-encoding: gzip"], &bomb);
    assert_eq!(
        (code, connect_error(&answer).0.as_str()),
        (429, "resource_exhausted"),
        "{answer}"
    );
    // None of the refused calls created a task.
    let (_, listing) = curl(
        &addr,
        "/iris.cluster.WorkerService/ListTasks",
        &[json],
        b"{}",
    );
    assert_eq!(listing, "{}", "no task was created");
    // A field this worker does not know is ignored (a newer controller must not break it).
    let newer = br#"{"jobId": "new", "taskId": "new/task-0", "entrypoint": {"command": {"argv": ["true"]}}, "someFutureField": {"x": 1}}"#;
    let (code, answer) = curl(&addr, run, &[json], newer);
    assert_eq!(code, 200, "{answer}");
}

/// The connect-python controller, recording every request it gets to a file.
struct PyController {
    child: Child,
    record: PathBuf,
}

impl PyController {
    fn start(port: u16, record: &Path) -> PyController {
        let mut child = Command::new(python())
            .arg(script("controller.py"))
            .args([&port.to_string(), record.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the python controller");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("ready"), "{line:?}");
        wait_for_listener(port, LIMIT, "the python controller");
        PyController {
            child,
            record: record.to_path_buf(),
        }
    }

    fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn wait_report(&self, task_id: &str, state: TaskState) -> Value {
        let name = state.as_str_name();
        let start = Instant::now();
        loop {
            let found = self.entries().into_iter().find(|e| {
                e["kind"] == "report"
                    && e["request"]["taskId"] == task_id
                    && e["request"]["state"] == name
            });
            if let Some(found) = found {
                return found["request"].clone();
            }
            assert!(start.elapsed() < LIMIT, "no {name} report for {task_id}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PyController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_python_controller_gets_registrations_and_every_report() {
    let dir = temp_dir("connect-ctl");
    let record = dir.join("controller.jsonl");
    let port = free_port();
    let controller = PyController::start(port, &record);
    let address = format!("http://127.0.0.1:{port}");
    let worker = WorkerProcess::start_with_env(
        &dir.join("cache"),
        &[
            "--controller-address",
            &address,
            "--heartbeat-interval-ms",
            "300",
            "--worker-id",
            "py-w1",
        ],
        &[("IRIS_WORKER_ATTRIBUTES", "pool=large-jobs,rank=3")],
    );
    let mut c = worker.client().await;
    c.run_task(command_request(
        "ctl/task-0",
        &["sh", "-c", "echo $IRIS_CONTROLLER_ADDRESS"],
    ))
    .await
    .unwrap();
    controller.wait_report("ctl/task-0", TaskState::Running);
    let done = controller.wait_report("ctl/task-0", TaskState::Succeeded);
    assert_eq!(done["workerId"], "py-w1");
    assert_eq!(
        stdout_of(&logs(&mut c, "ctl/task-0").await),
        std::slice::from_ref(&address)
    );

    let registration = controller
        .entries()
        .into_iter()
        .find(|e| e["kind"] == "register")
        .expect("a registration");
    let request = &registration["request"];
    assert_eq!(request["workerId"], "py-w1");
    assert_eq!(
        request["address"],
        worker.addr.to_string(),
        "host:port, no scheme"
    );
    let metadata = &request["metadata"];
    assert!(metadata["cpuCount"].as_i64().unwrap() >= 1, "{metadata}");
    let memory: i64 = metadata["memoryBytes"].as_str().unwrap().parse().unwrap();
    assert!(memory > 1 << 20, "{metadata}");
    assert_eq!(metadata["device"]["cpu"]["variant"], "cpu", "{metadata}");
    assert_eq!(metadata["attributes"]["pool"]["stringValue"], "large-jobs");
    assert_eq!(metadata["attributes"]["rank"]["intValue"], "3");

    // An outage: the task finishes while the controller is down; its report arrives after.
    drop(controller);
    c.run_task(command_request("ctl/task-1", &["sh", "-c", "exit 3"]))
        .await
        .unwrap();
    wait_for(&mut c, "ctl/task-1", LIMIT, finished).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let back = PyController::start(port, &record);
    let failed = back.wait_report("ctl/task-1", TaskState::Failed);
    assert_eq!(
        (failed["exitCode"].as_i64(), failed["error"].as_str()),
        (Some(3), Some("Exit code: 3"))
    );
}
