//! What a starting worker finds in the engine: its own containers, kept for adoption or removed;
//! and `iris-worker cleanup`, which removes every managed container of any worker.

use std::collections::BTreeSet;

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

/// When the late sweep looks again after start-up.
const LATE_SWEEPS: [std::time::Duration; 3] = [
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(5),
    std::time::Duration::from_secs(30),
];

impl DockerRuntime {
    /// Removes, a few times after start-up, containers of `lost`: attempts the journal knew as
    /// live that were not adopted (they ended WORKER_FAILED and never run again). A create the
    /// previous run sent just before it was killed can reach the engine after the survey
    /// listed it; without this sweep that container would sit there until the next restart
    /// (found by tests/torture.rs).
    pub fn sweep_lost_later(&self, lost: BTreeSet<AttemptKey>) {
        if lost.is_empty() {
            return;
        }
        let docker = self.docker.clone();
        let labels = vec![
            "iris.managed=true".to_string(),
            format!("iris.worker_id={}", self.config.worker_id),
        ];
        tokio::spawn(async move {
            for delay in LATE_SWEEPS {
                tokio::time::sleep(delay).await;
                let Ok(found) = list_labelled(&docker, labels.clone()).await else {
                    continue;
                };
                for container in found {
                    let lost_one = attempt_of(&container).is_some_and(|key| lost.contains(&key));
                    if let (true, Some(id)) = (lost_one, container.id) {
                        tracing::warn!(%id, "removing a container of a lost attempt that appeared after start-up");
                        force_remove(&docker, &id).await;
                    }
                }
            }
        });
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
