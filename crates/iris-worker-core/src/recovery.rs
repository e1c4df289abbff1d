//! A restarted worker takes back what its journal and the engine remember: finished attempts as
//! they were, live ones either adopted (their container survived) or ended WORKER_FAILED.

use std::collections::BTreeMap;

use super::attempt::{Outcome, Phase, Running};
use super::event::ExitStatus;
use super::ids::AttemptKey;
use super::logs::LogSource;
use super::spec::TaskSpec;
use super::state::TaskState;
use super::timers::Timer;
use super::worker::WorkerCore;

/// What a restarted worker's journal remembers of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredAttempt {
    pub spec: TaskSpec,
    pub ports: BTreeMap<String, u16>,
    pub submitted_at_ms: u64,
    pub started_at_ms: Option<u64>,
    /// `None`: the attempt was live when the worker died.
    pub outcome: Option<RecoveredOutcome>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredOutcome {
    pub state: TaskState,
    pub exit: ExitStatus,
    pub error: Option<String>,
    pub finished_at_ms: u64,
    /// The controller acknowledged the terminal report before the restart.
    pub report_acked: bool,
}

/// The error of an attempt that was live when its worker died and could not be adopted.
pub const LOST_ON_RESTART: &str = "Worker restarted; the attempt was lost";

impl WorkerCore {
    /// Brings back an attempt from the journal after a restart. A finished attempt comes back as
    /// it was (its terminal report re-sent unless it was acknowledged); a live one could not
    /// survive and ends WORKER_FAILED, reported. Older than what the core already has: ignored.
    pub fn recover(&mut self, now_ms: u64, record: RecoveredAttempt) {
        self.tick(now_ms);
        self.recover_record(record);
        self.end_step();
    }

    fn recover_record(&mut self, record: RecoveredAttempt) {
        let newest = self.tasks.get(&record.spec.task_id).and_then(|a| a.last());
        if newest.is_some_and(|a| a.task.attempt_id >= record.spec.attempt_id)
            || self.is_removed(&record)
        {
            return;
        }
        let key = record.spec.attempt_key();
        let mut attempt = self.new_attempt(record.spec, record.ports, None);
        attempt.task.submitted_at_ms = record.submitted_at_ms;
        attempt.task.started_at_ms = record.started_at_ms;
        let Some(outcome) = record.outcome else {
            self.push_attempt(attempt);
            self.write_log(&key, LogSource::Error, LOST_ON_RESTART.to_string());
            self.finish(
                &key,
                Outcome::new(TaskState::WorkerFailed, LOST_ON_RESTART.to_string()),
            );
            return;
        };
        let task = &mut attempt.task;
        task.state = outcome.state;
        task.error = outcome.error;
        task.exit_code = outcome.exit.code;
        task.exit_signal = outcome.exit.signal;
        task.oom_killed = outcome.exit.oom_killed;
        task.finished_at_ms = Some(outcome.finished_at_ms);
        attempt.enter(Phase::Done);
        if outcome.report_acked {
            attempt.told.settle();
        }
        attempt.spec.forget_payload();
        self.push_attempt(attempt);
        if !outcome.report_acked {
            self.report(&key);
        }
    }

    /// An attempt that was live when the worker stopped, whose container is still there but
    /// cannot be adopted: the container is removed, and the attempt reported WORKER_FAILED once
    /// the removal is confirmed (never while the container may still run).
    pub fn recover_leftover(&mut self, now_ms: u64, record: RecoveredAttempt) {
        self.tick(now_ms);
        if self.is_newer_live(&record) {
            let key = self.push_running_again(record, BTreeMap::new());
            self.write_log(&key, LogSource::Error, LOST_ON_RESTART.to_string());
            let outcome = Outcome::new(TaskState::WorkerFailed, LOST_ON_RESTART.to_string());
            self.remove_then_finish(&key, outcome);
        } else {
            self.recover_record(record);
        }
        self.end_step();
    }

    /// Takes back an attempt whose container survived a worker restart (docker): it is RUNNING
    /// again with its ports re-reserved, its timeout re-armed and RUNNING re-reported. Refused
    /// (false, nothing changed) if it is finished, not newer than what the core has, or its ports
    /// are taken.
    pub fn adopt(&mut self, now_ms: u64, mut record: RecoveredAttempt) -> bool {
        self.tick(now_ms);
        if !self.is_newer_live(&record) {
            return false;
        }
        let ports: Vec<u16> = record.ports.values().copied().collect();
        if !self.ports.reserve(&record.spec.attempt_key(), &ports) {
            return false;
        }
        let recorded_ports = std::mem::take(&mut record.ports);
        let key = self.push_running_again(record, recorded_ports);
        let now = self.now_ms;
        let attempt = self.attempt_mut(&key).expect("just pushed");
        attempt.task.status_message = "adopted after a worker restart".to_string();
        let started = attempt.task.started_at_ms.expect("set when pushed");
        let timeout_at =
            (attempt.spec.timeout_ms > 0).then(|| (started + attempt.spec.timeout_ms).max(now));
        attempt.enter(Phase::Running(Running {
            timeout_at,
            stop: None,
        }));
        if let Some(deadline) = timeout_at {
            self.timers.set(deadline, Timer::TaskTimeout(key.clone()));
        }
        self.report(&key);
        self.end_step();
        true
    }

    /// Whether a recovered record is a live attempt newer than any the core has of its task.
    fn is_newer_live(&self, record: &RecoveredAttempt) -> bool {
        let newest = self.tasks.get(&record.spec.task_id).and_then(|a| a.last());
        record.outcome.is_none()
            && newest.is_none_or(|a| a.task.attempt_id < record.spec.attempt_id)
            && !self.is_removed(record)
    }

    /// Whether retention removed this attempt (or a newer one of its task) before the restart.
    fn is_removed(&self, record: &RecoveredAttempt) -> bool {
        self.removed_attempt(&record.spec.task_id, record.spec.attempt_id)
            .is_some()
    }

    /// Puts back a recovered live attempt whose container is still there, as RUNNING.
    fn push_running_again(
        &mut self,
        record: RecoveredAttempt,
        ports: BTreeMap<String, u16>,
    ) -> AttemptKey {
        let key = record.spec.attempt_key();
        let mut attempt = self.new_attempt(record.spec, ports, None);
        attempt.task.submitted_at_ms = record.submitted_at_ms;
        attempt.task.started_at_ms = Some(record.started_at_ms.unwrap_or(self.now_ms));
        attempt.task.state = TaskState::Running;
        attempt.enter(Phase::Running(Running::default()));
        attempt.container_started = true;
        self.push_attempt(attempt);
        key
    }
}
