//! iris-worker-core: the sans-IO state machine of the Iris worker. Every task's state, attempts,
//! ports, timers and the controller outbox.
//!
//! Architecture invariant: nothing in this crate does IO, reads a clock, spawns, uses randomness
//! or iterates a hash map. Time comes in as `now_ms`; effects go out as data. Cargo keeps tokio,
//! tonic and every IO crate out of reach; `tests/core_purity.rs` checks the rest.

/// The wire messages the core reads and writes (`iris.cluster`).
pub use iris_proto::cluster as proto;

mod attempt;
mod config;
mod controller;
mod effect;
mod env;
mod event;
mod hostpaths;
mod ids;
mod invariants;
mod ledger;
mod lifecycle;
mod logs;
mod outbox;
mod planted;
mod ports;
mod reconcile;
mod recovery;
mod removed;
mod retention;
mod spec;
mod state;
mod task;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod timers;
mod worker;

pub use config::{
    CoreConfig, DEFAULT_TERM_TIMEOUT_MS, Era, KILL_REPEAT_MS, Retention, TERM_TIMEOUT_MAX_MS,
};
pub use effect::{
    BuildSpec, BundleSource, ContainerSpec, Effect, JournalEntry, RemovalReason, Signal, TaskReport,
};
pub use env::{EnvContext, RuntimeFlavour, build_iris_env};
pub use event::{Event, ExitStatus};
pub use hostpaths::{APP_DIR, CACHE_MOUNTS};
pub use ids::{AttemptKey, ID_LEN_MAX, IdError, JobId, TaskId};
pub use ledger::{REMOVED_MARGIN_MS, REMOVED_MAX, RemovedAttempt};
pub use lifecycle::{CALLABLE_FILE, CALLABLE_THUNK};
pub use logs::{
    LineStart, LogFilter, LogFilterError, LogLimits, LogLine, LogSource, compile_regex,
};
pub use planted::PlantedBug;
pub use ports::{PortAllocator, PortsExhausted};
pub use reconcile::{Desired, Intent, Observation};
pub use recovery::{LOST_ON_RESTART, RecoveredAttempt, RecoveredOutcome};
pub use spec::{
    ARGV_BYTES_MAX, ARGV_COUNT_MAX, Entrypoint, Environment, ReconcileSpec, Resources, SpecEra,
    TaskSpec, ValidationError,
};
pub use state::{TaskState, is_legal_transition, is_task_finished, short_state_name, state_name};
pub use task::{BuildMetrics, ResourceUsage, Task, WorkerIdentity, wire_ms};
pub use worker::{KillError, SubmitError, WorkerCore};
