//! The driver: the one task that owns `WorkerCore`. RPC handlers send it `Command`s (with a
//! oneshot for the answer); runtimes and the controller client send it `Event`s. It feeds both to
//! the core, then executes the core's effects by spawning runtime and controller calls, each with
//! a deadline, whose outcomes come back as events. It never awaits an effect itself, so a hung
//! engine or controller cannot stop heartbeats, kills or RPC answers.
//!
//! Files: `command.rs` (what handlers send), `deadlines.rs` (call deadlines and `timed`),
//! `executor.rs` (effects to calls), `recovery.rs` (journal replay and adoption); the loop is
//! here.

mod command;
mod deadlines;
mod executor;
mod recovery;

use crate::shell::trouble::Troubles;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{Span, info, warn};

use self::command::COMMAND_QUEUE_MAX;
pub use self::command::{Command, DriverGone, DriverHandle, Health, SubmitRefusal};
pub use self::deadlines::CallDeadlines;
use crate::core::{AttemptKey, Event, RecoveredAttempt, WorkerCore};
use crate::shell::blobs::BlobStore;
pub use crate::shell::clock::Clock;
use crate::shell::controller::ControllerClient;
use crate::shell::disk::FsUsage;
use crate::shell::journal::Journal;
use crate::shell::logs::store::LogStore;
use crate::shell::metrics::Metrics;
use crate::shell::runtime::{DriverInbox, Runtime};
use crate::shell::samples::SampleStore;

/// What the driver needs besides the core.
pub struct DriverParts {
    pub runtime: Arc<dyn Runtime>,
    pub logs: LogStore,
    pub journal: Option<Journal>,
    pub controller: Option<ControllerClient>,
    pub clock: Clock,
    pub deadlines: CallDeadlines,
    pub metrics: Arc<Metrics>,
    /// How often the cache dir's file system is measured for retention (`None`: never, as in
    /// the simulator, whose disk is the host's).
    pub disk_sample_every: Option<Duration>,
    /// The dashboard's charts: resource samples and the running-task count.
    pub samples: SampleStore,
    /// The controller's blobs (2026-06 bundles and workdir file refs); `None` without one.
    pub blobs: Option<Arc<BlobStore>>,
    /// Why the machine must not take work; runtimes count machine faults into it.
    pub troubles: Troubles,
}

/// Resource samples waiting for the driver; beyond this they are dropped (see `DriverInbox`).
const STATS_QUEUE_MAX: usize = 1024;

pub struct Driver {
    core: WorkerCore,
    parts: DriverParts,
    inbox: DriverInbox,
    setup: BTreeMap<AttemptKey, AbortHandle>,
    spans: BTreeMap<AttemptKey, Span>,
    shutdown: Option<(Instant, oneshot::Sender<()>)>,
    /// Stopping without killing: live attempts stay for the next run.
    preserving: bool,
}

impl Driver {
    /// Builds the driver, replays the journal into the core, and spawns the driver task.
    pub fn spawn(
        mut core: WorkerCore,
        parts: DriverParts,
        recovered: Vec<Result<RecoveredAttempt, String>>,
        adopted: Vec<RecoveredAttempt>,
    ) -> (DriverHandle, tokio::task::JoinHandle<()>) {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (stats_tx, stats_rx) = mpsc::channel(STATS_QUEUE_MAX);
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        recovery::recover(&mut core, recovered, parts.clock.now_ms());
        let inbox = DriverInbox {
            events: events_tx,
            stats: stats_tx,
            stats_dropped: parts.metrics.stats_samples_dropped.clone(),
            troubles: parts.troubles.clone(),
        };
        if let Some(every) = parts.disk_sample_every {
            spawn_disk_sampler(
                parts.runtime.cache_dir().to_path_buf(),
                every,
                inbox.events.clone(),
                parts.metrics.clone(),
            );
        }
        let mut driver = Driver {
            core,
            parts,
            inbox,
            setup: BTreeMap::new(),
            spans: BTreeMap::new(),
            shutdown: None,
            preserving: false,
        };
        driver.adopt(adopted);
        let task = tokio::spawn(driver.run(commands_rx, events_rx, stats_rx));
        (
            DriverHandle {
                commands: commands_tx,
            },
            task,
        )
    }

