//! Effects: what the core asks the shell to do. The shell executes each one and feeds the outcome
//! back as an `Event`. Every effect renders as one line, for traces and snapshots.

use std::collections::BTreeMap;
use std::fmt;

use super::ids::AttemptKey;
use super::logs::LogSource;
use super::spec::Resources;
use super::state::TaskState;
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
    /// Relative to the worker's cache directory; mounted at `/workdir` by docker.
    pub workdir: String,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Create the attempt's workdir and write `files` (name, bytes) into it.
    PrepareWorkdir {
        attempt: AttemptKey,
        workdir: String,
        files: Vec<(String, Vec<u8>)>,
    },
    /// Fetch and extract the bundle into the workdir.
    FetchBundle {
        attempt: AttemptKey,
        bundle_path: String,
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
            Effect::RegisterWorker { .. } | Effect::ReportTaskState { .. } => None,
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::PrepareWorkdir {
                attempt,
                workdir,
                files,
            } => {
                let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
                write!(f, "prepare_workdir {attempt} {workdir} files={names:?}")
            }
            Effect::FetchBundle {
                attempt,
                bundle_path,
                ..
            } => write!(f, "fetch_bundle {attempt} {bundle_path}"),
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
