//! Canonical values the core's tests, the fuzz model and the simulator share, so each is written
//! once: a worker's core configuration and attempt keys. Requests are `requests.rs`.

use crate::core::{AttemptKey, CoreConfig, TaskId, WorkerIdentity};

/// A worker with a controller, an identity and 100 ports.
pub fn config() -> CoreConfig {
    CoreConfig {
        identity: WorkerIdentity {
            worker_id: "worker-1".to_string(),
            address: "10.1.2.3:10001".to_string(),
        },
        controller_address: Some("http://127.0.0.1:10000".to_string()),
        advertise_host: "10.1.2.3".to_string(),
        port_range: 30000..=30099,
        ..CoreConfig::default()
    }
}

/// The key of an attempt; panics on an invalid id (fixtures use valid ones).
pub fn key(task_id: &str, attempt_id: i32) -> AttemptKey {
    AttemptKey {
        task_id: TaskId::new(task_id).expect("fixture ids are valid"),
        attempt_id,
    }
}
