//! The command line: `serve` runs a worker; `task ...` and `health` talk to a running one;
//! `shim` is the task shim the process runtime starts (not for people).

pub mod client;
pub mod render;
pub mod worker_config;

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::core::{LogLimits, Retention};
use crate::shell::runtime::docker::{ContainerSettings, CpuLimit, DockerNetwork, parse_nofile};
use crate::shell::serve::{IrisProtocol, ServeOptions};

/// `0.1.0 (abc1234)`: the package version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("IRIS_WORKER_GIT_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "iris-worker",
    version = VERSION,
    about = "The worker agent of the Iris cluster scheduler"
)]
pub struct Cli {
    /// Options every command takes (before or after the command's name).
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: TopCommand,
}

#[derive(Subcommand, Debug)]
pub enum TopCommand {
    /// Run the worker: serve gRPC, run tasks, report to the controller.
    Serve(Box<ServeArgs>),
    /// Submit, inspect, follow and kill tasks on a running worker.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Ask a running worker whether it is healthy.
    Health,
    /// Print a shell completion script: `iris-worker completions bash > /etc/bash_completion.d/iris-worker`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Remove every iris-managed container on this machine's engine and the cache dir.
    Cleanup {
        #[arg(
            long,
            default_value = "/var/cache/iris-worker",
            env = "IRIS_WORKER_CACHE_DIR"
        )]
        cache_dir: PathBuf,
    },
    /// The task shim (started by the process runtime).
    #[command(hide = true)]
    Shim {
        #[arg(long)]
        parent_pid: i32,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The worker a client command talks to (HOST:PORT).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:10001",
        env = "IRIS_WORKER"
    )]
    pub worker: String,
    /// Machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// A file holding the bearer token callers show: `serve` requires it of callers (the
    /// controller's own addresses need not show it on the routes the controller calls); client
    /// commands send it.
    #[arg(long, global = true, env = "IRIS_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    Process,
    Docker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SetupCommands {
    Run,
    Skip,
}

