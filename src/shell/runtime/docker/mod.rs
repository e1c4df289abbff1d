//! The docker runtime (bollard): each attempt is a container named after the worker and the
//! attempt, labelled per DESIGN.md, with the attempt's workdir bind-mounted at `/workdir`, a host
//! port binding per allocated port, cpu, memory and pids limits, no new privileges and no
//! capabilities, and the engine's init as PID 1 (unless turned off). Logs follow the engine's
//! stream with the engine's timestamps; the exit comes from the wait API and the OOM flag from
//! inspect; stats from the stats stream.
//!
//! After a restart, `survey` finds this worker's containers: those whose attempt the journal
//! knows as live and that ran are adopted (`resume`: logs, wait and stats pick up where they
//! were), the rest are removed.
//!
//! Files: `naming.rs` (container names), `engine.rs` (errors, list, remove), `container.rs` (the
//! create body), `image.rs` (builds), `follow.rs` (logs and exit), `stats.rs`, `survey.rs`,
//! `timestamps.rs`; the `Runtime` implementation is here.

mod container;
mod engine;
mod exec;
mod follow;
mod image;
mod image_gc;
mod naming;
mod pull;
mod settings;
mod setup;
mod stats;
mod survey;
mod timestamps;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use tokio::task::AbortHandle;

use self::engine::{engine_error, is_port_conflict, message, status_code};
pub use self::image::{DEPENDENCY_FILES, Recipe, image_tag};
pub use self::naming::container_name;
pub use self::settings::{
    ContainerSettings, CpuLimit, NOFILE_DEFAULT, capabilities_short_of_all, engine_capabilities,
    engine_memlock_hard, engine_nofile_hard, parse_nofile, within,
};
pub use self::survey::remove_all_managed;
use crate::core::{APP_DIR, CACHE_MOUNTS};
use crate::core::{AttemptKey, BuildSpec, ContainerSpec, LogSource, Signal};
use crate::shell::logs::output_mark::OutputMark;
use crate::shell::runtime::workdir;
use crate::shell::runtime::{AttemptSink, BuiltImage, Runtime, RuntimeError, check_ports_free};

#[derive(Clone, Debug)]
pub struct DockerRuntimeConfig {
    pub cache_dir: PathBuf,
    pub default_image: String,
    pub worker_id: String,
    /// Limits, capabilities and mounts every container gets.
    pub settings: ContainerSettings,
    /// Run 2026-06 setup_commands (in a container of the task's image before the command).
    pub run_setup_commands: bool,
    pub network: DockerNetwork,
    /// Images this worker built are removed once unused this long; `None` keeps them.
    pub built_image_ttl: Option<std::time::Duration>,
}

/// `--docker-network`: where task containers (and setup containers) are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DockerNetwork {
    /// The host's network stack, as Iris runs its tasks: ports are the host's, checked free
    /// before the start; the controller is reached at the worker's own address for it.
    Host,
    /// Docker's default bridge: each declared port published on the host, the host's loopback
    /// reached as `host.docker.internal`.
    Bridge,
}

pub struct DockerRuntime {
    docker: Docker,
    config: DockerRuntimeConfig,
    samplers: Arc<Mutex<BTreeMap<AttemptKey, AbortHandle>>>,
    pulls: pull::Pulls,
    built_images: Arc<image_gc::BuiltImages>,
}

impl DockerRuntime {
    /// Connects to `DOCKER_HOST` or the default socket (lazily: nothing is sent yet).
    pub fn connect(config: DockerRuntimeConfig) -> Result<DockerRuntime, RuntimeError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| RuntimeError::new(format!("docker engine: {e}")))?;
        let built_images = Arc::<image_gc::BuiltImages>::default();
        if let Some(ttl) = config.built_image_ttl
            && tokio::runtime::Handle::try_current().is_ok()
        {
            image_gc::spawn_sweeper(
                docker.clone(),
                built_images.clone(),
                config.worker_id.clone(),
                ttl,
            );
        }
        Ok(DockerRuntime {
            docker,
            config,
            samplers: Arc::default(),
            pulls: pull::Pulls::default(),
            built_images,
        })
    }

    fn name(&self, attempt: &AttemptKey) -> String {
        container_name(&self.config.worker_id, attempt)
    }

    async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<(), RuntimeError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Ok(_) => Ok(()),
            // A container of the same name is left from an earlier try: replace it.
            Err(e) if status_code(&e) == Some(409) => {
                self.force_remove(name).await;
                self.docker
                    .create_container(Some(options), body)
                    .await
                    .map(|_| ())
                    .map_err(|e| engine_error("create", &e))
            }
            Err(e) => Err(engine_error("create", &e)),
        }
    }

    async fn force_remove(&self, name: &str) {
        engine::force_remove(&self.docker, name).await;
    }

    /// Logs, stats and the exit of a running container, each followed by its own task.
    fn monitor(
        &self,
        attempt: &AttemptKey,
        name: String,
        sink: AttemptSink,
        after: Option<OutputMark>,
    ) {
        let logs = tokio::spawn(follow::follow_logs(
            self.docker.clone(),
            name.clone(),
            sink.clone(),
            after,
        ));
        let stats = stats::spawn_stats(self.docker.clone(), name.clone(), sink.clone());
        self.samplers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(attempt.clone(), stats);
        tokio::spawn(follow::watch_exit(self.docker.clone(), name, logs, sink));
    }
}

