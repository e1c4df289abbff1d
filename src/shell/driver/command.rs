//! What RPC handlers ask of the driver: `Command`s with a oneshot for the answer, sent through a
//! bounded queue (`DriverHandle`).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::core::{
    AttemptKey, Desired, KillError, Observation, SubmitError, TaskId, TaskSpec, TaskState,
};
use crate::proto;

/// Commands waiting for the driver; beyond this, RPC handlers wait (backpressure, not memory).
pub(super) const COMMAND_QUEUE_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SubmitRefusal {
    #[error(transparent)]
    Core(#[from] SubmitError),
    #[error("worker is shutting down")]
    ShuttingDown,
}

#[derive(Clone, Copy, Debug)]
pub struct Health {
    pub uptime: Duration,
    pub running_tasks: usize,
}

pub enum Command {
    Submit {
        spec: Box<TaskSpec>,
        reply: oneshot::Sender<Result<TaskState, SubmitRefusal>>,
    },
    Kill {
        task_id: TaskId,
        term_timeout_ms: i64,
        reply: oneshot::Sender<Result<(), KillError>>,
    },
    Status {
        task_id: TaskId,
        reply: oneshot::Sender<Option<proto::TaskStatus>>,
    },
    List {
        reply: oneshot::Sender<Vec<proto::TaskStatus>>,
    },
    CurrentAttempt {
        task_id: TaskId,
        reply: oneshot::Sender<Option<AttemptKey>>,
    },
    Health {
        reply: oneshot::Sender<Health>,
    },
    /// Reconcile era: apply a desired set, answer with observations (`core::reconcile`).
    Reconcile {
        desired: Vec<Desired>,
        reply: oneshot::Sender<Vec<Observation>>,
    },
    /// Reconcile era: the attempts whose logs go to the log service (key, task path, finished).
    PushTargets {
        reply: oneshot::Sender<Vec<(AttemptKey, String, bool)>>,
    },
    /// Reconcile era: every line of this finished attempt is in the log service.
    LogsShipped {
        attempt: AttemptKey,
        reply: oneshot::Sender<()>,
    },
    /// Kill every live task (a controller reset); answers how many.
    KillAll {
        reason: String,
        reply: oneshot::Sender<usize>,
    },
    /// Runs a command inside a running task (`ExecInContainer`); the answer comes from a task
    /// of its own, never holding the driver.
    Exec {
        task_id: TaskId,
        command: Vec<String>,
        timeout: Option<Duration>,
        reply: oneshot::Sender<Result<crate::shell::runtime::exec::ExecOutput, String>>,
    },
    /// The machine is going away: end every live attempt as the worker's failure and take no
    /// new work (`WorkerCore::evacuate`); answers how many were live.
    Evacuate {
        reason: String,
        reply: oneshot::Sender<usize>,
    },
    /// Kill every task (unless `kill_tasks` is false: a rolling restart keeps containers for
    /// the next run to adopt), deliver the reports (within `grace`), then stop.
    Shutdown {
        grace: Duration,
        kill_tasks: bool,
        reply: oneshot::Sender<()>,
    },
}

/// The handle RPC handlers hold.
#[derive(Clone)]
pub struct DriverHandle {
    pub(super) commands: mpsc::Sender<Command>,
}

#[derive(Debug, thiserror::Error)]
#[error("the worker's driver has stopped")]
pub struct DriverGone;

impl DriverHandle {
    /// Sends a command built around a fresh oneshot and waits for the answer.
    pub async fn ask<T>(
        &self,
        build: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(build(tx))
            .await
            .map_err(|_| DriverGone)?;
        rx.await.map_err(|_| DriverGone)
    }

    /// Reconcile era: the attempts with a task path (key, path, finished), as the log pusher,
    /// the stats writer and the periodic profiles walk them.
    pub async fn push_targets(&self) -> Result<Vec<(AttemptKey, String, bool)>, DriverGone> {
        self.ask(|reply| Command::PushTargets { reply }).await
    }
}
