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

    /// Whether an attempt may go from this phase to `next`. The table of the pipeline: forward
    /// through its stages, to `Done` from any live phase (a kill, a failure, a lost container),
    /// `Removing` only where a container may exist, a running phase re-entered (its timeout armed,
    /// a container adopted) and a recovered attempt put back as running. `Done` is final.
    pub fn may_become(&self, next: &Phase) -> bool {
        use Phase::*;
        match (self, next) {
            (Done, _) => false,
            (_, Done) => true,
            (Waiting, Preparing | Running(_)) => true,
            (Preparing, FetchingBundle | Building) => true,
            (FetchingBundle, Building) => true,
            (Building, Starting { .. }) => true,
            (Starting { .. }, Starting { .. } | Running(_) | Removing(_)) => true,
            (Running(_), Running(_) | Removing(_)) => true,
            _ => false,
        }
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
    /// The machine is going away (a preempted VM): the attempt is the worker's failure.
    Evacuated(String),
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
    /// What the controller and the log service have been told of it.
    pub told: Told,
}

/// What the world outside has been told of an attempt. Each part only grows: nothing told is
/// ever untold, which the methods assert.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Told {
    /// Reconcile era: a RUNNING observation of the attempt was answered, so a terminal one may
    /// follow (the controller takes BUILDING -> FAILED as a sign of a broken worker).
    pub running_observed: bool,
    /// Its terminal report.
    pub terminal: Terminal,
    /// Its whole log reached the log service (reconcile era; not journalled: the pusher says
    /// so again after a restart).
    pub logs_shipped: bool,
}

/// Where an attempt's terminal report is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Terminal {
    /// Not queued (the attempt is live, or there is no controller to tell).
    #[default]
    Unsent,
    /// Queued as this report id; not acknowledged yet.
    Queued(u64),
    /// The controller has it: it acknowledged the report (now or before a restart), or, in the
    /// reconcile era, left the finished attempt out of a desired set. The id of the newest
    /// report queued, if one was this run.
    Acked(Option<u64>),
}

impl Told {
    /// A terminal report was queued or re-queued (an ack already had stays had).
    pub fn queue_terminal(&mut self, report_id: u64) {
        self.terminal = match self.terminal {
            Terminal::Acked(_) => Terminal::Acked(Some(report_id)),
            _ => Terminal::Queued(report_id),
        };
    }

    /// The controller acknowledged `report_id`; true when it is this attempt's terminal report.
    pub fn ack(&mut self, report_id: u64) -> bool {
        let mine = self.report_id() == Some(report_id);
        if mine {
            self.terminal = Terminal::Acked(Some(report_id));
        }
        mine
    }

    /// Nothing will ask about the attempt again: as good as an ack.
    pub fn settle(&mut self) {
        self.terminal = Terminal::Acked(self.report_id());
    }

    /// The id of its terminal report, if one was queued this run.
    pub fn report_id(&self) -> Option<u64> {
        match self.terminal {
            Terminal::Unsent | Terminal::Acked(None) => None,
            Terminal::Queued(id) | Terminal::Acked(Some(id)) => Some(id),
        }
    }

    pub fn is_acked(&self) -> bool {
        matches!(self.terminal, Terminal::Acked(_))
    }

    /// Its end was queued for the controller or the controller has it.
    pub fn is_reported(&self) -> bool {
        self.terminal != Terminal::Unsent
    }
}

impl Attempt {
    /// Moves the attempt to `next`; the only way its phase changes. An illegal transition is a
    /// bug in the core, and it stops here rather than run on with a state that lies.
    pub fn enter(&mut self, next: Phase) {
        assert!(
            self.phase.may_become(&next),
            "{}#{}: illegal phase transition {} -> {}",
            self.task.task_id,
            self.task.attempt_id,
            self.phase.name(),
            next.name()
        );
        self.phase = next;
    }

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
            StopReason::Evacuated(reason) => Outcome::new(TaskState::WorkerFailed, reason.clone()),
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
            (
                None,
                ExitStatus {
                    machine_fault: Some(fault),
                    code,
                    ..
                },
            ) if *code != Some(0) => (
                TaskState::WorkerFailed,
                Some(match code {
                    Some(code) => format!("{fault}: Exit code: {code}"),
                    None => fault.clone(),
                }),
            ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{config, key, spec};
    use crate::worker::WorkerCore;

    #[test]
    fn the_pipeline_goes_forward_and_done_is_final() {
        let running = || Phase::Running(Running::default());
        assert!(Phase::Preparing.may_become(&Phase::Building));
        assert!(Phase::Building.may_become(&Phase::Done));
        assert!(running().may_become(&running()));
        assert!(
            !Phase::Building.may_become(&running()),
            "a start comes first"
        );
        assert!(!Phase::Running(Running::default()).may_become(&Phase::Preparing));
        assert!(!Phase::Building.may_become(&Phase::Removing(Outcome::new(
            TaskState::Killed,
            String::new()
        ))));
        for next in [Phase::Waiting, Phase::Preparing, running(), Phase::Done] {
            assert!(!Phase::Done.may_become(&next), "done -> {}", next.name());
        }
    }

    #[test]
    #[should_panic(expected = "job/task-0#0: illegal phase transition preparing -> running")]
    fn an_illegal_transition_stops_the_core() {
        let mut core = WorkerCore::new(config(), 0);
        core.submit(0, spec("job/task-0", 0)).unwrap();
        let attempt = core.attempt_mut(&key("job/task-0", 0)).unwrap();
        assert_eq!(attempt.phase, Phase::Preparing);
        attempt.enter(Phase::Running(Running::default()));
    }
}
