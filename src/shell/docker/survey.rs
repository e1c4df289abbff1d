//! What a starting worker finds in the engine: its own containers, kept for adoption or removed;
//! and `iris-worker cleanup`, which removes every managed container of any worker.

use bollard::Docker;
use bollard::models::ContainerSummary;

use super::DockerRuntime;
use super::engine::{force_remove, list_labelled};
use crate::core::{AttemptKey, TaskId};
use crate::shell::runtime::RuntimeError;

impl DockerRuntime {
    /// This worker's containers: the attempts `keep` wants whose containers ran (still running,
    /// or exited while the worker was down: their exit and output are still in the engine and
    /// are read as an adopted attempt's would be), and how many others (never started, dying,
    /// not wanted, or not of a valid attempt) were removed.
    pub async fn survey(
        &self,
        keep: &dyn Fn(&AttemptKey) -> bool,
    ) -> Result<(Vec<AttemptKey>, usize), RuntimeError> {
        let labels = vec![
            "iris.managed=true".to_string(),
            format!("iris.worker_id={}", self.config.worker_id),
        ];
        let mut kept = Vec::new();
        let mut removed = 0;
        for container in list_labelled(&self.docker, labels).await? {
            use bollard::models::ContainerSummaryStateEnum as State;
            let ran = matches!(container.state, Some(State::RUNNING | State::EXITED));
            match attempt_of(&container) {
                Some(key) if ran && keep(&key) => kept.push(key),
                _ => {
                    if let Some(id) = container.id {
                        force_remove(&self.docker, &id).await;
                        removed += 1;
                    }
                }
            }
        }
        Ok((kept, removed))
    }
}

/// The attempt a container's labels name, if they name a valid one.
fn attempt_of(container: &ContainerSummary) -> Option<AttemptKey> {
    let labels = container.labels.as_ref()?;
    Some(AttemptKey {
        task_id: TaskId::new(labels.get("iris.task_id")?.clone()).ok()?,
        attempt_id: labels.get("iris.attempt_id")?.parse().ok()?,
    })
}

/// Removes every iris-managed container of any worker (`iris-worker cleanup`).
pub async fn remove_all_managed() -> Result<usize, RuntimeError> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| RuntimeError::new(format!("docker engine: {e}")))?;
    let mut removed = 0;
    for container in list_labelled(&docker, vec!["iris.managed=true".to_string()]).await? {
        if let Some(id) = container.id
            && force_remove(&docker, &id).await
        {
            removed += 1;
        }
    }
    Ok(removed)
}
