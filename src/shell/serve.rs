//! `serve`: wires the core, driver, runtime, log store, journal, controller client and the RPC
//! service together, and runs until SIGTERM or Ctrl-C, then shuts down gracefully. One listener
//! serves gRPC (HTTP/2), Connect (HTTP/1.1 or HTTP/2), the dashboard, the JSON API and /metrics.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

use crate::core::{
    AttemptKey, CoreConfig, Era, LogLimits, Retention, RuntimeFlavour, WorkerIdentity,
};
use crate::proto::v2026_06::iris::cluster::controller::RegisterRequest;
use crate::shell::assemble::{AssembledWorker, EraLink, RuntimeAndAdopted, WorkerSetup, assemble};
use crate::shell::auth::{ControllerPeers, RequireToken, is_loopback_host};
use crate::shell::blobs::BlobStore;
use crate::shell::connect::client::{ConnectClient, tcp_dialer};
use crate::shell::era2026_06::{self, start::EraWiring};
use crate::shell::stack::rpc_stack;

use crate::shell::controller::{ControllerAddress, ControllerClient, Registration};
use crate::shell::dashboard::{self, Dashboard};
use crate::shell::driver::{CallDeadlines, Clock, Command};
use crate::shell::era2026_06::reconcile::Reconciler;
use crate::shell::era2026_06::register;
use crate::shell::gce::{self, GceFacts, MetadataServer};
use crate::shell::probe::{Configured, hostname, probe};
use crate::shell::runtime::docker::{
    ContainerSettings, DockerNetwork, DockerRuntime, DockerRuntimeConfig,
    capabilities_short_of_all, engine_capabilities, engine_memlock_hard, engine_nofile_hard,
    within,
};
use crate::shell::runtime::process::{ProcessRuntime, ProcessRuntimeConfig};
use crate::shell::runtime::wall_ms;
use crate::shell::task_caches;
use crate::shell::trouble::Troubles;

/// How long start-up waits for the engine before serving anyway.
const ENGINE_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    pub cache_dir: PathBuf,
    pub port_range: RangeInclusive<u16>,
    pub controller_address: Option<String>,
    pub iris_protocol: IrisProtocol,
    pub reconcile_timeout: Duration,
    /// 2026-06: how often every running task's CPU is profiled into `iris.profile` (`None`:
    /// never), and for how long each.
    pub profile_every: Option<Duration>,
    pub profile_seconds: u32,
    pub worker_id: Option<String>,
    /// The slice this VM belongs to (Iris's `slice_id`, set by its autoscaler): registered, and
    /// with the TPU worker number the worker id `<slice>-worker-<N>`.
    pub slice_id: Option<String>,
    /// The GCE metadata server to read (`None`: `GCE_METADATA_HOST`, else the well-known one
    /// on a Google VM, else none).
    pub gce_metadata_host: Option<String>,
    /// Tasks failed with TPU bad-node signatures that make the machine unhealthy until the
    /// worker restarts (0: never).
    pub bad_node_limit: u32,
    pub advertise_host: Option<String>,
    pub heartbeat_interval: Duration,
    pub log_memory: LogLimits,
    pub log_disk_bytes_max: u64,
    pub stats_interval: Duration,
    pub shutdown_grace: Duration,
    /// Callers show `authorization: Bearer <token>` (the controller's addresses need not, on the
    /// routes it calls).
    pub auth_token: Option<String>,
    /// What the worker shows the controller and its log service.
    pub controller_token: Option<String>,
    /// `k=v,...`: the attributes the scheduler matches.
    pub worker_attributes: Option<String>,
    /// Every task's default env, below the job's own.
    pub task_env: Vec<(String, String)>,
    /// The CPU advertised, when not the machine's.
    pub cpu_millicores: Option<u32>,
    /// What the system keeps, when not Iris's share.
    pub reserve_memory_bytes: Option<u64>,
    pub reserve_cpus: Option<u32>,
    /// Without `auth_token`, let in any caller (not only loopback ones and the controller).
    pub insecure: bool,
    pub live_attempts_max: usize,
    /// Serve the dashboard, JSON API and /metrics on the RPC port.
    pub dashboard: bool,
    /// Also serve them on this port of their own (same host).
    pub dashboard_port: Option<u16>,
    /// Which runtime runs tasks.
    pub flavour: RuntimeFlavour,
    /// The docker image of tasks that name none.
    pub default_image: String,
    /// Stop without killing containers, so the next run adopts them (docker only).
    pub preserve_containers_on_stop: bool,
    /// What every container runs under (docker).
    pub container: ContainerSettings,
    pub retention: Retention,
    /// Run 2026-06 setup_commands (docker: in the task's image; process: on the host).
    pub run_setup_commands: bool,
    /// IRIS_PYTHON of 2026-06 process-runtime tasks.
    pub task_python: String,
    /// The network of task containers (docker only).
    pub docker_network: DockerNetwork,
    /// How long an image the worker built is kept unused (docker only); `None` keeps it.
    pub built_image_ttl: Option<Duration>,
    /// Bound of the tasks' shared uv and cargo caches (`task_caches`).
    pub task_cache_bytes: u64,
    /// Disk kept for blobs fetched from the controller (least recently used go first).
    pub blob_cache_bytes: u64,
}

