//! The process runtime: each attempt runs as its own process group on this machine, led by the
//! task shim (see `shim.rs`), a subreaper that owns every descendant of the task, also those
//! that left the group: they die when the main process exits, on a kill, and with the worker.
//! Kills go to the shim, which passes them on. Used where there is no Docker.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::core::{
    AttemptKey, BuildSpec, ContainerSpec, ExitStatus, LogSource, ResourceUsage, Signal,
};
use crate::shell::disk::disk_usage_bytes;
use crate::shell::logs::lines::LineReader;
use crate::shell::runtime::exec::{ExecOutput, read_bounded};
use crate::shell::runtime::procstats::GroupSampler;
use crate::shell::runtime::setup;
use crate::shell::runtime::shim;
use crate::shell::runtime::workdir;
use crate::shell::runtime::{AttemptSink, BuiltImage, Runtime, RuntimeError, check_ports_free};

/// Variables of the worker's own environment a task inherits (everything else is the task's).
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];
/// How long the log readers may drain after the process exits (a leftover holding the pipe).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct ProcessRuntimeConfig {
    pub cache_dir: PathBuf,
    /// The `iris-worker` binary to run as the task shim; `None` runs tasks directly (then only
    /// the group leader is tied to the worker's life).
    pub shim: Option<PathBuf>,
    pub stats_interval: Duration,
    /// Run 2026-06 setup_commands on the host (Iris's process runtime never runs them: its
    /// client writes them for a container).
    pub run_setup_commands: bool,
    /// The interpreter tasks get as IRIS_PYTHON (named in the build log when setup is skipped).
    pub task_python: String,
}

struct Group {
    pgid: i32,
    /// Whether the group leader is the shim (which then takes the kills) or the task itself.
    shim: bool,
    sampler: AbortHandle,
}

pub struct ProcessRuntime {
    config: ProcessRuntimeConfig,
    groups: Arc<Mutex<BTreeMap<AttemptKey, Group>>>,
}

impl ProcessRuntime {
    pub fn new(config: ProcessRuntimeConfig) -> ProcessRuntime {
        ProcessRuntime {
            config,
            groups: Arc::default(),
        }
    }

    /// `cmd` as the task runs: only the task's environment (and a few of the worker's
    /// variables), in its workdir, output piped, no input.
    fn as_task<'c>(&self, cmd: &'c mut Command, spec: &ContainerSpec) -> &'c mut Command {
        cmd.env_clear();
        for key in INHERITED_ENV {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.config.cache_dir.join(&spec.workdir))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
    }

    fn command(&self, spec: &ContainerSpec) -> Command {
        let activated;
        let argv = match spec.activate_venv {
            true => {
                activated = setup::activated(&spec.argv);
                &activated
            }
            false => &spec.argv,
        };
        let mut cmd = match &self.config.shim {
            Some(shim) => {
                let mut cmd = Command::new(shim);
                if shim.file_name().is_some_and(|n| n != "iris-shim") {
                    cmd.arg("shim");
                }
                cmd.arg("--parent-pid")
                    .arg(std::process::id().to_string())
                    .arg("--")
                    .args(argv);
                cmd
            }
            None => {
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..]);
                cmd
            }
        };
        self.as_task(&mut cmd, spec)
            .process_group(0)
            .kill_on_drop(false);
        if self.config.shim.is_none() {
            // SAFETY: prctl is async-signal-safe; it ties the child's life to this thread's.
            // Without a pre_exec hook std can use posix_spawn, much cheaper than fork for a big
            // process, so the shim sets this up itself instead.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    Ok(())
                });
            }
        }
        cmd
    }

    fn spawn_sampler(&self, pgid: i32, workdir: PathBuf, sink: AttemptSink) -> AbortHandle {
        let interval = self.config.stats_interval;
        tokio::spawn(async move {
            // The sampler and the last disk figure travel into each blocking sample and back.
            let mut state = (GroupSampler::new(pgid), 0i64);
            // The first sample waits one interval: short tasks never pay for a /proc scan.
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            for round in 0u64.. {
                ticker.tick().await;
                let dir = workdir.clone();
                let sampled = tokio::task::spawn_blocking(move || {
                    let (mut sampler, mut disk_mb) = state;
                    // The workdir walk is the costly part: every fifth sample only.
                    if round % 5 == 0 {
                        disk_mb = (disk_usage_bytes(&dir, 100_000) / (1024 * 1024)) as i64;
                    }
                    let usage = ResourceUsage {
                        disk_mb,
                        ..sampler.sample()
                    };
                    (usage, (sampler, disk_mb))
                })
                .await;
                let Ok((usage, next)) = sampled else {
                    return;
                };
                state = next;
                sink.stats(usage);
            }
        })
        .abort_handle()
    }
}

