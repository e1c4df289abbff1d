//! Pins the wire contract to the numbers and types DESIGN.md lists (the merged Iris cluster.proto
//! of the task era). Each message is written tag by tag by a tiny encoder here, independent of
//! the generated code, then decoded with the generated type: every field must land where Iris
//! meant it. Where we build the same message, our bytes must equal the hand-written ones (prost
//! writes fields in number order), and the JSON names and 64-bit-ness must be Iris's.

use std::collections::HashMap;

use iris_worker::proto::{self, attribute_value, controller, device_config, worker};
use prost::Message;

mod wire;
use wire::{Wire, map_entry};

#[test]
fn task_status_and_its_parts() {
    let usage = Wire::default()
        .varint(1, 11)
        .varint(2, 12)
        .varint(3, 13)
        .varint(4, 14)
        .varint(5, 15)
        .varint(6, 16);
    let build = Wire::default()
        .varint(1, 21)
        .varint(2, 22)
        .varint(3, 1)
        .str(4, "img");
    let attempt = Wire::default()
        .varint(1, 3)
        .str(2, "w")
        .varint(3, 5)
        .varint(4, 1)
        .str(5, "e")
        .varint(6, 31)
        .varint(7, 32)
        .varint(8, 1);
    let port = Wire::default().str(1, "http").varint(2, 30001);
    let wire = Wire::default()
        .str(1, "j/task-0")
        .str(2, "j")
        .varint(3, 7)
        .varint(4, 4)
        .str(5, "w")
        .str(6, "h:1")
        .varint(7, -1)
        .str(8, "Exit code: 1")
        .varint(9, 41)
        .varint(10, 42)
        .msg(11, port)
        .msg(12, usage)
        .msg(13, build)
        .varint(14, 3)
        .msg(15, attempt)
        .str(16, "why")
        .varint(17, 1)
        .str(18, "msg")
        .varint(19, 8)
        .varint(20, 9)
        .varint(21, 1);
    let s: proto::TaskStatus = wire.decode();
    assert_eq!((s.task_id.as_str(), s.job_id.as_str()), ("j/task-0", "j"));
    assert_eq!(
        (s.task_index, s.state),
        (7, proto::TaskState::Succeeded as i32)
    );
    assert_eq!(
        (s.worker_id.as_str(), s.worker_address.as_str()),
        ("w", "h:1")
    );
    assert_eq!((s.exit_code, s.error.as_str()), (-1, "Exit code: 1"));
    assert_eq!((s.started_at_ms, s.finished_at_ms), (41, 42));
    assert_eq!(s.ports["http"], 30001);
    let u = s.resource_usage.unwrap();
    let got = (u.memory_mb, u.disk_mb, u.cpu_millicores, u.memory_peak_mb);
    assert_eq!(got, (11, 12, 13, 14));
    assert_eq!((u.cpu_percent, u.process_count), (15, 16));
    let b = s.build_metrics.clone().unwrap();
    assert_eq!((b.build_started_ms, b.build_finished_ms), (21, 22));
    assert!(b.from_cache && b.image_tag == "img");
    assert_eq!(s.current_attempt_id, 3);
    let a = &s.attempts[0];
    assert_eq!((a.attempt_id, a.worker_id.as_str(), a.state), (3, "w", 5));
    assert_eq!((a.exit_code, a.error.as_str()), (1, "e"));
    assert_eq!(
        (a.started_at_ms, a.finished_at_ms, a.is_worker_failure),
        (31, 32, true)
    );
    assert_eq!(
        (s.pending_reason.as_str(), s.can_be_scheduled),
        ("why", true)
    );
    assert_eq!((s.status_message.as_str(), s.num_tasks), ("msg", 8));
    assert_eq!((s.exit_signal, s.oom_killed), (9, true));
    assert_eq!(s.encode_to_vec(), wire.0, "our bytes are Iris's bytes");
}