/// How often the cache dir's file system is measured for the retention thresholds.
const DISK_SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// `--iris-protocol`: the era of Iris's worker protocol (DESIGN.md, "Two Iris protocol eras").
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IrisProtocol {
    Auto,
    #[value(name = "2026-01")]
    TaskEra,
    #[value(name = "2026-06")]
    Reconcile,
}

impl IrisProtocol {
    pub fn name(self) -> &'static str {
        match self {
            IrisProtocol::Auto => "auto",
            IrisProtocol::TaskEra => "2026-01",
            IrisProtocol::Reconcile => "2026-06",
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The tasks' shared caches (`task_caches`), emptied at start-up when over
/// `--task-cache-bytes` and no task can be using them.
fn prepare_task_caches(opts: &ServeOptions, in_use: bool) {
    let (bytes, emptied) = task_caches::prepare(&opts.cache_dir, opts.task_cache_bytes, in_use);
    if emptied {
        tracing::warn!(
            bytes,
            limit = opts.task_cache_bytes,
            "the tasks' shared caches were over --task-cache-bytes: emptied"
        );
    }
}

/// The runtime, and the attempts whose containers survived the last run and are adopted.
async fn make_runtime(
    opts: &ServeOptions,
    worker_id: &str,
    live: BTreeSet<AttemptKey>,
) -> anyhow::Result<RuntimeAndAdopted> {
    match opts.flavour {
        RuntimeFlavour::Process => {
            let runtime = ProcessRuntime::new(ProcessRuntimeConfig {
                cache_dir: opts.cache_dir.clone(),
                shim: shim_path(),
                stats_interval: opts.stats_interval,
                run_setup_commands: opts.run_setup_commands,
                task_python: opts.task_python.clone(),
            });
            // The process runtime adopts nothing: no task of an earlier run uses the caches.
            prepare_task_caches(opts, false);
            Ok((Arc::new(runtime), BTreeSet::new()))
        }
        RuntimeFlavour::Docker => {
            let docker = DockerRuntime::connect(DockerRuntimeConfig {
                cache_dir: opts.cache_dir.clone(),
                default_image: opts.default_image.clone(),
                settings: container_settings(&opts.container),
                worker_id: worker_id.to_string(),
                run_setup_commands: opts.run_setup_commands,
                network: opts.docker_network,
                built_image_ttl: opts.built_image_ttl,
            })?;
            let keep = |key: &AttemptKey| live.contains(key);
            // An engine that does not answer must not keep the worker from serving: tasks
            // then fail on their own deadlines while health checks and kills still work.
            let (adopted, surveyed) =
                match tokio::time::timeout(ENGINE_STARTUP_TIMEOUT, docker.survey(&keep)).await {
                    Ok(Ok((running, removed))) => {
                        if removed > 0 {
                            tracing::warn!(
                                removed,
                                "removed containers of this worker that could not be adopted"
                            );
                        }
                        let adopted: BTreeSet<AttemptKey> = running.into_iter().collect();
                        docker.sweep_lost_later(live.difference(&adopted).cloned().collect());
                        (adopted, true)
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot list this worker's containers");
                        (BTreeSet::new(), false)
                    }
                    Err(_) => {
                        tracing::error!(
                            "the docker engine did not answer within {ENGINE_STARTUP_TIMEOUT:?}"
                        );
                        (BTreeSet::new(), false)
                    }
                };
            // An adopted container's venv links into the caches; unsurveyed, one might.
            prepare_task_caches(opts, !surveyed || !adopted.is_empty());
            Ok((Arc::new(docker), adopted))
        }
    }
}

/// Binds the dashboard and serves it in the background until the process ends.
async fn serve_dashboard(host: &str, port: u16, dashboard: Dashboard) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("binding the dashboard on {host}:{port}"))?;
    let local = listener.local_addr()?;
    println!("iris-worker dashboard on http://{local}");
    // With each caller's address, which the token check needs (loopback callers, no token).
    let app = dashboard::router(dashboard).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "dashboard stopped");
        }
    });
    Ok(())
}

