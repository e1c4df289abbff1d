//! The docker runtime (bollard): each attempt is a container named after the worker and the
//! attempt, labelled per DESIGN.md, with the attempt's workdir bind-mounted at `/workdir`, a host
//! port binding per allocated port, cpu, memory and pids limits, no new privileges and no
//! capabilities, and the engine's init as PID 1 (unless turned off). Logs follow the engine's stream with the engine's timestamps; the exit comes from
//! the wait API and the OOM flag from inspect; stats from the stats stream.
//!
//! After a restart, `survey` finds this worker's containers: running ones whose attempt the
//! journal knows are adopted (`resume`: logs, wait and stats pick up where they were), the rest
//! are removed. A task whose bundle holds dependency files (or that asks for pip packages) gets
//! an image built on its base image with them installed by uv (extras and pip packages honoured,
//! as the Iris worker does for every bundle), tagged by the job and a hash of everything that went
//! in, and reused while that does not change. The base image must have `uv` on its PATH then.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, ContainerStatsResponse, HostConfig, PortBinding};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder, WaitContainerOptionsBuilder,
};
use tokio::task::AbortHandle;
use tokio_stream::StreamExt;

use crate::core::{
    AttemptKey, BuildSpec, ContainerSpec, ExitStatus, LogSource, ResourceUsage, Signal,
};
use crate::shell::lines::LineSplitter;
use crate::shell::output_mark::{OutputMark, ResumeFilter};
use crate::shell::runtime::{AttemptSink, BuiltImage, Runtime, RuntimeError, wall_ms};
use crate::shell::workdir;

/// Processes a container may run.
pub const PIDS_MAX: i64 = 4096;
/// How long to wait for a late OOM flag before reporting a SIGKILL.
const OOM_RECHECK: Duration = Duration::from_millis(500);
/// How long the log stream may drain after the container exits.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct DockerRuntimeConfig {
    pub cache_dir: PathBuf,
    pub default_image: String,
    pub worker_id: String,
    /// The engine's init as PID 1: the kernel gives PID 1 no default signal actions, so without
    /// it an entrypoint ignores SIGTERM and survives its own SIGKILL.
    pub init: bool,
}

pub struct DockerRuntime {
    docker: Docker,
    config: DockerRuntimeConfig,
    samplers: Arc<Mutex<BTreeMap<AttemptKey, AbortHandle>>>,
}

fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `text` with every character but ASCII letters, digits, `-` and `.` replaced, cut to `max`.
fn sanitized(text: &str, replacement: char, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                replacement
            }
        })
        .take(max)
        .collect()
}

/// A valid, stable container name for an attempt of this worker.
pub fn container_name(worker_id: &str, attempt: &AttemptKey) -> String {
    let readable = sanitized(attempt.task_id.as_str(), '_', 80);
    let hash = fnv(&format!("{worker_id}\0{}", attempt.task_id));
    format!("iris-{readable}-{hash:08x}-a{}", attempt.attempt_id)
}

/// An engine error as the runtime reports it: an answer from the engine is about the task; no
/// answer at all (connection refused, timed out) is about the machine.
fn engine_error(context: &str, e: &DockerError) -> RuntimeError {
    let text = format!("{context}: {}", message(e));
    match e {
        DockerError::DockerResponseServerError { .. } => RuntimeError::new(text),
        _ => RuntimeError::infrastructure(text),
    }
}

fn message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_port_conflict(text: &str) -> bool {
    text.contains("port is already allocated") || text.contains("address already in use")
}

/// `2026-11-26T12:00:00.123456789Z rest` -> (ms, rest); lines without a stamp keep ours.
fn split_timestamp(line: &[u8]) -> (i64, &[u8]) {
    let Some(space) = memchr::memchr(b' ', line) else {
        return (wall_ms(), line);
    };
    match parse_rfc3339_ms(&line[..space]) {
        Some(ms) => (ms, &line[space + 1..]),
        None => (wall_ms(), line),
    }
}

