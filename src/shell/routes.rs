//! The task era's services as Connect routes (`connect::server` is the transport; the services
//! own their routes): the worker's `WorkerService`, and `ControllerService` for the controllers
//! the simulator and the tests serve.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::post;

use crate::proto::controller_service_server::ControllerService;
use crate::proto::worker_service_server::WorkerService as _;
use crate::shell::auth::RequireToken;
use crate::shell::connect::server::{Served, unary, unknown_method};
use crate::shell::service::WorkerService;

/// `POST /iris.cluster.WorkerService/<Method>` for all six methods.
pub fn worker_router(service: Arc<WorkerService>, token: RequireToken) -> Router {
    Router::new()
        .route("/iris.cluster.WorkerService/{method}", post(worker_call))
        .with_state(Served { service, token })
}

async fn worker_call(
    State(s): State<Served<WorkerService>>,
    Path(method): Path<String>,
    request: Request,
) -> Response {
    let (svc, token) = (&*s.service, &s.token);
    match method.as_str() {
        "RunTask" => unary(request, token, |r| svc.run_task(r)).await,
        "GetTaskStatus" => unary(request, token, |r| svc.get_task_status(r)).await,
        "ListTasks" => unary(request, token, |r| svc.list_tasks(r)).await,
        "FetchTaskLogs" => unary(request, token, |r| svc.fetch_task_logs(r)).await,
        "KillTask" => unary(request, token, |r| svc.kill_task(r)).await,
        "HealthCheck" => unary(request, token, |r| svc.health_check(r)).await,
        // Iris 2026-06's message; the task era has no such method.
        "ExecInContainer" => unary(request, token, |r| svc.exec_in_container(r)).await,
        "GetProcessStatus" => unary(request, token, |r| svc.get_process_status(r)).await,
        "ProfileTask" => unary(request, token, |r| svc.profile_task(r)).await,
        _ => unknown_method("iris.cluster.WorkerService", &method),
    }
}

/// `POST /iris.cluster.ControllerService/<Method>` for the two methods a worker calls, over any
/// `ControllerService` (the simulator's and the tests' controllers serve both protocols).
pub fn controller_router<S: ControllerService>(service: Arc<S>, token: RequireToken) -> Router {
    Router::new()
        .route(
            "/iris.cluster.ControllerService/{method}",
            post(controller_call::<S>),
        )
        .with_state(Served { service, token })
}

async fn controller_call<S: ControllerService>(
    State(s): State<Served<S>>,
    Path(method): Path<String>,
    request: Request,
) -> Response {
    let (svc, token) = (&*s.service, &s.token);
    match method.as_str() {
        "RegisterWorker" => unary(request, token, |r| svc.register_worker(r)).await,
        "ReportTaskState" => unary(request, token, |r| svc.report_task_state(r)).await,
        _ => unknown_method("iris.cluster.ControllerService", &method),
    }
}
