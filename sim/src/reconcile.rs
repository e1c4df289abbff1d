//! The simulated controller's 2026-06 side, as Iris's controller drives a worker of that era:
//! `Register` and `ListEndpoints` answered, a log service (`finelog.logging.LogService/PushLogs`)
//! that records every pushed line, and a Reconcile tick per worker every simulated second. A
//! tick's desired set names every attempt bound to the worker whose finish the controller has
//! not recorded: the current one as `run` (its RunTaskRequest until the worker has answered for
//! it, and once more when the plan duplicates it), older or killed ones as `stop`. Each
//! observation is checked and recorded as the task era's reports are.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::post;
use iris_worker::core::{TaskState, is_task_finished};
use iris_worker::proto;
use iris_worker::proto::v2026_06::finelog::logging as finelog;
use iris_worker::proto::v2026_06::iris::cluster::{controller as ctl06, worker as w06};
use iris_worker::proto::v2026_06::iris::{job, time};
use iris_worker::shell::auth::RequireToken;
use iris_worker::shell::connect::client::ConnectClient;
use iris_worker::shell::connect::server::{self, unary};
use iris_worker::shell::era2026_06::RECONCILE_PATH;
use tonic::Status;

use crate::db::{CtlTask, Db};
use crate::net;
use crate::plan::{CONTROLLER_PORT, WORKER_PORT, worker_host};
use crate::reports::{Service, on_report};
use crate::shared::{Shared, lock};

/// How often a worker is reconciled (Iris: about every second).
pub const TICK_MS: u64 = 1_000;
/// Iris's Reconcile deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// `/job-3/0` for the database's `job-3/0`.
pub fn task_path(task_id: &str) -> String {
    format!("/{task_id}")
}

pub fn uid(task_id: &str, attempt_id: i32) -> String {
    format!("{task_id}#{attempt_id}")
}

fn parse_uid(uid: &str) -> Option<(&str, i32)> {
    let (task, attempt) = uid.rsplit_once('#')?;
    Some((task, attempt.parse().ok()?))
}

/// The log service's key of an attempt's lines.
pub fn log_key(task_id: &str, attempt_id: i32) -> String {
    format!("{}:{attempt_id}", task_path(task_id))
}

// ---- the controller's routes ---------------------------------------------------------------

#[derive(Clone)]
struct Routes {
    service: Arc<Service>,
    token: RequireToken,
}

/// `ControllerService` of both eras (the task era's two methods, the 2026-06 era's two) and the
/// log service, over Connect.
pub(crate) fn router(service: Arc<Service>) -> Router {
    let state = Routes {
        service,
        token: RequireToken::new(None),
    };
    Router::new()
        .route("/iris.cluster.ControllerService/{method}", post(controller))
        .route("/finelog.logging.LogService/PushLogs", post(push_logs))
        .with_state(state)
}

async fn controller(State(r): State<Routes>, Path(method): Path<String>, req: Request) -> Response {
    use proto::controller_service_server::ControllerService as _;
    let (svc, token, shared) = (&*r.service, &r.token, r.service.shared.clone());
    match method.as_str() {
        "RegisterWorker" => unary(req, token, |q| svc.register_worker(q)).await,
        "ReportTaskState" => unary(req, token, |q| svc.report_task_state(q)).await,
        "Register" => {
            unary(
                req,
                token,
                |q: tonic::Request<ctl06::RegisterRequest>| async move {
                    let q = q.into_inner();
                    shared.event(format!("ctl register06 {} at {}", q.worker_id, q.address));
                    Ok(tonic::Response::new(ctl06::RegisterResponse {
                        worker_id: q.worker_id,
                        accepted: true,
                    }))
                },
            )
            .await
        }
        "ListEndpoints" => {
            unary(
                req,
                token,
                |_: tonic::Request<ctl06::ListEndpointsRequest>| async {
                    Ok(tonic::Response::new(ctl06::ListEndpointsResponse {
                        endpoints: vec![ctl06::Endpoint {
                            name: "/system/log-server".into(),
                            address: format!("controller:{CONTROLLER_PORT}"),
                            ..Default::default()
                        }],
                    }))
                },
            )
            .await
        }
        _ => server::error_response(&Status::unimplemented(format!("no method {method}"))),
    }
}

