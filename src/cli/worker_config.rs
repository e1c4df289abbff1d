//! `serve --worker-config FILE`: Iris's worker configuration (`iris.config.WorkerConfig` as JSON,
//! the file Iris's bootstrap writes to `/etc/iris/worker_config.json`) read as the `serve` flags
//! it amounts to. Those flags go before the command line's own, so a flag given there wins;
//! the file wins over the environment and the defaults.
//!
//! Keys are accepted as Iris writes them (`preserving_proto_field_name`) and in the proto3 JSON
//! names (`workerId`), as protobuf's `ParseDict` accepts both. A key this worker does not use is
//! reported once at start-up with the reason, never fatal.

use std::path::Path;

use serde_json::{Map, Value};

/// What a worker configuration file asks of `serve`.
#[derive(Debug, Default, PartialEq)]
pub struct WorkerConfig {
    /// The `serve` flags it amounts to, in key order.
    pub args: Vec<String>,
    /// `auth_token`: what the worker shows the controller (never put on a command line).
    pub controller_token: Option<String>,
    /// One line per key read but not used, saying why.
    pub unused: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{0} holds no JSON object")]
    NotAnObject(String),
    #[error("worker config field {field}: {message}")]
    Field { field: String, message: String },
}

/// Keys of Iris's WorkerConfig this worker reads but does not act on, with why.
const UNUSED: &[(&str, &str)] = &[
    ("docker_image", "the worker's own image, for the bootstrap"),
    (
        "platform",
        "image names are used as given (no registry resolution per zone)",
    ),
    (
        "poll_interval",
        "containers are followed through the engine's streams, not polled",
    ),
    ("accelerator_type", "the device is probed, not configured"),
    (
        "accelerator_variant",
        "the device is probed, not configured",
    ),
    ("gpu_count", "the device is probed, not configured"),
    (
        "capacity_type",
        "preemptible workers are not told apart yet",
    ),
    ("storage_prefix", "profiles are not uploaded"),
];

/// Reads and translates the file at `path`.
pub fn read(path: &Path) -> Result<WorkerConfig, WorkerConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| WorkerConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|source| WorkerConfigError::Json {
        path: shown.clone(),
        source,
    })?;
    let Value::Object(fields) = value else {
        return Err(WorkerConfigError::NotAnObject(shown));
    };
    translate(&fields)
}

/// The flags a configuration object amounts to.
pub fn translate(fields: &Map<String, Value>) -> Result<WorkerConfig, WorkerConfigError> {
    let mut config = WorkerConfig::default();
    let mut runtime_given = false;
    for (key, value) in fields {
        let name = snake_case(key);
        let flag = |flag: &str, config: &mut WorkerConfig| -> Result<(), WorkerConfigError> {
            let text = scalar(&name, value)?;
            if !text.is_empty() {
                config.args.extend([flag.to_string(), text]);
            }
            Ok(())
        };
        match name.as_str() {
            "host" => flag("--host", &mut config)?,
            "port" => flag("--port", &mut config)?,
            "port_range" => flag("--port-range", &mut config)?,
            "worker_id" => flag("--worker-id", &mut config)?,
            "slice_id" => flag("--slice-id", &mut config)?,
            "controller_address" => flag("--controller-address", &mut config)?,
            "cache_dir" => flag("--cache-dir", &mut config)?,
            "default_task_image" => flag("--default-image", &mut config)?,
            "cpu_millicores" => flag("--cpu-millicores", &mut config)?,
            "runtime" => {
                runtime_given = true;
                match scalar(&name, value)?.as_str() {
                    "" | "docker" => config.args.extend(["--runtime".into(), "docker".into()]),
                    other => return Err(field(&name, format!("{other:?}: only docker runs here"))),
                }
            }
            "auth_token" => {
                config.controller_token = Some(scalar(&name, value)?).filter(|t| !t.is_empty())
            }
            "heartbeat_timeout" => {
                let ms = duration_ms(&name, value)?;
                config
                    .args
                    .extend(["--reconcile-timeout".into(), format!("{ms}ms")]);
            }
            "worker_attributes" => {
                let pairs = pairs(&name, value)?;
                let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if !joined.is_empty() {
                    config
                        .args
                        .extend(["--worker-attributes".into(), joined.join(",")]);
                }
            }
            "task_env" => {
                for (k, v) in pairs(&name, value)? {
                    config
                        .args
                        .extend(["--task-env".into(), format!("{k}={v}")]);
                }
            }
            other => match UNUSED.iter().find(|(k, _)| *k == other) {
                Some((_, why)) => config.unused.push(format!("{other}: not used: {why}")),
                None => config
                    .unused
                    .push(format!("{other}: not a WorkerConfig field, ignored")),
            },
        }
    }
    // Iris's worker runs tasks in docker only.
    if !runtime_given {
        config.args.extend(["--runtime".into(), "docker".into()]);
    }
    Ok(config)
}