/// The container settings, the nofile limit lowered to the engine's own when that is lower.
fn container_settings(asked: &ContainerSettings) -> ContainerSettings {
    let engine = engine_nofile_hard();
    let nofile = within(asked.nofile, engine);
    if nofile != asked.nofile {
        info!(
            asked = ?asked.nofile,
            engine_hard = engine,
            "containers get the engine's own open-file limit"
        );
    }
    let memlock_engine = engine_memlock_hard();
    let tpu_memlock = asked.tpu_memlock.min(memlock_engine.unwrap_or(u64::MAX));
    if tpu_memlock != asked.tpu_memlock {
        tracing::warn!(
            asked = asked.tpu_memlock,
            engine_hard = memlock_engine,
            "TPU containers get the engine's own locked-memory limit (raise the engine's LimitMEMLOCK)"
        );
    }
    let tpu_caps = engine_capabilities().and_then(capabilities_short_of_all);
    if tpu_caps.is_some() {
        tracing::warn!(
            "the docker engine lacks capabilities a privileged container needs: TPU containers \
             get the engine's own capabilities and the TPU devices instead of --privileged"
        );
    }
    ContainerSettings {
        nofile,
        tpu_memlock,
        tpu_caps,
        ..asked.clone()
    }
}

/// `iris-shim` beside the worker binary when installed, else the worker binary itself.
fn shim_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let small = exe.with_file_name("iris-shim");
    Some(if small.is_file() { small } else { exe })
}

