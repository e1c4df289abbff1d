//! `deploy/iris-worker.service`: the flags it starts the worker with parse, the state directory
//! is the cache dir, a restart adopts containers, and systemd itself accepts the file (when
//! `systemd-analyze` is installed; the other checks run everywhere).

use std::collections::BTreeMap;
use std::path::Path;

use clap::Parser;
use iris_worker::cli::{Cli, TopCommand};

/// `[Section] key=value` lines, comments and blanks skipped; a repeated key keeps the last.
fn unit() -> BTreeMap<(String, String), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/iris-worker.service");
    let text = std::fs::read_to_string(path).unwrap();
    let mut section = String::new();
    let mut keys = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
        keys.insert((section.clone(), key.to_string()), value.to_string());
    }
    keys
}

fn get<'a>(unit: &'a BTreeMap<(String, String), String>, section: &str, key: &str) -> &'a str {
    unit.get(&(section.to_string(), key.to_string()))
        .unwrap_or_else(|| panic!("[{section}] {key} missing"))
}

#[test]
fn the_unit_starts_a_docker_worker_that_survives_its_own_restart() {
    let unit = unit();
    let exec: Vec<&str> = get(&unit, "Service", "ExecStart")
        .split_whitespace()
        .collect();
    let cli = Cli::try_parse_from(&exec).expect("ExecStart parses as the binary would");
    let TopCommand::Serve(serve) = cli.command else {
        panic!("ExecStart must run `serve`");
    };
    let options = serve.options(None).unwrap();
    assert!(options.preserve_containers_on_stop, "a restart adopts");
    assert_eq!(format!("{:?}", serve.runtime), "Docker");
    assert!(
        cli.target.auth_token_file.is_some(),
        "off loopback: a token"
    );
    let state = get(&unit, "Service", "StateDirectory");
    assert_eq!(
        options.cache_dir,
        Path::new("/var/lib").join(state),
        "the cache dir is the state directory"
    );
    assert_eq!(get(&unit, "Service", "KillMode"), "process");
    assert_eq!(get(&unit, "Service", "Restart"), "on-failure");
    let stop: u64 = get(&unit, "Service", "TimeoutStopSec").parse().unwrap();
    assert!(
        stop * 1000 > serve.shutdown_grace_ms,
        "systemd must wait out the shutdown grace"
    );
    assert_eq!(get(&unit, "Install", "WantedBy"), "multi-user.target");
}

#[test]
fn systemd_accepts_the_unit() {
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("NOTICE: no systemd-analyze here; the unit was only parsed");
        return;
    };
    assert!(version.status.success());
    // Verify a copy whose ExecStart names the binary just built (verify checks it exists).
    let dir = std::env::temp_dir().join(format!("iris-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/iris-worker.service"),
    )
    .unwrap()
    .replace(
        "/usr/local/bin/iris-worker",
        env!("CARGO_BIN_EXE_iris-worker"),
    );
    let copy = dir.join("iris-worker.service");
    std::fs::write(&copy, text).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Dependencies this machine lacks (docker.service in a container) are not the unit's fault.
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("iris-worker.service") && !l.contains("docker.service"))
        .collect();
    assert!(own.is_empty(), "systemd-analyze verify: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
