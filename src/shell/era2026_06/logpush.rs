//! Logs to the cluster's log service (finelog, the endpoint `/system/log-server`): every
//! attempt's lines, in order, under `<task_path>:<attempt_id>`, batched (at most
//! `PUSH_EVERY` behind, `BATCH_LINES_MAX` a call), with each line's own timestamp. The log on
//! disk is the buffer: an outage of any length loses nothing the disk log keeps, and the next
//! line to push is kept beside the log (`logstore::pushed_path`, written after each
//! acknowledged batch), so a restart or an adoption resumes after the last acknowledged batch;
//! only a batch in flight at a crash is sent twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::log_service;
use crate::core::{AttemptKey, LineStart, LogFilter, LogLine};
use crate::proto::v2026_06::finelog::logging as finelog;
use crate::shell::connect::client::ConnectClient;
use crate::shell::driver::{Command, DriverHandle};
use crate::shell::logs::store::{LogStore, pushed_path};
use crate::shell::logs::worker_log::{self, WorkerLine};
use crate::shell::metrics::Metrics;
use tracing::Level;

pub const PUSH_EVERY: Duration = Duration::from_millis(500);
pub const BATCH_LINES_MAX: usize = 5_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const PUSH_PATH: &str = "/finelog.logging.LogService/PushLogs";

pub struct LogPusher {
    pub driver: DriverHandle,
    /// The worker's own log goes under `/system/worker/<worker_id>`, as Iris's worker's.
    pub worker_id: String,
    pub logs: LogStore,
    /// How the log service is found and dialled.
    pub finder: log_service::Finder,
    pub cache_dir: PathBuf,
    pub metrics: Arc<Metrics>,
    /// Read the log on a blocking thread (production) or in place (the simulator, whose
    /// timing must not depend on real threads).
    pub blocking_reads: bool,
}

/// Per attempt: the next line to push, and whether everything of a finished attempt is out.
#[derive(Default)]
struct Progress {
    next_line: i64,
    done: bool,
}

fn read_position(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Written whole (temporary file, then rename), so a crash leaves the old or the new number.
fn write_position(path: &Path, next_line: i64) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, next_line.to_string())?;
    std::fs::rename(&tmp, path)
}

/// The line's level as the log service takes it (`logs::level`).
fn level_of(data: &str) -> finelog::LogLevel {
    use crate::shell::logs::level::{Level, parse};
    match parse(data) {
        None => finelog::LogLevel::Unknown,
        Some(Level::Debug) => finelog::LogLevel::Debug,
        Some(Level::Info) => finelog::LogLevel::Info,
        Some(Level::Warning) => finelog::LogLevel::Warning,
        Some(Level::Error) => finelog::LogLevel::Error,
        Some(Level::Critical) => finelog::LogLevel::Critical,
    }
}

fn entry(line: &LogLine, attempt_id: i32, key: &str) -> finelog::LogEntry {
    finelog::LogEntry {
        timestamp: Some(finelog::Timestamp {
            epoch_ms: line.timestamp_ms,
        }),
        source: line.source.as_str().to_string(),
        data: line.data.clone(),
        attempt_id,
        level: level_of(&line.data) as i32,
        key: key.to_string(),
    }
}

/// A line of the worker's own log as Iris's `RemoteLogHandler` sends one (source `process`).
fn worker_entry(line: &WorkerLine, key: &str) -> finelog::LogEntry {
    let level = match line.level {
        Level::ERROR => finelog::LogLevel::Error,
        Level::WARN => finelog::LogLevel::Warning,
        Level::INFO => finelog::LogLevel::Info,
        _ => finelog::LogLevel::Debug,
    };
    finelog::LogEntry {
        timestamp: Some(finelog::Timestamp {
            epoch_ms: line.epoch_ms,
        }),
        source: "process".to_string(),
        data: line.data.clone(),
        attempt_id: 0,
        level: level as i32,
        key: key.to_string(),
    }
}

