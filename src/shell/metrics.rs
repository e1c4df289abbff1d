//! Prometheus metrics of the worker (prometheus-client), rendered in the text format at
//! `/metrics`. Cheap to update from any task: every metric is an atomic behind an `Arc`.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
    /// `grpc` or `connect`.
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `count`, `age` or `disk`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EraLabel {
    /// `2026-01` or `2026-06`.
    pub era: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    pub call: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub tasks: Family<StateLabel, Gauge>,
    pub task_starts: Counter,
    pub task_ends: Family<OutcomeLabel, Counter>,
    pub report_retries: Counter,
    pub outbox_len: Gauge,
    pub rpc_latency: Latencies<MethodLabel>,
    pub runtime_latency: Latencies<CallLabel>,
    pub runtime_errors: Family<CallLabel, Counter>,
    pub log_bytes: Counter,
    pub tasks_removed: Family<ReasonLabel, Counter>,
    pub cache_fs_used_bytes: Gauge,
    pub cache_fs_used_inodes: Gauge,
    pub cache_fs_used_percent: Gauge,
    pub journal_bytes: Gauge,
    pub stats_samples_dropped: Counter,
    pub protocol_era: Family<EraLabel, Gauge>,
    pub log_lines_pushed: Counter,
    pub log_push_failures: Counter,
    /// 2026-06: lines on disk not yet in the log service (summed over the attempts pushed).
    pub log_push_lag_lines: Gauge,
    /// 2026-06: rows the log service's stats tables acknowledged.
    pub stats_rows_written: Counter,
    /// 2026-06: stats rows given up (the queue was full during an outage, or the service
    /// refused a batch as malformed).
    pub stats_rows_dropped: Counter,
    /// The Iris protocol era the worker speaks, once chosen (the dashboard shows it).
    era: std::sync::OnceLock<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Says which era the worker speaks (`iris_worker_iris_protocol{era}` = 1).
    pub fn set_protocol_era(&self, era: &str) {
        let _ = self.era.set(era.to_string());
        self.protocol_era
            .get_or_create(&EraLabel {
                era: era.to_string(),
            })
            .set(1);
    }

    /// `2026-01` or `2026-06` once the controller's era is known; `None` standalone.
    pub fn era(&self) -> Option<&str> {
        self.era.get().map(String::as_str)
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("iris_worker");
        let m = Metrics {
            registry: Registry::default(),
            tasks: Family::default(),
            task_starts: Counter::default(),
            task_ends: Family::default(),
            report_retries: Counter::default(),
            outbox_len: Gauge::default(),
            rpc_latency: Family::new_with_constructor(latency_histogram),
            runtime_latency: Family::new_with_constructor(latency_histogram),
            runtime_errors: Family::default(),
            log_bytes: Counter::default(),
            tasks_removed: Family::default(),
            cache_fs_used_bytes: Gauge::default(),
            cache_fs_used_inodes: Gauge::default(),
            cache_fs_used_percent: Gauge::default(),
            journal_bytes: Gauge::default(),
            stats_samples_dropped: Counter::default(),
            protocol_era: Family::default(),
            log_lines_pushed: Counter::default(),
            log_push_failures: Counter::default(),
            log_push_lag_lines: Gauge::default(),
            stats_rows_written: Counter::default(),
            stats_rows_dropped: Counter::default(),
            era: std::sync::OnceLock::new(),
        };
        registry.register(
            "log_push_lag_lines",
            "2026-06: log lines written but not yet acknowledged by the log service",
            m.log_push_lag_lines.clone(),
        );
        registry.register(
            "log_lines_pushed",
            "2026-06: log lines the log service acknowledged",
            m.log_lines_pushed.clone(),
        );
        registry.register(
            "log_push_failures",
            "2026-06: PushLogs or endpoint lookups that failed (retried)",
            m.log_push_failures.clone(),
        );
        registry.register(
            "iris_protocol",
            "1 for the Iris worker protocol era this worker speaks with its controller",
            m.protocol_era.clone(),
        );
        registry.register("tasks", "Tasks by current state", m.tasks.clone());
        registry.register(
            "task_starts",
            "Task attempts started",
            m.task_starts.clone(),
        );
        registry.register(
            "task_ends",
            "Task attempts ended, by outcome",
            m.task_ends.clone(),
        );
        registry.register(
            "report_retries",
            "Controller reports that failed and are retried",
            m.report_retries.clone(),
        );
        registry.register(
            "outbox_length",
            "Controller reports waiting for an ack",
            m.outbox_len.clone(),
        );
        registry.register(
            "rpc_latency_seconds",
            "RPC handling time by method and protocol (grpc, connect)",
            m.rpc_latency.clone(),
        );
        registry.register(
            "runtime_call_latency_seconds",
            "Runtime call time by call",
            m.runtime_latency.clone(),
        );
        registry.register(
            "runtime_call_errors",
            "Runtime calls that failed, by call",
            m.runtime_errors.clone(),
        );
        registry.register(
            "log_bytes_ingested",
            "Bytes of task output taken into the logs",
            m.log_bytes.clone(),
        );
        registry.register(
            "tasks_removed",
            "Finished tasks retention removed, by reason (count, age, disk)",
            m.tasks_removed.clone(),
        );
        registry.register(
            "cache_fs_used_bytes",
            "Bytes in use on the cache dir's file system",
            m.cache_fs_used_bytes.clone(),
        );
        registry.register(
            "cache_fs_used_inodes",
            "Inodes in use on the cache dir's file system",
            m.cache_fs_used_inodes.clone(),
        );
        registry.register(
            "cache_fs_used_percent",
            "Share of the cache dir's file system in use, bytes or inodes, whichever is higher",
            m.cache_fs_used_percent.clone(),
        );
        registry.register(
            "journal_bytes",
            "Size of the journal file",
            m.journal_bytes.clone(),
        );
        registry.register(
            "stats_samples_dropped",
            "Resource samples dropped because the driver had not taken the previous ones",
            m.stats_samples_dropped.clone(),
        );
        registry.register(
            "stats_rows_written",
            "2026-06: rows of iris.worker and iris.task the log service acknowledged",
            m.stats_rows_written.clone(),
        );
        registry.register(
            "stats_rows_dropped",
            "2026-06: stats rows dropped (queue full during a log service outage, or refused)",
            m.stats_rows_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    pub fn rpc_timer(&self, method: &'static str, protocol: &'static str) -> Timer<'_> {
        Timer {
            histogram: self
                .rpc_latency
                .get_or_create(&MethodLabel {
                    method: method.to_string(),
                    protocol: protocol.to_string(),
                })
                .clone(),
            start: Instant::now(),
            _metrics: std::marker::PhantomData,
        }
    }

    pub fn runtime_call(&self, call: &str, started: Instant, ok: bool) {
        let label = CallLabel {
            call: call.to_string(),
        };
        self.runtime_latency
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if !ok {
            self.runtime_errors.get_or_create(&label).inc();
        }
    }
}

/// Observes the time from its creation to its drop.
pub struct Timer<'a> {
    histogram: Histogram,
    start: Instant,
    _metrics: std::marker::PhantomData<&'a Metrics>,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
