//! The simulated controller: a ControllerService (registrations, reports) and a dispatcher that
//! submits the plan's jobs as tasks, retries failed or lost attempts with attempt_id + 1, kills,
//! duplicates and supersedes as planned, and audits the workers at the end. Its database (`Db`)
//! outlives a controller crash; only in-flight calls die with it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iris_worker::core::TaskState;
use iris_worker::proto;
use iris_worker::proto::controller_service_server::ControllerServiceServer;
use iris_worker::proto::worker::{
    KillTaskRequest, ListTasksRequest, ListTasksResponse, RunTaskRequest, RunTaskResponse,
};
use iris_worker::proto::worker_service_client::WorkerServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use iris_worker::shell::connect::client::ConnectClient;
use iris_worker::shell::connect::front::FrontLayer;

use crate::db::{CtlTask, Db};
use crate::net;
use crate::plan::{CONTROLLER_PORT, KillPlan, WORKER_PORT, worker_host};
use crate::reconcile;
use crate::reports::Service;
use crate::shared::{Shared, lock};

/// A kill not answered by a terminal report is sent again after this long.
const KILL_RESEND_MS: u64 = 10_000;
const TICK: Duration = Duration::from_millis(100);

enum Action {
    Run {
        task_id: String,
        attempt_id: i32,
        duplicate: bool,
    },
    Kill {
        task_id: String,
        term_timeout_ms: i32,
    },
    Audit {
        worker: usize,
    },
}

// ---- the dispatcher ------------------------------------------------------------------------

/// A call to a worker gets this long.
const WORKER_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The dispatcher's link to a worker, over the protocol that worker speaks.
#[derive(Clone)]
enum WorkerLink {
    Grpc(WorkerServiceClient<Channel>),
    Connect(ConnectClient),
}

