//! What the worker tells the controller about its machine (`WorkerMetadata`), found as the Iris
//! worker's probe finds it: CPUs, memory, the cache dir's free disk, a GPU (nvidia-smi) or a TPU
//! (the GCE metadata server's, `gce`), the attributes and CPU the operator configured, and
//! `IRIS_VM_ADDRESS`. The controller schedules with these. Parsing is pure; only `probe` reads
//! the machine.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::proto::{self, AttributeValue, DeviceConfig, attribute_value, device_config};
use crate::shell::disk::FsUsage;
use crate::shell::gce::GceFacts;
use crate::shell::tpu;

/// How long nvidia-smi may take before the worker assumes no GPU.
const GPU_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// What the operator configured rather than the probe finds.
#[derive(Clone, Debug, Default)]
pub struct Configured {
    /// `k=v,...` (`--worker-attributes`, `IRIS_WORKER_ATTRIBUTES`).
    pub attributes: Option<String>,
    /// The CPU to advertise, as Iris's `cpu_millicores`: whole cores, at least one.
    pub cpu_millicores: Option<u32>,
    /// Memory kept for the system (`None`: Iris's, a tenth of it up to 8 GiB).
    pub reserve_memory_bytes: Option<u64>,
    /// Cores kept for the system (`None`: Iris's, a tenth of them up to one, whole cores).
    pub reserve_cpus: Option<u32>,
    /// What the GCE metadata server said of this VM, when it is one.
    pub gce: Option<GceFacts>,
}

/// Iris's memory headroom: a tenth of the machine's, at most 8 GiB.
pub fn memory_reserve(total: u64) -> u64 {
    (total / 10).min(8 << 30)
}

/// Iris's cpu headroom: a tenth of the cores, at most one, as whole cores (so none under ten).
pub fn cpu_reserve(cores: u32) -> u32 {
    (cores / 10).min(1)
}

/// The machine's metadata; `ip_address` is the address the worker advertises.
pub async fn probe(
    ip_address: &str,
    cache_dir: &Path,
    configured: &Configured,
) -> proto::WorkerMetadata {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut metadata = proto::WorkerMetadata {
        hostname: hostname(),
        ip_address: ip_address.to_string(),
        cpu_count: match configured.cpu_millicores {
            Some(m) if m > 0 => i32::try_from(m / 1000).unwrap_or(i32::MAX).max(1),
            _ => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
                let reserve = configured
                    .reserve_cpus
                    .unwrap_or_else(|| cpu_reserve(cores));
                i32::try_from(cores.saturating_sub(reserve).max(1)).unwrap_or(i32::MAX)
            }
        },
        memory_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_total_bytes(&m))
            .map_or(0, |total| {
                let total = u64::try_from(total).unwrap_or(0);
                let reserve = configured
                    .reserve_memory_bytes
                    .unwrap_or_else(|| memory_reserve(total));
                i64::try_from(total.saturating_sub(reserve)).unwrap_or(i64::MAX)
            }),
        disk_bytes: FsUsage::of(cache_dir)
            .map_or(0, |u| i64::try_from(u.available_bytes).unwrap_or(i64::MAX)),
        attributes: configured
            .attributes
            .as_deref()
            .map(parse_attributes)
            .unwrap_or_default(),
        vm_address: env("IRIS_VM_ADDRESS").unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    let tpu = configured
        .gce
        .as_ref()
        .is_some_and(|facts| apply_gce(&mut metadata, facts));
    if !tpu && let Some(csv) = nvidia_smi().await {
        apply_gpu(&mut metadata, &csv);
    }
    if metadata.device.is_none() {
        metadata.device = Some(device(device_config::Device::Cpu(proto::CpuDevice {
            variant: "cpu".into(),
        })));
    }
    metadata
}

fn device(d: device_config::Device) -> DeviceConfig {
    DeviceConfig { device: Some(d) }
}

/// `MemTotal` of /proc/meminfo, in bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The worker's `region` attribute (`--worker-attributes region=us-east5,...`): a task's
/// IRIS_WORKER_REGION, which child jobs of it inherit.
pub fn worker_region(attributes: Option<&str>) -> Option<String> {
    let attributes = parse_attributes(attributes?);
    match attributes.get("region")?.value.as_ref()? {
        attribute_value::Value::StringValue(region) => Some(region.clone()),
        _ => None,
    }
}

