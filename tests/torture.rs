//! Torture on the real binary: rounds of mixed tasks (printing, exit codes, sleepers, forked
//! daemons, kills, timeouts) with the worker SIGKILLed at a seeded moment, in docker sometimes
//! a container killed too, and the worker restarted on the same cache dir. After each round:
//! every accepted attempt ends in one terminal state at the controller (a report may repeat,
//! never contradict), no attempt ran twice, every line served before the crash is served again
//! with its number, nothing of the round is left running, and the journal opened again.
//!
//! `TORTURE_ROUNDS` (default 30) rounds per runtime, `TORTURE_SEED` to replay a run's seed
//! (printed first). A long run by hand: `TORTURE_ROUNDS=500 cargo test --release --test torture`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use iris_worker::proto::TaskState;
use iris_worker::proto::worker::KillTaskRequest;
use support::*;

type Client =
    iris_worker::proto::worker_service_client::WorkerServiceClient<tonic::transport::Channel>;

const IMAGE: &str = "iris-test:busybox-uv";
const SETTLE: Duration = Duration::from_secs(60);

/// SplitMix64: the only randomness, so a seed replays the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(1, |d| d.as_nanos() as u64)
        })
}

fn rounds() -> u64 {
    std::env::var("TORTURE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Prints,
    ExitCode,
    Sleeps,
    Daemon,
    Killed,
    TimesOut,
}

const KINDS: [Kind; 6] = [
    Kind::Prints,
    Kind::ExitCode,
    Kind::Sleeps,
    Kind::Daemon,
    Kind::Killed,
    Kind::TimesOut,
];

/// The task's script: its first line says it started, so a second run shows in its log.
fn script(kind: Kind) -> &'static str {
    match kind {
        Kind::Prints => {
            "echo started; i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done"
        }
        Kind::ExitCode => "echo started; echo failing >&2; exit 3",
        Kind::Sleeps => "echo started; sleep 2; echo done",
        Kind::Daemon => "echo started; (sleep 300 &); setsid sleep 300 & echo forked; sleep 1",
        Kind::Killed | Kind::TimesOut => "echo started; sleep 30",
    }
}

struct Runtime {
    name: &'static str,
    args: Vec<String>,
}

/// What a run checked, for its last line.
#[derive(Default)]
struct Tally {
    attempts: usize,
    lines: usize,
    container_kills: usize,
}

struct Round<'a> {
    rng: &'a mut Rng,
    tally: &'a mut Tally,
    server: &'a ControllerServer,
    runtime: &'a Runtime,
    dir: &'a Path,
    prefix: String,
}

/// Lines served per task: line number to text.
type Served = BTreeMap<String, BTreeMap<i64, String>>;

