//! The reconcile era's start-up, one wiring for `serve` and the simulator: the Reconcile
//! handler's state, the register loop with its watchdog, and the log pusher, over an assembled
//! worker. What differs between the two comes in `EraWiring` (the dialer, the token, whether the
//! era probe registered already, whether health is measured and logs are read on blocking
//! threads); deciding the era stays with the caller.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use crate::proto::v2026_06::iris::cluster::controller::RegisterRequest;
use crate::shell::assemble::AssembledWorker;
use crate::shell::connect::client::{ConnectClient, Dialer};
use crate::shell::era2026_06::health::HostCpu;
use crate::shell::era2026_06::log_service;
use crate::shell::era2026_06::logpush::LogPusher;
use crate::shell::era2026_06::profile_loop::ProfileLoop;
use crate::shell::era2026_06::reconcile::Reconciler;
use crate::shell::era2026_06::register;
use crate::shell::era2026_06::stats_writer::{StatsWriter, WorkerRows};
use crate::shell::trouble::Troubles;

/// The era's name in `/metrics` (`iris_worker_iris_protocol{era}`).
pub const ERA: &str = "2026-06";

/// What the era's start-up is given.
pub struct EraWiring {
    /// The controller, over Connect.
    pub client: ConnectClient,
    pub register: RegisterRequest,
    /// Whether the worker is registered already (`serve`'s era probe registers).
    pub registered: bool,
    pub token: Option<String>,
    pub cache_dir: PathBuf,
    /// How the log service is dialled (TCP, or the simulator's network).
    pub dial: Dialer,
    /// Measure the cache dir's file system for the health answer (not in a simulation,
    /// whose host disk must not decide a replay).
    pub measure_health: bool,
    /// Read logs on blocking threads (production) or in place (the simulator).
    pub blocking_reads: bool,
    /// Write Iris's stats rows (`iris.worker`, `iris.task`) to the log service (not in a
    /// simulation: its hosts have no machine of their own to describe).
    pub stats_rows: bool,
    /// With stats rows: a CPU profile of each running attempt this often (`None`: never)...
    pub profile_every: Option<Duration>,
    /// ...sampling this many seconds.
    pub profile_seconds: u32,
    /// Without a Reconcile for this long, kill every attempt and register again.
    pub reconcile_timeout: Duration,
    /// Why the machine must not take work; the health answer carries it.
    pub troubles: Troubles,
    /// This VM's TPU variant, when it is a TPU worker: a TPU task elsewhere is refused.
    pub tpu: Option<String>,
}

/// Starts the register loop, the log pusher and the stats writer; returns the Reconcile
/// handler's state.
pub fn start(wiring: EraWiring, worker: &AssembledWorker) -> Arc<Reconciler> {
    let now = i64::try_from(worker.clock.now_ms()).unwrap_or(i64::MAX);
    let finder = log_service::Finder {
        controller: wiring.client.clone(),
        dial: wiring.dial.clone(),
        token: wiring.token.clone(),
    };
    let worker_rows = wiring.stats_rows.then(|| {
        let tables = worker.stats.clone();
        let writer = StatsWriter {
            tables: tables.clone(),
            driver: worker.driver.clone(),
            samples: worker.samples.clone(),
            worker_id: wiring.register.worker_id.clone(),
            finder: finder.clone(),
            metrics: worker.metrics.clone(),
        };
        tokio::spawn(writer.run());
        if let Some(every) = wiring.profile_every {
            let profiles = ProfileLoop {
                driver: worker.driver.clone(),
                tables: tables.clone(),
                worker_id: wiring.register.worker_id.clone(),
                every,
                seconds: wiring.profile_seconds,
            };
            tokio::spawn(profiles.run());
        }
        Arc::new(WorkerRows::new(
            tables.workers,
            &wiring.register,
            worker.samples.clone(),
        ))
    });
    let reconciler = Arc::new(Reconciler {
        driver: worker.driver.clone(),
        worker_id: wiring.register.worker_id.clone(),
        cache_dir: wiring.cache_dir.clone(),
        last_reconcile_ms: Arc::new(AtomicI64::new(now)),
        clock: worker.clock,
        measure_health: wiring.measure_health,
        troubles: wiring.troubles,
        tpu: wiring.tpu,
        cpu: Arc::new(HostCpu::default()),
        worker_rows,
    });
    worker.metrics.set_protocol_era(ERA);
    let worker_id = wiring.register.worker_id.clone();
    let (client, request) = (wiring.client.clone(), wiring.register);
    let (driver, last, clock) = (
        worker.driver.clone(),
        reconciler.last_reconcile_ms.clone(),
        worker.clock,
    );
    let (registered, timeout) = (wiring.registered, wiring.reconcile_timeout);
    tokio::spawn(async move {
        if !registered {
            register::register(&client, &request).await;
        }
        register::run(client, request, driver, last, timeout, clock).await;
    });
    let pusher = LogPusher {
        driver: worker.driver.clone(),
        worker_id: worker_id.clone(),
        logs: worker.logs.clone(),
        finder,
        cache_dir: wiring.cache_dir,
        metrics: worker.metrics.clone(),
        blocking_reads: wiring.blocking_reads,
    };
    tokio::spawn(pusher.run());
    reconciler
}
