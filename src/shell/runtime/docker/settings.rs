//! What every container the worker creates runs under, run and setup containers alike, as Iris
//! runs its own (`iris/cluster/runtime/docker.py`): core dumps off, Iris's nofile limits, every
//! capability dropped but SYS_PTRACE (py-spy and gdb attach through `docker exec`), no new
//! privileges, a tmpfs `/tmp` of its own, a pids cap, and the engine's init as PID 1.

use bollard::models::{HostConfig, ResourcesUlimits};

use super::DockerRuntime;

/// `--container-nofile`: Iris's `nofile=65536:524288`.
pub const NOFILE_DEFAULT: (u64, u64) = (65_536, 524_288);

/// A TPU container's `/dev/shm` (Iris's `--shm-size=100g`).
pub const TPU_SHM_BYTES: i64 = 100_000_000_000;
/// A TPU container's locked-memory limit (Iris's `memlock=68719476736`, 64 GiB).
pub const TPU_MEMLOCK_BYTES: u64 = 64 << 30;

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
    /// A TPU container's locked memory: Iris's 64 GiB, or the engine's own hard limit when lower
    /// (runc cannot raise a container's past it).
    pub tpu_memlock: u64,
    /// The capabilities a TPU container gets instead of `--privileged` when the engine cannot
    /// grant every one (its own bounding set lacks some: runc then fails every privileged
    /// start with "unable to apply caps"); `None`: privileged, as Iris.
    pub tpu_caps: Option<Vec<String>>,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        ContainerSettings {
            nofile: NOFILE_DEFAULT,
            pids_max: 16_384,
            tmpfs_tmp: true,
            cpu_limit: CpuLimit::Hard,
            init: true,
            tpu_memlock: TPU_MEMLOCK_BYTES,
            tpu_caps: None,
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

    /// A TPU task's container, as Iris's `_build_device_flags`: privileged (the `/dev/accel*`
    /// and `/dev/vfio` devices, whichever the VM has, are visible and usable), so neither the
    /// capability drop nor no-new-privileges; SYS_RESOURCE; a 100 GB `/dev/shm` and 64 GiB of
    /// locked memory, which the TPU runtime maps its buffers with.
    pub(super) fn tpu(&self, host: &mut HostConfig) {
        host.shm_size = Some(TPU_SHM_BYTES);
        host.cap_drop = None;
        host.security_opt = None;
        match &self.config.settings.tpu_caps {
            None => {
                host.privileged = Some(true);
                host.cap_add = Some(vec!["SYS_PTRACE".to_string(), "SYS_RESOURCE".to_string()]);
            }
            // What privileged would give, as far as the engine can: its capabilities, no
            // seccomp filter, and the TPU devices the VM has.
            Some(caps) => {
                host.cap_add = Some(caps.clone());
                host.security_opt = Some(vec!["seccomp=unconfined".to_string()]);
                host.devices = Some(tpu_devices());
            }
        }
        let bytes = i64::try_from(self.config.settings.tpu_memlock).unwrap_or(i64::MAX);
        let memlock = ResourcesUlimits {
            name: Some("memlock".to_string()),
            soft: Some(bytes),
            hard: Some(bytes),
        };
        host.ulimits.get_or_insert_with(Vec::new).push(memlock);
    }

    /// A task's cpu request as its container's limit (`--docker-cpu-limit`).
    pub(super) fn cpu(&self, cpu_millicores: u32, host: &mut HostConfig) {
        if cpu_millicores == 0 {
            return;
        }
        match self.config.settings.cpu_limit {
            // A quota above the machine's cores limits nothing, and the engine refuses it
            // ("Range of CPUs is from 0.01 to N"): a worker that declares more cpu than it has
            // (`--cpu-millicores`, as Iris's scale groups do) must still start such a task.
            CpuLimit::Hard => host.nano_cpus = Some(nano_cpus(cpu_millicores, machine_cores())),
            CpuLimit::Soft => host.cpu_shares = Some(cpu_shares(cpu_millicores)),
        }
    }
}

/// The cores this machine has (the engine's, when it is local).
fn machine_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// A cpu request as a quota, at most the machine's cores.
pub fn nano_cpus(cpu_millicores: u32, cores: u32) -> i64 {
    i64::from(cpu_millicores.min(cores.saturating_mul(1000))) * 1_000_000
}

