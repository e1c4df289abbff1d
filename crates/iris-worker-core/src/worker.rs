//! `WorkerCore`: the state machine of every task on a worker, quinn-proto style.
//!
//! Callers give it commands (`submit`, `kill`, `kill_all`, `handle`) with the current time, then
//! drain `poll_effect()` and sleep until `poll_timeout()`, calling `handle_timeout()` then. The core
//! never reads a clock, never does IO and iterates only ordered maps, so the same calls at the same
//! times give the same effects.

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;

use super::effect::{Effect, TaskReport};
use super::env::RuntimeFlavour;
use super::event::Event;
use super::ids::{AttemptKey, TaskId};
use super::outbox::{Outbox, backoff_ms};
use super::ports::{PortAllocator, PortProbe, PortsExhausted};
use super::spec::TaskSpec;
use super::state::{TaskState, is_task_finished};
use super::task::{Task, WorkerIdentity};
use super::timers::{Timer, Timers};
use crate::proto;

pub const DEFAULT_TERM_TIMEOUT_MS: u64 = 5_000;
/// Longest grace period a kill may ask for; longer requests are clamped.
pub const TERM_TIMEOUT_MAX_MS: u64 = 3_600_000;
/// SIGKILL is sent again this often until the container is gone: a signal lost to an engine
/// that did not answer must not leave the container running.
pub const KILL_REPEAT_MS: u64 = 5_000;

#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub identity: WorkerIdentity,
    /// `None`: no controller; nothing is registered or reported.
    pub controller_address: Option<String>,
    pub advertise_host: String,
    pub flavour: RuntimeFlavour,
    pub port_range: RangeInclusive<u16>,
    pub heartbeat_interval_ms: u64,
    pub default_term_timeout_ms: u64,
    pub retry_backoff_initial_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// Starts tried per attempt when the runtime reports a port conflict.
    pub start_tries_max: u32,
    /// Attempts alive at once; a submission beyond it is refused, never queued without bound.
    pub live_attempts_max: usize,
    /// A deliberately broken behaviour, for the simulator only.
    #[cfg(feature = "planted")]
    pub planted: Option<super::planted::PlantedBug>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            identity: WorkerIdentity::default(),
            controller_address: None,
            advertise_host: "127.0.0.1".to_string(),
            flavour: RuntimeFlavour::Process,
            port_range: 30000..=40000,
            heartbeat_interval_ms: 10_000,
            default_term_timeout_ms: DEFAULT_TERM_TIMEOUT_MS,
            retry_backoff_initial_ms: 100,
            retry_backoff_max_ms: 5_000,
            start_tries_max: 3,
            live_attempts_max: 1024,
            #[cfg(feature = "planted")]
            planted: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("task {task_id}: attempt_id {attempt_id} is older than current attempt {current}")]
    StaleAttempt {
        task_id: TaskId,
        attempt_id: i32,
        current: i32,
    },
    #[error("task {task_id}: {live} attempts are live; the limit is {limit}")]
    TooManyTasks {
        task_id: TaskId,
        live: usize,
        limit: usize,
    },
    #[error("task {task_id}: {source}")]
    PortsExhausted {
        task_id: TaskId,
        source: PortsExhausted,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KillError {
    #[error("task {0} not found")]
    NotFound(TaskId),
    #[error("task {task_id} already completed ({state})")]
    AlreadyCompleted { task_id: TaskId, state: TaskState },
    #[error("term_timeout_ms must not be negative")]
    NegativeTermTimeout,
}

/// Where an attempt is in its pipeline. The user-visible `TaskState` is derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Superseding an attempt that has not stopped yet.
    Waiting,
    Preparing,
    FetchingBundle,
    Building,
    /// StartContainer sent, no answer yet.
    Starting,
    Running,
    /// The runtime lost track of a container that may still run: the outcome is held back until
    /// the container's removal is confirmed, so no terminal report precedes a live container and
    /// its ports stay held until then.
    Removing,
    Done,
}