fn parse_rfc3339_ms(stamp: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(stamp).ok()?;
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let millis: i64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + millis)
}

fn usage_of(stats: &ContainerStatsResponse) -> ResourceUsage {
    let memory = stats.memory_stats.as_ref();
    let memory_mb = memory.and_then(|m| m.usage).unwrap_or(0) as i64 / (1024 * 1024);
    let peak_mb = memory.and_then(|m| m.max_usage).unwrap_or(0) as i64 / (1024 * 1024);
    let total = |c: &Option<bollard::models::ContainerCpuStats>| {
        let c = c.as_ref();
        (
            c.and_then(|c| c.cpu_usage.as_ref())
                .and_then(|u| u.total_usage)
                .unwrap_or(0),
            c.and_then(|c| c.system_cpu_usage).unwrap_or(0),
            c.and_then(|c| c.online_cpus).unwrap_or(1),
        )
    };
    let (cpu, system, cpus) = total(&stats.cpu_stats);
    let (pre_cpu, pre_system, _) = total(&stats.precpu_stats);
    let system_delta = system.saturating_sub(pre_system);
    let millicores = if system_delta > 0 {
        (cpu.saturating_sub(pre_cpu) as f64 / system_delta as f64 * f64::from(cpus) * 1000.0) as i32
    } else {
        0
    };
    ResourceUsage {
        memory_mb,
        memory_peak_mb: peak_mb.max(memory_mb),
        disk_mb: 0,
        cpu_millicores: millicores,
        cpu_percent: millicores / 10,
        process_count: stats
            .pids_stats
            .as_ref()
            .and_then(|p| p.current)
            .unwrap_or(0) as i32,
    }
}