/// How much a task's output pipe holds. Larger than Linux's 64 KiB default, so a chatty task
/// writes longer before it blocks and the worker reads bigger chunks: fewer wake-ups and context
/// switches per byte (at most the system's pipe-max-size; a refusal keeps the default).
const PIPE_BYTES: libc::c_int = 1 << 20;
/// What one read of a pipe takes at most.
const CHUNK_BYTES: usize = 64 * 1024;

fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: F_SETPIPE_SZ on a pipe we own; failure leaves it as it was.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
}

/// Copies one pipe into the log on a thread of its own, with blocking reads, as `cat` would:
/// each chunk's complete lines go in as one record, under one lock. A flood costs a read and a
/// write per chunk and nothing else: no readiness polling, no wake-up of the async runtime.
/// The receiver completes when the pipe has closed and every line is in the log.
fn spawn_pump(
    pipe: std::os::fd::OwnedFd,
    source: LogSource,
    sink: AttemptSink,
) -> io::Result<oneshot::Receiver<()>> {
    let (done, drained) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("pump-{source}"))
        .stack_size(PUMP_STACK_BYTES)
        .spawn(move || {
            pump(std::fs::File::from(pipe), source, &sink);
            let _ = done.send(());
        })?;
    Ok(drained)
}

/// The pump's buffer is on the heap; its stack holds a few frames.
const PUMP_STACK_BYTES: usize = 256 * 1024;

fn pump(mut reader: impl Read, source: LogSource, sink: &AttemptSink) {
    // Read straight into the splitter's buffer: the bytes are copied once, into the log.
    let mut lines = LineReader::new(CHUNK_BYTES);
    let mut emit = |region: &[u8]| sink.log_region(source, region);
    loop {
        let spare = lines.spare();
        let want = spare.len().min(CHUNK_BYTES);
        match reader.read(&mut spare[..want]) {
            Ok(0) => break,
            Ok(n) => lines.commit(n, &mut emit),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    lines.finish(&mut emit);
}

#[tonic::async_trait]
impl Runtime for ProcessRuntime {
    fn cache_dir(&self) -> &std::path::Path {
        &self.config.cache_dir
    }

    async fn build_image(
        &self,
        attempt: &AttemptKey,
        spec: &BuildSpec,
        sink: AttemptSink,
    ) -> Result<BuiltImage, RuntimeError> {
        if let Some(image) = &spec.base_image {
            let line =
                format!("process runtime: docker_image {image} is ignored; running on the host");
            sink.log(LogSource::Build, &line);
        }
        if !spec.pip_packages.is_empty() {
            let line = "process runtime: pip_packages are not installed; the host's python is used";
            sink.log(LogSource::Build, line);
        }
        if !spec.setup_commands.is_empty() {
            match self.config.run_setup_commands {
                true => self.run_setup(attempt, spec, &sink).await?,
                false => {
                    let line = format!(
                        "process runtime: {} setup command(s) skipped, as Iris's process runtime \
                         does (they are written for a container); the task runs with \
                         IRIS_PYTHON={} (--setup-commands run runs them on the host)",
                        spec.setup_commands.len(),
                        self.config.task_python
                    );
                    sink.log(LogSource::Build, &line);
                }
            }
        }
        Ok(BuiltImage::default())
    }

    /// In the task's workdir, with its environment, in its process group: a kill of the task
    /// takes the command too, and nothing of it outlives the task.
    async fn exec(
        &self,
        spec: &ContainerSpec,
        command: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError> {
        let pgid = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&spec.attempt)
            .map(|g| g.pgid)
            .ok_or_else(|| RuntimeError::new(format!("Task {} has no process", spec.attempt)))?;
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]);
        self.as_task(&mut cmd, spec)
            .process_group(pgid)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| RuntimeError::new(format!("cannot run {:?}: {e}", command[0])))?;
        let out = tokio::spawn(read_bounded(child.stdout.take().expect("piped")));
        let err = tokio::spawn(read_bounded(child.stderr.take().expect("piped")));
        let status = match timeout {
            Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(RuntimeError::new(format!(
                        "the command did not finish within {}s",
                        limit.as_secs()
                    )));
                }
            },
            None => child.wait().await,
        }
        .map_err(|e| RuntimeError::new(format!("waiting for {:?}: {e}", command[0])))?;
        Ok(ExecOutput {
            exit_code: exit_code(status),
            stdout: out.await.unwrap_or_default(),
            stderr: err.await.unwrap_or_default(),
        })
    }

    async fn start(&self, spec: &ContainerSpec, sink: AttemptSink) -> Result<(), RuntimeError> {
        check_ports_free(&spec.ports)?;
        let mut child = self
            .command(spec)
            .spawn()
            .map_err(|e| RuntimeError::new(format!("cannot start {:?}: {e}", spec.argv[0])))?;
        let pgid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| RuntimeError::new("no pid"))?;
        sink.started();
        let pipes = [
            (
                child.stdout.take().map(|p| p.into_owned_fd()),
                LogSource::Stdout,
            ),
            (
                child.stderr.take().map(|p| p.into_owned_fd()),
                LogSource::Stderr,
            ),
        ];
        let mut readers = Vec::new();
        for (pipe, source) in pipes {
            let Some(pipe) = pipe else { continue };
            let pumped = pipe.and_then(|fd| {
                widen_pipe(&fd);
                spawn_pump(fd, source, sink.clone())
            });
            // The process runs already: without its output it is lost, not failed to start.
            match pumped {
                Ok(drained) => readers.push(drained),
                Err(e) => sink.log(LogSource::Error, &format!("cannot read its {source}: {e}")),
            }
        }
        let workdir = self.config.cache_dir.join(&spec.workdir);
        let sampler = self.spawn_sampler(pgid, workdir, sink.clone());
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                spec.attempt.clone(),
                Group {
                    pgid,
                    shim: self.config.shim.is_some(),
                    sampler: sampler.clone(),
                },
            );
        tokio::spawn(async move {
            let status = child.wait().await;
            // Whatever the task left running in its group goes with it, as with a container.
            // SAFETY: signalling a process group we created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, futures_join(readers)).await;
            sampler.abort();
            match status {
                Ok(s) => sink.exited(ExitStatus {
                    code: s.code(),
                    signal: s.signal(),
                    oom_killed: false,
                    finished_at_ms: None,
                    last_stderr: None,
                    machine_fault: None,
                }),
                Err(e) => sink.lost(format!("waiting for the process failed: {e}")),
            }
        });
        Ok(())
    }

    async fn signal(&self, attempt: &AttemptKey, signal: Signal) -> Result<(), RuntimeError> {
        let group = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(attempt)
            .map(|g| (g.pgid, g.shim));
        // The shim passes TERM on to every descendant and kills them all for KILL_ALL; it is
        // never SIGKILLed itself, so it always cleans up. Without a shim, the group is all we have.
        let (target, number) = match group {
            Some((pgid, true)) => match signal {
                Signal::Term => (pgid, libc::SIGTERM),
                Signal::Kill => (pgid, shim::KILL_ALL),
            },
            Some((pgid, false)) => (-pgid, signal.number()),
            None => return Ok(()),
        };
        // SAFETY: signalling a process (group) we created; ESRCH (already gone) is fine.
        unsafe { libc::kill(target, number) };
        Ok(())
    }

    async fn remove(&self, attempt: &AttemptKey) -> Result<(), RuntimeError> {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(attempt);
        Ok(())
    }

    async fn release(&self, attempt: &AttemptKey) {
        if let Some(group) = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(attempt)
        {
            group.sampler.abort();
        }
        workdir::remove(&self.config.cache_dir, attempt).await;
    }
}

