//! `WorkerCore`: the state machine of every task on a worker, quinn-proto style. This file is
//! the front; the work is done in the files named after it:
//!
//! * commands: `submit`, `kill`, `kill_all` (here), `recover`, `recover_leftover`, `adopt`
//!   (`recovery.rs`);
//! * inputs: `handle(now, Event)` for outcomes of effects, `handle_timeout(now)` for timers; the
//!   pipeline of an attempt lives in `lifecycle.rs`, registration and reports in `controller.rs`;
//! * outputs: `poll_effect()` (drain after every input) and `poll_timeout()` (when to call
//!   `handle_timeout` next);
//! * queries: `get_task`, `task_attempts`, `task_status`, `list_tasks`, `live_attempts`, ...
//!
//! The core never reads a clock, never does IO and iterates only ordered maps, so the same calls
//! at the same times give the same effects. In debug builds every command and input ends by
//! asserting the invariants of `invariants.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::attempt::{Attempt, StopReason};
use super::config::{CoreConfig, TERM_TIMEOUT_MAX_MS};
use super::controller::ControllerLink;
use super::effect::{ContainerSpec, Effect, JournalEntry};
use super::event::Event;
use super::ids::{AttemptKey, TaskId};
use super::ledger::RemovedLedger;
use super::ports::{PortAllocator, PortsExhausted};
use super::spec::TaskSpec;
use super::state::TaskState;
use super::task::Task;
use super::timers::{Timer, Timers};
use crate::proto;

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
    /// The attempt finished and retention removed it: it never runs again.
    #[error(
        "task {task_id} attempt {attempt_id} already completed ({state}; removed by retention)"
    )]
    AlreadyCompleted {
        task_id: TaskId,
        attempt_id: i32,
        state: TaskState,
    },
    #[error("task {task_id}: {source}")]
    PortsExhausted {
        task_id: TaskId,
        source: PortsExhausted,
    },
    /// The machine is being evacuated (`WorkerCore::evacuate`): it takes no new work.
    #[error("task {task_id}: this worker takes no new work: {reason}")]
    Evacuating { task_id: TaskId, reason: String },
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

pub struct WorkerCore {
    pub(crate) config: CoreConfig,
    pub(crate) now_ms: u64,
    pub(crate) tasks: BTreeMap<TaskId, Vec<Attempt>>,
    pub(crate) ports: PortAllocator,
    pub(crate) effects: VecDeque<Effect>,
    pub(crate) timers: Timers,
    pub(crate) controller: ControllerLink,
    /// A task became settled this step: retention runs before the step ends.
    pub(crate) retention_due: bool,
    /// When `Timer::Retention` is armed for.
    pub(crate) retention_timer: Option<u64>,
    /// The tasks retention may remove, by when their last attempt finished (`retention.rs`).
    pub(crate) settled: BTreeSet<(u64, TaskId)>,
    pub(crate) settled_at: BTreeMap<TaskId, u64>,
    /// The newest removed attempt of each task retention forgot (`removed.rs`).
    pub(crate) removed: RemovedLedger,
    /// Reconcile era: the attempt each controller uid names (`reconcile.rs`).
    pub(crate) uids: BTreeMap<String, AttemptKey>,
    /// Why the machine takes no new work (`evacuate`), for as long as the worker runs.
    pub(crate) evacuating: Option<String>,
}