/// Iris's weight for a cpu request: 1,024 a core, at least 2.
pub fn cpu_shares(cpu_millicores: u32) -> i64 {
    (i64::from(cpu_millicores) * 1024 / 1000).max(2)
}

/// The engine's own hard nofile limit (see `engine_limits`).
pub fn engine_nofile_hard() -> Option<u64> {
    hard_limit(&engine_limits()?, "Max open files")
}

/// Linux's capabilities by number, as docker names them.
const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
];
/// Capabilities newer than the engines of 2020 know (docker 20.10 refuses to name them): a
/// privileged container gets them from a newer engine, the named fallback never.
const CAPABILITIES_NEWER: usize = 3;

/// The engine's capability bounding set, when its process is visible.
pub fn engine_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", engine_pid()?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
    u64::from_str_radix(line["CapBnd:".len()..].trim(), 16).ok()
}

/// `None` when a bounding set holds every capability docker grants a privileged container;
/// else the names of those it holds.
pub fn capabilities_short_of_all(bounding: u64) -> Option<Vec<String>> {
    let held = |bit: usize| bounding & (1u64 << bit) != 0;
    if (0..CAPABILITIES.len() + CAPABILITIES_NEWER).all(held) {
        return None;
    }
    let names = CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| held(*bit));
    Some(names.map(|(_, name)| name.to_string()).collect())
}

/// The TPU devices of this VM (`/dev/accel*`, `/dev/vfio/*`), each passed through as itself.
fn tpu_devices() -> Vec<bollard::models::DeviceMapping> {
    let listed = |dir: &str, prefix: &str| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut paths: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path().display().to_string())
            .collect();
        paths.sort();
        paths
    };
    let mut paths = listed("/dev", "accel");
    paths.extend(listed("/dev/vfio", ""));
    paths
        .into_iter()
        .map(|path| bollard::models::DeviceMapping {
            path_on_host: Some(path.clone()),
            path_in_container: Some(path),
            cgroup_permissions: Some("rwm".to_string()),
        })
        .collect()
}

/// The engine's own hard locked-memory limit in bytes: a container's memlock cannot exceed it.
pub fn engine_memlock_hard() -> Option<u64> {
    hard_limit(&engine_limits()?, "Max locked memory")
}

/// The engine's /proc/PID/limits (see `engine_pid`).
fn engine_limits() -> Option<String> {
    std::fs::read_to_string(format!("/proc/{}/limits", engine_pid()?)).ok()
}

/// The engine's process, when the engine is this machine's (the default socket) and its
/// process is visible: found through the socket's peer credentials.
fn engine_pid() -> Option<i32> {
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
    (got == 0 && cred.pid > 0).then_some(cred.pid)
}

/// The hard limit of the line `name` of a /proc/PID/limits text (`None` when unlimited or
/// absent); the hard value is the second column after the name.
fn hard_limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().nth(1)?.parse().ok()
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
        assert_eq!(hard_limit(limits, "Max open files"), Some(20_000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(hard_limit(unlimited, "Max open files"), None);
        let memlock = "Max locked memory         8388608              8388608              bytes\n";
        assert_eq!(hard_limit(memlock, "Max locked memory"), Some(8_388_608));
    }

    #[test]
    fn a_cpu_request_is_a_weight_as_iris_computes_it() {
        assert_eq!(cpu_shares(100), 102);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_shares(2000), 2048);
        assert_eq!(nano_cpus(500, 2), 500_000_000);
        assert_eq!(
            nano_cpus(4000, 2),
            2_000_000_000,
            "at most the machine's cores"
        );
    }

    #[test]
    fn an_engine_without_every_capability_gives_the_ones_it_has() {
        assert_eq!(capabilities_short_of_all(0x1ff_ffff_ffff), None);
        assert!(
            capabilities_short_of_all(0x3f_ffff_ffff).is_some(),
            "no PERFMON, BPF"
        );
        let short = capabilities_short_of_all(0x1ff_feff_ffff).unwrap();
        assert!(!short.contains(&"SYS_RESOURCE".to_string()));
        assert!(short.contains(&"SYS_ADMIN".to_string()));
        assert_eq!(short.len(), CAPABILITIES.len() - 1);
    }
}
