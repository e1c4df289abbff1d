//! Client subcommands against a running worker.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::render::{task_detail, task_table};
use super::{RunArgs, Target, TaskCommand};
use crate::core::{LogSource, TaskState, is_task_finished};
use crate::proto;
use crate::proto::worker::{FetchLogsFilter, FetchTaskLogsRequest, GetTaskStatusRequest};
use crate::proto::worker_service_client::WorkerServiceClient;
use crate::shell::auth::{SendToken, read_token};
use crate::shell::view::status_json;

type Client = WorkerServiceClient<InterceptedService<Channel, SendToken>>;

const POLL: Duration = Duration::from_millis(200);

async fn connect(target: &Target) -> anyhow::Result<Client> {
    // The CLI speaks gRPC to a worker: `HOST:PORT`, or a URI with a scheme.
    let uri = match target.worker.split_once("://") {
        Some(("grpc", authority)) => format!("http://{authority}"),
        Some(_) => target.worker.clone(),
        None => format!("http://{}", target.worker),
    };
    let channel = Channel::from_shared(uri.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot connect; is `iris-worker serve` running at {uri}? \
                 (--worker HOST:PORT or IRIS_WORKER picks another worker)"
            )
        })?;
    let token = match &target.auth_token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let auth = SendToken::new(token.as_deref());
    Ok(WorkerServiceClient::with_interceptor(channel, auth).max_decoding_message_size(64 << 20))
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::Unauthenticated {
        return anyhow::anyhow!(
            "the worker wants a token: pass --auth-token-file FILE or set IRIS_AUTH_TOKEN_FILE ({})",
            status.message()
        );
    }
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("json"));
}

pub async fn health(target: &Target) -> anyhow::Result<i32> {
    health_of(target)
        .await
        .with_context(|| format!("worker {}", target.worker))
}

async fn health_of(target: &Target) -> anyhow::Result<i32> {
    let mut client = connect(target).await?;
    let h = client
        .health_check(proto::Empty {})
        .await
        .map_err(status_error)?
        .into_inner();
    if target.json {
        print_json(&serde_json::json!({
            "healthy": h.healthy, "uptime_ms": h.uptime_ms, "running_tasks": h.running_tasks,
        }));
    } else {
        println!(
            "healthy: {}  uptime: {:.1}s  running tasks: {}",
            h.healthy,
            h.uptime_ms as f64 / 1000.0,
            h.running_tasks
        );
    }
    Ok(if h.healthy { 0 } else { 1 })
}

pub async fn task(target: &Target, command: TaskCommand) -> anyhow::Result<i32> {
    task_on(target, command)
        .await
        .with_context(|| format!("worker {}", target.worker))
}

