//! The command line as people type it: global options before or after the command, the version
//! with the commit, completion scripts, and errors that name the worker and what to try.

mod support;

use std::process::{Command, Output};

use support::*;

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("IRIS_WORKER")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn worker_and_json_are_global_options_of_every_client_command() {
    let worker = WorkerProcess::start(&temp_dir("cli"), &[]);
    let addr = worker.addr.to_string();
    for args in [
        vec!["--worker", &addr, "task", "list"],
        vec!["task", "--worker", &addr, "list"],
        vec!["task", "list", "--worker", &addr],
        vec!["--worker", &addr, "--json", "health"],
        vec!["health", "--worker", &addr],
    ] {
        let out = cli(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let out = Command::new(BIN)
        .args(["task", "list", "--json"])
        .env("IRIS_WORKER", &addr)
        .output()
        .unwrap();
    assert!(out.status.success(), "IRIS_WORKER: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = cli(&["--version"]);
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let version = env!("CARGO_PKG_VERSION");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let commit = line
        .strip_prefix(&format!("iris-worker {version} ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line:?}"));
    match head {
        // Built from this checkout (a commit made since the build would differ: rebuild).
        Some(head) => assert_eq!(commit, head, "{line}"),
        None => assert_eq!(commit, "unknown"),
    }
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cli(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        // fish spells long options `-l worker`.
        let offers_worker = script.contains("--worker") || script.contains("-l worker");
        assert!(script.contains("iris-worker") && offers_worker, "{shell}");
    }
    let bad = cli(&["completions", "cmd.exe"]);
    assert!(!bad.status.success());
}

#[test]
fn an_unreachable_worker_is_named_with_what_to_try() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = cli(&["--worker", &addr, "task", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("--worker"), "{err}");
}
