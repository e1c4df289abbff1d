//! Events: outcomes the shell feeds back into the core (runtime results, controller answers).

use super::ids::AttemptKey;
use super::task::ResourceUsage;

/// How a container or process group ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, when the process exited rather than died of a signal.
    pub code: Option<i32>,
    /// The signal that ended it, when the runtime knows.
    pub signal: Option<i32>,
    /// Set only when the runtime says so (cgroup OOM event, docker `OOMKilled`); never guessed
    /// from exit code 137.
    pub oom_killed: bool,
    /// When it ended, when the runtime knows (the engine's `FinishedAt`): a container that exited
    /// while the worker was down keeps its real finish time. `None`: when the event arrives.
    pub finished_at_ms: Option<u64>,
    /// The last line the task wrote to stderr, when the runtime still holds it: a reconcile-era
    /// failure's error quotes it (`Exit code: 1. stderr: ...`), as Iris's own worker does.
    pub last_stderr: Option<String>,
    /// The runtime saw the machine at fault in a failed exit's output (a TPU that would not
    /// initialise): the attempt ends WORKER_FAILED with this reason, on the controller's
    /// preemption budget rather than the user's retries.
    pub machine_fault: Option<String>,
}

impl ExitStatus {
    pub fn code(code: i32) -> ExitStatus {
        ExitStatus {
            code: Some(code),
            ..ExitStatus::default()
        }
    }

    pub fn signal(signal: i32) -> ExitStatus {
        ExitStatus {
            signal: Some(signal),
            ..ExitStatus::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    WorkdirReady {
        attempt: AttemptKey,
    },
    WorkdirFailed {
        attempt: AttemptKey,
        error: String,
    },
    BundleReady {
        attempt: AttemptKey,
    },
    BundleFailed {
        attempt: AttemptKey,
        error: String,
    },
    BuildStarted {
        attempt: AttemptKey,
        image_tag: String,
    },
    BuildFinished {
        attempt: AttemptKey,
        image: Option<String>,
        from_cache: bool,
    },
    BuildFailed {
        attempt: AttemptKey,
        error: String,
        /// The machine's fault (a registry or the engine did not answer): WORKER_FAILED, which
        /// spends the controller's preemption budget rather than the user's retries.
        machine: bool,
    },
    ContainerStarted {
        attempt: AttemptKey,
    },
    StartFailed {
        attempt: AttemptKey,
        error: String,
        port_conflict: bool,
    },
    Exited {
        attempt: AttemptKey,
        status: ExitStatus,
    },
    Stats {
        attempt: AttemptKey,
        usage: ResourceUsage,
    },
    /// The shell's measurement of the cache dir's file system, in percent used.
    DiskUsage {
        bytes_percent: u8,
        inodes_percent: u8,
    },
    /// The runtime lost the attempt (engine died, container vanished): an infrastructure fault.
    RuntimeLost {
        attempt: AttemptKey,
        error: String,
    },
    /// The runtime confirmed the container is gone (answer to RemoveContainer).
    ContainerRemoved {
        attempt: AttemptKey,
    },
    RegisterAccepted {
        should_reset: bool,
    },
    RegisterFailed {
        error: String,
    },
    ReportAcked {
        report_id: u64,
    },
    ReportFailed {
        report_id: u64,
        error: String,
    },
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), Some(sig)) => write!(f, "code={code} signal={sig}")?,
            (Some(code), None) => write!(f, "code={code}")?,
            (None, Some(sig)) => write!(f, "signal={sig}")?,
            (None, None) => write!(f, "unknown")?,
        }
        if self.oom_killed {
            write!(f, " oom")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::WorkdirReady { attempt } => write!(f, "workdir_ready {attempt}"),
            Event::WorkdirFailed { attempt, error } => {
                write!(f, "workdir_failed {attempt} {error:?}")
            }
            Event::BundleReady { attempt } => write!(f, "bundle_ready {attempt}"),
            Event::BundleFailed { attempt, error } => {
                write!(f, "bundle_failed {attempt} {error:?}")
            }
            Event::BuildStarted { attempt, image_tag } => {
                write!(f, "build_started {attempt} {image_tag}")
            }
            Event::BuildFinished {
                attempt,
                image,
                from_cache,
            } => write!(
                f,
                "build_finished {attempt} image={image:?} from_cache={from_cache}"
            ),
            Event::BuildFailed {
                attempt,
                error,
                machine,
            } => {
                write!(f, "build_failed {attempt} {error:?}")?;
                match machine {
                    true => write!(f, " machine"),
                    false => Ok(()),
                }
            }
            Event::ContainerStarted { attempt } => write!(f, "container_started {attempt}"),
            Event::StartFailed {
                attempt,
                error,
                port_conflict,
            } => write!(
                f,
                "start_failed {attempt} {error:?} port_conflict={port_conflict}"
            ),
            Event::Exited { attempt, status } => write!(f, "exited {attempt} {status}"),
            Event::Stats { attempt, usage } => {
                write!(f, "stats {attempt} mem={}MB", usage.memory_mb)
            }
            Event::RuntimeLost { attempt, error } => write!(f, "runtime_lost {attempt} {error:?}"),
            Event::DiskUsage {
                bytes_percent,
                inodes_percent,
            } => write!(
                f,
                "disk_usage bytes={bytes_percent}% inodes={inodes_percent}%"
            ),
            Event::ContainerRemoved { attempt } => write!(f, "container_removed {attempt}"),
            Event::RegisterAccepted { should_reset } => {
                write!(f, "register_accepted should_reset={should_reset}")
            }
            Event::RegisterFailed { error } => write!(f, "register_failed {error:?}"),
            Event::ReportAcked { report_id } => write!(f, "report_acked #{report_id}"),
            Event::ReportFailed { report_id, error } => {
                write!(f, "report_failed #{report_id} {error:?}")
            }
        }
    }
}