impl LogPusher {
    pub async fn run(self) {
        let mut progress: BTreeMap<AttemptKey, Progress> = BTreeMap::new();
        let mut service: Option<ConnectClient> = None;
        // Failed pushes since the last good one: the first is a warning, the rest are counted
        // (a 30 s outage is one line in the log, not sixty), and the recovery says how many.
        let mut failing = 0u64;
        loop {
            tokio::time::sleep(PUSH_EVERY).await;
            if service.is_none() && worker_log::pending() > 0 {
                service = self.finder.discover().await;
            }
            if let Some(client) = &service
                && let Err(e) = self.push_worker_log(client).await
            {
                tracing::debug!(error = %e, "pushing the worker's log failed");
                service = None;
            }
            let Ok(targets) = self.driver.push_targets().await else {
                return;
            };
            progress.retain(|key, _| targets.iter().any(|(k, _, _)| k == key));
            self.record_lag(&progress);
            for (key, task_path, finished) in targets {
                let p = progress.entry(key.clone()).or_insert_with(|| Progress {
                    next_line: read_position(&pushed_path(&self.cache_dir, &key)),
                    done: false,
                });
                if p.done {
                    continue;
                }
                if service.is_none() {
                    service = self.finder.discover().await;
                }
                let Some(client) = &service else {
                    break;
                };
                match self
                    .push_attempt(client, &key, &task_path, finished, p)
                    .await
                {
                    Ok(()) => {
                        if failing > 0 {
                            tracing::info!(failed = failing, "the log service takes lines again");
                            failing = 0;
                        }
                        if p.done {
                            // Retention may take the attempt now: nothing of it is left to push.
                            let attempt = key.clone();
                            let _ = self
                                .driver
                                .ask(|reply| Command::LogsShipped { attempt, reply })
                                .await;
                        }
                    }
                    Err(e) => {
                        self.metrics.log_push_failures.inc();
                        failing += 1;
                        match failing {
                            1 => tracing::warn!(attempt = %key, error = %e,
                                "pushing logs failed; retrying every {PUSH_EVERY:?}"),
                            _ => tracing::debug!(attempt = %key, error = %e, "pushing logs failed"),
                        }
                        service = None;
                        break;
                    }
                }
            }
        }
    }

    /// `log_push_lag_lines`: what open logs hold beyond what the log service acknowledged.
    fn record_lag(&self, progress: &BTreeMap<AttemptKey, Progress>) {
        let behind: i64 = progress
            .iter()
            .filter_map(|(key, p)| {
                let log = self.logs.get(key)?;
                let end = log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .next_line_number();
                Some((end - p.next_line).max(0))
            })
            .sum();
        self.metrics.log_push_lag_lines.set(behind);
    }

    /// Pushes what the attempt has beyond `p.next_line`, a batch at a time, until caught up.
    async fn push_attempt(
        &self,
        client: &ConnectClient,
        key: &AttemptKey,
        task_path: &str,
        finished: bool,
        p: &mut Progress,
    ) -> Result<(), Status> {
        let log_key = format!("{task_path}:{}", key.attempt_id);
        loop {
            let lines = self.read(key, p.next_line).await;
            let Some(last) = lines.last() else {
                // Lines are on disk before the attempt is finished: nothing more will come.
                p.done = finished;
                return Ok(());
            };
            let next_line = last.line_number + 1;
            let request = finelog::PushLogsRequest {
                key: log_key.clone(),
                entries: lines
                    .iter()
                    .map(|l| entry(l, key.attempt_id, &log_key))
                    .collect(),
            };
            let _: finelog::PushLogsResponse =
                client.unary(PUSH_PATH, &request, CALL_TIMEOUT).await?;
            self.metrics.log_lines_pushed.inc_by(lines.len() as u64);
            p.next_line = next_line;
            if let Err(e) = write_position(&pushed_path(&self.cache_dir, key), next_line) {
                tracing::warn!(attempt = %key, error = %e, "cannot keep the pushed position");
            }
            if lines.len() < BATCH_LINES_MAX {
                p.done = finished;
                return Ok(());
            }
        }
    }

    /// The worker's own log since the last push (`logs::worker_log`), under Iris's worker key;
    /// lines go back to the queue if the service does not take them.
    async fn push_worker_log(&self, client: &ConnectClient) -> Result<(), Status> {
        let key = format!("/system/worker/{}", self.worker_id);
        loop {
            let lines = worker_log::take(BATCH_LINES_MAX);
            if lines.is_empty() {
                return Ok(());
            }
            let request = finelog::PushLogsRequest {
                key: key.clone(),
                entries: lines.iter().map(|l| worker_entry(l, &key)).collect(),
            };
            let pushed: Result<finelog::PushLogsResponse, Status> =
                client.unary(PUSH_PATH, &request, CALL_TIMEOUT).await;
            if let Err(e) = pushed {
                worker_log::put_back(lines);
                return Err(e);
            }
        }
    }

    async fn read(&self, key: &AttemptKey, from: i64) -> Vec<LogLine> {
        let logs = self.logs.clone();
        let key = key.clone();
        let filter = LogFilter {
            start: LineStart::From(from.max(0)),
            max_lines: Some(BATCH_LINES_MAX),
            ..LogFilter::default()
        };
        let read = move || logs.fetch(&key, &filter).unwrap_or_default();
        match self.blocking_reads {
            true => tokio::task::spawn_blocking(read).await.unwrap_or_default(),
            false => read(),
        }
    }
}