/// `key=value,key=value`: integers and floats typed as such, everything else a string.
pub fn parse_attributes(spec: &str) -> HashMap<String, AttributeValue> {
    spec.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), attribute(v)))
        .collect()
}

fn attribute(value: &str) -> AttributeValue {
    let value = if let Ok(i) = value.parse::<i64>() {
        attribute_value::Value::IntValue(i)
    } else if let Some(f) = value.parse::<f64>().ok().filter(|f| f.is_finite()) {
        attribute_value::Value::FloatValue(f)
    } else {
        attribute_value::Value::StringValue(value.to_string())
    };
    AttributeValue { value: Some(value) }
}

/// Fills what the metadata server says: the GCE instance and zone, `zone`, `region` and
/// `preemptible`, and on a TPU VM the TPU fields, the device (its chips) and the attributes the
/// scheduler matches a TPU job with (`device-type`, `device-variant`, `tpu-name`,
/// `tpu-worker-id`, `tpu-topology`, `tpu-vm-count`). The operator's attributes win. Returns
/// whether the VM is a TPU worker.
pub fn apply_gce(metadata: &mut proto::WorkerMetadata, facts: &GceFacts) -> bool {
    metadata.gce_instance_name = facts.instance_name.clone();
    metadata.gce_zone = facts.zone.clone();
    let mut derived: Vec<(&str, AttributeValue)> = Vec::new();
    if !facts.zone.is_empty() {
        derived.push(("zone", attribute_string(&facts.zone)));
    }
    if let Some(region) = facts.region() {
        derived.push(("region", attribute_string(region)));
    }
    derived.push((
        "preemptible",
        attribute_string(&facts.preemptible.to_string()),
    ));
    let is_tpu = match &facts.tpu {
        None => false,
        Some(vm) => {
            let shape = tpu::topology(&vm.accelerator_type);
            let chips = match chips_of(&vm.chips_per_host_bounds) {
                0 => shape.map_or(0, |t| t.chips_per_vm as i32),
                n => n,
            };
            metadata.tpu_name = vm.slice.clone();
            metadata.tpu_worker_id = vm.worker_id.to_string();
            metadata.tpu_worker_hostnames = vm.hostnames.clone();
            metadata.tpu_chips_per_host_bounds = vm.chips_per_host_bounds.clone();
            metadata.device = Some(device(device_config::Device::Tpu(proto::TpuDevice {
                variant: vm.accelerator_type.clone(),
                topology: String::new(),
                count: chips,
            })));
            let variant = vm.accelerator_type.to_lowercase();
            derived.push(("device-type", attribute_string("tpu")));
            derived.push(("device-variant", attribute_string(&variant)));
            derived.push(("tpu-name", attribute_string(&vm.slice)));
            derived.push(("tpu-worker-id", attribute_int(i64::from(vm.worker_id))));
            derived.push(("tpu-topology", attribute_string(&vm.accelerator_type)));
            if let Some(shape) = shape {
                derived.push(("tpu-vm-count", attribute_int(i64::from(shape.vm_count))));
            }
            true
        }
    };
    for (key, value) in derived {
        metadata.attributes.entry(key.to_string()).or_insert(value);
    }
    is_tpu
}

fn attribute_int(i: i64) -> AttributeValue {
    AttributeValue {
        value: Some(attribute_value::Value::IntValue(i)),
    }
}

fn attribute_string(s: &str) -> AttributeValue {
    AttributeValue {
        value: Some(attribute_value::Value::StringValue(s.to_string())),
    }
}

/// Chips on this host from bounds such as `2,2,1`.
fn chips_of(bounds: &str) -> i32 {
    let dims: Option<Vec<i32>> = bounds.split(',').map(|d| d.trim().parse().ok()).collect();
    match dims {
        Some(d) if !d.is_empty() => d.iter().product(),
        _ => 0,
    }
}

