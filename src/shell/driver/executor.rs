//! How the driver executes effects: each becomes a spawned call with a deadline (`timed`) whose
//! outcome comes back as an event, except the journal append and worker-written log lines, which
//! are small and done in place, in effect order.

use std::future::Future;
use std::time::Duration;

use tracing::{Instrument, Span, error, info, info_span, warn};

use super::Driver;
use super::deadlines::{REMOVE_RETRY_INITIAL, REMOVE_RETRY_MAX, timed};
use crate::core::{
    AttemptKey, BundleSource, ContainerSpec, Effect, Event, JournalEntry, RemovalReason, TaskId,
    TaskReport,
};
use crate::shell::metrics::ReasonLabel;
use crate::shell::retention::remove_attempt_files;
use crate::shell::runtime::workdir::fetch_content;
use crate::shell::runtime::{AttemptSink, RuntimeError};

impl Driver {
    fn span(&mut self, key: &AttemptKey) -> Span {
        self.spans
            .entry(key.clone())
            .or_insert_with(
                || info_span!("attempt", task_id = %key.task_id, attempt_id = key.attempt_id),
            )
            .clone()
    }

    pub(super) fn execute_effects(&mut self) {
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
                source,
                workdir,
            } => {
                let key = attempt.clone();
                let blobs = self.parts.blobs.clone();
                self.spawn_setup(&key, deadlines.fetch, "fetch_bundle", async move {
                    let fetched = match &source {
                        BundleSource::Path(path) => {
                            runtime.fetch_bundle(&attempt, path, &workdir).await
                        }
                        BundleSource::Content { bundle, files } => {
                            let cache_dir = runtime.cache_dir();
                            let (bundle, blobs) = (bundle.as_deref(), blobs.as_deref());
                            fetch_content(blobs, cache_dir, &workdir, bundle, files).await
                        }
                    };
                    match fetched {
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
                            machine: e.infrastructure,
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
            Effect::RemoveTask {
                task_id,
                attempts,
                reason,
            } => self.remove_task(task_id, attempts, reason),
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
                self.spawn_remove(span, deadlines.remove, attempt);
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

    pub(super) fn sink(&self, attempt: &AttemptKey) -> AttemptSink {
        AttemptSink::new(
            attempt.clone(),
            self.inbox.clone(),
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
        let events = self.inbox.events.clone();
        let key = attempt.clone();
        let span = self.span(attempt);
        let metrics = self.parts.metrics.clone();
        let handle = tokio::spawn(
            async move {
                let event = timed(&metrics, what, limit, call)
                    .await
                    .unwrap_or_else(|_| timed_out_event(key, what, limit));
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
                match timed(&metrics, what, limit, call).await {
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
    fn spawn_remove(&self, span: Span, limit: Duration, attempt: AttemptKey) {
        let metrics = self.parts.metrics.clone();
        let runtime = self.parts.runtime.clone();
        let events = self.inbox.events.clone();
        tokio::spawn(
            async move {
                let mut backoff = REMOVE_RETRY_INITIAL;
                loop {
                    match timed(&metrics, "remove", limit, runtime.remove(&attempt)).await {
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

    fn start(&mut self, spec: ContainerSpec, limit: Duration) {
        let runtime = self.parts.runtime.clone();
        let sink = self.sink(&spec.attempt);
        let events = self.inbox.events.clone();
        let span = self.span(&spec.attempt);
        let metrics = self.parts.metrics.clone();
        info!(parent: &span, argv = ?spec.argv, try_number = spec.start_try, "starting");
        tokio::spawn(
            async move {
                let attempt = spec.attempt.clone();
                let call = runtime.start(&spec, sink.clone());
                match timed(&metrics, "start", limit, call).await {
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
        self.parts.samples.finish(&attempt);
        let runtime = self.parts.runtime.clone();
        tokio::spawn(async move { runtime.release(&attempt).await }.instrument(span));
    }

    fn register(&self, running_task_ids: Vec<String>) {
        let Some(controller) = self.parts.controller.clone() else {
            return;
        };
        let events = self.inbox.events.clone();
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
        let Some(journal) = &mut self.parts.journal else {
            return;
        };
        if let Err(e) = journal.record(entry) {
            error!(attempt = %entry.attempt(), error = %e, "cannot journal {entry}");
        }
        let bytes = i64::try_from(journal.bytes()).unwrap_or(i64::MAX);
        self.parts.metrics.journal_bytes.set(bytes);
    }

    /// Retention forgot a task: its files go, off the driver. The journal tombstones came first.
    fn remove_task(&mut self, task_id: TaskId, attempts: Vec<AttemptKey>, reason: RemovalReason) {
        self.parts
            .metrics
            .tasks_removed
            .get_or_create(&ReasonLabel {
                reason: reason.name().to_string(),
            })
            .inc();
        for attempt in &attempts {
            self.parts.logs.close(attempt);
            self.parts.samples.remove(attempt);
            self.spans.remove(attempt);
        }
        let cache_dir = self.parts.runtime.cache_dir().to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = remove_attempt_files(&cache_dir, &attempts) {
                warn!(%task_id, error = %e, "cannot delete the files of a removed task");
            }
        });
    }

    fn report(&mut self, report_id: u64, report: TaskReport) {
        let Some(controller) = self.parts.controller.clone() else {
            return;
        };
        let events = self.inbox.events.clone();
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
