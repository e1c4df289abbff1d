//! The controller side of the core: registration and heartbeats, and the report outbox. A plain
//! part of `WorkerCore` (as quinn-proto's connection holds its streams), knowing nothing of
//! attempts: it is handed the task to report and answers with effects and timers.

use std::collections::VecDeque;

use super::config::{CoreConfig, Era};
use super::effect::{Effect, TaskReport};
use super::outbox::{Outbox, backoff_ms};
use super::planted::PlantedBug;
use super::task::Task;
use super::timers::{Timer, Timers};

#[derive(Debug)]
enum Registration {
    Disabled,
    Idle { failures: u32 },
    InFlight { failures: u32 },
}

#[derive(Debug)]
pub(crate) struct ControllerLink {
    registration: Registration,
    outbox: Outbox,
    worker_id: String,
    heartbeat_interval_ms: u64,
    backoff_initial_ms: u64,
    backoff_max_ms: u64,
    drop_failed_reports: bool,
}

impl ControllerLink {
    /// A link that registers at once, or a disabled one when there is no controller.
    pub fn new(config: &CoreConfig, now_ms: u64, timers: &mut Timers) -> ControllerLink {
        let registration = if config.controller_address.is_some() && config.era == Era::Push {
            timers.set(now_ms, Timer::Register);
            Registration::Idle { failures: 0 }
        } else {
            Registration::Disabled
        };
        ControllerLink {
            registration,
            outbox: Outbox::default(),
            worker_id: config.identity.worker_id.clone(),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            backoff_initial_ms: config.retry_backoff_initial_ms,
            backoff_max_ms: config.retry_backoff_max_ms,
            drop_failed_reports: config.planted(PlantedBug::ReportNotRetried),
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.registration, Registration::Disabled)
    }

    /// Registers (or heartbeats) unless a call is already out.
    pub fn send_register(&mut self, running_task_ids: Vec<String>, effects: &mut VecDeque<Effect>) {
        let failures = match self.registration {
            Registration::Idle { failures } => failures,
            Registration::Disabled | Registration::InFlight { .. } => return,
        };
        self.registration = Registration::InFlight { failures };
        effects.push_back(Effect::RegisterWorker { running_task_ids });
    }

    /// Returns whether the controller asked for a reset (then registration is re-sent at once).
    pub fn on_register_accepted(
        &mut self,
        now: u64,
        should_reset: bool,
        timers: &mut Timers,
    ) -> bool {
        if !matches!(self.registration, Registration::InFlight { .. }) {
            return false;
        }
        self.registration = Registration::Idle { failures: 0 };
        let next = if should_reset {
            now
        } else {
            now + self.heartbeat_interval_ms
        };
        timers.set(next, Timer::Register);
        should_reset
    }

    pub fn on_register_failed(&mut self, now: u64, timers: &mut Timers) {
        let Registration::InFlight { failures } = self.registration else {
            return;
        };
        let failures = failures + 1;
        self.registration = Registration::Idle { failures };
        timers.set(now + self.backoff(failures), Timer::Register);
    }

    fn backoff(&self, failures: u32) -> u64 {
        backoff_ms(failures, self.backoff_initial_ms, self.backoff_max_ms)
    }

    /// Queues a report of the task's current state; returns its id (`None`: no controller).
    pub fn report(&mut self, task: &Task, effects: &mut VecDeque<Effect>) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        let report = TaskReport::of(&self.worker_id, task);
        let (report_id, send_now) = self.outbox.push(task.task_id.clone(), report);
        if let Some(report) = send_now {
            effects.push_back(Effect::ReportTaskState { report_id, report });
        }
        Some(report_id)
    }

    /// Returns the acknowledged report, if it was still waiting; the task's next one goes out.
    pub fn on_report_acked(
        &mut self,
        report_id: u64,
        effects: &mut VecDeque<Effect>,
    ) -> Option<TaskReport> {
        let (acked, next) = self.outbox.ack(report_id)?;
        if let Some((report_id, report)) = next {
            effects.push_back(Effect::ReportTaskState { report_id, report });
        }
        Some(acked)
    }

    pub fn on_report_failed(
        &mut self,
        now: u64,
        report_id: u64,
        timers: &mut Timers,
        effects: &mut VecDeque<Effect>,
    ) {
        if self.drop_failed_reports {
            self.on_report_acked(report_id, effects);
            return;
        }
        if let Some(failures) = self.outbox.fail(report_id) {
            timers.set(now + self.backoff(failures), Timer::ReportRetry(report_id));
        }
    }

    pub fn retry_report(&mut self, report_id: u64, effects: &mut VecDeque<Effect>) {
        if let Some(report) = self.outbox.retry(report_id) {
            effects.push_back(Effect::ReportTaskState { report_id, report });
        }
    }

    pub fn is_waiting(&self, report_id: u64) -> bool {
        self.outbox.contains(report_id)
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }
}
