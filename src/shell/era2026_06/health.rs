//! The worker's health in a Reconcile answer: healthy unless the cache dir's file system is
//! nearly full (then the reason), with a `WorkerResourceSnapshot` read from the machine. Iris's
//! controller counts an omitted or false health as a failed call.

use std::path::Path;

use crate::proto::v2026_06::iris::{cluster::worker, job, time};
use crate::shell::disk::FsUsage;

/// Above this share of the cache dir's file system in use (bytes or inodes), the worker says
/// it is unhealthy: a task could not write its logs.
pub const DISK_UNHEALTHY_PERCENT: u8 = 95;

fn meminfo_kib(meminfo: &str, key: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the machine looks like now (memory from /proc/meminfo, disk from the cache dir).
pub fn snapshot(cache_dir: &Path, now_ms: i64, running: usize) -> job::WorkerResourceSnapshot {
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
        ..Default::default()
    }
}

/// Healthy, or why not.
pub fn health(cache_dir: &Path, now_ms: i64, running: usize) -> worker::WorkerHealth {
    let error = match FsUsage::of(cache_dir) {
        Err(e) => format!("cannot measure the cache dir {}: {e}", cache_dir.display()),
        Ok(d) if d.bytes_percent().max(d.inodes_percent()) > DISK_UNHEALTHY_PERCENT => format!(
            "the cache dir's file system is {}% full (bytes) and {}% (inodes); the limit is {DISK_UNHEALTHY_PERCENT}%",
            d.bytes_percent(),
            d.inodes_percent()
        ),
        Ok(_) => String::new(),
    };
    worker::WorkerHealth {
        healthy: Some(error.is_empty()),
        health_error: error,
        resources: Some(snapshot(cache_dir, now_ms, running)),
    }
}
