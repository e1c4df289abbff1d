//! The JSON view of a task status, the one shape the CLI's `--json` output and the dashboard's
//! API both print. Pure: a function of the status.

use serde_json::{Value, json};

use crate::core::state_name;
use crate::proto;

pub fn status_json(status: &proto::TaskStatus) -> Value {
    let usage = status.resource_usage.unwrap_or_default();
    json!({
        "task_id": status.task_id,
        "job_id": status.job_id,
        "task_index": status.task_index,
        "num_tasks": status.num_tasks,
        "status": state_name(status.state),
        "worker_id": status.worker_id,
        "exit_code": status.exit_code,
        "exit_signal": status.exit_signal,
        "oom_killed": status.oom_killed,
        "error": status.error,
        "started_at_ms": status.started_at_ms,
        "finished_at_ms": status.finished_at_ms,
        "ports": status.ports,
        "current_attempt_id": status.current_attempt_id,
        "status_message": status.status_message,
        "pending_reason": status.pending_reason,
        "resource_usage": {
            "memory_mb": usage.memory_mb,
            "memory_peak_mb": usage.memory_peak_mb,
            "cpu_millicores": usage.cpu_millicores,
            "cpu_percent": usage.cpu_percent,
            "process_count": usage.process_count,
            "disk_mb": usage.disk_mb,
        },
        "attempts": status.attempts.iter().map(|a| json!({
            "attempt_id": a.attempt_id,
            "status": state_name(a.state),
            "exit_code": a.exit_code,
            "error": a.error,
            "started_at_ms": a.started_at_ms,
            "finished_at_ms": a.finished_at_ms,
            "is_worker_failure": a.is_worker_failure,
        })).collect::<Vec<_>>(),
    })
}
