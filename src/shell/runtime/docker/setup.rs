//! 2026-06 setup commands in docker, as Iris runs them: a container of the task's image with the
//! workdir mounted where the task will see it runs the setup script; its output is the build
//! log. It is removed whatever happens, a cancelled or timed-out build included. It carries this
//! worker's labels but names no attempt, so a restarted worker's survey removes one that a crash
//! left behind, and it is never adopted.

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{LogsOptionsBuilder, WaitContainerOptionsBuilder};
use tokio_stream::StreamExt;

use super::DockerRuntime;
use super::engine::{engine_error, message};
use super::settings::cpu_shares;
use crate::core::{AttemptKey, BuildSpec, LogSource};
use crate::shell::logs::lines::LineSplitter;
use crate::shell::runtime::setup;
use crate::shell::runtime::{AttemptSink, RuntimeError};

/// Removes the setup container when dropped (the build future ended, however it ended).
struct RemoveOnDrop {
    docker: bollard::Docker,
    name: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let (docker, name) = (self.docker.clone(), std::mem::take(&mut self.name));
        tokio::spawn(async move { super::engine::force_remove(&docker, &name).await });
    }
}

impl DockerRuntime {
    pub(super) async fn run_setup(
        &self,
        attempt: &AttemptKey,
        spec: &BuildSpec,
        image: &str,
        sink: &AttemptSink,
    ) -> Result<(), RuntimeError> {
        let workdir = self.config.cache_dir.join(&spec.workdir);
        setup::write_script(&workdir, &spec.setup_commands)?;
        let name = format!("{}-setup", self.name(attempt));
        setup::announce(sink, &spec.setup_commands, &format!(" in {image}"));
        let body = self.setup_body(spec, image, &workdir);
        self.create(&name, body).await?;
        let _remove = RemoveOnDrop {
            docker: self.docker.clone(),
            name: name.clone(),
        };
        self.docker
            .start_container(&name, None)
            .await
            .map_err(|e| engine_error("starting the setup container", &e))?;
        self.copy_output(&name, sink).await;
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let code = match self
            .docker
            .wait_container(&name, Some(options))
            .next()
            .await
        {
            Some(Ok(response)) => response.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => {
                return Err(RuntimeError::new(format!(
                    "waiting for the setup container: {}",
                    message(&e)
                )));
            }
            None => return Err(RuntimeError::new("the engine closed the wait stream")),
        };
        match code {
            0 => Ok(()),
            code => Err(setup::failed(&format!("exit code {code}"), sink)),
        }
    }

    fn setup_body(
        &self,
        spec: &BuildSpec,
        image: &str,
        workdir: &std::path::Path,
    ) -> ContainerCreateBody {
        let labels = [
            ("iris.managed", "true"),
            ("iris.worker_id", self.config.worker_id.as_str()),
            ("iris.setup", "true"),
        ];
        ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(setup::launcher()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            working_dir: Some(spec.container_workdir.clone()),
            host_config: Some(
                self.network(HostConfig {
                    binds: Some(self.binds(workdir, &spec.container_workdir)),
                    memory: Some(setup_memory(spec.resources.memory_bytes)),
                    // A soft weight, not a quota, whatever --docker-cpu-limit says: under a
                    // hard 10% quota the setup of a 0.1-cpu task takes minutes; it bursts onto
                    // idle cpu (as Iris's builds on on-demand hosts).
                    cpu_shares: (spec.resources.cpu_millicores > 0)
                        .then(|| cpu_shares(spec.resources.cpu_millicores)),
                    ..self.hardened()
                }),
            ),
            ..ContainerCreateBody::default()
        }
    }

    /// The setup container's stdout and stderr into the build log, until it exits.
    async fn copy_output(&self, name: &str, sink: &AttemptSink) {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut stream = self.docker.logs(name, Some(options));
        let mut splitter = LineSplitter::default();
        let mut emit = |region: &[u8]| sink.log_region(LogSource::Build, region);
        while let Some(Ok(chunk)) = stream.next().await {
            splitter.feed(&chunk.into_bytes(), &mut emit);
        }
        splitter.finish(&mut emit);
    }
}

/// Memory of a setup container: the task's, but at least 32 GiB, as Iris gives its build
/// containers (`uv sync` of a large workspace needs more than many tasks ask for).
fn setup_memory(task_bytes: u64) -> i64 {
    const FLOOR: u64 = 32 << 30;
    i64::try_from(task_bytes.max(FLOOR)).unwrap_or(i64::MAX)
}