/// `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits` output, or `None`
/// when there is no nvidia-smi or it fails.
async fn nvidia_smi() -> Option<String> {
    let run = tokio::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(GPU_PROBE_TIMEOUT, run)
        .await
        .ok()?
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fills the GPU fields from nvidia-smi's CSV (one line per GPU: `name, memory MiB`).
pub fn apply_gpu(metadata: &mut proto::WorkerMetadata, csv: &str) {
    let gpus: Vec<(&str, i32)> = csv
        .lines()
        .filter_map(|l| l.rsplit_once(','))
        .map(|(name, mem)| (name.trim(), mem.trim().parse().unwrap_or(0)))
        .filter(|(name, _)| !name.is_empty())
        .collect();
    let Some((name, memory_mb)) = gpus.first().copied() else {
        return;
    };
    let count = gpus.len() as i32;
    metadata.gpu_count = count;
    metadata.gpu_name = name.to_string();
    metadata.gpu_memory_mb = memory_mb;
    metadata.device = Some(device(device_config::Device::Gpu(proto::GpuDevice {
        variant: name.to_string(),
        count,
    })));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_typed() {
        let a = parse_attributes("pool=large-jobs, rank=3,ratio=0.5,taint:maintenance=true,=x,bad");
        let v = |k: &str| a[k].value.clone().unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(
            v("pool"),
            attribute_value::Value::StringValue("large-jobs".into())
        );
        assert_eq!(v("rank"), attribute_value::Value::IntValue(3));
        assert_eq!(v("ratio"), attribute_value::Value::FloatValue(0.5));
        assert_eq!(
            v("taint:maintenance"),
            attribute_value::Value::StringValue("true".into())
        );
    }

    #[test]
    fn gpus_and_tpus() {
        let mut m = proto::WorkerMetadata::default();
        apply_gpu(
            &mut m,
            "NVIDIA H100 80GB HBM3, 81559\nNVIDIA H100 80GB HBM3, 81559\n",
        );
        assert_eq!((m.gpu_count, m.gpu_memory_mb), (2, 81559));
        assert_eq!(m.gpu_name, "NVIDIA H100 80GB HBM3");
        let facts = GceFacts {
            instance_name: "slice-a-w-1".into(),
            zone: "us-east5-b".into(),
            preemptible: true,
            tpu: Some(crate::shell::gce::TpuVm {
                slice: "slice-a".into(),
                accelerator_type: "v5litepod-16".into(),
                worker_id: 1,
                hostnames: "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4".into(),
                chips_per_host_bounds: String::new(),
            }),
            trouble: None,
        };
        let mut t = proto::WorkerMetadata::default();
        t.attributes
            .insert("zone".into(), attribute_string("operator-says"));
        assert!(apply_gce(&mut t, &facts));
        assert_eq!(t.tpu_name, "slice-a");
        let Some(device_config::Device::Tpu(tpu)) = t.device.clone().unwrap().device else {
            panic!("a TPU device");
        };
        assert_eq!((tpu.variant.as_str(), tpu.count), ("v5litepod-16", 4));
        let v = |k: &str| t.attributes[k].value.clone().unwrap();
        assert_eq!(v("tpu-worker-id"), attribute_value::Value::IntValue(1));
        assert_eq!(v("tpu-vm-count"), attribute_value::Value::IntValue(4));
        assert_eq!(
            v("device-type"),
            attribute_value::Value::StringValue("tpu".into())
        );
        assert_eq!(
            v("region"),
            attribute_value::Value::StringValue("us-east5".into())
        );
        assert_eq!(
            v("preemptible"),
            attribute_value::Value::StringValue("true".into())
        );
        assert_eq!(
            v("zone"),
            attribute_value::Value::StringValue("operator-says".into()),
            "the operator's attributes win"
        );
        let plain = GceFacts { tpu: None, ..facts };
        let mut c = proto::WorkerMetadata::default();
        assert!(!apply_gce(&mut c, &plain));
        assert!(c.device.is_none() && !c.attributes.contains_key("device-type"));
    }

    #[test]
    fn the_system_keeps_what_iris_keeps() {
        assert_eq!(memory_reserve(16 << 30), (16 << 30) / 10);
        assert_eq!(memory_reserve(400 << 30), 8 << 30);
        assert_eq!(
            (
                cpu_reserve(2),
                cpu_reserve(9),
                cpu_reserve(10),
                cpu_reserve(240)
            ),
            (0, 0, 1, 1)
        );
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24576000 kB\nMemFree: 1 kB\n";
        assert_eq!(mem_total_bytes(text), Some(24_576_000 * 1024));
    }
}
