//! Stats rows to the log service's tables, as Iris's worker writes them: `iris.worker` each
//! Reconcile, `iris.task` for each running attempt every `TASK_ROW_EVERY` (from the samples the
//! worker already takes). The controller's dashboard reads task usage only from these tables.
//!
//! Writers never wait: a row goes into its table's queue (`shell::stats::tables`, a mutex held
//! for a push), and one task flushes the queues every `FLUSH_EVERY`, registering each table
//! before its first batch and again after a failure (the service may have restarted), a batch
//! of at most 5,000 rows or about 4 MiB per call. A failed call keeps its rows, in order, and
//! the writer waits with backoff (0.5 s doubling to 30 s, finelog's client's) before it tries
//! again; rows keep being queued meanwhile. The queues drop their oldest rows past their bounds
//! (10,000 rows per table: eight minutes of outage for a worker with 100 running tasks),
//! counted in `iris_worker_stats_rows_dropped_total`. A batch the service refuses as malformed
//! (invalid argument, failed precondition) is dropped, counted and logged, never retried
//! forever. Logs never wait for stats: they have their own pusher and their own connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::ArrowError;
use tokio::time::Instant;
use tonic::{Code, Status};

use super::log_service;
use crate::core::AttemptKey;
use crate::proto::v2026_06::finelog::stats as wire;
use crate::proto::v2026_06::iris::cluster::controller::RegisterRequest;
use crate::proto::v2026_06::iris::job;
use crate::shell::connect::client::ConnectClient;
use crate::shell::driver::DriverHandle;
use crate::shell::metrics::Metrics;
use crate::shell::samples::SampleStore;
use crate::shell::stats::rows::{
    StatsRow, TaskRow, WorkerIdentity, WorkerRow, encode, wire_schema,
};
use crate::shell::stats::tables::{StatsQueue, StatsTables};

pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Iris's attempt monitor writes a task row per poll, every 5 s.
pub const TASK_ROW_EVERY: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const REGISTER_PATH: &str = "/finelog.stats.StatsService/RegisterTable";
const WRITE_PATH: &str = "/finelog.stats.StatsService/WriteRows";

/// Makes the `iris.worker` row of each Reconcile from its health snapshot.
pub struct WorkerRows {
    pub queue: Arc<StatsQueue<WorkerRow>>,
    pub worker_id: String,
    pub address: String,
    pub identity: Arc<WorkerIdentity>,
    /// The running attempts' newest samples (their process counts are summed).
    pub samples: SampleStore,
}

