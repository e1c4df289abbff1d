//! Worker benchmarks. Each number is printed next to a baseline measured in the same run, as a
//! ratio. Run with `cargo bench --bench worker` (release build of the worker binary first).
//!
//! - throughput: 1,000 trivial tasks over gRPC until all SUCCEEDED vs spawn+reap of `true`;
//! - exit detection: process exit to SUCCEEDED visible over gRPC (p50, p99);
//! - kill latency: KillTask of a cooperative process to KILLED visible (p50, p99);
//! - ingest: a task printing 1 GiB of lines vs the same pipeline into `cat > /dev/null`, and the
//!   worker's peak RSS;
//! - protocols: RunTask (an idempotent resubmission) + GetTaskStatus round trips over Connect
//!   (protobuf and JSON, HTTP/1.1 keep-alive) against gRPC (HTTP/2), in interleaved rounds;
//! - reconcile (`BENCH_ONLY=reconcile`): one 2026-06 Reconcile of 1,000 desired running
//!   attempts (decode, the adapter, the core, encode) vs decoding and encoding the same bytes;
//! - stats (`BENCH_ONLY=stats`): the stats writer's CPU per 1,000 `iris.task` rows (made from
//!   samples, queued, taken, Arrow-encoded, framed as a WriteRows request) vs the Arrow IPC
//!   encode of the same rows alone;
//! - soak (`BENCH_ONLY=soak`, `SOAK_TASKS`, default 100,000): short tasks through one worker
//!   with default retention; RSS, cache dir, journal, ListTasks latency and tasks/s per tenth.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iris_worker::proto;
use iris_worker::proto::TaskState;
use iris_worker::proto::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;

type Client = WorkerServiceClient<Channel>;

use iris_worker::shell::connect::client::{ConnectClient, tcp_dialer};
use iris_worker::shell::connect::codec::Codec;

/// The benches start the worker as the tests do (`tests/support`), with production's stats
/// interval and no dashboard.
#[path = "../tests/support/mod.rs"]
mod support;

use support::WorkerProcess as Worker;

fn start_worker() -> Worker {
    start_worker_with(&[])
}

fn start_worker_with(extra: &[&str]) -> Worker {
    let dir = support::temp_dir("bench");
    let mut args = vec!["--no-dashboard", "--stats-interval-ms", "1000"];
    args.extend_from_slice(extra);
    Worker::start(&dir, &args)
}

fn request(task_id: &str, argv: &[&str]) -> proto::worker::RunTaskRequest {
    iris_worker::proto::worker::RunTaskRequest::for_command(task_id, 0, argv)
}

async fn state(c: &mut Client, task_id: &str) -> proto::TaskStatus {
    c.get_task_status(proto::worker::GetTaskStatusRequest {
        task_id: task_id.into(),
        include_result: false,
    })
    .await
    .unwrap()
    .into_inner()
}

