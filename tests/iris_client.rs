//! Jobs as Iris's users submit them, with Iris's own client and CLI (marin-iris
//! 0.2.20.dev202606180959 from PyPI, `tests/iris2026_06/client.py`), against the real controller
//! and our worker in both runtimes: callables (`Entrypoint.from_callable`), a command, replicas
//! reading `get_job_info()`, a task submitting a child job that inherits its env, a
//! `WorkerPool`, a named port, `iris job run`, and in docker the client's own container recipe
//! (`uv sync` of a real workspace, `uv pip install`) in a python3 + uv image. The scenarios are
//! submitted at once, as a cluster's users do, so in docker their setups share uv's cold cache
//! concurrently. Nothing here builds a request by hand. With CI=true a missing venv, engine or image fails; elsewhere the tests say
//! so and skip.

mod support;

#[path = "iris2026_06/controller.rs"]
#[allow(dead_code)] // drive.py's half serves tests/iris_2026_06.rs
mod controller;

use std::path::{Path, PathBuf};
use std::process::Command;

use controller::{Controller, python, with_docker_image};
use serde_json::Value;
use support::*;

const PYTHON_IMAGE: &str = "iris-test:python-uv";
/// The workers' `region` attribute: tasks see it as IRIS_WORKER_REGION.
const REGION: &str = "test-region-1";

/// A 2026-06 worker of `controller` in region `REGION`, with `extra` flags.
fn start_worker(controller: &Controller, cache: &Path, id: &str, extra: &[&str]) -> WorkerProcess {
    let args = controller.worker_args(id, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let region = format!("region={REGION}");
    WorkerProcess::start_with_env(cache, &args, &[("IRIS_WORKER_ATTRIBUTES", &region)])
}

/// Every scenario the client script runs in both runtimes.
const SCENARIOS: &[&str] = &[
    "callable",
    "raises",
    "command",
    "replicas",
    "child",
    "port",
    "pool",
    "cli",
    "log_levels",
    "exec",
    "process_status",
    "profile",
    "stats",
    "worker_log",
];

/// A workspace as a user's: a pyproject with a dependency and an empty dev group (the client
/// syncs `--no-group dev`). In docker its tasks import iris (child jobs, `get_job_info`, the
/// pool's actors), so it depends on marin-iris, with every package pinned to the set the tests'
/// controller venv was resolved to (`constraints.txt`).
fn workspace(dir: &Path) -> PathBuf {
    let ws = dir.join("workspace");
    std::fs::create_dir_all(&ws).unwrap();
    let constraints = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/iris2026_06/constraints.txt"),
    )
    .unwrap();
    let pins: Vec<String> = constraints
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l:?}"))
        .collect();
    let pyproject = format!(
        "[project]\nname = \"client-workspace\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\n\
         dependencies = [\"six\", \"marin-iris==0.2.20.dev202606180959\"]\n\n\
         [dependency-groups]\ndev = []\n\n[tool.uv]\nconstraint-dependencies = [{}]\n",
        pins.join(", ")
    );
    std::fs::write(ws.join("pyproject.toml"), pyproject).unwrap();
    std::fs::write(ws.join("README.md"), "a workspace of the client tests\n").unwrap();
    ws
}