impl Round<'_> {
    fn start(&self) -> WorkerProcess {
        let args: Vec<&str> = self.runtime.args.iter().map(String::as_str).collect();
        WorkerProcess::start(self.dir, &args)
    }

    async fn run(&mut self) -> Result<(), String> {
        let worker = self.start();
        let mut c = worker.client().await;
        let mut accepted = BTreeSet::new();
        let count = 3 + self.rng.below(4);
        let mut kills = Vec::new();
        for i in 0..count {
            let kind = KINDS[self.rng.below(KINDS.len() as u64) as usize];
            let id = format!("{}/task-{i}", self.prefix);
            let mut request = command_request(&id, &["sh", "-c", script(kind)]);
            if matches!(kind, Kind::TimesOut) {
                request.timeout_seconds = 1;
            }
            if c.run_task(request).await.is_ok() {
                accepted.insert(id.clone());
            }
            if matches!(kind, Kind::Killed) {
                kills.push(id);
            }
        }
        let crash_at = Duration::from_millis(self.rng.below(2_500));
        let kill_at = Duration::from_millis(self.rng.below(1_500));
        let mut served = Served::new();
        let start = Instant::now();
        while start.elapsed() < crash_at {
            if start.elapsed() >= kill_at {
                kill_all(&mut c, &mut kills).await;
            }
            for id in &accepted {
                record_served(&mut c, id, &mut served).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worker.signal(libc::SIGKILL);
        drop(worker);
        if self.runtime.name == "docker" && self.rng.below(3) == 0 {
            self.tally.container_kills += usize::from(kill_a_container(&self.prefix));
        }
        self.tally.attempts += accepted.len();
        self.tally.lines += served.values().map(BTreeMap::len).sum::<usize>();
        let worker = self.start();
        let mut c = worker.client().await;
        // The kills the crash came before (an adopted sleeper would run on for 30 s).
        kill_all(&mut c, &mut kills).await;
        self.settle(&accepted).await?;
        self.check_lines(&mut c, &accepted, &served).await?;
        self.check_nothing_left().await?;
        worker.signal(libc::SIGTERM);
        Ok(())
    }

    /// Every accepted attempt reaches one terminal state at the controller.
    async fn settle(&self, accepted: &BTreeSet<String>) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let mut waiting = Vec::new();
            for id in accepted {
                let terminal: BTreeSet<i32> = self
                    .server
                    .reports_for(id)
                    .iter()
                    .filter(|r| r.state >= TaskState::Succeeded as i32)
                    .map(|r| r.state)
                    .collect();
                match terminal.len() {
                    0 => waiting.push(id.clone()),
                    1 => {}
                    _ => return Err(format!("{id}: contradicting terminal reports {terminal:?}")),
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if start.elapsed() > SETTLE {
                return Err(format!("no terminal report for {waiting:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What was served is served again with its number, and no attempt started twice.
    async fn check_lines(
        &self,
        c: &mut Client,
        accepted: &BTreeSet<String>,
        served: &Served,
    ) -> Result<(), String> {
        for id in accepted {
            let now: BTreeMap<i64, String> = logs(c, id)
                .await
                .into_iter()
                .filter(|e| e.source == "stdout")
                .map(|e| (e.line_number, e.data))
                .collect();
            let starts = now.values().filter(|d| *d == "started").count();
            if starts > 1 {
                return Err(format!("{id} started {starts} times: {now:?}"));
            }
            for (n, data) in served.get(id).into_iter().flatten() {
                if now.get(n) != Some(data) {
                    return Err(format!(
                        "{id}: line {n} {data:?} was served before the crash, now {:?}",
                        now.get(n)
                    ));
                }
            }
        }
        Ok(())
    }

    async fn check_nothing_left(&self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let left = match self.runtime.name {
                "docker" => containers_of(&self.prefix),
                _ => processes_of(&self.prefix)
                    .iter()
                    .map(i32::to_string)
                    .collect(),
            };
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!("left behind: {left:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn kill_all(c: &mut Client, kills: &mut Vec<String>) {
    for id in kills.drain(..) {
        let _ = c
            .kill_task(KillTaskRequest {
                task_id: id,
                term_timeout_ms: 500,
            })
            .await;
    }
}

async fn record_served(c: &mut Client, id: &str, served: &mut Served) {
    let Ok(response) = c
        .fetch_task_logs(iris_worker::proto::worker::FetchTaskLogsRequest {
            task_id: id.to_string(),
            filter: None,
        })
        .await
    else {
        return;
    };
    let lines = served.entry(id.to_string()).or_default();
    for e in response.into_inner().logs {
        if e.source == "stdout" {
            lines.insert(e.line_number, e.data);
        }
    }
}

/// Processes of a task of this round.
fn processes_of(prefix: &str) -> Vec<i32> {
    let round = format!("{prefix}/");
    task_processes(|task| task.starts_with(&round))
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers (any state) of a task of this round.
fn containers_of(prefix: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        "label=iris.managed=true",
        "--format",
        "{{.Label \"iris.task_id\"}} {{.Names}}",
    ])
    .lines()
    .filter(|l| l.starts_with(&format!("{prefix}/")))
    .map(str::to_string)
    .collect()
}

/// The engine loses a container while the worker is down (OOM killer, an operator).
fn kill_a_container(prefix: &str) -> bool {
    let Some(name) = containers_of(prefix)
        .first()
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
    else {
        return false;
    };
    docker(&["kill", &name]);
    true
}

async fn torture(runtime: Runtime) {
    let seed = seed();
    let rounds = rounds();
    println!(
        "torture {}: seed {seed}, {rounds} rounds; replay: TORTURE_SEED={seed} TORTURE_ROUNDS={rounds} cargo test --test torture {}_runtime",
        runtime.name, runtime.name
    );
    let mut rng = Rng(seed);
    let server = ControllerServer::start(TestController::default()).await;
    let dir = temp_dir(&format!("torture-{}", runtime.name));
    let mut args = runtime.args.clone();
    args.extend(
        [
            "--controller-address",
            &server.addr.to_string(),
            "--heartbeat-interval-ms",
            "300",
            "--retain-finished-tasks",
            "20",
        ]
        .map(String::from),
    );
    let runtime = Runtime {
        name: runtime.name,
        args,
    };
    let started = Instant::now();
    let mut tally = Tally::default();
    for n in 0..rounds {
        let prefix = format!("tort{}-{}-r{n}", std::process::id(), runtime.name);
        let mut round = Round {
            rng: &mut rng,
            tally: &mut tally,
            server: &server,
            runtime: &runtime,
            dir: &dir,
            prefix,
        };
        if let Err(e) = round.run().await {
            panic!(
                "torture {} round {n} (seed {seed}): {e}\nreplay: TORTURE_SEED={seed} TORTURE_ROUNDS={rounds} cargo test --test torture {}_runtime",
                runtime.name, runtime.name
            );
        }
    }
    println!(
        "torture {}: {rounds} rounds clean in {:.1} s: {} attempts, {} served lines checked, {} containers killed",
        runtime.name,
        started.elapsed().as_secs_f64(),
        tally.attempts,
        tally.lines,
        tally.container_kills
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn process_runtime() {
    torture(Runtime {
        name: "process",
        args: Vec::new(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_runtime() {
    if !docker_image_ready(IMAGE, "the docker torture") {
        return;
    }
    let worker_id = format!("torture-{}", std::process::id());
    torture(Runtime {
        name: "docker",
        args: [
            "--runtime",
            "docker",
            "--default-image",
            IMAGE,
            "--worker-id",
            &worker_id,
        ]
        .map(String::from)
        .to_vec(),
    })
    .await;
}
