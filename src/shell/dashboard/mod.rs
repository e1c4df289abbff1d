//! The worker's HTTP face (axum, on `--dashboard-port`): server-rendered pages for people, a JSON
//! API for scripts and `/metrics` for Prometheus. It reads through the driver like the gRPC
//! service does, and logs straight from the log store. Unknown or malformed ids are 404s.

pub mod html;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::core::compile_regex;
use crate::core::state_name;
use crate::core::{
    AttemptKey, LineStart, LogFilter, LogLine, LogSource, Retention, TaskId, TaskState,
};
use crate::proto;
use crate::shell::auth::{RequireToken, peer_ip};
use crate::shell::disk::FsUsage;
use crate::shell::driver::{Command, DriverHandle};
use crate::shell::logs::store::LogStore;
use crate::shell::metrics::{Metrics, StateLabel};
use crate::shell::samples::SampleStore;
use crate::shell::view::status_json;
use html::{LogView, WorkerView};

/// Lines a task page shows; the JSON API's default tail.
pub const PAGE_LINES: u64 = 500;

#[derive(Clone)]
pub struct Dashboard {
    pub driver: DriverHandle,
    pub logs: LogStore,
    pub metrics: Arc<Metrics>,
    pub worker_id: String,
    pub token: RequireToken,
    /// Shown on the front page.
    pub retention: Retention,
    /// The charts' data.
    pub samples: SampleStore,
    /// Its file system's usage heads the front page.
    pub cache_dir: PathBuf,
}

pub fn router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/task/{*id}", get(task_page))
        .route("/api/stats", get(stats))
        .route("/api/tasks", get(tasks))
        .route("/api/tasks/{*rest}", get(task_or_logs))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            dashboard.clone(),
            require_token,
        ))
        // Outside the check: Iris's bootstrap and its autoscaler probe it without a token.
        .route("/health", get(health))
        .with_state(dashboard)
}

async fn require_token(State(d): State<Dashboard>, request: Request, next: Next) -> Response {
    // The same check the RPCs make; only the error body is the dashboard's.
    if let Err(status) = d
        .token
        .check(request.headers(), peer_ip(request.extensions()))
    {
        return error(StatusCode::UNAUTHORIZED, status.message());
    }
    next.run(request).await
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn unavailable() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the worker is stopping")
}

#[derive(Deserialize)]
struct StateQuery {
    state: Option<String>,
}

#[derive(Deserialize)]
struct LogQuery {
    source: Option<String>,
    tail: Option<u64>,
    /// Only lines matching this (FetchLogsFilter's `regex`).
    regex: Option<String>,
    /// Keep the newest lines in view (the page reloads at its end).
    follow: Option<String>,
}

async fn list(d: &Dashboard) -> Option<Vec<proto::TaskStatus>> {
    let mut tasks = d.driver.ask(|reply| Command::List { reply }).await.ok()?;
    html::sort_newest_first(&mut tasks);
    Some(tasks)
}

async fn index(State(d): State<Dashboard>, Query(q): Query<StateQuery>) -> Response {
    let Some(tasks) = list(&d).await else {
        return unavailable();
    };
    let only = q
        .state
        .as_deref()
        .and_then(|name| TaskState::ALL.into_iter().find(|s| s.short_name() == name));
    let worker = WorkerView {
        running: d.samples.running(),
        era: d.metrics.era().map(str::to_string),
        ..machine_view(&d.cache_dir)
    };
    Html(html::index(
        &tasks,
        &d.worker_id,
        only,
        &d.retention,
        &worker,
    ))
    .into_response()
}

/// The machine, read when the page is: CPUs, load, memory, the cache dir's disk.
fn machine_view(cache_dir: &std::path::Path) -> WorkerView {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| {
            let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
            Some([fields.next()??, fields.next()??, fields.next()??])
        });
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let memory = kib("MemTotal:")
        .zip(kib("MemAvailable:"))
        .map(|(total, available)| (total.saturating_sub(available) / 1024, total / 1024));
    let disk = FsUsage::of(cache_dir)
        .ok()
        .map(|u| (u.bytes_percent(), u.inodes_percent()));
    WorkerView {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        load,
        memory,
        disk,
        running: Vec::new(),
        era: None,
    }
}

/// The status and current attempt of a task, or the 404 to answer.
async fn lookup(d: &Dashboard, raw_id: &str) -> Result<(proto::TaskStatus, AttemptKey), Response> {
    let not_found = || error(StatusCode::NOT_FOUND, format!("task {raw_id:?} not found"));
    let task_id = TaskId::new(raw_id).map_err(|_| not_found())?;
    let status = d
        .driver
        .ask(|reply| Command::Status {
            task_id: task_id.clone(),
            reply,
        })
        .await
        .map_err(|_| unavailable())?
        .ok_or_else(not_found)?;
    let key = AttemptKey {
        task_id,
        attempt_id: status.current_attempt_id,
    };
    Ok((status, key))
}