/// Runs `scenarios` with the client, all at once (in docker, in `image`); each one's JSON
/// result by name. `IRIS_TEST_SCENARIOS=a,b` runs only those of them (to work on one).
fn run_client(
    controller: &Controller,
    ws: &Path,
    image: Option<&str>,
    scenarios: &[&str],
) -> Vec<(String, Value)> {
    let only = std::env::var("IRIS_TEST_SCENARIOS").unwrap_or_default();
    let scenarios: Vec<&str> = scenarios
        .iter()
        .copied()
        .filter(|s| only.is_empty() || only.split(',').any(|o| o == *s))
        .collect();
    let scenarios = &scenarios[..];
    let env = [
        ("IRIS_TEST_TASK_IMAGE", image.unwrap_or("")),
        ("IRIS_TEST_PARALLEL", "1"),
        // The docker worker takes periodic profiles (see its flags).
        (
            "IRIS_TEST_PERIODIC",
            if image.is_some() { "1" } else { "0" },
        ),
    ];
    let results = controller.run_client(ws, scenarios, &env);
    let names = scenarios.iter().map(|n| n.to_string());
    names.zip(results).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn count(lines: &[String], want: &str) -> usize {
    lines.iter().filter(|l| l.as_str() == want).count()
}

/// What every scenario must show, whichever runtime ran it (`workdir`: where the command ran).
fn check(name: &str, r: &Value, workdir: impl Fn(&str) -> bool) {
    let state = r["state"].as_str().unwrap_or_default();
    let logs = strings(&r["logs"]);
    let ok = "JOB_STATE_SUCCEEDED";
    match name {
        "callable" => {
            assert_eq!(state, ok, "{r}");
            assert_eq!(count(&logs, "hello from a callable"), 1, "{r}");
        }
        "raises" => {
            assert_eq!(state, "JOB_STATE_FAILED", "{r}");
            let errors = strings(&r["task_errors"]);
            assert!(errors[0].contains("ValueError: boom-2718"), "{r}");
            assert_eq!(r["task_exit_codes"][0], 1, "{r}");
        }
        "command" => {
            assert_eq!(state, ok, "{r}");
            let line = logs
                .iter()
                .find_map(|l| l.strip_prefix("from a command in "))
                .unwrap_or_else(|| panic!("no command output: {r}"));
            assert!(workdir(line), "ran in {line}: {r}");
        }
        "replicas" => {
            assert_eq!(state, ok, "{r}");
            for i in 0..2 {
                // The region is the worker's (IRIS_WORKER_ATTRIBUTES), as IRIS_WORKER_REGION.
                let want = format!("job-info index={i} of=2 job=/root/replicas region={REGION}");
                assert_eq!(count(&logs, &want), 1, "{want}: {r}");
            }
        }
        "child" => {
            assert_eq!(state, ok, "{r}");
            let want = "child ended JOB_STATE_SUCCEEDED as /root/parent/child";
            assert_eq!(count(&logs, want), 1, "{r}");
            let child = strings(&r["child_logs"]);
            assert_eq!(
                count(&child, "child sees PARENT_SECRET=tok-31415"),
                1,
                "{r}"
            );
        }
        "port" => {
            assert_eq!(state, ok, "{r}");
            assert!(
                logs.iter()
                    .any(|l| l.starts_with("bound web port") && l.contains("on 0.0.0.0")),
                "{r}"
            );
        }
        "pool" => {
            assert_eq!(state, ok, "{r}");
            assert_eq!(r["results"], serde_json::json!([0, 1, 4, 9, 16, 25]), "{r}");
        }
        "cli" => {
            assert_eq!(state, ok, "{r}");
            let output = r["output"].as_str().unwrap_or_default();
            assert!(output.contains("from iris job run"), "{r}");
        }
        "pip_package" => {
            assert_eq!(state, ok, "{r}");
            assert!(
                logs.iter()
                    .any(|l| l.starts_with("toolz 1.0.0 from /app/.venv/")),
                "the package is in the task's venv: {r}"
            );
        }
        "log_levels" => {
            assert_eq!(state, ok, "{r}");
            // The log service's level filter, as `iris job logs --min-level` uses it.
            let warning = strings(&r["at_least"]["WARNING"]);
            let error = strings(&r["at_least"]["ERROR"]);
            let has = |lines: &[String], l: &str| lines.iter().any(|x| x == l);
            assert!(has(&warning, "WARNING:root:careful now"), "{r}");
            assert!(!has(&error, "WARNING:root:careful now"), "{r}");
            assert!(has(&error, "ERROR:root:it broke"), "{r}");
            assert!(has(&error, "E20261207 12:00:00 1 app in iris form"), "{r}");
        }
        "exec" => {
            // What the command printed, to each stream, and its exit code, through Iris's CLI
            // and controller; it ran in the task's workdir with the task's environment.
            let stdout = r["stdout"].as_str().unwrap_or_default();
            let line = stdout
                .strip_prefix("in ")
                .unwrap_or_else(|| panic!("no exec output: {r}"));
            let (dir, task) = line.trim().split_once(" as ").unwrap_or_default();
            assert!(workdir(dir), "ran in {dir}: {r}");
            assert!(task.ends_with("/exec-target/0"), "the task's env: {r}");
            assert!(
                r["stderr"].as_str().unwrap_or_default().contains("oops"),
                "{r}"
            );
            assert_eq!(r["exit_code"], 3, "{r}");
            let after = r["after_stderr"].as_str().unwrap_or_default();
            assert!(
                after.contains("not running"),
                "a finished task says so: {r}"
            );
            assert_eq!(r["after_exit_code"], 1, "{r}");
        }
        "process_status" => {
            assert_eq!(state, "exit 0", "{r}");
            let info = &r["info"];
            assert!(info["pid"].as_i64().unwrap_or(0) > 0, "{r}");
            // int64 fields come as strings in proto3 JSON.
            let n = |k: &str| {
                info[k]
                    .as_str()
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            assert!(
                n("memory_rss_bytes") > 0 && n("memory_total_bytes") > 0,
                "{r}"
            );
            assert!(n("uptime_ms") > 0, "{r}");
            assert!(info["thread_count"].as_i64().unwrap_or(0) > 0, "{r}");
            assert!(info["open_fd_count"].as_i64().unwrap_or(0) > 0, "{r}");
            let runs = info["python_version"].as_str().unwrap_or_default();
            assert!(runs.contains("iris-worker"), "{r}");
            // `iris process profile --target /system/worker/<id> threads`: the worker's threads.
            let threads = r["self_threads"].as_str().unwrap_or_default();
            assert!(threads.contains(" threads\nThread "), "{r}");
            assert!(threads.contains("\"tokio-rt-worker\""), "{r}");
        }
        "profile" => {
            // py-spy from the task's venv (Iris's client installs it with the task's packages;
            // the process runtime skips that recipe, as Iris's does): the busy function's
            // name in a thread dump and a CPU profile, or, with no py-spy, the reason.
            let threads = r["threads"].as_str().unwrap_or_default();
            let err = r["threads_err"].as_str().unwrap_or_default();
            let missing = err.contains("py-spy is not installed");
            assert!(threads.contains("spin_here") || missing, "{r}");
            let mem_err = r["mem_err"].as_str().unwrap_or_default();
            assert_eq!(missing, mem_err.contains("memray is not installed"), "{r}");
            if !missing {
                assert_eq!(r["cpu_has_spin"], true, "{r}");
                // memray (attached with the image's gdb): the allocating function's name in
                // the flamegraph.
                assert_eq!(r["mem_has_grow"], true, "{r}");
                // Kept for Iris's dashboard in `iris.profile`: both on-demand profiles (and in
                // docker the worker's periodic one), of this task's attempt 0, by this worker.
                let rows = r["profile_rows"].as_array().expect("profile rows");
                let has = |trigger: &str, kind: &str| {
                    rows.iter()
                        .any(|row| row["trigger"] == trigger && row["type"] == kind)
                };
                assert!(has("on_demand", "thread") && has("on_demand", "cpu"), "{r}");
                assert!(has("on_demand", "memory"), "{r}");
                for row in rows {
                    assert_eq!(row["attempt_id"], 0, "{r}");
                    assert_eq!(row["vm_id"], r["worker"], "{r}");
                    // The profile itself (a memory flamegraph names the allocating function).
                    assert_eq!(row["names_spin"], true, "{r}");
                }
            }
        }
        "stats" => {
            // Iris's dashboard reads task usage only from `iris.task`: a running task's row,
            // with its CPU and memory, within 10 s of RUNNING (Iris writes one every 5 s).
            let seconds = r["seconds_to_first_row"].as_f64();
            assert!(seconds.is_some_and(|s| s <= 10.0), "{r}");
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let rows = r["task_rows"].as_array().expect("task rows");
            // It holds 80 MB and spins (how much CPU it gets depends on the machine's load).
            let n = |row: &Value, k: &str| row[k].as_i64().unwrap_or(0);
            let row = rows
                .iter()
                .find(|row| n(row, "memory_mb") >= 80 && n(row, "cpu_millicores") > 0)
                .unwrap_or_else(|| panic!("no row with the task's 80 MB and its CPU: {r}"));
            assert_eq!(row["task_id"], r["task"], "{r}");
            assert_eq!(row["worker_id"], r["worker"], "{r}");
            assert_eq!(row["attempt_id"], 0, "{r}");
            let ts = row["ts_ms"].as_i64().unwrap_or(0);
            assert!(
                (now_ms - 120_000..=now_ms).contains(&ts),
                "the sample's time: {r}"
            );
            // The worker's own rows, each Reconcile: the host and who it is.
            let workers = r["worker_rows"].as_array().expect("worker rows");
            assert!(!workers.is_empty(), "{r}");
            assert!(workers.iter().any(|w| w["status"] == "RUNNING"), "{r}");
            for w in workers {
                assert!(w["mem_total_bytes"].as_i64().unwrap_or(0) > 0, "{r}");
                assert!(w["cpu_count"].as_i64().unwrap_or(0) > 0, "{r}");
                assert!(w["disk_total_bytes"].as_i64().unwrap_or(0) > 0, "{r}");
                assert!(!w["address"].as_str().unwrap_or_default().is_empty(), "{r}");
            }
        }
        "worker_log" => {
            // The worker's own log under Iris's worker key: its start-up line, with the level
            // the `--level` filter goes by (no INFO line passes WARNING).
            assert_eq!(state, "exit 0", "{r}");
            let lines = strings(&r["lines"]);
            let worker = format!("worker_id={}", r["worker"].as_str().unwrap());
            let serving = |l: &String| l.contains("shell::serve serving") && l.contains(&worker);
            assert!(lines.iter().any(serving), "{r}");
            assert!(!strings(&r["warnings"]).iter().any(serving), "{r}");
        }
        other => panic!("no check for {other}"),
    }
}

#[test]
fn the_clients_jobs_run_in_the_process_runtime() {
    let Some(python) = python() else {
        return;
    };
    let controller = Controller::start(python.clone());
    let dir = temp_dir("iris-client-process");
    let ws = workspace(&dir);
    let id = format!("w-client-process-{}", std::process::id());
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let worker_python = python.display().to_string();
    let worker = start_worker(&controller, &cache, &id, &["--python", &worker_python]);
    let cache = std::fs::canonicalize(&cache).unwrap();
    for (name, r) in run_client(&controller, &ws, None, SCENARIOS) {
        // The client's container recipe is not run on the host (Iris's process runtime skips it
        // too) and the build log says so.
        if let Some(logs) = r["logs"].as_array() {
            let skipped = logs.iter().any(|l| {
                l.as_str()
                    .is_some_and(|l| l.contains("setup command(s) skipped"))
            });
            assert!(skipped, "{name}: {r}");
        }
        check(&name, &r, |dir| Path::new(dir).starts_with(&cache));
    }
    stop(worker);
}

/// Images the worker built (`iris-<job>` repositories): the 2026-06 era builds none.
fn built_images() -> Vec<String> {
    let out = Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("iris-root"))
        .map(String::from)
        .collect()
}

#[test]
fn docker_the_clients_jobs_run_with_its_container_recipe() {
    let Some(controller) = with_docker_image(PYTHON_IMAGE, "the client's docker jobs") else {
        return;
    };
    let dir = temp_dir("iris-client-docker");
    let ws = workspace(&dir);
    let id = format!("w-client-docker-{}", std::process::id());
    // Periodic profiles every 3 s of 2 s each, so one is taken while the profile scenario runs.
    let docker = [
        "--runtime",
        "docker",
        "--default-image",
        PYTHON_IMAGE,
        "--profile-interval",
        "3s",
        "--profile-seconds",
        "2",
    ];
    let worker = start_worker(&controller, &dir.join("cache"), &id, &docker);
    let before = built_images();
    let mut scenarios = SCENARIOS.to_vec();
    scenarios.push("pip_package");
    let results = run_client(&controller, &ws, Some(PYTHON_IMAGE), &scenarios);
    if let Some((_, profile)) = results.iter().find(|(n, _)| n == "profile") {
        let dump = profile["threads"].as_str().unwrap_or_default();
        assert!(
            dump.contains("spin_here"),
            "py-spy ran in the container: {profile}"
        );
        let rows = profile["profile_rows"].as_array().expect("profile rows");
        let periodic = rows
            .iter()
            .find(|row| row["trigger"] == "periodic")
            .unwrap_or_else(|| panic!("no periodic profile: {profile}"));
        assert_eq!(periodic["format"], "speedscope", "{profile}");
        assert_eq!(periodic["duration_seconds"], 2, "{profile}");
    }
    for (name, r) in &results {
        // The client's recipe ran in the task's image: uv synced the workspace into /app/.venv.
        if let Some(logs) = r["logs"].as_array() {
            let synced = logs.iter().any(|l| l == "python=/app/.venv/bin/python");
            assert!(synced, "{name}: {r}");
        }
        check(name, r, |dir| dir == "/app");
    }
    assert_eq!(built_images(), before, "no image is built for pip_packages");
    // setup and run containers shared uv's cache under the worker's cache dir.
    let cache = dir.join("cache/uv-cache");
    let entries = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert!(entries > 0, "uv's cache is kept at {}", cache.display());
    let seconds: Vec<(String, f64)> = results
        .iter()
        .map(|(n, r)| (n.clone(), r["seconds"].as_f64().unwrap_or(-1.0)))
        .collect();
    eprintln!(
        "docker client jobs, submit -> end in seconds (the first one fills uv's cache): {seconds:?}"
    );
    stop(worker);
    // Nothing of the worker's runs on; an exited container a stop did not get to remove is
    // the next start's to remove (its survey), so it goes here instead.
    let of_worker = format!("label=iris.worker_id={id}");
    let containers = |which: &str| {
        let out = Command::new("docker")
            .args(["ps", which, "-q", "--filter", &of_worker])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let running = containers("--filter=status=running");
    assert!(
        running.is_empty(),
        "containers running after the stop: {running}"
    );
    for left in containers("-a").lines() {
        let _ = Command::new("docker").args(["rm", "-f", left]).output();
    }
    // uv's cache of a marin-iris workspace is gigabytes: left behind, a few runs fill the disk
    // past the retention tests' pressure threshold.
    let _ = std::fs::remove_dir_all(&dir);
}

/// A graceful stop: SIGTERM makes the worker kill its tasks, as `serve` does. A `WorkerPool`'s
/// actor jobs outlive the client's pool, so a SIGKILLed worker would leave them running.
fn stop(mut worker: WorkerProcess) {
    worker.signal(libc::SIGTERM);
    let _ = worker.child.wait();
}