/// `--python`, else the python3 on PATH as an absolute path (tasks get their own PATH).
fn task_python(given: Option<&std::path::Path>) -> String {
    let found = given.map(PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("python3"))
            .find(|p| p.is_file())
    });
    found.map_or_else(|| "python3".to_string(), |p| p.display().to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_port_range(raw: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = raw
        .split_once('-')
        .ok_or_else(|| format!("expected FIRST-LAST, got {raw:?}"))?;
    let first: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let last: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if first == 0 || first > last {
        return Err(format!(
            "{raw:?} is not a range of ports (1..=65535, first <= last)"
        ));
    }
    Ok(first..=last)
}

fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

/// A duration, or `off` for none. (An alias: clap would read a literal `Option` as "the flag
/// may be absent", not as a value that may be `off`.)
pub type DurationOrOff = Option<Duration>;

fn parse_optional_duration(raw: &str) -> Result<DurationOrOff, String> {
    match raw {
        "off" | "never" => Ok(None),
        _ => humantime::parse_duration(raw)
            .map(Some)
            .map_err(|e| format!("expected a duration (3m, 1h) or off: {e}")),
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Iris's worker configuration (the JSON its bootstrap writes); flags given here override
    /// it, and it overrides the environment.
    #[arg(long)]
    pub worker_config: Option<PathBuf>,
    /// Address to listen on. Only loopback by default: pass 0.0.0.0 to serve the network.
    #[arg(long, default_value = "127.0.0.1", env = "IRIS_WORKER_HOST")]
    pub host: String,
    #[arg(long, default_value_t = 10001, env = "IRIS_WORKER_PORT")]
    pub port: u16,
    /// Workdirs, logs and the journal of accepted attempts live here.
    #[arg(
        long,
        default_value = "/var/cache/iris-worker",
        env = "IRIS_WORKER_CACHE_DIR"
    )]
    pub cache_dir: PathBuf,
    /// Host ports handed to tasks.
    #[arg(long, default_value = "30000-40000", value_parser = parse_port_range)]
    pub port_range: RangeInclusive<u16>,
    /// The controller to register with and report to (host:port or http://host:port).
    #[arg(long, env = "IRIS_CONTROLLER_ADDRESS")]
    pub controller_address: Option<String>,
    /// Defaults to `<slice>-worker-<N>` on a TPU VM (`--slice-id`, else the slice the metadata
    /// server names), `<instance>-worker-0` on another GCE VM, else HOSTNAME-PORT.
    #[arg(long, env = "IRIS_WORKER_ID")]
    pub worker_id: Option<String>,
    /// The slice this VM belongs to (Iris's `slice_id`, as its autoscaler sets it).
    #[arg(long)]
    pub slice_id: Option<String>,
    /// The GCE metadata server (`host[:port]`); default `GCE_METADATA_HOST`, else
    /// `metadata.google.internal` on a Google VM. `off` reads none.
    #[arg(long)]
    pub gce_metadata_host: Option<String>,
    /// Tasks failed with a TPU bad-node signature (each already the machine's failure) after
    /// which the worker reports itself unhealthy until restarted; 0: never.
    #[arg(long, default_value_t = 3)]
    pub bad_node_limit: u32,
    /// The host name tasks and the controller use to reach this machine.
    #[arg(long)]
    pub advertise_host: Option<String>,
    #[arg(long, value_enum, default_value_t = RuntimeKind::Process)]
    pub runtime: RuntimeKind,
    /// Which Iris worker protocol to speak with the controller: `auto` asks it at start-up
    /// (`Register` answered: 2026-06; `RegisterWorker`: 2026-01).
    #[arg(long, value_enum, default_value_t = IrisProtocol::Auto)]
    pub iris_protocol: IrisProtocol,
    /// 2026-06: without a Reconcile for this long, kill every task and register again.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "600s")]
    pub reconcile_timeout: Duration,
    /// 2026-06: a CPU profile (py-spy) of every running task this often, kept in the log
    /// service's `iris.profile` table for Iris's dashboard, as Iris's worker does; `off` takes none.
    #[arg(long, default_value = "10m", value_parser = parse_optional_duration)]
    pub profile_interval: DurationOrOff,
    /// How long each periodic profile samples.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub profile_seconds: u32,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[arg(long, default_value_t = 10_000)]
    pub heartbeat_interval_ms: u64,
    /// Log lines kept in memory per attempt (the full log is on disk).
    #[arg(long, default_value_t = 10_000)]
    pub log_memory_lines: usize,
    /// Bytes of log kept in memory per attempt, as written to disk (plus one chunk of output
    /// at most: the newest record is always kept).
    #[arg(long, default_value_t = 4 << 20)]
    pub log_memory_bytes: usize,
    /// Disk kept per attempt for its log; older lines are rotated away past this.
    #[arg(long, default_value_t = 256 << 20)]
    pub log_disk_bytes: u64,
    #[arg(long, default_value_t = 1_000)]
    pub stats_interval_ms: u64,
    /// How long a stopping worker waits for its tasks to die and their reports to land.
    #[arg(long, default_value_t = 15_000)]
    pub shutdown_grace_ms: u64,
    /// A file holding the token the worker sends to the controller and its log service (Iris's
    /// `WorkerConfig.auth_token`); the controller's calls to the worker need none.
    #[arg(long, env = "IRIS_CONTROLLER_TOKEN_FILE")]
    pub controller_token_file: Option<PathBuf>,
    /// Without --auth-token-file, let any caller in, not only loopback ones and the controller.
    #[arg(long)]
    pub insecure: bool,
    /// Live attempts accepted at once; beyond it RunTask answers RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 1024)]
    pub max_live_tasks: usize,
    /// The dashboard, JSON API and /metrics are served on the RPC port; this also serves them on
    /// a port of their own (same host; 0 picks a free port).
    #[arg(long)]
    pub dashboard_port: Option<u16>,
    /// Serve no dashboard, JSON API or /metrics at all (RPCs only).
    #[arg(long, conflicts_with = "dashboard_port")]
    pub no_dashboard: bool,
    /// On SIGTERM, leave running containers for the next run to adopt (docker runtime).
    #[arg(long)]
    pub preserve_containers_on_stop: bool,
    /// The docker image of tasks whose environment names none (docker runtime).
    #[arg(long, default_value = "python:3.12-slim", env = "IRIS_DEFAULT_IMAGE")]
    pub default_image: String,
    /// Run the engine's init (docker-init) as each container's PID 1, so the entrypoint gets
    /// default signal actions; `--container-init=false` for images with their own init.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub container_init: bool,
    /// Containers' open-file limit, SOFT:HARD (Iris's); lowered to the engine's own hard limit
    /// when that is lower (a container cannot exceed it).
    #[arg(long, default_value = "65536:524288", value_parser = parse_nofile)]
    pub container_nofile: (u64, u64),
    /// Processes and threads a container may hold (Iris sets none; this stops a fork bomb).
    #[arg(long, default_value_t = 16_384)]
    pub container_pids_max: i64,
    /// A tmpfs of its own at each container's /tmp, as Iris's.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub container_tmpfs: bool,
    /// A task's cpu request as a `hard` quota (Iris's default) or a `soft` weight (Iris's on
    /// on-demand hosts: idle cpu is used).
    #[arg(long, value_enum, default_value_t = CpuLimit::Hard)]
    pub docker_cpu_limit: CpuLimit,
    /// Finished tasks kept (their status and logs); the oldest go first. A task goes only once
    /// the controller has acknowledged its terminal report.
    #[arg(long, default_value_t = 1_000)]
    pub retain_finished_tasks: usize,
    /// How long a finished task is kept (e.g. 24h, 90m, 7d).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub retain_finished_for: Duration,
    /// Above this share of the cache dir's file system in use (bytes or inodes, in percent),
    /// the oldest finished tasks go early.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub retain_disk_percent: u8,
    /// 2026-06 setup_commands (Iris's client sends its container recipe, `cd /app`, `uv sync`,
    /// with every job): `run` them before the command, or `skip` them. Default: run in docker
    /// (in the task's image); skip in the process runtime, as Iris's own does, which runs tasks
    /// in the worker's Python (`--python`).
    #[arg(long, value_enum)]
    pub setup_commands: Option<SetupCommands>,
    /// The Python that 2026-06 tasks of the process runtime get as IRIS_PYTHON (and run for a
    /// bare `python` command); default the python3 on the worker's PATH.
    #[arg(long, env = "IRIS_WORKER_PYTHON")]
    pub python: Option<PathBuf>,
    /// Docker: every container on the host's network (`host`, as Iris runs them: a task's
    /// ports, the controller and other hosts reach it directly), or on docker's bridge with
    /// only the task's declared ports published (`bridge`).
    #[arg(long, value_enum, default_value_t = DockerNetwork::Host)]
    pub docker_network: DockerNetwork,
    /// Images the worker built (bundles with dependency files, pip packages) are removed once
    /// no task has used them for this long (Nomad's `image_delay`); `off` keeps them. Pulled
    /// images are never removed.
    #[arg(long, default_value = "3m", value_parser = parse_optional_duration)]
    pub built_image_ttl: DurationOrOff,
    /// The caches all 2026-06 tasks share (uv's and cargo's, under the cache dir): emptied at
    /// start-up when over this and no task can be using them (a venv links into uv's cache).
    #[arg(long, default_value_t = 50 << 30)]
    pub task_cache_bytes: u64,
    /// Disk kept for bundles and files fetched from the controller's blob store, by sha256;
    /// the least recently used go first past it.
    #[arg(long, default_value_t = 10 << 30)]
    pub blob_cache_bytes: u64,
    /// Attributes the scheduler matches (`region=us-east5,pool=a`); `region` is also each
    /// task's IRIS_WORKER_REGION.
    #[arg(long, env = "IRIS_WORKER_ATTRIBUTES")]
    pub worker_attributes: Option<String>,
    /// A variable every task gets (repeatable), below the job's own env_vars (Iris's
    /// `task_env`).
    #[arg(long = "task-env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub task_env: Vec<(String, String)>,
    /// The CPU the worker advertises, in millicores (Iris's `cpu_millicores`: over-commit or
    /// reserve); default the machine's cores.
    #[arg(long)]
    pub cpu_millicores: Option<u32>,
    /// Memory kept for the system, not advertised (default Iris's: a tenth, at most 8 GiB).
    #[arg(long)]
    pub reserve_memory_bytes: Option<u64>,
    /// Whole cores kept for the system, not advertised (default Iris's: a tenth, at most one).
    #[arg(long)]
    pub reserve_cpus: Option<u32>,
    /// Set from `--worker-config`'s `auth_token`: what the worker shows the controller.
    #[arg(skip)]
    pub config_controller_token: Option<String>,
}

