//! iris-worker: the worker agent of the Iris cluster scheduler.
//!
//! `core` is the sans-IO state machine; everything that touches the world lives outside it.

pub mod core;

/// Generated from `proto/iris/cluster.proto` (package `iris.cluster`).
pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("iris.cluster");
}
