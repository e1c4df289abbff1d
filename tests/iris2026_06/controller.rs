//! The real Iris 2026-06 controller (marin-iris from PyPI, in the venv `scripts/setup-test-deps`
//! makes) on a free port with its own log service, and `drive.py` launching jobs on it with the
//! controller's own client: shared by `tests/iris_2026_06.rs` and `benches/iris2026.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{WorkerProcess, docker_image_ready, free_port, temp_dir, wait_for_listener};

pub fn python() -> Option<PathBuf> {
    let venv =
        std::env::var("IRIS_2026_06_VENV").unwrap_or_else(|_| "target/iris-2026-06-venv".into());
    let python = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(venv)
        .join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import iris.cluster.controller.main"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready && std::env::var("CI").as_deref() == Ok("true") {
        panic!("the Iris 2026-06 venv is missing: scripts/setup-test-deps makes it");
    }
    if !ready {
        eprintln!(
            "NOTICE: no Iris 2026-06 venv ({}); these tests did not run",
            python.display()
        );
    }
    ready.then_some(python)
}

/// A controller whose tasks run in `image`, when the venv and the docker image are both there
/// (with CI=true, either missing fails the test).
pub fn with_docker_image(image: &str, what: &str) -> Option<Controller> {
    if !docker_image_ready(image, what) {
        return None;
    }
    Some(Controller::start_with_task_image(python()?, image))
}

/// A workspace with no dependencies (an empty dev group, which the client's recipe syncs
/// without): Iris's client bundles it and its `uv sync` has nothing to fetch.
pub fn bare_workspace(dir: &Path, name: &str) -> PathBuf {
    let ws = dir.join("workspace");
    std::fs::create_dir_all(&ws).unwrap();
    let pyproject = format!(
        "[project]\nname = \"{name}\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\n\
         dependencies = []\n\n[dependency-groups]\ndev = []\n"
    );
    std::fs::write(ws.join("pyproject.toml"), pyproject).unwrap();
    ws
}

/// The real controller on a free port, with its own log service; two SIGTERMs stop it.
pub struct Controller {
    pub child: Child,
    pub port: u16,
    python: PathBuf,
    /// Its config, state and `controller.log`.
    pub dir: PathBuf,
}

impl Controller {
    pub fn start(python: PathBuf) -> Controller {
        Controller::start_with_task_image(python, "iris-test:busybox-uv")
    }

    /// A controller whose jobs run in `image` unless they name their own (Iris's
    /// `default_task_image`).
    pub fn start_with_task_image(python: PathBuf, image: &str) -> Controller {
        Controller::start_configured(python, image, "")
    }