impl WorkerLink {
    async fn connect<Req, Resp>(
        client: &ConnectClient,
        method: &str,
        request: Req,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message + serde::Serialize,
        Resp: prost::Message + Default + serde::de::DeserializeOwned,
    {
        let path = format!("/iris.cluster.WorkerService/{method}");
        client.unary(&path, &request, WORKER_CALL_TIMEOUT).await
    }

    async fn run_task(&self, request: RunTaskRequest) -> Result<(), Status> {
        match self {
            WorkerLink::Grpc(c) => c.clone().run_task(request).await.map(drop),
            WorkerLink::Connect(c) => Self::connect::<_, RunTaskResponse>(c, "RunTask", request)
                .await
                .map(drop),
        }
    }

    async fn kill_task(&self, request: KillTaskRequest) -> Result<(), Status> {
        match self {
            WorkerLink::Grpc(c) => c.clone().kill_task(request).await.map(drop),
            WorkerLink::Connect(c) => Self::connect::<_, proto::Empty>(c, "KillTask", request)
                .await
                .map(drop),
        }
    }

    async fn list_tasks(&self) -> Result<Vec<proto::TaskStatus>, Status> {
        let request = ListTasksRequest::default();
        let listing: ListTasksResponse = match self {
            WorkerLink::Grpc(c) => c.clone().list_tasks(request).await?.into_inner(),
            WorkerLink::Connect(c) => Self::connect(c, "ListTasks", request).await?,
        };
        Ok(listing.tasks)
    }
}

fn worker_client(worker: usize) -> WorkerLink {
    let authority = format!("{}:{}", worker_host(worker), WORKER_PORT);
    if net::speaks_connect(worker) {
        return WorkerLink::Connect(ConnectClient::new(&authority, net::dialer(), None));
    }
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .expect("valid uri")
        .connect_timeout(Duration::from_secs(1))
        .timeout(WORKER_CALL_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true);
    WorkerLink::Grpc(WorkerServiceClient::new(net::channel(endpoint)))
}

fn run_request(task_id: &str, task: &CtlTask, attempt_id: i32) -> RunTaskRequest {
    RunTaskRequest {
        job_id: task.job_id.clone(),
        task_id: task_id.to_string(),
        task_index: task.plan.index,
        num_tasks: task.num_tasks,
        entrypoint: Some(proto::Entrypoint {
            kind: Some(proto::entrypoint::Kind::Command(proto::CommandEntrypoint {
                argv: task.plan.behaviour.to_argv(),
            })),
        }),
        timeout_seconds: task.plan.timeout_seconds,
        ports: task.plan.ports.clone(),
        attempt_id,
        ..Default::default()
    }
}

/// When the planned kill of a task is due, if it is.
fn kill_due_ms(shared: &Shared, task_id: &str, task: &CtlTask) -> Option<(u64, i32)> {
    let (plan, term) = task.plan.kill?;
    let at = match plan {
        KillPlan::After(ms) => task.first_ack_ms? + ms,
        KillPlan::RacingExit { offset_ms } => {
            let (attempt_id, current) = task.current();
            let key = iris_worker::core::AttemptKey {
                task_id: iris_worker::core::TaskId::new(task_id).ok()?,
                attempt_id,
            };
            let machine = shared.machine(current.worker);
            let c = machine.containers.get(&key)?;
            let exit = (c.started_ms + c.behaviour.run_ms?) as i64 + offset_ms;
            exit.max(0) as u64
        }
    };
    Some((at, term))
}

/// What the dispatcher does now. Updates the database as if each action succeeds at once;
/// failures are put right when their answers come back.
fn plan_actions(shared: &Shared, db: &mut Db, now: u64, busy: &BTreeSet<String>) -> Vec<Action> {
    let mut actions = Vec::new();
    for job in &shared.plan.jobs {
        if job.submit_at_ms <= now && db.submitted.insert(job.job_id.clone()) {
            for t in &job.tasks {
                let mut task = CtlTask {
                    job_id: job.job_id.clone(),
                    num_tasks: job.tasks.len() as i32,
                    plan: t.clone(),
                    attempts: BTreeMap::new(),
                    first_ack_ms: None,
                    kill_sent_ms: None,
                    duplicated: false,
                    superseded: false,
                };
                task.dispatch(0, t.worker);
                db.tasks.insert(format!("{}/{}", job.job_id, t.index), task);
            }
        }
    }
    for (task_id, task) in db.tasks.iter_mut() {
        if busy.contains(task_id) {
            continue;
        }
        if let Some(action) = next_action(shared, task_id, task, now) {
            actions.push(action);
        }
    }
    if let Some(from) = db.audit_from_ms
        && now >= from
    {
        for worker in 0..shared.plan.shape.workers {
            actions.push(Action::Audit { worker });
        }
    }
    actions
}

fn next_action(shared: &Shared, task_id: &str, task: &mut CtlTask, now: u64) -> Option<Action> {
    let workers = shared.plan.shape.workers;
    let (attempt_id, current) = task.current();
    let (worker, acked, terminal, next_send) = (
        current.worker,
        current.acked,
        current.terminal,
        current.next_send_ms,
    );
    let run = |duplicate| Action::Run {
        task_id: task_id.to_string(),
        attempt_id,
        duplicate,
    };
    if terminal.is_some() {
        if task.wants_retry() {
            let next = if terminal == Some(TaskState::WorkerFailed) {
                (worker + 1) % workers
            } else {
                worker
            };
            task.dispatch(attempt_id + 1, next);
            shared.event(format!(
                "ctl retry {task_id}#{} on {}",
                attempt_id + 1,
                worker_host(next)
            ));
        }
        return None;
    }
    // A reconcile-era worker gets its runs and stops in its desired set (`reconcile::desired`).
    let reconcile = net::speaks_reconcile(worker);
    if !acked {
        return (now >= next_send && !reconcile).then(|| run(false));
    }
    if let Some((due, term_timeout_ms)) = kill_due_ms(shared, task_id, task)
        && now >= due
        && task
            .kill_sent_ms
            .is_none_or(|sent| now >= sent + KILL_RESEND_MS)
    {
        task.kill_sent_ms = Some(now);
        if reconcile {
            shared.event(format!("ctl stop {task_id} (desired as stop from now on)"));
            return None;
        }
        return Some(Action::Kill {
            task_id: task_id.to_string(),
            term_timeout_ms,
        });
    }
    let since_ack = now.saturating_sub(task.first_ack_ms.unwrap_or(now));
    if let Some(after) = task.plan.supersede_after_ms
        && since_ack >= after
        && !task.superseded
        && task.kill_sent_ms.is_none()
    {
        task.superseded = true;
        task.dispatch(attempt_id + 1, worker);
        shared.event(format!("ctl supersede {task_id}#{}", attempt_id + 1));
        return None;
    }
    if let Some(after) = task.plan.duplicate_after_ms
        && since_ack >= after
        && !task.duplicated
        && !reconcile
    {
        task.duplicated = true;
        return Some(run(true));
    }
    None
}

/// Calls in flight, by task (one at a time per task) or `audit-N`.
type Busy = Arc<Mutex<BTreeSet<String>>>;

/// Makes the call an action stands for and records its answer.
async fn execute(shared: Arc<Shared>, clients: Vec<WorkerLink>, action: Action) {
    match action {
        Action::Run {
            task_id,
            attempt_id,
            duplicate,
        } => {
            let (worker, request) = {
                let db = lock(&shared.db);
                let task = &db.tasks[&task_id];
                (
                    task.attempts[&attempt_id].worker,
                    run_request(&task_id, task, attempt_id),
                )
            };
            let outcome = clients[worker].run_task(request).await;
            on_run_answer(&shared, &task_id, attempt_id, duplicate, outcome);
        }
        Action::Kill {
            task_id,
            term_timeout_ms,
        } => {
            let worker = lock(&shared.db).tasks[&task_id].current().1.worker;
            let request = KillTaskRequest {
                task_id: task_id.clone(),
                term_timeout_ms,
            };
            let outcome = clients[worker].kill_task(request).await;
            on_kill_answer(&shared, &task_id, outcome);
        }
        Action::Audit { worker } => {
            let outcome = clients[worker].list_tasks().await;
            if let Ok(listing) = outcome {
                let listing = listing
                    .into_iter()
                    .map(|t| {
                        let state = TaskState::from_proto(t.state).unwrap_or(TaskState::Pending);
                        (t.task_id, (t.current_attempt_id, state))
                    })
                    .collect();
                lock(&shared.db)
                    .audits
                    .insert(worker, (shared.now_ms(), listing));
            }
        }
    }
}

fn on_run_answer(
    shared: &Shared,
    task_id: &str,
    attempt_id: i32,
    duplicate: bool,
    outcome: Result<(), Status>,
) {
    let now = shared.now_ms();
    let verdict = match &outcome {
        Ok(()) => "ok".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    shared.event(format!(
        "ctl run {task_id}#{attempt_id}{} -> {verdict}",
        if duplicate { " (duplicate)" } else { "" }
    ));
    let mut db = lock(&shared.db);
    let task = db.tasks.get_mut(task_id).expect("dispatched");
    match outcome {
        Ok(()) => {
            task.first_ack_ms.get_or_insert(now);
            if let Some(a) = task.attempts.get_mut(&attempt_id) {
                a.acked = true;
            }
        }
        // A duplicate of a superseded attempt is refused as stale, as it should be.
        Err(s) if duplicate => {
            if s.code() == Code::InvalidArgument {
                drop(db);
                shared.violation(format!(
                    "{task_id}#{attempt_id}: duplicate refused: {}",
                    s.message()
                ));
            }
        }
        // The answer to a RunTask sent before the attempt's terminal report arrived: the worker
        // finished it (and retention may have removed it) and must not run it again.
        Err(s)
            if s.code() == Code::FailedPrecondition
                && s.message().contains("already completed")
                && task
                    .attempts
                    .get(&attempt_id)
                    .is_some_and(|a| a.terminal.is_some()) => {}
        Err(s) => match s.code() {
            Code::InvalidArgument | Code::FailedPrecondition => {
                drop(db);
                shared.violation(format!(
                    "{task_id}#{attempt_id}: RunTask refused: {:?} {}",
                    s.code(),
                    s.message()
                ));
            }
            _ => {
                if let Some(a) = task.attempts.get_mut(&attempt_id) {
                    a.next_send_ms = now + 500;
                }
            }
        },
    }
}

fn on_kill_answer(shared: &Shared, task_id: &str, outcome: Result<(), Status>) {
    let verdict = match &outcome {
        Ok(()) => "ok".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    shared.event(format!("ctl kill {task_id} -> {verdict}"));
    match outcome {
        Ok(()) => {}
        Err(s) if s.code() == Code::FailedPrecondition => {}
        Err(s) if s.code() == Code::NotFound => {
            shared.violation(format!(
                "{task_id}: the worker lost a task it accepted: {}",
                s.message()
            ));
        }
        // Not delivered: send it again soon.
        Err(_) => {
            let now = shared.now_ms();
            if let Some(task) = lock(&shared.db).tasks.get_mut(task_id) {
                task.kill_sent_ms = Some((now + 1_000).saturating_sub(KILL_RESEND_MS));
            }
        }
    }
}

async fn dispatcher(shared: Arc<Shared>) {
    let clients: Vec<_> = (0..shared.plan.shape.workers).map(worker_client).collect();
    let busy: Busy = Arc::default();
    let mut next_reconcile_ms = 0;
    loop {
        let now = shared.now_ms();
        if now >= next_reconcile_ms {
            next_reconcile_ms = now + reconcile::TICK_MS;
            for worker in (0..shared.plan.shape.workers).filter(|w| net::speaks_reconcile(*w)) {
                let tag = format!("reconcile-{worker}");
                if !lock(&busy).insert(tag.clone()) {
                    continue;
                }
                let (shared, busy) = (shared.clone(), busy.clone());
                tokio::spawn(async move {
                    reconcile::tick(shared, worker).await;
                    lock(&busy).remove(&tag);
                });
            }
        }
        let actions = {
            let busy_now = lock(&busy).clone();
            let mut db = lock(&shared.db);
            plan_actions(&shared, &mut db, now, &busy_now)
        };
        for action in actions {
            let tag = match &action {
                Action::Run { task_id, .. } | Action::Kill { task_id, .. } => task_id.clone(),
                Action::Audit { worker } => format!("audit-{worker}"),
            };
            if !lock(&busy).insert(tag.clone()) {
                continue;
            }
            let (shared, clients, busy) = (shared.clone(), clients.clone(), busy.clone());
            tokio::spawn(async move {
                execute(shared, clients, action).await;
                lock(&busy).remove(&tag);
            });
        }
        tokio::time::sleep(TICK).await;
    }
}

/// The controller host's software: the service and the dispatcher.
pub async fn host(shared: Arc<Shared>) -> Result<(), Box<dyn std::error::Error>> {
    shared.event("controller up");
    // A Reconcile answer in flight died with the previous controller, if there was one.
    let reconciled = (0..shared.plan.shape.workers).filter(|w| net::speaks_reconcile(*w));
    lock(&shared.db).reconcile_missed.extend(reconciled);
    tokio::spawn(dispatcher(shared.clone()));
    // Both protocols on one port: even workers report over Connect, odd ones over gRPC.
    let service = Arc::new(Service { shared });
    let connect = reconcile::router(service.clone());
    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(FrontLayer::new(connect))
        .add_service(ControllerServiceServer::from_arc(service))
        .serve_with_incoming(net::incoming(CONTROLLER_PORT).await?)
        .await?;
    Ok(())
}
