//! The body of an attempt's container: image, command, env, labels, the workdir mount (at
//! `/workdir` in the task era, `/app` and the shared caches in the 2026-06 era, as Iris mounts
//! them), the network (the host's, or the bridge with port bindings), limits; the settings every
//! container shares are `settings.rs`.

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};

use super::{DockerNetwork, DockerRuntime};
use crate::core::ContainerSpec;
use crate::shell::runtime::setup;

impl DockerRuntime {
    pub(super) fn container_body(&self, spec: &ContainerSpec) -> ContainerCreateBody {
        let bridged = self.config.network == DockerNetwork::Bridge;
        // Published ports are a bridge's; on the host's network a task binds the host's.
        let port_bindings = bridged.then(|| {
            spec.ports
                .values()
                .map(|port| {
                    let binding = PortBinding {
                        host_ip: Some("0.0.0.0".to_string()),
                        host_port: Some(port.to_string()),
                    };
                    (format!("{port}/tcp"), Some(vec![binding]))
                })
                .collect()
        });
        let workdir = self.config.cache_dir.join(&spec.workdir);
        let memory = i64::try_from(spec.resources.memory_bytes).unwrap_or(i64::MAX);
        let mut host_config = HostConfig {
            binds: Some(self.binds(&workdir, &spec.container_workdir)),
            port_bindings,
            memory: (memory > 0).then_some(memory),
            memory_swap: (memory > 0).then_some(memory),
            ..self.hardened()
        };
        self.cpu(spec.resources.cpu_millicores, &mut host_config);
        if spec.resources.tpu_variant.is_some() {
            self.tpu(&mut host_config);
        }
        let host_config = self.network(host_config);
        ContainerCreateBody {
            image: Some(
                spec.image
                    .clone()
                    .unwrap_or_else(|| self.config.default_image.clone()),
            ),
            cmd: Some(match spec.activate_venv {
                true => setup::activated(&spec.argv),
                false => spec.argv.clone(),
            }),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            working_dir: Some(spec.container_workdir.clone()),
            exposed_ports: bridged
                .then(|| spec.ports.values().map(|p| format!("{p}/tcp")).collect()),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        }
    }
}