pub async fn serve(mut opts: ServeOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.cache_dir)
        .with_context(|| format!("creating cache dir {}", opts.cache_dir.display()))?;
    let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
        .await
        .with_context(|| format!("binding {}:{}", opts.host, opts.port))?;
    let local: SocketAddr = listener.local_addr()?;
    let metadata_server = MetadataServer::locate(opts.gce_metadata_host.as_deref());
    let gce = match &metadata_server {
        Some(server) => gce_facts(server).await,
        None => None,
    };
    let troubles = Troubles::with_bad_node_limit(opts.bad_node_limit);
    if let Some(trouble) = gce.as_ref().and_then(|g| g.trouble.clone()) {
        troubles.set("tpu-identity", trouble);
    }
    let identity = identify(&mut opts, local, gce.as_ref());
    let machine = machine(&opts, gce.as_ref());
    let controller = match &opts.controller_address {
        Some(addr) => resolve_era(&opts, addr, &identity, &machine).await?,
        None => Controller::Standalone,
    };
    let task_era = matches!(controller, Controller::Push(_));
    let (link, reconcile) = match controller {
        Controller::Standalone => (EraLink::Standalone, None),
        Controller::Push(addr) => {
            let client = controller_client(&opts, &identity, &addr, &machine).await?;
            (EraLink::Push(Box::new(client)), None)
        }
        Controller::Reconcile(era) => {
            let blobs = BlobStore::new(
                &opts.cache_dir,
                &era.authority,
                tcp_dialer(),
                opts.controller_token.as_deref(),
                opts.blob_cache_bytes,
            );
            let blobs = Some(Arc::new(blobs));
            (EraLink::Reconcile { blobs }, Some(era))
        }
    };
    let setup = WorkerSetup {
        config: core_config(&opts, &identity, link.core_era()),
        cache_dir: opts.cache_dir.clone(),
        log_memory: opts.log_memory,
        log_disk_bytes_max: opts.log_disk_bytes_max,
        clock: Clock::new(u64::try_from(wall_ms()).unwrap_or(0)),
        link,
        deadlines: CallDeadlines::default(),
        disk_sample_every: Some(DISK_SAMPLE_EVERY),
        troubles: troubles.clone(),
    };
    let worker_id = identity.worker_id.clone();
    let worker = assemble(setup, |live| make_runtime(&opts, &worker_id, live)).await?;
    // The line scripts and tests wait for; stdout, apart from the logs on stderr.
    println!("iris-worker listening on {local} (worker id {worker_id})");
    let driver = worker.driver.clone();
    if let Some(server) = metadata_server {
        crate::shell::preemption::spawn(server, driver.clone(), troubles.clone());
    }
    if gce.as_ref().is_some_and(|g| g.tpu.is_some()) {
        crate::shell::tpu_devices::spawn_watch(driver.clone(), troubles.clone());
    }
    if task_era || reconcile.is_none() {
        // Nothing will ship the worker's own log.
        crate::shell::logs::worker_log::stop_keeping();
    }
    if task_era {
        worker
            .metrics
            .set_protocol_era(IrisProtocol::TaskEra.name());
    }
    let reconciler = reconcile.map(|era| {
        era2026_06::start::start(
            EraWiring {
                client: era.client,
                register: era.register,
                // The era probe registered.
                registered: true,
                token: opts.controller_token.clone(),
                cache_dir: opts.cache_dir.clone(),
                dial: tcp_dialer(),
                measure_health: true,
                blocking_reads: true,
                stats_rows: true,
                profile_every: opts.profile_every,
                profile_seconds: opts.profile_seconds,
                reconcile_timeout: opts.reconcile_timeout,
                troubles: troubles.clone(),
                tpu: gce
                    .as_ref()
                    .and_then(|g| g.tpu.as_ref())
                    .map(|vm| vm.accelerator_type.clone()),
            },
            &worker,
        )
    });
    let driver_task = serve_rpcs(&opts, listener, worker, &worker_id, reconciler).await?;
    info!("stopping: killing tasks and delivering their reports");
    let grace = opts.shutdown_grace;
    let kill_tasks = !opts.preserve_containers_on_stop;
    let _ = driver
        .ask(|reply| Command::Shutdown {
            grace,
            kill_tasks,
            reply,
        })
        .await;
    let _ = driver_task.await;
    info!("stopped");
    Ok(())
}