impl DockerRuntime {
    /// Connects to `DOCKER_HOST` or the default socket (lazily: nothing is sent yet).
    pub fn connect(config: DockerRuntimeConfig) -> Result<DockerRuntime, RuntimeError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| RuntimeError::new(format!("docker engine: {e}")))?;
        Ok(DockerRuntime {
            docker,
            config,
            samplers: Arc::default(),
        })
    }

    fn name(&self, attempt: &AttemptKey) -> String {
        container_name(&self.config.worker_id, attempt)
    }

    /// This worker's containers: the attempts `keep` wants whose containers ran (still running,
    /// or exited while the worker was down: their exit and output are still in the engine and
    /// are read as an adopted attempt's would be), and how many others (never started, dying,
    /// not wanted, or not of a valid attempt) were removed.
    pub async fn survey(
        &self,
        keep: &dyn Fn(&AttemptKey) -> bool,
    ) -> Result<(Vec<AttemptKey>, usize), RuntimeError> {
        let filters: HashMap<&str, Vec<String>> = [(
            "label",
            vec![
                "iris.managed=true".to_string(),
                format!("iris.worker_id={}", self.config.worker_id),
            ],
        )]
        .into();
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| RuntimeError::new(format!("listing containers: {}", message(&e))))?;
        let mut running = Vec::new();
        let mut removed = 0;
        for container in found {
            let labels = container.labels.unwrap_or_default();
            let attempt = labels.get("iris.task_id").and_then(|t| {
                Some(AttemptKey {
                    task_id: crate::core::TaskId::new(t.clone()).ok()?,
                    attempt_id: labels.get("iris.attempt_id")?.parse().ok()?,
                })
            });
            use bollard::models::ContainerSummaryStateEnum as State;
            let ran = matches!(container.state, Some(State::RUNNING | State::EXITED));
            match attempt {
                Some(key) if ran && keep(&key) => running.push(key),
                _ => {
                    if let Some(id) = container.id {
                        self.force_remove(&id).await;
                        removed += 1;
                    }
                }
            }
        }
        Ok((running, removed))
    }

    fn container_body(&self, spec: &ContainerSpec) -> ContainerCreateBody {
        let port_bindings = spec
            .ports
            .values()
            .map(|port| {
                let binding = PortBinding {
                    host_ip: Some("0.0.0.0".to_string()),
                    host_port: Some(port.to_string()),
                };
                (format!("{port}/tcp"), Some(vec![binding]))
            })
            .collect();
        let workdir = self.config.cache_dir.join(&spec.workdir);
        let memory = i64::try_from(spec.resources.memory_bytes).unwrap_or(i64::MAX);
        let host_config = HostConfig {
            binds: Some(vec![format!("{}:/workdir", workdir.display())]),
            port_bindings: Some(port_bindings),
            memory: (memory > 0).then_some(memory),
            memory_swap: (memory > 0).then_some(memory),
            nano_cpus: (spec.resources.cpu_millicores > 0)
                .then(|| i64::from(spec.resources.cpu_millicores) * 1_000_000),
            pids_limit: Some(PIDS_MAX),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            cap_drop: Some(vec!["ALL".to_string()]),
            extra_hosts: Some(vec!["host.docker.internal:host-gateway".to_string()]),
            init: Some(self.config.init),
            ..HostConfig::default()
        };
        ContainerCreateBody {
            image: Some(
                spec.image
                    .clone()
                    .unwrap_or_else(|| self.config.default_image.clone()),
            ),
            cmd: Some(spec.argv.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            working_dir: Some("/workdir".to_string()),
            exposed_ports: Some(spec.ports.values().map(|p| format!("{p}/tcp")).collect()),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        }
    }

    async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<(), RuntimeError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Ok(_) => Ok(()),
            // A container of the same name is left from an earlier try: replace it.
            Err(e) if status_code(&e) == Some(409) => {
                self.force_remove(name).await;
                self.docker
                    .create_container(Some(options), body)
                    .await
                    .map(|_| ())
                    .map_err(|e| engine_error("create", &e))
            }
            Err(e) => Err(engine_error("create", &e)),
        }
    }

    async fn force_remove(&self, name: &str) {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self.docker.remove_container(name, Some(options)).await;
    }

    /// Builds (or reuses) the image of a bundle: the base image plus the bundle's dependency
    /// files, installed. The tag names the job and hashes the base and those files.
    async fn build_from_bundle(
        &self,
        spec: &BuildSpec,
        base: &str,
        sink: AttemptSink,
    ) -> Result<BuiltImage, RuntimeError> {
        let mut dir = self.config.cache_dir.join(&spec.workdir);
        if let Some(ws) = &spec.workspace {
            dir.push(ws);
        }
        let deps = tokio::task::spawn_blocking(move || dependency_files(&dir))
            .await
            .map_err(|e| RuntimeError::new(e.to_string()))?;
        let recipe = Recipe {
            base,
            deps: &deps,
            pip_packages: &spec.pip_packages,
            extras: &spec.extras,
        };
        if recipe.is_plain() {
            sink.log(LogSource::Build, &format!("using image {base}"));
            return Ok(BuiltImage {
                image: Some(base.to_string()),
                from_cache: true,
            });
        }
        let tag = image_tag(&spec.job_id, &recipe);
        if self.docker.inspect_image(&tag).await.is_ok() {
            sink.log(LogSource::Build, &format!("reusing image {tag}"));
            return Ok(BuiltImage {
                image: Some(tag),
                from_cache: true,
            });
        }
        sink.log(LogSource::Build, &format!("building image {tag} on {base}"));
        let context = build_context(&recipe).map_err(RuntimeError::from)?;
        let options = BuildImageOptionsBuilder::default()
            .t(&tag)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        let mut splitter = LineSplitter::default();
        let mut emit = |lines: &[&[u8]]| sink.log_lines(LogSource::Build, lines);
        while let Some(item) = stream.next().await {
            let info =
                item.map_err(|e| RuntimeError::new(format!("image build: {}", message(&e))))?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::new(format!("image build: {detail}")));
            }
            if let Some(text) = info.stream {
                splitter.feed(text.as_bytes(), &mut emit);
            }
        }
        splitter.finish(&mut emit);
        Ok(BuiltImage {
            image: Some(tag),
            from_cache: false,
        })
    }

    /// Logs, stats and the exit of a running container, each followed by its own task.
    fn monitor(
        &self,
        attempt: &AttemptKey,
        name: String,
        sink: AttemptSink,
        after: Option<OutputMark>,
    ) {
        let logs = tokio::spawn(follow_logs(
            self.docker.clone(),
            name.clone(),
            sink.clone(),
            after,
        ));
        let stats = self.spawn_stats(name.clone(), sink.clone());
        self.samplers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(attempt.clone(), stats);
        tokio::spawn(watch_exit(self.docker.clone(), name, logs, sink));
    }

    fn spawn_stats(&self, name: String, sink: AttemptSink) -> AbortHandle {
        let docker = self.docker.clone();
        tokio::spawn(async move {
            let options = StatsOptionsBuilder::default().stream(true).build();
            let mut stream = docker.stats(&name, Some(options));
            while let Some(Ok(stats)) = stream.next().await {
                sink.stats(usage_of(&stats));
            }
        })
        .abort_handle()
    }
}

