//! Effects: what the core asks the shell to do. The shell executes each one and feeds the outcome
//! back as an `Event`. Every effect renders as one line, for traces and snapshots.

use std::collections::BTreeMap;
use std::fmt;

use super::event::ExitStatus;
use super::ids::{AttemptKey, TaskId};
use super::logs::LogSource;
use super::spec::{Resources, TaskSpec};
use super::state::TaskState;
use super::task::Task;
use crate::proto;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

impl Signal {
    pub fn number(self) -> i32 {
        match self {
            Signal::Term => 15,
            Signal::Kill => 9,
        }
    }
}

/// What the shell needs to build or resolve the image of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSpec {
    pub job_id: String,
    pub workdir: String,
    pub base_image: Option<String>,
    pub workspace: Option<String>,
    pub has_bundle: bool,
    pub pip_packages: Vec<String>,
    pub extras: Vec<String>,
    /// Shell lines run in order in the attempt's image and workdir once the image is resolved
    /// (before the command starts); their output is the build log, a failing one fails the
    /// attempt.
    pub setup_commands: Vec<String>,
    /// The task's environment, which setup commands see too (empty without setup commands).
    pub env: Vec<(String, String)>,
    /// Where a container sees the workdir (as in `ContainerSpec`).
    pub container_workdir: String,
    /// The task's limits; a setup container gets its cpu and at least its memory.
    pub resources: Resources,
}

/// Where an attempt's bundle and fetched files come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleSource {
    /// A zip at a location the worker opens itself (`file://`, a local path).
    Path(String),
    /// Content the controller serves by sha256: an optional zip extracted into the workdir and
    /// files written into it (path inside the workdir, sha256).
    Content {
        bundle: Option<String>,
        files: Vec<(String, String)>,
    },
}

impl fmt::Display for BundleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleSource::Path(path) => write!(f, "{path}"),
            BundleSource::Content { bundle, files } => {
                let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
                write!(f, "bundle={bundle:?} files={names:?}")
            }
        }
    }
}

/// Everything needed to start the container (or process group) of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    pub attempt: AttemptKey,
    /// The image the build resolved; `None` lets the runtime use its default.
    pub image: Option<String>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ports: BTreeMap<String, u16>,
    pub resources: Resources,
    /// Relative to the worker's cache directory; mounted at `container_workdir` by docker.
    pub workdir: String,
    /// Where a container sees the workdir (and starts in).
    pub container_workdir: String,
    /// Setup commands ran in the workdir: the command starts with the workdir's `.venv`
    /// activated when there is one (as Iris does after `uv sync`).
    pub activate_venv: bool,
    pub labels: BTreeMap<String, String>,
    /// 1 for the first start, then one more per port-conflict retry.
    pub start_try: u32,
}

/// A state report for the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskReport {
    pub worker_id: String,
    pub task_id: String,
    pub job_id: String,
    pub task_index: i32,
    pub attempt_id: i32,
    pub state: TaskState,
    pub exit_code: i32,
    pub error: String,
    pub finished_at_ms: i64,
}

impl TaskReport {
    /// The report of a task's current state.
    pub fn of(worker_id: &str, task: &Task) -> TaskReport {
        TaskReport {
            worker_id: worker_id.to_string(),
            task_id: task.task_id.to_string(),
            job_id: task.job_id.to_string(),
            task_index: task.task_index,
            attempt_id: task.attempt_id,
            state: task.state,
            exit_code: task.effective_exit_code(),
            error: task.error.clone().unwrap_or_default(),
            finished_at_ms: task.finished_at_ms.map_or(0, |t| t as i64),
        }
    }

    pub fn to_proto(&self) -> proto::controller::ReportTaskStateRequest {
        proto::controller::ReportTaskStateRequest {
            worker_id: self.worker_id.clone(),
            task_id: self.task_id.clone(),
            job_id: self.job_id.clone(),
            task_index: self.task_index,
            state: self.state.to_proto() as i32,
            exit_code: self.exit_code,
            error: self.error.clone(),
            finished_at_ms: self.finished_at_ms,
            attempt_id: self.attempt_id,
        }
    }
}

