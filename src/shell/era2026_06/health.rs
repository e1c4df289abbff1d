//! The worker's health in a Reconcile answer: healthy unless the cache dir's file system is
//! nearly full (then the reason), with a `WorkerResourceSnapshot` read from the machine. Iris's
//! controller counts an omitted or false health as a failed call.

use std::path::Path;
use std::sync::Mutex;

use crate::proto::v2026_06::iris::{cluster::worker, job, time};
use crate::shell::disk::FsUsage;

/// Unhealthy with less free than this share of the cache dir's file system (Iris's 5%)...
pub const DISK_FREE_PERCENT_MIN: u64 = 5;
/// ...and less than this (Iris's 10 GiB), so a big disk is not reaped while it has room.
pub const DISK_FREE_BYTES_MIN: u64 = 10 << 30;
/// Unhealthy above this share of inodes in use: a task could not create its files.
pub const INODES_UNHEALTHY_PERCENT: u8 = 95;

fn meminfo_kib(meminfo: &str, key: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The host's CPU time at the previous snapshot: utilisation is the share of non-idle time
/// between two snapshots (Iris's `HostMetricsCollector`; the first one says 0).
#[derive(Default)]
pub struct HostCpu {
    previous: Mutex<Option<(u64, u64)>>,
}

impl HostCpu {
    /// Percent busy since the last call, from /proc/stat's first line.
    fn percent(&self, stat: &str) -> i32 {
        let Some(now) = cpu_times(stat) else {
            return 0;
        };
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let percent = match *previous {
            Some((total, idle)) if now.0 > total => {
                let busy = (now.0 - total).saturating_sub(now.1.saturating_sub(idle));
                (busy * 100 / (now.0 - total)).min(100) as i32
            }
            _ => 0,
        };
        *previous = Some(now);
        percent
    }
}

/// (total, idle) jiffies: user nice system idle iowait irq softirq, as Iris sums them.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let mut fields = stat.lines().next()?.split_whitespace();
    (fields.next()? == "cpu").then_some(())?;
    let values: Vec<u64> = fields
        .take(7)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    (values.len() == 7).then(|| (values.iter().sum(), values[3]))
}

/// Bytes received and sent by every interface but loopback, since boot (/proc/net/dev).
fn net_bytes(net_dev: &str) -> (i64, i64) {
    net_dev
        .lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            let mut fields = counters.split_whitespace();
            let recv: i64 = fields.next()?.parse().ok()?;
            let sent: i64 = fields.nth(7)?.parse().ok()?;
            Some((recv, sent))
        })
        .fold((0, 0), |(r, s), (recv, sent)| (r + recv, s + sent))
}

/// What the machine looks like now: memory from /proc/meminfo, disk from the cache dir, CPU
/// and network from /proc.
pub fn snapshot(
    cache_dir: &Path,
    now_ms: i64,
    running: usize,
    cpu: &HostCpu,
) -> job::WorkerResourceSnapshot {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let (net_recv_bytes, net_sent_bytes) =
        net_bytes(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo_kib(&meminfo, "MemTotal:").unwrap_or(0) * 1024;
    let available = meminfo_kib(&meminfo, "MemAvailable:").unwrap_or(0) * 1024;
    let disk = FsUsage::of(cache_dir).ok();
    job::WorkerResourceSnapshot {
        timestamp: Some(time::Timestamp { epoch_ms: now_ms }),
        memory_used_bytes: (total - available).max(0),
        memory_total_bytes: total,
        disk_used_bytes: disk.map_or(0, |d| d.used_bytes as i64),
        disk_total_bytes: disk.map_or(0, |d| d.total_bytes as i64),
        running_task_count: i32::try_from(running).unwrap_or(i32::MAX),
        host_cpu_percent: cpu.percent(&stat),
        net_recv_bytes,
        net_sent_bytes,
        ..Default::default()
    }
}

/// Why the cache dir's file system cannot take more work, if it cannot: Iris's rule for bytes
/// (under 5% free and under 10 GiB free: a big disk is not reaped at 95%), and inodes all but
/// gone (a task could not create a file).
fn disk_trouble(d: &FsUsage) -> Option<String> {
    let free = d.total_bytes.saturating_sub(d.used_bytes);
    let low_share = free.saturating_mul(100) < d.total_bytes.saturating_mul(DISK_FREE_PERCENT_MIN);
    if d.total_bytes > 0 && low_share && free < DISK_FREE_BYTES_MIN {
        return Some(format!(
            "the cache dir's file system has {:.1} GiB free ({}%), under {DISK_FREE_PERCENT_MIN}% and {} GiB",
            free as f64 / f64::from(1u32 << 30),
            100 - d.bytes_percent(),
            DISK_FREE_BYTES_MIN >> 30
        ));
    }
    (d.inodes_percent() > INODES_UNHEALTHY_PERCENT).then(|| {
        format!(
            "the cache dir's file system has used {}% of its inodes; the limit is {INODES_UNHEALTHY_PERCENT}%",
            d.inodes_percent()
        )
    })
}

/// Healthy, or why not.
pub fn health(
    cache_dir: &Path,
    now_ms: i64,
    running: usize,
    cpu: &HostCpu,
) -> worker::WorkerHealth {
    let error = match FsUsage::of(cache_dir) {
        Err(e) => format!("cannot measure the cache dir {}: {e}", cache_dir.display()),
        Ok(d) => disk_trouble(&d).unwrap_or_default(),
    };
    worker::WorkerHealth {
        healthy: Some(error.is_empty()),
        health_error: error,
        resources: Some(snapshot(cache_dir, now_ms, running, cpu)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file system of `total_gib`, `free_tenths` tenths of a GiB free, `inodes_percent` used.
    fn fs(total_gib: u64, free_tenths: u64, inodes_percent: u64) -> FsUsage {
        let (total, free) = (total_gib << 30, (free_tenths << 30) / 10);
        FsUsage {
            used_bytes: total - free,
            total_bytes: total,
            available_bytes: free,
            used_inodes: inodes_percent,
            total_inodes: 100,
        }
    }

    #[test]
    fn cpu_is_the_busy_share_between_two_reads_and_network_skips_loopback() {
        let cpu = HostCpu::default();
        assert_eq!(
            cpu.percent("cpu  100 0 100 800 0 0 0 0 0 0\n"),
            0,
            "first read"
        );
        // 200 more jiffies, 50 of them idle: 75% busy.
        assert_eq!(cpu.percent("cpu  200 0 150 850 0 0 0 0 0 0\n"), 75);
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n\
                       lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n\
                     eth0: 1000 5 0 0 0 0 0 0 2000 6 0 0 0 0 0 0\n\
                     eth1: 10 1 0 0 0 0 0 0 20 1 0 0 0 0 0 0\n";
        assert_eq!(net_bytes(dev), (1010, 2020));
    }

    #[test]
    fn a_disk_is_unhealthy_as_iriss_under_5_percent_and_10_gib_free() {
        assert_eq!(
            disk_trouble(&fs(1000, 200, 10)),
            None,
            "20 GiB of 1 TB: 2%, healthy"
        );
        let full = disk_trouble(&fs(1000, 90, 10)).unwrap();
        assert!(full.contains("9.0 GiB free"), "{full}");
        assert_eq!(
            disk_trouble(&fs(100, 60, 10)),
            None,
            "6 GiB of 100: 6%, healthy"
        );
        assert!(disk_trouble(&fs(100, 40, 10)).is_some(), "4 GiB of 100");
        assert!(
            disk_trouble(&fs(1000, 5000, 96))
                .unwrap()
                .contains("inodes")
        );
    }
}