/// Files of a bundle that decide its image; the rest of the bundle is mounted, not baked in.
pub const DEPENDENCY_FILES: [&str; 3] = ["requirements.txt", "pyproject.toml", "uv.lock"];

fn dependency_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    DEPENDENCY_FILES
        .iter()
        .filter_map(|name| Some((name.to_string(), std::fs::read(dir.join(name)).ok()?)))
        .collect()
}

/// What an image is built from: the base image, the bundle's dependency files, and what the task
/// asks to install.
pub struct Recipe<'a> {
    pub base: &'a str,
    pub deps: &'a [(String, Vec<u8>)],
    pub pip_packages: &'a [String],
    pub extras: &'a [String],
}

impl Recipe<'_> {
    /// Nothing to install: the base image serves as it is.
    pub fn is_plain(&self) -> bool {
        self.deps.is_empty() && self.pip_packages.is_empty()
    }

    fn has(&self, name: &str) -> bool {
        self.deps.iter().any(|(n, _)| n == name)
    }

    /// The generated Dockerfile. A pyproject gets a project venv (`uv sync`, frozen when there is
    /// a lock, one `--extra` per extra) that the task's PATH then starts with; requirements and
    /// pip packages go into that venv, or the system's when there is none.
    pub fn dockerfile(&self) -> String {
        let mut out = format!("FROM {}\nWORKDIR /app\n", self.base);
        for (name, _) in self.deps {
            out.push_str(&format!("COPY {name} /app/{name}\n"));
        }
        let venv = self.has("pyproject.toml");
        if venv {
            let frozen = if self.has("uv.lock") { " --frozen" } else { "" };
            let extras: String = self
                .extras
                .iter()
                .map(|e| format!(" --extra {}", quoted(e)))
                .collect();
            out.push_str(&format!(
                "RUN uv sync{frozen} --no-install-project{extras}\n"
            ));
            out.push_str("ENV VIRTUAL_ENV=/app/.venv PATH=/app/.venv/bin:$PATH\n");
        }
        let target = if venv { "" } else { " --system" };
        if self.has("requirements.txt") {
            out.push_str(&format!(
                "RUN uv pip install{target} -r /app/requirements.txt\n"
            ));
        }
        if !self.pip_packages.is_empty() {
            let packages: Vec<String> = self.pip_packages.iter().map(|p| quoted(p)).collect();
            out.push_str(&format!(
                "RUN uv pip install{target} {}\n",
                packages.join(" ")
            ));
        }
        out.push_str("LABEL iris.managed_image=true\n");
        out
    }
}

