//! `TaskSpec`: a `RunTaskRequest` that passed validation. Every bad-input rule of DESIGN.md for a
//! submission lives here, and each refusal names the offending field.

use std::collections::BTreeMap;

use super::ids::{AttemptKey, IdError, JobId, TaskId};
use crate::proto;

pub const PORT_COUNT_MAX: usize = 64;
pub const PORT_NAME_LEN_MAX: usize = 64;
pub const ARGV_COUNT_MAX: usize = 4096;
pub const ARGV_BYTES_MAX: usize = 1 << 20;
pub const CALLABLE_BYTES_MAX: usize = 16 << 20;
pub const ENV_COUNT_MAX: usize = 1024;
pub const ENV_BYTES_MAX: usize = 1 << 20;
pub const PATH_LEN_MAX: usize = 4096;

/// A refused submission: `field` is the request field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field,
        message: message.into(),
    }
}

fn id_error(field: &'static str) -> impl Fn(IdError) -> ValidationError {
    move |err| invalid(field, err.to_string())
}

/// What the task runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entrypoint {
    Command(Vec<String>),
    /// A cloudpickled `(fn, args, kwargs)`; passed to python, never unpickled by the worker.
    Callable(Vec<u8>),
}

/// Resource requests; zero means "no limit".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millicores: u32,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// The TPU variant asked for (`v5litepod-16`): the task needs this VM's chips, and a
    /// container gets the devices and settings TPUs need.
    pub tpu_variant: Option<String>,
}

/// The image and dependencies a task asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    pub workspace: Option<String>,
    pub pip_packages: Vec<String>,
    pub extras: Vec<String>,
    pub docker_image: Option<String>,
    pub env_vars: BTreeMap<String, String>,
}

/// A validated task submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub task_id: TaskId,
    pub job_id: JobId,
    pub task_index: i32,
    pub num_tasks: i32,
    pub attempt_id: i32,
    pub entrypoint: Entrypoint,
    pub environment: Environment,
    pub bundle_path: Option<String>,
    pub resources: Resources,
    pub timeout_ms: u64,
    /// Requested port names, in request order.
    pub port_names: Vec<String>,
    /// Which era's controller sent it, with what only that era carries.
    pub era: SpecEra,
}

/// The era of a submission and what only it carries. What the eras do differently with an
/// attempt is asked of this value (its methods), not decided by branches in the lifecycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SpecEra {
    /// The task era (2026-01): the controller pushed a `RunTaskRequest`.
    #[default]
    Push,
    /// The reconcile era (2026-06): the attempt came in a desired set.
    Reconcile(ReconcileSpec),
}

/// Where a task-era container sees its workdir.
const PUSH_CONTAINER_WORKDIR: &str = "/workdir";

impl SpecEra {
    /// The reconcile era's part, if this is that era.
    pub fn reconcile(&self) -> Option<&ReconcileSpec> {
        match self {
            SpecEra::Push => None,
            SpecEra::Reconcile(r) => Some(r),
        }
    }

    /// The controller's key of the attempt (reconcile era).
    pub fn attempt_uid(&self) -> Option<&str> {
        self.reconcile().map(|r| r.attempt_uid.as_str())
    }

    /// Where a container sees the attempt's workdir (Iris mounts it at `/app`).
    pub fn container_workdir(&self) -> &'static str {
        match self {
            SpecEra::Push => PUSH_CONTAINER_WORKDIR,
            SpecEra::Reconcile(_) => ReconcileSpec::CONTAINER_WORKDIR,
        }
    }

    /// Files the request carries for the workdir, written before anything is fetched.
    pub fn workdir_files(&self) -> &[(String, Vec<u8>)] {
        self.reconcile().map_or(&[], |r| r.workdir_files.as_slice())
    }

    /// Commands run in the task's image before its own.
    pub fn setup_commands(&self) -> &[String] {
        self.reconcile()
            .map_or(&[], |r| r.setup_commands.as_slice())
    }

    /// Whether the command and env name paths of Iris's container layout (`/app`, the caches),
    /// which a process runtime maps to the host's: Iris's client writes them so.
    pub fn uses_container_layout(&self) -> bool {
        matches!(self, SpecEra::Reconcile(_))
    }

    /// Whether a failed attempt's error quotes its last stderr line: Iris's controller shows
    /// the error alone, so the reason must be in it.
    pub fn quotes_stderr(&self) -> bool {
        matches!(self, SpecEra::Reconcile(_))
    }

    /// Whether the attempt's log is pushed to a log service (Iris's controller reads logs there
    /// in the reconcile era; the task era's pulls them from the worker).
    pub fn ships_logs(&self) -> bool {
        matches!(self, SpecEra::Reconcile(_))
    }

    fn forget_payload(&mut self) {
        if let SpecEra::Reconcile(r) = self {
            r.workdir_files.clear();
            r.workdir_file_refs.clear();
            r.setup_commands.clear();
            r.request_env.clear();
        }
    }
}

