//! `build_iris_env`: the environment a task sees. User variables come first; the IRIS_ variables
//! are applied after them and win on a clash. The order is deterministic.

use std::collections::BTreeMap;

use super::spec::TaskSpec;

/// Which runtime will run the task; it decides the bind host and the controller address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeFlavour {
    Docker,
    Process,
}

impl RuntimeFlavour {
    pub fn bind_host(self) -> &'static str {
        match self {
            RuntimeFlavour::Docker => "0.0.0.0",
            RuntimeFlavour::Process => "127.0.0.1",
        }
    }
}

/// What the worker knows about itself that a task's env needs.
#[derive(Clone, Debug)]
pub struct EnvContext<'a> {
    pub flavour: RuntimeFlavour,
    pub worker_id: Option<&'a str>,
    pub controller_address: Option<&'a str>,
    pub advertise_host: &'a str,
    /// The attempt's workdir as the task sees it (`IRIS_WORKDIR`, reconcile era).
    pub workdir: &'a str,
}

/// The docker host gateway name that reaches the host's loopback from inside a container.
pub const DOCKER_HOST_GATEWAY: &str = "host.docker.internal";

/// Rewrites a loopback host in `address` (`[scheme://]host[:port][/path]`) to the docker gateway.
pub fn rewrite_loopback_for_docker(address: &str) -> String {
    let (scheme, rest) = match address.find("://") {
        Some(i) => address.split_at(i + 3),
        None => ("", address),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (host, port) = split_host_port(authority);
    if is_loopback_host(host) {
        format!("{scheme}{DOCKER_HOST_GATEWAY}{port}{path}")
    } else {
        address.to_string()
    }
}

fn split_host_port(authority: &str) -> (&str, &str) {
    if authority.starts_with('[') {
        let end = authority.find(']').map_or(authority.len(), |i| i + 1);
        return authority.split_at(end);
    }
    match authority.rfind(':') {
        Some(i) => authority.split_at(i),
        None => (authority, ""),
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host == "[::1]" || host == "::1" || host.starts_with("127.")
}

/// The full environment of a task, in the order it is applied.
pub fn build_iris_env(
    spec: &TaskSpec,
    ports: &BTreeMap<String, u16>,
    ctx: &EnvContext<'_>,
) -> Vec<(String, String)> {
    let iris = iris_vars(spec, ports, ctx);
    let mut env: Vec<(String, String)> = spec
        .environment
        .env_vars
        .iter()
        .filter(|(key, _)| !iris.iter().any(|(k, _)| k == *key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(iris);
    env
}

fn iris_vars(
    spec: &TaskSpec,
    ports: &BTreeMap<String, u16>,
    ctx: &EnvContext<'_>,
) -> Vec<(String, String)> {
    let mut vars = match &spec.reconcile {
        None => task_era_vars(spec),
        Some(r) => reconcile_era_vars(spec, r, ctx),
    };
    if let Some(worker_id) = ctx.worker_id.filter(|w| !w.is_empty()) {
        vars.push(("IRIS_WORKER_ID".to_string(), worker_id.to_string()));
    }
    if let Some(address) = ctx.controller_address.filter(|a| !a.is_empty()) {
        let address = match ctx.flavour {
            RuntimeFlavour::Docker => rewrite_loopback_for_docker(address),
            RuntimeFlavour::Process => address.to_string(),
        };
        if spec.reconcile.is_some() {
            vars.push(("IRIS_CONTROLLER_URL".to_string(), controller_url(&address)));
        }
        vars.push(("IRIS_CONTROLLER_ADDRESS".to_string(), address));
    }
    if let Some(bundle) = &spec.bundle_path {
        vars.push(("IRIS_BUNDLE_GCS_PATH".to_string(), bundle.clone()));
    }
    vars.push((
        "IRIS_BIND_HOST".to_string(),
        ctx.flavour.bind_host().to_string(),
    ));
    vars.push((
        "IRIS_ADVERTISE_HOST".to_string(),
        ctx.advertise_host.to_string(),
    ));
    // Request order, so IRIS_PORT_<NAME> lines up with `ports` in the request.
    for name in &spec.port_names {
        if let Some(port) = ports.get(name) {
            vars.push((
                format!("IRIS_PORT_{}", name.to_uppercase()),
                port.to_string(),
            ));
        }
    }
    vars
}

/// `http://host:port` for an address given as `host:port` (Iris's convention) or a URL.
fn controller_url(address: &str) -> String {
    if address.contains("://") {
        address.replacen("grpc://", "http://", 1)
    } else {
        format!("http://{address}")
    }
}

/// The task era's identity variables.
fn task_era_vars(spec: &TaskSpec) -> Vec<(String, String)> {
    vec![
        ("IRIS_JOB_ID".to_string(), spec.job_id.to_string()),
        ("IRIS_TASK_ID".to_string(), spec.task_id.to_string()),
        ("IRIS_TASK_INDEX".to_string(), spec.task_index.to_string()),
        ("IRIS_NUM_TASKS".to_string(), spec.num_tasks.to_string()),
        ("IRIS_ATTEMPT_ID".to_string(), spec.attempt_id.to_string()),
    ]
}

/// The reconcile era's (2026-06): the task id in Iris's path form, `:N` appended for attempt
/// N > 0; no IRIS_JOB_ID or IRIS_TASK_INDEX (Iris dropped them).
fn reconcile_era_vars(
    spec: &TaskSpec,
    r: &super::spec::ReconcileSpec,
    ctx: &EnvContext<'_>,
) -> Vec<(String, String)> {
    let task_id = match spec.attempt_id {
        0 => r.task_path.clone(),
        n => format!("{}:{n}", r.task_path),
    };
    let mut vars = vec![
        ("IRIS_TASK_ID".to_string(), task_id),
        ("IRIS_NUM_TASKS".to_string(), spec.num_tasks.to_string()),
        ("IRIS_WORKDIR".to_string(), ctx.workdir.to_string()),
        ("IRIS_TASK_RESOURCES".to_string(), r.resources_json.clone()),
    ];
    if let Some(bundle) = &r.bundle_id {
        vars.push(("IRIS_BUNDLE_ID".to_string(), bundle.clone()));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_rewrite_keeps_scheme_port_and_path() {
        let cases = [
            ("http://127.0.0.1:8080", "http://host.docker.internal:8080"),
            ("localhost:9000", "host.docker.internal:9000"),
            (
                "grpc://127.0.0.1:50051",
                "grpc://host.docker.internal:50051",
            ),
            (
                "http://[::1]:50051/x",
                "http://host.docker.internal:50051/x",
            ),
            ("127.0.0.5", "host.docker.internal"),
            ("http://10.0.0.1:8080", "http://10.0.0.1:8080"),
            (
                "http://controller.example:80",
                "http://controller.example:80",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(rewrite_loopback_for_docker(input), want, "{input}");
        }
    }
}
