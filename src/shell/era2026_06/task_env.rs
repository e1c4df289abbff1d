//! The variables Iris 0.2.20 derives from a RunTaskRequest alone (`build_common_iris_env` in
//! `iris/cluster/runtime/env.py`): what a child job inherits (`IRIS_JOB_ENV`, `IRIS_JOB_EXTRAS`,
//! `IRIS_JOB_PIP_PACKAGES`, `IRIS_JOB_CONSTRAINTS`), the TPU platform variables and
//! `IRIS_TASK_RESOURCES`. The core layers them with the worker's own (`core::env`); they are
//! made here because they are this era's JSON.

use crate::core::ValidationError;
use crate::proto::v2026_06::iris::job;
use crate::proto::v2026_06::iris::job::device_config::Device;

/// Constraint keys a child job inherits (Iris's `INHERITED_CONSTRAINT_KEYS`); device constraints
/// are derived again from each child's own resources.
const INHERITED_CONSTRAINT_KEYS: &[&str] = &["region", "zone"];

type Vars = Vec<(String, String)>;

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("strings and protos encode")
}

/// The request's variables, in Iris's order. A TPU job whose task count is not a whole number
/// of slices is refused naming `num_tasks`, as Iris fails it.
pub fn request_env(req: &job::RunTaskRequest) -> Result<Vars, ValidationError> {
    let mut vars = Vars::new();
    let env = req.environment.clone().unwrap_or_default();
    if !env.extras.is_empty() {
        vars.push(("IRIS_JOB_EXTRAS".into(), json(&env.extras)));
    }
    if !env.pip_packages.is_empty() {
        vars.push(("IRIS_JOB_PIP_PACKAGES".into(), json(&env.pip_packages)));
    }
    if !env.env_vars.is_empty() {
        // Sorted keys, so the same job gives the same bytes.
        let sorted: std::collections::BTreeMap<_, _> = env.env_vars.iter().collect();
        vars.push(("IRIS_JOB_ENV".into(), json(&sorted)));
    }
    let inherited: Vec<&job::Constraint> = req
        .constraints
        .iter()
        .filter(|c| INHERITED_CONSTRAINT_KEYS.contains(&c.key.as_str()))
        .collect();
    if !inherited.is_empty() {
        vars.push(("IRIS_JOB_CONSTRAINTS".into(), json(&inherited)));
    }
    if let Some(tpu) = tpu_device(req) {
        vars.extend(
            [
                ("JAX_PLATFORMS", "tpu,cpu"),
                ("PJRT_DEVICE", "TPU"),
                ("JAX_FORCE_TPU_INIT", "1"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        vars.extend(slice_vars(tpu, req.num_tasks)?);
    }
    if let Some(resources) = &req.resources {
        let resources = json(resources);
        if resources != "{}" {
            vars.push(("IRIS_TASK_RESOURCES".into(), resources));
        }
    }
    Ok(vars)
}

fn tpu_device(req: &job::RunTaskRequest) -> Option<&job::TpuDevice> {
    let device = req.resources.as_ref()?.device.as_ref()?.device.as_ref()?;
    match device {
        Device::Tpu(tpu) => Some(tpu),
        _ => None,
    }
}

/// `IRIS_SLICE_COUNT` and `IRIS_TASKS_PER_SLICE` for a job of more than one slice.
fn slice_vars(tpu: &job::TpuDevice, num_tasks: i32) -> Result<Vars, ValidationError> {
    let vms = crate::shell::tpu::topology(&tpu.variant)
        .map(|t| i32::try_from(t.vm_count).unwrap_or(i32::MAX));
    let Some(vms) = vms.filter(|_| num_tasks > 1) else {
        return Ok(Vars::new());
    };
    if num_tasks % vms != 0 {
        return Err(ValidationError {
            field: "num_tasks",
            message: format!(
                "TPU task count ({num_tasks}) must be divisible by the VM count ({vms}) of {}",
                tpu.variant
            ),
        });
    }
    let slices = num_tasks / vms;
    Ok(match slices {
        0 | 1 => Vars::new(),
        _ => vec![
            ("IRIS_SLICE_COUNT".into(), slices.to_string()),
            ("IRIS_TASKS_PER_SLICE".into(), vms.to_string()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpu_request(variant: &str, num_tasks: i32) -> job::RunTaskRequest {
        job::RunTaskRequest {
            num_tasks,
            resources: Some(job::ResourceSpecProto {
                device: Some(job::DeviceConfig {
                    device: Some(Device::Tpu(job::TpuDevice {
                        variant: variant.into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn get<'a>(vars: &'a Vars, key: &str) -> Option<&'a str> {
        vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_child_inherits_env_extras_packages_and_only_region_and_zone() {
        let mut req = job::RunTaskRequest::default();
        let env = req.environment.get_or_insert_default();
        env.env_vars.insert("TOKEN".into(), "s3cr\"t".into());
        env.extras = vec!["gpu".into()];
        env.pip_packages = vec!["numpy>=2".into()];
        for key in ["region", "device-type", "zone"] {
            req.constraints.push(job::Constraint {
                key: key.into(),
                value: Some(job::AttributeValue {
                    value: Some(job::attribute_value::Value::StringValue("x".into())),
                }),
                ..Default::default()
            });
        }
        let vars = request_env(&req).unwrap();
        assert_eq!(get(&vars, "IRIS_JOB_ENV"), Some(r#"{"TOKEN":"s3cr\"t"}"#));
        assert_eq!(get(&vars, "IRIS_JOB_EXTRAS"), Some(r#"["gpu"]"#));
        assert_eq!(get(&vars, "IRIS_JOB_PIP_PACKAGES"), Some(r#"["numpy>=2"]"#));
        let constraints: serde_json::Value =
            serde_json::from_str(get(&vars, "IRIS_JOB_CONSTRAINTS").unwrap()).unwrap();
        let keys: Vec<&str> = constraints
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["region", "zone"]);
        assert_eq!(get(&vars, "JAX_PLATFORMS"), None);
        assert_eq!(get(&vars, "IRIS_TASK_RESOURCES"), None);
    }

    #[test]
    fn tpu_jobs_get_the_platform_and_multislice_variables() {
        let one = request_env(&tpu_request("v5litepod-16", 4)).unwrap();
        assert_eq!(get(&one, "JAX_PLATFORMS"), Some("tpu,cpu"));
        assert_eq!(get(&one, "PJRT_DEVICE"), Some("TPU"));
        assert_eq!(get(&one, "JAX_FORCE_TPU_INIT"), Some("1"));
        assert_eq!(get(&one, "IRIS_SLICE_COUNT"), None);
        let two = request_env(&tpu_request("v5litepod-16", 8)).unwrap();
        assert_eq!(get(&two, "IRIS_SLICE_COUNT"), Some("2"));
        assert_eq!(get(&two, "IRIS_TASKS_PER_SLICE"), Some("4"));
        assert!(
            get(&two, "IRIS_TASK_RESOURCES")
                .unwrap()
                .contains("v5litepod-16")
        );
        let err = request_env(&tpu_request("v5litepod-16", 6)).unwrap_err();
        assert_eq!(err.field, "num_tasks");
    }
}