/// Why an attempt is being stopped; decides its terminal state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    Kill,
    Timeout,
    Superseded(i32),
    Reset(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    pub task: Task,
    pub spec: TaskSpec,
    pub phase: Phase,
    pub stop: Option<StopReason>,
    pub term_timeout_ms: u64,
    pub escalate_at: Option<u64>,
    pub timeout_at: Option<u64>,
    pub start_try: u32,
    pub image: Option<String>,
    /// A StartContainer was answered with ContainerStarted: there is something to remove.
    pub container_started: bool,
    pub terminal_report: Option<u64>,
    /// SIGKILL has been sent; it repeats on its own, so later kill requests change nothing.
    pub sigkilled: bool,
    /// The outcome waiting for the container's removal (phase `Removing`).
    pub removing: Option<super::lifecycle::Outcome>,
    /// Recovered after a restart with its terminal report already acknowledged.
    pub report_settled: bool,
}

#[derive(Debug)]
pub(crate) enum Registration {
    Disabled,
    Idle { failures: u32 },
    InFlight { failures: u32 },
}

pub struct WorkerCore {
    pub(crate) config: CoreConfig,
    pub(crate) now_ms: u64,
    pub(crate) tasks: BTreeMap<TaskId, Vec<Attempt>>,
    pub(crate) ports: PortAllocator,
    pub(crate) probe: Box<dyn PortProbe>,
    pub(crate) effects: VecDeque<Effect>,
    pub(crate) timers: Timers,
    pub(crate) outbox: Outbox,
    pub(crate) registration: Registration,
}

