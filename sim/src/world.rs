//! One run: builds the turmoil simulation (a controller and N workers), applies the fault
//! schedule as simulated time passes, checks the safety invariants after every step and, once
//! the faults have healed, waits (within a bound) for the liveness ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use iris_worker::core::{AttemptKey, LogFilter, LogLimits, LogSource, TaskState};
use iris_worker::shell::logs::store::{LOGS_DIR, LogStore, LogStoreConfig, segment_paths};

use crate::db::CtlTask;
use crate::plan::{Fault, FaultKind, Node, Plan, Shape};
use crate::rng::Rng;
use crate::shared::{Shared, Variant, lock};

/// Simulated time per step.
const TICK: Duration = Duration::from_millis(10);
/// After the faults heal, everything must settle within this.
const SETTLE_BOUND_MS: u64 = 120_000;
/// A SIGTERMed container must be gone this long after the TERM (the longest term timeout the
/// run uses, 5 s, plus slack for the KILL to land) while its worker is up and its engine answers.
const KILL_BOUND_MS: u64 = 15_000;
/// A container whose task's timeout has passed is gone this long after it (the default term
/// timeout, 5 s, plus slack), counted from when its worker is up and its engine answers.
const TIMEOUT_BOUND_MS: u64 = 6_000;

#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub hash: u64,
    pub events: u64,
    pub sim_ms: u64,
    pub wall: Duration,
    pub violations: Vec<String>,
    pub faults: Vec<Fault>,
    pub tail: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// A primitive step of the fault schedule.
#[derive(Clone, Debug)]
enum Action {
    Partition(Node, Node),
    PartitionOneWay(Node, Node),
    Hold(Node, Node),
    Release(Node, Node),
    Latency(u64),
    Crash(Node),
    Restart(Node),
    EngineHang(usize, bool),
    Squat(usize, Vec<u16>, bool),
    Reset(usize),
    Stop(usize, bool),
}

fn expand(fault: &Fault, seed: u64, out: &mut Vec<(u64, Action)>) {
    let (start, end) = (fault.start_ms, fault.end_ms);
    match &fault.kind {
        FaultKind::Partition(a, b) => {
            out.push((start, Action::Partition(*a, *b)));
            out.push((end, Action::Release(*a, *b)));
        }
        FaultKind::PartitionOneWay { from, to } => {
            out.push((start, Action::PartitionOneWay(*from, *to)));
            out.push((end, Action::Release(*from, *to)));
        }
        FaultKind::Hold(a, b) => {
            out.push((start, Action::Hold(*a, *b)));
            out.push((end, Action::Release(*a, *b)));
        }
        FaultKind::Flaky(a, b) => {
            let mut rng = Rng::fork(seed ^ start, "flaky");
            let mut t = start;
            while t < end {
                out.push((t, Action::Partition(*a, *b)));
                t += rng.range(50, 400);
                out.push((t.min(end), Action::Release(*a, *b)));
                t += rng.range(100, 800);
            }
        }
        FaultKind::Latency { max_ms } => {
            out.push((start, Action::Latency(*max_ms)));
            out.push((end, Action::Latency(BASE_LATENCY_MS)));
        }
        FaultKind::Crash(node) => {
            out.push((start, Action::Crash(*node)));
            out.push((end, Action::Restart(*node)));
        }
        FaultKind::EngineHang(w) => {
            out.push((start, Action::EngineHang(*w, true)));
            out.push((end, Action::EngineHang(*w, false)));
        }
        FaultKind::Reset(w) => out.push((start, Action::Reset(*w))),
        FaultKind::Stop { worker, kill_tasks } => {
            out.push((start, Action::Stop(*worker, *kill_tasks)));
            out.push((end, Action::Restart(Node::Worker(*worker))));
        }
        FaultKind::SquatPorts { worker, ports } => {
            out.push((start, Action::Squat(*worker, ports.clone(), true)));
            out.push((end, Action::Squat(*worker, ports.clone(), false)));
        }
    }
}

const BASE_LATENCY_MS: u64 = 20;

struct Runner<'a> {
    sim: turmoil::Sim<'a>,
    shared: Arc<Shared>,
    schedule: Vec<(u64, Action)>,
    next: usize,
    /// Overlapping crash faults of one node: it restarts when the last one ends.
    down: BTreeMap<Node, u32>,
}