async fn wait_finished(c: &mut Client, task_id: &str) -> (proto::TaskStatus, Instant) {
    loop {
        let s = state(c, task_id).await;
        if s.state >= TaskState::Succeeded as i32 {
            return (s, Instant::now());
        }
        // Polling must not steal the worker's CPU on a 2-core machine; 1 ms is the resolution.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn throughput(c: &mut Client, n: usize) -> (f64, f64) {
    let start = Instant::now();
    for i in 0..n {
        tokio::process::Command::new("true").status().await.unwrap();
        let _ = i;
    }
    let baseline = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..n {
        c.run_task(request(&format!("tp/task-{i}"), &["true"]))
            .await
            .unwrap();
    }
    for i in 0..n {
        let (s, _) = wait_finished(c, &format!("tp/task-{i}")).await;
        assert_eq!(s.state, TaskState::Succeeded as i32);
    }
    let worker = n as f64 / start.elapsed().as_secs_f64();
    (worker, baseline)
}

async fn exit_detection(c: &mut Client, n: usize) -> Vec<f64> {
    let mut samples = Vec::new();
    for i in 0..n {
        let id = format!("exit/task-{i}");
        // The task prints the wall clock as its very last act.
        c.run_task(request(&id, &["date", "+%s%N"])).await.unwrap();
        let (s, _) = wait_finished(c, &id).await;
        let seen = wall_ns();
        assert_eq!(s.state, TaskState::Succeeded as i32);
        let logs = c
            .fetch_task_logs(proto::worker::FetchTaskLogsRequest {
                task_id: id,
                filter: None,
            })
            .await
            .unwrap()
            .into_inner()
            .logs;
        let printed: u128 = logs[0].data.trim().parse().unwrap();
        samples.push((seen.saturating_sub(printed)) as f64 / 1e6);
    }
    samples
}

async fn kill_latency(c: &mut Client, n: usize) -> Vec<f64> {
    let mut samples = Vec::new();
    for i in 0..n {
        let id = format!("kill/task-{i}");
        c.run_task(request(&id, &["sleep", "1000"])).await.unwrap();
        while state(c, &id).await.state != TaskState::Running as i32 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let asked = Instant::now();
        c.kill_task(proto::worker::KillTaskRequest {
            task_id: id.clone(),
            term_timeout_ms: 0,
        })
        .await
        .unwrap();
        let (s, seen) = wait_finished(c, &id).await;
        assert_eq!(s.state, TaskState::Killed as i32);
        samples.push(seen.duration_since(asked).as_secs_f64() * 1e3);
    }
    samples
}

const LINE_PIPELINE: &str = "yes 'iris-worker benchmark line: the quick brown fox jumps over the lazy dog 0123456789' | head -c 1073741824";

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the command name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// MiB/s through the worker, MiB/s into `cat`, the worker's peak RSS (MiB) and CPU s per GiB.
async fn ingest(c: &mut Client, pid: u32) -> (f64, f64, u64, f64) {
    let mib = 1024.0;
    let start = Instant::now();
    let ok = Command::new("sh")
        .args(["-c", &format!("{LINE_PIPELINE} | cat > /dev/null")])
        .status()
        .unwrap();
    assert!(ok.success());
    let baseline = mib / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let cpu_before = cpu_seconds(pid);
    c.run_task(request("ingest/task-0", &["sh", "-c", LINE_PIPELINE]))
        .await
        .unwrap();
    let (s, _) = wait_finished(c, "ingest/task-0").await;
    assert_eq!(s.state, TaskState::Succeeded as i32);
    let worker = mib / start.elapsed().as_secs_f64();
    let cpu_per_gib = cpu_seconds(pid) - cpu_before;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    (worker, baseline, peak_kb / 1024, cpu_per_gib)
}

const IMAGE: &str = "iris-test:busybox-uv";

/// RunTask to RUNNING through the worker vs `docker run --rm IMAGE true` through the CLI (p50,
/// ms), and 100 short containers end to end (tasks/s).
async fn docker_numbers() -> Option<(f64, f64, f64)> {
    let image = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .ok()?;
    if !image.status.success() {
        eprintln!("docker benchmark skipped: no {IMAGE} (scripts/docker-test-image)");
        return None;
    }
    let worker = start_worker_with(&[
        "--runtime",
        "docker",
        "--default-image",
        IMAGE,
        "--worker-id",
        "bench-docker",
    ]);
    let mut c = Client::connect(format!("http://{}", worker.addr))
        .await
        .unwrap();
    let mut cli = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let ok = Command::new("docker")
            .args(["run", "--rm", IMAGE, "true"])
            .status()
            .unwrap();
        assert!(ok.success());
        cli.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let mut to_running = Vec::new();
    for i in 0..20 {
        let id = format!("drun/task-{i}");
        let start = Instant::now();
        c.run_task(request(&id, &["true"])).await.unwrap();
        // RUNNING, or already past it: `true` may finish between two polls.
        while state(&mut c, &id).await.state < TaskState::Running as i32 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        to_running.push(start.elapsed().as_secs_f64() * 1e3);
        wait_finished(&mut c, &id).await;
        // Let the engine remove it before the next one, as `docker run --rm` does.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    for i in 0..100 {
        c.run_task(request(&format!("dshort/task-{i}"), &["true"]))
            .await
            .unwrap();
    }
    for i in 0..100 {
        let (s, _) = wait_finished(&mut c, &format!("dshort/task-{i}")).await;
        assert_eq!(s.state, TaskState::Succeeded as i32);
    }
    let rate = 100.0 / start.elapsed().as_secs_f64();
    Some((
        percentile(&mut to_running, 0.5),
        percentile(&mut cli, 0.5),
        rate,
    ))
}

/// The three ways a client reaches the worker's one port.
enum Rpc {
    Grpc(Client),
    Connect(ConnectClient),
}

impl Rpc {
    async fn round_trip(&mut self, submit: &proto::worker::RunTaskRequest) {
        let status = proto::worker::GetTaskStatusRequest {
            task_id: submit.task_id.clone(),
            include_result: false,
        };
        match self {
            Rpc::Grpc(c) => {
                c.run_task(submit.clone()).await.unwrap();
                c.get_task_status(status).await.unwrap();
            }
            Rpc::Connect(c) => {
                let t = Duration::from_secs(5);
                let path = "/iris.cluster.WorkerService/";
                let _: proto::worker::RunTaskResponse =
                    c.unary(&format!("{path}RunTask"), submit, t).await.unwrap();
                let _: proto::TaskStatus = c
                    .unary(&format!("{path}GetTaskStatus"), &status, t)
                    .await
                    .unwrap();
            }
        }
    }
}

/// Round-trip latencies (ms) per protocol: gRPC, Connect protobuf, Connect JSON.
async fn protocols(addr: &str, rounds: usize, per_round: usize) -> [Vec<f64>; 3] {
    let mut grpc = Client::connect(format!("http://{addr}")).await.unwrap();
    let submit = request("proto/task-0", &["sleep", "600"]);
    grpc.run_task(submit.clone()).await.unwrap();
    let connect = ConnectClient::new(addr, tcp_dialer(), None);
    let mut rpcs = [
        Rpc::Grpc(grpc),
        Rpc::Connect(connect.clone()),
        Rpc::Connect(connect.with_codec(Codec::Json)),
    ];
    let mut samples: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        for (rpc, out) in rpcs.iter_mut().zip(samples.iter_mut()) {
            for _ in 0..per_round {
                let start = Instant::now();
                rpc.round_trip(&submit).await;
                out.push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    samples
}

/// A steady-state Reconcile of `n` running attempts, in-process: (ms per call through decode,
/// adapter, core and encode; ms for protobuf decode + encode of the same messages alone).
fn reconcile_numbers(n: usize, rounds: u32) -> (f64, f64) {
    use iris_worker::core::{CoreConfig, Effect, Event, WorkerCore};
    use iris_worker::proto::v2026_06::iris::cluster::worker;
    use iris_worker::proto::v2026_06::iris::job;
    use iris_worker::shell::era2026_06::reconcile::desired;
    use prost::Message;
    let config = CoreConfig {
        era: iris_worker::core::Era::Reconcile { ships_logs: false },
        live_attempts_max: n + 1,
        port_range: 30000..=40000,
        ..iris_worker::core::testing::config()
    };
    let mut core = WorkerCore::new(config, 0);
    let uid = |i: usize| format!("uid-{i:05}");
    let first: Vec<worker::DesiredAttempt> = (0..n)
        .map(|i| worker::DesiredAttempt {
            attempt_uid: uid(i),
            intent: Some(worker::desired_attempt::Intent::Run(worker::AttemptSpec {
                request: Some(job::RunTaskRequest {
                    task_id: format!("/bench/job/{i}"),
                    num_tasks: n as i32,
                    attempt_uid: uid(i),
                    entrypoint: Some(job::RuntimeEntrypoint {
                        run_command: Some(job::CommandEntrypoint {
                            argv: vec!["sleep".into(), "600".into()],
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })),
        })
        .collect();
    core.reconcile(1, first.iter().map(desired).collect());
    // Bring every attempt to RUNNING, as a runtime would.
    while let Some(effect) = core.poll_effect() {
        let event = match effect {
            Effect::PrepareWorkdir { attempt, .. } => Event::WorkdirReady { attempt },
            Effect::BuildImage { attempt, .. } => Event::BuildFinished {
                attempt,
                image: None,
                from_cache: true,
            },
            Effect::StartContainer(spec) => Event::ContainerStarted {
                attempt: spec.attempt,
            },
            _ => continue,
        };
        core.handle(2, event);
    }
    let steady = worker::ReconcileRequest {
        worker_id: "worker-1".into(),
        desired: (0..n)
            .map(|i| worker::DesiredAttempt {
                attempt_uid: uid(i),
                intent: Some(worker::desired_attempt::Intent::Run(worker::AttemptSpec {
                    request: None,
                })),
            })
            .collect(),
    };
    let bytes = steady.encode_to_vec();
    let start = Instant::now();
    let mut answer_bytes = Vec::new();
    for round in 0..rounds {
        let request = worker::ReconcileRequest::decode(&bytes[..]).unwrap();
        let wanted = request.desired.iter().map(desired).collect();
        let observed = core.reconcile(3 + u64::from(round), wanted);
        let response = worker::ReconcileResponse {
            worker_id: "worker-1".into(),
            observed: observed
                .into_iter()
                .map(|o| worker::AttemptObservation {
                    attempt_uid: o.attempt_uid,
                    state: o.state.map_or(12, |s| s.to_proto() as i32),
                    exit_code: o.exit_code,
                    error: o.error,
                    ..Default::default()
                })
                .collect(),
            health: None,
        };
        answer_bytes = response.encode_to_vec();
    }
    let ours = start.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
    let start = Instant::now();
    for _ in 0..rounds {
        let request = worker::ReconcileRequest::decode(&bytes[..]).unwrap();
        std::hint::black_box(request.encode_to_vec());
        let response = worker::ReconcileResponse::decode(&answer_bytes[..]).unwrap();
        std::hint::black_box(response.encode_to_vec());
    }
    let base = start.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
    (ours, base)
}

/// This thread's CPU time, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU microseconds per 1,000 rows: (the writer's whole path, the Arrow encode alone), over
/// `rounds` batches of 1,000 rows.
fn stats_numbers(rounds: u32) -> (f64, f64) {
    use iris_worker::core::ResourceUsage;
    use iris_worker::shell::era2026_06::stats_writer::write_request;
    use iris_worker::shell::stats::rows::{TaskRow, encode};
    use prost::Message;
    let metrics = std::sync::Arc::new(iris_worker::shell::metrics::Metrics::new());
    let tables = iris_worker::shell::stats::tables::StatsTables::new(&metrics);
    let queue = &tables.tasks;
    // What the writer reads each period: a running attempt's wire name and newest sample.
    let samples: Vec<(String, ResourceUsage)> = (0..1_000)
        .map(|i| {
            let usage = ResourceUsage {
                memory_mb: 1_000 + i,
                cpu_millicores: 500,
                ..ResourceUsage::default()
            };
            (format!("/alice/train-{i}/0"), usage)
        })
        .collect();
    let row = |(path, usage): &(String, ResourceUsage)| {
        TaskRow::of_sample(path.clone(), 0, "worker-1".into(), 1_780_000_000_000, usage)
    };
    let start = thread_cpu_seconds();
    for _ in 0..rounds {
        queue.extend(samples.iter().map(row));
        let batch = queue.take();
        std::hint::black_box(write_request(&batch).unwrap().encode_to_vec());
    }
    let writer = (thread_cpu_seconds() - start) * 1e6 / f64::from(rounds);
    let rows: Vec<TaskRow> = samples.iter().map(row).collect();
    let start = thread_cpu_seconds();
    for _ in 0..rounds {
        std::hint::black_box(encode(&rows).unwrap());
    }
    let arrow = (thread_cpu_seconds() - start) * 1e6 / f64::from(rounds);
    (writer, arrow)
}

#[tokio::main]
async fn main() {
    if std::env::var("BENCH_ONLY").as_deref() == Ok("stats") {
        let (writer, arrow) = stats_numbers(2_000);
        println!(
            "stats rows: {writer:.0} CPU us per 1,000 iris.task rows through the writer vs {arrow:.0} us for the Arrow IPC encode alone: ratio {:.2}",
            writer / arrow
        );
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("reconcile") {
        let (ours, base) = reconcile_numbers(1_000, 200);
        println!(
            "reconcile of 1,000 running attempts: {ours:.2} ms per call (decode, adapter, core, encode) vs {base:.2} ms protobuf decode+encode alone: ratio {:.1}",
            ours / base
        );
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("docker") {
        if let Some((worker, cli, rate)) = docker_numbers().await {
            println!(
                "docker: RunTask->RUNNING p50 {worker:.0} ms vs docker run --rm p50 {cli:.0} ms (ratio {:.2}); 100 containers: {rate:.1} tasks/s",
                worker / cli
            );
        }
        return;
    }
    let worker = start_worker();
    let mut c = Client::connect(format!("http://{}", worker.addr))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    if std::env::var("BENCH_ONLY").as_deref() == Ok("ingest") {
        let (ing, base, peak_mb, cpu_gib) = ingest(&mut c, worker.child.id()).await;
        println!(
            "ingest {ing:.0} MiB/s ({cpu_gib:.1} CPU s/GiB) vs cat {base:.0} MiB/s: ratio {:.2}; peak RSS {peak_mb} MiB",
            ing / base
        );
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("protocols") {
        print_protocols(&worker.addr.to_string()).await;
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("soak") {
        let tasks = std::env::var("SOAK_TASKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        soak(&mut c, &worker, tasks).await;
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("throughput") {
        let (tp, base) = throughput(&mut c, 1000).await;
        println!(
            "throughput {tp:.0}/s baseline {base:.0}/s ratio {:.2}",
            tp / base
        );
        return;
    }
    let (tp, tp_base) = throughput(&mut c, 1000).await;
    let mut exit = exit_detection(&mut c, 200).await;
    let mut kill = kill_latency(&mut c, 100).await;
    let (ing, ing_base, peak_mb, cpu_gib) = ingest(&mut c, worker.child.id()).await;

    println!("| benchmark | worker | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| 1,000 `true` tasks over gRPC | {tp:.0} tasks/s | {tp_base:.0} spawn+reap/s | {:.2} | >= 0.5 |",
        tp / tp_base
    );
    println!(
        "| exit detection p50 / p99 | {:.1} / {:.1} ms | - | - | p99 < 20 ms |",
        percentile(&mut exit, 0.5),
        percentile(&mut exit, 0.99)
    );
    println!(
        "| kill latency p50 / p99 | {:.1} / {:.1} ms | - | - | p99 < 50 ms |",
        percentile(&mut kill, 0.5),
        percentile(&mut kill, 0.99)
    );
    println!(
        "| 1 GiB of log lines | {ing:.0} MiB/s, {cpu_gib:.1} worker CPU s/GiB | {ing_base:.0} MiB/s (cat) | {:.2} | >= 0.5 |",
        ing / ing_base
    );
    println!("| worker peak RSS (whole run) | {peak_mb} MiB | - | - | < 64 MiB |");
    print_protocols(&worker.addr.to_string()).await;
    let (writer, arrow) = stats_numbers(2_000);
    println!(
        "| stats writer, CPU per 1,000 `iris.task` rows | {writer:.0} us | {arrow:.0} us (Arrow IPC encode alone) | {:.2} | - |",
        writer / arrow
    );
    drop(c);
    drop(worker);
    if let Some((to_running, cli, rate)) = docker_numbers().await {
        println!(
            "| docker: RunTask to RUNNING, p50 | {to_running:.0} ms | {cli:.0} ms (`docker run --rm IMAGE true`, p50) | {:.2} | <= 1 |",
            to_running / cli
        );
        println!("| docker: 100 short containers end to end | {rate:.1} tasks/s | - | - | - |");
    }
}

/// Bytes and files under a directory.
fn dir_usage(dir: &std::path::Path) -> (u64, u64) {
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (b, f) = dir_usage(&entry.path());
            total = (total.0 + b, total.1 + f);
        } else {
            total = (total.0 + meta.len(), total.1 + 1);
        }
    }
    total
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// `soak`: many short tasks through one worker with default retention, a row every tenth:
/// RSS, cache dir, journal, ListTasks latency and tasks/s. Flat after the retention limit is
/// the target; the first window's rate is the baseline of the last.
async fn soak(c: &mut Client, worker: &Worker, n: usize) {
    const IN_FLIGHT: usize = 500;
    let window = (n / 10).max(1);
    println!(
        "| tasks | RSS MiB | cache dir MiB | files | journal KiB | ListTasks ms (tasks) | tasks/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut first_rate = None;
    let mut rate = 0.0;
    let mut started = Instant::now();
    for chunk_start in (0..n).step_by(IN_FLIGHT) {
        let ids: Vec<String> = (chunk_start..(chunk_start + IN_FLIGHT).min(n))
            .map(|i| format!("soak/task-{i}"))
            .collect();
        for id in &ids {
            let argv = ["sh", "-c", "echo line one; echo line two"];
            c.run_task(request(id, &argv)).await.unwrap();
        }
        for id in &ids {
            loop {
                let status = c
                    .get_task_status(proto::worker::GetTaskStatusRequest {
                        task_id: id.clone(),
                        include_result: false,
                    })
                    .await;
                match status {
                    // Removed by retention: it finished first.
                    Err(e) if e.code() == tonic::Code::NotFound => break,
                    Ok(s) if s.get_ref().finished_at_ms > 0 => break,
                    _ => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        }
        let done = chunk_start + ids.len();
        if !done.is_multiple_of(window) && done != n {
            continue;
        }
        rate = window as f64 / started.elapsed().as_secs_f64();
        first_rate.get_or_insert(rate);
        let list_start = Instant::now();
        let listed = c
            .list_tasks(proto::worker::ListTasksRequest {})
            .await
            .unwrap()
            .into_inner()
            .tasks
            .len();
        let list_ms = list_start.elapsed().as_secs_f64() * 1000.0;
        let (bytes, files) = dir_usage(&worker.cache_dir);
        let journal =
            std::fs::metadata(worker.cache_dir.join("journal.log")).map_or(0, |m| m.len());
        println!(
            "| {done} | {:.1} | {:.1} | {files} | {:.0} | {list_ms:.1} ({listed}) | {rate:.0} |",
            rss_mib(worker.child.id()),
            bytes as f64 / (1 << 20) as f64,
            journal as f64 / 1024.0,
        );
        started = Instant::now();
    }
    let first = first_rate.unwrap_or(rate);
    println!(
        "last window {rate:.0} tasks/s vs first {first:.0}: ratio {:.2} (target >= 0.9); peak RSS {:.1} MiB",
        rate / first,
        worker.peak_rss_kb() as f64 / 1024.0
    );
}

async fn print_protocols(addr: &str) {
    let [mut grpc, mut proto, mut json] = protocols(addr, 5, 400).await;
    let grpc_p50 = percentile(&mut grpc, 0.5);
    for (name, samples) in [
        ("Connect protobuf", &mut proto),
        ("Connect JSON", &mut json),
    ] {
        let p50 = percentile(samples, 0.5);
        println!(
            "| RunTask+GetTaskStatus over {name}, p50 / p99 | {p50:.2} / {:.2} ms | gRPC {grpc_p50:.2} / {:.2} ms | {:.2} | <= 1.5 |",
            percentile(samples, 0.99),
            percentile(&mut grpc, 0.99),
            p50 / grpc_p50
        );
    }
}