impl ServeArgs {
    /// The options `serve` runs with; `auth_token_file` is the global `--auth-token-file`.
    pub fn options(
        &self,
        auth_token_file: Option<&std::path::Path>,
    ) -> anyhow::Result<ServeOptions> {
        let auth_token = match auth_token_file {
            Some(path) => Some(crate::shell::auth::read_token(path)?),
            None => None,
        };
        Ok(ServeOptions {
            host: self.host.clone(),
            port: self.port,
            cache_dir: self.cache_dir.clone(),
            port_range: self.port_range.clone(),
            controller_address: self.controller_address.clone(),
            iris_protocol: self.iris_protocol,
            reconcile_timeout: self.reconcile_timeout,
            profile_every: self.profile_interval,
            profile_seconds: self.profile_seconds,
            worker_id: self.worker_id.clone(),
            slice_id: self.slice_id.clone().filter(|s| !s.is_empty()),
            gce_metadata_host: self.gce_metadata_host.clone(),
            bad_node_limit: self.bad_node_limit,
            advertise_host: self.advertise_host.clone(),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms.max(1)),
            log_memory: LogLimits {
                lines_max: self.log_memory_lines.max(1),
                bytes_max: self.log_memory_bytes.max(1),
            },
            log_disk_bytes_max: self.log_disk_bytes.max(1 << 20),
            stats_interval: Duration::from_millis(self.stats_interval_ms.max(100)),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            auth_token,
            controller_token: match &self.controller_token_file {
                Some(path) => Some(crate::shell::auth::read_token(path)?),
                None => self.config_controller_token.clone(),
            },
            insecure: self.insecure,
            live_attempts_max: self.max_live_tasks.max(1),
            dashboard: !self.no_dashboard,
            dashboard_port: self.dashboard_port,
            flavour: match self.runtime {
                RuntimeKind::Process => crate::core::RuntimeFlavour::Process,
                RuntimeKind::Docker => crate::core::RuntimeFlavour::Docker,
            },
            default_image: self.default_image.clone(),
            preserve_containers_on_stop: self.preserve_containers_on_stop,
            container: ContainerSettings {
                nofile: self.container_nofile,
                pids_max: self.container_pids_max.max(1),
                tmpfs_tmp: self.container_tmpfs,
                cpu_limit: self.docker_cpu_limit,
                init: self.container_init,
                ..ContainerSettings::default()
            },
            retention: Retention {
                finished_tasks_max: self.retain_finished_tasks,
                finished_for_ms: u64::try_from(self.retain_finished_for.as_millis())
                    .unwrap_or(u64::MAX),
                disk_used_percent_max: self.retain_disk_percent,
                inodes_used_percent_max: self.retain_disk_percent,
            },
            run_setup_commands: match (self.setup_commands, self.runtime) {
                (Some(choice), _) => choice == SetupCommands::Run,
                (None, RuntimeKind::Docker) => true,
                (None, RuntimeKind::Process) => false,
            },
            task_python: task_python(self.python.as_deref()),
            docker_network: self.docker_network,
            built_image_ttl: self.built_image_ttl,
            task_cache_bytes: self.task_cache_bytes,
            blob_cache_bytes: self.blob_cache_bytes,
            worker_attributes: self.worker_attributes.clone().filter(|a| !a.is_empty()),
            task_env: self.task_env.clone(),
            cpu_millicores: self.cpu_millicores,
            reserve_memory_bytes: self.reserve_memory_bytes,
            reserve_cpus: self.reserve_cpus,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Submit a task: `task run [OPTIONS] -- ARGV...`
    Run(RunArgs),
    /// Show one task.
    Status { task_id: String },
    /// List every task on the worker.
    List,
    /// Print a task's logs.
    Logs {
        task_id: String,
        /// Keep printing new lines until the task ends.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u64>,
        /// Only lines from this source: stdout, stderr, build or error.
        #[arg(long)]
        source: Option<String>,
    },
    /// Kill a task: SIGTERM, then SIGKILL after the term timeout.
    Kill {
        task_id: String,
        #[arg(long, default_value_t = 0)]
        term_timeout_ms: i32,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Defaults to cli-<unix seconds>.
    #[arg(long)]
    pub job_id: Option<String>,
    /// Defaults to JOB_ID/task-INDEX.
    #[arg(long)]
    pub task_id: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub task_index: i32,
    #[arg(long, default_value_t = 1)]
    pub num_tasks: i32,
    #[arg(long, default_value_t = 0)]
    pub attempt_id: i32,
    /// Request a named host port (repeatable); the task sees IRIS_PORT_<NAME>.
    #[arg(long = "port")]
    pub ports: Vec<String>,
    /// KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub timeout: i32,
    /// A zip bundle (file:// or a path) extracted into the workdir.
    #[arg(long)]
    pub bundle: Option<String>,
    /// Stream the logs and exit with the task's exit code.
    #[arg(long)]
    pub wait: bool,
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}
