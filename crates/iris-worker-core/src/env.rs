//! `build_iris_env`: the environment a task sees, in each era's order: in the task era the job's
//! variables come first and the IRIS_ ones win a clash; in the reconcile era (Iris 0.2.20) the
//! IRIS_ set comes first and the job's variables override it. The order is deterministic.

use std::collections::BTreeMap;

use super::hostpaths;
use super::spec::{ReconcileSpec, SpecEra, TaskSpec};

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
    /// Containers share the host's network: the controller's address reaches it as it is.
    pub host_network: bool,
    /// `IRIS_PYTHON` of a process-runtime task (a container's is the image's `python`).
    pub python: &'a str,
    /// The cache dir as a process-runtime task sees it: Iris's cache mounts live under it.
    pub cache_root: &'a str,
    /// The worker's region, when it knows one.
    pub worker_region: Option<&'a str>,
    /// The worker's default env for every task, below the job's own.
    pub task_env: &'a [(String, String)],
}

impl EnvContext<'_> {
    /// Where a path of Iris's container layout is, for this task.
    fn path(&self, container_path: &str) -> String {
        match self.flavour {
            RuntimeFlavour::Docker => container_path.to_string(),
            RuntimeFlavour::Process => {
                hostpaths::map(container_path, self.workdir, self.cache_root)
                    .unwrap_or_else(|| container_path.to_string())
            }
        }
    }

    /// The controller's address as a task reaches it: through the docker gateway from a
    /// bridged container, as given otherwise.
    fn controller_address(&self) -> Option<String> {
        let address = self.controller_address.filter(|a| !a.is_empty())?;
        Some(match (self.flavour, self.host_network) {
            (RuntimeFlavour::Docker, false) => rewrite_loopback_for_docker(address),
            _ => address.to_string(),
        })
    }
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
    match &spec.era {
        SpecEra::Push => task_era_env(spec, ports, ctx),
        SpecEra::Reconcile(r) => reconcile_era_env(spec, r, ports, ctx),
    }
}

/// `first` without the keys `then` sets, then `then`: the later list wins a clash.
fn layered(first: Vec<(String, String)>, then: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = first
        .into_iter()
        .filter(|(key, _)| !then.iter().any(|(k, _)| k == key))
        .collect();
    env.extend(then);
    env
}

/// The task era: the job's env_vars first, the IRIS_ variables win a clash.
fn task_era_env(
    spec: &TaskSpec,
    ports: &BTreeMap<String, u16>,
    ctx: &EnvContext<'_>,
) -> Vec<(String, String)> {
    let mut iris = vec![
        ("IRIS_JOB_ID".to_string(), spec.job_id.to_string()),
        ("IRIS_TASK_ID".to_string(), spec.task_id.to_string()),
        ("IRIS_TASK_INDEX".to_string(), spec.task_index.to_string()),
        ("IRIS_NUM_TASKS".to_string(), spec.num_tasks.to_string()),
        ("IRIS_ATTEMPT_ID".to_string(), spec.attempt_id.to_string()),
    ];
    push_worker_id(&mut iris, ctx);
    if let Some(address) = ctx.controller_address() {
        iris.push(("IRIS_CONTROLLER_ADDRESS".to_string(), address));
    }
    if let Some(bundle) = &spec.bundle_path {
        iris.push(("IRIS_BUNDLE_GCS_PATH".to_string(), bundle.clone()));
    }
    let bind_host = ctx.flavour.bind_host();
    iris.push(("IRIS_BIND_HOST".to_string(), bind_host.to_string()));
    push_advertise_and_ports(&mut iris, spec, ports, ctx);
    let user = layered(ctx.task_env.to_vec(), user_env(spec, ctx));
    layered(user, iris)
}

