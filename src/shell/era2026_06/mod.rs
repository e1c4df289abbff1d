//! The reconcile era of Iris (2026-06, marin-iris 0.2.20.dev202606180959): its adapter to the
//! core. The controller calls `Reconcile` about every second with the whole set of attempts it
//! wants here; the worker registers once (`Register`) and answers each call from the core's
//! state at once. Nothing here decides: `spec.rs` translates a RunTaskRequest into the core's
//! `TaskSpec`, `reconcile.rs` a desired set into `core::Desired` and observations back, and
//! `register.rs` registers and watches for a controller that stopped calling. Toward the
//! cluster's log service (found by `log_service.rs`), `logpush.rs` ships every attempt's lines and
//! `stats_writer.rs` the rows of Iris's stats tables (`shell::stats`).
//!
//! A third era would be a folder beside this one: its proto in `proto/`, its translation, its
//! handlers and its registration, and the same core underneath.

pub mod health;
pub mod log_service;
pub mod logpush;
pub mod profile_loop;
pub mod reconcile;
pub mod register;
pub mod spec;
pub mod start;
pub mod stats_writer;
pub mod task_env;

/// Where Iris's Connect paths of the era live.
pub const RECONCILE_PATH: &str = "/iris.cluster.WorkerService/Reconcile";
pub const REGISTER_PATH: &str = "/iris.cluster.ControllerService/Register";