fn attribute(metadata: &job::WorkerMetadata, key: &str) -> String {
    match metadata.attributes.get(key).and_then(|a| a.value.as_ref()) {
        Some(job::attribute_value::Value::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

impl WorkerRows {
    /// Identity as the worker registered it (Iris's `build_worker_stat`).
    pub fn new(
        queue: Arc<StatsQueue<WorkerRow>>,
        register: &RegisterRequest,
        samples: SampleStore,
    ) -> WorkerRows {
        let m = register.metadata.clone().unwrap_or_default();
        let zone = match m.gce_zone.is_empty() {
            true => attribute(&m, "zone"),
            false => m.gce_zone.clone(),
        };
        WorkerRows {
            queue,
            worker_id: register.worker_id.clone(),
            address: register.address.clone(),
            identity: Arc::new(WorkerIdentity {
                device_type: attribute(&m, "device-type"),
                device_variant: attribute(&m, "device-variant"),
                cpu_count: i64::from(m.cpu_count),
                memory_bytes: m.memory_bytes,
                tpu_name: m.tpu_name,
                gce_instance_name: m.gce_instance_name,
                zone,
            }),
            samples,
        }
    }

    /// Queues the row of a Reconcile answered with `snapshot`; `busy` while any attempt lives.
    pub fn push(&self, snapshot: &job::WorkerResourceSnapshot, busy: bool) {
        let processes: i64 = self
            .samples
            .latest()
            .iter()
            .map(|(_, _, usage)| i64::from(usage.process_count))
            .sum();
        self.queue.push(WorkerRow {
            worker_id: self.worker_id.clone(),
            ts_ms: snapshot.timestamp.as_ref().map_or(0, |t| t.epoch_ms),
            status: if busy { "RUNNING" } else { "IDLE" },
            address: self.address.clone(),
            cpu_pct: f64::from(snapshot.host_cpu_percent),
            mem_bytes: snapshot.memory_used_bytes,
            mem_total_bytes: snapshot.memory_total_bytes,
            disk_used_bytes: snapshot.disk_used_bytes,
            disk_total_bytes: snapshot.disk_total_bytes,
            running_task_count: i64::from(snapshot.running_task_count),
            total_process_count: processes,
            net_recv_bytes: snapshot.net_recv_bytes,
            net_sent_bytes: snapshot.net_sent_bytes,
            identity: self.identity.clone(),
        });
    }
}

/// Each table's registration with the service, remembered until a call fails.
#[derive(Default)]
struct Registered {
    workers: bool,
    tasks: bool,
    profiles: bool,
}

pub struct StatsWriter {
    pub tables: StatsTables,
    pub driver: DriverHandle,
    pub samples: SampleStore,
    pub worker_id: String,
    /// How the log service is found and dialled.
    pub finder: log_service::Finder,
    pub metrics: Arc<Metrics>,
}

impl StatsWriter {
    pub async fn run(self) {
        self.tables.start_writing(&self.worker_id);
        let mut service: Option<ConnectClient> = None;
        let mut registered = Registered::default();
        let mut last_row: BTreeMap<AttemptKey, u64> = BTreeMap::new();
        let (mut next_rows, mut retry_at) = (Instant::now() + TASK_ROW_EVERY, Instant::now());
        let mut backoff = BACKOFF_FIRST;
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            if Instant::now() >= next_rows {
                next_rows = Instant::now() + TASK_ROW_EVERY;
                if !self.task_rows(&mut last_row).await {
                    return;
                }
            }
            let idle = self.tables.workers.is_empty()
                && self.tables.tasks.is_empty()
                && self.tables.profiles.is_empty();
            if idle || Instant::now() < retry_at {
                continue;
            }
            if service.is_none() {
                service = self.finder.discover().await;
            }
            // A failure leaves the rows queued: the service is away or answered a transient
            // error, and the writer tries again after the backoff.
            let result = match &service {
                None => Err(Status::unavailable("the log service is not known")),
                Some(client) => self.flush(client, &mut registered).await,
            };
            match result {
                Ok(()) => backoff = BACKOFF_FIRST,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "writing stats rows failed");
                    (service, registered) = (None, Registered::default());
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// A row for each running attempt with a sample newer than its last row. `false` once the
    /// driver is gone.
    async fn task_rows(&self, last_row: &mut BTreeMap<AttemptKey, u64>) -> bool {
        let Ok(targets) = self.driver.push_targets().await else {
            return false;
        };
        let paths: BTreeMap<AttemptKey, String> = targets
            .into_iter()
            .filter(|(_, _, finished)| !finished)
            .map(|(key, path, _)| (key, path))
            .collect();
        last_row.retain(|key, _| paths.contains_key(key));
        let mut rows = Vec::new();
        for (key, at_ms, usage) in self.samples.latest() {
            let Some(task_id) = paths.get(&key) else {
                continue;
            };
            if last_row.get(&key).is_some_and(|last| *last >= at_ms) {
                continue;
            }
            last_row.insert(key.clone(), at_ms);
            rows.push(TaskRow::of_sample(
                task_id.clone(),
                key.attempt_id,
                self.worker_id.clone(),
                at_ms,
                &usage,
            ));
        }
        self.tables.tasks.extend(rows);
        true
    }

    async fn flush(
        &self,
        client: &ConnectClient,
        registered: &mut Registered,
    ) -> Result<(), Status> {
        self.flush_table(client, &self.tables.workers, &mut registered.workers)
            .await?;
        self.flush_table(client, &self.tables.tasks, &mut registered.tasks)
            .await?;
        self.flush_table(client, &self.tables.profiles, &mut registered.profiles)
            .await
    }

    /// Writes the table's queue a batch at a time until it is empty.
    async fn flush_table<R: StatsRow>(
        &self,
        client: &ConnectClient,
        queue: &StatsQueue<R>,
        registered: &mut bool,
    ) -> Result<(), Status> {
        loop {
            let batch = queue.take();
            if batch.is_empty() {
                return Ok(());
            }
            match self.write(client, &batch, registered).await {
                Ok(()) => {
                    self.metrics.stats_rows_written.inc_by(batch.len() as u64);
                }
                Err(e) if refused(&e) => {
                    tracing::warn!(table = R::NAMESPACE, rows = batch.len(), error = %e,
                        "the log service refused stats rows; dropped");
                    self.metrics.stats_rows_dropped.inc_by(batch.len() as u64);
                }
                Err(e) => {
                    queue.put_back(batch);
                    return Err(e);
                }
            }
        }
    }

    async fn write<R: StatsRow>(
        &self,
        client: &ConnectClient,
        rows: &[R],
        registered: &mut bool,
    ) -> Result<(), Status> {
        if !*registered {
            let request = wire::RegisterTableRequest {
                namespace: R::NAMESPACE.to_string(),
                schema: Some(wire_schema::<R>()),
                storage_policy: None,
            };
            let _: wire::RegisterTableResponse =
                client.unary(REGISTER_PATH, &request, CALL_TIMEOUT).await?;
            *registered = true;
        }
        let request = write_request(rows).map_err(|e| Status::internal(e.to_string()))?;
        let _: wire::WriteRowsResponse = client.unary(WRITE_PATH, &request, CALL_TIMEOUT).await?;
        Ok(())
    }
}

/// The `WriteRows` call for `rows`.
pub fn write_request<R: StatsRow>(rows: &[R]) -> Result<wire::WriteRowsRequest, ArrowError> {
    Ok(wire::WriteRowsRequest {
        namespace: R::NAMESPACE.to_string(),
        arrow_ipc: encode(rows)?,
    })
}

/// The service will never take this batch: retrying it would stall the table behind it.
fn refused(e: &Status) -> bool {
    matches!(e.code(), Code::InvalidArgument | Code::FailedPrecondition)
}