/// A shell word that reaches the command unchanged, whatever the task sent.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// `iris-<job>:<hash>`: a valid tag whatever characters the job id has.
pub fn image_tag(job_id: &str, recipe: &Recipe<'_>) -> String {
    let mut repo = sanitized(&job_id.to_ascii_lowercase(), '-', 100);
    repo = repo
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for b in bytes.iter().chain(b"\0") {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    // The Dockerfile names the base, the files and the packages; then the files' contents.
    mix(recipe.dockerfile().as_bytes());
    for (name, content) in recipe.deps {
        mix(name.as_bytes());
        mix(content);
    }
    format!(
        "iris-{}:{hash:016x}",
        if repo.is_empty() { "job" } else { &repo }
    )
}

/// The build context: the generated Dockerfile and the dependency files, as a tar.
fn build_context(recipe: &Recipe<'_>) -> std::io::Result<Vec<u8>> {
    let dockerfile = recipe.dockerfile();
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, name, data)
    };
    add("Dockerfile", dockerfile.as_bytes())?;
    for (name, content) in recipe.deps {
        add(name, content)?;
    }
    archive.into_inner()
}

async fn remove_matching(
    docker: &Docker,
    filters: &HashMap<&str, Vec<String>>,
) -> Result<usize, RuntimeError> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(filters)
        .build();
    let found = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| RuntimeError::new(format!("listing containers: {}", message(&e))))?;
    let mut removed = 0;
    for container in found {
        if let Some(id) = container.id {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            if docker.remove_container(&id, Some(options)).await.is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Removes every iris-managed container of any worker (`iris-worker cleanup`).
pub async fn remove_all_managed() -> Result<usize, RuntimeError> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| RuntimeError::new(format!("docker engine: {e}")))?;
    let filters: HashMap<&str, Vec<String>> =
        [("label", vec!["iris.managed=true".to_string()])].into();
    remove_matching(&docker, &filters).await
}

/// Follows the container's output into the attempt's log until the stream ends. After an
/// adoption, `after` says where the log left off: what it has is not taken twice.
async fn follow_logs(docker: Docker, name: String, sink: AttemptSink, after: Option<OutputMark>) {
    let mut options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .timestamps(true);
    if let Some(mark) = after {
        options = options.since(i32::try_from(mark.timestamp_ms / 1000).unwrap_or(0));
    }
    let options = options.build();
    let mut stream = docker.logs(&name, Some(options));
    let mut out = LineSplitter::default();
    let mut err = LineSplitter::default();
    // One filter for both streams: the mark counts stdout and stderr lines together.
    let filter = std::sync::Mutex::new(ResumeFilter::new(after));
    let emit = |source: LogSource| {
        let sink = sink.clone();
        let filter = &filter;
        move |lines: &[&[u8]]| {
            for line in lines {
                let (ms, data) = split_timestamp(line);
                if filter.lock().unwrap_or_else(|p| p.into_inner()).is_new(ms) {
                    sink.log_line_at(ms, source, data);
                }
            }
        }
    };
    let (mut emit_out, mut emit_err) = (emit(LogSource::Stdout), emit(LogSource::Stderr));
    while let Some(Ok(chunk)) = stream.next().await {
        match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                out.feed(&message, &mut emit_out)
            }
            LogOutput::StdErr { message } => err.feed(&message, &mut emit_err),
            LogOutput::StdIn { .. } => {}
        }
    }
    out.finish(&mut emit_out);
    err.finish(&mut emit_err);
}

/// Waits for the exit (event-driven), lets the logs drain, then reports code, signal and OOM.
async fn watch_exit(
    docker: Docker,
    name: String,
    logs: tokio::task::JoinHandle<()>,
    sink: AttemptSink,
) {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let waited = docker.wait_container(&name, Some(options)).next().await;
    let code = match waited {
        Some(Ok(response)) => response.status_code,
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => {
            return sink.lost(format!("waiting for the container failed: {}", message(&e)));
        }
        None => return sink.lost("the engine closed the wait stream".to_string()),
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, logs).await;
    let inspect = || async {
        docker
            .inspect_container(&name, None)
            .await
            .ok()
            .and_then(|c| c.state)
    };
    let mut state = inspect().await;
    let mut oom_killed = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
    // The engine may record the OOM event a moment after the exit (seen with cgroup v2): a
    // SIGKILLed container gets a second look before it is called a plain SIGKILL.
    if code == 137 && !oom_killed {
        tokio::time::sleep(OOM_RECHECK).await;
        state = inspect().await.or(state);
        oom_killed = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
    }
    let finished_at_ms = state
        .as_ref()
        .and_then(|s| s.finished_at.as_deref())
        .and_then(|t| parse_rfc3339_ms(t.as_bytes()))
        .and_then(|ms| u64::try_from(ms).ok());
    let code = state.and_then(|s| s.exit_code).unwrap_or(code);
    let code = i32::try_from(code).unwrap_or(-1);
    // The engine reports death by signal N as 128 + N.
    let signal = (129..160).contains(&code).then_some(code - 128);
    sink.exited(ExitStatus {
        code: Some(code),
        signal,
        oom_killed,
        finished_at_ms,
    });
}

