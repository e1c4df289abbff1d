//! TPU VMs as Iris runs them: four docker workers on this machine, each reading its own fake GCE
//! metadata server (`tests/iris2026_06/metadata.py`) as one VM of a v5litepod-16 slice (worker
//! numbers 0-3), under the real 2026-06 controller; a coscheduled TPU job of four replicas
//! submitted with Iris's own client (`ResourceSpec(device=tpu_device(...))`,
//! `CoschedulingConfig(group_by="tpu-name")`) lands one task per VM, each in a TPU container
//! (privileged, 100 GB /dev/shm, 64 GiB memlock, the host's network) with the TPU variables.
//! A fifth VM whose metadata has no worker number registers as no TPU worker and says why.
//! There are no TPU devices here: the tasks print what they see and exit 0.

mod support;

#[path = "iris2026_06/controller.rs"]
#[allow(dead_code)]
mod controller;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use controller::{Controller, bare_workspace, with_docker_image};
use serde_json::Value;
use support::*;

const IMAGE: &str = "iris-test:python-uv";
const SLICE: &str = "tpu-slice-a";
const VARIANT: &str = "v5litepod-16";

/// A fake metadata server answering from the files under `dir`; killed on drop.
struct Metadata {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Metadata {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Metadata {
    /// One VM: instance `name`, TPU worker `number` (none: the key is absent).
    fn start(dir: &Path, name: &str, number: Option<u32>) -> Metadata {
        let set = |key: &str, value: &str| {
            let path = dir.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, value).unwrap();
        };
        set("name", name);
        set("zone", "projects/1234/zones/us-east5-b");
        set("scheduling/preemptible", "TRUE");
        set("preempted", "FALSE");
        set("attributes/accelerator-type", VARIANT);
        let endpoints: Vec<String> = (0..4)
            .map(|i| format!("{i}:w{i}:10.9.0.{}", i + 2))
            .collect();
        set("attributes/worker-network-endpoints", &endpoints.join(","));
        set(
            "attributes/tpu-env",
            &format!("ACCELERATOR_TYPE: '{VARIANT}'\nCHIPS_PER_HOST_BOUNDS: '2,2,1'\n"),
        );
        if let Some(n) = number {
            set("attributes/agent-worker-number", &n.to_string());
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/iris2026_06/metadata.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the fake metadata server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the metadata server's port");
        Metadata {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A docker worker of `controller` reading `metadata`; its id is its own to choose.
fn start_worker(controller: &Controller, cache: &Path, metadata: &Metadata) -> WorkerProcess {
    let host = metadata.host();
    let args = [
        "--controller-address",
        &controller.address(),
        "--iris-protocol",
        "2026-06",
        "--gce-metadata-host",
        &host,
        "--runtime",
        "docker",
        "--default-image",
        IMAGE,
        // A TPU VM has far more cores than this machine, and Iris's client asks a TPU task
        // for 4 of them: the capacity is declared, as Iris's autoscaler declares a scale group's.
        "--cpu-millicores",
        "16000",
    ];
    WorkerProcess::start(cache, &args)
}

/// Runs the client's `scenarios` in the TPU image; each one's JSON, in order.
fn run_client(controller: &Controller, ws: &Path, scenarios: &[&str]) -> Vec<Value> {
    let env = [
        ("IRIS_TEST_TASK_IMAGE", IMAGE),
        ("IRIS_TEST_JOB_WAIT", "40"),
    ];
    controller.run_client(ws, scenarios, &env)
}

/// Runs the client's `preempt` scenario, preempting the VM its task first runs on (its
/// metadata's `preempted` flips to TRUE) when the client says where that is.
fn preempt_one(controller: &Controller, ws: &Path, vms: &[Metadata]) -> Value {
    let env = [
        ("IRIS_TEST_TASK_IMAGE", IMAGE),
        ("IRIS_TEST_JOB_WAIT", "30"),
    ];
    let mut child = controller
        .client_command(ws, &["preempt"], &env)
        .spawn()
        .unwrap();
    let mut result = Value::Null;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(v) = serde_json::from_str::<Value>(&line.unwrap()) else {
            continue;
        };
        if let Some(on) = v["running_on"].as_str() {
            let n: usize = on
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .expect(on);
            std::fs::write(vms[n].dir.join("preempted"), "TRUE").unwrap();
        } else if v["scenario"] == "preempt" {
            result = v;
        }
    }
    let _ = child.wait();
    result
}

/// The docker engine's /proc entry.
fn engine_proc() -> PathBuf {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "dockerd")
        })
        .expect("the docker engine's process")
        .path()
}

/// The engine's capability bounding set: what a privileged container can hold at most.
fn engine_caps() -> u64 {
    let status = std::fs::read_to_string(engine_proc().join("status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    u64::from_str_radix(line["CapBnd:".len()..].trim(), 16).unwrap()
}

/// What `ulimit -l` shows in a TPU container (KiB): Iris's 64 GiB, or the engine's own hard
/// locked-memory limit when that is lower (runc cannot raise a container's past it).
fn expected_memlock_kib() -> String {
    let iris = 64u64 << 30;
    let engine = std::fs::read_to_string(engine_proc().join("limits"))
        .ok()
        .and_then(|limits| {
            let line = limits
                .lines()
                .find(|l| l.starts_with("Max locked memory"))?
                .to_string();
            line["Max locked memory".len()..]
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        });
    (iris.min(engine.unwrap_or(u64::MAX)) >> 10).to_string()
}

/// `key=value` fields of a task's `tpu ...` line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
}

#[test]
fn a_tpu_slice_of_four_vms_runs_a_coscheduled_job_from_irises_client() {
    let Some(controller) = with_docker_image(IMAGE, "the TPU slice") else {
        return;
    };
    let dir = temp_dir("iris-tpu-slice");
    let mut vms = Vec::new();
    let mut workers = Vec::new();
    for n in 0..4u32 {
        let meta = Metadata::start(
            &dir.join(format!("meta-{n}")),
            &format!("{SLICE}-w-{n}"),
            Some(n),
        );
        workers.push(start_worker(
            &controller,
            &dir.join(format!("cache-{n}")),
            &meta,
        ));
        vms.push(meta);
    }
    // A VM of another slice whose worker number cannot be read.
    let lost = Metadata::start(&dir.join("meta-lost"), "tpu-slice-b-w-7", None);
    workers.push(start_worker(&controller, &dir.join("cache-lost"), &lost));
    // Registration is the worker's first act; Reconcile health follows within a second or two.
    std::thread::sleep(std::time::Duration::from_secs(3));

    let ws = bare_workspace(&dir, "tpu-workspace");
    let results = run_client(&controller, &ws, &["tpu_slice", "workers"]);
    let (job, listed) = (&results[0], &results[1]);

    // The coscheduled job: one task per VM of the slice, in worker-number order.
    assert_eq!(job["state"], "JOB_STATE_SUCCEEDED", "{job}");
    let on: Vec<String> = job["task_workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap_or_default().to_string())
        .collect();
    let want: Vec<String> = (0..4).map(|n| format!("{SLICE}-worker-{n}")).collect();
    assert_eq!(on, want, "{job}");
    let lines: Vec<&str> = job["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .filter(|l| l.starts_with("tpu "))
        .collect();
    assert_eq!(lines.len(), 4, "{job}");
    for line in &lines {
        assert_eq!(field(line, "jax"), "tpu,cpu", "{line}");
        assert_eq!(field(line, "pjrt"), "TPU", "{line}");
        assert_eq!(field(line, "init"), "1", "{line}");
        // One slice: no multislice variables.
        assert_eq!(field(line, "slices"), "none", "{line}");
        assert_eq!(field(line, "memlock"), expected_memlock_kib(), "{line}");
        let shm_kib: u64 = field(line, "shm").parse().unwrap_or(0);
        assert!(shm_kib >= 90_000_000, "a 100 GB /dev/shm: {line}");
        // Privileged: every capability the engine holds (SYS_ADMIN, 21, among them), whether
        // by --privileged or, on an engine short of some, by naming them all (up to
        // AUDIT_READ, 37: what every engine since 2020 can name).
        let caps = u64::from_str_radix(field(line, "cap"), 16).unwrap_or(0);
        let named = engine_caps() & ((1 << 38) - 1);
        assert!(caps & (1 << 21) != 0, "{line}");
        assert_eq!(caps & named, named, "{line}");
        assert_ne!(field(line, "hostnet"), "0", "the host's network: {line}");
    }
    let mut seen: Vec<&str> = lines.iter().map(|l| field(l, "worker")).collect();
    seen.sort();
    assert_eq!(seen, want, "each task saw its VM's worker id");

    // Every VM registered under its slice's name, with the attributes a TPU job matches.
    let listed = listed["workers"].as_array().expect("workers");
    for n in 0..4 {
        let id = format!("{SLICE}-worker-{n}");
        let w = listed
            .iter()
            .find(|w| w["worker_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} registered: {listed:?}"));
        assert_eq!(w["tpu_name"], SLICE, "{w}");
        assert_eq!(w["tpu_worker_id"], n.to_string(), "{w}");
        assert_eq!(w["device"]["tpu"]["variant"], VARIANT, "{w}");
        assert_eq!(w["device"]["tpu"]["count"], 4, "{w}");
        let attr = |k: &str| w["attributes"][k].clone();
        assert_eq!(attr("device-type")["stringValue"], "tpu", "{w}");
        assert_eq!(attr("device-variant")["stringValue"], VARIANT, "{w}");
        assert_eq!(attr("tpu-name")["stringValue"], SLICE, "{w}");
        assert_eq!(attr("tpu-worker-id")["intValue"], n.to_string(), "{w}");
        assert_eq!(attr("tpu-vm-count")["intValue"], "4", "{w}");
        assert_eq!(attr("zone")["stringValue"], "us-east5-b", "{w}");
        assert_eq!(attr("region")["stringValue"], "us-east5", "{w}");
        assert_eq!(attr("preemptible")["stringValue"], "true", "{w}");
    }
    // The VM without a worker number is no TPU worker and never worker 0 of its slice.
    let lost_w = listed
        .iter()
        .find(|w| w["worker_id"] == "tpu-slice-b-w-7-worker-0")
        .unwrap_or_else(|| panic!("the VM without a worker number registered: {listed:?}"));
    assert!(lost_w["device"]["tpu"].is_null(), "{lost_w}");
    assert!(lost_w["attributes"]["tpu-name"].is_null(), "{lost_w}");
    assert_eq!(
        lost_w["attributes"]["device-type"]["stringValue"], "cpu",
        "{lost_w}"
    );
    // It says why in its health, which the controller reads with every Reconcile (curl asks
    // as the controller does, with an empty desired set: it has no tasks to lose).
    let lost_addr = workers.last().unwrap().addr;
    let out = Command::new("curl")
        .args(["-s", "-H", "content-type: application/json", "-d"])
        .arg(r#"{"workerId": "tpu-slice-b-w-7-worker-0"}"#)
        .arg(format!(
            "http://{lost_addr}/iris.cluster.WorkerService/Reconcile"
        ))
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(answer["health"]["healthy"], false, "{answer}");
    let why = answer["health"]["healthError"].as_str().unwrap_or_default();
    assert!(why.contains("no readable worker number"), "{answer}");

    // A task whose TPU will not initialise ends as the machine's failure, with the chip's line.
    let bad = &run_client(&controller, &ws, &["bad_chip"])[0];
    let attempt = &bad["attempts"][0][0];
    assert_eq!(attempt["state"], "TASK_STATE_WORKER_FAILED", "{bad}");
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(error.contains("open(/dev/vfio/0)"), "{bad}");

    // A VM preempted under a running task: the task ends at once as the worker's failure (its
    // error says why) and the controller puts it back to pending on its preemption budget (the
    // job spans the slice: Iris's client makes a task per VM, so no other VM is free for it).
    let preempt = preempt_one(&controller, &ws, &vms);
    assert_eq!(preempt["num_tasks"], 4, "{preempt}");
    let ended = preempt["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["state"] == "TASK_STATE_WORKER_FAILED")
        .unwrap_or_else(|| panic!("an attempt ended as the worker's failure: {preempt}"));
    assert!(
        ended["error"]
            .as_str()
            .unwrap_or_default()
            .contains("preempted"),
        "{preempt}"
    );
    assert!(
        [
            "TASK_STATE_PENDING",
            "TASK_STATE_ASSIGNED",
            "TASK_STATE_BUILDING"
        ]
        .contains(&preempt["state"].as_str().unwrap_or_default()),
        "the task is retried, not failed: {preempt}"
    );
    let seconds = preempt["seconds_to_end"].as_f64().unwrap_or(f64::MAX);
    eprintln!("preemption: the controller saw the attempt end {seconds:.2} s after the flip");
    assert!(
        seconds < 3.0,
        "the controller hears of a preemption at once: {preempt}"
    );

    for mut w in workers {
        w.signal(libc::SIGTERM);
        let _ = w.child.wait();
    }
    drop((vms, lost));
    let _ = std::fs::remove_dir_all(&dir);
}
