//! The driver: the one task that owns `WorkerCore`. RPC handlers send it `Command`s (with a
//! oneshot for the answer); runtimes and the controller client send it `Event`s. It feeds both to
//! the core, then executes the core's effects by spawning runtime and controller calls, each with
//! a deadline, whose outcomes come back as events. It never awaits an effect itself, so a hung
//! engine or controller cannot stop heartbeats, kills or RPC answers.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{Instrument, Span, error, info, info_span, warn};

use crate::core::{
    AttemptKey, Effect, Event, JournalEntry, KillError, RecoveredAttempt, SubmitError, TaskId,
    TaskSpec, TaskState, WorkerCore,
};
use crate::proto;
pub use crate::shell::clock::Clock;
use crate::shell::controller::ControllerClient;
use crate::shell::journal::Journal;
use crate::shell::logstore::LogStore;
use crate::shell::metrics::Metrics;
use crate::shell::runtime::{AttemptSink, Runtime, RuntimeError};

/// Deadlines of runtime calls.
#[derive(Clone, Debug)]
pub struct CallDeadlines {
    pub prepare: Duration,
    pub fetch: Duration,
    pub build: Duration,
    pub start: Duration,
    pub signal: Duration,
    pub remove: Duration,
}

impl Default for CallDeadlines {
    fn default() -> Self {
        CallDeadlines {
            prepare: Duration::from_secs(60),
            fetch: Duration::from_secs(600),
            build: Duration::from_secs(1800),
            start: Duration::from_secs(120),
            signal: Duration::from_secs(10),
            remove: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitRefusal {
    #[error(transparent)]
    Core(#[from] SubmitError),
    #[error("worker is shutting down")]
    ShuttingDown,
}

#[derive(Clone, Copy, Debug)]
pub struct Health {
    pub uptime: Duration,
    pub running_tasks: usize,
}

pub enum Command {
    Submit {
        spec: Box<TaskSpec>,
        reply: oneshot::Sender<Result<TaskState, SubmitRefusal>>,
    },
    Kill {
        task_id: TaskId,
        term_timeout_ms: i64,
        reply: oneshot::Sender<Result<(), KillError>>,
    },
    Status {
        task_id: TaskId,
        reply: oneshot::Sender<Option<proto::TaskStatus>>,
    },
    List {
        reply: oneshot::Sender<Vec<proto::TaskStatus>>,
    },
    CurrentAttempt {
        task_id: TaskId,
        reply: oneshot::Sender<Option<AttemptKey>>,
    },
    Health {
        reply: oneshot::Sender<Health>,
    },
    /// Kill every task (unless `kill_tasks` is false: a rolling restart keeps containers for
    /// the next run to adopt), deliver the reports (within `grace`), then stop.
    Shutdown {
        grace: Duration,
        kill_tasks: bool,
        reply: oneshot::Sender<()>,
    },
}

/// What the driver needs besides the core.
pub struct DriverParts {
    pub runtime: Arc<dyn Runtime>,
    pub logs: LogStore,
    pub journal: Option<Journal>,
    pub controller: Option<ControllerClient>,
    pub clock: Clock,
    pub deadlines: CallDeadlines,
    pub metrics: Arc<Metrics>,
}

pub struct Driver {
    core: WorkerCore,
    parts: DriverParts,
    events_tx: mpsc::UnboundedSender<Event>,
    setup: BTreeMap<AttemptKey, AbortHandle>,
    spans: BTreeMap<AttemptKey, Span>,
    shutdown: Option<(Instant, oneshot::Sender<()>)>,
    /// Stopping without killing: live attempts stay for the next run.
    preserving: bool,
}

/// The handle RPC handlers hold.
#[derive(Clone)]
pub struct DriverHandle {
    commands: mpsc::Sender<Command>,
}

#[derive(Debug, thiserror::Error)]
#[error("the worker's driver has stopped")]
pub struct DriverGone;

impl DriverHandle {
    /// Sends a command built around a fresh oneshot and waits for the answer.
    pub async fn ask<T>(
        &self,
        build: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(build(tx))
            .await
            .map_err(|_| DriverGone)?;
        rx.await.map_err(|_| DriverGone)
    }
}

const REMOVE_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// As often as SIGKILL repeats: once the engine answers again, a container being removed is gone
/// within a call deadline plus this.
const REMOVE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Commands waiting for the driver; beyond this, RPC handlers wait (backpressure, not memory).
const COMMAND_QUEUE_MAX: usize = 1024;

impl Driver {
    /// Builds the driver, replays the journal into the core, and spawns the driver task.
    pub fn spawn(
        mut core: WorkerCore,
        parts: DriverParts,
        recovered: Vec<Result<RecoveredAttempt, String>>,
        adopted: Vec<RecoveredAttempt>,
    ) -> (DriverHandle, tokio::task::JoinHandle<()>) {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        recover(&mut core, recovered, parts.clock.now_ms());
        let mut driver = Driver {
            core,
            parts,
            events_tx,
            setup: BTreeMap::new(),
            spans: BTreeMap::new(),
            shutdown: None,
            preserving: false,
        };
        driver.adopt(adopted);
        let task = tokio::spawn(driver.run(commands_rx, events_rx));
        (
            DriverHandle {
                commands: commands_tx,
            },
            task,
        )
    }

    /// Takes back attempts whose containers survived the last run. One the core refuses (its
    /// ports are taken) has its container removed and is reported lost.
    fn adopt(&mut self, adopted: Vec<RecoveredAttempt>) {
        for record in adopted {
            let key = AttemptKey {
                task_id: record.spec.task_id.clone(),
                attempt_id: record.spec.attempt_id,
            };
            let now = self.now_ms();
            let runtime = self.parts.runtime.clone();
            if self.core.adopt(now, record.clone()) {
                info!(attempt = %key, "adopted a running container");
                let sink = self.sink(&key);
                let events = self.events_tx.clone();
                // An engine that never answers must not leave the attempt unwatched for good.
                let limit = self.parts.deadlines.start;
                tokio::spawn(async move {
                    let error = match tokio::time::timeout(limit, runtime.resume(&key, sink)).await
                    {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e.message,
                        Err(_) => format!("resume timed out after {limit:?}"),
                    };
                    let _ = events.send(Event::RuntimeLost {
                        attempt: key,
                        error,
                    });
                });
            } else {
                warn!(attempt = %key, "could not adopt; removing its container");
                self.core.recover_leftover(now, record);
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.parts.clock.now_ms()
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
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
                let current = self
                    .core
                    .get_task(&task_id)
                    .map(crate::core::worker::attempt_key);
                let _ = reply.send(current);
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

    fn span(&mut self, key: &AttemptKey) -> Span {
        self.spans
            .entry(key.clone())
            .or_insert_with(
                || info_span!("attempt", task_id = %key.task_id, attempt_id = key.attempt_id),
            )
            .clone()
    }

    fn execute_effects(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            self.execute(effect);
        }
        self.parts
            .metrics
            .outbox_len
            .set(self.core.outbox_len() as i64);
    }

    fn execute(&mut self, effect: Effect) {
        let runtime = self.parts.runtime.clone();
        let deadlines = self.parts.deadlines.clone();
        match effect {
            Effect::PrepareWorkdir {
                attempt,
                workdir,
                files,
            } => {
                let key = attempt.clone();
                self.spawn_setup(&key, deadlines.prepare, "prepare_workdir", async move {
                    match runtime.prepare_workdir(&attempt, &workdir, files).await {
                        Ok(()) => Event::WorkdirReady { attempt },
                        Err(e) => Event::WorkdirFailed {
                            attempt,
                            error: e.message,
                        },
                    }
                });
            }
            Effect::FetchBundle {
                attempt,
                bundle_path,
                workdir,
            } => {
                let key = attempt.clone();
                self.spawn_setup(&key, deadlines.fetch, "fetch_bundle", async move {
                    match runtime.fetch_bundle(&attempt, &bundle_path, &workdir).await {
                        Ok(()) => Event::BundleReady { attempt },
                        Err(e) => Event::BundleFailed {
                            attempt,
                            error: e.message,
                        },
                    }
                });
            }
            Effect::BuildImage { attempt, spec } => {
                let key = attempt.clone();
                let sink = self.sink(&attempt);
                self.spawn_setup(&key, deadlines.build, "build_image", async move {
                    match runtime.build_image(&attempt, &spec, sink).await {
                        Ok(built) => Event::BuildFinished {
                            attempt,
                            image: built.image,
                            from_cache: built.from_cache,
                        },
                        Err(e) => Event::BuildFailed {
                            attempt,
                            error: e.message,
                        },
                    }
                });
            }
            Effect::CancelBuild { attempt } => {
                if let Some(handle) = self.setup.remove(&attempt) {
                    handle.abort();
                }
            }
            Effect::Journal(entry) => self.journal(&entry),
            Effect::StartContainer(spec) => {
                self.parts.metrics.task_starts.inc();
                self.start(*spec, deadlines.start)
            }
            Effect::SignalContainer { attempt, signal } => {
                let span = self.span(&attempt);
                info!(parent: &span, ?signal, "signalling");
                self.spawn_quiet(span, deadlines.signal, "signal", async move {
                    runtime.signal(&attempt, signal).await
                });
            }
            Effect::RemoveContainer { attempt } => {
                let span = self.span(&attempt);
                let events = self.events_tx.clone();
                self.spawn_remove(span, deadlines.remove, runtime, attempt, events);
            }
            Effect::ReleaseResources { attempt } => self.release(attempt),
            Effect::WriteLog {
                attempt,
                source,
                data,
            } => {
                let now = i64::try_from(self.now_ms()).unwrap_or(i64::MAX);
                self.parts.logs.append(&attempt, now, source, &data)
            }
            Effect::RegisterWorker { running_task_ids } => self.register(running_task_ids),
            Effect::ReportTaskState { report_id, report } => self.report(report_id, report),
        }
    }

    fn sink(&self, attempt: &AttemptKey) -> AttemptSink {
        AttemptSink::new(
            attempt.clone(),
            self.events_tx.clone(),
            &self.parts.logs,
            self.parts.clock,
        )
    }

    /// Runs a set-up step (cancellable by CancelBuild) and feeds its outcome back.
    fn spawn_setup(
        &mut self,
        attempt: &AttemptKey,
        limit: Duration,
        what: &'static str,
        call: impl Future<Output = Event> + Send + 'static,
    ) {
        let events = self.events_tx.clone();
        let key = attempt.clone();
        let span = self.span(attempt);
        let metrics = self.parts.metrics.clone();
        let handle = tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                let event = match tokio::time::timeout(limit, call).await {
                    Ok(event) => event,
                    Err(_) => timed_out_event(key, what, limit),
                };
                let failed = matches!(
                    event,
                    Event::WorkdirFailed { .. }
                        | Event::BundleFailed { .. }
                        | Event::BuildFailed { .. }
                );
                metrics.runtime_call(what, started, !failed);
                let _ = events.send(event);
            }
            .instrument(span),
        );
        self.setup.insert(attempt.clone(), handle.abort_handle());
    }

    /// Runs a call whose outcome the core does not wait for; failures are logged.
    fn spawn_quiet(
        &self,
        span: Span,
        limit: Duration,
        what: &'static str,
        call: impl Future<Output = Result<(), RuntimeError>> + Send + 'static,
    ) {
        let metrics = self.parts.metrics.clone();
        tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                let outcome = tokio::time::timeout(limit, call).await;
                metrics.runtime_call(what, started, matches!(outcome, Ok(Ok(()))));
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "{what} failed"),
                    Err(_) => warn!("{what} timed out after {limit:?}"),
                }
            }
            .instrument(span),
        );
    }