impl Runner<'_> {
    fn apply_due(&mut self, now: u64) {
        while self.next < self.schedule.len() && self.schedule[self.next].0 <= now {
            let action = self.schedule[self.next].1.clone();
            self.next += 1;
            self.shared.event(format!("fault {action:?}"));
            self.apply(action);
        }
    }

    fn apply(&mut self, action: Action) {
        let now = self.shared.now_ms();
        match action {
            Action::Partition(a, b) => self.sim.partition(a.host(), b.host()),
            Action::PartitionOneWay(a, b) => self.sim.partition_oneway(a.host(), b.host()),
            Action::Hold(a, b) => self.sim.hold(a.host(), b.host()),
            Action::Release(a, b) => self.sim.release(a.host(), b.host()),
            Action::Latency(ms) => self.sim.set_max_message_latency(Duration::from_millis(ms)),
            Action::Crash(node) => {
                let count = self.down.entry(node).or_default();
                *count += 1;
                if *count == 1 {
                    self.forget_logs(node);
                    self.sim.crash(node.host());
                    if let Node::Worker(w) = node {
                        lock(&self.shared.machines[w]).worker_down();
                    }
                }
            }
            Action::Restart(node) => {
                let count = self.down.entry(node).or_default();
                *count = count.saturating_sub(1);
                if *count == 0 {
                    // A worker still stopping when its restart comes is killed by it.
                    if let Node::Worker(w) = node {
                        lock(&self.shared.machines[w]).worker_down();
                    }
                    self.forget_logs(node);
                    self.sim.bounce(node.host());
                }
            }
            Action::EngineHang(w, hung) => {
                let mut m = lock(&self.shared.machines[w]);
                m.engine_hung = hung;
                if !hung {
                    m.hang_ended_ms = now;
                }
            }
            // Counted like a crash, so an overlapping crash and stop restart the worker once.
            Action::Stop(w, kill_tasks) => {
                let count = self.down.entry(Node::Worker(w)).or_default();
                *count += 1;
                lock(&self.shared.machines[w]).stop_requested = Some(kill_tasks);
            }
            Action::Reset(w) => {
                lock(&self.shared.db).resets.insert(w);
            }
            Action::Squat(w, ports, on) => {
                let mut m = lock(&self.shared.machines[w]);
                for p in ports {
                    if on {
                        m.squatted.insert(p);
                    } else {
                        m.squatted.remove(&p);
                    }
                }
            }
        }
    }

    /// A worker crash is a `kill -9`: nothing in its memory reaches disk on the way down.
    fn forget_logs(&self, node: Node) {
        if let Node::Worker(w) = node
            && let Some(store) = lock(&self.shared.machines[w]).log_store.take()
        {
            store.forget_on_crash();
        }
    }

    /// Safety that holds at every step: a SIGTERMed container is gone within the kill bound, and
    /// so is one whose task's timeout has passed.
    fn check_bounds(&self, now: u64) {
        self.check_kill_bound(now);
        self.check_timeout_bound(now);
    }

    fn check_timeout_bound(&self, now: u64) {
        for (w, machine) in self.shared.machines.iter().enumerate() {
            let m = lock(machine);
            if !m.worker_up || m.engine_hung {
                continue;
            }
            // A call the hung engine swallowed ends at its deadline (at most 5 s here).
            let since = m.up_since_ms.max(m.hang_ended_ms + stuck_call_ms());
            let live: Vec<(AttemptKey, u64)> =
                m.live().map(|(k, c)| (k.clone(), c.started_ms)).collect();
            drop(m);
            for (key, started) in live {
                let timeout_ms = lock(&self.shared.db)
                    .tasks
                    .get(key.task_id.as_str())
                    .map_or(0, |t| t.plan.timeout_seconds as u64 * 1000);
                let due = (started + timeout_ms).max(since);
                // Reported once: in the step where the bound passes.
                let late = now.checked_sub(due + TIMEOUT_BOUND_MS);
                if timeout_ms > 0 && late.is_some_and(|l| l < TICK.as_millis() as u64) {
                    self.shared.violation(format!(
                        "worker-{w}: {key} still runs {TIMEOUT_BOUND_MS} ms past its timeout"
                    ));
                }
            }
        }
    }

    fn check_kill_bound(&self, now: u64) {
        for (w, machine) in self.shared.machines.iter().enumerate() {
            let mut m = lock(machine);
            m.advance(now);
            if !m.worker_up || m.engine_hung {
                continue;
            }
            let hang_ended = m.hang_ended_ms;
            let late: Vec<AttemptKey> = m
                .live()
                .filter(|(_, c)| {
                    c.term_seen_ms
                        .is_some_and(|t| now > t.max(hang_ended) + KILL_BOUND_MS)
                })
                .map(|(k, _)| k.clone())
                .collect();
            drop(m);
            for key in late {
                self.shared.violation(format!(
                    "worker-{w}: {key} still runs {KILL_BOUND_MS} ms after SIGTERM"
                ));
                // Once is enough.
                if let Some(c) = lock(machine).containers.get_mut(&key) {
                    c.term_seen_ms = None;
                }
            }
        }
    }
}

