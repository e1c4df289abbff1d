//! `CoreConfig` and the timing constants of kills: what a worker is told at start-up.

use std::ops::RangeInclusive;

use super::env::RuntimeFlavour;
use super::planted::PlantedBug;
use super::task::WorkerIdentity;

pub const DEFAULT_TERM_TIMEOUT_MS: u64 = 5_000;
/// Longest grace period a kill may ask for; longer requests are clamped.
pub const TERM_TIMEOUT_MAX_MS: u64 = 3_600_000;
/// SIGKILL is sent again this often until the container is gone: a signal lost to an engine
/// that did not answer must not leave the container running.
pub const KILL_REPEAT_MS: u64 = 5_000;

#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub identity: WorkerIdentity,
    /// `None`: no controller; nothing is registered or reported.
    pub controller_address: Option<String>,
    pub advertise_host: String,
    pub flavour: RuntimeFlavour,
    pub port_range: RangeInclusive<u16>,
    pub heartbeat_interval_ms: u64,
    pub default_term_timeout_ms: u64,
    pub retry_backoff_initial_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// Starts tried per attempt when the runtime reports a port conflict.
    pub start_tries_max: u32,
    /// Attempts alive at once; a submission beyond it is refused, never queued without bound.
    pub live_attempts_max: usize,
    /// Which finished tasks are forgotten, and when.
    pub retention: Retention,
    /// How the controller drives this worker, one value for the whole era.
    pub era: Era,
    /// The cache dir as a process-runtime task sees it (its `IRIS_WORKDIR` is under it; a
    /// container sees its workdir at `/workdir`).
    pub workdir_root: String,
    /// The interpreter a process-runtime task of the reconcile era runs as `IRIS_PYTHON` (and
    /// for a bare `python` command); a container's is the image's `python`.
    pub task_python: String,
    /// Containers share the host's network (docker `--network host`, as Iris runs them), so a
    /// loopback controller address reaches the controller unchanged; bridged containers get
    /// it through the docker host gateway.
    pub host_network: bool,
    /// The worker's region (its `region` attribute), a reconcile-era task's
    /// `IRIS_WORKER_REGION`.
    pub worker_region: Option<String>,
    /// The worker's default env for every task (Iris's `WorkerConfig.task_env`): after the
    /// IRIS_ set, before the job's own env_vars, which override it.
    pub task_env: Vec<(String, String)>,
    /// A deliberately broken behaviour, for the simulator only.
    #[cfg(feature = "planted")]
    pub planted: Option<PlantedBug>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            identity: WorkerIdentity::default(),
            controller_address: None,
            advertise_host: "127.0.0.1".to_string(),
            flavour: RuntimeFlavour::Process,
            port_range: 30000..=40000,
            heartbeat_interval_ms: 10_000,
            default_term_timeout_ms: DEFAULT_TERM_TIMEOUT_MS,
            retry_backoff_initial_ms: 100,
            retry_backoff_max_ms: 5_000,
            start_tries_max: 3,
            live_attempts_max: 1024,
            retention: Retention::default(),
            era: Era::Push,
            workdir_root: String::new(),
            task_python: "python3".to_string(),
            host_network: true,
            worker_region: None,
            task_env: Vec::new(),
            #[cfg(feature = "planted")]
            planted: None,
        }
    }
}

/// How a controller drives the worker: the era of Iris's worker protocol, with what only that
/// era has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// The task era (2026-01): with a controller address the worker registers, heartbeats and
    /// pushes every report until acknowledged (`controller.rs`).
    Push,
    /// The reconcile era (2026-06, `reconcile.rs`): the controller sends desired sets; nothing
    /// is pushed, and a finished attempt is settled once a desired set leaves it out.
    Reconcile {
        /// A finished attempt's log must have reached the log service (the shell's pusher says
        /// so, `WorkerCore::logs_shipped`) before retention may remove it, so an outage of the
        /// log service loses no line to retention.
        ships_logs: bool,
    },
}

impl Era {
    pub fn is_reconcile(self) -> bool {
        matches!(self, Era::Reconcile { .. })
    }

    pub fn ships_logs(self) -> bool {
        matches!(self, Era::Reconcile { ships_logs: true })
    }
}

impl CoreConfig {
    /// Whether this core plants `bug`. A constant `false` without the `planted` feature, so a
    /// real build compiles every planted branch away.
    #[cfg(feature = "planted")]
    pub fn planted(&self, bug: PlantedBug) -> bool {
        self.planted == Some(bug)
    }

    #[cfg(not(feature = "planted"))]
    pub const fn planted(&self, _bug: PlantedBug) -> bool {
        false
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Settled tasks kept at most; beyond it the oldest go.
    pub finished_tasks_max: usize,
    /// A settled task goes this long after it finished.
    pub finished_for_ms: u64,
    /// Above this share of the cache dir's file system in use (bytes or inodes), the oldest
    /// settled tasks go, a batch per measurement.
    pub disk_used_percent_max: u8,
    pub inodes_used_percent_max: u8,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            finished_tasks_max: 1_000,
            finished_for_ms: 24 * 3_600_000,
            disk_used_percent_max: 80,
            inodes_used_percent_max: 80,
        }
    }
}
