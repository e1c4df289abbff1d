//! What every simulated host and the world's loop share: the simulated clock, the machines (their
//! container engines outlive the workers), the controller's database (it outlives the
//! controller, as a real one's would) and the oracle.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use iris_worker::core::AttemptKey;

use crate::db::Db;
use crate::machine::Machine;
use crate::oracle::Oracle;
use crate::plan::Plan;

/// What a run is configured with besides its seed.
#[derive(Clone, Debug, Default)]
pub struct Variant {
    /// A deliberately broken worker (only with the `planted` feature).
    #[cfg(feature = "planted")]
    pub planted: Option<iris_worker::core::PlantedBug>,
}

/// One PushLogs call's lines: (source, text).
pub type Batch = Vec<(String, String)>;

pub struct Shared {
    pub plan: Plan,
    pub variant: Variant,
    now_ms: AtomicU64,
    pub machines: Vec<Mutex<Machine>>,
    pub db: Mutex<Db>,
    pub oracle: Mutex<Oracle>,
    /// Each worker's cache directory (journal and logs), kept across its restarts.
    pub cache_dirs: Vec<PathBuf>,
    /// Every log line a worker could serve, by worker and attempt: number -> text.
    pub served: Mutex<BTreeMap<(usize, AttemptKey), BTreeMap<i64, String>>>,
    /// What the log service received, by key (`/job-1/0:0`): each PushLogs batch of (source,
    /// text), in arrival order.
    pub pushed: Mutex<BTreeMap<String, Vec<Batch>>>,
}

/// A poisoned lock means a host panicked; the run fails on that, so the data is still usable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn new(plan: Plan, variant: Variant, cache_dirs: Vec<PathBuf>) -> Shared {
        let machines = (0..plan.shape.workers)
            .map(|_| Mutex::new(Machine::default()))
            .collect();
        Shared {
            plan,
            variant,
            now_ms: AtomicU64::new(0),
            machines,
            db: Mutex::new(Db::default()),
            oracle: Mutex::new(Oracle::default()),
            cache_dirs,
            served: Mutex::default(),
            pushed: Mutex::default(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    pub fn set_now(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn machine(&self, worker: usize) -> MutexGuard<'_, Machine> {
        let mut m = lock(&self.machines[worker]);
        m.advance(self.now_ms());
        m
    }

    pub fn event(&self, what: impl std::fmt::Display) {
        lock(&self.oracle).event(self.now_ms(), what);
    }

    pub fn violation(&self, what: impl std::fmt::Display) {
        lock(&self.oracle).violation(self.now_ms(), what);
    }
}