/// The advertised host (the bound address; when bound to all interfaces, the address of the
/// default route, as Iris's `probe_outbound_ip`, else the hostname), the worker id and the
/// address the controller is told.
fn identify(opts: &mut ServeOptions, local: SocketAddr, gce: Option<&GceFacts>) -> WorkerIdentity {
    let advertise = opts
        .advertise_host
        .clone()
        .unwrap_or_else(|| match local.ip() {
            ip if ip.is_unspecified() => outbound_ip().map_or_else(hostname, |ip| ip.to_string()),
            ip => ip.to_string(),
        });
    opts.advertise_host = Some(advertise.clone());
    WorkerIdentity {
        worker_id: opts
            .worker_id
            .clone()
            .or_else(|| vm_worker_id(opts.slice_id.as_deref(), gce))
            .unwrap_or_else(|| format!("{}-{}", hostname(), local.port())),
        address: format!("{advertise}:{}", local.port()),
    }
}

/// Iris's `construct_worker_id` order: the configured slice with the TPU worker number, the
/// TPU slice with it, the GCE instance as worker 0 of its own. A TPU VM without a worker number
/// gets no slice-derived id (it would collide with worker 0's).
fn vm_worker_id(slice_id: Option<&str>, gce: Option<&GceFacts>) -> Option<String> {
    let tpu = gce.and_then(|g| g.tpu.as_ref());
    match (slice_id.filter(|s| !s.is_empty()), tpu) {
        (Some(slice), Some(vm)) => Some(format!("{slice}-worker-{}", vm.worker_id)),
        (Some(slice), None) if gce.is_none_or(|g| g.trouble.is_none()) => {
            Some(format!("{slice}-worker-0"))
        }
        (_, Some(vm)) => Some(format!("{}-worker-{}", vm.slice, vm.worker_id)),
        _ => gce
            .map(|g| &g.instance_name)
            .filter(|name| !name.is_empty())
            .map(|name| format!("{name}-worker-0")),
    }
}

/// What the GCE metadata server says of this VM, when there is one; a server that does not
/// answer is logged and the worker starts as a plain machine.
async fn gce_facts(server: &MetadataServer) -> Option<GceFacts> {
    match gce::probe(server).await {
        Ok(facts) => {
            if let Some(trouble) = &facts.trouble {
                tracing::error!("{trouble}");
            }
            info!(
                server = server.authority(),
                instance = %facts.instance_name,
                zone = %facts.zone,
                tpu = ?facts.tpu,
                "read the GCE metadata server"
            );
            Some(facts)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the GCE metadata server did not answer; no VM facts");
            None
        }
    }
}

/// The local address of the default route: a UDP socket "connected" to a public address (no
/// packet is sent) says which address the machine reaches the world from.
fn outbound_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect(("8.8.8.8", 80)).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// The controller the worker serves, decided once: none, or the era it speaks.
enum Controller {
    Standalone,
    /// Iris 2026-01, at this address: it pushes tasks.
    Push(String),
    /// Iris 2026-06, already registered once.
    Reconcile(Box<Era2026>),
}

/// What the operator says of the machine, for the probe.
fn machine(opts: &ServeOptions, gce: Option<&GceFacts>) -> Configured {
    Configured {
        gce: gce.cloned(),
        attributes: opts.worker_attributes.clone(),
        cpu_millicores: opts.cpu_millicores,
        reserve_memory_bytes: opts.reserve_memory_bytes,
        reserve_cpus: opts.reserve_cpus,
    }
}

/// The `scale-group` attribute, which Iris's worker registers as its scale group.
fn scale_group(attributes: Option<&str>) -> String {
    let attributes = crate::shell::probe::parse_attributes(attributes.unwrap_or_default());
    match attributes.get("scale-group").and_then(|v| v.value.as_ref()) {
        Some(crate::proto::attribute_value::Value::StringValue(s)) => s.clone(),
        Some(crate::proto::attribute_value::Value::IntValue(i)) => i.to_string(),
        _ => String::new(),
    }
}

/// What the 2026-06 era needs once the worker is assembled: its Connect client and the
/// registration it sends.
struct Era2026 {
    /// The controller's `host:port`: its Connect services and its blobs.
    authority: String,
    client: ConnectClient,
    register: RegisterRequest,
}

