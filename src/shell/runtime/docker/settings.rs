//! What every container the worker creates runs under, run and setup containers alike, as Iris
//! runs its own (`iris/cluster/runtime/docker.py`): core dumps off, Iris's nofile limits, every
//! capability dropped but SYS_PTRACE (py-spy and gdb attach through `docker exec`), no new
//! privileges, a tmpfs `/tmp` of its own, a pids cap, and the engine's init as PID 1.

use bollard::models::{HostConfig, ResourcesUlimits};

use super::DockerRuntime;

/// `--container-nofile`: Iris's `nofile=65536:524288`.
pub const NOFILE_DEFAULT: (u64, u64) = (65_536, 524_288);

/// `--docker-cpu-limit`: how a task's cpu request limits its container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuLimit {
    /// A quota (`--cpus`): Iris's on preemptible and reserved hosts, and its default.
    Hard,
    /// A weight (`--cpu-shares`): Iris's on on-demand hosts; idle cpu is used.
    Soft,
}

/// The container settings of `serve`'s flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSettings {
    /// (soft, hard), already within what the engine may grant.
    pub nofile: (u64, u64),
    pub pids_max: i64,
    pub tmpfs_tmp: bool,
    pub cpu_limit: CpuLimit,
    /// The engine's init as PID 1: the kernel gives PID 1 no default signal actions, so without
    /// it an entrypoint ignores SIGTERM and survives its own SIGKILL.
    pub init: bool,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        ContainerSettings {
            nofile: NOFILE_DEFAULT,
            pids_max: 16_384,
            tmpfs_tmp: true,
            cpu_limit: CpuLimit::Hard,
            init: true,
        }
    }
}

/// `SOFT:HARD` (or one number for both).
pub fn parse_nofile(raw: &str) -> Result<(u64, u64), String> {
    let (soft, hard) = raw.split_once(':').unwrap_or((raw, raw));
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("{s:?}: {e}"));
    let (soft, hard) = (parse(soft)?, parse(hard)?);
    if soft == 0 || soft > hard {
        return Err(format!("{raw:?}: expected SOFT:HARD with 0 < SOFT <= HARD"));
    }
    Ok((soft, hard))
}

/// The limits within `engine_hard`, the engine's own hard nofile limit: a container's cannot
/// exceed it (runc fails the start with "error setting rlimit").
pub fn within(nofile: (u64, u64), engine_hard: Option<u64>) -> (u64, u64) {
    match engine_hard {
        Some(cap) if cap < nofile.1 => (nofile.0.min(cap), cap),
        _ => nofile,
    }
}

impl DockerRuntime {
    /// The host config every container of the worker starts from.
    pub(super) fn hardened(&self) -> HostConfig {
        let settings = &self.config.settings;
        let limit = |name: &str, (soft, hard): (u64, u64)| ResourcesUlimits {
            name: Some(name.to_string()),
            soft: Some(i64::try_from(soft).unwrap_or(i64::MAX)),
            hard: Some(i64::try_from(hard).unwrap_or(i64::MAX)),
        };
        HostConfig {
            ulimits: Some(vec![
                limit("core", (0, 0)),
                limit("nofile", settings.nofile),
            ]),
            pids_limit: Some(settings.pids_max),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            cap_drop: Some(vec!["ALL".to_string()]),
            cap_add: Some(vec!["SYS_PTRACE".to_string()]),
            tmpfs: settings
                .tmpfs_tmp
                .then(|| [("/tmp".to_string(), String::new())].into_iter().collect()),
            init: Some(settings.init),
            ..HostConfig::default()
        }
    }

    /// A task's cpu request as its container's limit (`--docker-cpu-limit`).
    pub(super) fn cpu(&self, cpu_millicores: u32, host: &mut HostConfig) {
        if cpu_millicores == 0 {
            return;
        }
        match self.config.settings.cpu_limit {
            CpuLimit::Hard => host.nano_cpus = Some(i64::from(cpu_millicores) * 1_000_000),
            CpuLimit::Soft => host.cpu_shares = Some(cpu_shares(cpu_millicores)),
        }
    }
}

/// Iris's weight for a cpu request: 1,024 a core, at least 2.
pub fn cpu_shares(cpu_millicores: u32) -> i64 {
    (i64::from(cpu_millicores) * 1024 / 1000).max(2)
}

/// The engine's own hard nofile limit, when the engine is this machine's (the default socket)
/// and its process is visible: read from /proc through the socket's peer credentials.
pub fn engine_nofile_hard() -> Option<u64> {
    use std::os::fd::AsRawFd;
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let socket = match host.strip_prefix("unix://") {
        Some(path) => path.to_string(),
        None if host.is_empty() => "/var/run/docker.sock".to_string(),
        None => return None,
    };
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a connected socket we own and a ucred the call fills in, its size given.
    let got = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if got != 0 || cred.pid <= 0 {
        return None;
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", cred.pid)).ok()?;
    hard_nofile(&limits)
}

/// The hard "Max open files" of a /proc/PID/limits text (`None` when unlimited or absent).
fn hard_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_is_parsed_and_kept_within_the_engines() {
        assert_eq!(parse_nofile("65536:524288"), Ok((65_536, 524_288)));
        assert_eq!(parse_nofile("1024"), Ok((1024, 1024)));
        assert!(parse_nofile("10:5").is_err());
        assert!(parse_nofile("x").is_err());
        assert_eq!(within(NOFILE_DEFAULT, Some(20_000)), (20_000, 20_000));
        assert_eq!(within(NOFILE_DEFAULT, Some(100_000)), (65_536, 100_000));
        assert_eq!(within(NOFILE_DEFAULT, Some(1 << 20)), NOFILE_DEFAULT);
        assert_eq!(within(NOFILE_DEFAULT, None), NOFILE_DEFAULT);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                20000                files\n";
        assert_eq!(hard_nofile(limits), Some(20_000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(hard_nofile(unlimited), None);
    }

    #[test]
    fn a_cpu_request_is_a_weight_as_iris_computes_it() {
        assert_eq!(cpu_shares(100), 102);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_shares(2000), 2048);
    }
}