/// The parts of a 2026-06 submission the task era has no field for. The adapter of that era
/// (`shell::era2026_06`) fills it; the core uses it for the attempt's key on the wire, its env
/// and its workdir files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileSpec {
    /// The controller's key of the attempt (`DesiredAttempt.attempt_uid`).
    pub attempt_uid: String,
    /// The task id as Iris writes it (`/alice/job/0`).
    pub task_path: String,
    pub bundle_id: Option<String>,
    /// The variables Iris derives from the request alone (`IRIS_TASK_RESOURCES`, `IRIS_JOB_ENV`,
    /// `IRIS_JOB_EXTRAS`, `IRIS_JOB_PIP_PACKAGES`, `IRIS_JOB_CONSTRAINTS`, the TPU ones), made
    /// by the era's adapter, which owns the JSON encodings. They may hold secrets (the job's
    /// env as JSON): dropped with the payload.
    pub request_env: Vec<(String, String)>,
    /// Written into the workdir before the task starts (path inside it, bytes).
    pub workdir_files: Vec<(String, Vec<u8>)>,
    /// Fetched from the controller by sha256 into the workdir (path inside it, sha256).
    pub workdir_file_refs: Vec<(String, String)>,
    /// Run in order in the task's image before the command (`RuntimeEntrypoint.setup_commands`).
    pub setup_commands: Vec<String>,
}

impl ReconcileSpec {
    /// Where a container of this era sees its workdir (Iris mounts it at `/app`).
    pub const CONTAINER_WORKDIR: &'static str = "/app";
}

impl TaskSpec {
    pub fn attempt_key(&self) -> AttemptKey {
        AttemptKey {
            task_id: self.task_id.clone(),
            attempt_id: self.attempt_id,
        }
    }

    /// Drops what only running needs (the entrypoint's payload, env values, packages), so a
    /// finished attempt kept for months costs a few hundred bytes whatever it was sent.
    pub fn forget_payload(&mut self) {
        self.entrypoint = Entrypoint::Command(Vec::new());
        self.environment.env_vars.clear();
        self.environment.pip_packages.clear();
        self.environment.extras.clear();
        self.era.forget_payload();
    }

    /// The controller's key of the attempt, for a reconcile-era submission.
    pub fn attempt_uid(&self) -> Option<&str> {
        self.era.attempt_uid()
    }

    pub fn from_request(req: &proto::worker::RunTaskRequest) -> Result<TaskSpec, ValidationError> {
        let task_id = TaskId::new(req.task_id.clone()).map_err(id_error("task_id"))?;
        let job_id = JobId::new(req.job_id.clone()).map_err(id_error("job_id"))?;
        check_index(req.task_index, req.num_tasks)?;
        if req.attempt_id < 0 {
            return Err(invalid("attempt_id", "must not be negative"));
        }
        if req.timeout_seconds < 0 {
            return Err(invalid("timeout_seconds", "must not be negative"));
        }
        Ok(TaskSpec {
            task_id,
            job_id,
            task_index: req.task_index,
            num_tasks: req.num_tasks,
            attempt_id: req.attempt_id,
            entrypoint: check_entrypoint(req.entrypoint.as_ref())?,
            environment: check_environment(req.environment.as_ref())?,
            bundle_path: check_bundle_path(&req.bundle_gcs_path)?,
            resources: check_resources(req.resources.as_ref())?,
            timeout_ms: u64::try_from(req.timeout_seconds).unwrap_or(0) * 1000,
            port_names: check_ports(&req.ports)?,
            era: SpecEra::Push,
        })
    }
}

fn check_index(task_index: i32, num_tasks: i32) -> Result<(), ValidationError> {
    if task_index < 0 {
        return Err(invalid("task_index", "must not be negative"));
    }
    if num_tasks < 0 {
        return Err(invalid("num_tasks", "must not be negative"));
    }
    if num_tasks > 0 && task_index >= num_tasks {
        return Err(invalid(
            "task_index",
            format!("{task_index} is out of range for num_tasks {num_tasks}"),
        ));
    }
    Ok(())
}

fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

fn check_entrypoint(entry: Option<&proto::Entrypoint>) -> Result<Entrypoint, ValidationError> {
    use proto::entrypoint::Kind;
    match entry.and_then(|e| e.kind.as_ref()) {
        None => Err(invalid("entrypoint", "is required")),
        Some(Kind::Callable(bytes)) if bytes.is_empty() => {
            Err(invalid("entrypoint.callable", "must not be empty"))
        }
        Some(Kind::Callable(bytes)) if bytes.len() > CALLABLE_BYTES_MAX => Err(invalid(
            "entrypoint.callable",
            format!(
                "is {} bytes; the limit is {CALLABLE_BYTES_MAX}",
                bytes.len()
            ),
        )),
        Some(Kind::Callable(bytes)) => Ok(Entrypoint::Callable(bytes.clone())),
        Some(Kind::Command(cmd)) => check_argv(&cmd.argv).map(Entrypoint::Command),
    }
}