    /// Removes a container, retrying (removal is idempotent) until the runtime confirms it: an
    /// engine that failed one call must not leave a container behind for good.
    fn spawn_remove(
        &self,
        span: Span,
        limit: Duration,
        runtime: Arc<dyn Runtime>,
        attempt: AttemptKey,
        events: mpsc::UnboundedSender<Event>,
    ) {
        let metrics = self.parts.metrics.clone();
        tokio::spawn(
            async move {
                let mut backoff = REMOVE_RETRY_INITIAL;
                loop {
                    let started = std::time::Instant::now();
                    let outcome = tokio::time::timeout(limit, runtime.remove(&attempt)).await;
                    metrics.runtime_call("remove", started, matches!(outcome, Ok(Ok(()))));
                    match outcome {
                        Ok(Ok(())) => {
                            let _ = events.send(Event::ContainerRemoved { attempt });
                            return;
                        }
                        Ok(Err(e)) => warn!(error = %e, "remove failed; retrying in {backoff:?}"),
                        Err(_) => {
                            warn!("remove timed out after {limit:?}; retrying in {backoff:?}")
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(REMOVE_RETRY_MAX);
                }
            }
            .instrument(span),
        );
    }

    fn start(&mut self, spec: crate::core::ContainerSpec, limit: Duration) {
        let runtime = self.parts.runtime.clone();
        let sink = self.sink(&spec.attempt);
        let events = self.events_tx.clone();
        let span = self.span(&spec.attempt);
        let metrics = self.parts.metrics.clone();
        info!(parent: &span, argv = ?spec.argv, try_number = spec.start_try, "starting");
        tokio::spawn(
            async move {
                let attempt = spec.attempt.clone();
                let started = std::time::Instant::now();
                let outcome = tokio::time::timeout(limit, runtime.start(&spec, sink.clone())).await;
                metrics.runtime_call("start", started, matches!(outcome, Ok(Ok(()))));
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if e.infrastructure && !e.port_conflict => {
                        let _ = events.send(lost(attempt, e));
                    }
                    Ok(Err(e)) => {
                        let _ = events.send(Event::StartFailed {
                            attempt,
                            error: e.message,
                            port_conflict: e.port_conflict,
                        });
                    }
                    // The runtime may have half-created it: the core removes what is there.
                    Err(_) => sink.lost(format!("start timed out after {limit:?}")),
                }
            }
            .instrument(span),
        );
    }

    fn release(&mut self, attempt: AttemptKey) {
        self.setup.remove(&attempt);
        let span = self.spans.remove(&attempt).unwrap_or_else(Span::none);
        let task = self
            .core
            .task_attempts(&attempt.task_id)
            .into_iter()
            .find(|t| t.attempt_id == attempt.attempt_id);
        if let Some(task) = task {
            info!(parent: &span, state = %task.state, error = ?task.error, "attempt finished");
            let outcome = task.state.short_name().to_string();
            self.parts
                .metrics
                .task_ends
                .get_or_create(&crate::shell::metrics::OutcomeLabel { outcome })
                .inc();
        }
        self.parts.logs.close(&attempt);
        let runtime = self.parts.runtime.clone();
        tokio::spawn(async move { runtime.release(&attempt).await }.instrument(span));
    }

    fn register(&self, running_task_ids: Vec<String>) {
        let Some(controller) = self.parts.controller.clone() else {
            return;
        };
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let event = match controller.register(running_task_ids).await {
                Ok(should_reset) => Event::RegisterAccepted { should_reset },
                Err(error) => {
                    warn!(%error, "controller registration failed");
                    Event::RegisterFailed { error }
                }
            };
            let _ = events.send(event);
        });
    }

    /// Appends what the core asked for, before any effect that follows it runs. A journal that
    /// cannot be written is logged loudly: the worker keeps running, but a restart would not
    /// know the attempt.
    fn journal(&mut self, entry: &JournalEntry) {
        if let Some(journal) = &mut self.parts.journal
            && let Err(e) = journal.record(entry)
        {
            error!(attempt = %entry.attempt(), error = %e, "cannot journal {entry}");
        }
    }

    fn report(&mut self, report_id: u64, report: crate::core::TaskReport) {
        let Some(controller) = self.parts.controller.clone() else {
            return;
        };
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let event = match controller.report(&report).await {
                Ok(()) => Event::ReportAcked { report_id },
                Err(error) => Event::ReportFailed { report_id, error },
            };
            let _ = events.send(event);
        });
    }
}

/// A runtime call that hit its deadline is the machine's fault: the attempt is lost.
fn timed_out_event(attempt: AttemptKey, what: &str, limit: Duration) -> Event {
    Event::RuntimeLost {
        attempt,
        error: format!("{what} timed out after {limit:?}"),
    }
}

fn lost(attempt: AttemptKey, e: RuntimeError) -> Event {
    Event::RuntimeLost {
        attempt,
        error: e.message,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Replays the journal: finished attempts come back as they were, live ones as WORKER_FAILED.
fn recover(core: &mut WorkerCore, records: Vec<Result<RecoveredAttempt, String>>, now_ms: u64) {
    for record in records {
        match record {
            Ok(record) => {
                if record.outcome.is_none() {
                    warn!(task_id = %record.spec.task_id, attempt_id = record.spec.attempt_id,
                        "attempt was live when the worker stopped; reporting it WORKER_FAILED");
                }
                core.recover(now_ms, record);
            }
            Err(e) => error!(error = %e, "journal record not recovered"),
        }
    }
}