/// Why the run has not settled, or `None` once it has: every dispatched attempt terminal at the
/// controller, no container left on any machine, and every worker's view matching the
/// controller's.
fn unsettled(shared: &Shared) -> Option<String> {
    let db = lock(&shared.db);
    if db.submitted.len() < shared.plan.jobs.len() {
        return Some("jobs not yet submitted".into());
    }
    if let Some((id, t)) = db.tasks.iter().find(|(_, t)| !t.done()) {
        return Some(format!("{id} not done at the controller: {:?}", t.attempts));
    }
    let now = shared.now_ms();
    drop(db);
    for w in 0..shared.plan.shape.workers {
        if let Some((key, c)) = shared.machine(w).containers.iter().next() {
            return Some(format!("worker-{w}: container {key} left ({:?})", c.state));
        }
    }
    for w in (0..shared.plan.shape.workers).filter(|w| crate::net::speaks_reconcile(*w)) {
        let store = disk_store(shared, w);
        let behind = pushes_due(shared, w, &store)
            .into_iter()
            .find(|(_, pushed, lines)| pushed.as_ref().map_or(true, |n| n < lines));
        if let Some((key, pushed, lines)) = behind {
            return Some(match pushed {
                Ok(n) => format!("worker-{w}: {n} of {key}'s {lines} lines in the log service"),
                Err(e) => format!("worker-{w}: {key} in the log service: {e}"),
            });
        }
    }
    let mut db = lock(&shared.db);
    let from = *db.audit_from_ms.get_or_insert(now);
    for w in 0..shared.plan.shape.workers {
        let Some((at, listing)) = db.audits.get(&w) else {
            return Some(format!("worker-{w} not audited yet"));
        };
        if *at < from {
            return Some(format!("worker-{w} not audited yet"));
        }
        for (task_id, task) in &db.tasks {
            let Some((attempt_id, a)) = task.attempts.iter().rev().find(|(_, a)| a.worker == w)
            else {
                continue;
            };
            let expected = (*attempt_id, a.terminal.expect("done"));
            // Retention may have removed it, and only once every report of it had landed.
            if listing.get(task_id).is_none()
                && shared.plan.retain_finished_tasks.is_some()
                && reported_on(task, w)
            {
                continue;
            }
            if listing.get(task_id) != Some(&expected) {
                return Some(format!(
                    "worker-{w} says {task_id} is {:?}, the controller {expected:?}",
                    listing.get(task_id)
                ));
            }
        }
    }
    None
}

/// What each running worker could serve right now, as FetchTaskLogs would read it.
fn record_served(shared: &Shared) {
    for w in 0..shared.plan.shape.workers {
        let Some(store) = lock(&shared.machines[w]).log_store.clone() else {
            continue;
        };
        for key in store.attempts() {
            let Ok(lines) = store.fetch(&key, &LogFilter::default()) else {
                continue;
            };
            let mut served = lock(&shared.served);
            let seen = served.entry((w, key)).or_default();
            for line in lines {
                seen.entry(line.line_number).or_insert(line.data);
            }
        }
    }
}