#[test]
fn run_task_request_as_the_controller_writes_it() {
    let device = Wire::default().msg(2, Wire::default().str(1, "H100").varint(2, 8));
    let resources = Wire::default()
        .varint(1, 4)
        .varint(4, 1 << 33)
        .msg(5, device)
        .varint(6, 2)
        .varint(7, 1)
        .str(8, "us")
        .varint(9, 1 << 34);
    let env = Wire::default()
        .str(1, "numpy")
        .msg(2, Wire::default().str(1, "K").str(2, "V"))
        .str(3, "tpu")
        .str(100, "python:3.11")
        .str(101, "ws");
    let entry = Wire::default().msg(2, Wire::default().str(1, "echo").str(1, "hi"));
    let wire = Wire::default()
        .str(1, "j")
        .str(2, "j/task-1")
        .varint(3, 1)
        .varint(4, 2)
        .msg(5, entry)
        .msg(6, env)
        .str(7, "file:///tmp/b.zip")
        .msg(8, resources)
        .varint(9, 60)
        .str(10, "http")
        .varint(11, 3);
    let r: worker::RunTaskRequest = wire.decode();
    assert_eq!((r.job_id.as_str(), r.task_id.as_str()), ("j", "j/task-1"));
    assert_eq!((r.task_index, r.num_tasks), (1, 2));
    let Some(proto::entrypoint::Kind::Command(c)) = r.entrypoint.clone().unwrap().kind else {
        panic!("a command entrypoint");
    };
    assert_eq!(c.argv, ["echo", "hi"]);
    let e = r.environment.clone().unwrap();
    assert_eq!(e.pip_packages, ["numpy"], "pip_packages is 1");
    assert_eq!(e.env_vars["K"], "V", "env_vars is 2");
    assert_eq!(e.extras, ["tpu"], "extras is 3");
    assert_eq!(
        (e.docker_image.as_str(), e.workspace.as_str()),
        ("python:3.11", "ws")
    );
    assert_eq!(r.bundle_gcs_path, "file:///tmp/b.zip");
    let res = r.resources.clone().unwrap();
    assert_eq!(
        (res.cpu, res.memory_bytes, res.disk_bytes),
        (4, 1 << 33, 1 << 34)
    );
    assert_eq!((res.replicas, res.preemptible), (2, true));
    assert_eq!(res.regions, ["us"]);
    let Some(device_config::Device::Gpu(gpu)) = res.device.clone().unwrap().device else {
        panic!("a GPU device at DeviceConfig 2");
    };
    assert_eq!((gpu.variant.as_str(), gpu.count), ("H100", 8));
    assert_eq!(
        (r.timeout_seconds, r.ports.clone(), r.attempt_id),
        (60, vec!["http".into()], 3)
    );
    assert_eq!(r.encode_to_vec(), wire.0);

    let callable = Wire::default().bytes(1, b"\x80\x05pickle");
    let e: proto::Entrypoint = callable.decode();
    assert_eq!(
        e.kind,
        Some(proto::entrypoint::Kind::Callable(
            b"\x80\x05pickle".to_vec()
        ))
    );
}

#[test]
fn worker_requests_and_answers() {
    let r: worker::RunTaskResponse = Wire::default().str(1, "t").varint(2, 3).decode();
    assert_eq!((r.task_id.as_str(), r.state), ("t", 3));
    let g: worker::GetTaskStatusRequest = Wire::default().str(1, "t").varint(2, 1).decode();
    assert!(g.task_id == "t" && g.include_result);
    let l: worker::LogEntry = Wire::default()
        .varint(1, 5)
        .str(2, "stderr")
        .str(3, "d")
        .varint(4, 9)
        .decode();
    assert_eq!(
        (
            l.timestamp_ms,
            l.source.as_str(),
            l.data.as_str(),
            l.line_number
        ),
        (5, "stderr", "d", 9)
    );
    let filter = Wire::default()
        .str(1, "x")
        .varint(2, -3)
        .varint(3, 4)
        .varint(4, 5)
        .varint(5, 1 << 40);
    let f: worker::FetchTaskLogsRequest = Wire::default().str(1, "t").msg(2, filter).decode();
    let f = f.filter.unwrap();
    assert_eq!(
        (f.regex.as_str(), f.start_line, f.start_ms, f.end_ms),
        ("x", -3, 4, 5)
    );
    assert_eq!(f.max_lines, 1 << 40, "max_lines is int64");
    let k: worker::KillTaskRequest = Wire::default().str(1, "t").varint(2, 700).decode();
    assert_eq!((k.task_id.as_str(), k.term_timeout_ms), ("t", 700));
    let h: worker::HealthResponse = Wire::default()
        .varint(1, 1)
        .varint(2, 6)
        .varint(3, 2)
        .decode();
    assert!(h.healthy && h.uptime_ms == 6 && h.running_tasks == 2);
}

