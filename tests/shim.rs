//! The task shim, both as `iris-shim` and as `iris-worker shim`: it exits the way its task did,
//! and takes the task down when its parent dies.

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_iris-shim");
const WORKER: &str = env!("CARGO_BIN_EXE_iris-worker");

fn shim(argv: &[&str], via_worker: bool) -> std::process::ExitStatus {
    let me = std::process::id().to_string();
    let mut cmd = if via_worker {
        let mut c = Command::new(WORKER);
        c.arg("shim");
        c
    } else {
        Command::new(SHIM)
    };
    cmd.args(["--parent-pid", &me, "--"])
        .args(argv)
        .process_group(0);
    cmd.status().unwrap()
}

#[test]
fn exits_with_the_task_code_or_signal() {
    for via_worker in [false, true] {
        assert_eq!(shim(&["sh", "-c", "exit 7"], via_worker).code(), Some(7));
        let killed = shim(&["sh", "-c", "kill -TERM $$"], via_worker);
        assert_eq!(killed.signal(), Some(15), "via_worker={via_worker}");
        assert_eq!(shim(&["/nonexistent/cmd"], via_worker).code(), Some(127));
    }
}

#[test]
fn refuses_to_start_when_its_parent_is_not_the_one_named() {
    let status = Command::new(SHIM)
        .args(["--parent-pid", "1", "--", "true"])
        .process_group(0)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(137));
}

#[test]
fn task_dies_with_the_shims_parent() {
    // An intermediate shell plays the worker: it starts the shim, then is SIGKILLed.
    let script = format!("{SHIM} --parent-pid $$ -- sh -c 'echo $$; exec sleep 1000' & wait");
    let mut parent = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let task_pid: i32 = line.trim().parse().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{task_pid}")).exists());
    parent.kill().unwrap();
    parent.wait().unwrap();
    let start = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{task_pid}/stat")).unwrap_or_default();
        let dead = stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
        if dead {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "task {task_pid} outlived its worker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
