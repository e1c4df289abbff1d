//! Replays every fuzz target's committed seeds (`fuzz/seeds/<target>/`) and crash reproducers
//! (`fuzz/regressions/<target>/`) through the same library entry points the fuzzers call, then
//! throws random bytes at each under proptest. CI covers the targets without cargo-fuzz.

use std::path::Path;

use iris_worker::fuzzing::{
    fuzz_bundle, fuzz_connect, fuzz_core, fuzz_decode, fuzz_logs, fuzz_reconcile,
};
use proptest::prelude::*;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("reconcile", fuzz_reconcile),
    ("core", fuzz_core),
    ("decode", fuzz_decode),
    ("connect", fuzz_connect),
    ("logs", fuzz_logs),
    ("bundle", fuzz_bundle),
];

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn committed_seeds_and_regressions_replay_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in TARGETS {
        let seeds = files(&root.join("seeds").join(name));
        assert!(!seeds.is_empty(), "no committed seeds for {name}");
        for path in seeds
            .iter()
            .chain(&files(&root.join("regressions").join(name)))
        {
            let data = std::fs::read(path).unwrap();
            let result = std::panic::catch_unwind(|| target(&data));
            assert!(
                result.is_ok(),
                "{name}: {} fails; repro: cargo fuzz run -s none {name} {}",
                path.display(),
                path.display()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn reconcile_survives_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzz_reconcile(&data);
    }

    #[test]
    fn core_survives_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzz_core(&data);
    }

    #[test]
    fn decode_survives_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzz_decode(&data);
    }

    #[test]
    fn connect_survives_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzz_connect(&data);
    }

    #[test]
    fn logs_survive_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzz_logs(&data);
    }

    #[test]
    fn bundle_survives_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzz_bundle(&data);
    }
}

/// Writes the seed corpus: `cargo test --test fuzz_replay -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() {
    use iris_worker::proto;
    use prost::Message;
    use std::io::Write;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let put = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    let req = proto::worker::RunTaskRequest {
        job_id: "job".into(),
        task_id: "job/task-0".into(),
        num_tasks: 2,
        attempt_id: 1,
        ports: vec!["http".into()],
        timeout_seconds: 5,
        bundle_gcs_path: "file:///b.zip".into(),
        entrypoint: Some(proto::Entrypoint {
            kind: Some(proto::entrypoint::Kind::Command(proto::CommandEntrypoint {
                argv: vec!["python3".into(), "-c".into(), "print(1)".into()],
            })),
        }),
        environment: Some(proto::EnvironmentConfig {
            env_vars: [("A".to_string(), "1".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    put("decode", "valid-command", &req.encode_to_vec());
    let callable = proto::worker::RunTaskRequest {
        entrypoint: Some(proto::Entrypoint {
            kind: Some(proto::entrypoint::Kind::Callable(vec![0x80, 5, 1])),
        }),
        ..req.clone()
    };
    put("decode", "valid-callable", &callable.encode_to_vec());
    let bad = proto::worker::RunTaskRequest {
        task_id: "job/../x".into(),
        ..req.clone()
    };
    put("decode", "bad-id", &bad.encode_to_vec());
    // connect: content type, encoding, protocol version, timeout, compress-body bytes, then body.
    let json = serde_json::to_vec(&req).unwrap();
    let connect = |head: [u8; 5], body: &[u8]| [&head[..], body].concat();
    put(
        "connect",
        "proto-gzip",
        &connect([0, 2, 1, 1, 1], &req.encode_to_vec()),
    );
    put("connect", "json", &connect([1, 0, 0, 0, 0], &json));
    put(
        "connect",
        "json-charset-corrupt-gzip",
        &connect([2, 2, 1, 0, 0], &json),
    );
    put(
        "connect",
        "bad-json",
        &connect([1, 1, 0, 0, 0], b"{\"taskId\": 5"),
    );
    put("connect", "bad-version", &connect([0, 0, 2, 2, 0], b""));
    put(
        "connect",
        "unknown-encoding",
        &connect([1, 3, 0, 3, 0], b"{}"),
    );
    let zip = |entries: &[(&str, &[u8])]| {
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
        buf.into_inner()
    };
    put(
        "bundle",
        "valid",
        &zip(&[("main.py", b"print(1)"), ("pkg/a.py", b"x=1")]),
    );
    put("bundle", "escape", &zip(&[("../evil", b"x")]));
    put("bundle", "absolute", &zip(&[("/tmp/evil", b"x")]));
    put("logs", "lines", b"\x05\x10\x00\x03a.c\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x01\x03abc\x01\x00\x05hello");
    put("logs", "tail", b"\x20\xff\xff\x00\xfe\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00\x00\x01\x01\x02hi\x00\x02\x02yo");
    let reconcile = proto::v2026_06::iris::cluster::worker::ReconcileRequest {
        worker_id: "worker-1".into(),
        desired: vec![
            proto::v2026_06::iris::cluster::worker::DesiredAttempt {
                attempt_uid: "u1".into(),
                intent: Some(
                    proto::v2026_06::iris::cluster::worker::desired_attempt::Intent::Run(
                        proto::v2026_06::iris::cluster::worker::AttemptSpec {
                            request: Some(proto::v2026_06::iris::job::RunTaskRequest {
                                task_id: "/a/j/0".into(),
                                attempt_uid: "u1".into(),
                                entrypoint: Some(proto::v2026_06::iris::job::RuntimeEntrypoint {
                                    run_command: Some(
                                        proto::v2026_06::iris::job::CommandEntrypoint {
                                            argv: vec!["true".into()],
                                        },
                                    ),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                        },
                    ),
                ),
            },
            proto::v2026_06::iris::cluster::worker::DesiredAttempt {
                attempt_uid: "u2".into(),
                intent: Some(
                    proto::v2026_06::iris::cluster::worker::desired_attempt::Intent::Stop(1),
                ),
            },
        ],
    };
    put("reconcile", "run-and-stop", &reconcile.encode_to_vec());
    put(
        "reconcile",
        "run-exit-remove-run",
        &[
            1, 0x82, 0, 0, 0x81, 0x80, 0, 0x80, 0, 0, 0, 0, 1, 0x82, 0, 0, 0x80, 0x80,
        ],
    );
    put(
        "core",
        "submit-run-exit",
        &[
            0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 1, 4, 0, 0, 1, 4, 0, 0, 1, 5, 0, 0, 0, 0, 1, 8, 0, 1,
        ],
    );
    put(
        "core",
        "kill-and-supersede",
        &[
            0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 1, 1, 10, 0, 0, 0, 1, 1, 0, 1, 3, 0xff, 0x20, 1, 2,
        ],
    );
}