async fn push_logs(State(r): State<Routes>, req: Request) -> Response {
    let shared = r.service.shared.clone();
    unary(
        req,
        &r.token,
        |q: tonic::Request<finelog::PushLogsRequest>| async move {
            let q = q.into_inner();
            let batch = q.entries.into_iter().map(|e| (e.source, e.data)).collect();
            lock(&shared.pushed).entry(q.key).or_default().push(batch);
            Ok(tonic::Response::new(finelog::PushLogsResponse {}))
        },
    )
    .await
}

// ---- the Reconcile tick --------------------------------------------------------------------

fn run_request(task_id: &str, task: &CtlTask, attempt_id: i32) -> job::RunTaskRequest {
    job::RunTaskRequest {
        task_id: task_path(task_id),
        num_tasks: task.num_tasks,
        entrypoint: Some(job::RuntimeEntrypoint {
            run_command: Some(job::CommandEntrypoint {
                argv: task.plan.behaviour.to_argv(),
            }),
            ..Default::default()
        }),
        timeout: (task.plan.timeout_seconds > 0).then(|| time::Duration {
            milliseconds: i64::from(task.plan.timeout_seconds) * 1000,
        }),
        ports: task.plan.ports.clone(),
        attempt_id,
        attempt_uid: uid(task_id, attempt_id),
        ..Default::default()
    }
}

/// What the controller wants of `worker` now; marks the specs it sends.
fn desired(db: &mut Db, worker: usize, now: u64) -> Vec<w06::DesiredAttempt> {
    use w06::desired_attempt::Intent;
    let mut out = Vec::new();
    for (task_id, task) in db.tasks.iter_mut() {
        let (current_id, _) = task.current();
        let since_ack = task.first_ack_ms.map(|at| now.saturating_sub(at));
        let duplicate_due = task
            .plan
            .duplicate_after_ms
            .is_some_and(|after| since_ack.is_some_and(|s| s >= after))
            && !task.duplicated;
        let killing = task.kill_sent_ms.is_some();
        let mut send_duplicate = false;
        for (&attempt_id, a) in &task.attempts {
            if a.worker != worker || a.terminal.is_some() {
                continue;
            }
            let intent = if attempt_id != current_id || killing {
                Intent::Stop(w06::StopReason::Cancelled as i32)
            } else {
                let with_spec = !a.acked || duplicate_due;
                send_duplicate |= a.acked && duplicate_due;
                Intent::Run(w06::AttemptSpec {
                    request: with_spec.then(|| run_request(task_id, task, attempt_id)),
                })
            };
            out.push(w06::DesiredAttempt {
                attempt_uid: uid(task_id, attempt_id),
                intent: Some(intent),
            });
        }
        if send_duplicate {
            task.duplicated = true;
        }
    }
    out
}

/// One Reconcile of `worker`, its answer recorded.
pub(crate) async fn tick(shared: Arc<Shared>, worker: usize) {
    let now = shared.now_ms();
    let desired = desired(&mut lock(&shared.db), worker, now);
    let with_spec: Vec<String> = desired
        .iter()
        .filter(|d| {
            matches!(&d.intent, Some(w06::desired_attempt::Intent::Run(s)) if s.request.is_some())
        })
        .map(|d| d.attempt_uid.clone())
        .collect();
    let request = w06::ReconcileRequest {
        worker_id: worker_host(worker),
        desired,
    };
    let authority = format!("{}:{WORKER_PORT}", worker_host(worker));
    let client = ConnectClient::new(&authority, net::dialer(), None);
    let answer: Result<w06::ReconcileResponse, Status> =
        client.unary(RECONCILE_PATH, &request, CALL_TIMEOUT).await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(s) => {
            shared.event(format!(
                "ctl reconcile {} -> {:?}",
                worker_host(worker),
                s.code()
            ));
            lock(&shared.db).reconcile_missed.insert(worker);
            return;
        }
    };
    let missed = lock(&shared.db).reconcile_missed.remove(&worker);
    if answer.worker_id != worker_host(worker) {
        shared.violation(format!(
            "{} answered Reconcile as {:?}",
            worker_host(worker),
            answer.worker_id
        ));
    }
    if answer.health.and_then(|h| h.healthy) != Some(true) {
        shared.violation(format!("{} says it is unhealthy", worker_host(worker)));
    }
    for o in answer.observed {
        observe(
            &shared,
            worker,
            &o,
            with_spec.contains(&o.attempt_uid),
            missed,
        );
    }
}

