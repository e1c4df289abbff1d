//! iris-worker: the worker agent of the Iris cluster scheduler.
//!
//! `core` (the `iris-worker-core` crate) is the sans-IO state machine; `shell` runs it against the
//! world (RPC, processes, containers, disk, the controller); `cli` is the command line.

pub mod cli;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod shell;

pub use iris_worker_core as core;

/// Iris's wire messages (from `iris-proto`) and the tonic services generated over them.
pub mod proto {
    pub use iris_proto::cluster::*;
    #[allow(clippy::all, clippy::pedantic)]
    mod services {
        tonic::include_proto!("iris.cluster");
    }
    /// The reconcile era's messages (2026-06, `proto/iris/v2026_06`, `proto/finelog`).
    pub use iris_proto::v2026_06;
    pub use services::*;
}

pub use iris_proto::journal as journal_proto;
