//! What the core's tests, the shell's tests, the fuzz targets and the benchmarks share, so each is
//! written once: a worker's configuration, attempt keys and specs (here), a hand-driven core with
//! its trace (`harness`), and a model of the world around the core with the checker of every
//! invariant users rely on (`model`). Built only for tests and with the `testing` feature; it
//! never ships in the worker.

mod harness;
pub mod model;

pub use harness::Harness;

use crate::proto::worker::RunTaskRequest;
use crate::{AttemptKey, CoreConfig, TaskId, TaskSpec, WorkerIdentity};

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

/// A request to run `argv`: `RunTaskRequest::for_command`.
pub fn request(task_id: &str, attempt_id: i32, argv: &[&str]) -> RunTaskRequest {
    RunTaskRequest::for_command(task_id, attempt_id, argv)
}

/// The spec of a `python3 train.py` attempt.
pub fn spec(task_id: &str, attempt_id: i32) -> TaskSpec {
    TaskSpec::from_request(&request(task_id, attempt_id, &["python3", "train.py"])).unwrap()
}

/// The spec of a request; panics on one the core refuses.
pub fn spec_with(req: RunTaskRequest) -> TaskSpec {
    TaskSpec::from_request(&req).unwrap()
}