impl WorkerCore {
    pub fn new(config: CoreConfig, now_ms: u64) -> WorkerCore {
        let mut timers = Timers::default();
        let controller = ControllerLink::new(&config, now_ms, &mut timers);
        WorkerCore {
            ports: PortAllocator::new(config.port_range.clone()),
            config,
            now_ms,
            tasks: BTreeMap::new(),
            effects: VecDeque::new(),
            timers,
            controller,
            retention_due: false,
            retention_timer: None,
            settled: BTreeSet::new(),
            settled_at: BTreeMap::new(),
            removed: RemovedLedger::default(),
            uids: BTreeMap::new(),
            evacuating: None,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Time never runs backwards inside the core, whatever the caller passes.
    pub(crate) fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Every public command and input ends here: retention runs if a task became settled, and a
    /// broken invariant shows at the step that broke it (debug builds; tests, the fuzzer and the
    /// simulator also call `check_invariants`).
    pub(crate) fn end_step(&mut self) {
        if self.retention_due {
            self.enforce_retention();
        }
        #[cfg(debug_assertions)]
        if let Err(broken) = self.check_invariants() {
            panic!("core invariant broken: {broken}");
        }
    }

    // ---- commands -------------------------------------------------------------------------

    /// Accepts a task attempt. The same attempt again returns its state and does nothing; a
    /// higher attempt supersedes the current one; a lower one is refused.
    pub fn submit(&mut self, now_ms: u64, spec: TaskSpec) -> Result<TaskState, SubmitError> {
        self.tick(now_ms);
        let result = self.try_submit(spec);
        self.end_step();
        result
    }

    pub(crate) fn try_submit(&mut self, spec: TaskSpec) -> Result<TaskState, SubmitError> {
        if let Some(reason) = &self.evacuating {
            return Err(SubmitError::Evacuating {
                task_id: spec.task_id,
                reason: reason.clone(),
            });
        }
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
        } else if let Some(removed) = self.removed_attempt(&spec.task_id, spec.attempt_id) {
            return Err(SubmitError::AlreadyCompleted {
                task_id: spec.task_id,
                attempt_id: spec.attempt_id,
                state: removed.state,
            });
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
        let Some(current) = self.tasks.get(task_id).and_then(|a| a.last()) else {
            // A task retention removed is finished, not lost.
            return Err(match self.removed.get(task_id) {
                Some(removed) => KillError::AlreadyCompleted {
                    task_id: task_id.clone(),
                    state: removed.state,
                },
                None => KillError::NotFound(task_id.clone()),
            });
        };
        if current.task.is_finished() {
            return Err(KillError::AlreadyCompleted {
                task_id: task_id.clone(),
                state: current.task.state,
            });
        }
        let key = current.task.attempt_key();
        self.request_stop(&key, StopReason::Kill, term_ms);
        self.end_step();
        Ok(())
    }

    /// Stops every live attempt (controller reset, worker shutdown). Returns how many.
    pub fn kill_all(&mut self, now_ms: u64, reason: &str) -> usize {
        self.tick(now_ms);
        let stopped = self.stop_all(reason);
        self.end_step();
        stopped
    }

    /// The machine is going away (its VM was preempted): every live attempt is stopped and ends
    /// WORKER_FAILED with `reason` (the controller retries it elsewhere on its preemption
    /// budget), and no new work is taken from now on. Answers how many were live.
    pub fn evacuate(&mut self, now_ms: u64, reason: &str) -> usize {
        self.tick(now_ms);
        self.evacuating = Some(reason.to_string());
        let live = self.live_attempts();
        for key in &live {
            let term_ms = self.config.default_term_timeout_ms;
            self.request_stop(key, StopReason::Evacuated(reason.to_string()), term_ms);
        }
        self.end_step();
        live.len()
    }

    fn stop_all(&mut self, reason: &str) -> usize {
        let live = self.live_attempts();
        for key in &live {
            let term_ms = self.config.default_term_timeout_ms;
            self.request_stop(key, StopReason::Reset(reason.to_string()), term_ms);
        }
        live.len()
    }

    // ---- inputs ---------------------------------------------------------------------------

    /// Feeds back the outcome of an effect.
    pub fn handle(&mut self, now_ms: u64, event: Event) {
        self.tick(now_ms);
        let now = self.now_ms;
        match event {
            Event::RegisterAccepted { should_reset } => {
                if self
                    .controller
                    .on_register_accepted(now, should_reset, &mut self.timers)
                {
                    self.stop_all("Worker reset by controller");
                }
            }
            Event::RegisterFailed { .. } => {
                self.controller.on_register_failed(now, &mut self.timers)
            }
            Event::ReportAcked { report_id } => self.on_report_acked(report_id),
            Event::DiskUsage {
                bytes_percent,
                inodes_percent,
            } => self.on_disk_usage(bytes_percent, inodes_percent),
            Event::ReportFailed { report_id, .. } => self.controller.on_report_failed(
                now,
                report_id,
                &mut self.timers,
                &mut self.effects,
            ),
            runtime => self.on_runtime_event(runtime),
        }
        self.end_step();
    }

    /// Fires every timer due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.tick(now_ms);
        while let Some(timer) = self.timers.pop_due(self.now_ms) {
            match timer {
                Timer::Register => {
                    let running = self.running_task_ids();
                    self.controller.send_register(running, &mut self.effects);
                }
                Timer::ReportRetry(id) => self.controller.retry_report(id, &mut self.effects),
                Timer::Escalate(key) => self.escalate(&key),
                Timer::TaskTimeout(key) => self.on_task_timeout(&key),
                Timer::Retention => self.on_retention_timer(),
            }
        }
        self.end_step();
    }

    // ---- outputs --------------------------------------------------------------------------

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.next_deadline()
    }

