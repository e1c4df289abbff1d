//! What the simulated controller does with what workers tell it: the task era's
//! ControllerService (registrations, reports) and `on_report`, which records a report (or a
//! 2026-06 observation made into one) and checks the per-attempt safety invariants. Shared by
//! the dispatcher (`controller.rs`) and the reconcile side (`reconcile.rs`).

use std::sync::Arc;

use iris_worker::core::{TaskState, is_legal_transition, is_task_finished};
use iris_worker::proto;
use iris_worker::proto::controller_service_server::ControllerService;
use tonic::{Request, Response, Status};

use crate::plan::worker_host;
use crate::shared::{Shared, lock};

// ---- ControllerService ---------------------------------------------------------------------

pub(crate) struct Service {
    pub(crate) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl ControllerService for Service {
    async fn register_worker(
        &self,
        request: Request<proto::controller::RegisterWorkerRequest>,
    ) -> Result<Response<proto::controller::RegisterWorkerResponse>, Status> {
        let r = request.into_inner();
        let worker = (0..self.shared.plan.shape.workers).find(|w| worker_host(*w) == r.worker_id);
        let should_reset = worker.is_some_and(|w| lock(&self.shared.db).resets.remove(&w));
        self.shared.event(format!(
            "ctl register {} running={:?} reset={should_reset}",
            r.worker_id, r.running_task_ids
        ));
        Ok(Response::new(proto::controller::RegisterWorkerResponse {
            accepted: true,
            controller_address: String::new(),
            should_reset,
        }))
    }

    async fn report_task_state(
        &self,
        request: Request<proto::controller::ReportTaskStateRequest>,
    ) -> Result<Response<proto::controller::ReportTaskStateResponse>, Status> {
        on_report(&self.shared, &request.into_inner());
        Ok(Response::new(
            proto::controller::ReportTaskStateResponse::default(),
        ))
    }
}

/// Records a report and checks the per-attempt safety invariants against it.
pub(crate) fn on_report(shared: &Shared, r: &proto::controller::ReportTaskStateRequest) {
    let Some(state) = TaskState::from_proto(r.state) else {
        shared.violation(format!("report with unknown state {}", r.state));
        return;
    };
    let key = format!("{}#{}", r.task_id, r.attempt_id);
    shared.event(format!(
        "ctl report {} {key} {state} code={} error={:?}",
        r.worker_id, r.exit_code, r.error
    ));
    let mut db = lock(&shared.db);
    let Some(attempt) = db
        .tasks
        .get_mut(&r.task_id)
        .and_then(|t| t.attempts.get_mut(&r.attempt_id))
    else {
        shared.violation(format!("report for {key}, which was never dispatched"));
        return;
    };
    if r.worker_id != worker_host(attempt.worker) {
        shared.violation(format!(
            "{key} reported by {} but runs on {}",
            r.worker_id,
            worker_host(attempt.worker)
        ));
    }
    if let Some(terminal) = attempt.terminal {
        if terminal != state {
            shared.violation(format!(
                "{key}: terminal {terminal} contradicted by {state}"
            ));
        }
        return;
    }
    if let Some(&last) = attempt.reports.last()
        && last != state
        && !is_legal_transition(last, state)
    {
        shared.violation(format!("{key}: reported {last} then {state}"));
    }
    attempt.reports.push(state);
    if is_task_finished(state) {
        attempt.terminal = Some(state);
        let worker = attempt.worker;
        drop(db);
        let attempt_key = iris_worker::core::AttemptKey {
            task_id: iris_worker::core::TaskId::new(r.task_id.clone()).expect("valid"),
            attempt_id: r.attempt_id,
        };
        if shared
            .machine(worker)
            .containers
            .get(&attempt_key)
            .is_some_and(|c| c.is_running())
        {
            shared.violation(format!(
                "{key} reported {state} while its container still runs"
            ));
        }
    }
}
