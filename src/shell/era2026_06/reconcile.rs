//! `WorkerService.Reconcile` of the 2026-06 era: the desired set in Iris's wire form becomes the
//! core's `Desired`, the core answers at once, and its observations go back keyed by uid.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tonic::{Request, Response, Status};

use super::health::{HostCpu, health};
use super::spec::task_spec;
use super::stats_writer::WorkerRows;
use crate::core::{Desired, Intent, Observation, TaskState, is_task_finished};
use crate::proto::v2026_06::iris::cluster::worker;
use crate::proto::v2026_06::iris::{job, time};
use axum::extract::State;
use axum::routing::post;

use crate::shell::auth::RequireToken;
use crate::shell::clock::Clock;
use crate::shell::connect::server::{Served, unary};
use crate::shell::driver::{Command, DriverHandle};
use crate::shell::trouble::Troubles;

/// Serves Reconcile; `last_reconcile_ms` (on `clock`) is what the register watchdog reads.
#[derive(Clone)]
pub struct Reconciler {
    pub driver: DriverHandle,
    pub worker_id: String,
    pub cache_dir: PathBuf,
    pub last_reconcile_ms: Arc<AtomicI64>,
    pub clock: Clock,
    /// Read the machine (memory, the cache dir's disk) for the answer's health; off in the
    /// simulator, whose hosts share one real machine (and must replay).
    pub measure_health: bool,
    /// Why the machine must not take work (unhealthy while any).
    pub troubles: Troubles,
    /// This VM's TPU variant, when it has TPUs.
    pub tpu: Option<String>,
    /// The host's CPU time at the last answer (its utilisation is a difference).
    pub cpu: Arc<HostCpu>,
    /// Where each answer's health snapshot goes as an `iris.worker` row (with a log service).
    pub worker_rows: Option<Arc<WorkerRows>>,
}

/// One desired attempt in the core's vocabulary.
pub fn desired(d: &worker::DesiredAttempt) -> Desired {
    use worker::desired_attempt::Intent as Wire;
    let intent = match &d.intent {
        Some(Wire::Run(spec)) => match &spec.request {
            None => Intent::Run(None),
            Some(request) => match task_spec(request, &d.attempt_uid) {
                Ok(spec) => Intent::Run(Some(Box::new(spec))),
                Err(e) => Intent::Invalid(format!("invalid RunTaskRequest: {e}")),
            },
        },
        // Iris's worker takes anything but `run` as a stop.
        Some(Wire::Stop(_)) | None => Intent::Stop,
    };
    Desired {
        attempt_uid: d.attempt_uid.clone(),
        intent,
    }
}

/// A run this machine cannot do is refused at once, FAILED with the reason (the controller
/// placed it on a worker without the device: its attributes were set by hand, or stale).
fn fit(d: Desired, tpu: Option<&str>) -> Desired {
    let Intent::Run(Some(spec)) = &d.intent else {
        return d;
    };
    let Some(asked) = spec.resources.tpu_variant.as_deref() else {
        return d;
    };
    let reason = match tpu {
        None => format!("resources.device asks for a TPU ({asked}) and this worker has none"),
        Some(have) if !asked.is_empty() && asked != "auto" && !asked.eq_ignore_ascii_case(have) => {
            format!("resources.device asks for a TPU {asked} and this worker is a {have}")
        }
        Some(_) => return d,
    };
    Desired {
        attempt_uid: d.attempt_uid,
        intent: Intent::Invalid(reason),
    }
}

fn observation(o: Observation) -> worker::AttemptObservation {
    let state = match o.state {
        None => job::TaskState::Missing as i32,
        // The core's states keep Iris's numbers 1..8.
        Some(s) => s.to_proto() as i32,
    };
    worker::AttemptObservation {
        attempt_uid: o.attempt_uid,
        state,
        exit_code: o.exit_code,
        error: o.error,
        container_id: String::new(),
        finished_at: o.finished_at_ms.map(|ms| time::Timestamp {
            epoch_ms: i64::try_from(ms).unwrap_or(i64::MAX),
        }),
        resource_usage: Some(job::ResourceUsage {
            memory_mb: o.resource_usage.memory_mb,
            disk_mb: o.resource_usage.disk_mb,
            cpu_millicores: o.resource_usage.cpu_millicores,
            memory_peak_mb: o.resource_usage.memory_peak_mb,
            process_count: o.resource_usage.process_count,
        }),
    }
}