async fn task_on(target: &Target, command: TaskCommand) -> anyhow::Result<i32> {
    let mut client = connect(target).await?;
    match command {
        TaskCommand::Run(args) => run(&mut client, target, args).await,
        TaskCommand::Status { task_id } => {
            let status = get_status(&mut client, &task_id).await?;
            if target.json {
                print_json(&status_json(&status));
            } else {
                println!("{}", task_detail(&status));
            }
            Ok(0)
        }
        TaskCommand::List => {
            let tasks = client
                .list_tasks(proto::worker::ListTasksRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .tasks;
            if target.json {
                print_json(&serde_json::Value::Array(
                    tasks.iter().map(status_json).collect(),
                ));
            } else {
                println!("{}", task_table(&tasks));
            }
            Ok(0)
        }
        TaskCommand::Logs {
            task_id,
            follow,
            tail,
            source,
        } => {
            let source = match source.as_deref() {
                None => None,
                Some(name) => Some(LogSource::parse(name).with_context(|| {
                    format!("--source {name:?}: use stdout, stderr, build or error")
                })?),
            };
            let start = tail.map_or(0, |n| -(n.min(i64::MAX as u64) as i64));
            follow_logs(&mut client, &task_id, start, source, follow, target.json).await?;
            Ok(0)
        }
        TaskCommand::Kill {
            task_id,
            term_timeout_ms,
        } => {
            client
                .kill_task(proto::worker::KillTaskRequest {
                    task_id: task_id.clone(),
                    term_timeout_ms,
                })
                .await
                .map_err(status_error)?;
            if !target.json {
                println!("kill requested for {task_id}");
            }
            Ok(0)
        }
    }
}

async fn get_status(client: &mut Client, task_id: &str) -> anyhow::Result<proto::TaskStatus> {
    Ok(client
        .get_task_status(GetTaskStatusRequest {
            task_id: task_id.to_string(),
            include_result: false,
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

fn request(args: &RunArgs) -> anyhow::Result<proto::worker::RunTaskRequest> {
    let job_id = args.job_id.clone().unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("cli-{secs}")
    });
    let task_id = args
        .task_id
        .clone()
        .unwrap_or_else(|| format!("{job_id}/task-{}", args.task_index));
    let mut env_vars = HashMap::new();
    for pair in &args.env {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair:?}: expected KEY=VALUE"))?;
        env_vars.insert(k.to_string(), v.to_string());
    }
    let argv: Vec<&str> = args.argv.iter().map(String::as_str).collect();
    Ok(proto::worker::RunTaskRequest {
        job_id,
        task_index: args.task_index,
        num_tasks: args.num_tasks,
        environment: Some(proto::EnvironmentConfig {
            env_vars,
            ..Default::default()
        }),
        bundle_gcs_path: args.bundle.clone().unwrap_or_default(),
        timeout_seconds: args.timeout,
        ports: args.ports.clone(),
        ..proto::worker::RunTaskRequest::for_command(&task_id, args.attempt_id, &argv)
    })
}

async fn run(client: &mut Client, target: &Target, args: RunArgs) -> anyhow::Result<i32> {
    let req = request(&args)?;
    let task_id = req.task_id.clone();
    let response = client
        .run_task(req)
        .await
        .map_err(status_error)?
        .into_inner();
    if !args.wait {
        if target.json {
            print_json(&serde_json::json!({
                "task_id": response.task_id,
                "status": crate::core::state_name(response.state),
            }));
        } else {
            println!("submitted {task_id}");
        }
        return Ok(0);
    }
    follow_logs(client, &task_id, 0, None, true, target.json).await?;
    let status = get_status(client, &task_id).await?;
    if !target.json && !status.error.is_empty() {
        eprintln!("{task_id}: {}", status.error);
    }
    Ok(match TaskState::from_proto(status.state) {
        Some(TaskState::Succeeded) => 0,
        _ if status.exit_code != 0 => status.exit_code,
        _ => 1,
    })
}

/// Prints log lines from `start` (negative = the last N), then, with `follow`, new ones until
/// the task is finished.
async fn follow_logs(
    client: &mut Client,
    task_id: &str,
    start: i64,
    source: Option<LogSource>,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut cursor = start;
    loop {
        // Read the state first: lines printed after a finished state are then complete.
        let finished = is_task_finished(
            TaskState::from_proto(get_status(client, task_id).await?.state)
                .unwrap_or(TaskState::Pending),
        );
        loop {
            let logs = client
                .fetch_task_logs(FetchTaskLogsRequest {
                    task_id: task_id.to_string(),
                    filter: Some(FetchLogsFilter {
                        start_line: cursor,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .logs;
            let Some(last) = logs.last() else { break };
            cursor = last.line_number + 1;
            for entry in &logs {
                print_entry(entry, source, json);
            }
            if cursor <= 0 {
                bail!("worker returned a negative line number");
            }
        }
        if !follow || finished {
            return Ok(());
        }
        if cursor < 0 {
            cursor = 0;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_entry(entry: &proto::worker::LogEntry, source: Option<LogSource>, json: bool) {
    if source.is_some_and(|s| s.as_str() != entry.source) {
        return;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "line_number": entry.line_number, "timestamp_ms": entry.timestamp_ms,
                "source": entry.source, "data": entry.data,
            })
        );
    } else if entry.source == "stderr" || entry.source == "error" {
        eprintln!("{}", entry.data);
    } else {
        println!("{}", entry.data);
    }
}
