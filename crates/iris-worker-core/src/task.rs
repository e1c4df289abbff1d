//! `Task`: the public record of one task attempt, and its `TaskStatus` proto.

use std::collections::BTreeMap;

use super::ids::{AttemptKey, JobId, TaskId};
use super::state::{TaskState, is_task_finished};
use crate::proto;

/// A resource sample, or the running peak of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    pub memory_mb: i64,
    pub memory_peak_mb: i64,
    pub disk_mb: i64,
    pub cpu_millicores: i32,
    pub cpu_percent: i32,
    pub process_count: i32,
}

impl ResourceUsage {
    pub fn to_proto(&self) -> proto::ResourceUsage {
        proto::ResourceUsage {
            memory_mb: self.memory_mb,
            disk_mb: self.disk_mb,
            cpu_millicores: self.cpu_millicores,
            memory_peak_mb: self.memory_peak_mb,
            cpu_percent: self.cpu_percent,
            process_count: self.process_count,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildMetrics {
    pub build_started_ms: u64,
    pub build_finished_ms: u64,
    pub from_cache: bool,
    pub image_tag: String,
}

/// One attempt of a task, as users see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub task_id: TaskId,
    pub job_id: JobId,
    pub task_index: i32,
    pub num_tasks: i32,
    pub attempt_id: i32,
    pub state: TaskState,
    pub status_message: String,
    pub pending_reason: String,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub submitted_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub ports: BTreeMap<String, u16>,
    pub resource_usage: ResourceUsage,
    pub build_metrics: Option<BuildMetrics>,
}

/// A core timestamp as the wire's int64 milliseconds; unset is 0.
pub fn wire_ms(value: Option<u64>) -> i64 {
    value.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl Task {
    /// The key of the task's current attempt.
    pub fn attempt_key(&self) -> AttemptKey {
        AttemptKey {
            task_id: self.task_id.clone(),
            attempt_id: self.attempt_id,
        }
    }

    /// The exit code as a shell reports it: the code, else 128 + the signal, else 0.
    pub fn effective_exit_code(&self) -> i32 {
        match (self.exit_code, self.exit_signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 0,
        }
    }

    pub fn is_finished(&self) -> bool {
        is_task_finished(self.state)
    }

    pub fn to_attempt_proto(&self, worker_id: &str) -> proto::TaskAttempt {
        proto::TaskAttempt {
            attempt_id: self.attempt_id,
            worker_id: worker_id.to_string(),
            state: self.state.to_proto() as i32,
            exit_code: self.effective_exit_code(),
            error: self.error.clone().unwrap_or_default(),
            started_at_ms: wire_ms(self.started_at_ms),
            finished_at_ms: wire_ms(self.finished_at_ms),
            is_worker_failure: self.state == TaskState::WorkerFailed,
        }
    }

    /// The status of this attempt; `attempts` is the task's whole history, oldest first.
    pub fn to_proto(&self, who: &WorkerIdentity, attempts: &[Task]) -> proto::TaskStatus {
        proto::TaskStatus {
            task_id: self.task_id.to_string(),
            job_id: self.job_id.to_string(),
            task_index: self.task_index,
            state: self.state.to_proto() as i32,
            worker_id: who.worker_id.clone(),
            worker_address: who.address.clone(),
            exit_code: self.effective_exit_code(),
            error: self.error.clone().unwrap_or_default(),
            started_at_ms: wire_ms(self.started_at_ms),
            finished_at_ms: wire_ms(self.finished_at_ms),
            ports: self
                .ports
                .iter()
                .map(|(name, port)| (name.clone(), i32::from(*port)))
                .collect(),
            resource_usage: Some(self.resource_usage.to_proto()),
            build_metrics: self.build_metrics.as_ref().map(|b| proto::BuildMetrics {
                build_started_ms: wire_ms(Some(b.build_started_ms)),
                build_finished_ms: wire_ms(Some(b.build_finished_ms)),
                from_cache: b.from_cache,
                image_tag: b.image_tag.clone(),
            }),
            current_attempt_id: self.attempt_id,
            attempts: attempts
                .iter()
                .map(|a| a.to_attempt_proto(&who.worker_id))
                .collect(),
            pending_reason: self.pending_reason.clone(),
            // A controller-side notion; a worker never claims it.
            can_be_scheduled: false,
            status_message: self.status_message.clone(),
            num_tasks: self.num_tasks,
            exit_signal: self.exit_signal.unwrap_or(0),
            oom_killed: self.oom_killed,
        }
    }
}

/// How this worker names itself in statuses and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerIdentity {
    pub worker_id: String,
    pub address: String,
}
