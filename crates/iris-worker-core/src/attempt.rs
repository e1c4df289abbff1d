//! One attempt's data: its public `Task`, its spec, and the `Phase` of its pipeline, each phase
//! carrying what only it has (a stop in progress, a pending outcome), as quinn-proto's
//! `State::Closed(state::Closed)` does. No field is "set with the phase" and read back later.

use super::event::ExitStatus;
use super::spec::TaskSpec;
use super::state::TaskState;
use super::task::Task;

/// Where an attempt is in its pipeline. The user-visible `TaskState` is derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Superseding an attempt that has not stopped yet.
    Waiting,
    Preparing,
    FetchingBundle,
    Building,
    /// StartContainer sent, no answer yet. A stop asked meanwhile waits for the answer: the
    /// container may be coming up, and only then can it be signalled.
    Starting {
        stop: Option<StopRequest>,
    },
    Running(Running),
    /// The runtime lost track of a container that may still run: the outcome is held back until
    /// the container's removal is confirmed, so no terminal report precedes a live container and
    /// its ports stay held until then.
    Removing(Outcome),
    Done,
}

impl Phase {
    /// Whether a container of this attempt may exist (so a second one must not).
    pub fn may_have_container(&self) -> bool {
        matches!(
            self,
            Phase::Starting { .. } | Phase::Running(_) | Phase::Removing(_)
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Preparing => "preparing",
            Phase::FetchingBundle => "fetching_bundle",
            Phase::Building => "building",
            Phase::Starting { .. } => "starting",
            Phase::Running(_) => "running",
            Phase::Removing(_) => "removing",
            Phase::Done => "done",
        }
    }
}

/// A running container, and the stop in progress if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Running {
    /// When the task's own timeout fires (`None`: no timeout).
    pub timeout_at: Option<u64>,
    pub stop: Option<Stopping>,
}

/// A stop asked for before the container could be signalled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StopRequest {
    pub reason: StopReason,
    pub term_timeout_ms: u64,
}

/// SIGTERM has been sent; SIGKILL follows at `escalate_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stopping {
    pub reason: StopReason,
    pub escalate_at: u64,
    /// SIGKILL has been sent; it repeats on its own, so later kill requests change nothing.
    pub sigkilled: bool,
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
    pub start_try: u32,
    pub image: Option<String>,
    /// A StartContainer was answered with ContainerStarted: there is something to remove.
    pub container_started: bool,
    /// The id of the terminal report, once queued.
    pub terminal_report: Option<u64>,
    /// The controller acknowledged the terminal report (now or before a restart), or, in the
    /// reconcile era, left the finished attempt out of a desired set.
    pub report_acked: bool,
    /// Reconcile era: a RUNNING observation of the attempt was answered, so a terminal one may
    /// follow (the controller takes BUILDING -> FAILED as a sign of a broken worker).
    pub running_observed: bool,
    /// Its whole log reached the log service (reconcile era; not journalled: the pusher says
    /// so again after a restart).
    pub logs_shipped: bool,
}

impl Attempt {
    /// The stop in progress or asked for, if any.
    pub fn stop_reason(&self) -> Option<&StopReason> {
        match &self.phase {
            Phase::Starting { stop: Some(s) } => Some(&s.reason),
            Phase::Running(Running { stop: Some(s), .. }) => Some(&s.reason),
            _ => None,
        }
    }
}

/// The terminal outcome of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub state: TaskState,
    pub error: Option<String>,
    pub exit: ExitStatus,
}

impl Outcome {
    pub fn new(state: TaskState, error: impl Into<Option<String>>) -> Outcome {
        Outcome {
            state,
            error: error.into(),
            exit: ExitStatus::default(),
        }
    }

    /// How a stop ends an attempt, whatever its container did meanwhile.
    pub fn of_stop(reason: &StopReason) -> Outcome {
        match reason {
            StopReason::Kill => Outcome::new(TaskState::Killed, None),
            StopReason::Timeout => Outcome::new(TaskState::Failed, "Timeout exceeded".to_string()),
            StopReason::Superseded(next) => {
                Outcome::new(TaskState::Killed, format!("Superseded by attempt {next}"))
            }
            StopReason::Reset(reason) => Outcome::new(TaskState::Killed, reason.clone()),
        }
    }

    /// A failed exit's error with the task's last stderr line appended, as the reconcile era
    /// (Iris 2026-06) words it: `Exit code: 1. stderr: No such file`.
    pub fn quote_stderr(&mut self) {
        let (Some(error), Some(line)) = (&mut self.error, &self.exit.last_stderr) else {
            return;
        };
        if error.starts_with("Exit code: ") && !line.trim().is_empty() {
            error.push_str(". stderr: ");
            error.push_str(line.trim_end());
        }
    }

    /// How an exit ends an attempt: a stop decides the state, else the exit does.
    pub fn of_exit(stop: Option<&StopReason>, exit: ExitStatus) -> Outcome {
        let (state, error) = match (stop, &exit) {
            (Some(reason), _) => {
                let stopped = Outcome::of_stop(reason);
                (stopped.state, stopped.error)
            }
            (None, e) if e.oom_killed => (
                TaskState::Failed,
                Some("Out of memory: the task was killed by the OOM killer".to_string()),
            ),
            (
                None,
                ExitStatus {
                    signal: Some(sig), ..
                },
            ) => (TaskState::Failed, Some(format!("Killed by signal {sig}"))),
            (None, ExitStatus { code: Some(0), .. }) => (TaskState::Succeeded, None),
            (
                None,
                ExitStatus {
                    code: Some(code), ..
                },
            ) => (TaskState::Failed, Some(format!("Exit code: {code}"))),
            (None, ExitStatus { code: None, .. }) => (
                TaskState::Failed,
                Some("Exited without a code or signal".to_string()),
            ),
        };
        Outcome { state, error, exit }
    }
}
