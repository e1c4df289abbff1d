//! Retention on the real binary: a worker keeps only the newest finished tasks (status, logs,
//! files, journal), and never one whose terminal report the controller has not acknowledged.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use iris_worker::proto::TaskState;
use support::*;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(20);

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn listed(c: &mut Client) -> Vec<String> {
    let mut ids: Vec<String> = c
        .list_tasks(iris_worker::proto::worker::ListTasksRequest {})
        .await
        .unwrap()
        .into_inner()
        .tasks
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    ids.sort();
    ids
}

type Client =
    iris_worker::proto::worker_service_client::WorkerServiceClient<tonic::transport::Channel>;

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_newest_finished_tasks_are_kept_with_their_logs_and_files() {
    let dir = temp_dir("retain");
    let args = ["--retain-finished-tasks", "5"];
    let worker = WorkerProcess::start(&dir, &args);
    let mut c = worker.client().await;
    for i in 0..20 {
        let id = format!("ret/task-{i:02}");
        let script = format!("echo line {i}; echo second {i}");
        let done = run_to_end(&mut c, &id, &["sh", "-c", &script]).await;
        assert_eq!(done.state, TaskState::Succeeded as i32);
    }
    let newest: Vec<String> = (15..20).map(|i| format!("ret/task-{i:02}")).collect();
    assert_eq!(listed(&mut c).await, newest);
    let gone = c
        .get_task_status(iris_worker::proto::worker::GetTaskStatusRequest {
            task_id: "ret/task-00".into(),
            include_result: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    for (i, id) in (15..20).zip(&newest) {
        let out = stdout_of(&logs(&mut c, id).await);
        assert_eq!(out, [format!("line {i}"), format!("second {i}")]);
    }
    // Exactly the kept attempts' logs are on disk (deletion runs off the driver).
    let expected: Vec<String> = (15..20)
        .map(|i| format!("ret%2Ftask-{i:02}.attempt-0.log"))
        .collect();
    until("the removed logs to go", async || {
        files_in(&dir.join("logs")) == expected
    })
    .await;
    assert!(files_in(&dir.join("tasks")).is_empty(), "no workdir left");
    // The journal forgot them too: a restart knows the same five.
    drop(worker);
    let worker = WorkerProcess::start(&dir, &args);
    let mut c = worker.client().await;
    assert_eq!(listed(&mut c).await, newest);
    assert_eq!(files_in(&dir.join("logs")), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_outage_holds_back_removal_until_the_reports_land() {
    let server = ControllerServer::start(TestController::default()).await;
    let addr = server.addr;
    let dir = temp_dir("retain-outage");
    let controller = format!("{addr}");
    let args = [
        "--controller-address",
        &controller,
        "--heartbeat-interval-ms",
        "300",
        "--retain-finished-tasks",
        "1",
    ];
    let worker = WorkerProcess::start(&dir, &args);
    let mut c = worker.client().await;
    run_to_end(&mut c, "hold/task-a", &["true"]).await;
    server
        .wait_report("hold/task-a", TaskState::Succeeded, LIMIT)
        .await;
    let state = server.controller.clone();
    server.stop().await;
    for id in ["hold/task-b", "hold/task-c"] {
        run_to_end(&mut c, id, &["true"]).await;
    }
    // Over the limit, but b and c wait for their reports: nothing they need may go.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        listed(&mut c).await,
        ["hold/task-a", "hold/task-b", "hold/task-c"]
    );
    let back = ControllerServer::start_on(addr, state).await;
    back.wait_report("hold/task-c", TaskState::Succeeded, LIMIT)
        .await;
    until("retention after the reports landed", async || {
        listed(&mut c).await == ["hold/task-c"]
    })
    .await;
}

/// A late or repeated RunTask for an attempt retention removed (a retry whose first answer was
/// lost) must never run it again, nor may a kill of it look like a lost task, also after a
/// restart; a higher attempt of the same task is new work and runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_attempt_is_never_run_again_even_after_a_restart() {
    let dir = temp_dir("retain-late");
    let args = ["--retain-finished-tasks", "1"];
    let worker = WorkerProcess::start(&dir, &args);
    let mut c = worker.client().await;
    let marker = dir.join("runs");
    let script = format!("echo run >> {}", marker.display());
    run_to_end(&mut c, "late/task-a", &["sh", "-c", &script]).await;
    run_to_end(&mut c, "late/task-b", &["true"]).await;
    assert_eq!(listed(&mut c).await, ["late/task-b"], "a was removed");
    let late = async |c: &mut Client| {
        let refused = c
            .run_task(command_request("late/task-a", &["sh", "-c", &script]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            refused.message().contains("already completed"),
            "{refused:?}"
        );
        let kill = c
            .kill_task(iris_worker::proto::worker::KillTaskRequest {
                task_id: "late/task-a".into(),
                term_timeout_ms: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(kill.code(), Code::FailedPrecondition, "{kill:?}");
    };
    late(&mut c).await;
    drop(worker);
    let worker = WorkerProcess::start(&dir, &args);
    let mut c = worker.client().await;
    late(&mut c).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "run\n",
        "ran once"
    );
    assert_eq!(listed(&mut c).await, ["late/task-b"]);
    // A newer attempt is new work.
    let mut retry = command_request("late/task-a", &["sh", "-c", &script]);
    retry.attempt_id = 1;
    c.run_task(retry).await.unwrap();
    wait_for(&mut c, "late/task-a", LIMIT, finished).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "run\nrun\n");
}