#[tonic::async_trait]
impl Runtime for DockerRuntime {
    fn cache_dir(&self) -> &std::path::Path {
        &self.config.cache_dir
    }

    async fn build_image(
        &self,
        _attempt: &AttemptKey,
        spec: &BuildSpec,
        sink: AttemptSink,
    ) -> Result<BuiltImage, RuntimeError> {
        let image = spec
            .base_image
            .clone()
            .unwrap_or_else(|| self.config.default_image.clone());
        self.docker
            .inspect_image(&image)
            .await
            .map_err(|e| engine_error(&format!("image {image}"), &e))?;
        // Iris never sends `workspace`: every bundle is looked at for dependency files.
        if spec.has_bundle || !spec.pip_packages.is_empty() {
            return self.build_from_bundle(spec, &image, sink).await;
        }
        sink.log(LogSource::Build, &format!("using image {image}"));
        Ok(BuiltImage {
            image: Some(image),
            from_cache: true,
        })
    }

    async fn start(&self, spec: &ContainerSpec, sink: AttemptSink) -> Result<(), RuntimeError> {
        let name = self.name(&spec.attempt);
        self.create(&name, self.container_body(spec)).await?;
        if let Err(e) = self.docker.start_container(&name, None).await {
            self.force_remove(&name).await;
            return Err(RuntimeError {
                port_conflict: is_port_conflict(&message(&e)),
                ..engine_error("start", &e)
            });
        }
        sink.started();
        self.monitor(&spec.attempt, name, sink, None);
        Ok(())
    }

    async fn resume(&self, attempt: &AttemptKey, sink: AttemptSink) -> Result<(), RuntimeError> {
        let after = sink.output_mark();
        self.monitor(attempt, self.name(attempt), sink, after);
        Ok(())
    }

    async fn signal(&self, attempt: &AttemptKey, signal: Signal) -> Result<(), RuntimeError> {
        let name = match signal {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        };
        let options = KillContainerOptionsBuilder::default().signal(name).build();
        match self
            .docker
            .kill_container(&self.name(attempt), Some(options))
            .await
        {
            // Gone or no longer running: the exit is on its way.
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(RuntimeError::new(message(&e))),
            Ok(()) => Ok(()),
        }
    }

