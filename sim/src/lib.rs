//! iris-sim: deterministic simulation of Iris workers and a controller on turmoil. The real
//! worker (core, driver, journal, log store, gRPC service) runs on simulated hosts against a
//! simulated container runtime and controller, under faults drawn from a seed. See
//! ARCHITECTURE.md for the module map.

pub mod batch;
pub mod controller;
pub mod db;
pub mod machine;
pub mod net;
pub mod oracle;
pub mod plan;
pub mod reconcile;
pub mod reports;
pub mod rng;
pub mod runtime;
pub mod shared;
pub mod worker;
pub mod world;

pub use batch::{failure_report, run_seeds, summary_line};
pub use plan::Shape;
pub use shared::Variant;
pub use world::{Outcome, run_seed};