    fn now_ms(&self) -> u64 {
        self.parts.clock.now_ms()
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut stats: mpsc::Receiver<Event>,
    ) {
        self.execute_effects();
        loop {
            let wake = self.next_wake();
            // Biased, in a fixed order: the simulator replays a seed exactly only if the
            // driver picks among ready inputs deterministically. Events first, so outcomes
            // already in hand are applied before new commands are judged against the state.
            tokio::select! {
                biased;
                Some(event) = events.recv() => {
                    let now = self.now_ms();
                    if let Event::ReportFailed { .. } = event {
                        self.parts.metrics.report_retries.inc();
                    }
                    self.core.handle(now, event);
                }
                Some(sample) = stats.recv() => {
                    let now = self.now_ms();
                    if let Event::Stats { attempt, usage } = &sample {
                        self.parts.samples.record(attempt, now, usage);
                    }
                    self.core.handle(now, sample);
                }
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                () = sleep_until(wake) => {
                    let now = self.now_ms();
                    self.core.handle_timeout(now);
                }
            }
            self.execute_effects();
            let (now, core) = (self.now_ms(), &self.core);
            self.parts
                .samples
                .record_running(now, || core.running_tasks());
            if self.shutdown_complete() {
                break;
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let core = self
            .core
            .poll_timeout()
            .map(|d| self.parts.clock.instant_of(d));
        let shutdown = self.shutdown.as_ref().map(|(at, _)| *at);
        match (core, shutdown) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn shutdown_complete(&mut self) -> bool {
        let Some((deadline, _)) = &self.shutdown else {
            return false;
        };
        let live_settled = self.preserving || self.core.live_attempts().is_empty();
        let settled = live_settled && self.core.outbox_len() == 0;
        if !settled && Instant::now() < *deadline {
            return false;
        }
        if !settled {
            warn!(
                live = self.core.live_attempts().len(),
                unreported = self.core.outbox_len(),
                "shutdown grace ran out"
            );
        }
        let (_, reply) = self.shutdown.take().expect("checked");
        let _ = reply.send(());
        true
    }

    fn on_command(&mut self, command: Command) {
        let now = self.now_ms();
        match command {
            Command::Submit { spec, reply } => {
                let result = match self.shutdown {
                    Some(_) => Err(SubmitRefusal::ShuttingDown),
                    None => self.core.submit(now, *spec).map_err(SubmitRefusal::from),
                };
                let _ = reply.send(result);
            }
            Command::Kill {
                task_id,
                term_timeout_ms,
                reply,
            } => {
                let _ = reply.send(self.core.kill(now, &task_id, term_timeout_ms));
            }
            Command::Status { task_id, reply } => {
                let _ = reply.send(self.core.task_status(&task_id));
            }
            Command::List { reply } => {
                let _ = reply.send(self.core.list_tasks());
            }
            Command::CurrentAttempt { task_id, reply } => {
                let current = self.core.get_task(&task_id).map(|task| task.attempt_key());
                let _ = reply.send(current);
            }
            Command::Reconcile { desired, reply } => {
                let _ = reply.send(self.core.reconcile(now, desired));
            }
            Command::PushTargets { reply } => {
                let _ = reply.send(self.core.reconcile_attempts());
            }
            Command::LogsShipped { attempt, reply } => {
                self.core.logs_shipped(now, &attempt);
                let _ = reply.send(());
            }
            Command::KillAll { reason, reply } => {
                let _ = reply.send(self.core.kill_all(now, &reason));
            }
            Command::Exec {
                task_id,
                command,
                timeout,
                reply,
            } => match self.core.running_container(&task_id) {
                Err(refusal) => {
                    let _ = reply.send(Err(refusal));
                }
                Ok(spec) => {
                    let runtime = self.parts.runtime.clone();
                    tokio::spawn(async move {
                        let done = runtime.exec(&spec, &command, timeout).await;
                        let _ = reply.send(done.map_err(|e| e.message));
                    });
                }
            },
            Command::Evacuate { reason, reply } => {
                let _ = reply.send(self.core.evacuate(now, &reason));
            }
            Command::Health { reply } => {
                let _ = reply.send(Health {
                    uptime: self.parts.clock.uptime(),
                    running_tasks: self.core.running_tasks(),
                });
            }
            Command::Shutdown {
                grace,
                kill_tasks,
                reply,
            } => {
                if kill_tasks {
                    let killed = self.core.kill_all(now, "Worker shutting down");
                    info!(killed, "shutting down");
                } else {
                    self.preserving = true;
                    info!("shutting down, leaving containers running for the next run");
                }
                self.shutdown = Some((Instant::now() + grace, reply));
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Measures the cache dir's file system now and then: the gauges, and the core's disk
/// thresholds. Off the driver (statvfs may block on a sick disk).
fn spawn_disk_sampler(
    cache_dir: PathBuf,
    every: Duration,
    events: mpsc::UnboundedSender<Event>,
    metrics: Arc<Metrics>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let dir = cache_dir.clone();
            let Ok(Ok(usage)) = tokio::task::spawn_blocking(move || FsUsage::of(&dir)).await else {
                continue;
            };
            let (bytes_percent, inodes_percent) = (usage.bytes_percent(), usage.inodes_percent());
            metrics
                .cache_fs_used_bytes
                .set(i64::try_from(usage.used_bytes).unwrap_or(i64::MAX));
            metrics
                .cache_fs_used_inodes
                .set(i64::try_from(usage.used_inodes).unwrap_or(i64::MAX));
            metrics
                .cache_fs_used_percent
                .set(i64::from(bytes_percent.max(inodes_percent)));
            let event = Event::DiskUsage {
                bytes_percent,
                inodes_percent,
            };
            if events.send(event).is_err() {
                return;
            }
        }
    });
}
