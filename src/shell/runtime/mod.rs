//! The `Runtime` trait: what runs a task attempt (a docker container or a process group), and the
//! `AttemptSink` through which a running attempt reports back. Beneath it, the two runtimes
//! (`docker`, `process` with its `shim` and `procstats`) and what both use (`setup`, `workdir`).

pub mod docker;
mod error;
pub mod exec;
pub mod process;
pub mod procstats;
pub mod setup;
pub mod shim;
pub mod workdir;

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::core::{
    AttemptKey, BuildSpec, ContainerSpec, Event, ExitStatus, LogSource, ResourceUsage, Signal,
};
use crate::shell::clock::Clock;
use crate::shell::logs::output_mark::OutputMark;
use crate::shell::logs::store::{AttemptLogHandle, LogStore};
pub use error::RuntimeError;

/// The image a build resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuiltImage {
    pub image: Option<String>,
    pub from_cache: bool,
}

/// Wall-clock milliseconds, for log timestamps.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The driver's two inboxes. Outcomes (a call's answer, a start, an exit) go to an unbounded
/// channel: each is one message per call in flight or per attempt step, so the calls in flight
/// (bounded by the live attempts) bound it. Resource samples go to a bounded one and are dropped
/// when it is full (the driver has not taken the previous ones); the peak travels with the next
/// sample, so a dropped sample loses no peak.
#[derive(Clone)]
pub struct DriverInbox {
    pub events: mpsc::UnboundedSender<Event>,
    pub stats: mpsc::Sender<Event>,
    pub stats_dropped: prometheus_client::metrics::counter::Counter,
    /// Where a machine fault seen in a task's exit is counted.
    pub troubles: crate::shell::trouble::Troubles,
}

/// How a started attempt talks back: log lines straight to the log store, everything else to
/// the driver as events. Cheap to clone.
#[derive(Clone)]
pub struct AttemptSink {
    pub attempt: AttemptKey,
    inbox: DriverInbox,
    /// The highest memory any sample of this sink saw.
    peak_mb: std::sync::Arc<std::sync::atomic::AtomicI64>,
    log: AttemptLogHandle,
    /// Stamps the lines the runtime does not stamp itself: the worker's one clock, so a
    /// simulation's timestamps are simulated too.
    clock: Clock,
}

/// A line of output as text: borrowed when it is UTF-8 (checked by the fast validator), shown
/// lossily when it is not.
fn text_of(line: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(line) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    }
}

impl AttemptSink {
    pub fn new(attempt: AttemptKey, inbox: DriverInbox, logs: &LogStore, clock: Clock) -> Self {
        let log = logs.open(&attempt);
        AttemptSink {
            attempt,
            inbox,
            peak_mb: Default::default(),
            log,
            clock,
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Where the container's output left off in the log (on disk from before a restart).
    pub fn output_mark(&self) -> Option<OutputMark> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .output_mark()
    }

    pub fn log(&self, source: LogSource, data: &str) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(self.now_ms(), source, data);
    }