/// Which era the controller speaks (the reconcile era already registered once). `auto` asks
/// until the controller answers one way or the other.
async fn resolve_era(
    opts: &ServeOptions,
    addr: &str,
    identity: &WorkerIdentity,
    machine: &Configured,
) -> anyhow::Result<Controller> {
    if opts.iris_protocol == IrisProtocol::TaskEra {
        return Ok(Controller::Push(addr.to_string()));
    }
    let authority = match ControllerAddress::parse(addr)
        .with_context(|| format!("--controller-address {addr}"))?
    {
        ControllerAddress::Connect(authority) => authority,
        ControllerAddress::Grpc(_) if opts.iris_protocol == IrisProtocol::Auto => {
            return Ok(Controller::Push(addr.to_string()));
        }
        ControllerAddress::Grpc(_) => anyhow::bail!(
            "--iris-protocol 2026-06 speaks Connect: give the controller as host:port or http://host:port, not grpc://"
        ),
    };
    let client = ConnectClient::new(&authority, tcp_dialer(), opts.controller_token.as_deref());
    let advertise = opts.advertise_host.as_deref().unwrap_or_default();
    let probed = probe(advertise, &opts.cache_dir, machine).await;
    let register = RegisterRequest {
        address: identity.address.clone(),
        metadata: Some(register::metadata(&probed, env!("IRIS_WORKER_GIT_COMMIT"))),
        worker_id: identity.worker_id.clone(),
        // As Iris's worker: the autoscaler's slice, and the scale group from the attributes.
        slice_id: opts.slice_id.clone().unwrap_or_default(),
        scale_group: scale_group(opts.worker_attributes.as_deref()),
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        match register::register_once(&client, &register).await {
            Ok(accepted) => {
                info!(controller = %addr, "the controller speaks Iris 2026-06 (Register answered)");
                if !accepted {
                    register::register(&client, &register).await;
                }
                return Ok(Controller::Reconcile(Box::new(Era2026 {
                    authority,
                    client,
                    register,
                })));
            }
            Err(e) if register::is_unimplemented(&e) => {
                if opts.iris_protocol == IrisProtocol::Reconcile {
                    anyhow::bail!(
                        "the controller at {addr} does not serve Register (Iris 2026-06): {e};                          it looks like a 2026-01 controller: use --iris-protocol 2026-01 (or auto)"
                    );
                }
                info!(controller = %addr, "the controller speaks Iris 2026-01 (no Register)");
                return Ok(Controller::Push(addr.to_string()));
            }
            Err(e) => {
                tracing::warn!(error = %e, controller = %addr, "asking the controller's protocol; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn core_config(opts: &ServeOptions, identity: &WorkerIdentity, era: Era) -> CoreConfig {
    let workdir_root = std::fs::canonicalize(&opts.cache_dir)
        .unwrap_or_else(|_| opts.cache_dir.clone())
        .display()
        .to_string();
    CoreConfig {
        era,
        workdir_root,
        identity: identity.clone(),
        controller_address: opts.controller_address.clone(),
        advertise_host: opts.advertise_host.clone().unwrap_or_default(),
        flavour: opts.flavour,
        port_range: opts.port_range.clone(),
        heartbeat_interval_ms: opts.heartbeat_interval.as_millis() as u64,
        live_attempts_max: opts.live_attempts_max,
        retention: opts.retention.clone(),
        task_python: opts.task_python.clone(),
        host_network: opts.docker_network == DockerNetwork::Host,
        worker_region: crate::shell::probe::worker_region(opts.worker_attributes.as_deref()),
        task_env: opts.task_env.clone(),
        ..CoreConfig::default()
    }
}

async fn controller_client(
    opts: &ServeOptions,
    identity: &WorkerIdentity,
    addr: &str,
    machine: &Configured,
) -> anyhow::Result<ControllerClient> {
    let advertise = opts.advertise_host.as_deref().unwrap_or_default();
    let me = Registration {
        worker_id: identity.worker_id.clone(),
        address: identity.address.clone(),
        metadata: probe(advertise, &opts.cache_dir, machine).await,
    };
    let client = ControllerClient::new(addr, me, opts.controller_token.as_deref())
        .with_context(|| format!("--controller-address {addr}"))?;
    Ok(client)
}

/// How often the controller's addresses are resolved again (a controller VM replaced keeps its
/// name, not always its address).
const CONTROLLER_PEERS_EVERY: Duration = Duration::from_secs(30);

/// Resolves the controller's host now and then every `CONTROLLER_PEERS_EVERY`, keeping the last
/// answer through a failed lookup. The first lookup is awaited, so the controller's first call
/// is let in. A controller on this machine (a loopback address) that dials the worker's
/// advertised address calls from that address, so it counts as the controller's too.
async fn keep_controller_peers(
    addr: &str,
    advertised: Option<std::net::IpAddr>,
    peers: ControllerPeers,
) {
    let authority = match ControllerAddress::parse(addr) {
        Ok(ControllerAddress::Connect(a) | ControllerAddress::Grpc(a)) => a,
        // Refused with its reason where the controller client is made.
        Err(_) => return,
    };
    let resolve = move |peers: ControllerPeers| {
        let authority = authority.clone();
        async move {
            match tokio::net::lookup_host(authority.as_str()).await {
                Ok(found) => {
                    let mut ips: Vec<std::net::IpAddr> = found.map(|a| a.ip()).collect();
                    if ips.iter().any(|ip| ip.is_loopback()) {
                        ips.extend(advertised);
                    }
                    peers.set(ips)
                }
                Err(e) => {
                    tracing::warn!(error = %e, controller = %authority, "resolving the controller")
                }
            }
        }
    };
    resolve(peers.clone()).await;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CONTROLLER_PEERS_EVERY).await;
            resolve(peers.clone()).await;
        }
    });
}

