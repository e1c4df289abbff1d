//! iris-worker: the worker agent of the Iris cluster scheduler.
//!
//! `core` is the sans-IO state machine; `shell` runs it against the world (gRPC, processes, disk,
//! the controller); `cli` is the command line.

pub mod cli;
pub mod core;
pub mod fuzzing;
pub mod requests;
pub mod shell;

/// Generated code, laid out as the proto packages are (`iris.cluster`, `iris.worker_journal`).
pub mod iris {
    pub mod cluster {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("iris.cluster");
        // The proto3 JSON mapping of every message (pbjson), for Connect's application/json.
        include!(concat!(env!("OUT_DIR"), "/iris.cluster.serde.rs"));
    }
    /// The worker's journal records; not part of the wire contract.
    pub mod worker_journal {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("iris.worker_journal");
    }
}

pub use iris::cluster as proto;
pub use iris::worker_journal as journal_proto;
