//! A model of the world around `WorkerCore` (a runtime that answers, fails, hangs or answers
//! late, and a controller that acks or fails), plus the checker of every invariant users rely on.
//! Shared by the proptest properties (`tests/core_properties.rs` of this crate) and the core fuzz target.

use std::collections::{BTreeMap, BTreeSet};

use crate::*;

use super::{key, request};

/// Few ports, so attempts compete for them; a small retention, so tasks are removed while others
/// run and their reports wait.
fn config() -> CoreConfig {
    CoreConfig {
        port_range: 30000..=30007,
        retention: Retention {
            finished_tasks_max: 2,
            finished_for_ms: 60_000,
            ..Retention::default()
        },
        ..super::config()
    }
}

/// Tasks the model plays with; few, so attempts collide.
pub const TASKS: usize = 4;
const DEFAULT_TERM_MS: u64 = 5_000;

/// One step of a scenario: a command, a runtime or controller answer, or time passing.
#[derive(Clone, Debug)]
pub enum Op {
    Submit {
        task: usize,
        attempt: i32,
        ports: usize,
        timeout_s: i32,
        bundle: bool,
    },
    Kill {
        task: usize,
        term_ms: i64,
    },
    KillAll,
    Advance {
        ms: u64,
    },
    Answer {
        pick: usize,
        outcome: u8,
    },
    Exit {
        pick: usize,
        code: i32,
        signal: bool,
        oom: bool,
    },
    Stats {
        pick: usize,
        memory_mb: i64,
    },
    Lost {
        pick: usize,
    },
    Report {
        pick: usize,
        ack: bool,
    },
    Register {
        accept: bool,
        reset: bool,
    },
    /// The shell's measurement of the cache dir: over the retention threshold or not.
    Disk {
        over: bool,
    },
    Stray {
        task: usize,
        attempt: i32,
        kind: u8,
    },
}

fn task_name(task: usize) -> String {
    format!("job/task-{task}")
}

/// What the checker remembers about one attempt.
#[derive(Default, Debug)]
struct Seen {
    state: Option<TaskState>,
    started_at: Option<u64>,
    /// (request time, term timeout) of every stop request.
    stops: Vec<(u64, u64)>,
    term_at: Option<u64>,
    killed_at: Option<u64>,
    last_kill_at: Option<u64>,
    exited: bool,
    start_effects: usize,
    terminal_reports: BTreeSet<(String, i32, String)>,
    terminal_acked: bool,
    /// The journal entries of the attempt, in the order the core emitted them.
    journal: Vec<&'static str>,
    finished_at: Option<u64>,
}

/// The runtime and controller as the core sees them, plus the checker.
struct World {
    core: WorkerCore,
    now: u64,
    setup: Vec<Effect>,
    alive: BTreeSet<AttemptKey>,
    reports: BTreeMap<u64, TaskReport>,
    register_in_flight: bool,
    /// RemoveContainer calls not yet answered; answered when time passes.
    removals: BTreeSet<AttemptKey>,
    seen: BTreeMap<AttemptKey, Seen>,
    /// Tasks retention removed, and the newest attempt each had then. The controller never
    /// sends such an attempt again.
    removed: BTreeMap<TaskId, i32>,
    /// Removed tasks the core has forgotten (past `finished_for + REMOVED_MARGIN_MS`): only
    /// then may a request for such an attempt be taken as new, so the model sends none.
    forgotten: BTreeMap<TaskId, i32>,
    trace: Vec<(u64, Effect)>,
}

impl World {
    fn new() -> World {
        World {
            core: WorkerCore::new(config(), 0),
            now: 0,
            setup: Vec::new(),
            alive: BTreeSet::new(),
            reports: BTreeMap::new(),
            register_in_flight: false,
            removals: BTreeSet::new(),
            seen: BTreeMap::new(),
            removed: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            trace: Vec::new(),
        }
    }

    fn current(&self, task: usize) -> Option<AttemptKey> {
        let id = TaskId::new(task_name(task)).unwrap();
        let t = self.core.get_task(&id)?;
        (!t.is_finished()).then(|| key(&task_name(task), t.attempt_id))
    }