fn check_argv(argv: &[String]) -> Result<Vec<String>, ValidationError> {
    const FIELD: &str = "entrypoint.command.argv";
    if argv.is_empty() || argv[0].is_empty() {
        return Err(invalid(FIELD, "must not be empty"));
    }
    if argv.len() > ARGV_COUNT_MAX {
        return Err(invalid(
            FIELD,
            format!("has {} entries; the limit is {ARGV_COUNT_MAX}", argv.len()),
        ));
    }
    let bytes: usize = argv.iter().map(String::len).sum();
    if bytes > ARGV_BYTES_MAX {
        return Err(invalid(
            FIELD,
            format!("is {bytes} bytes; the limit is {ARGV_BYTES_MAX}"),
        ));
    }
    if argv.iter().any(|arg| has_nul(arg)) {
        return Err(invalid(FIELD, "must not contain NUL characters"));
    }
    Ok(argv.to_vec())
}

fn check_environment(
    env: Option<&proto::EnvironmentConfig>,
) -> Result<Environment, ValidationError> {
    let Some(env) = env else {
        return Ok(Environment::default());
    };
    let workspace = match env.workspace.as_str() {
        "" => None,
        ws => {
            check_text("environment.workspace", ws, PATH_LEN_MAX)?;
            // A directory inside the bundle, never a way out of the workdir.
            if ws.starts_with('/') || ws.split('/').any(|part| part == "..") {
                return Err(invalid(
                    "environment.workspace",
                    "must be a relative path inside the bundle, without ..",
                ));
            }
            Some(ws.to_string())
        }
    };
    for pkg in env.pip_packages.iter().chain(&env.extras) {
        check_text("environment.pip_packages", pkg, PATH_LEN_MAX)?;
    }
    let docker_image = match env.docker_image.as_str() {
        "" => None,
        image => {
            check_text("environment.docker_image", image, PATH_LEN_MAX)?;
            Some(image.to_string())
        }
    };
    Ok(Environment {
        workspace,
        pip_packages: env.pip_packages.clone(),
        extras: env.extras.clone(),
        docker_image,
        env_vars: check_env_vars(&env.env_vars)?,
    })
}

fn check_env_vars(
    vars: &std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, ValidationError> {
    const FIELD: &str = "environment.env_vars";
    if vars.len() > ENV_COUNT_MAX {
        return Err(invalid(
            FIELD,
            format!("has {} entries; the limit is {ENV_COUNT_MAX}", vars.len()),
        ));
    }
    let bytes: usize = vars.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > ENV_BYTES_MAX {
        return Err(invalid(
            FIELD,
            format!("is {bytes} bytes; the limit is {ENV_BYTES_MAX}"),
        ));
    }
    // Sorted first so the error names the same key whatever the map's order.
    let sorted: BTreeMap<String, String> = vars.clone().into_iter().collect();
    for (key, value) in &sorted {
        if key.is_empty() || key.contains('=') || has_nul(key) {
            return Err(invalid(
                FIELD,
                format!("key {key:?} must be non-empty without '=' or NUL"),
            ));
        }
        if has_nul(value) {
            // Never echo a value: env values may hold secrets.
            return Err(invalid(FIELD, format!("value of {key} contains NUL")));
        }
    }
    Ok(sorted)
}

fn check_text(field: &'static str, text: &str, len_max: usize) -> Result<(), ValidationError> {
    if text.len() > len_max {
        return Err(invalid(
            field,
            format!("is {} bytes; the limit is {len_max}", text.len()),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain NUL or control characters"));
    }
    Ok(())
}

fn check_bundle_path(path: &str) -> Result<Option<String>, ValidationError> {
    if path.is_empty() {
        return Ok(None);
    }
    check_text("bundle_gcs_path", path, PATH_LEN_MAX)?;
    Ok(Some(path.to_string()))
}

fn check_resources(res: Option<&proto::ResourceSpecProto>) -> Result<Resources, ValidationError> {
    let Some(res) = res else {
        return Ok(Resources::default());
    };
    let non_negative = |field, value: i64| {
        u64::try_from(value).map_err(|_| invalid(field, "must not be negative"))
    };
    Ok(Resources {
        // Iris counts `cpu` in whole cores.
        cpu_millicores: u32::try_from(non_negative("resources.cpu", res.cpu.into())?)
            .unwrap_or(u32::MAX)
            .saturating_mul(1000),
        memory_bytes: non_negative("resources.memory_bytes", res.memory_bytes)?,
        disk_bytes: non_negative("resources.disk_bytes", res.disk_bytes)?,
        tpu_variant: None,
    })
}

fn check_ports(ports: &[String]) -> Result<Vec<String>, ValidationError> {
    if ports.len() > PORT_COUNT_MAX {
        return Err(invalid(
            "ports",
            format!("has {} entries; the limit is {PORT_COUNT_MAX}", ports.len()),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in ports {
        let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if name.is_empty() || name.len() > PORT_NAME_LEN_MAX || !valid_chars {
            return Err(invalid(
                "ports",
                format!("name {name:?} must be 1..={PORT_NAME_LEN_MAX} characters of [A-Za-z0-9_]"),
            ));
        }
        // Case-insensitive: both would become the same IRIS_PORT_<NAME> variable.
        if !seen.insert(name.to_ascii_uppercase()) {
            return Err(invalid("ports", format!("name {name:?} is duplicated")));
        }
    }
    Ok(ports.to_vec())
}