/// Nothing lost from any attempt's log (read back from the worker's disk as a restarted worker
/// would): line numbers run 0..n without a gap or a repeat, and an attempt that ended on its own
/// terms (not lost with its worker or engine) holds its container's whole output, once, in order.
fn check_logs(shared: &Shared) {
    for w in 0..shared.plan.shape.workers {
        let store = disk_store(shared, w);
        let printed = shared.machine(w).removed_output.clone();
        for (key, output) in printed {
            if removed_by_retention(shared, w, &key) {
                continue;
            }
            let lines = match store.fetch(&key, &LogFilter::default()) {
                Ok(lines) => lines,
                Err(e) => {
                    shared.violation(format!("worker-{w}: log of {key} unreadable: {e}"));
                    continue;
                }
            };
            let numbers: Vec<i64> = lines.iter().map(|l| l.line_number).collect();
            if numbers.iter().enumerate().any(|(i, n)| *n != i as i64) {
                shared.violation(format!("worker-{w}: {key} log lines numbered {numbers:?}"));
            }
            let terminal =
                lock(&shared.db).tasks[key.task_id.as_str()].attempts[&key.attempt_id].terminal;
            let stdout: Vec<&str> = lines
                .iter()
                .filter(|l| l.source == LogSource::Stdout)
                .map(|l| l.data.as_str())
                .collect();
            if terminal != Some(TaskState::WorkerFailed) && stdout != output {
                shared.violation(format!(
                    "worker-{w}: {key} ({terminal:?}) logged {stdout:?}, its container printed {output:?}"
                ));
            }
        }
        check_served(shared, w, &store);
        if crate::net::speaks_reconcile(w) {
            for (key, pushed, _) in pushes_due(shared, w, &store) {
                if let Err(e) = pushed {
                    shared.violation(format!("worker-{w}: {key} in the log service: {e}"));
                }
            }
        }
    }
}

/// The attempts of reconcile-era worker `w` whose log is on disk: (key, how many of its lines
/// the log service holds in order, lines).
type PushState = (AttemptKey, Result<usize, String>, usize);

fn pushes_due(shared: &Shared, w: usize, store: &LogStore) -> Vec<PushState> {
    let keys: Vec<AttemptKey> = lock(&shared.db)
        .tasks
        .iter()
        .flat_map(|(task_id, t)| {
            t.attempts
                .iter()
                .filter(|(_, a)| a.worker == w)
                .map(|(id, _)| AttemptKey {
                    task_id: iris_worker::core::TaskId::new(task_id.clone()).expect("valid"),
                    attempt_id: *id,
                })
        })
        .collect();
    keys.into_iter()
        .filter_map(|key| {
            let [log, _] = segment_paths(&shared.cache_dirs[w], &key);
            if !log.exists() {
                return None;
            }
            let disk: Vec<(String, String)> = store
                .fetch(&key, &LogFilter::default())
                .ok()?
                .into_iter()
                .map(|l| (l.source.as_str().to_string(), l.data))
                .collect();
            let pushed = push_progress(shared, &key, &disk);
            Some((key, pushed, disk.len()))
        })
        .collect()
}

/// How many of the attempt's lines (`disk`, as read back) the log service holds in order (see
/// `pushed_prefix`).
fn push_progress(
    shared: &Shared,
    key: &AttemptKey,
    disk: &[(String, String)],
) -> Result<usize, String> {
    let log_key = crate::reconcile::log_key(key.task_id.as_str(), key.attempt_id);
    let pushed = lock(&shared.pushed)
        .get(&log_key)
        .cloned()
        .unwrap_or_default();
    crate::reconcile::pushed_prefix(&pushed, disk)
}

/// Worker `w`'s logs as a restarted worker would read them from disk.
fn disk_store(shared: &Shared, w: usize) -> LogStore {
    LogStore::new(LogStoreConfig {
        root: shared.cache_dirs[w].join(LOGS_DIR),
        memory: LogLimits::default(),
        disk_bytes_max: crate::worker::LOG_DISK_BYTES_MAX,
        ingested: Default::default(),
        planted_buffering: false,
    })
}

/// A line once served keeps its number and text on disk, whatever became of its attempt or
/// worker (a crash included).
fn check_served(shared: &Shared, w: usize, store: &LogStore) {
    let served = lock(&shared.served).clone();
    for ((_, key), lines) in served.iter().filter(|((worker, _), _)| *worker == w) {
        if removed_by_retention(shared, w, key) {
            continue;
        }
        let on_disk: BTreeMap<i64, String> = store
            .fetch(key, &LogFilter::default())
            .unwrap_or_default()
            .into_iter()
            .map(|l| (l.line_number, l.data))
            .collect();
        for (number, text) in lines {
            if on_disk.get(number) != Some(text) {
                shared.violation(format!(
                    "worker-{w}: {key} served line {number} {text:?}; on disk it is {:?}",
                    on_disk.get(number)
                ));
                return;
            }
        }
    }
}

