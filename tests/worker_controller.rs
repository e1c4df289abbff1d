//! The worker and its controller: registration and heartbeats, reports through an outage,
//! should_reset, crash and restart, graceful stop. The test controller serves both protocols:
//! a bare address makes the worker speak Connect (Iris's default), `grpc://` gRPC.

mod support;

use std::time::{Duration, Instant};

use iris_worker::proto::TaskState;
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

fn controller_args(server: &ControllerServer, scheme: &str) -> Vec<String> {
    vec![
        "--controller-address".into(),
        format!("{scheme}{}", server.addr),
        "--heartbeat-interval-ms".into(),
        "300".into(),
        "--worker-id".into(),
        "w1".into(),
    ]
}

fn start_worker(dir: &std::path::Path, server: &ControllerServer) -> WorkerProcess {
    start_worker_speaking(dir, server, "")
}

fn start_worker_speaking(
    dir: &std::path::Path,
    server: &ControllerServer,
    scheme: &str,
) -> WorkerProcess {
    let args = controller_args(server, scheme);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    WorkerProcess::start(dir, &args)
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_running_and_terminal_and_heartbeats_running_ids_over_connect() {
    reports_running_and_terminal_and_heartbeats_running_ids("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_running_and_terminal_and_heartbeats_running_ids_over_grpc() {
    reports_running_and_terminal_and_heartbeats_running_ids("grpc://").await;
}

async fn reports_running_and_terminal_and_heartbeats_running_ids(scheme: &str) {
    let server = ControllerServer::start(TestController::default()).await;
    let worker = start_worker_speaking(&temp_dir("reports"), &server, scheme);
    let mut c = worker.client().await;
    c.run_task(command_request("rep/task-0", &["sleep", "1"]))
        .await
        .unwrap();
    let running = server
        .wait_report("rep/task-0", TaskState::Running, LIMIT)
        .await;
    assert_eq!(running.worker_id, "w1");
    // A heartbeat during the run lists the task.
    let start = Instant::now();
    loop {
        let seen = server
            .controller
            .state
            .lock()
            .unwrap()
            .registrations
            .iter()
            .any(|r| r.running_task_ids.contains(&"rep/task-0".to_string()));
        if seen {
            break;
        }
        assert!(start.elapsed() < LIMIT, "no heartbeat listed the task");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = server
        .wait_report("rep/task-0", TaskState::Succeeded, LIMIT)
        .await;
    assert!(done.finished_at_ms > 0);
    let states: Vec<i32> = server
        .reports_for("rep/task-0")
        .iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(
        states,
        vec![TaskState::Running as i32, TaskState::Succeeded as i32],
        "in order, once each"
    );
    let want = if scheme == "grpc://" {
        Protocol::Grpc
    } else {
        Protocol::Connect
    };
    let protocols = server.controller.state.lock().unwrap().protocols.clone();
    assert!(protocols.iter().all(|p| *p == want), "{protocols:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn terminal_report_survives_a_controller_outage_over_connect() {
    terminal_report_survives_a_controller_outage("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn terminal_report_survives_a_controller_outage_over_grpc() {
    terminal_report_survives_a_controller_outage("grpc://").await;
}

async fn terminal_report_survives_a_controller_outage(scheme: &str) {
    let server = ControllerServer::start(TestController::default()).await;
    let addr = server.addr;
    let worker = start_worker_speaking(&temp_dir("outage"), &server, scheme);
    let mut c = worker.client().await;
    c.run_task(command_request("out/task-0", &["sleep", "1"]))
        .await
        .unwrap();
    server
        .wait_report("out/task-0", TaskState::Running, LIMIT)
        .await;
    let controller = server.controller.clone();
    server.stop().await;
    // The task ends while nobody listens, and the outage lasts well past the backoff cap.
    let done = wait_for(&mut c, "out/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let back = ControllerServer::start_on(addr, controller).await;
    let report = back
        .wait_report("out/task-0", TaskState::Succeeded, Duration::from_secs(15))
        .await;
    assert_eq!(report.finished_at_ms, done.finished_at_ms);
}

#[tokio::test(flavor = "multi_thread")]
async fn should_reset_kills_every_task_and_reregisters() {
    let server = ControllerServer::start(TestController::default()).await;
    let worker = start_worker(&temp_dir("reset"), &server);
    let mut c = worker.client().await;
    c.run_task(command_request("rst/task-0", &["sleep", "1000"]))
        .await
        .unwrap();
    server
        .wait_report("rst/task-0", TaskState::Running, LIMIT)
        .await;
    let before = server.controller.state.lock().unwrap().registrations.len();
    server.controller.state.lock().unwrap().reset_next = true;
    let killed = server
        .wait_report("rst/task-0", TaskState::Killed, LIMIT)
        .await;
    assert!(killed.error.contains("reset"), "{}", killed.error);
    let start = Instant::now();
    while server.controller.state.lock().unwrap().registrations.len() < before + 2 {
        assert!(
            start.elapsed() < LIMIT,
            "no re-registration after the reset"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkilled_worker_takes_its_tasks_along_and_reports_them_lost_after_restart() {
    let dir = temp_dir("crash");
    let server = ControllerServer::start(TestController::default()).await;
    let worker = start_worker(&dir, &server);
    let mut c = worker.client().await;
    let req = command_request("crash/task-0", &["sh", "-c", "sleep 1000 & echo $$; wait"]);
    c.run_task(req).await.unwrap();
    server
        .wait_report("crash/task-0", TaskState::Running, LIMIT)
        .await;
    let pid: i32 = loop {
        if let Some(line) = stdout_of(&logs(&mut c, "crash/task-0").await).first() {
            break line.parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pgid = pgid_of(pid);
    assert!(group_members(pgid).len() >= 2);
    worker.signal(libc::SIGKILL);
    drop(worker);
    let start = Instant::now();
    while !group_members(pgid).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "orphans: {:?}",
            group_members(pgid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restarted = start_worker(&dir, &server);
    let lost = server
        .wait_report("crash/task-0", TaskState::WorkerFailed, LIMIT)
        .await;
    assert_eq!(lost.attempt_id, 0);
    let mut c = restarted.client().await;
    let s = status(&mut c, "crash/task-0").await;
    assert_eq!(s.state, TaskState::WorkerFailed as i32);
    assert!(
        !dir.join("tasks").join("crash%2Ftask-0.attempt-0").exists(),
        "workdir cleaned"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_gracefully_killing_and_reporting_tasks() {
    let server = ControllerServer::start(TestController::default()).await;
    let mut worker = start_worker(&temp_dir("stop"), &server);
    let mut c = worker.client().await;
    c.run_task(command_request("stop/task-0", &["sleep", "1000"]))
        .await
        .unwrap();
    server
        .wait_report("stop/task-0", TaskState::Running, LIMIT)
        .await;
    worker.signal(libc::SIGTERM);
    let start = Instant::now();
    let code = loop {
        if let Some(status) = worker.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(start.elapsed() < LIMIT, "worker did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0));
    let killed = server.reports_for("stop/task-0");
    assert!(
        killed.iter().any(|r| r.state == TaskState::Killed as i32),
        "{killed:?}"
    );
}
