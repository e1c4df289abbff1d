//! What the worker has served survives a `kill -9` of the worker: after a restart on the same
//! cache dir, the same lines come back with the same line numbers.

mod support;

use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn lines_served_before_a_sigkill_are_served_after_the_restart() {
    let dir = temp_dir("crash-lines");
    let args = ["--worker-id", "crash-lines"];
    let worker = WorkerProcess::start(&dir, &args);
    let mut c = worker.client().await;
    c.run_task(command_request(
        "lines/task-0",
        &["sh", "-c", "echo one; echo two >&2; echo three; sleep 1000"],
    ))
    .await
    .unwrap();
    let served = loop {
        let entries = logs(&mut c, "lines/task-0").await;
        if entries.len() >= 3 {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let numbered = |entries: &[iris_worker::proto::worker::LogEntry]| -> Vec<(i64, String)> {
        entries
            .iter()
            .filter(|e| e.source == "stdout" || e.source == "stderr")
            .map(|e| (e.line_number, e.data.clone()))
            .collect()
    };
    let before = numbered(&served);
    assert_eq!(before.len(), 3, "{served:?}");
    worker.signal(libc::SIGKILL);
    drop(worker);
    let restarted = WorkerProcess::start(&dir, &args);
    let mut c = restarted.client().await;
    wait_for(&mut c, "lines/task-0", LIMIT, finished).await;
    let after = numbered(&logs(&mut c, "lines/task-0").await);
    assert_eq!(after, before, "the same lines under the same numbers");
}