    async fn remove(&self, attempt: &AttemptKey) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self
            .docker
            .remove_container(&self.name(attempt), Some(options))
            .await
        {
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(RuntimeError::new(message(&e))),
            Ok(()) => Ok(()),
        }
    }

    async fn release(&self, attempt: &AttemptKey) {
        if let Some(stats) = self
            .samplers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(attempt)
        {
            stats.abort();
        }
        workdir::remove(&self.config.cache_dir, attempt).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::TaskId;

    #[test]
    fn names_are_valid_and_distinct() {
        let key = |t: &str, a| AttemptKey {
            task_id: TaskId::new(t).unwrap(),
            attempt_id: a,
        };
        let a = container_name("w1", &key("job/task-0", 0));
        assert!(a.starts_with("iris-job_task-0-"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        );
        assert_ne!(a, container_name("w1", &key("job_task-0", 0)));
        assert_ne!(a, container_name("w2", &key("job/task-0", 0)));
        assert_ne!(a, container_name("w1", &key("job/task-0", 1)));
    }

    #[test]
    fn image_tags_are_valid_for_any_job_id() {
        let valid = |tag: &str| {
            let (repo, hash) = tag.split_once(':').unwrap();
            repo.starts_with("iris-")
                && repo
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c))
                && hash.len() == 16
        };
        fn tag_of(
            job: &str,
            base: &str,
            deps: &[(String, Vec<u8>)],
            pip: &[String],
            extras: &[String],
        ) -> String {
            let recipe = Recipe {
                base,
                deps,
                pip_packages: pip,
                extras,
            };
            image_tag(job, &recipe)
        }
        for job in ["Job A/b", "../x", "ü-job", "---", "a".repeat(300).as_str()] {
            let tag = tag_of(job, "python:3.12", &[], &[], &[]);
            assert!(valid(&tag), "{job}: {tag}");
        }
        let x = [("requirements.txt".to_string(), b"x".to_vec())];
        let y = [("requirements.txt".to_string(), b"y".to_vec())];
        let tag = |base, deps: &[(String, Vec<u8>)], pip: &[String], extras: &[String]| {
            tag_of("j", base, deps, pip, extras)
        };
        assert_eq!(tag("b", &x, &[], &[]), tag("b", &x, &[], &[]));
        assert_ne!(tag("b", &x, &[], &[]), tag("b", &y, &[], &[]));
        assert_ne!(tag("b", &x, &[], &[]), tag("c", &x, &[], &[]));
        let numpy = ["numpy".to_string()];
        assert_ne!(
            tag("b", &x, &[], &[]),
            tag("b", &x, &numpy, &[]),
            "pip packages count"
        );
        let project = [("pyproject.toml".to_string(), b"x".to_vec())];
        assert_ne!(
            tag("b", &project, &[], &[]),
            tag("b", &project, &[], &numpy),
            "extras count"
        );
    }

    #[test]
    fn dockerfiles_install_with_uv_and_honour_extras_and_packages() {
        let file = |name: &str| (name.to_string(), Vec::new());
        let project = [file("pyproject.toml"), file("uv.lock")];
        let pip = ["numpy==2.1".to_string(), "it's".to_string()];
        let extras = ["tpu".to_string()];
        let with_venv = Recipe {
            base: "py:3",
            deps: &project,
            pip_packages: &pip,
            extras: &extras,
        };
        insta::assert_snapshot!(with_venv.dockerfile(), @r"
        FROM py:3
        WORKDIR /app
        COPY pyproject.toml /app/pyproject.toml
        COPY uv.lock /app/uv.lock
        RUN uv sync --frozen --no-install-project --extra 'tpu'
        ENV VIRTUAL_ENV=/app/.venv PATH=/app/.venv/bin:$PATH
        RUN uv pip install 'numpy==2.1' 'it'\''s'
        LABEL iris.managed_image=true
        ");
        let requirements = [file("requirements.txt")];
        let system = Recipe {
            base: "py:3",
            deps: &requirements,
            pip_packages: &[],
            extras: &[],
        };
        assert!(
            system
                .dockerfile()
                .contains("RUN uv pip install --system -r /app/requirements.txt\n")
        );
        assert!(!system.is_plain());
        let plain = Recipe {
            deps: &[],
            ..system
        };
        assert!(
            plain.is_plain(),
            "a bundle without dependency files uses its base image"
        );
    }

    #[test]
    fn engine_timestamps() {
        let (ms, rest) = split_timestamp(b"2026-11-26T12:38:03.396123456Z hello world");
        assert_eq!((ms, rest), (1_795_696_683_396, &b"hello world"[..]));
        let (_, rest) = split_timestamp(b"no stamp here");
        assert_eq!(rest, b"no stamp here");
        assert!(is_port_conflict(
            "Bind for 0.0.0.0:30001 failed: port is already allocated"
        ));
    }
}
