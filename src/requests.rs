//! Builders of wire requests, shared by the CLI, the tests, the fuzz model and the benchmarks.

use crate::proto;

/// A RunTaskRequest for a command, with the job id taken from the task id (`{job}/task-{i}`).
pub fn command_request(
    task_id: &str,
    attempt_id: i32,
    argv: &[&str],
) -> proto::worker::RunTaskRequest {
    let job_id = task_id.rsplit_once('/').map_or(task_id, |(job, _)| job);
    proto::worker::RunTaskRequest {
        job_id: job_id.to_string(),
        task_id: task_id.to_string(),
        num_tasks: 1,
        entrypoint: Some(proto::Entrypoint {
            kind: Some(proto::entrypoint::Kind::Command(proto::CommandEntrypoint {
                argv: argv.iter().map(|s| s.to_string()).collect(),
            })),
        }),
        attempt_id,
        ..Default::default()
    }
}