/// Records one observation as the task era's report of it would be. After a lost answer
/// (`missed`) the RUNNING it carried may be the one thing the controller never saw: a BUILDING
/// attempt observed terminal then counts as having passed RUNNING.
fn observe(
    shared: &Shared,
    worker: usize,
    o: &w06::AttemptObservation,
    sent_spec: bool,
    missed: bool,
) {
    let Some((task_id, attempt_id)) = parse_uid(&o.attempt_uid) else {
        shared.violation(format!("observation of an unknown uid {:?}", o.attempt_uid));
        return;
    };
    let missing = o.state == job::TaskState::Missing as i32;
    let state = if missing {
        let killing = lock(&shared.db)
            .tasks
            .get(task_id)
            .is_some_and(|t| t.kill_sent_ms.is_some() || t.current().0 != attempt_id);
        if sent_spec && !killing {
            // Refused (no ports free, too many live tasks): sent again next tick, as the task
            // era's RESOURCE_EXHAUSTED is retried.
            shared.event(format!(
                "ctl {} refused by {}",
                o.attempt_uid,
                worker_host(worker)
            ));
            return;
        }
        // Iris: a stop of an unknown attempt is done; an active one lost is WORKER_FAILED.
        match killing {
            true => TaskState::Killed,
            false => TaskState::WorkerFailed,
        }
    } else {
        match TaskState::from_proto(o.state) {
            Some(state) => state,
            None => {
                shared.violation(format!("observation with unknown state {}", o.state));
                return;
            }
        }
    };
    let now = shared.now_ms();
    {
        let mut db = lock(&shared.db);
        let Some(task) = db.tasks.get_mut(task_id) else {
            drop(db);
            shared.violation(format!("{} observed, never dispatched", o.attempt_uid));
            return;
        };
        if !missing {
            task.first_ack_ms.get_or_insert(now);
        }
        let Some(a) = task.attempts.get_mut(&attempt_id) else {
            return;
        };
        a.acked |= !missing;
        // A state seen before says nothing new (Reconcile repeats it every tick).
        if a.reports.last() == Some(&state) && !is_task_finished(state) {
            return;
        }
        let passed_running = missed
            && is_task_finished(state)
            && a.reports.last() == Some(&TaskState::Building)
            && a.terminal.is_none();
        if passed_running {
            a.reports.push(TaskState::Running);
        }
    }
    on_report(
        shared,
        &proto::controller::ReportTaskStateRequest {
            worker_id: worker_host(worker),
            task_id: task_id.to_string(),
            attempt_id,
            state: state.to_proto() as i32,
            exit_code: o.exit_code.unwrap_or(0),
            error: o.error.clone(),
            ..Default::default()
        },
    );
}

// ---- what the log service must hold ---------------------------------------------------------

/// How far the pushed batches of one attempt agree with its log (`disk`: source and text in
/// line order): `Ok(n)` when together they are the log's first `n` lines, in order. Each batch
/// either continues where the last one ended or is the last one again (from the same line,
/// maybe longer): a batch whose acknowledgment never came back (a lost answer, a crash before
/// the position was kept) is sent again, and only that one. `Err` says what broke.
pub fn pushed_prefix(
    batches: &[Vec<(String, String)>],
    disk: &[(String, String)],
) -> Result<usize, String> {
    let (mut next, mut last_start) = (0usize, 0usize);
    let fits =
        |at: usize, batch: &[(String, String)]| disk.get(at..at + batch.len()) == Some(batch);
    for (i, batch) in batches.iter().enumerate() {
        if fits(next, batch) {
            last_start = next;
            next += batch.len();
        } else if fits(last_start, batch) {
            next = next.max(last_start + batch.len());
        } else {
            return Err(format!(
                "batch {i} (first line {:?}) is neither the log's lines from {next} nor the \
                 previous batch again (from {last_start})",
                batch.first()
            ));
        }
    }
    Ok(next)
}