async fn tail_of(
    d: &Dashboard,
    key: AttemptKey,
    tail: u64,
    source: Option<LogSource>,
    regex: Option<regex::Regex>,
) -> Vec<LogLine> {
    let filter = LogFilter {
        start: LineStart::LastN(tail.max(1)),
        source,
        regex,
        ..LogFilter::default()
    };
    let logs = d.logs.clone();
    tokio::task::spawn_blocking(move || logs.fetch(&key, &filter))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// The `source` query parameter; an unknown one is a 400 with this message.
fn parse_source(raw: Option<&str>) -> Result<Option<LogSource>, String> {
    match raw {
        None | Some("") | Some("all") => Ok(None),
        Some(name) => LogSource::parse(name)
            .map(Some)
            .ok_or_else(|| format!("source {name:?}: use stdout, stderr, build or error")),
    }
}

async fn task_page(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let source = match parse_source(q.source.as_deref()) {
        Ok(source) => source,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let pattern = q.regex.clone().unwrap_or_default();
    // The same rules (and limits) as FetchLogsFilter's regex.
    let regex = match compile_regex(&pattern) {
        Ok(regex) => regex,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match lookup(&d, &id).await {
        Ok((status, key)) => {
            let samples = d.samples.series(&key);
            let lines = tail_of(&d, key, q.tail.unwrap_or(PAGE_LINES), source, regex).await;
            let view = LogView {
                source,
                regex: pattern,
                follow: q.follow.is_some(),
            };
            Html(html::task(&status, &lines, &view, &samples)).into_response()
        }
        Err(response) => response,
    }
}

async fn health(State(d): State<Dashboard>) -> Response {
    match d.driver.ask(|reply| Command::Health { reply }).await {
        Ok(h) => axum::Json(json!({
            "healthy": true,
            "uptime_ms": h.uptime.as_millis() as u64,
            "running_tasks": h.running_tasks,
        }))
        .into_response(),
        Err(_) => unavailable(),
    }
}

fn counts(tasks: &[proto::TaskStatus]) -> Vec<(TaskState, usize)> {
    TaskState::ALL
        .into_iter()
        .map(|s| {
            (
                s,
                tasks
                    .iter()
                    .filter(|t| t.state == s.to_proto() as i32)
                    .count(),
            )
        })
        .collect()
}

async fn stats(State(d): State<Dashboard>) -> Response {
    let Some(tasks) = list(&d).await else {
        return unavailable();
    };
    let by_state: serde_json::Map<String, Value> = counts(&tasks)
        .into_iter()
        .map(|(s, n)| (s.name().to_string(), json!(n)))
        .collect();
    axum::Json(json!({
        "worker_id": d.worker_id,
        "tasks": tasks.len(),
        "tasks_by_state": by_state,
        "outbox_length": d.metrics.outbox_len.get(),
        "log_bytes_ingested": d.metrics.log_bytes.get(),
    }))
    .into_response()
}

async fn tasks(State(d): State<Dashboard>) -> Response {
    match list(&d).await {
        Some(tasks) => {
            axum::Json(Value::Array(tasks.iter().map(status_json).collect())).into_response()
        }
        None => unavailable(),
    }
}

/// `/api/tasks/{id}` or `/api/tasks/{id}/logs`: ids contain `/`, so the suffix decides, and an
/// id that itself ends in `/logs` is still reachable as a task when no task `{id}` exists.
async fn task_or_logs(
    State(d): State<Dashboard>,
    Path(rest): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    if let Some(id) = rest.strip_suffix("/logs")
        && let Ok((_, key)) = lookup(&d, id).await
    {
        let source = match parse_source(q.source.as_deref()) {
            Ok(source) => source,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        let lines = tail_of(&d, key, q.tail.unwrap_or(PAGE_LINES), source, None).await;
        let entries: Vec<Value> = lines
            .iter()
            .map(|l| json!({"line_number": l.line_number, "timestamp_ms": l.timestamp_ms, "source": l.source.as_str(), "data": l.data}))
            .collect();
        return axum::Json(json!({ "task_id": id, "logs": entries })).into_response();
    }
    match lookup(&d, &rest).await {
        Ok((status, _)) => axum::Json(status_json(&status)).into_response(),
        Err(response) => response,
    }
}

async fn metrics(State(d): State<Dashboard>) -> Response {
    if let Some(tasks) = list(&d).await {
        for (state, n) in counts(&tasks) {
            let label = StateLabel {
                state: state_name(state.to_proto() as i32).to_string(),
            };
            d.metrics.tasks.get_or_create(&label).set(n as i64);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        d.metrics.render(),
    )
        .into_response()
}