/// Serves gRPC, Connect and the dashboard on one port (and the dashboard on its own port if
/// asked) until SIGTERM or Ctrl-C; returns the driver's task, still running.
async fn serve_rpcs(
    opts: &ServeOptions,
    listener: tokio::net::TcpListener,
    worker: AssembledWorker,
    worker_id: &str,
    reconciler: Option<Arc<Reconciler>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let AssembledWorker {
        driver,
        driver_task,
        service,
        logs,
        metrics,
        samples,
        ..
    } = worker;
    let open = opts.insecure || is_loopback_host(&opts.host);
    let peers = ControllerPeers::default();
    if let Some(addr) = &opts.controller_address {
        let advertised = opts.advertise_host.as_deref().and_then(|h| h.parse().ok());
        keep_controller_peers(addr, advertised, peers.clone()).await;
    }
    let token = RequireToken::gate(opts.auth_token.as_deref(), open, peers);
    let dashboard = Dashboard {
        driver,
        logs,
        metrics,
        worker_id: worker_id.to_string(),
        token: token.clone(),
        retention: opts.retention.clone(),
        samples,
        cache_dir: opts.cache_dir.clone(),
    };
    if let Some(port) = opts.dashboard_port {
        serve_dashboard(&opts.host, port, dashboard.clone()).await?;
    }
    let pages = opts.dashboard.then(|| dashboard::router(dashboard));
    let (front, grpc) = rpc_stack(Arc::new(service), reconciler, token, pages);
    let local = listener.local_addr()?;
    info!(%local, %worker_id, cache_dir = %opts.cache_dir.display(), "serving");
    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(front)
        .add_service(grpc)
        .serve_with_incoming_shutdown(
            // Small RPCs must not wait on Nagle's algorithm.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown_signal(),
        )
        .await
        .context("RPC server")?;
    Ok(driver_task)
}