    /// Appends one raw line stamped by the runtime (the engine's own timestamp).
    pub fn log_line_at(&self, timestamp_ms: i64, source: LogSource, line: &[u8]) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).append(
            timestamp_ms,
            source,
            &text_of(line),
        );
    }

    /// Appends a region of raw output (see `lines::Lines`) under one lock and timestamp;
    /// invalid UTF-8 is kept, shown lossily.
    pub fn log_region(&self, source: LogSource, region: &[u8]) {
        let now = self.now_ms();
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append_region(now, source, region);
    }

    fn send(&self, event: Event) {
        // The driver only goes away at shutdown, when nobody waits for this answer.
        let _ = self.inbox.events.send(event);
    }

    pub fn started(&self) {
        self.send(Event::ContainerStarted {
            attempt: self.attempt.clone(),
        });
    }

    pub fn exited(&self, status: ExitStatus) {
        // Only a failure's error quotes it, and only a failure can be the machine's fault.
        let (last_stderr, machine_fault) = match status.code {
            Some(0) => (None, None),
            _ => {
                let tail = self.recent(LogSource::Stderr, crate::shell::tpu::STDERR_TAIL_LINES);
                let fault = crate::shell::tpu::bad_node(&tail);
                if let Some(fault) = &fault {
                    tracing::warn!(attempt = %self.attempt, "{fault}; reported as the worker's failure");
                    self.inbox.troubles.bad_node_exit(fault);
                }
                (tail.last().cloned(), fault)
            }
        };
        self.send(Event::Exited {
            attempt: self.attempt.clone(),
            status: ExitStatus {
                last_stderr,
                machine_fault,
                ..status
            },
        });
    }

    fn recent(&self, source: LogSource, n: usize) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recent(source, n)
    }

    /// The newest `n` lines of `source` as the tail of an error message (`""` when none).
    pub fn last_lines_quoted(&self, source: LogSource, n: usize) -> String {
        let lines = self.recent(source, n);
        match lines.is_empty() {
            true => String::new(),
            false => format!(
                "; last lines:\n{}",
                lines
                    .iter()
                    .map(|l| l.trim_end())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }

    pub fn stats(&self, usage: ResourceUsage) {
        let sample_peak = usage.memory_peak_mb.max(usage.memory_mb);
        let peak = self
            .peak_mb
            .fetch_max(sample_peak, std::sync::atomic::Ordering::Relaxed)
            .max(sample_peak);
        let event = Event::Stats {
            attempt: self.attempt.clone(),
            usage: ResourceUsage {
                memory_peak_mb: peak,
                ..usage
            },
        };
        if self.inbox.stats.try_send(event).is_err() {
            self.inbox.stats_dropped.inc();
        }
    }

    pub fn lost(&self, error: String) {
        self.send(Event::RuntimeLost {
            attempt: self.attempt.clone(),
            error,
        });
    }
}

/// Runs attempts. Every method may take long or hang; the driver wraps each call in a deadline
/// and never awaits one itself.
#[tonic::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Where workdirs live; `workdir` arguments are relative to it.
    fn cache_dir(&self) -> &std::path::Path;

    /// Creates the attempt's workdir and writes `files` into it.
    async fn prepare_workdir(
        &self,
        _attempt: &AttemptKey,
        workdir: &str,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), RuntimeError> {
        crate::shell::runtime::workdir::prepare(self.cache_dir(), workdir, files).await
    }

    /// Fetches the bundle and extracts it into the workdir.
    async fn fetch_bundle(
        &self,
        _attempt: &AttemptKey,
        bundle_path: &str,
        workdir: &str,
    ) -> Result<(), RuntimeError> {
        crate::shell::runtime::workdir::fetch_bundle(self.cache_dir(), bundle_path, workdir).await
    }

    async fn build_image(
        &self,
        attempt: &AttemptKey,
        spec: &BuildSpec,
        sink: AttemptSink,
    ) -> Result<BuiltImage, RuntimeError>;

    /// Starts the attempt. On success it calls `sink.started()` before any other sink event,
    /// then reports logs, stats and exactly one `exited` (or `lost`).
    async fn start(&self, spec: &ContainerSpec, sink: AttemptSink) -> Result<(), RuntimeError>;

    async fn signal(&self, attempt: &AttemptKey, signal: Signal) -> Result<(), RuntimeError>;

    /// Removes what is left of an exited attempt (its container; never its logs).
    async fn remove(&self, attempt: &AttemptKey) -> Result<(), RuntimeError>;

    /// Stops sampling and frees runtime-side state of a finished attempt.
    async fn release(&self, attempt: &AttemptKey);

    /// Runs `command` inside the running attempt `spec` describes (its container; for a
    /// process, its workdir, environment and process group), within `timeout` when given.
    async fn exec(
        &self,
        spec: &ContainerSpec,
        _command: &[String],
        _timeout: Option<std::time::Duration>,
    ) -> Result<exec::ExecOutput, RuntimeError> {
        Err(RuntimeError::new(format!(
            "{}: this runtime cannot exec into a task",
            spec.attempt
        )))
    }

    /// Takes back an attempt whose container outlived the worker: logs, exit and stats resume
    /// through `sink`. Runtimes whose tasks die with the worker cannot.
    async fn resume(&self, attempt: &AttemptKey, _sink: AttemptSink) -> Result<(), RuntimeError> {
        Err(RuntimeError::new(format!(
            "{attempt}: this runtime cannot adopt"
        )))
    }
}

/// A task on the host's network binds its ports itself (a process, or a container on the host
/// network), so a port another program holds would fail the task: the start fails with
/// `port_conflict` instead, and the core retries with fresh ports (as the engine's own bind
/// error does for a bridged container). The port is free again when this returns.
pub fn check_ports_free(
    ports: &std::collections::BTreeMap<String, u16>,
) -> Result<(), RuntimeError> {
    for (name, &port) in ports {
        if let Err(e) = std::net::TcpListener::bind(("0.0.0.0", port)) {
            return Err(RuntimeError::port_conflict(format!(
                "port {port} ({name}) is taken on the host: {e}"
            )));
        }
    }
    Ok(())
}