    // ---- reports --------------------------------------------------------------------------

    /// Queues a report of the attempt's current state (nothing without a controller).
    pub(crate) fn report(&mut self, key: &AttemptKey) {
        // Split borrows: the task is read while the link and the effects are written.
        let (tasks, controller, effects) = (&self.tasks, &mut self.controller, &mut self.effects);
        let task = tasks
            .get(&key.task_id)
            .and_then(|a| a.iter().find(|a| a.task.attempt_id == key.attempt_id))
            .map(|a| &a.task)
            .expect("reported attempt exists");
        let terminal = task.is_finished();
        let Some(report_id) = controller.report(task, effects) else {
            return;
        };
        if terminal {
            self.attempt_mut(key)
                .expect("exists")
                .told
                .queue_terminal(report_id);
        }
    }

    /// An acknowledged terminal report settles its attempt, and the journal says so.
    fn on_report_acked(&mut self, report_id: u64) {
        let Some(acked) = self
            .controller
            .on_report_acked(report_id, &mut self.effects)
        else {
            return;
        };
        let Ok(task_id) = TaskId::new(acked.task_id) else {
            return;
        };
        let key = AttemptKey {
            task_id,
            attempt_id: acked.attempt_id,
        };
        let Some(attempt) = self.attempt_mut(&key) else {
            return;
        };
        if attempt.told.ack(report_id) {
            self.effects
                .push_back(Effect::Journal(JournalEntry::ReportAcked {
                    attempt: key.clone(),
                }));
            self.refresh_settled(&key.task_id);
        }
    }

    /// The tasks with a live attempt, each once (a task being superseded has two).
    fn running_task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .live_attempts()
            .into_iter()
            .map(|k| k.task_id.to_string())
            .collect();
        ids.dedup();
        ids
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

    /// What the current attempt of a running task runs as (for an exec into it), or why there
    /// is none to exec into, worded as Iris's worker words it.
    pub fn running_container(&self, task_id: &TaskId) -> Result<ContainerSpec, String> {
        let Some(attempt) = self.tasks.get(task_id).and_then(|a| a.last()) else {
            return Err(format!("Task {task_id} not found"));
        };
        if attempt.task.state != TaskState::Running {
            return Err(format!(
                "Task {task_id} is not running (state={})",
                attempt.task.state.to_proto().as_str_name()
            ));
        }
        let key = AttemptKey {
            task_id: task_id.clone(),
            attempt_id: attempt.task.attempt_id,
        };
        Ok(self.container_spec(&key))
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
            .map(|a| a.task.attempt_key())
            .collect()
    }

    pub fn outbox_len(&self) -> usize {
        self.controller.outbox_len()
    }

    pub fn held_ports(&self) -> Vec<(u16, AttemptKey)> {
        self.ports.held().map(|(p, k)| (p, k.clone())).collect()
    }

    /// The id of the terminal report of an attempt and whether it still waits for an ack.
    pub fn terminal_report(&self, key: &AttemptKey) -> Option<(u64, bool)> {
        let id = self.attempt(key)?.told.report_id()?;
        Some((id, self.controller.is_waiting(id)))
    }

    /// Whether an attempt is finished and the controller has acknowledged its terminal report
    /// (or there is no controller to tell).
    pub fn is_settled(&self, key: &AttemptKey) -> bool {
        self.attempt(key).is_some_and(|a| {
            let ships = self.config.era.ships_logs() && a.spec.era.ships_logs();
            let shipped = a.told.logs_shipped || !ships;
            a.task.is_finished() && (a.told.is_acked() || !self.needs_ack()) && shipped
        })
    }

    /// Whether a finished attempt waits for the controller before it may be removed: its
    /// terminal report acknowledged (task era), or left out of a desired set (reconcile era).
    pub(crate) fn needs_ack(&self) -> bool {
        self.controller.enabled() || self.config.era.is_reconcile()
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }
}