pub fn run_seed(seed: u64, shape: Shape, variant: Variant) -> Outcome {
    let started = Instant::now();
    let plan = Plan::draw(seed, shape);
    let dirs = tempfile::tempdir().expect("temp dir");

    let cache_dirs = (0..plan.shape.workers)
        .map(|w| dirs.path().join(format!("worker-{w}")))
        .collect();
    let shared = Arc::new(Shared::new(plan.clone(), variant, cache_dirs));
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_millis(crate::plan::EPOCH_MS))
        .tick_duration(TICK)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(BASE_LATENCY_MS))
        .simulation_duration(Duration::from_secs(3_600))
        .build();
    let s = shared.clone();
    sim.host("controller", move || crate::controller::host(s.clone()));
    for w in 0..plan.shape.workers {
        let s = shared.clone();
        sim.host(crate::plan::worker_host(w), move || {
            crate::worker::host(s.clone(), w)
        });
    }
    let mut schedule = Vec::new();
    for fault in &plan.faults {
        expand(fault, seed, &mut schedule);
    }
    schedule.sort_by_key(|(at, _)| *at);
    let mut runner = Runner {
        sim,
        shared: shared.clone(),
        schedule,
        next: 0,
        down: BTreeMap::new(),
    };
    let heal = plan.heal_ms();
    let mut now;
    loop {
        now = runner.sim.elapsed().as_millis() as u64;
        shared.set_now(now);
        runner.apply_due(now);
        if let Err(e) = runner.sim.step() {
            shared.violation(format!("a host failed: {e}"));
            break;
        }
        runner.check_bounds(now);
        if !lock(&shared.oracle).violations.is_empty() {
            break;
        }
        if now % 500 == 0 {
            record_served(&shared);
        }
        if now >= heal && now % 500 == 0 {
            match unsettled(&shared) {
                None => {
                    check_logs(&shared);
                    break;
                }
                Some(why) if now > heal + SETTLE_BOUND_MS => {
                    shared.violation(format!(
                        "not settled {SETTLE_BOUND_MS} ms after the faults healed: {why}"
                    ));
                    break;
                }
                Some(_) => {}
            }
        }
    }
    drop(runner);
    if std::env::var_os("SIM_KEEP").is_some() {
        eprintln!("kept {}", dirs.keep().display());
    }
    let oracle = lock(&shared.oracle);
    Outcome {
        seed,
        hash: oracle.hash(),
        events: oracle.events(),
        sim_ms: now,
        wall: started.elapsed(),
        violations: oracle.violations.clone(),
        faults: plan.faults.clone(),
        tail: oracle.tail().cloned().collect(),
    }
}

/// The longest call deadline of a simulated worker: a call an engine swallowed ends by then.
fn stuck_call_ms() -> u64 {
    crate::worker::deadlines().longest().as_millis() as u64
}

/// Whether every attempt of a task on worker `w` had its terminal report land at the controller:
/// only then may retention remove the task.
fn reported_on(task: &CtlTask, w: usize) -> bool {
    task.attempts
        .values()
        .filter(|a| a.worker == w)
        .all(|a| a.terminal.is_some())
}

/// An attempt's log is gone from disk because retention removed its task. A log file missing
/// for any other reason (or before the reports landed) is still a violation.
fn removed_by_retention(shared: &Shared, w: usize, key: &AttemptKey) -> bool {
    let [log, _] = segment_paths(&shared.cache_dirs[w], key);
    if log.exists() || shared.plan.retain_finished_tasks.is_none() {
        return false;
    }
    let db = lock(&shared.db);
    let reported = db
        .tasks
        .get(key.task_id.as_str())
        .is_some_and(|task| reported_on(task, w));
    if !reported {
        drop(db);
        shared.violation(format!(
            "worker-{w}: the log of {key} is gone before the controller had its reports"
        ));
    }
    true
}
