//! The worker binary over real gRPC on loopback, with the process runtime: every RPC and status
//! code, env and ports, kills, timeouts, logs, concurrency.

mod support;

use std::time::{Duration, Instant};

use iris_worker::proto;
use iris_worker::proto::TaskState;
use iris_worker::proto::worker::{FetchLogsFilter, FetchTaskLogsRequest, KillTaskRequest};
use support::*;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn status_codes_of_every_rpc() {
    let worker = WorkerProcess::start(&temp_dir("codes"), &[]);
    let mut c = worker.client().await;

    let bad = [
        ("task_id", command_request("a/../b", &["true"])),
        ("task_id", command_request("/job/t", &["true"])),
        (
            "entrypoint.command.argv",
            command_request("job/task-0", &[]),
        ),
        (
            "ports",
            proto::worker::RunTaskRequest {
                ports: vec!["a-b".into()],
                ..command_request("job/task-0", &["true"])
            },
        ),
        (
            "ports",
            proto::worker::RunTaskRequest {
                ports: vec!["a".into(), "a".into()],
                ..command_request("job/task-0", &["true"])
            },
        ),
        (
            "timeout_seconds",
            proto::worker::RunTaskRequest {
                timeout_seconds: -1,
                ..command_request("job/task-0", &["true"])
            },
        ),
    ];
    for (field, req) in bad {
        let err = c.run_task(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
    // Refused submissions changed nothing.
    let listed = c
        .list_tasks(proto::worker::ListTasksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tasks.is_empty());

    let not_found = c
        .get_task_status(proto::worker::GetTaskStatusRequest {
            task_id: "job/none".into(),
            include_result: false,
        })
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);
    let not_found = c
        .fetch_task_logs(FetchTaskLogsRequest {
            task_id: "job/none".into(),
            filter: None,
        })
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);
    let not_found = c
        .kill_task(KillTaskRequest {
            task_id: "job/none".into(),
            term_timeout_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);

    let mut req = command_request("job/task-0", &["true"]);
    req.attempt_id = 2;
    let resp = c.run_task(req.clone()).await.unwrap().into_inner();
    assert_eq!(resp.task_id, "job/task-0");
    let done = wait_for(&mut c, "job/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);

    // Same attempt again: the current state, and nothing runs again.
    let again = c.run_task(req.clone()).await.unwrap().into_inner();
    assert_eq!(again.state, TaskState::Succeeded as i32);
    assert_eq!(status(&mut c, "job/task-0").await.attempts.len(), 1);
    // Lower attempt: refused.
    req.attempt_id = 1;
    assert_eq!(
        c.run_task(req).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    let err = c
        .kill_task(KillTaskRequest {
            task_id: "job/task-0".into(),
            term_timeout_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("already completed"),
        "{}",
        err.message()
    );

    let bad_regex = c
        .fetch_task_logs(FetchTaskLogsRequest {
            task_id: "job/task-0".into(),
            filter: Some(FetchLogsFilter {
                regex: "(".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_regex.code(), Code::InvalidArgument);
    assert!(bad_regex.message().contains("regex"));

    let health = c.health_check(proto::Empty {}).await.unwrap().into_inner();
    assert!(health.healthy);
    assert!(health.uptime_ms > 0);
    assert_eq!(health.running_tasks, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn task_sees_iris_env_and_two_bindable_ports() {
    let worker = WorkerProcess::start(&temp_dir("env"), &["--worker-id", "w-env"]);
    let mut c = worker.client().await;
    let script = r#"
import os, socket
for k in sorted(os.environ):
    if k.startswith("IRIS_") or k == "MINE":
        print(f"{k}={os.environ[k]}")
socks = []
for name in ("HTTP", "GRPC"):
    s = socket.socket()
    s.bind((os.environ["IRIS_BIND_HOST"], int(os.environ["IRIS_PORT_" + name])))
    s.listen()
    socks.append(s)
print("bound")
"#;
    let mut req = command_request("envjob/task-1", &["python3", "-c", script]);
    req.task_index = 1;
    req.num_tasks = 2;
    req.ports = vec!["http".into(), "grpc".into()];
    req.environment = Some(proto::EnvironmentConfig {
        env_vars: [
            ("MINE".to_string(), "yes".to_string()),
            ("IRIS_JOB_ID".to_string(), "spoofed".to_string()),
        ]
        .into(),
        ..Default::default()
    });
    c.run_task(req).await.unwrap();
    let done = wait_for(&mut c, "envjob/task-1", LIMIT, finished).await;
    let out = stdout_of(&logs(&mut c, "envjob/task-1").await);
    assert_eq!(done.state, TaskState::Succeeded as i32, "{out:?} {done:?}");
    let get = |k: &str| {
        out.iter()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    assert_eq!(get("IRIS_JOB_ID").as_deref(), Some("envjob"));
    assert_eq!(get("IRIS_TASK_ID").as_deref(), Some("envjob/task-1"));
    assert_eq!(get("IRIS_TASK_INDEX").as_deref(), Some("1"));
    assert_eq!(get("IRIS_NUM_TASKS").as_deref(), Some("2"));
    assert_eq!(get("IRIS_ATTEMPT_ID").as_deref(), Some("0"));
    assert_eq!(get("IRIS_WORKER_ID").as_deref(), Some("w-env"));
    assert_eq!(get("IRIS_BIND_HOST").as_deref(), Some("127.0.0.1"));
    assert_eq!(get("MINE").as_deref(), Some("yes"));
    let http: i32 = get("IRIS_PORT_HTTP").unwrap().parse().unwrap();
    let grpc: i32 = get("IRIS_PORT_GRPC").unwrap().parse().unwrap();
    assert_ne!(http, grpc);
    assert_eq!(done.ports.get("http"), Some(&http));
    assert_eq!(done.ports.get("grpc"), Some(&grpc));
    assert!(out.contains(&"bound".to_string()));
}

/// A port another program holds is never handed to a task: the start fails with a port conflict
/// and the worker retries with the next port, saying so in the task's log.
#[tokio::test(flavor = "multi_thread")]
async fn a_port_taken_on_the_host_is_skipped_by_a_retry() {
    // A held port whose neighbour is free now (another test's connection may take any
    // ephemeral port; a neighbour found taken is a reason to pick again, not to fail).
    let (squatter, taken) = loop {
        let squatter = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let taken = squatter.local_addr().unwrap().port();
        if taken < u16::MAX && std::net::TcpListener::bind(("0.0.0.0", taken + 1)).is_ok() {
            break (squatter, taken);
        }
    };
    let range = format!("{taken}-{}", taken + 1);
    let worker = WorkerProcess::start(&temp_dir("squat"), &["--port-range", &range]);
    let mut c = worker.client().await;
    let mut req = command_request("squat/task-0", &["true"]);
    req.ports = vec!["http".into()];
    c.run_task(req).await.unwrap();
    let done = wait_for(&mut c, "squat/task-0", LIMIT, finished).await;
    let lines = logs(&mut c, "squat/task-0").await;
    assert_eq!(
        done.state,
        TaskState::Succeeded as i32,
        "{done:?} {lines:?}"
    );
    assert_eq!(done.ports.get("http"), Some(&i32::from(taken + 1)));
    assert!(
        lines
            .iter()
            .any(|l| l.source == "error" && l.data.contains("Port conflict")),
        "{lines:?}"
    );
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread")]
async fn term_ignoring_group_is_killed_after_the_term_timeout() {
    let worker = WorkerProcess::start(&temp_dir("term"), &[]);
    let mut c = worker.client().await;
    // The shell and its background child both ignore TERM.
    let req = command_request(
        "stub/task-0",
        &["sh", "-c", "trap '' TERM; sleep 1000 & echo $$; wait"],
    );
    c.run_task(req).await.unwrap();
    wait_for(&mut c, "stub/task-0", LIMIT, is_state(TaskState::Running)).await;
    let pid = loop {
        if let Some(line) = stdout_of(&logs(&mut c, "stub/task-0").await).first() {
            break line.parse::<i32>().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pgid = pgid_of(pid);
    assert!(
        group_members(pgid).len() >= 2,
        "shell and sleep run in the group"
    );
    let asked = Instant::now();
    c.kill_task(KillTaskRequest {
        task_id: "stub/task-0".into(),
        term_timeout_ms: 700,
    })
    .await
    .unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "KillTask returns at once"
    );
    let done = wait_for(&mut c, "stub/task-0", LIMIT, finished).await;
    let took = asked.elapsed();
    assert_eq!(done.state, TaskState::Killed as i32);
    assert!(
        took >= Duration::from_millis(700),
        "KILL came before the term timeout: {took:?}"
    );
    assert!(
        took < Duration::from_millis(700 + 1000),
        "KILL came late: {took:?}"
    );
    assert_eq!(done.exit_signal, 9);
    assert!(
        group_members(pgid).is_empty(),
        "survivors: {:?}",
        group_members(pgid)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_during_building_never_starts_the_process() {
    let dir = temp_dir("build");
    let worker = WorkerProcess::start(&dir, &[]);
    let mut c = worker.client().await;
    // A bundle that never arrives holds the task in BUILDING.
    let fifo = dir.join("slow-bundle.zip");
    make_fifo(&fifo);
    let marker = dir.join("started");
    let mut req = command_request("slow/task-0", &["touch", marker.to_str().unwrap()]);
    req.bundle_gcs_path = format!("file://{}", fifo.display());
    c.run_task(req).await.unwrap();
    let building = wait_for(&mut c, "slow/task-0", LIMIT, is_state(TaskState::Building)).await;
    assert!(building.started_at_ms > 0);
    c.kill_task(KillTaskRequest {
        task_id: "slow/task-0".into(),
        term_timeout_ms: 0,
    })
    .await
    .unwrap();
    let done = wait_for(&mut c, "slow/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Killed as i32);
    // Release the blocked reader: the bundle now arrives, too late to start anything.
    std::fs::write(&fifo, b"").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!marker.exists(), "the process started after the kill");
    assert_eq!(
        status(&mut c, "slow/task-0").await.state,
        TaskState::Killed as i32
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_ends_failed() {
    let worker = WorkerProcess::start(&temp_dir("timeout"), &[]);
    let mut c = worker.client().await;
    let mut req = command_request("slowjob/task-0", &["sleep", "1000"]);
    req.timeout_seconds = 1;
    c.run_task(req).await.unwrap();
    let done = wait_for(&mut c, "slowjob/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Failed as i32);
    assert_eq!(done.error, "Timeout exceeded");
    assert!(done.finished_at_ms - done.started_at_ms >= 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_tasks_succeed_with_their_own_logs() {
    let worker = WorkerProcess::start(&temp_dir("fifty"), &[]);
    let mut c = worker.client().await;
    for i in 0..50 {
        let script = format!("for n in 1 2 3; do echo task{i} line$n; done");
        c.run_task(command_request(
            &format!("many/task-{i}"),
            &["sh", "-c", &script],
        ))
        .await
        .unwrap();
    }
    for i in 0..50 {
        let id = format!("many/task-{i}");
        let done = wait_for(&mut c, &id, LIMIT, finished).await;
        assert_eq!(done.state, TaskState::Succeeded as i32, "{id}");
        let want: Vec<String> = (1..=3).map(|n| format!("task{i} line{n}")).collect();
        assert_eq!(stdout_of(&logs(&mut c, &id).await), want);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_thousand_lines_fetchable_with_bounded_memory() {
    let worker = WorkerProcess::start(&temp_dir("lines"), &[]);
    let mut c = worker.client().await;
    let req = command_request("chatty/task-0", &["sh", "-c", "seq 0 199999"]);
    c.run_task(req).await.unwrap();
    let done = wait_for(&mut c, "chatty/task-0", Duration::from_secs(60), finished).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    let mut next = 0i64;
    let mut pages = 0;
    while next < 200_000 {
        let page = c
            .fetch_task_logs(FetchTaskLogsRequest {
                task_id: "chatty/task-0".into(),
                filter: Some(FetchLogsFilter {
                    start_line: next,
                    max_lines: 50_000,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .logs;
        assert!(!page.is_empty(), "nothing from line {next}");
        for entry in &page {
            assert_eq!(entry.line_number, next);
            assert_eq!(entry.data, next.to_string());
            next += 1;
        }
        pages += 1;
    }
    assert!(pages >= 4);
    let tail = c
        .fetch_task_logs(FetchTaskLogsRequest {
            task_id: "chatty/task-0".into(),
            filter: Some(FetchLogsFilter {
                start_line: -2,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .logs;
    assert_eq!(
        tail.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        vec!["199998", "199999"]
    );
    let peak_mb = worker.peak_rss_kb() / 1024;
    assert!(peak_mb < 100, "worker peak RSS {peak_mb} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn callable_entrypoint_runs_without_the_worker_unpickling_it() {
    let worker = WorkerProcess::start(&temp_dir("callable"), &[]);
    let mut c = worker.client().await;
    let pickled = std::process::Command::new("python3")
        .args(["-c", "import cloudpickle, sys; sys.stdout.buffer.write(cloudpickle.dumps((print, ('hello from a callable',), {'flush': True})))"])
        .output()
        .expect("python3 with cloudpickle (scripts/setup-test-deps installs it)");
    assert!(
        pickled.status.success(),
        "{}",
        String::from_utf8_lossy(&pickled.stderr)
    );
    let mut req = command_request("call/task-0", &["unused"]);
    req.entrypoint = Some(proto::Entrypoint {
        kind: Some(proto::entrypoint::Kind::Callable(pickled.stdout)),
    });
    c.run_task(req).await.unwrap();
    let done = wait_for(&mut c, "call/task-0", LIMIT, finished).await;
    let out = logs(&mut c, "call/task-0").await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{out:?}");
    assert_eq!(stdout_of(&out), vec!["hello from a callable"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bundle_is_extracted_into_the_workdir_and_usage_is_sampled() {
    let dir = temp_dir("bundle");
    let worker = WorkerProcess::start(&dir, &[]);
    let mut c = worker.client().await;
    let zip_path = dir.join("bundle.zip");
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        zip.start_file("app/main.sh", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(
            b"echo from-the-bundle; head -c 30000000 /dev/zero | tail -c 1 >/dev/null; sleep 2\n",
        )
        .unwrap();
        zip.finish().unwrap();
    }
    let mut req = command_request("bun/task-0", &["sh", "app/main.sh"]);
    req.bundle_gcs_path = format!("file://{}", zip_path.display());
    c.run_task(req).await.unwrap();
    // While it runs, the sampler sees its process group.
    let sampled = wait_for(&mut c, "bun/task-0", LIMIT, |s| {
        s.resource_usage.is_some_and(|u| u.process_count >= 1)
    })
    .await;
    assert!(sampled.resource_usage.unwrap().memory_peak_mb >= 1);
    let done = wait_for(&mut c, "bun/task-0", LIMIT, finished).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    assert_eq!(
        stdout_of(&logs(&mut c, "bun/task-0").await),
        vec!["from-the-bundle"]
    );

    let mut req = command_request("bun/task-1", &["true"]);
    req.bundle_gcs_path = "gs://bucket/bundle.zip".into();
    c.run_task(req).await.unwrap();
    let failed = wait_for(&mut c, "bun/task-1", LIMIT, finished).await;
    assert_eq!(failed.state, TaskState::Failed as i32);
    assert!(
        failed.error.contains("Bundle fetch failed") && failed.error.contains("gs://"),
        "{}",
        failed.error
    );
}
