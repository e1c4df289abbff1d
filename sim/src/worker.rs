//! A worker host's software: the real core, driver, journal, log store and WorkerService, put
//! together by the same `assemble` as `iris-worker serve`, with the simulated runtime and
//! turmoil's network in place of Docker and real sockets.

use std::sync::Arc;
use std::time::Duration;

use iris_worker::core::{CoreConfig, Era, LogLimits, Retention, RuntimeFlavour, WorkerIdentity};
use iris_worker::proto;
use iris_worker::proto::v2026_06::iris::cluster::controller::RegisterRequest;
use iris_worker::shell::assemble::{EraLink, WorkerSetup, assemble};
use iris_worker::shell::auth::RequireToken;
use iris_worker::shell::connect::client::ConnectClient;
use iris_worker::shell::controller::{self, ControllerClient, Registration};
use iris_worker::shell::driver::{CallDeadlines, Clock, Command};
use iris_worker::shell::era2026_06::start::{self, EraWiring};
use iris_worker::shell::runtime::Runtime;
use iris_worker::shell::stack::rpc_stack;

use crate::net;
use crate::plan::{CONTROLLER_PORT, EPOCH_MS, WORKER_PORT, worker_host};
use crate::runtime::SimRuntime;
use crate::shared::Shared;

/// Per attempt; far above what a simulated task prints, so no line may be lost.
pub const LOG_DISK_BYTES_MAX: u64 = 1 << 20;
/// As `--shutdown-grace-ms` defaults.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Shorter than production's, so a hung call costs seconds of simulated time, not minutes.
pub fn deadlines() -> CallDeadlines {
    CallDeadlines {
        prepare: Duration::from_secs(5),
        fetch: Duration::from_secs(5),
        build: Duration::from_secs(10),
        start: Duration::from_secs(5),
        signal: Duration::from_secs(3),
        remove: Duration::from_secs(5),
    }
}

fn config(shared: &Shared, worker: usize) -> CoreConfig {
    let name = worker_host(worker);
    let shape = &shared.plan.shape;
    let first = shape.first_port + worker as u16 * shape.ports_per_worker;
    CoreConfig {
        identity: WorkerIdentity {
            worker_id: name.clone(),
            address: format!("{name}:{WORKER_PORT}"),
        },
        // As an operator would write it: a bare address is Connect, grpc:// is gRPC.
        controller_address: Some(if net::speaks_connect(worker) {
            controller_authority()
        } else {
            format!("grpc://{}", controller_authority())
        }),
        advertise_host: name,
        flavour: RuntimeFlavour::Docker,
        port_range: first..=first + shape.ports_per_worker - 1,
        retention: Retention {
            finished_tasks_max: shared
                .plan
                .retain_finished_tasks
                .unwrap_or(Retention::default().finished_tasks_max),
            ..Retention::default()
        },
        #[cfg(feature = "planted")]
        planted: shared.variant.planted,
        ..CoreConfig::default()
    }
}

fn controller_authority() -> String {
    format!("controller:{}", CONTROLLER_PORT)
}

pub async fn host(shared: Arc<Shared>, worker: usize) -> Result<(), Box<dyn std::error::Error>> {
    {
        let mut machine = shared.machine(worker);
        machine.worker_up = true;
        machine.up_since_ms = shared.now_ms();
        machine.worker_boots += 1;
        machine.stop_requested = None;
    }
    shared.event(format!("{} up", worker_host(worker)));
    let mut config = config(&shared, worker);
    let reconcile = net::speaks_reconcile(worker);
    if reconcile {
        config.era = Era::Reconcile { ships_logs: true };
    }
    let me = Registration {
        worker_id: config.identity.worker_id.clone(),
        address: config.identity.address.clone(),
        metadata: proto::WorkerMetadata::default(),
    };
    let authority = controller_authority();
    let controller = if net::speaks_connect(worker) {
        ControllerClient::with_connect(ConnectClient::new(&authority, net::dialer(), None), me)
    } else {
        ControllerClient::with_channel(net::channel(controller::endpoint(&authority)?), me, None)
    };
    let setup = WorkerSetup {
        config,
        cache_dir: shared.cache_dirs[worker].clone(),
        log_memory: LogLimits::default(),
        log_disk_bytes_max: LOG_DISK_BYTES_MAX,
        clock: Clock::new(EPOCH_MS + shared.now_ms()),
        // A reconcile-era worker reports nothing itself: the controller asks.
        link: match reconcile {
            true => EraLink::Reconcile { blobs: None },
            false => EraLink::Push(Box::new(controller)),
        },
        deadlines: deadlines(),
        // The host's disk is not the simulation's: no measurement, so runs replay.
        disk_sample_every: None,
        troubles: Default::default(),
    };
    let runtime_shared = shared.clone();
    let worker_parts = assemble(setup, |live| async move {
        let runtime = SimRuntime::new(runtime_shared, worker);
        let adopted = runtime.survey(&live);
        Ok((Arc::new(runtime) as Arc<dyn Runtime>, adopted))
    })
    .await
    .map_err(|e| format!("{e:#}"))?;
    shared.machine(worker).log_store = Some(worker_parts.logs.clone());
    // Both protocols on one port, as `serve` has them.
    let reconciler = reconcile.then(|| start::start(era_wiring(&shared, worker), &worker_parts));
    let service = Arc::new(worker_parts.service);
    let (front, grpc) = rpc_stack(service, reconciler, RequireToken::new(None), None);
    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(front)
        .add_service(grpc)
        .serve_with_incoming_shutdown(
            net::incoming(WORKER_PORT).await?,
            stop_requested(&shared, worker),
        )
        .await?;
    // What `serve` does on SIGTERM.
    let kill_tasks = shared.machine(worker).stop_requested.unwrap_or(true);
    shared.event(format!(
        "{} stopping kill_tasks={kill_tasks}",
        worker_host(worker)
    ));
    let _ = worker_parts
        .driver
        .ask(|reply| Command::Shutdown {
            grace: SHUTDOWN_GRACE,
            kill_tasks,
            reply,
        })
        .await;
    let _ = worker_parts.driver_task.await;
    // A graceful stop: its destructors run, so the next crash must not forget this store.
    shared.machine(worker).log_store = None;
    shared.machine(worker).worker_down();
    shared.event(format!("{} stopped", worker_host(worker)));
    Ok(())
}

/// The 2026-06 side of a worker as `serve` starts it (`era2026_06::start`): over the simulated
/// network, registering first (no era probe ran), without measuring the host's disk and
/// reading logs in place, so a seed replays.
fn era_wiring(shared: &Shared, worker: usize) -> EraWiring {
    let worker_id = worker_host(worker);
    EraWiring {
        client: ConnectClient::new(&controller_authority(), net::dialer(), None),
        register: RegisterRequest {
            address: format!("{worker_id}:{WORKER_PORT}"),
            worker_id,
            ..RegisterRequest::default()
        },
        registered: false,
        token: None,
        cache_dir: shared.cache_dirs[worker].clone(),
        dial: net::dialer(),
        measure_health: false,
        blocking_reads: false,
        stats_rows: false,
        profile_every: None,
        profile_seconds: 0,
        reconcile_timeout: RECONCILE_TIMEOUT,
        troubles: Default::default(),
        tpu: None,
    }
}

/// As `--reconcile-timeout` defaults: longer than any partition a plan draws.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(600);

/// Resolves when the world asks this worker to stop.
async fn stop_requested(shared: &Shared, worker: usize) {
    while shared.machine(worker).stop_requested.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
