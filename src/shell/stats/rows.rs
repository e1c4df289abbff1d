//! The rows of Iris's stats tables in the log service, as Iris 0.2.20 declares them
//! (`iris/cluster/worker/stats.py`): `iris.worker`, one per Reconcile (the host and who it is),
//! `iris.task`, one per running attempt every few seconds (what it uses), and `iris.profile`
//! (`runtime/profile.py`), one per profile taken. Each table is one
//! list of columns (`Col`), from which both the schema the worker registers and the Arrow batch
//! it writes are made, so the two cannot disagree. Every column is registered nullable, as
//! finelog's client registers a dataclass (its compacted segments are all-nullable, and a
//! non-nullable column would conflict with them); timestamps are milliseconds without a zone
//! (finelog's `TIMESTAMP_MS`, Python's naive UTC `datetime`).

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};

use crate::core::ResourceUsage;
use crate::proto::v2026_06::finelog::stats as wire;

/// One column of a table: its name and how a row gives its value.
pub enum Col<R> {
    Str(&'static str, fn(&R) -> &str),
    I64(&'static str, fn(&R) -> i64),
    F64(&'static str, fn(&R) -> f64),
    OptI64(&'static str, fn(&R) -> Option<i64>),
    OptF64(&'static str, fn(&R) -> Option<f64>),
    OptBool(&'static str, fn(&R) -> Option<bool>),
    Bytes(&'static str, fn(&R) -> &[u8]),
    /// Epoch milliseconds.
    Ts(&'static str, fn(&R) -> i64),
}

impl<R> Col<R> {
    fn name(&self) -> &'static str {
        match self {
            Col::Str(n, _)
            | Col::I64(n, _)
            | Col::F64(n, _)
            | Col::OptI64(n, _)
            | Col::OptF64(n, _)
            | Col::OptBool(n, _)
            | Col::Bytes(n, _)
            | Col::Ts(n, _) => n,
        }
    }

    fn types(&self) -> (wire::ColumnType, DataType) {
        match self {
            Col::Str(..) => (wire::ColumnType::String, DataType::Utf8),
            Col::I64(..) | Col::OptI64(..) => (wire::ColumnType::Int64, DataType::Int64),
            Col::F64(..) | Col::OptF64(..) => (wire::ColumnType::Float64, DataType::Float64),
            Col::OptBool(..) => (wire::ColumnType::Bool, DataType::Boolean),
            Col::Bytes(..) => (wire::ColumnType::Bytes, DataType::Binary),
            Col::Ts(..) => (
                wire::ColumnType::TimestampMs,
                DataType::Timestamp(TimeUnit::Millisecond, None),
            ),
        }
    }

    fn array(&self, rows: &[R]) -> ArrayRef {
        match self {
            Col::Str(_, f) => Arc::new(StringArray::from_iter_values(rows.iter().map(f))),
            Col::I64(_, f) => Arc::new(Int64Array::from_iter_values(rows.iter().map(f))),
            Col::F64(_, f) => Arc::new(Float64Array::from_iter_values(rows.iter().map(f))),
            Col::OptI64(_, f) => Arc::new(rows.iter().map(f).collect::<Int64Array>()),
            Col::OptF64(_, f) => Arc::new(rows.iter().map(f).collect::<Float64Array>()),
            Col::OptBool(_, f) => Arc::new(rows.iter().map(f).collect::<BooleanArray>()),
            Col::Bytes(_, f) => Arc::new(BinaryArray::from_iter_values(rows.iter().map(f))),
            Col::Ts(_, f) => Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(f),
            )),
        }
    }
}

/// A row type of one stats table.
pub trait StatsRow: Send + 'static {
    /// The table's namespace in the log service.
    const NAMESPACE: &'static str;
    /// The column compaction sorts by (Iris's `key_column`).
    const KEY_COLUMN: &'static str;
    /// The columns in Iris's order.
    fn columns() -> &'static [Col<Self>]
    where
        Self: Sized;
    /// About what the row costs in memory and on the wire (a batch is cut by it).
    fn size(&self) -> usize {
        256
    }
}

/// The schema to register, as finelog's client derives it from Iris's dataclass.
pub fn wire_schema<R: StatsRow>() -> wire::Schema {
    wire::Schema {
        columns: R::columns()
            .iter()
            .map(|c| wire::Column {
                name: c.name().to_string(),
                r#type: c.types().0 as i32,
                nullable: true,
            })
            .collect(),
        key_column: R::KEY_COLUMN.to_string(),
    }
}

fn arrow_schema<R: StatsRow>() -> Arc<Schema> {
    let fields: Vec<Field> = R::columns()
        .iter()
        .map(|c| Field::new(c.name(), c.types().1, true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// `rows` as one Arrow record batch.
pub fn batch<R: StatsRow>(rows: &[R]) -> Result<RecordBatch, ArrowError> {
    let arrays = R::columns().iter().map(|c| c.array(rows)).collect();
    RecordBatch::try_new(arrow_schema::<R>(), arrays)
}

/// `rows` as the Arrow IPC stream `WriteRows` carries: the schema, one batch, the end marker.
pub fn encode<R: StatsRow>(rows: &[R]) -> Result<Vec<u8>, ArrowError> {
    let batch = batch(rows)?;
    let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema())?;
    writer.write(&batch)?;
    writer.finish()?;
    writer.into_inner()
}

/// `iris.worker`: one per Reconcile (Iris's `IrisWorkerStat`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerRow {
    pub worker_id: String,
    pub ts_ms: i64,
    /// "RUNNING" while any attempt is live, else "IDLE".
    pub status: &'static str,
    pub address: String,
    pub cpu_pct: f64,
    pub mem_bytes: i64,
    pub mem_total_bytes: i64,
    pub disk_used_bytes: i64,
    pub disk_total_bytes: i64,
    pub running_task_count: i64,
    pub total_process_count: i64,
    pub net_recv_bytes: i64,
    pub net_sent_bytes: i64,
    pub identity: Arc<WorkerIdentity>,
}

/// What a worker row repeats every time (Iris keeps each row self-contained).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerIdentity {
    pub device_type: String,
    pub device_variant: String,
    pub cpu_count: i64,
    pub memory_bytes: i64,
    pub tpu_name: String,
    pub gce_instance_name: String,
    pub zone: String,
}

const WORKER_COLUMNS: &[Col<WorkerRow>] = &[
    Col::Str("worker_id", |r| &r.worker_id),
    Col::Ts("ts", |r| r.ts_ms),
    Col::Str("status", |r| r.status),
    Col::Str("address", |r| &r.address),
    Col::F64("cpu_pct", |r| r.cpu_pct),
    Col::I64("mem_bytes", |r| r.mem_bytes),
    Col::I64("mem_total_bytes", |r| r.mem_total_bytes),
    Col::I64("disk_used_bytes", |r| r.disk_used_bytes),
    Col::I64("disk_total_bytes", |r| r.disk_total_bytes),
    Col::I64("running_task_count", |r| r.running_task_count),
    Col::I64("total_process_count", |r| r.total_process_count),
    Col::I64("net_recv_bytes", |r| r.net_recv_bytes),
    Col::I64("net_sent_bytes", |r| r.net_sent_bytes),
    Col::Str("device_type", |r| &r.identity.device_type),
    Col::Str("device_variant", |r| &r.identity.device_variant),
    Col::I64("cpu_count", |r| r.identity.cpu_count),
    Col::I64("memory_bytes", |r| r.identity.memory_bytes),
    Col::Str("tpu_name", |r| &r.identity.tpu_name),
    Col::Str("gce_instance_name", |r| &r.identity.gce_instance_name),
    Col::Str("zone", |r| &r.identity.zone),
];

impl StatsRow for WorkerRow {
    const NAMESPACE: &'static str = "iris.worker";
    const KEY_COLUMN: &'static str = "worker_id";
    fn columns() -> &'static [Col<Self>] {
        WORKER_COLUMNS
    }
}

/// `iris.task`: one per running attempt per sample period (Iris's `IrisTaskStat`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskRow {
    /// The task's wire name, `/<user>/<job>/<index>`.
    pub task_id: String,
    pub attempt_id: i64,
    pub worker_id: String,
    pub ts_ms: i64,
    pub cpu_millicores: i64,
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub memory_peak_mb: i64,
    pub accelerator_util_pct: Option<f64>,
    pub accelerator_mem_bytes: Option<i64>,
}

impl TaskRow {
    /// The row of an attempt's sample taken at `at_ms` (no accelerator figures: the worker
    /// does not read TPU utilisation).
    pub fn of_sample(
        task_id: String,
        attempt_id: i32,
        worker_id: String,
        at_ms: u64,
        usage: &ResourceUsage,
    ) -> TaskRow {
        TaskRow {
            task_id,
            attempt_id: i64::from(attempt_id),
            worker_id,
            ts_ms: i64::try_from(at_ms).unwrap_or(i64::MAX),
            cpu_millicores: i64::from(usage.cpu_millicores),
            memory_mb: usage.memory_mb,
            disk_mb: usage.disk_mb,
            memory_peak_mb: usage.memory_peak_mb,
            accelerator_util_pct: None,
            accelerator_mem_bytes: None,
        }
    }
}

const TASK_COLUMNS: &[Col<TaskRow>] = &[
    Col::Str("task_id", |r| &r.task_id),
    Col::I64("attempt_id", |r| r.attempt_id),
    Col::Str("worker_id", |r| &r.worker_id),
    Col::Ts("ts", |r| r.ts_ms),
    Col::I64("cpu_millicores", |r| r.cpu_millicores),
    Col::I64("memory_mb", |r| r.memory_mb),
    Col::I64("disk_mb", |r| r.disk_mb),
    Col::I64("memory_peak_mb", |r| r.memory_peak_mb),
    Col::OptF64("accelerator_util_pct", |r| r.accelerator_util_pct),
    Col::OptI64("accelerator_mem_bytes", |r| r.accelerator_mem_bytes),
];

impl StatsRow for TaskRow {
    const NAMESPACE: &'static str = "iris.task";
    const KEY_COLUMN: &'static str = "task_id";
    fn columns() -> &'static [Col<Self>] {
        TASK_COLUMNS
    }
}

/// `iris.profile`: one per profile taken (Iris's `IrisProfile`, `runtime/profile.py`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileRow {
    /// The task's wire name, or `/system/worker/<id>` for the worker itself.
    pub source: String,
    pub attempt_id: Option<i64>,
    /// The worker that took it.
    pub vm_id: String,
    pub captured_at_ms: i64,
    pub duration_seconds: i64,
    /// "cpu", "memory" or "thread".
    pub kind: &'static str,
    /// py-spy's format ("flamegraph", "speedscope", "raw"), or "raw" for a thread dump.
    pub format: &'static str,
    /// "periodic" or "on_demand".
    pub trigger: &'static str,
    pub rate_hz: Option<i64>,
    pub native: Option<bool>,
    pub leaks: Option<bool>,
    pub locals_dump: Option<bool>,
    pub profile_data: Vec<u8>,
}

