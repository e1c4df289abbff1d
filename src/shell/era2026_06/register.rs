//! Registration in the 2026-06 era, and the watchdog of a controller that stopped calling.
//! `Register` is an upsert keyed by our worker id, retried with backoff capped at 5 s until it
//! is accepted. After `reconcile_timeout` without a Reconcile the worker does what Iris's does:
//! kills every attempt and registers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tonic::{Code, Status};

use super::REGISTER_PATH;
use crate::proto;
use crate::proto::v2026_06::iris::cluster::controller;
use crate::proto::v2026_06::iris::job;
use crate::shell::clock::Clock;
use crate::shell::connect::client::ConnectClient;
use crate::shell::driver::{Command, DriverHandle};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Iris's attribute values of the era, from the task era's.
fn attribute(v: &proto::AttributeValue) -> job::AttributeValue {
    use job::attribute_value::Value as New;
    use proto::attribute_value::Value as Old;
    job::AttributeValue {
        value: v.value.as_ref().map(|value| match value {
            Old::StringValue(s) => New::StringValue(s.clone()),
            Old::IntValue(i) => New::IntValue(*i),
            Old::FloatValue(f) => New::FloatValue(*f),
        }),
    }
}

fn device(d: &proto::DeviceConfig) -> job::DeviceConfig {
    use job::device_config::Device as New;
    use proto::device_config::Device as Old;
    job::DeviceConfig {
        device: d.device.as_ref().map(|device| match device {
            Old::Cpu(c) => New::Cpu(job::CpuDevice {
                variant: c.variant.clone(),
            }),
            Old::Gpu(g) => New::Gpu(job::GpuDevice {
                variant: g.variant.clone(),
                count: g.count,
            }),
            Old::Tpu(t) => New::Tpu(job::TpuDevice {
                variant: t.variant.clone(),
                topology: t.topology.clone(),
                count: t.count,
            }),
        }),
    }
}

/// The probe's metadata in this era's message, with the attributes Iris's own worker adds
/// (`device-type`, `preemptible`) unless the operator set them, and the build's commit.
pub fn metadata(m: &proto::WorkerMetadata, git_hash: &str) -> job::WorkerMetadata {
    let mut attributes: std::collections::HashMap<String, job::AttributeValue> = m
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), attribute(v)))
        .collect();
    let text = |s: &str| job::AttributeValue {
        value: Some(job::attribute_value::Value::StringValue(s.to_string())),
    };
    let kind = match m.device.as_ref().and_then(|d| d.device.as_ref()) {
        Some(proto::device_config::Device::Gpu(_)) => "gpu",
        Some(proto::device_config::Device::Tpu(_)) => "tpu",
        _ => "cpu",
    };
    attributes.entry("device-type".into()).or_insert(text(kind));
    attributes
        .entry("preemptible".into())
        .or_insert(text("false"));
    job::WorkerMetadata {
        hostname: m.hostname.clone(),
        ip_address: m.ip_address.clone(),
        cpu_count: m.cpu_count,
        memory_bytes: m.memory_bytes,
        disk_bytes: m.disk_bytes,
        device: m.device.as_ref().map(device),
        tpu_name: m.tpu_name.clone(),
        tpu_worker_hostnames: m.tpu_worker_hostnames.clone(),
        tpu_worker_id: m.tpu_worker_id.clone(),
        tpu_chips_per_host_bounds: m.tpu_chips_per_host_bounds.clone(),
        gpu_count: m.gpu_count,
        gpu_name: m.gpu_name.clone(),
        gpu_memory_mb: m.gpu_memory_mb,
        gce_instance_name: m.gce_instance_name.clone(),
        gce_zone: m.gce_zone.clone(),
        attributes,
        git_hash: git_hash.to_string(),
    }
}

/// One Register call. `Ok(false)`: the controller refused.
pub async fn register_once(
    client: &ConnectClient,
    request: &controller::RegisterRequest,
) -> Result<bool, Status> {
    let answer: controller::RegisterResponse =
        client.unary(REGISTER_PATH, request, CALL_TIMEOUT).await?;
    Ok(answer.accepted)
}

/// Whether a failed call means "this controller has no such method" (another era).
pub fn is_unimplemented(status: &Status) -> bool {
    matches!(status.code(), Code::Unimplemented | Code::NotFound)
}

/// Registers until accepted.
pub async fn register(client: &ConnectClient, request: &controller::RegisterRequest) {
    let mut backoff = BACKOFF_INITIAL;
    loop {
        match register_once(client, request).await {
            Ok(true) => {
                tracing::info!(worker_id = %request.worker_id, "registered (Iris 2026-06)");
                return;
            }
            Ok(false) => tracing::warn!("the controller refused the registration; retrying"),
            Err(e) => tracing::warn!(error = %e, "register failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Watches the controller (the worker registered when it asked the controller's era): one
/// silent for `reconcile_timeout` means this worker was reaped or forgotten; every attempt is
/// killed and the worker registers again.
pub async fn run(
    client: ConnectClient,
    request: controller::RegisterRequest,
    driver: DriverHandle,
    last_reconcile_ms: Arc<AtomicI64>,
    reconcile_timeout: Duration,
    clock: Clock,
) {
    let wall_ms = || i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
    last_reconcile_ms.store(wall_ms(), Ordering::Relaxed);
    let limit_ms = i64::try_from(reconcile_timeout.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let silent_ms = wall_ms() - last_reconcile_ms.load(Ordering::Relaxed);
        if silent_ms < limit_ms {
            continue;
        }
        tracing::warn!(
            silent_ms,
            "no Reconcile for too long: killing every task, registering again"
        );
        let reason = "No Reconcile from the controller; worker reset".to_string();
        let _ = driver.ask(|reply| Command::KillAll { reason, reply }).await;
        register(&client, &request).await;
        last_reconcile_ms.store(wall_ms(), Ordering::Relaxed);
    }
}
