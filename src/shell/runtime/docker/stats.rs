//! The engine's stats stream mapped onto a `ResourceUsage` sample.

use bollard::Docker;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptionsBuilder;
use tokio::task::AbortHandle;
use tokio_stream::StreamExt;

use crate::core::ResourceUsage;
use crate::shell::runtime::AttemptSink;

/// Samples a container's usage until aborted or the stream ends.
pub(super) fn spawn_stats(docker: Docker, name: String, sink: AttemptSink) -> AbortHandle {
    tokio::spawn(async move {
        let options = StatsOptionsBuilder::default().stream(true).build();
        let mut stream = docker.stats(&name, Some(options));
        while let Some(Ok(stats)) = stream.next().await {
            sink.stats(usage_of(&stats));
        }
    })
    .abort_handle()
}

fn usage_of(stats: &ContainerStatsResponse) -> ResourceUsage {
    let memory = stats.memory_stats.as_ref();
    let memory_mb = memory.and_then(|m| m.usage).unwrap_or(0) as i64 / (1024 * 1024);
    let peak_mb = memory.and_then(|m| m.max_usage).unwrap_or(0) as i64 / (1024 * 1024);
    let total = |c: &Option<bollard::models::ContainerCpuStats>| {
        let c = c.as_ref();
        (
            c.and_then(|c| c.cpu_usage.as_ref())
                .and_then(|u| u.total_usage)
                .unwrap_or(0),
            c.and_then(|c| c.system_cpu_usage).unwrap_or(0),
            c.and_then(|c| c.online_cpus).unwrap_or(1),
        )
    };
    let (cpu, system, cpus) = total(&stats.cpu_stats);
    let (pre_cpu, pre_system, _) = total(&stats.precpu_stats);
    let system_delta = system.saturating_sub(pre_system);
    let millicores = if system_delta > 0 {
        (cpu.saturating_sub(pre_cpu) as f64 / system_delta as f64 * f64::from(cpus) * 1000.0) as i32
    } else {
        0
    };
    ResourceUsage {
        memory_mb,
        memory_peak_mb: peak_mb.max(memory_mb),
        disk_mb: 0,
        cpu_millicores: millicores,
        cpu_percent: millicores / 10,
        process_count: stats
            .pids_stats
            .as_ref()
            .and_then(|p| p.current)
            .unwrap_or(0) as i32,
    }
}