/// `workerId` -> `worker_id`; `worker_id` stays.
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn field(name: &str, message: impl Into<String>) -> WorkerConfigError {
    WorkerConfigError::Field {
        field: name.to_string(),
        message: message.into(),
    }
}

/// A string or a number as text (proto3 JSON writes int64 as strings, int32 as numbers).
fn scalar(name: &str, value: &Value) -> Result<String, WorkerConfigError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(field(
            name,
            format!("expected a string or number, got {other}"),
        )),
    }
}

/// A string map (`map<string, string>`), in key order.
fn pairs(name: &str, value: &Value) -> Result<Vec<(String, String)>, WorkerConfigError> {
    let Value::Object(map) = value else {
        return Err(field(name, format!("expected an object, got {value}")));
    };
    map.iter()
        .map(|(k, v)| Ok((k.clone(), scalar(&format!("{name}.{k}"), v)?)))
        .collect()
}

/// `iris.time.Duration` as JSON: `{"milliseconds": "600000"}`.
fn duration_ms(name: &str, value: &Value) -> Result<u64, WorkerConfigError> {
    let ms = value
        .get("milliseconds")
        .ok_or_else(|| field(name, "expected {\"milliseconds\": N}"))?;
    let text = scalar(&format!("{name}.milliseconds"), ms)?;
    text.parse()
        .map_err(|e| field(&format!("{name}.milliseconds"), format!("{text:?}: {e}")))
}

/// The command line with the file's flags spliced in right after `serve`, before the command
/// line's own flags (which then override them).
pub fn splice(argv: &[String], serve_at: usize, config_args: &[String]) -> Vec<String> {
    let mut out = argv[..=serve_at].to_vec();
    out.extend(config_args.iter().cloned());
    out.extend(argv[serve_at + 1..].iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Map<String, Value> {
        match serde_json::from_str(text).unwrap() {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn irises_bootstrap_file_becomes_serve_flags() {
        // As Iris's bootstrap writes it (MessageToDict, preserving_proto_field_name).
        let config = translate(&object(
            r#"{"docker_image": "ghcr.io/marin/iris-worker:latest", "host": "0.0.0.0",
                "port": 10001, "controller_address": "10.0.0.2:10000",
                "cache_dir": "/var/cache/iris", "default_task_image": "python:3.12",
                "worker_attributes": {"region": "us-east5", "pool": "a"},
                "task_env": {"HF_HOME": "/hf"}, "auth_token": "t0k",
                "heartbeat_timeout": {"milliseconds": "600000"}, "frobnicate": 1}"#,
        ))
        .unwrap();
        assert_eq!(
            config.args.join(" "),
            "--cache-dir /var/cache/iris --controller-address 10.0.0.2:10000 \
             --default-image python:3.12 --reconcile-timeout 600000ms --host 0.0.0.0 \
             --port 10001 --task-env HF_HOME=/hf --worker-attributes pool=a,region=us-east5 \
             --runtime docker"
        );
        assert_eq!(config.controller_token.as_deref(), Some("t0k"));
        assert_eq!(
            config.unused,
            [
                "docker_image: not used: the worker's own image, for the bootstrap",
                "frobnicate: not a WorkerConfig field, ignored"
            ]
        );
    }

    #[test]
    fn proto3_json_names_are_read_too_and_bad_values_named() {
        let config = translate(&object(r#"{"workerId": "w-1", "runtime": "docker"}"#)).unwrap();
        assert_eq!(config.args, ["--runtime", "docker", "--worker-id", "w-1"]);
        let err = translate(&object(r#"{"runtime": "kubernetes"}"#)).unwrap_err();
        assert!(err.to_string().contains("runtime"), "{err}");
        let err = translate(&object(r#"{"port": [1]}"#)).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
        let err = translate(&object(r#"{"heartbeat_timeout": "10s"}"#)).unwrap_err();
        assert!(err.to_string().contains("heartbeat_timeout"), "{err}");
    }

    #[test]
    fn the_command_lines_flags_come_after_the_files() {
        let argv: Vec<String> = ["iris-worker", "--json", "serve", "--port", "1"]
            .map(String::from)
            .to_vec();
        let spliced = splice(&argv, 2, &["--port".into(), "2".into()]);
        assert_eq!(
            spliced.join(" "),
            "iris-worker --json serve --port 2 --port 1"
        );
    }
}
