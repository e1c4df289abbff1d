//! Process runtime: everything a task starts belongs to it. Daemons that leave the process group
//! (`setsid`), double forks and processes ignoring SIGTERM never outlive their task: not after the
//! main process exits, not after KillTask, not after a SIGTERM or a SIGKILL of the worker. Each
//! leftover is found by a marker argument (a unique `sleep` duration) in /proc.

mod support;

use std::time::{Duration, Instant};

use iris_worker::proto::TaskState;
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

/// A `sleep` argument no other process on the machine has.
fn marker(n: u32) -> String {
    format!("4321.{}{n:03}", std::process::id())
}

/// Processes whose command line holds `marker` (zombies excepted: they are dead).
fn marked(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rfind(')')
            .is_some_and(|i| state[i + 1..].trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
            out.push(pid);
        }
    }
    out
}

fn wait_gone(marker: &str, limit: Duration) {
    let start = Instant::now();
    while !marked(marker).is_empty() {
        assert!(
            start.elapsed() < limit,
            "{marker} outlived its task: {:?}",
            marked(marker)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_present(marker: &str) {
    let start = Instant::now();
    while marked(marker).is_empty() {
        assert!(start.elapsed() < LIMIT, "{marker} never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leftovers_die_when_the_main_process_exits() {
    let worker = WorkerProcess::start(&temp_dir("contain-exit"), &[]);
    let mut c = worker.client().await;
    let (setsid, double, ignoring) = (marker(1), marker(2), marker(3));
    let cases = [
        (
            "daemon/task-0",
            format!("setsid sleep {setsid} & echo started"),
            setsid,
        ),
        (
            "daemon/task-1",
            format!("(sleep {double} &); echo started"),
            double,
        ),
        (
            "daemon/task-2",
            format!("trap '' TERM; setsid sleep {ignoring} & echo started; exit 4"),
            ignoring,
        ),
    ];
    for (task_id, script, _) in &cases {
        c.run_task(command_request(task_id, &["sh", "-c", script]))
            .await
            .unwrap();
    }
    for (task_id, _, marker) in &cases {
        let started = Instant::now();
        let done = wait_for(&mut c, task_id, LIMIT, finished).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{task_id} ended promptly"
        );
        let want = if task_id.ends_with('2') {
            (TaskState::Failed as i32, 4)
        } else {
            (TaskState::Succeeded as i32, 0)
        };
        assert_eq!((done.state, done.exit_code), want, "{task_id}: {done:?}");
        assert_eq!(stdout_of(&logs(&mut c, task_id).await), ["started"]);
        wait_gone(marker, Duration::from_secs(1));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_reaches_every_descendant() {
    let worker = WorkerProcess::start(&temp_dir("contain-kill"), &[]);
    let mut c = worker.client().await;
    let (polite, stubborn) = (marker(4), marker(5));
    let script =
        format!("setsid sleep {polite} & (trap '' TERM; setsid sleep {stubborn} &); sleep 1000");
    c.run_task(command_request("kill/task-0", &["sh", "-c", &script]))
        .await
        .unwrap();
    wait_present(&polite);
    wait_present(&stubborn);
    let (done, _) = kill_and_wait(&mut c, "kill/task-0", 300).await;
    assert_eq!(done.state, TaskState::Killed as i32);
    wait_gone(&polite, Duration::from_secs(2));
    wait_gone(&stubborn, Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_or_crashing_the_worker_leaves_no_descendant() {
    for (n, sig) in [(6, libc::SIGTERM), (7, libc::SIGKILL)] {
        let mut worker = WorkerProcess::start(&temp_dir("contain-worker"), &[]);
        let mut c = worker.client().await;
        let daemon = marker(n);
        let script = format!("(trap '' TERM; setsid sleep {daemon} &); sleep 1000");
        c.run_task(command_request("worker/task-0", &["sh", "-c", &script]))
            .await
            .unwrap();
        wait_present(&daemon);
        worker.signal(sig);
        let _ = worker.child.wait();
        wait_gone(&daemon, Duration::from_secs(5));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_counts_the_processes_that_left_the_group() {
    let worker = WorkerProcess::start(&temp_dir("contain-usage"), &[]);
    let mut c = worker.client().await;
    let (a, b) = (marker(8), marker(9));
    let script = format!("setsid sleep {a} & setsid sleep {b} & exec sleep 1000");
    c.run_task(command_request("usage/task-0", &["sh", "-c", &script]))
        .await
        .unwrap();
    wait_present(&a);
    wait_present(&b);
    // The shim, the main sleep and the two daemons.
    let s = wait_for(&mut c, "usage/task-0", LIMIT, |s| {
        s.resource_usage.is_some_and(|u| u.process_count >= 4)
    })
    .await;
    assert_eq!(s.resource_usage.unwrap().process_count, 4, "{s:?}");
    kill_and_wait(&mut c, "usage/task-0", 300).await;
    wait_gone(&a, Duration::from_secs(2));
    wait_gone(&b, Duration::from_secs(2));
}
