//! The simulated controller's database: what it dispatched, what each worker reported, and the
//! end-of-run audits. It outlives a controller crash; the world reads it for the invariants.

use std::collections::{BTreeMap, BTreeSet};

use iris_worker::core::TaskState;

use crate::plan::TaskPlan;

/// Attempts per task, the first included.
pub const ATTEMPTS_MAX: usize = 3;

#[derive(Debug)]
pub struct CtlAttempt {
    pub worker: usize,
    pub acked: bool,
    pub(crate) next_send_ms: u64,
    pub reports: Vec<TaskState>,
    pub terminal: Option<TaskState>,
}

#[derive(Debug)]
pub struct CtlTask {
    pub job_id: String,
    pub num_tasks: i32,
    pub plan: TaskPlan,
    pub attempts: BTreeMap<i32, CtlAttempt>,
    pub(crate) first_ack_ms: Option<u64>,
    pub(crate) kill_sent_ms: Option<u64>,
    pub(crate) duplicated: bool,
    pub(crate) superseded: bool,
}

impl CtlTask {
    pub fn current(&self) -> (i32, &CtlAttempt) {
        let (id, a) = self
            .attempts
            .last_key_value()
            .expect("a task has an attempt");
        (*id, a)
    }

    /// Failed, lost, or killed by something other than this controller's kill (a reset).
    pub(crate) fn wants_retry(&self) -> bool {
        let (_, current) = self.current();
        matches!(
            current.terminal,
            Some(TaskState::Failed | TaskState::WorkerFailed | TaskState::Killed)
        ) && self.attempts.len() < ATTEMPTS_MAX
            && self.kill_sent_ms.is_none()
    }

    /// Every attempt terminal, and no retry to come.
    pub fn done(&self) -> bool {
        self.attempts.values().all(|a| a.terminal.is_some()) && !self.wants_retry()
    }

    pub(crate) fn dispatch(&mut self, attempt_id: i32, worker: usize) {
        self.attempts.insert(
            attempt_id,
            CtlAttempt {
                worker,
                acked: false,
                next_send_ms: 0,
                reports: Vec::new(),
                terminal: None,
            },
        );
    }
}

/// A worker's answer to ListTasks: task id -> (attempt, state).
pub type Listing = BTreeMap<String, (i32, TaskState)>;

#[derive(Debug, Default)]
pub struct Db {
    pub tasks: BTreeMap<String, CtlTask>,
    pub submitted: BTreeSet<String>,
    /// Once set, the dispatcher lists every worker's tasks (the end-of-run agreement check).
    pub audit_from_ms: Option<u64>,
    pub audits: BTreeMap<usize, (u64, Listing)>,
    /// Workers whose next registration is answered with `should_reset`.
    pub resets: BTreeSet<usize>,
    /// Reconcile-era workers whose last Reconcile answer never arrived: states it carried (a
    /// RUNNING passed on the way to the end) may be missing from the next one.
    pub reconcile_missed: BTreeSet<usize>,
}

impl Db {
    pub fn all_done(&self) -> bool {
        self.tasks.values().all(CtlTask::done)
    }
}