const PROFILE_COLUMNS: &[Col<ProfileRow>] = &[
    Col::Str("source", |r| &r.source),
    Col::OptI64("attempt_id", |r| r.attempt_id),
    Col::Str("vm_id", |r| &r.vm_id),
    Col::Ts("captured_at", |r| r.captured_at_ms),
    Col::I64("duration_seconds", |r| r.duration_seconds),
    Col::Str("type", |r| r.kind),
    Col::Str("format", |r| r.format),
    Col::Str("trigger", |r| r.trigger),
    Col::OptI64("rate_hz", |r| r.rate_hz),
    Col::OptBool("native", |r| r.native),
    Col::OptBool("leaks", |r| r.leaks),
    Col::OptBool("locals_dump", |r| r.locals_dump),
    Col::Bytes("profile_data", |r| &r.profile_data),
];

impl StatsRow for ProfileRow {
    const NAMESPACE: &'static str = "iris.profile";
    const KEY_COLUMN: &'static str = "source";
    fn columns() -> &'static [Col<Self>] {
        PROFILE_COLUMNS
    }
    fn size(&self) -> usize {
        256 + self.profile_data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_ipc::reader::StreamReader;

    fn task(i: i64) -> TaskRow {
        TaskRow {
            task_id: format!("/alice/job/{i}"),
            attempt_id: i,
            worker_id: "w-1".into(),
            ts_ms: 1_780_000_000_000 + i,
            cpu_millicores: 250,
            memory_mb: 64,
            ..TaskRow::default()
        }
    }

    #[test]
    fn the_schemas_are_iriss_column_for_column() {
        let names = |s: wire::Schema| -> Vec<String> {
            assert!(s.columns.iter().all(|c| c.nullable));
            s.columns.into_iter().map(|c| c.name).collect()
        };
        // iris/cluster/worker/stats.py, IrisTaskStat and IrisWorkerStat, in field order.
        assert_eq!(
            names(wire_schema::<TaskRow>()),
            [
                "task_id",
                "attempt_id",
                "worker_id",
                "ts",
                "cpu_millicores",
                "memory_mb",
                "disk_mb",
                "memory_peak_mb",
                "accelerator_util_pct",
                "accelerator_mem_bytes"
            ]
        );
        let worker = wire_schema::<WorkerRow>();
        assert_eq!(worker.key_column, "worker_id");
        assert_eq!(
            worker.columns[1].r#type,
            wire::ColumnType::TimestampMs as i32
        );
        assert_eq!(worker.columns[4].r#type, wire::ColumnType::Float64 as i32);
        assert_eq!(names(worker).len(), 20);
        let profile = wire_schema::<ProfileRow>();
        assert_eq!(profile.key_column, "source");
        assert_eq!(profile.columns[12].name, "profile_data");
        assert_eq!(profile.columns[12].r#type, wire::ColumnType::Bytes as i32);
        assert_eq!(profile.columns[9].r#type, wire::ColumnType::Bool as i32);
    }

    #[test]
    fn a_batch_reads_back_as_written_with_nulls_where_a_value_is_absent() {
        let mut rows: Vec<TaskRow> = (0..3).map(task).collect();
        rows[1].accelerator_util_pct = Some(55.5);
        let bytes = encode(&rows).unwrap();
        let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let back = reader.next().unwrap().unwrap();
        assert!(reader.next().is_none(), "exactly one batch");
        assert_eq!(back.num_rows(), 3);
        let ids = back
            .column_by_name("task_id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(ids.value(2), "/alice/job/2");
        let util = back.column_by_name("accelerator_util_pct").unwrap();
        assert_eq!(util.null_count(), 2);
        assert_eq!(
            back.schema().field_with_name("ts").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
    }
}