impl DockerRuntime {
    /// The binds of a container seeing the workdir at `container_workdir`: the workdir, and
    /// for Iris's 2026-06 layout (`/app`) the worker's shared caches (`CACHE_MOUNTS`), the same
    /// in the setup container and the run container.
    fn binds(&self, workdir: &std::path::Path, container_workdir: &str) -> Vec<String> {
        let mut binds = vec![format!("{}:{container_workdir}", workdir.display())];
        if container_workdir == APP_DIR {
            binds.extend(
                CACHE_MOUNTS.iter().map(|(at, name)| {
                    format!("{}:{at}", self.config.cache_dir.join(name).display())
                }),
            );
        }
        binds
    }

    /// The network settings of every container: the host's network, or the bridge with the
    /// host gateway named.
    fn network(&self, host_config: HostConfig) -> HostConfig {
        match self.config.network {
            DockerNetwork::Host => HostConfig {
                network_mode: Some("host".to_string()),
                ..host_config
            },
            DockerNetwork::Bridge => HostConfig {
                extra_hosts: Some(vec!["host.docker.internal:host-gateway".to_string()]),
                ..host_config
            },
        }
    }
}

#[tonic::async_trait]
impl Runtime for DockerRuntime {
    fn cache_dir(&self) -> &std::path::Path {
        &self.config.cache_dir
    }

    async fn build_image(
        &self,
        attempt: &AttemptKey,
        spec: &BuildSpec,
        sink: AttemptSink,
    ) -> Result<BuiltImage, RuntimeError> {
        let image = spec
            .base_image
            .clone()
            .unwrap_or_else(|| self.config.default_image.clone());
        self.ensure_image(&image, &sink).await?;
        // Iris never sends `workspace`: every bundle is looked at for dependency files.
        let built = if spec.has_bundle || !spec.pip_packages.is_empty() {
            self.build_from_bundle(attempt, spec, &image, sink.clone())
                .await?
        } else {
            sink.log(LogSource::Build, &format!("using image {image}"));
            BuiltImage {
                image: Some(image),
                from_cache: true,
            }
        };
        if !spec.setup_commands.is_empty() {
            match self.config.run_setup_commands {
                false => sink.log(
                    LogSource::Build,
                    "setup_commands skipped (--setup-commands skip)",
                ),
                true => {
                    let image = built.image.as_deref().unwrap_or(&self.config.default_image);
                    self.run_setup(attempt, spec, image, &sink).await?
                }
            }
        }
        Ok(built)
    }

    async fn start(&self, spec: &ContainerSpec, sink: AttemptSink) -> Result<(), RuntimeError> {
        if self.config.network == DockerNetwork::Host {
            check_ports_free(&spec.ports)?;
        }
        let name = self.name(&spec.attempt);
        self.create(&name, self.container_body(spec)).await?;
        if let Err(e) = self.docker.start_container(&name, None).await {
            self.force_remove(&name).await;
            return Err(RuntimeError {
                port_conflict: is_port_conflict(&message(&e)),
                ..engine_error("start", &e)
            });
        }
        sink.started();
        self.monitor(&spec.attempt, name, sink, None);
        Ok(())
    }

    async fn resume(&self, attempt: &AttemptKey, sink: AttemptSink) -> Result<(), RuntimeError> {
        let after = sink.output_mark();
        self.monitor(attempt, self.name(attempt), sink, after);
        Ok(())
    }

    async fn signal(&self, attempt: &AttemptKey, signal: Signal) -> Result<(), RuntimeError> {
        let name = match signal {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        };
        let options = KillContainerOptionsBuilder::default().signal(name).build();
        match self
            .docker
            .kill_container(&self.name(attempt), Some(options))
            .await
        {
            // Gone or no longer running: the exit is on its way.
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(RuntimeError::new(message(&e))),
            Ok(()) => Ok(()),
        }
    }

    async fn remove(&self, attempt: &AttemptKey) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self
            .docker
            .remove_container(&self.name(attempt), Some(options))
            .await
        {
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(RuntimeError::new(message(&e))),
            Ok(()) => Ok(()),
        }
    }

    async fn exec(
        &self,
        spec: &ContainerSpec,
        command: &[String],
        timeout: Option<std::time::Duration>,
    ) -> Result<crate::shell::runtime::exec::ExecOutput, RuntimeError> {
        self.exec_in(spec, command, timeout).await
    }

    async fn release(&self, attempt: &AttemptKey) {
        if let Some(stats) = self
            .samplers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(attempt)
        {
            stats.abort();
        }
        self.built_images.unpin(attempt, std::time::Instant::now());
        workdir::remove(&self.config.cache_dir, attempt).await;
    }
}
