//! The engine's errors as the runtime reports them, and the calls every part makes the same way:
//! listing this worker's containers and removing one.

use std::collections::HashMap;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};

use crate::shell::runtime::RuntimeError;

/// An engine error as the runtime reports it: an answer from the engine is about the task; no
/// answer at all (connection refused, timed out) is about the machine.
pub(super) fn engine_error(context: &str, e: &DockerError) -> RuntimeError {
    let text = format!("{context}: {}", message(e));
    match e {
        DockerError::DockerResponseServerError { .. } => RuntimeError::new(text),
        _ => RuntimeError::infrastructure(text),
    }
}

pub(super) fn message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

pub(super) fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

pub(super) fn is_port_conflict(text: &str) -> bool {
    text.contains("port is already allocated") || text.contains("address already in use")
}

/// Every container (running or not) carrying all of `labels`.
pub(super) async fn list_labelled(
    docker: &Docker,
    labels: Vec<String>,
) -> Result<Vec<ContainerSummary>, RuntimeError> {
    let filters: HashMap<&str, Vec<String>> = [("label", labels)].into();
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map_err(|e| RuntimeError::new(format!("listing containers: {}", message(&e))))
}

/// Removes a container by name or id, running or not; whether the engine confirmed it.
pub(super) async fn force_remove(docker: &Docker, name: &str) -> bool {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    docker.remove_container(name, Some(options)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_conflicts_are_recognised() {
        assert!(is_port_conflict(
            "Bind for 0.0.0.0:30001 failed: port is already allocated"
        ));
        assert!(!is_port_conflict("No such image: x"));
    }
}
