//! Pins the 2026-06 wire contract (marin-iris 0.2.20.dev202606180959, DESIGN.md "Wire contract
//! 2026-06") tag by tag: each message is written by the hand encoder of `tests/wire`, independent
//! of the generated code, and decoded with the generated type; every field must land where Iris
//! put it. Where the worker writes a message, prost's bytes must equal the hand-written ones, and
//! a zero Iris reads with presence (`exit_code`, `healthy`) must travel on the wire.

use iris_worker::proto::v2026_06::finelog::logging as finelog;
use iris_worker::proto::v2026_06::iris::cluster::{controller, worker};
use iris_worker::proto::v2026_06::iris::{job, time};
use prost::Message;

mod wire;
use wire::{Wire, map_entry};

fn ts(tag: u32, ms: i64) -> Wire {
    Wire::default().msg(tag, Wire::default().varint(1, ms))
}

#[test]
fn run_task_request_as_the_controller_writes_it() {
    let entrypoint = Wire::default()
        .str(1, "echo setup")
        .msg(2, Wire::default().str(1, "sh").str(1, "-c").str(1, "true"))
        .msg(3, Wire::default().str(1, "file.txt").bytes(2, b"contents"))
        .msg(4, Wire::default().str(1, "big.bin").str(2, "ab12"));
    let env = Wire::default()
        .str(1, "numpy")
        .msg(2, Wire::default().str(1, "K").str(2, "V"))
        .str(3, "tpu")
        .str(4, "3.11")
        .str(5, "FROM x");
    let device = Wire::default().msg(2, Wire::default().str(1, "H100").varint(2, 8));
    let resources = Wire::default()
        .varint(1, 500)
        .varint(4, 1 << 33)
        .msg(5, device)
        .varint(9, 1 << 34);
    let constraint = Wire::default()
        .str(1, "region")
        .varint(2, 8)
        .msg(3, Wire::default().str(1, "us"))
        .msg(4, Wire::default().varint(2, 7))
        .varint(5, 1);
    let request = Wire::default()
        .str(1, "/alice/job/0")
        .varint(2, 4)
        .msg(3, entrypoint)
        .msg(4, env)
        .str(5, "deadbeef")
        .msg(6, resources)
        .msg(7, Wire::default().varint(1, 90_000))
        .str(8, "http")
        .varint(9, 2)
        .msg(10, constraint)
        .str(11, "img:1")
        .str(12, "uid-7")
        .msg(13, Wire::default().str(1, "tpu-name"))
        .varint(14, 3);
    let r: job::RunTaskRequest = request.decode();
    assert_eq!(r.task_id, "/alice/job/0");
    assert_eq!(r.num_tasks, 4);
    let e = r.entrypoint.unwrap();
    assert_eq!(e.setup_commands, ["echo setup"]);
    assert_eq!(e.run_command.unwrap().argv, ["sh", "-c", "true"]);
    assert_eq!(e.workdir_files["file.txt"], b"contents");
    assert_eq!(e.workdir_file_refs["big.bin"], "ab12");
    let env = r.environment.unwrap();
    assert_eq!(env.pip_packages, ["numpy"]);
    assert_eq!(env.env_vars["K"], "V");
    assert_eq!(
        (env.extras, env.python_version, env.dockerfile),
        (vec!["tpu".to_string()], "3.11".into(), "FROM x".into())
    );
    assert_eq!(r.bundle_id, "deadbeef");
    let res = r.resources.unwrap();
    assert_eq!(
        (res.cpu_millicores, res.memory_bytes, res.disk_bytes),
        (500, 1 << 33, 1 << 34)
    );
    match res.device.unwrap().device.unwrap() {
        job::device_config::Device::Gpu(g) => {
            assert_eq!((g.variant.as_str(), g.count), ("H100", 8))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.timeout.unwrap().milliseconds, 90_000);
    assert_eq!(r.ports, ["http"]);
    assert_eq!(r.attempt_id, 2);
    let c = &r.constraints[0];
    assert_eq!(
        (c.key.as_str(), c.op, c.mode),
        ("region", job::ConstraintOp::In as i32, 1)
    );
    assert_eq!(r.task_image, "img:1");
    assert_eq!(r.attempt_uid, "uid-7");
    assert_eq!(r.coscheduling.unwrap().group_by, "tpu-name");
    assert_eq!(r.priority, job::PriorityBand::Batch as i32);
}

#[test]
fn reconcile_request_desired_run_and_stop() {
    let run = Wire::default().str(1, "uid-1").msg(
        10,
        Wire::default().msg(1, Wire::default().str(1, "/a/j/0").str(12, "uid-1")),
    );
    // A later tick: `run {}` without the spec.
    let run_again = Wire::default().str(1, "uid-2").msg(10, Wire::default());
    let stop = Wire::default().str(1, "uid-3").varint(11, 4);
    let request = Wire::default()
        .str(1, "w-1")
        .msg(2, run)
        .msg(2, run_again)
        .msg(2, stop);
    let r: worker::ReconcileRequest = request.decode();
    assert_eq!(r.worker_id, "w-1");
    use worker::desired_attempt::Intent;
    match r.desired[0].intent.as_ref().unwrap() {
        Intent::Run(spec) => assert_eq!(spec.request.as_ref().unwrap().attempt_uid, "uid-1"),
        other => panic!("{other:?}"),
    }
    match r.desired[1].intent.as_ref().unwrap() {
        Intent::Run(spec) => assert!(spec.request.is_none(), "run {{}} carries no spec"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.desired[2].attempt_uid, "uid-3");
    assert_eq!(
        r.desired[2].intent,
        Some(Intent::Stop(worker::StopReason::JobTerminated as i32))
    );
}

#[test]
fn reconcile_response_as_the_worker_writes_it() {
    let observation = worker::AttemptObservation {
        attempt_uid: "uid-1".into(),
        state: job::TaskState::Succeeded as i32,
        exit_code: Some(0),
        error: "e".into(),
        container_id: "c1".into(),
        finished_at: Some(time::Timestamp { epoch_ms: 77 }),
        resource_usage: Some(job::ResourceUsage {
            memory_mb: 1,
            disk_mb: 2,
            cpu_millicores: 3,
            memory_peak_mb: 4,
            process_count: 6,
        }),
    };
    let snapshot = job::WorkerResourceSnapshot {
        timestamp: Some(time::Timestamp { epoch_ms: 5 }),
        host_cpu_percent: 12,
        memory_used_bytes: 13,
        memory_total_bytes: 14,
        disk_used_bytes: 15,
        disk_total_bytes: 16,
        running_task_count: 17,
        total_process_count: 18,
        net_recv_bytes: 19,
        net_sent_bytes: 20,
    };
    let response = worker::ReconcileResponse {
        worker_id: "w-1".into(),
        observed: vec![observation],
        health: Some(worker::WorkerHealth {
            healthy: Some(false),
            health_error: "disk".into(),
            resources: Some(snapshot),
        }),
    };
    let usage = Wire::default()
        .varint(1, 1)
        .varint(2, 2)
        .varint(3, 3)
        .varint(4, 4)
        .varint(6, 6);
    let observed = Wire::default()
        .str(1, "uid-1")
        .varint(2, 4)
        .varint(3, 0) // present although zero
        .str(4, "e")
        .str(5, "c1")
        .msg(6, Wire::default().varint(1, 77))
        .msg(7, usage);
    let snapshot = ts(1, 5)
        .varint(2, 12)
        .varint(3, 13)
        .varint(4, 14)
        .varint(5, 15)
        .varint(6, 16)
        .varint(7, 17)
        .varint(8, 18)
        .varint(9, 19)
        .varint(10, 20);
    let health = Wire::default()
        .varint(1, 0) // false, present
        .str(2, "disk")
        .msg(3, snapshot);
    let expected = Wire::default()
        .str(1, "w-1")
        .msg(2, observed)
        .msg(3, health);
    assert_eq!(response.encode_to_vec(), expected.0);
}

#[test]
fn task_states_of_the_reconcile_era() {
    for (state, n) in [
        (job::TaskState::Pending, 1),
        (job::TaskState::Building, 2),
        (job::TaskState::Running, 3),
        (job::TaskState::Succeeded, 4),
        (job::TaskState::Failed, 5),
        (job::TaskState::Killed, 6),
        (job::TaskState::WorkerFailed, 7),
        (job::TaskState::Unschedulable, 8),
        (job::TaskState::Assigned, 9),
        (job::TaskState::Preempted, 10),
        (job::TaskState::CoschedFailed, 11),
        (job::TaskState::Missing, 12),
    ] {
        assert_eq!(state as i32, n, "{state:?}");
    }
    for (reason, n) in [
        (worker::StopReason::Cancelled, 1),
        (worker::StopReason::Preempted, 2),
        (worker::StopReason::Superseded, 3),
        (worker::StopReason::JobTerminated, 4),
        (worker::StopReason::TaskTimeout, 5),
        (worker::StopReason::WorkerDrain, 6),
    ] {
        assert_eq!(reason as i32, n, "{reason:?}");
    }
}

#[test]
fn registration_and_endpoints() {
    let metadata = job::WorkerMetadata {
        hostname: "h".into(),
        ip_address: "10.0.0.1".into(),
        cpu_count: 2,
        memory_bytes: 1 << 34,
        disk_bytes: 1 << 35,
        device: Some(job::DeviceConfig {
            device: Some(job::device_config::Device::Cpu(job::CpuDevice {
                variant: "cpu".into(),
            })),
        }),
        gpu_count: 1,
        attributes: [(
            "device-type".to_string(),
            job::AttributeValue {
                value: Some(job::attribute_value::Value::StringValue("cpu".into())),
            },
        )]
        .into(),
        git_hash: "abc".into(),
        ..Default::default()
    };
    let request = controller::RegisterRequest {
        address: "10.0.0.1:8080".into(),
        metadata: Some(metadata),
        worker_id: "w-1".into(),
        slice_id: "s".into(),
        scale_group: "g".into(),
    };
    let metadata = Wire::default()
        .str(1, "h")
        .str(2, "10.0.0.1")
        .varint(3, 2)
        .varint(4, 1 << 34)
        .varint(5, 1 << 35)
        .msg(6, Wire::default().msg(1, Wire::default().str(1, "cpu")))
        .varint(20, 1)
        .msg(40, map_entry("device-type", Wire::default().str(1, "cpu")))
        .str(42, "abc");
    let expected = Wire::default()
        .str(1, "10.0.0.1:8080")
        .msg(2, metadata)
        .str(3, "w-1")
        .str(4, "s")
        .str(5, "g");
    assert_eq!(request.encode_to_vec(), expected.0);
    let answer: controller::RegisterResponse = Wire::default().str(1, "w-1").varint(2, 1).decode();
    assert_eq!((answer.worker_id.as_str(), answer.accepted), ("w-1", true));

    let list = controller::ListEndpointsRequest {
        prefix: "/system/log-server".into(),
        exact: true,
    };
    assert_eq!(
        list.encode_to_vec(),
        Wire::default().str(1, "/system/log-server").varint(2, 1).0
    );
    let endpoint = Wire::default()
        .str(1, "e1")
        .str(2, "/system/log-server")
        .str(3, "127.0.0.1:9")
        .str(4, "/system/0")
        .msg(5, Wire::default().str(1, "k").str(2, "v"));
    let found: controller::ListEndpointsResponse = Wire::default().msg(1, endpoint).decode();
    let e = &found.endpoints[0];
    assert_eq!(
        (
            e.endpoint_id.as_str(),
            e.name.as_str(),
            e.address.as_str(),
            e.task_id.as_str()
        ),
        ("e1", "/system/log-server", "127.0.0.1:9", "/system/0")
    );
    assert_eq!(e.metadata["k"], "v");
}

#[test]
fn pushed_log_entries() {
    let push = finelog::PushLogsRequest {
        key: "/alice/job/0:0".into(),
        entries: vec![finelog::LogEntry {
            timestamp: Some(finelog::Timestamp { epoch_ms: 42 }),
            source: "stdout".into(),
            data: "hello".into(),
            attempt_id: 3,
            level: finelog::LogLevel::Info as i32,
            key: "/alice/job/0:3".into(),
        }],
    };
    let entry = ts(1, 42)
        .str(2, "stdout")
        .str(3, "hello")
        .varint(4, 3)
        .varint(5, 2)
        .str(6, "/alice/job/0:3");
    let expected = Wire::default().str(1, "/alice/job/0:0").msg(2, entry);
    assert_eq!(push.encode_to_vec(), expected.0);
    assert_eq!(finelog::LogLevel::Critical as i32, 5);
}
