//! Hostile input at the gRPC boundary: every limit answers with a clear status, and none crashes
//! the worker, disturbs another task or loses an accepted one. Authentication and binding rules.

mod support;

use std::time::Duration;

use iris_worker::proto;
use iris_worker::proto::TaskState;
use iris_worker::proto::worker::{FetchLogsFilter, FetchTaskLogsRequest, KillTaskRequest};
use iris_worker::proto::worker_service_client::WorkerServiceClient;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn limits_answer_with_clear_statuses_and_harm_nothing() {
    let worker = WorkerProcess::start(&temp_dir("limits"), &["--max-live-tasks", "3"]);
    let mut c = worker.client().await;
    // A long-running task that every refusal below must leave alone.
    c.run_task(command_request("keep/task-0", &["sleep", "1000"]))
        .await
        .unwrap();
    wait_for(&mut c, "keep/task-0", LIMIT, is_state(TaskState::Running)).await;

    let huge = "x".repeat(40 << 20);
    let err = c
        .run_task(command_request("big/task-0", &["echo", &huge]))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );

    let cases: Vec<(&str, proto::worker::RunTaskRequest)> = vec![
        (
            "task_id",
            command_request(&format!("job/{}", "t".repeat(300)), &["true"]),
        ),
        (
            "environment.env_vars",
            proto::worker::RunTaskRequest {
                environment: Some(proto::EnvironmentConfig {
                    env_vars: (0..1100)
                        .map(|i| (format!("K{i}"), "v".to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..command_request("job/task-0", &["true"])
            },
        ),
        (
            "entrypoint.command.argv",
            command_request("job/task-0", &vec!["a"; 5000]),
        ),
        (
            "ports",
            proto::worker::RunTaskRequest {
                ports: (0..65).map(|i| format!("p{i}")).collect(),
                ..command_request("job/task-0", &["true"])
            },
        ),
    ];
    for (field, req) in cases {
        let err = c.run_task(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }

    let huge_regex = FetchLogsFilter {
        regex: "a{1000}{1000}".into(),
        ..Default::default()
    };
    let err = c
        .fetch_task_logs(FetchTaskLogsRequest {
            task_id: "keep/task-0".into(),
            filter: Some(huge_regex),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let extreme = FetchLogsFilter {
        start_line: i64::MIN,
        max_lines: i64::MAX,
        ..Default::default()
    };
    c.fetch_task_logs(FetchTaskLogsRequest {
        task_id: "keep/task-0".into(),
        filter: Some(extreme),
    })
    .await
    .unwrap();

    let err = c
        .kill_task(KillTaskRequest {
            task_id: "keep/task-0".into(),
            term_timeout_ms: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Admission: two more fit, the fourth live one is refused.
    for i in 1..3 {
        c.run_task(command_request(
            &format!("keep/task-{i}"),
            &["sleep", "1000"],
        ))
        .await
        .unwrap();
    }
    let err = c
        .run_task(command_request("keep/task-3", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // A huge term timeout is clamped, not an error; the task still goes.
    assert_eq!(
        status(&mut c, "keep/task-0").await.state,
        TaskState::Running as i32
    );
    c.kill_task(KillTaskRequest {
        task_id: "keep/task-0".into(),
        term_timeout_ms: i32::MAX,
    })
    .await
    .unwrap();
    let done = wait_for(&mut c, "keep/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Killed as i32);
    assert!(
        c.health_check(proto::Empty {})
            .await
            .unwrap()
            .into_inner()
            .healthy
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_output_is_kept_and_shown_lossily() {
    let worker = WorkerProcess::start(&temp_dir("utf8"), &[]);
    let mut c = worker.client().await;
    c.run_task(command_request(
        "bytes/task-0",
        &["printf", "ok \\377\\376 end\\n"],
    ))
    .await
    .unwrap();
    let done = wait_for(&mut c, "bytes/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    assert_eq!(
        stdout_of(&logs(&mut c, "bytes/task-0").await),
        vec!["ok \u{fffd}\u{fffd} end"]
    );
}

/// The local address of the default route, as the worker finds it.
fn outbound_ip() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
    socket.connect(("8.8.8.8", 80)).unwrap();
    socket.local_addr().unwrap().ip()
}

/// A client of the worker's port reached at `ip` (so the call comes from `ip`).
async fn client_at(ip: std::net::IpAddr, worker: &WorkerProcess) -> WorkerServiceClient<Channel> {
    let addr = std::net::SocketAddr::new(ip, worker.addr.port());
    WorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn bearer(token: &str) -> tonic::Request<proto::Empty> {
    let mut request = tonic::Request::new(proto::Empty {});
    let value = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_show_the_token_the_controller_gets_its_own_and_needs_none() {
    let dir = temp_dir("auth");
    let (token_file, controller_token_file) = (dir.join("token"), dir.join("controller-token"));
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    std::fs::write(&controller_token_file, "for-the-controller\n").unwrap();
    // The controller is on loopback: its address, 127.0.0.1, needs no token where it calls.
    let server = ControllerServer::start(TestController::default()).await;
    let addr = server.addr.to_string();
    let worker = WorkerProcess::start(
        &dir.join("cache"),
        &[
            "--host",
            "0.0.0.0",
            // The controller dials it on loopback, so only 127.0.0.1 is the controller's.
            "--advertise-host",
            "127.0.0.1",
            "--auth-token-file",
            token_file.to_str().unwrap(),
            "--controller-token-file",
            controller_token_file.to_str().unwrap(),
            "--controller-address",
            &addr,
        ],
    );
    // From another address: the token, and only the right one.
    let mut outside = client_at(outside_ip(), &worker).await;
    let err = outside.health_check(proto::Empty {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let wrong = outside.health_check(bearer("s3cret-tokeX")).await;
    assert_eq!(wrong.unwrap_err().code(), Code::Unauthenticated);
    let right = outside.health_check(bearer("s3cret-token")).await.unwrap();
    assert!(right.into_inner().healthy);
    let theirs = outside.health_check(bearer("for-the-controller")).await;
    assert_eq!(
        theirs.unwrap_err().code(),
        Code::Unauthenticated,
        "a token per direction"
    );
    // From the controller's address: no token needed on the routes it calls.
    let mut controller_side = client_at("127.0.0.1".parse().unwrap(), &worker).await;
    let health = controller_side.health_check(proto::Empty {}).await.unwrap();
    assert!(health.into_inner().healthy);

    // The dashboard's API asks every caller for the token; /health (Iris's bootstrap and
    // autoscaler probe it) asks nobody.
    let dashboard = format!("http://{}:{}", outside_ip(), worker.addr.port());
    let (code, body) = http_get(&dashboard, "/api/stats", &[]);
    assert_eq!(code, 401, "{body}");
    let (code, _) = http_get(&worker.dashboard, "/api/stats", &[]);
    assert_eq!(
        code, 401,
        "the controller's address is let in only where the controller calls"
    );
    let wrong = [("authorization", "Bearer s3cret-tokeX")];
    assert_eq!(http_get(&dashboard, "/api/stats", &wrong).0, 401);
    let right = [("authorization", "Bearer s3cret-token")];
    assert_eq!(http_get(&dashboard, "/api/stats", &right).0, 200);
    let (code, body) = http_get(&dashboard, "/health", &[]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"healthy\":true"), "{body}");

    server.first_registration().await;
    let seen = server
        .controller
        .state
        .lock()
        .unwrap()
        .authorization
        .clone();
    assert_eq!(seen.as_deref(), Some("Bearer for-the-controller"));

    // The CLI sends the callers' token, and never prints it.
    let out = std::process::Command::new(BIN)
        .args([
            "health",
            "--worker",
            &format!("{}:{}", outside_ip(), worker.addr.port()),
            "--auth-token-file",
            token_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains("s3cret"));
}

/// Bound to every interface, a worker advertises the address of its default route (Iris's
/// `probe_outbound_ip`) and keeps Iris's share of the machine for the system.
#[tokio::test(flavor = "multi_thread")]
async fn it_advertises_its_outbound_address_and_keeps_a_reserve() {
    let server = ControllerServer::start(TestController::default()).await;
    let addr = server.addr.to_string();
    let worker = WorkerProcess::start(
        &temp_dir("advertise"),
        &["--host", "0.0.0.0", "--controller-address", &addr],
    );
    let registration = server.first_registration().await;
    let port = worker.addr.port();
    assert_eq!(registration.address, format!("{}:{port}", outbound_ip()));
    let metadata = registration.metadata.unwrap();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: i64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let total = kib * 1024;
    assert_eq!(metadata.memory_bytes, total - (total / 10).min(8 << 30));
    let cores = std::thread::available_parallelism().unwrap().get() as i32;
    assert_eq!(metadata.cpu_count, (cores - (cores / 10).min(1)).max(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_only_loopback_callers_get_in_unless_insecure() {
    let worker = WorkerProcess::start(&temp_dir("tokenless"), &["--host", "0.0.0.0"]);
    let mut local = client_at("127.0.0.1".parse().unwrap(), &worker).await;
    assert!(local.health_check(proto::Empty {}).await.is_ok());
    let mut outside = client_at(outside_ip(), &worker).await;
    let err = outside.health_check(proto::Empty {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("--auth-token-file"), "{err:?}");
    let dashboard = format!("http://{}:{}", outside_ip(), worker.addr.port());
    assert_eq!(http_get(&dashboard, "/api/tasks", &[]).0, 401);
    assert_eq!(http_get(&dashboard, "/health", &[]).0, 200);

    // --insecure lets anyone in.
    let open = WorkerProcess::start(
        &temp_dir("insecure-ok"),
        &["--host", "0.0.0.0", "--insecure"],
    );
    assert!(open.addr.ip().is_unspecified());
    let mut outside = client_at(outside_ip(), &open).await;
    assert!(outside.health_check(proto::Empty {}).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn log_disk_is_capped_per_attempt() {
    let dir = temp_dir("diskcap");
    let worker = WorkerProcess::start(
        &dir,
        &["--log-disk-bytes", "1048576", "--log-memory-lines", "100"],
    );
    let mut c = worker.client().await;
    // About 6 MB of output against a 1 MiB cap.
    c.run_task(command_request(
        "loud/task-0",
        &["sh", "-c", "seq 1 700000"],
    ))
    .await
    .unwrap();
    let done = wait_for(&mut c, "loud/task-0", Duration::from_secs(60), finished).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    let on_disk: u64 = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 1 << 20, "{on_disk} bytes of log on disk");
    // The newest lines are all there, numbered as printed.
    let tail = c
        .fetch_task_logs(FetchTaskLogsRequest {
            task_id: "loud/task-0".into(),
            filter: Some(FetchLogsFilter {
                start_line: -3,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .logs;
    let got: Vec<(i64, &str)> = tail
        .iter()
        .map(|e| (e.line_number, e.data.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (699_997, "699998"),
            (699_998, "699999"),
            (699_999, "700000")
        ]
    );
}
