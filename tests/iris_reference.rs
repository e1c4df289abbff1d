//! Iris's own docker worker (marin-iris 0.2.20 from PyPI, with the nofile patch the peers notes
//! describe) as the reference for ours: both registered with one real 2026-06 controller, the
//! same jobs sent to each by Iris's own client (a constraint on the `which` attribute picks the
//! worker): what the task sees of its container (limits, capabilities, `/tmp`, the host's
//! network), an image pulled from a real registry (Debian's `docker-registry`), a tag the
//! registry lacks, and a registry that is down. Where the two differ on purpose the assertion
//! says so.

mod support;

#[path = "iris2026_06/controller.rs"]
#[allow(dead_code)]
mod controller;

use std::path::Path;
use std::process::Command;

use controller::{
    Controller, IrisWorkerConfig, bare_workspace, start_iris_worker, with_docker_image,
};
use serde_json::Value;
use support::registry::Registry;
use support::*;

const IMAGE: &str = "iris-test:python-uv";

/// What a task prints of its container, one `key=value` line.
const PROBE: &str = "echo \"probe nofile=$(ulimit -Sn):$(ulimit -Hn) core=$(ulimit -c) \
     cap=$(grep CapEff /proc/self/status | awk '{print $2}') \
     tmp=$(awk '$2 == \"/tmp\" {print $3}' /proc/mounts) \
     hostnet=$(grep -c docker0 /proc/net/dev)\"";

/// `command` on the worker whose `which` attribute is `which`, in `image`, with Iris's client.
fn on(ctl: &Controller, ws: &Path, which: &str, image: &str, command: &str) -> Value {
    let constraint = format!("which={which}");
    let env = [
        ("IRIS_TEST_TASK_IMAGE", image),
        ("IRIS_TEST_CONSTRAINT", constraint.as_str()),
        ("IRIS_TEST_COMMAND", command),
        ("IRIS_TEST_JOB_WAIT", "120"),
    ];
    ctl.run_client(ws, &["on_worker"], &env).remove(0)
}

fn probe_line(result: &Value) -> String {
    result["logs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str())
        .find(|l| l.starts_with("probe "))
        .unwrap_or_else(|| panic!("no probe line: {result}"))
        .to_string()
}

fn first_attempt(result: &Value) -> (String, String) {
    let a = &result["attempts"][0][0];
    (
        a["state"].as_str().unwrap_or_default().to_string(),
        a["error"].as_str().unwrap_or_default().to_string(),
    )
}

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn irises_own_worker_and_ours_run_the_same_jobs_alike() {
    let Some(ctl) = with_docker_image(IMAGE, "the reference worker") else {
        return;
    };
    let dir = temp_dir("iris-reference");
    let mut attributes = serde_json::Map::new();
    attributes.insert("which".into(), "iris".into());
    let config = IrisWorkerConfig {
        attributes,
        ..IrisWorkerConfig::new("iris-reference", IMAGE)
    };
    let mut iris = start_iris_worker(&ctl, &dir.join("iris"), config);
    let docker_args = [
        "--runtime",
        "docker",
        "--default-image",
        IMAGE,
        "--worker-attributes",
        "which=ours",
    ];
    let ours = ctl.start_worker(&dir.join("ours"), "ours-reference", &docker_args);
    let ws = bare_workspace(&dir, "reference");

    // The container each runs a task in, as the task sees it.
    let iris_probe = probe_line(&on(&ctl, &ws, "iris", IMAGE, PROBE));
    let ours_probe = probe_line(&on(&ctl, &ws, "ours", IMAGE, PROBE));
    eprintln!("Iris's container: {iris_probe}\nours:             {ours_probe}");
    assert_eq!(
        ours_probe, iris_probe,
        "the same container settings as Iris's"
    );
    assert!(
        !ours_probe.contains("hostnet=0"),
        "the host's network, as Iris: {ours_probe}"
    );

    // A task image the engine lacks, from a real registry: both pull it (a tag of its own
    // each, so each pulls) and run the task.
    let registry = Registry::start(&dir);
    let pushed = |tag: &str| {
        let image = format!("{}/reference/python-uv:{tag}", registry.addr);
        docker(&["tag", IMAGE, &image]);
        docker(&["push", "-q", &image]);
        docker(&["rmi", &image]);
        image
    };
    for which in ["iris", "ours"] {
        let image = pushed(which);
        let r = on(&ctl, &ws, which, &image, "echo pulled-and-ran");
        assert_eq!(r["state"], "JOB_STATE_SUCCEEDED", "{which}: {r}");
        let _ = Command::new("docker").args(["rmi", &image]).output();
    }

    // A tag the registry lacks: the user's mistake, FAILED, for both.
    for which in ["iris", "ours"] {
        let missing = format!("{}/reference/python-uv:nope-{which}", registry.addr);
        let r = on(&ctl, &ws, which, &missing, "true");
        let (state, error) = first_attempt(&r);
        assert_eq!(state, "TASK_STATE_FAILED", "{which}: {r}");
        assert!(
            error.contains("manifest unknown"),
            "{which}, the registry's words: {r}"
        );
    }

    // The registry down: the machine's fault for both (WORKER_FAILED: the controller retries on
    // its preemption budget, not the user's).
    let addr = registry.addr.clone();
    drop(registry);
    for which in ["iris", "ours"] {
        let gone = format!("{addr}/reference/python-uv:down-{which}");
        let r = on(&ctl, &ws, which, &gone, "true");
        let (state, error) = first_attempt(&r);
        assert_eq!(state, "TASK_STATE_WORKER_FAILED", "{which}: {r}");
        assert!(error.contains("connection refused"), "{which}: {r}");
    }

    drop(ours);
    iris.kill().unwrap();
    let _ = iris.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