/// What the worker's journal must hold before the core's next effects run: the shell appends
/// it (one `write`, no user-space buffer) when it executes the effect, in effect order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalEntry {
    /// An attempt was accepted; comes before any other effect of the attempt.
    Accepted {
        spec: Box<TaskSpec>,
        submitted_at_ms: u64,
        ports: BTreeMap<String, u16>,
    },
    /// The attempt entered BUILDING at `started_at_ms`; comes before its first start, so an
    /// attempt adopted after a restart keeps its start time (and its timeout counts from it).
    Started {
        attempt: AttemptKey,
        started_at_ms: u64,
    },
    /// A port-conflict retry gave the attempt fresh ports; comes before the start that uses
    /// them, so an attempt adopted after a restart holds the ports its container has.
    Ports {
        attempt: AttemptKey,
        ports: BTreeMap<String, u16>,
    },
    /// The attempt ended; comes before its terminal report and the removal of its container.
    Finished {
        attempt: AttemptKey,
        state: TaskState,
        exit: ExitStatus,
        error: Option<String>,
        started_at_ms: Option<u64>,
        finished_at_ms: u64,
    },
    /// The controller acknowledged the attempt's terminal report.
    ReportAcked { attempt: AttemptKey },
    /// Retention removed the attempt's task: a restart must not bring it back, and the
    /// tombstone keeps how it ended, so a late request for it is refused (`removed.rs`).
    Removed {
        attempt: AttemptKey,
        attempt_uid: Option<String>,
        state: TaskState,
        finished_at_ms: u64,
        removed_at_ms: u64,
    },
    /// The removed attempt is past its time in the ledger: its tombstone may go.
    Forgotten { attempt: AttemptKey },
}

impl JournalEntry {
    pub fn attempt(&self) -> AttemptKey {
        match self {
            JournalEntry::Accepted { spec, .. } => spec.attempt_key(),
            JournalEntry::Started { attempt, .. }
            | JournalEntry::Ports { attempt, .. }
            | JournalEntry::Finished { attempt, .. }
            | JournalEntry::ReportAcked { attempt }
            | JournalEntry::Removed { attempt, .. }
            | JournalEntry::Forgotten { attempt } => attempt.clone(),
        }
    }
}

impl fmt::Display for JournalEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalEntry::Accepted {
                spec,
                submitted_at_ms,
                ports,
            } => write!(
                f,
                "accepted {} at={submitted_at_ms} ports={ports:?}",
                spec.attempt_key()
            ),
            JournalEntry::Started {
                attempt,
                started_at_ms,
            } => write!(f, "started {attempt} at={started_at_ms}"),
            JournalEntry::Ports { attempt, ports } => write!(f, "ports {attempt} {ports:?}"),
            JournalEntry::Finished {
                attempt,
                state,
                finished_at_ms,
                ..
            } => write!(f, "finished {attempt} {state} at={finished_at_ms}"),
            JournalEntry::ReportAcked { attempt } => write!(f, "report_acked {attempt}"),
            JournalEntry::Removed { attempt, state, .. } => write!(f, "removed {attempt} {state}"),
            JournalEntry::Forgotten { attempt } => write!(f, "forgotten {attempt}"),
        }
    }
}

/// Why a task was removed; the label of `iris_worker_tasks_removed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RemovalReason {
    Count,
    Age,
    Disk,
}