impl ProcessRuntime {
    /// Runs the setup script in the workdir as its own process group (under the shim, so it
    /// dies with the worker), its output into the build log; a cancelled build kills it.
    async fn run_setup(
        &self,
        attempt: &AttemptKey,
        spec: &BuildSpec,
        sink: &AttemptSink,
    ) -> Result<(), RuntimeError> {
        let workdir = self.config.cache_dir.join(&spec.workdir);
        setup::write_script(&workdir, &spec.setup_commands)?;
        let run = ContainerSpec {
            attempt: attempt.clone(),
            image: None,
            argv: setup::launcher(),
            env: spec.env.clone(),
            ports: BTreeMap::new(),
            resources: Default::default(),
            workdir: spec.workdir.clone(),
            container_workdir: String::new(),
            activate_venv: false,
            labels: BTreeMap::new(),
            start_try: 0,
        };
        setup::announce(sink, &spec.setup_commands, "");
        let mut child = self
            .command(&run)
            .spawn()
            .map_err(|e| RuntimeError::new(format!("cannot run setup_commands: {e}")))?;
        let group = KillGroupOnDrop(child.id().map(|p| p as i32));
        let mut readers = Vec::new();
        let pipes = [
            child.stdout.take().map(|p| p.into_owned_fd()),
            child.stderr.take().map(|p| p.into_owned_fd()),
        ];
        for pipe in pipes.into_iter().flatten() {
            if let Ok(drained) = pipe.and_then(|fd| spawn_pump(fd, LogSource::Build, sink.clone()))
            {
                readers.push(drained);
            }
        }
        let status = child.wait().await?;
        drop(group);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, futures_join(readers)).await;
        if status.success() {
            return Ok(());
        }
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "an unknown status".to_string(),
        };
        Err(setup::failed(&how, sink))
    }
}

/// Kills a process group when dropped: a build cancelled (or timed out) mid-setup leaves
/// nothing running.
struct KillGroupOnDrop(Option<i32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: signalling a process group we created; ESRCH (already gone) is fine.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

async fn futures_join(pumps: Vec<oneshot::Receiver<()>>) {
    for drained in pumps {
        let _ = drained.await;
    }
}

/// An exec's exit code as a shell reports it (128 + the signal that ended it).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