impl Reconciler {
    pub async fn reconcile(
        &self,
        request: Request<worker::ReconcileRequest>,
    ) -> Result<Response<worker::ReconcileResponse>, Status> {
        let request = request.into_inner();
        let now = i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX);
        if !request.worker_id.is_empty() && request.worker_id != self.worker_id {
            // Addressed to another worker (a recycled address): change nothing, say who we are.
            tracing::warn!(to = %request.worker_id, "Reconcile for another worker; refused");
            return Ok(Response::new(worker::ReconcileResponse {
                worker_id: self.worker_id.clone(),
                observed: Vec::new(),
                health: Some(self.health(now, 0).await?),
            }));
        }
        self.last_reconcile_ms.store(now, Ordering::Relaxed);
        let tpu = self.tpu.as_deref();
        let desired: Vec<Desired> = request
            .desired
            .iter()
            .map(|d| fit(desired(d), tpu))
            .collect();
        let observed = self
            .driver
            .ask(|reply| Command::Reconcile { desired, reply })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let running = observed
            .iter()
            .filter(|o| o.state == Some(TaskState::Running))
            .count();
        let busy = observed
            .iter()
            .any(|o| o.state.is_some_and(|s| !is_task_finished(s)));
        let health = self.health(now, running).await?;
        if let (Some(rows), Some(snapshot)) = (&self.worker_rows, &health.resources) {
            rows.push(snapshot, busy);
        }
        Ok(Response::new(worker::ReconcileResponse {
            worker_id: self.worker_id.clone(),
            observed: observed.into_iter().map(observation).collect(),
            health: Some(health),
        }))
    }

    async fn health(&self, now: i64, running: usize) -> Result<worker::WorkerHealth, Status> {
        let mut answer = match self.measure_health {
            false => worker::WorkerHealth {
                healthy: Some(true),
                ..Default::default()
            },
            true => {
                let (cache_dir, cpu) = (self.cache_dir.clone(), self.cpu.clone());
                tokio::task::spawn_blocking(move || health(&cache_dir, now, running, &cpu))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
            }
        };
        if let Some(reason) = self.troubles.reason() {
            answer.healthy = Some(false);
            answer.health_error = match answer.health_error.is_empty() {
                true => reason,
                false => format!("{reason}; {}", answer.health_error),
            };
        }
        Ok(answer)
    }
}

/// `POST /iris.cluster.WorkerService/Reconcile`, the 2026-06 era's one call (the other methods
/// of that path answer in the task era's messages).
pub fn reconcile_router(reconciler: Arc<Reconciler>, token: RequireToken) -> axum::Router {
    axum::Router::new()
        .route(super::RECONCILE_PATH, post(reconcile_call))
        .with_state(Served {
            service: reconciler,
            token,
        })
}

async fn reconcile_call(
    State(s): State<Served<Reconciler>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let svc = &*s.service;
    unary(request, &s.token, |r| svc.reconcile(r)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpu_run(variant: &str) -> Desired {
        let request = job::RunTaskRequest {
            task_id: "/u/tpu-job/0".into(),
            num_tasks: 1,
            attempt_id: 0,
            entrypoint: Some(job::RuntimeEntrypoint {
                run_command: Some(job::CommandEntrypoint {
                    argv: vec!["true".into()],
                }),
                ..Default::default()
            }),
            resources: Some(job::ResourceSpecProto {
                device: Some(job::DeviceConfig {
                    device: Some(job::device_config::Device::Tpu(job::TpuDevice {
                        variant: variant.into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = super::super::spec::task_spec(&request, "u1").unwrap();
        Desired {
            attempt_uid: "u1".into(),
            intent: Intent::Run(Some(Box::new(spec))),
        }
    }

    #[test]
    fn a_tpu_task_is_refused_where_there_is_no_such_tpu() {
        let Intent::Invalid(reason) = fit(tpu_run("v5litepod-16"), None).intent else {
            panic!("refused on a worker without TPUs");
        };
        assert!(reason.contains("resources.device") && reason.contains("v5litepod-16"));
        let Intent::Invalid(reason) = fit(tpu_run("v6e-8"), Some("v5litepod-16")).intent else {
            panic!("refused on another variant");
        };
        assert!(
            reason.contains("v6e-8") && reason.contains("v5litepod-16"),
            "{reason}"
        );
        let fits = fit(tpu_run("v5litepod-16"), Some("v5litepod-16"));
        assert!(matches!(fits.intent, Intent::Run(Some(_))));
    }
}