impl RemovalReason {
    pub fn name(self) -> &'static str {
        match self {
            RemovalReason::Count => "count",
            RemovalReason::Age => "age",
            RemovalReason::Disk => "disk",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Append to the journal before executing the effects that follow.
    Journal(JournalEntry),
    /// Create the attempt's workdir and write `files` (name, bytes) into it.
    PrepareWorkdir {
        attempt: AttemptKey,
        workdir: String,
        files: Vec<(String, Vec<u8>)>,
    },
    /// Fetch the bundle (and files) into the workdir.
    FetchBundle {
        attempt: AttemptKey,
        source: BundleSource,
        workdir: String,
    },
    /// Build or resolve the image the attempt runs in.
    BuildImage {
        attempt: AttemptKey,
        spec: BuildSpec,
    },
    /// Stop whatever set-up work (workdir, bundle, build) is running for the attempt.
    CancelBuild {
        attempt: AttemptKey,
    },
    StartContainer(Box<ContainerSpec>),
    SignalContainer {
        attempt: AttemptKey,
        signal: Signal,
    },
    /// Remove the attempt's container once it has exited (logs are on disk by then).
    RemoveContainer {
        attempt: AttemptKey,
    },
    /// The attempt is over: drop its runtime-side resources (stats, limits). Logs and the
    /// workdir stay until the task is removed.
    ReleaseResources {
        attempt: AttemptKey,
    },
    /// A line the worker itself writes into the attempt's log (source `error` or `build`).
    WriteLog {
        attempt: AttemptKey,
        source: LogSource,
        data: String,
    },
    /// Retention forgot a settled task: delete its attempts' log files and whatever is left of
    /// their workdirs. It answers NOT_FOUND from now on.
    RemoveTask {
        task_id: TaskId,
        attempts: Vec<AttemptKey>,
        reason: RemovalReason,
    },
    /// Register with the controller, or heartbeat: the same call.
    RegisterWorker {
        running_task_ids: Vec<String>,
    },
    ReportTaskState {
        report_id: u64,
        report: TaskReport,
    },
}

impl Effect {
    /// The attempt this effect concerns, if any.
    pub fn attempt(&self) -> Option<&AttemptKey> {
        match self {
            Effect::PrepareWorkdir { attempt, .. }
            | Effect::FetchBundle { attempt, .. }
            | Effect::BuildImage { attempt, .. }
            | Effect::CancelBuild { attempt }
            | Effect::SignalContainer { attempt, .. }
            | Effect::RemoveContainer { attempt }
            | Effect::ReleaseResources { attempt }
            | Effect::WriteLog { attempt, .. } => Some(attempt),
            Effect::StartContainer(spec) => Some(&spec.attempt),
            Effect::Journal(_) | Effect::RemoveTask { .. } => None,
            Effect::RegisterWorker { .. } | Effect::ReportTaskState { .. } => None,
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Journal(entry) => write!(f, "journal {entry}"),
            Effect::PrepareWorkdir {
                attempt,
                workdir,
                files,
            } => {
                let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
                write!(f, "prepare_workdir {attempt} {workdir} files={names:?}")
            }
            Effect::FetchBundle {
                attempt, source, ..
            } => write!(f, "fetch_bundle {attempt} {source}"),
            Effect::BuildImage { attempt, spec } => write!(
                f,
                "build_image {attempt} base={:?} workspace={:?}",
                spec.base_image, spec.workspace
            ),
            Effect::CancelBuild { attempt } => write!(f, "cancel_build {attempt}"),
            Effect::StartContainer(spec) => write!(
                f,
                "start_container {} try={} image={:?} argv={:?} ports={:?}",
                spec.attempt, spec.start_try, spec.image, spec.argv, spec.ports
            ),
            Effect::SignalContainer { attempt, signal } => {
                write!(f, "signal_container {attempt} {signal:?}")
            }
            Effect::RemoveContainer { attempt } => write!(f, "remove_container {attempt}"),
            Effect::ReleaseResources { attempt } => write!(f, "release_resources {attempt}"),
            Effect::WriteLog {
                attempt,
                source,
                data,
            } => write!(f, "write_log {attempt} {source} {data:?}"),
            Effect::RemoveTask {
                task_id,
                attempts,
                reason,
            } => {
                let ids: Vec<i32> = attempts.iter().map(|a| a.attempt_id).collect();
                write!(
                    f,
                    "remove_task {task_id} attempts={ids:?} reason={}",
                    reason.name()
                )
            }
            Effect::RegisterWorker { running_task_ids } => {
                write!(f, "register_worker running={running_task_ids:?}")
            }
            Effect::ReportTaskState { report_id, report } => write!(
                f,
                "report_task_state #{report_id} {}#{} {} exit={} error={:?}",
                report.task_id, report.attempt_id, report.state, report.exit_code, report.error
            ),
        }
    }
}