impl WorkerCore {
    pub fn new(config: CoreConfig, now_ms: u64, probe: Box<dyn PortProbe>) -> WorkerCore {
        let mut timers = Timers::default();
        let registration = if config.controller_address.is_some() {
            timers.set(now_ms, Timer::Register);
            Registration::Idle { failures: 0 }
        } else {
            Registration::Disabled
        };
        WorkerCore {
            ports: PortAllocator::new(config.port_range.clone()),
            config,
            now_ms,
            tasks: BTreeMap::new(),
            probe,
            effects: VecDeque::new(),
            timers,
            outbox: Outbox::default(),
            registration,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Time never runs backwards inside the core, whatever the caller passes.
    pub(crate) fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    // ---- commands -------------------------------------------------------------------------

    /// Accepts a task attempt. The same attempt again returns its state and does nothing; a
    /// higher attempt supersedes the current one; a lower one is refused.
    pub fn submit(&mut self, now_ms: u64, spec: TaskSpec) -> Result<TaskState, SubmitError> {
        self.tick(now_ms);
        if let Some(current) = self.tasks.get(&spec.task_id).and_then(|a| a.last()) {
            let current_id = current.task.attempt_id;
            if spec.attempt_id == current_id {
                return Ok(current.task.state);
            }
            if spec.attempt_id < current_id {
                return Err(SubmitError::StaleAttempt {
                    task_id: spec.task_id,
                    attempt_id: spec.attempt_id,
                    current: current_id,
                });
            }
        }
        let live = self.live_attempts().len();
        if live >= self.config.live_attempts_max {
            return Err(SubmitError::TooManyTasks {
                task_id: spec.task_id,
                live,
                limit: self.config.live_attempts_max,
            });
        }
        self.accept(spec)
    }

    /// Stops a task: SIGTERM now, SIGKILL after `term_timeout_ms` (0 = the default). Returns at
    /// once; the task ends KILLED when its container is gone.
    pub fn kill(
        &mut self,
        now_ms: u64,
        task_id: &TaskId,
        term_timeout_ms: i64,
    ) -> Result<(), KillError> {
        self.tick(now_ms);
        let term_ms = match term_timeout_ms {
            t if t < 0 => return Err(KillError::NegativeTermTimeout),
            0 => self.config.default_term_timeout_ms,
            t => u64::try_from(t)
                .unwrap_or(u64::MAX)
                .min(TERM_TIMEOUT_MAX_MS),
        };
        let current = self
            .tasks
            .get(task_id)
            .and_then(|a| a.last())
            .ok_or_else(|| KillError::NotFound(task_id.clone()))?;
        if current.task.is_finished() {
            return Err(KillError::AlreadyCompleted {
                task_id: task_id.clone(),
                state: current.task.state,
            });
        }
        let key = attempt_key(&current.task);
        self.request_stop(&key, StopReason::Kill, term_ms);
        Ok(())
    }

    /// Stops every live attempt (controller reset, worker shutdown). Returns how many.
    pub fn kill_all(&mut self, now_ms: u64, reason: &str) -> usize {
        self.tick(now_ms);
        let live = self.live_attempts();
        for key in &live {
            let term_ms = self.config.default_term_timeout_ms;
            self.request_stop(key, StopReason::Reset(reason.to_string()), term_ms);
        }
        live.len()
    }

    /// Feeds back the outcome of an effect.
    pub fn handle(&mut self, now_ms: u64, event: Event) {
        self.tick(now_ms);
        match event {
            Event::RegisterAccepted { should_reset } => self.on_register_accepted(should_reset),
            Event::RegisterFailed { .. } => self.on_register_failed(),
            Event::ReportAcked { report_id } => self.on_report_acked(report_id),
            Event::ReportFailed { report_id, .. } => self.on_report_failed(report_id),
            runtime => self.on_runtime_event(runtime),
        }
    }

    /// Fires every timer due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.tick(now_ms);
        while let Some(timer) = self.timers.pop_due(self.now_ms) {
            match timer {
                Timer::Register => self.send_register(),
                Timer::ReportRetry(id) => self.retry_report(id),
                Timer::Escalate(key) => self.escalate(&key),
                Timer::TaskTimeout(key) => self.on_task_timeout(&key),
            }
        }
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.next_deadline()
    }

    // ---- controller -----------------------------------------------------------------------

    fn send_register(&mut self) {
        let failures = match self.registration {
            Registration::Idle { failures } => failures,
            Registration::Disabled | Registration::InFlight { .. } => return,
        };
        self.registration = Registration::InFlight { failures };
        // A task being superseded has two live attempts; the controller wants each task once.
        let mut running_task_ids: Vec<String> = self
            .live_attempts()
            .into_iter()
            .map(|k| k.task_id.to_string())
            .collect();
        running_task_ids.dedup();
        self.effects
            .push_back(Effect::RegisterWorker { running_task_ids });
    }

    fn on_register_accepted(&mut self, should_reset: bool) {
        if !matches!(self.registration, Registration::InFlight { .. }) {
            return;
        }
        self.registration = Registration::Idle { failures: 0 };
        if should_reset {
            self.kill_all(self.now_ms, "Worker reset by controller");
            self.timers.set(self.now_ms, Timer::Register);
        } else {
            let next = self.now_ms + self.config.heartbeat_interval_ms;
            self.timers.set(next, Timer::Register);
        }
    }

    fn on_register_failed(&mut self) {
        let Registration::InFlight { failures } = self.registration else {
            return;
        };
        let failures = failures + 1;
        self.registration = Registration::Idle { failures };
        let delay = self.retry_backoff(failures);
        self.timers.set(self.now_ms + delay, Timer::Register);
    }

    fn retry_backoff(&self, failures: u32) -> u64 {
        backoff_ms(
            failures,
            self.config.retry_backoff_initial_ms,
            self.config.retry_backoff_max_ms,
        )
    }

    pub(crate) fn report(&mut self, key: &AttemptKey) {
        if self.config.controller_address.is_none() {
            return;
        }
        let attempt = self.attempt(key).expect("reported attempt exists");
        let task = &attempt.task;
        let report = TaskReport {
            worker_id: self.config.identity.worker_id.clone(),
            task_id: task.task_id.to_string(),
            job_id: task.job_id.to_string(),
            task_index: task.task_index,
            attempt_id: task.attempt_id,
            state: task.state,
            exit_code: task.effective_exit_code(),
            error: task.error.clone().unwrap_or_default(),
            finished_at_ms: task.finished_at_ms.map_or(0, |t| t as i64),
        };
        let terminal = is_task_finished(task.state);
        let (report_id, send_now) = self.outbox.push(key.task_id.clone(), report);
        if terminal {
            self.attempt_mut(key).expect("exists").terminal_report = Some(report_id);
        }
        if let Some(report) = send_now {
            self.effects
                .push_back(Effect::ReportTaskState { report_id, report });
        }
    }

    fn on_report_acked(&mut self, report_id: u64) {
        if let Some((next_id, report)) = self.outbox.ack(report_id) {
            self.effects.push_back(Effect::ReportTaskState {
                report_id: next_id,
                report,
            });
        }
    }

    fn on_report_failed(&mut self, report_id: u64) {
        #[cfg(feature = "planted")]
        if self.planted(super::planted::PlantedBug::ReportNotRetried) {
            if let Some((next_id, report)) = self.outbox.ack(report_id) {
                self.effects.push_back(Effect::ReportTaskState {
                    report_id: next_id,
                    report,
                });
            }
            return;
        }
        if let Some(failures) = self.outbox.fail(report_id) {
            let delay = self.retry_backoff(failures);
            self.timers
                .set(self.now_ms + delay, Timer::ReportRetry(report_id));
        }
    }

    fn retry_report(&mut self, report_id: u64) {
        if let Some(report) = self.outbox.retry(report_id) {
            self.effects
                .push_back(Effect::ReportTaskState { report_id, report });
        }
    }

    #[cfg(feature = "planted")]
    pub(crate) fn planted(&self, bug: super::planted::PlantedBug) -> bool {
        self.config.planted == Some(bug)
    }

    // ---- queries --------------------------------------------------------------------------

    pub(crate) fn attempt(&self, key: &AttemptKey) -> Option<&Attempt> {
        self.tasks
            .get(&key.task_id)?
            .iter()
            .find(|a| a.task.attempt_id == key.attempt_id)
    }

    pub(crate) fn attempt_mut(&mut self, key: &AttemptKey) -> Option<&mut Attempt> {
        self.tasks
            .get_mut(&key.task_id)?
            .iter_mut()
            .find(|a| a.task.attempt_id == key.attempt_id)
    }

    /// The current (newest) attempt of a task.
    pub fn get_task(&self, task_id: &TaskId) -> Option<&Task> {
        self.tasks.get(task_id)?.last().map(|a| &a.task)
    }

    /// Every attempt of a task, oldest first.
    pub fn task_attempts(&self, task_id: &TaskId) -> Vec<&Task> {
        self.tasks
            .get(task_id)
            .map(|a| a.iter().map(|a| &a.task).collect())
            .unwrap_or_default()
    }

    pub fn task_status(&self, task_id: &TaskId) -> Option<proto::TaskStatus> {
        let attempts: Vec<Task> = self
            .tasks
            .get(task_id)?
            .iter()
            .map(|a| a.task.clone())
            .collect();
        let current = attempts.last()?;
        Some(current.to_proto(&self.config.identity, &attempts))
    }

    /// Every task's status, ordered by task id.
    pub fn list_tasks(&self) -> Vec<proto::TaskStatus> {
        self.tasks
            .keys()
            .filter_map(|id| self.task_status(id))
            .collect()
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks
            .values()
            .filter_map(|a| a.last())
            .map(|a| &a.task)
    }

    pub fn running_tasks(&self) -> usize {
        self.tasks()
            .filter(|t| t.state == TaskState::Running)
            .count()
    }

    /// Attempts that are not yet terminal, ordered by task id then attempt.
    pub fn live_attempts(&self) -> Vec<AttemptKey> {
        self.tasks
            .values()
            .flatten()
            .filter(|a| !a.task.is_finished())
            .map(|a| attempt_key(&a.task))
            .collect()
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    pub fn held_ports(&self) -> Vec<(u16, AttemptKey)> {
        self.ports.held().map(|(p, k)| (p, k.clone())).collect()
    }

    /// The id of the terminal report of an attempt and whether it still waits for an ack.
    pub fn terminal_report(&self, key: &AttemptKey) -> Option<(u64, bool)> {
        let id = self.attempt(key)?.terminal_report?;
        Some((id, self.outbox.contains(id)))
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

pub fn attempt_key(task: &Task) -> AttemptKey {
    AttemptKey {
        task_id: task.task_id.clone(),
        attempt_id: task.attempt_id,
    }
}
