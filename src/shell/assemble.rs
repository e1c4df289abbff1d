//! Puts a worker together from its parts: the journal is replayed, surviving containers are
//! adopted, the driver is spawned and the gRPC service built around it. Shared by `serve` (real
//! sockets and runtimes) and the simulator (turmoil's network, a simulated runtime), so both run
//! the same wiring.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::core::{AttemptKey, CoreConfig, Era, LogLimits, TaskId, WorkerCore};
use crate::shell::blobs::BlobStore;
use crate::shell::controller::ControllerClient;
use crate::shell::driver::{CallDeadlines, Clock, Driver, DriverHandle, DriverParts};
use crate::shell::journal::{Journal, Recovered};
use crate::shell::logs::store::{LOGS_DIR, LogStore, LogStoreConfig};
use crate::shell::metrics::Metrics;
use crate::shell::retention::sweep_orphans;
use crate::shell::runtime::Runtime;
use crate::shell::samples::SampleStore;
use crate::shell::service::WorkerService;
use crate::shell::stats::tables::StatsTables;
use crate::shell::trouble::Troubles;

/// Everything a worker is made of, apart from its runtime.
pub struct WorkerSetup {
    pub config: CoreConfig,
    pub cache_dir: PathBuf,
    pub log_memory: LogLimits,
    pub log_disk_bytes_max: u64,
    pub clock: Clock,
    /// The controller the worker serves; `config.era` must be `link.core_era()`.
    pub link: EraLink,
    pub deadlines: CallDeadlines,
    /// How often the cache dir's file system is measured for retention (`None`: never).
    pub disk_sample_every: Option<std::time::Duration>,
    /// Why the machine must not take work (the era's health answer reads the same set).
    pub troubles: Troubles,
}

/// The controller a worker serves, in its era, with what that era needs of the assembly.
/// Decided once (`serve` asks the controller; the simulator's plan says) and carried from there.
pub enum EraLink {
    /// No controller: tasks come through the task era's RPCs (the CLI, a test).
    Standalone,
    /// The task era (2026-01): the worker registers, heartbeats and reports through this client.
    Push(Box<ControllerClient>),
    /// The reconcile era (2026-06): the controller asks and the worker answers; workdir files
    /// come from the controller's blob store (none in the simulator, whose tasks have none).
    Reconcile { blobs: Option<Arc<BlobStore>> },
}

impl EraLink {
    /// The core's side of the era: a reconcile-era worker ships its logs before retention may
    /// remove them.
    pub fn core_era(&self) -> Era {
        match self {
            EraLink::Standalone | EraLink::Push(_) => Era::Push,
            EraLink::Reconcile { .. } => Era::Reconcile { ships_logs: true },
        }
    }
}

pub struct AssembledWorker {
    pub driver: DriverHandle,
    pub driver_task: JoinHandle<()>,
    pub service: WorkerService,
    pub logs: LogStore,
    pub metrics: Arc<Metrics>,
    pub samples: SampleStore,
    /// The log service's stats tables (2026-06): queued here, written by the era's writer.
    pub stats: StatsTables,
    /// The driver's clock, for the parts of an era that keep time (the reconcile watchdog).
    pub clock: Clock,
}

/// The runtime and, of the attempts the journal says were live, those whose containers are still
/// running and are taken back (the runtime removes the rest).
pub type RuntimeAndAdopted = (Arc<dyn Runtime>, BTreeSet<AttemptKey>);

/// The attempts the journal says were live that may be adopted: only the newest attempt of its
/// task. An older one was being superseded when the worker stopped; its container is removed
/// with the other leftovers before anything is reported, and it is reported lost.
fn adoptable(recovered: &Recovered) -> BTreeSet<AttemptKey> {
    let mut newest: BTreeMap<&TaskId, i32> = BTreeMap::new();
    for r in recovered.iter().flatten() {
        let n = newest.entry(&r.spec.task_id).or_insert(r.spec.attempt_id);
        *n = (*n).max(r.spec.attempt_id);
    }
    recovered
        .iter()
        .flatten()
        .filter(|r| r.outcome.is_none() && newest[&r.spec.task_id] == r.spec.attempt_id)
        .map(|r| r.spec.attempt_key())
        .collect()
}

/// Builds the worker. `make_runtime` gets the attempts the journal says were live.
pub async fn assemble<F, Fut>(
    setup: WorkerSetup,
    make_runtime: F,
) -> anyhow::Result<AssembledWorker>
where
    F: FnOnce(BTreeSet<AttemptKey>) -> Fut,
    Fut: Future<Output = anyhow::Result<RuntimeAndAdopted>>,
{
    anyhow::ensure!(
        setup.config.era == setup.link.core_era(),
        "the core's era {:?} is not its link's {:?}",
        setup.config.era,
        setup.link.core_era()
    );
    let planted_buffering = setup.config.planted(crate::core::PlantedBug::BufferedLogs);
    let mut core = WorkerCore::new(setup.config, setup.clock.now_ms());
    let metrics = Arc::new(Metrics::new());
    let samples = SampleStore::default();
    let logs = LogStore::new(LogStoreConfig {
        root: setup.cache_dir.join(LOGS_DIR),
        memory: setup.log_memory,
        disk_bytes_max: setup.log_disk_bytes_max,
        ingested: metrics.log_bytes.clone(),
        planted_buffering,
    });
    let (journal, recovered) = Journal::open(&setup.cache_dir).context("opening the journal")?;
    // Before any attempt comes back: a removed attempt is never brought back or run again.
    core.recover_removed(setup.clock.now_ms(), journal.removed());
    // Files of attempts the journal does not hold: a crash between a removal's tombstone and
    // the deletion of its files, or files from outside.
    let orphans =
        sweep_orphans(&setup.cache_dir, journal.attempts()).context("sweeping the cache dir")?;
    if orphans > 0 {
        tracing::info!(orphans, "removed files no attempt owns");
    }
    let live = adoptable(&recovered);
    let (runtime, adoptable) = make_runtime(live).await?;
    let (adopted, recovered): (Vec<_>, Vec<_>) = recovered.into_iter().partition(|r| {
        r.as_ref()
            .is_ok_and(|r| adoptable.contains(&r.spec.attempt_key()))
    });
    let clock = setup.clock;
    let (controller, blobs) = match setup.link {
        EraLink::Standalone => (None, None),
        EraLink::Push(client) => (Some(*client), None),
        EraLink::Reconcile { blobs } => (None, blobs),
    };
    let parts = DriverParts {
        runtime,
        logs: logs.clone(),
        journal: Some(journal),
        controller,
        clock: setup.clock,
        deadlines: setup.deadlines,
        metrics: metrics.clone(),
        disk_sample_every: setup.disk_sample_every,
        samples: samples.clone(),
        blobs,
        troubles: setup.troubles,
    };
    let adopted = adopted.into_iter().flatten().collect();
    let (driver, driver_task) = Driver::spawn(core, parts, recovered, adopted);
    let stats = StatsTables::new(&metrics);
    let service = WorkerService::new(driver.clone(), logs.clone(), metrics.clone(), stats.clone());
    Ok(AssembledWorker {
        stats,
        driver,
        driver_task,
        service,
        logs,
        metrics,
        samples,
        clock,
    })
}