    fn record_stop(&mut self, key: &AttemptKey, term_ms: u64) {
        let now = self.now;
        self.seen
            .entry(key.clone())
            .or_default()
            .stops
            .push((now, term_ms));
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Submit {
                task,
                attempt,
                ports,
                timeout_s,
                bundle,
            } => {
                let mut req = request(&task_name(task), attempt, &["run"]);
                req.ports = (0..ports).map(|i| format!("p{i}")).collect();
                req.timeout_seconds = timeout_s;
                if bundle {
                    req.bundle_gcs_path = "file:///b.zip".into();
                }
                let id = TaskId::new(task_name(task)).unwrap();
                if self
                    .forgotten
                    .get(&id)
                    .is_some_and(|newest| attempt <= *newest)
                {
                    return;
                }
                let previous = self.current(task);
                let result = self
                    .core
                    .submit(self.now, TaskSpec::from_request(&req).unwrap());
                // A late request for a finished attempt that retention removed: refused, never
                // started again (nor is it new while the core remembers the removal).
                let removed = self.removed.get(&id).copied();
                if removed.is_some_and(|newest| attempt <= newest)
                    && self.core.get_task(&id).is_none()
                {
                    assert!(
                        matches!(result, Err(SubmitError::AlreadyCompleted { .. })),
                        "{id}#{attempt}: a removed attempt submitted again got {result:?}"
                    );
                }
                if let (Ok(_), Some(prev)) = (&result, previous)
                    && prev.attempt_id < attempt
                {
                    self.record_stop(&prev, DEFAULT_TERM_MS);
                }
            }
            Op::Kill { task, term_ms } => {
                let target = self.current(task);
                let id = TaskId::new(task_name(task)).unwrap();
                let result = self.core.kill(self.now, &id, term_ms);
                match (&result, target) {
                    (Ok(()), Some(key)) => {
                        let term = if term_ms == 0 {
                            DEFAULT_TERM_MS
                        } else {
                            term_ms as u64
                        };
                        self.record_stop(&key, term);
                    }
                    (Ok(()), None) => panic!("kill of a finished or unknown task succeeded"),
                    (Err(KillError::NotFound(_)), t) => {
                        // A removed task is finished, not lost, until the core forgets it.
                        let remembered =
                            self.removed.contains_key(&id) && !self.forgotten.contains_key(&id);
                        assert!(t.is_none() && !remembered, "{id}: kill answered NOT_FOUND");
                    }
                    (Err(KillError::AlreadyCompleted { .. }), t) => assert!(t.is_none()),
                    (Err(e), _) => panic!("unexpected {e}"),
                }
            }
            Op::KillAll => {
                for key in self.core.live_attempts() {
                    self.record_stop(&key, DEFAULT_TERM_MS);
                }
                self.core.kill_all(self.now, "reset");
            }
            Op::Advance { ms } => self.advance(self.now + ms),
            Op::Answer { pick, outcome } => self.answer(pick, outcome),
            Op::Exit {
                pick,
                code,
                signal,
                oom,
            } => {
                if let Some(key) = pick_from(&self.alive, pick) {
                    let status = ExitStatus {
                        code: (!signal).then_some(code),
                        signal: signal.then_some(9),
                        oom_killed: oom,
                        finished_at_ms: None,
                        last_stderr: None,
                        machine_fault: None,
                    };
                    self.exit(key, status);
                }
            }
            Op::Stats { pick, memory_mb } => {
                if let Some(attempt) = pick_from(&self.alive, pick) {
                    let usage = ResourceUsage {
                        memory_mb,
                        ..Default::default()
                    };
                    self.core.handle(self.now, Event::Stats { attempt, usage });
                }
            }
            Op::Lost { pick } => {
                if let Some(attempt) = pick_from(&self.alive, pick) {
                    self.alive.remove(&attempt);
                    self.seen.entry(attempt.clone()).or_default().exited = true;
                    let error = "engine gone".to_string();
                    self.core
                        .handle(self.now, Event::RuntimeLost { attempt, error });
                }
            }
            Op::Report { pick, ack } => {
                let ids: Vec<u64> = self.reports.keys().copied().collect();
                if !ids.is_empty() {
                    let report_id = ids[pick % ids.len()];
                    let report = self.reports.remove(&report_id).unwrap();
                    let event = if ack {
                        if is_task_finished(report.state) {
                            let key = key(&report.task_id, report.attempt_id);
                            self.seen.entry(key).or_default().terminal_acked = true;
                        }
                        Event::ReportAcked { report_id }
                    } else {
                        Event::ReportFailed {
                            report_id,
                            error: "unavailable".into(),
                        }
                    };
                    self.core.handle(self.now, event);
                }
            }
            Op::Register { accept, reset } => {
                if self.register_in_flight {
                    self.register_in_flight = false;
                    let event = if accept {
                        if reset {
                            for key in self.core.live_attempts() {
                                self.record_stop(&key, DEFAULT_TERM_MS);
                            }
                        }
                        Event::RegisterAccepted {
                            should_reset: reset,
                        }
                    } else {
                        Event::RegisterFailed {
                            error: "down".into(),
                        }
                    };
                    self.core.handle(self.now, event);
                }
            }
            Op::Disk { over } => {
                let event = Event::DiskUsage {
                    bytes_percent: if over { 95 } else { 10 },
                    inodes_percent: 10,
                };
                self.core.handle(self.now, event);
            }
            Op::Stray {
                task,
                attempt,
                kind,
            } => {
                let key = key(&task_name(task), attempt);
                let event = match kind {
                    0 => Event::WorkdirReady { attempt: key },
                    1 => Event::BundleReady { attempt: key },
                    2 => Event::BuildFinished {
                        attempt: key,
                        image: None,
                        from_cache: false,
                    },
                    3 => Event::ContainerStarted { attempt: key },
                    4 => Event::ReportAcked { report_id: 10_000 },
                    5 => Event::RegisterAccepted {
                        should_reset: false,
                    },
                    _ => Event::StartFailed {
                        attempt: key,
                        error: "x".into(),
                        port_conflict: true,
                    },
                };
                // A stray event stands for a late answer to work already over; the model never
                // sends one for work still outstanding, nor a start for a container it lacks.
                let outstanding =
                    |k: &AttemptKey| self.setup.iter().any(|e| e.attempt() == Some(k));
                let skip = match &event {
                    Event::ContainerStarted { .. } | Event::RegisterAccepted { .. } => true,
                    Event::WorkdirReady { attempt }
                    | Event::BundleReady { attempt }
                    | Event::BuildFinished { attempt, .. }
                    | Event::StartFailed { attempt, .. } => outstanding(attempt),
                    _ => false,
                };
                if skip {
                    return;
                }
                self.core.handle(self.now, event);
            }
        }
    }

    fn exit(&mut self, key: AttemptKey, status: ExitStatus) {
        self.alive.remove(&key);
        self.seen.entry(key.clone()).or_default().exited = true;
        self.core.handle(
            self.now,
            Event::Exited {
                attempt: key,
                status,
            },
        );
    }

    fn answer(&mut self, pick: usize, outcome: u8) {
        if self.setup.is_empty() {
            return;
        }
        let effect = self.setup.remove(pick % self.setup.len());
        let attempt = effect.attempt().unwrap().clone();
        let fail = outcome == 5;
        let event = match effect {
            Effect::PrepareWorkdir { .. } if fail => Event::WorkdirFailed {
                attempt,
                error: "disk".into(),
            },
            Effect::PrepareWorkdir { .. } => Event::WorkdirReady { attempt },
            Effect::FetchBundle { .. } if fail => Event::BundleFailed {
                attempt,
                error: "404".into(),
            },
            Effect::FetchBundle { .. } => Event::BundleReady { attempt },
            Effect::BuildImage { .. } if fail => Event::BuildFailed {
                attempt,
                error: "pip".into(),
                machine: false,
            },
            Effect::BuildImage { .. } => Event::BuildFinished {
                attempt,
                image: None,
                from_cache: outcome == 1,
            },
            Effect::StartContainer(_) => match outcome {
                3 => Event::StartFailed {
                    attempt,
                    error: "in use".into(),
                    port_conflict: true,
                },
                4 => Event::StartFailed {
                    attempt,
                    error: "no image".into(),
                    port_conflict: false,
                },
                5 => Event::RuntimeLost {
                    attempt,
                    error: "engine".into(),
                },
                _ => {
                    self.alive.insert(attempt.clone());
                    Event::ContainerStarted { attempt }
                }
            },
            other => unreachable!("not a setup effect: {other}"),
        };
        self.core.handle(self.now, event);
    }

    fn advance(&mut self, to: u64) {
        while let Some(deadline) = self.core.poll_timeout().filter(|d| *d <= to) {
            self.now = self.now.max(deadline);
            self.core.handle_timeout(self.now);
            self.collect();
        }
        self.now = self.now.max(to);
        for attempt in std::mem::take(&mut self.removals) {
            self.core
                .handle(self.now, Event::ContainerRemoved { attempt });
            self.collect();
        }
    }

    /// Drains effects into the model and checks each one.
    fn collect(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            self.trace.push((self.now, effect.clone()));
            self.observe(effect);
        }
    }

    fn observe(&mut self, effect: Effect) {
        let now = self.now;
        self.check_journal_order(&effect);
        self.check_removal(&effect);
        match &effect {
            Effect::PrepareWorkdir { .. }
            | Effect::FetchBundle { .. }
            | Effect::BuildImage { .. } => self.setup.push(effect.clone()),
            Effect::StartContainer(spec) => {
                let seen = self.seen.entry(spec.attempt.clone()).or_default();
                assert!(
                    seen.stops.is_empty(),
                    "{}: start effect after a stop request",
                    spec.attempt
                );
                seen.start_effects += 1;
                assert!(seen.start_effects <= 3, "more than 3 starts");
                self.setup.push(effect.clone());
            }
            Effect::SignalContainer { attempt, signal } => {
                let seen = self.seen.entry(attempt.clone()).or_default();
                assert!(!seen.exited, "{attempt}: signal after exit");
                if seen.stops.is_empty() {
                    // Only the core's own timeout may stop an attempt nobody asked to stop.
                    assert_eq!(
                        *signal,
                        Signal::Term,
                        "{attempt}: KILL without a stop request"
                    );
                    seen.stops.push((now, DEFAULT_TERM_MS));
                }
                match signal {
                    Signal::Term => {
                        assert!(seen.term_at.is_none(), "{attempt}: second TERM");
                        seen.term_at = Some(now);
                    }
                    Signal::Kill => {
                        let term_at = seen.term_at.expect("KILL before TERM");
                        let earliest = seen
                            .stops
                            .iter()
                            .map(|(at, term)| (*at).max(term_at) + term)
                            .min()
                            .unwrap();
                        assert!(
                            now >= earliest,
                            "{attempt}: KILL at {now}, before {earliest}"
                        );
                        // SIGKILL repeats (a lost one must not leave the container running),
                        // but not in a tight loop.
                        if let Some(last) = seen.last_kill_at {
                            assert!(
                                now >= last + crate::KILL_REPEAT_MS,
                                "{attempt}: KILL again at {now}, {last} was the last"
                            );
                        }
                        seen.killed_at.get_or_insert(now);
                        seen.last_kill_at = Some(now);
                    }
                }
            }
            Effect::ReportTaskState { report_id, report } => {
                assert!(
                    self.reports.insert(*report_id, report.clone()).is_none(),
                    "report in flight twice"
                );
                if is_task_finished(report.state) {
                    let key = key(&report.task_id, report.attempt_id);
                    let seen = self.seen.entry(key.clone()).or_default();
                    let fact = (
                        report.state.name().to_string(),
                        report.exit_code,
                        report.error.clone(),
                    );
                    seen.terminal_reports.insert(fact);
                    assert_eq!(
                        seen.terminal_reports.len(),
                        1,
                        "{key}: contradicting terminal reports"
                    );
                }
            }
            Effect::RegisterWorker { .. } => {
                assert!(!self.register_in_flight, "two registrations in flight");
                self.register_in_flight = true;
            }
            Effect::RemoveContainer { attempt } => {
                self.removals.insert(attempt.clone());
            }
            Effect::CancelBuild { .. }
            | Effect::ReleaseResources { .. }
            | Effect::WriteLog { .. }
            | Effect::Journal(_)
            | Effect::RemoveTask { .. } => {}
        }
    }

    /// The journal holds what a restart needs before the effects that depend on it run: an
    /// attempt is accepted before any effect of it, started before its first start, finished
    /// before its terminal report, and its report is acknowledged before that is journaled.
    fn check_journal_order(&mut self, effect: &Effect) {
        if let Effect::Journal(entry) = effect {
            let attempt = entry.attempt();
            let seen = self.seen.entry(attempt.clone()).or_default();
            let (name, needs) = match entry {
                JournalEntry::Accepted { .. } => ("accepted", None),
                // Once per port-conflict retry, after the start it retries.
                JournalEntry::Ports { .. } => {
                    assert!(
                        seen.journal.contains(&"started"),
                        "{attempt}: journaled fresh ports before it started"
                    );
                    return;
                }
                JournalEntry::Started { .. } => ("started", Some("accepted")),
                JournalEntry::Finished { .. } => ("finished", Some("accepted")),
                JournalEntry::ReportAcked { .. } => {
                    assert!(
                        seen.terminal_acked,
                        "{attempt}: ack journaled before the ack"
                    );
                    ("report_acked", Some("finished"))
                }
                JournalEntry::Removed { .. } => ("removed", Some("report_acked")),
                JournalEntry::Forgotten { .. } => {
                    let newest = self.removed.get(&attempt.task_id).copied();
                    self.forgotten
                        .insert(attempt.task_id.clone(), newest.unwrap_or(0));
                    ("forgotten", Some("removed"))
                }
            };
            assert!(
                !seen.journal.contains(&name),
                "{attempt}: journaled {name} twice"
            );
            if let Some(needs) = needs {
                assert!(
                    seen.journal.contains(&needs),
                    "{attempt}: journaled {name} before {needs}"
                );
            }
            seen.journal.push(name);
            return;
        }
        let needs = match effect {
            Effect::StartContainer(_) => "started",
            Effect::ReportTaskState { report, .. } if is_task_finished(report.state) => "finished",
            _ => "accepted",
        };
        let Some(attempt) = attempt_of(effect) else {
            return;
        };
        let journaled = self.seen.get(&attempt).map(|s| s.journal.as_slice());
        assert!(
            journaled.is_some_and(|j| j.contains(&needs)),
            "{attempt}: {effect} before the journal had it {needs}"
        );
    }

    /// Retention removes only settled tasks (every attempt finished, its terminal report acked)
    /// and, once it has, nothing of the task is ever reported or run again.
    fn check_removal(&mut self, effect: &Effect) {
        if let Effect::RemoveTask {
            task_id, attempts, ..
        } = effect
        {
            for attempt in attempts {
                let seen = self.seen.get(attempt);
                assert!(
                    seen.is_some_and(|s| s.terminal_acked && !self.alive.contains(attempt)),
                    "{attempt}: removed before its terminal report was acknowledged"
                );
            }
            let newest = attempts.iter().map(|a| a.attempt_id).max().unwrap_or(0);
            self.removed.insert(task_id.clone(), newest);
            self.check_oldest_first(attempts);
            return;
        }
        // A removal's own tombstones come before its RemoveTask, so they pass.
        let Some(attempt) = attempt_of(effect) else {
            return;
        };
        let removed = self.removed.get(&attempt.task_id);
        assert!(
            removed.is_none_or(|newest| attempt.attempt_id > *newest),
            "{attempt}: {effect} after its task was removed"
        );
    }

    /// No settled task the core still keeps finished before one it removed.
    fn check_oldest_first(&self, removed: &[AttemptKey]) {
        let finished = |key: &AttemptKey| self.seen.get(key).and_then(|s| s.finished_at);
        let Some(removed_at) = removed.iter().filter_map(finished).max() else {
            return;
        };
        for t in 0..TASKS {
            let id = TaskId::new(task_name(t)).unwrap();
            let attempts = self.core.task_attempts(&id);
            let settled = !attempts.is_empty()
                && attempts.iter().all(|a| {
                    let k = key(a.task_id.as_str(), a.attempt_id);
                    a.is_finished() && self.seen.get(&k).is_some_and(|s| s.terminal_acked)
                });
            let kept_at = attempts.iter().filter_map(|a| a.finished_at_ms).max();
            if let (true, Some(kept_at)) = (settled, kept_at) {
                assert!(
                    kept_at >= removed_at,
                    "{id} (finished at {kept_at}) kept while {removed:?} (at {removed_at}) went"
                );
            }
        }
    }

    /// Checks the per-attempt history against the core's state.
    fn check(&mut self) {
        self.core.check_invariants().unwrap();
        let tasks: Vec<Task> = (0..TASKS)
            .flat_map(|t| {
                let id = TaskId::new(task_name(t)).unwrap();
                self.core
                    .task_attempts(&id)
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        for task in tasks {
            let key = key(task.task_id.as_str(), task.attempt_id);
            let seen = self.seen.entry(key.clone()).or_default();
            if let Some(prev) = seen.state {
                assert!(
                    prev == task.state || is_legal_transition(prev, task.state),
                    "{key}: {prev} -> {}",
                    task.state
                );
            }
            if let Some(started) = seen.started_at {
                assert_eq!(
                    task.started_at_ms,
                    Some(started),
                    "{key}: started_at changed"
                );
            }
            seen.state = Some(task.state);
            seen.started_at = task.started_at_ms;
            seen.finished_at = task.finished_at_ms;
        }
    }

    fn step(&mut self, op: &Op) {
        self.apply(op);
        self.collect();
        self.check();
    }

    /// Heals everything and lets the worker converge; then every attempt must be terminal with
    /// its terminal report acknowledged, and every TERMed container must have been KILLed.
    fn converge(&mut self) {
        for _ in 0..64 {
            self.advance(self.now + 10_000);
            for (key, seen) in &self.seen {
                if seen.term_at.is_some() && self.alive.contains(key) {
                    assert!(
                        seen.killed_at.is_some(),
                        "{key}: TERM but no KILL after the timeout"
                    );
                }
            }
            while !self.setup.is_empty() {
                self.answer(0, 0);
                self.collect();
                self.check();
            }
            for key in self.alive.clone() {
                self.exit(key, ExitStatus::code(0));
                self.collect();
                self.check();
            }
            self.step(&Op::Register {
                accept: true,
                reset: false,
            });
            while !self.reports.is_empty() {
                self.step(&Op::Report { pick: 0, ack: true });
            }
            if self.core.live_attempts().is_empty() && self.core.outbox_len() == 0 {
                break;
            }
        }
        assert!(
            self.core.live_attempts().is_empty(),
            "attempts still live after convergence"
        );
        assert_eq!(self.core.outbox_len(), 0, "reports never delivered");
        for (key, seen) in &self.seen {
            if seen.state.is_some_and(is_task_finished) {
                assert_eq!(seen.terminal_reports.len(), 1, "{key}: no terminal report");
                assert!(seen.terminal_acked, "{key}: terminal report never acked");
            }
        }
        assert!(
            self.core.held_ports().is_empty(),
            "ports held after every task ended"
        );
    }
}

/// The attempt an effect concerns, reports and journal entries included.
fn attempt_of(effect: &Effect) -> Option<AttemptKey> {
    match effect {
        Effect::ReportTaskState { report, .. } => Some(key(&report.task_id, report.attempt_id)),
        Effect::Journal(entry) => Some(entry.attempt()),
        other => other.attempt().cloned(),
    }
}

fn pick_from(set: &BTreeSet<AttemptKey>, pick: usize) -> Option<AttemptKey> {
    (!set.is_empty()).then(|| set.iter().nth(pick % set.len()).unwrap().clone())
}

/// Runs the scenario, checking after every step and at the end; returns every effect with the
/// time it appeared. Panics on any broken invariant.
pub fn run(ops: &[Op]) -> Vec<(u64, Effect)> {
    let mut world = World::new();
    world.collect();
    for op in ops {
        world.step(op);
    }
    world.converge();
    world.trace
}