    /// As `start_with_task_image`, with `extra` lines appended to its cluster config.
    pub fn start_configured(python: PathBuf, image: &str, extra: &str) -> Controller {
        let dir = temp_dir("iris-2026-06-controller");
        let port = free_port();
        let config = format!(
            "platform: {{manual: {{}}}}\ncontroller: {{manual: {{host: 127.0.0.1, port: {port}}}}}\n\
             worker_provider: {{}}\nstorage: {{remote_state_dir: file://{d}/remote, local_state_dir: {d}/local}}\n\
             defaults: {{worker: {{docker_image: {image}, default_task_image: {image}}}}}\n{extra}",
            d = dir.display()
        );
        std::fs::write(dir.join("cluster.yaml"), config).unwrap();
        let log = std::fs::File::create(dir.join("controller.log")).unwrap();
        let child = Command::new(&python)
            .args([
                "-m",
                "iris.cluster.controller.main",
                "serve",
                "--host",
                "127.0.0.1",
            ])
            .args(["--port", &port.to_string(), "--fresh", "--config"])
            .arg(dir.join("cluster.yaml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the Iris controller");
        wait_for_listener(port, Duration::from_secs(90), "the controller");
        Controller {
            child,
            port,
            python,
            dir,
        }
    }

    /// The flags of a 2026-06 worker of this controller named `id`, then `extra`.
    pub fn worker_args(&self, id: &str, extra: &[&str]) -> Vec<String> {
        let common = [
            "--controller-address",
            &self.address(),
            "--iris-protocol",
            "2026-06",
            "--worker-id",
            id,
        ];
        common.iter().chain(extra).map(|a| a.to_string()).collect()
    }

    /// A 2026-06 worker of this controller named `id` (`worker_args`), caching under `dir`.
    pub fn start_worker(&self, dir: &Path, id: &str, extra: &[&str]) -> WorkerProcess {
        let args = self.worker_args(id, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        WorkerProcess::start(dir, &args)
    }

    /// The controller as Iris's client and CLI take it.
    pub fn url(&self) -> String {
        format!("http://{}", self.address())
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Iris's own client (`client.py`) against this controller, ready to run `scenarios` with the
    /// workspace `ws` and the variables `env` (`IRIS_TEST_TASK_IMAGE`, ...).
    pub fn client_command(&self, ws: &Path, scenarios: &[&str], env: &[(&str, &str)]) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/iris2026_06/client.py");
        let mut cmd = Command::new(&self.python);
        cmd.arg(script)
            .arg(self.url())
            .arg(ws)
            .args(scenarios)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    }

    /// Runs `scenarios` with Iris's client: each one's JSON result, in their order.
    pub fn run_client(&self, ws: &Path, scenarios: &[&str], env: &[(&str, &str)]) -> Vec<Value> {
        let out = self.client_command(ws, scenarios, env).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let results: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["scenario"].is_string())
            .collect();
        let names: Vec<&str> = results
            .iter()
            .filter_map(|v| v["scenario"].as_str())
            .collect();
        assert_eq!(names, scenarios, "client.py answered: {text}");
        results
    }

    /// Launches a job with `drive.py` and waits for its end: the controller's view as JSON.
    pub fn drive(&self, name: &str, replicas: u32, extra: &[&str], argv: &[&str]) -> Value {
        let out = self
            .drive_child(name, replicas, extra, argv)
            .wait_with_output()
            .unwrap();
        parse(&out)
    }

    pub fn drive_child(&self, name: &str, replicas: u32, extra: &[&str], argv: &[&str]) -> Child {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/iris2026_06/drive.py");
        Command::new(&self.python)
            .arg(script)
            .args([&self.port.to_string(), name, &replicas.to_string()])
            .args(extra)
            .arg("--")
            .args(argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

pub fn parse(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("drive.py printed nothing"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"))
}

impl Drop for Controller {
    fn drop(&mut self) {
        for _ in 0..2 {
            // SAFETY: signalling our own child; its first SIGTERM only checkpoints.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What Iris's own worker is started with.
pub struct IrisWorkerConfig {
    pub id: String,
    pub image: String,
    /// Its `worker_attributes` (a constraint sends a job to it).
    pub attributes: serde_json::Map<String, Value>,
}

impl IrisWorkerConfig {
    pub fn new(id: &str, image: &str) -> IrisWorkerConfig {
        IrisWorkerConfig {
            id: id.to_string(),
            image: image.to_string(),
            attributes: serde_json::Map::new(),
        }
    }
}

/// Iris's own worker, docker runtime, registered with `ctl`; its package copied aside with the
/// nofile ulimit this machine's docker daemon refuses (hard 524,288 > its 20,000) lowered.
pub fn start_iris_worker(ctl: &Controller, dir: &Path, worker: IrisWorkerConfig) -> Child {
    let python = &ctl.python;
    let site = Command::new(python)
        .args([
            "-c",
            "import iris, os; print(os.path.dirname(os.path.dirname(iris.__file__)))",
        ])
        .output()
        .unwrap();
    let site = PathBuf::from(String::from_utf8_lossy(&site.stdout).trim());
    let overlay = dir.join("overlay");
    std::fs::create_dir_all(&overlay).unwrap();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(site.join("iris"))
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(copied.success());
    let docker_py = overlay.join("iris/cluster/runtime/docker.py");
    let text = std::fs::read_to_string(&docker_py).unwrap();
    assert!(
        text.contains("nofile=65536:524288"),
        "the patch no longer applies"
    );
    std::fs::write(
        &docker_py,
        text.replace("nofile=65536:524288", "nofile=20000:20000"),
    )
    .unwrap();
    let config = serde_json::json!({
        "platform": {"manual": {}},
        "host": "127.0.0.1",
        "port": free_port(),
        "cache_dir": dir.join("cache").display().to_string(),
        "controller_address": ctl.address(),
        "worker_id": worker.id,
        "runtime": "docker",
        "default_task_image": worker.image,
        "port_range": "41000-41999",
        "worker_attributes": worker.attributes,
    });
    let config_path = dir.join("worker.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let log = std::fs::File::create(dir.join("iris-worker.log")).unwrap();
    Command::new(python)
        .args(["-m", "iris.cluster.worker.main", "serve", "--worker-config"])
        .arg(&config_path)
        .env("PYTHONPATH", &overlay)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start Iris's worker")
}