/// The reconcile era (2026-06), as Iris's `build_common_iris_env` and its worker's
/// `_create_container`: the IRIS_ set first, the job's env_vars override it. The task id in
/// Iris's path form, `:N` appended for attempt N > 0; the controller's address as a URL in
/// both variables (in-task clients connect with it); no IRIS_JOB_ID or IRIS_TASK_INDEX.
fn reconcile_era_env(
    spec: &TaskSpec,
    r: &ReconcileSpec,
    ports: &BTreeMap<String, u16>,
    ctx: &EnvContext<'_>,
) -> Vec<(String, String)> {
    let task_id = match spec.attempt_id {
        0 => r.task_path.clone(),
        n => format!("{}:{n}", r.task_path),
    };
    let bundle_id = r.bundle_id.clone().unwrap_or_default();
    let mut iris = vec![
        ("IRIS_TASK_ID".to_string(), task_id),
        ("IRIS_NUM_TASKS".to_string(), spec.num_tasks.to_string()),
        ("IRIS_BUNDLE_ID".to_string(), bundle_id),
    ];
    if let Some(address) = ctx.controller_address() {
        let url = controller_url(&address);
        iris.push(("IRIS_CONTROLLER_ADDRESS".to_string(), url.clone()));
        iris.push(("IRIS_CONTROLLER_URL".to_string(), url));
    }
    let python = match ctx.flavour {
        RuntimeFlavour::Docker => "python",
        RuntimeFlavour::Process => ctx.python,
    };
    iris.extend([
        ("IRIS_BIND_HOST".to_string(), "0.0.0.0".to_string()),
        ("IRIS_WORKDIR".to_string(), ctx.workdir.to_string()),
        ("IRIS_PYTHON".to_string(), python.to_string()),
        (
            "UV_PYTHON_INSTALL_DIR".to_string(),
            ctx.path(hostpaths::UV_PYTHON_INSTALL_DIR),
        ),
        (
            "CARGO_TARGET_DIR".to_string(),
            ctx.path(hostpaths::CARGO_TARGET_DIR),
        ),
    ]);
    iris.extend(r.request_env.iter().cloned());
    push_worker_id(&mut iris, ctx);
    push_advertise_and_ports(&mut iris, spec, ports, ctx);
    // Iris's order: its own variables, the worker's task_env, the job's env_vars.
    let env = layered(layered(iris, ctx.task_env.to_vec()), user_env(spec, ctx));
    // Last, so the job's env cannot spoof it: a fact about the worker (Iris sets it last too).
    let region = ctx.worker_region.filter(|r| !r.is_empty());
    let region = region.map(|r| ("IRIS_WORKER_REGION".to_string(), r.to_string()));
    layered(env, region.into_iter().collect())
}

/// The job's env_vars; for a process-runtime task, values naming a path of Iris's container
/// layout (`/app/...`) point at the host's (as Iris's process runtime maps them).
fn user_env(spec: &TaskSpec, ctx: &EnvContext<'_>) -> Vec<(String, String)> {
    let map = spec.era.uses_container_layout() && ctx.flavour == RuntimeFlavour::Process;
    spec.environment
        .env_vars
        .iter()
        .map(|(k, v)| match map {
            true => (k.clone(), ctx.path(v)),
            false => (k.clone(), v.clone()),
        })
        .collect()
}

fn push_worker_id(vars: &mut Vec<(String, String)>, ctx: &EnvContext<'_>) {
    if let Some(worker_id) = ctx.worker_id.filter(|w| !w.is_empty()) {
        vars.push(("IRIS_WORKER_ID".to_string(), worker_id.to_string()));
    }
}

fn push_advertise_and_ports(
    vars: &mut Vec<(String, String)>,
    spec: &TaskSpec,
    ports: &BTreeMap<String, u16>,
    ctx: &EnvContext<'_>,
) {
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
}

/// `http://host:port` for an address given as `host:port` (Iris's convention) or a URL.
fn controller_url(address: &str) -> String {
    if address.contains("://") {
        address.replacen("grpc://", "http://", 1)
    } else {
        format!("http://{address}")
    }
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

    fn value<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_workers_task_env_sits_below_the_jobs_own() {
        let worker = [
            ("A", "worker"),
            ("B", "worker"),
            ("IRIS_NUM_TASKS", "worker"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let mut spec = crate::testing::spec("job/task-0", 0);
        spec.environment.env_vars.insert("B".into(), "job".into());
        let ctx = EnvContext {
            flavour: RuntimeFlavour::Docker,
            worker_id: None,
            controller_address: None,
            advertise_host: "10.0.0.1",
            workdir: "/app",
            host_network: true,
            python: "python3",
            cache_root: "/cache",
            worker_region: None,
            task_env: &worker,
        };
        let ports = BTreeMap::new();
        let push = build_iris_env(&spec, &ports, &ctx);
        assert_eq!(value(&push, "A"), Some("worker"));
        assert_eq!(value(&push, "B"), Some("job"));
        assert_eq!(
            value(&push, "IRIS_NUM_TASKS"),
            Some("1"),
            "the task era's IRIS_ win"
        );
        spec.era = SpecEra::Reconcile(ReconcileSpec::default());
        let reconcile = build_iris_env(&spec, &ports, &ctx);
        assert_eq!(value(&reconcile, "A"), Some("worker"));
        assert_eq!(value(&reconcile, "B"), Some("job"));
        assert_eq!(
            value(&reconcile, "IRIS_NUM_TASKS"),
            Some("worker"),
            "Iris's order"
        );
    }
}
