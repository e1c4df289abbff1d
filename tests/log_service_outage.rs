//! The cluster's log service goes away for 30 s under a running task (Iris 2026-06's real
//! controller, with finelog running on its own behind a forwarder the test takes down): no log
//! line is lost or doubled, and the stats rows taken during the outage reach the service once it
//! is back.

#[path = "iris2026_06/controller.rs"]
#[allow(dead_code)]
mod controller;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use controller::{Controller, bare_workspace, python};
use serde_json::Value;
use support::outage::Outage;
use support::*;

const OUTAGE: Duration = Duration::from_secs(30);
const LINES: usize = 500;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// finelog's own server (the `marin-finelog-server` wheel Iris's controller embeds), alone.
fn finelog(python: &Path, dir: &Path) -> (Child, u16) {
    let port = free_port();
    let code = format!(
        "import time; from finelog_server import EmbeddedServer\n\
         s = EmbeddedServer(log_dir={dir:?}, host='127.0.0.1', port={port})\n\
         while True: time.sleep(60)",
        dir = dir.join("finelog").display().to_string()
    );
    let child = Command::new(python)
        .args(["-c", &code])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_listener(port, Duration::from_secs(60), "finelog");
    (child, port)
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}: {metrics}"))
}

#[test]
fn a_log_service_outage_of_30_s_loses_no_line_and_the_stats_rows_catch_up() {
    let Some(python) = python() else {
        return;
    };
    let dir = temp_dir("log-service-outage");
    let (mut log_server, log_port) = finelog(&python, &dir);
    let mut service = Outage::start(log_port);
    let endpoint = format!(
        "endpoints: {{/system/log-server: {{uri: \"http://127.0.0.1:{}\"}}}}\n",
        service.port
    );
    let controller = Controller::start_configured(python, "iris-test:busybox-uv", &endpoint);
    let ws = bare_workspace(&dir, "workspace");
    let worker_python = controller::python().unwrap().display().to_string();
    let worker = controller.start_worker(
        &dir.join("cache"),
        &format!("w-outage-{}", std::process::id()),
        &["--python", &worker_python],
    );
    let lines = LINES.to_string();
    let env = [("OUTAGE_LINES", lines.as_str())];
    let client = controller
        .client_command(&ws, &["outage"], &env)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ws.join("outage-running").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the task never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let down_at = now_ms();
    service.down();
    std::thread::sleep(OUTAGE);
    let (_, during) = http_get(&worker.dashboard, "/metrics", &[]);
    service.up();
    let up_at = now_ms();
    std::fs::write(ws.join("outage-over"), "").unwrap();
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = text
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result: {text}"));
    assert_eq!(r["state"], "JOB_STATE_SUCCEEDED", "{r}");

    // The worker saw the outage: pushes failed while the service was away.
    assert!(
        counter(&during, "iris_worker_log_push_failures_total") > 0.0,
        "{during}"
    );
    // Every line, once, in order.
    assert_eq!(r["lines"], LINES, "{r}");
    assert_eq!(r["missing"], serde_json::json!([]), "{r}");
    assert_eq!(r["doubled"], 0, "{r}");
    assert_eq!(r["in_order"], true, "{r}");
    // Rows taken while the service was away reached it afterwards: a task row every 5 s and a
    // worker row each Reconcile (about one a second) inside the outage.
    let inside = |key: &str| {
        r[key]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_i64)
            .filter(|ms| (down_at..up_at).contains(ms))
            .count()
    };
    let (tasks, workers) = (inside("task_row_ms"), inside("worker_row_ms"));
    eprintln!("rows from inside the outage: {tasks} task, {workers} worker");
    assert!(tasks >= 4, "task rows from the outage: {tasks}: {r}");
    assert!(workers >= 15, "worker rows from the outage: {workers}: {r}");
    let (_, after) = http_get(&worker.dashboard, "/metrics", &[]);
    assert_eq!(
        counter(&after, "iris_worker_stats_rows_dropped_total"),
        0.0,
        "{after}"
    );
    drop(worker);
    let _ = log_server.kill();
}