#[test]
fn registration_and_reports() {
    let attribute = Wire::default().varint(2, 7);
    let tpu = Wire::default().str(1, "v5").str(2, "2x2").varint(3, 4);
    let metadata = Wire::default()
        .str(1, "host")
        .str(2, "10.0.0.2")
        .varint(3, 8)
        .varint(4, 1 << 35)
        .varint(5, 1 << 36)
        .msg(6, Wire::default().msg(3, tpu))
        .str(10, "slice")
        .str(11, "a,b")
        .str(12, "1")
        .str(13, "2,2,1")
        .varint(20, 2)
        .str(21, "A100")
        .varint(22, 40960)
        .str(30, "vm-1")
        .str(31, "us-central2-b")
        .msg(40, map_entry("rank", attribute))
        .str(41, "10.0.0.9")
        .str(100, "0.1.0");
    let wire = Wire::default()
        .str(1, "w1")
        .str(2, "10.0.0.2:10001")
        .msg(3, metadata)
        .str(4, "j/task-0");
    let r: controller::RegisterWorkerRequest = wire.decode();
    assert_eq!(
        (r.worker_id.as_str(), r.address.as_str()),
        ("w1", "10.0.0.2:10001")
    );
    assert_eq!(r.running_task_ids, ["j/task-0"]);
    let m = r.metadata.clone().unwrap();
    assert_eq!(
        (m.hostname.as_str(), m.ip_address.as_str(), m.cpu_count),
        ("host", "10.0.0.2", 8)
    );
    assert_eq!((m.memory_bytes, m.disk_bytes), (1 << 35, 1 << 36));
    let Some(device_config::Device::Tpu(t)) = m.device.clone().unwrap().device else {
        panic!("device is DeviceConfig 6");
    };
    assert_eq!(
        (t.variant.as_str(), t.topology.as_str(), t.count),
        ("v5", "2x2", 4)
    );
    let tpu_fields = [
        &m.tpu_name,
        &m.tpu_worker_hostnames,
        &m.tpu_worker_id,
        &m.tpu_chips_per_host_bounds,
    ];
    assert_eq!(tpu_fields, ["slice", "a,b", "1", "2,2,1"]);
    assert_eq!(
        (m.gpu_count, m.gpu_name.as_str(), m.gpu_memory_mb),
        (2, "A100", 40960)
    );
    assert_eq!(
        (m.gce_instance_name.as_str(), m.gce_zone.as_str()),
        ("vm-1", "us-central2-b")
    );
    assert_eq!(
        m.attributes["rank"].value,
        Some(attribute_value::Value::IntValue(7))
    );
    assert_eq!(
        (m.vm_address.as_str(), m.version.as_str()),
        ("10.0.0.9", "0.1.0")
    );
    assert_eq!(r.encode_to_vec(), wire.0);

    let s: proto::AttributeValue = Wire::default().str(1, "s").decode();
    assert_eq!(
        s.value,
        Some(attribute_value::Value::StringValue("s".into()))
    );
    let f: proto::AttributeValue = Wire::default().double(3, 0.5).decode();
    assert_eq!(f.value, Some(attribute_value::Value::FloatValue(0.5)));

    let a: controller::RegisterWorkerResponse = Wire::default()
        .varint(1, 1)
        .str(2, "c:1")
        .varint(3, 1)
        .decode();
    assert!(a.accepted && a.controller_address == "c:1" && a.should_reset);

    let report = Wire::default()
        .str(1, "w1")
        .str(2, "j/task-0")
        .str(3, "j")
        .varint(4, 0)
        .varint(5, 5)
        .varint(6, 2)
        .str(7, "Exit code: 2")
        .varint(8, 99)
        .varint(9, 4);
    let p: controller::ReportTaskStateRequest = report.decode();
    assert_eq!(
        (p.worker_id.as_str(), p.task_id.as_str(), p.job_id.as_str()),
        ("w1", "j/task-0", "j")
    );
    assert_eq!(
        (p.state, p.exit_code, p.error.as_str()),
        (5, 2, "Exit code: 2")
    );
    assert_eq!((p.finished_at_ms, p.attempt_id), (99, 4));
}

fn json<T: serde::Serialize>(message: &T) -> serde_json::Value {
    serde_json::to_value(message).unwrap()
}

/// JSON is where the scalar types show: int64 is a string, int32 a number.
#[test]
fn json_names_and_integer_widths_are_iris_s() {
    let filter = worker::FetchLogsFilter {
        max_lines: 5,
        start_line: -2,
        ..Default::default()
    };
    assert_eq!(
        json(&filter),
        serde_json::json!({"startLine": "-2", "maxLines": "5"})
    );
    let kill = worker::KillTaskRequest {
        task_id: "t".into(),
        term_timeout_ms: 5,
    };
    assert_eq!(
        json(&kill),
        serde_json::json!({"taskId": "t", "termTimeoutMs": 5})
    );
    // Both names in, numbers or strings for 64-bit, enum names or numbers.
    let status: proto::TaskStatus = serde_json::from_str(
        r#"{"task_id": "t", "state": 3, "startedAtMs": 7, "finishedAtMs": "8", "futureField": 1}"#,
    )
    .unwrap();
    assert_eq!(
        (status.state, status.started_at_ms, status.finished_at_ms),
        (3, 7, 8)
    );
    let named: proto::TaskStatus =
        serde_json::from_str(r#"{"state": "TASK_STATE_KILLED"}"#).unwrap();
    assert_eq!(named.state, proto::TaskState::Killed as i32);
    let env = proto::EnvironmentConfig {
        env_vars: HashMap::from([("A".to_string(), "1".to_string())]),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_string(&env).unwrap(),
        r#"{"envVars":{"A":"1"}}"#
    );
}
