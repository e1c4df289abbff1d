//! `WorkerService`: the RPC face of the worker, one implementation behind gRPC (tonic) and
//! Connect (`shell::connect::server` calls these same methods). Thin: it validates input (a bad
//! request gets INVALID_ARGUMENT naming the field and changes nothing), asks the driver, and maps
//! typed errors to status codes. Log reads go to the log store directly, never through the driver.

use tonic::{Request, Response, Status};

use crate::core::{KillError, LogFilter, SubmitError, TaskId, TaskSpec};
use crate::proto;
// The 2026-06 messages of ExecInContainer, GetProcessStatus and ProfileTask.
use crate::proto::v2026_06::iris::cluster::worker as exec_wire;
use crate::proto::v2026_06::iris::job as job_wire;
use crate::proto::worker::{
    FetchTaskLogsRequest, FetchTaskLogsResponse, GetTaskStatusRequest, HealthResponse,
    KillTaskRequest, ListTasksRequest, ListTasksResponse, RunTaskRequest, RunTaskResponse,
};
use crate::shell::connect::server::Protocol;
use crate::shell::driver::{Command, DriverGone, DriverHandle, SubmitRefusal};
use crate::shell::logs::store::LogStore;
use crate::shell::metrics::Metrics;
use crate::shell::stats::tables::StatsTables;
use std::sync::Arc;

pub struct WorkerService {
    driver: DriverHandle,
    logs: LogStore,
    metrics: Arc<Metrics>,
    /// Where profiles taken on demand are kept (`iris.profile`), when a writer runs.
    stats: StatsTables,
}

impl WorkerService {
    pub fn new(
        driver: DriverHandle,
        logs: LogStore,
        metrics: Arc<Metrics>,
        stats: StatsTables,
    ) -> WorkerService {
        WorkerService {
            driver,
            logs,
            metrics,
            stats,
        }
    }
}

impl WorkerService {
    /// `/system/process` (the controller's `/system/worker/<id>`): the worker itself. It is not a
    /// Python process, so py-spy and memray have nothing to read; a threads profile is the
    /// worker's threads with their states (`process_status::thread_dump`), kept in
    /// `iris.profile` under `/system/worker/<id>` as Iris keeps its worker's.
    fn profile_self(
        &self,
        request: &job_wire::ProfileTaskRequest,
    ) -> job_wire::ProfileTaskResponse {
        use crate::shell::profile::{self, Profile};
        use job_wire::profile_type::Profiler;
        let wanted = request
            .profile_type
            .as_ref()
            .and_then(|t| t.profiler.as_ref());
        let Some(Profiler::Threads(t)) = wanted else {
            return job_wire::ProfileTaskResponse {
                error: "the worker is not a Python process: it answers threads profiles of \
                        itself; CPU and memory profiles are taken of its tasks (its own usage is \
                        in GetProcessStatus and /metrics)"
                    .into(),
                ..Default::default()
            };
        };
        let data = crate::shell::process_status::thread_dump().into_bytes();
        if let Some(vm_id) = self.stats.vm_id() {
            let source = format!("/system/worker/{vm_id}");
            let row = profile::Row {
                source: &source,
                attempt_id: None,
                vm_id,
                trigger: profile::ON_DEMAND,
            };
            let locals = Profile::Threads { locals: t.locals };
            self.stats.profiles.push(row.of(&locals, data.clone()));
        }
        job_wire::ProfileTaskResponse {
            profile_data: data,
            error: String::new(),
        }
    }
}

impl From<DriverGone> for Status {
    fn from(e: DriverGone) -> Status {
        Status::unavailable(e.to_string())
    }
}

fn task_id(raw: &str) -> Result<TaskId, Status> {
    TaskId::new(raw).map_err(|e| Status::invalid_argument(format!("task_id {e}")))
}

fn submit_status(refusal: SubmitRefusal) -> Status {
    match refusal {
        SubmitRefusal::Core(
            e @ (SubmitError::StaleAttempt { .. } | SubmitError::AlreadyCompleted { .. }),
        ) => Status::failed_precondition(e.to_string()),
        SubmitRefusal::Core(
            e @ (SubmitError::PortsExhausted { .. } | SubmitError::TooManyTasks { .. }),
        ) => Status::resource_exhausted(e.to_string()),
        SubmitRefusal::Core(e @ SubmitError::Evacuating { .. }) => {
            Status::unavailable(e.to_string())
        }
        SubmitRefusal::ShuttingDown => Status::unavailable(refusal.to_string()),
    }
}

/// The methods Iris 2026-06's controller proxies to a worker for its CLI and dashboard, in that
/// era's messages (the task era has none of them).
impl WorkerService {
    /// `ExecInContainer` (Iris 2026-06, proxied by its controller for `iris task exec`): a
    /// command in a running task, answered as Iris's worker answers it (a task that is not
    /// running, or a command that cannot run, is the answer's `error`, not a status).
    pub async fn exec_in_container(
        &self,
        request: Request<exec_wire::ExecInContainerRequest>,
    ) -> Result<Response<exec_wire::ExecInContainerResponse>, Status> {
        let request = request.into_inner();
        if request.command.is_empty() || request.command[0].is_empty() {
            return Err(Status::invalid_argument("command is required"));
        }
        let task_id = task_id(request.task_id.trim_start_matches('/'))?;
        let done = self
            .driver
            .ask(|reply| Command::Exec {
                task_id,
                command: request.command,
                timeout: crate::shell::runtime::exec::timeout_of(request.timeout_seconds),
                reply,
            })
            .await?;
        Ok(Response::new(match done {
            Ok(out) => exec_wire::ExecInContainerResponse {
                exit_code: out.exit_code,
                stdout: out.stdout,
                stderr: out.stderr,
                error: String::new(),
            },
            Err(error) => exec_wire::ExecInContainerResponse {
                error,
                ..Default::default()
            },
        }))
    }

    /// `GetProcessStatus` (Iris 2026-06, proxied by its controller for `iris process status
    /// --target /system/worker/<id>`): this process, as Iris's worker answers (no log lines:
    /// those are in the log service).
    pub async fn get_process_status(
        &self,
        _request: Request<job_wire::GetProcessStatusRequest>,
    ) -> Result<Response<job_wire::GetProcessStatusResponse>, Status> {
        let health = self.driver.ask(|reply| Command::Health { reply }).await?;
        let info = crate::shell::process_status::process_info(health.uptime);
        Ok(Response::new(job_wire::GetProcessStatusResponse {
            process_info: Some(info),
        }))
    }

    /// `ProfileTask` (Iris 2026-06, proxied by its controller for `iris process profile
    /// --target /<job>/<n>`): py-spy inside the running task (`profile.rs`); a failure is the
    /// answer's `error`, as Iris's worker answers.
    pub async fn profile_task(
        &self,
        request: Request<job_wire::ProfileTaskRequest>,
    ) -> Result<Response<job_wire::ProfileTaskResponse>, Status> {
        use crate::shell::profile::{self, Profile};
        use job_wire::profile_type::Profiler;
        let request = request.into_inner();
        let refuse = |error: String| {
            Ok(Response::new(job_wire::ProfileTaskResponse {
                error,
                ..Default::default()
            }))
        };
        if request.target == profile::THIS_PROCESS {
            return Ok(Response::new(self.profile_self(&request)));
        }
        let Some(task) = profile::task_of(&request.target) else {
            return refuse(format!(
                "target {:?}: a worker profiles its tasks (/<job>/<n>) and itself ({})",
                request.target,
                profile::THIS_PROCESS
            ));
        };
        let seconds = match request.duration_seconds {
            s if s > 0 => s as u32,
            _ => profile::DEFAULT_SECONDS,
        };
        let wanted = match request.profile_type.and_then(|t| t.profiler) {
            Some(Profiler::Threads(t)) => Profile::Threads { locals: t.locals },
            Some(Profiler::Cpu(c)) => Profile::Cpu {
                seconds,
                rate_hz: match c.rate_hz {
                    r if r > 0 => r as u32,
                    _ => profile::DEFAULT_RATE_HZ,
                },
                format: profile::cpu_format(c.format),
            },
            Some(Profiler::Memory(m)) => match profile::memory_reporter(m.format) {
                Some(reporter) => Profile::Memory {
                    seconds,
                    reporter,
                    leaks: m.leaks,
                },
                None => {
                    return refuse(
                        "profile_type.memory.format RAW: a raw memray trace is binary; ask for flamegraph, table or stats".into(),
                    );
                }
            },
            None => return Err(Status::invalid_argument("profile_type is required")),
        };
        let task_id = task_id(task)?;
        let attempt = self
            .driver
            .ask(|reply| Command::CurrentAttempt {
                task_id: task_id.clone(),
                reply,
            })
            .await?;
        let taken = profile::capture(&self.driver, task_id, &wanted).await?;
        if let (Ok(data), Some(vm_id)) = (&taken, self.stats.vm_id()) {
            let source = request.target.split(':').next().unwrap_or_default();
            let attempt_id = attempt.map(|a| i64::from(a.attempt_id));
            let row = profile::Row {
                source,
                attempt_id,
                vm_id,
                trigger: profile::ON_DEMAND,
            };
            self.stats.profiles.push(row.of(&wanted, data.clone()));
        }
        Ok(Response::new(match taken {
            Ok(profile_data) => job_wire::ProfileTaskResponse {
                profile_data,
                error: String::new(),
            },
            Err(error) => job_wire::ProfileTaskResponse {
                error,
                ..Default::default()
            },
        }))
    }
}

fn kill_status(e: KillError) -> Status {
    match e {
        KillError::NotFound(_) => Status::not_found(e.to_string()),
        KillError::AlreadyCompleted { .. } => Status::failed_precondition(e.to_string()),
        KillError::NegativeTermTimeout => Status::invalid_argument(e.to_string()),
    }
}

#[tonic::async_trait]
impl proto::worker_service_server::WorkerService for WorkerService {
    async fn run_task(
        &self,
        request: Request<RunTaskRequest>,
    ) -> Result<Response<RunTaskResponse>, Status> {
        let _timer = self
            .metrics
            .rpc_timer("RunTask", Protocol::of(&request).label());
        let request = request.into_inner();
        let spec = TaskSpec::from_request(&request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let task_id = request.task_id.clone();
        let state = self
            .driver
            .ask(|reply| Command::Submit {
                spec: Box::new(spec),
                reply,
            })
            .await?
            .map_err(submit_status)?;
        Ok(Response::new(RunTaskResponse {
            task_id,
            state: state.to_proto() as i32,
        }))
    }

    async fn get_task_status(
        &self,
        request: Request<GetTaskStatusRequest>,
    ) -> Result<Response<proto::TaskStatus>, Status> {
        let _timer = self
            .metrics
            .rpc_timer("GetTaskStatus", Protocol::of(&request).label());
        let task_id = task_id(&request.get_ref().task_id)?;
        let status = self
            .driver
            .ask(|reply| Command::Status {
                task_id: task_id.clone(),
                reply,
            })
            .await?
            .ok_or_else(|| Status::not_found(format!("task {task_id} not found")))?;
        Ok(Response::new(status))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let _timer = self
            .metrics
            .rpc_timer("ListTasks", Protocol::of(&request).label());
        let tasks = self.driver.ask(|reply| Command::List { reply }).await?;
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn fetch_task_logs(
        &self,
        request: Request<FetchTaskLogsRequest>,
    ) -> Result<Response<FetchTaskLogsResponse>, Status> {
        let _timer = self
            .metrics
            .rpc_timer("FetchTaskLogs", Protocol::of(&request).label());
        let request = request.into_inner();
        let task_id = task_id(&request.task_id)?;
        let filter = LogFilter::from_proto(request.filter.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let attempt = self
            .driver
            .ask(|reply| Command::CurrentAttempt {
                task_id: task_id.clone(),
                reply,
            })
            .await?
            .ok_or_else(|| Status::not_found(format!("task {task_id} not found")))?;
        let logs = self.logs.clone();
        let lines = tokio::task::spawn_blocking(move || logs.fetch(&attempt, &filter))
            .await
            .map_err(|e| Status::internal(format!("log reader failed: {e}")))?
            .map_err(|e| Status::internal(format!("reading logs: {e}")))?;
        Ok(Response::new(FetchTaskLogsResponse {
            logs: lines.iter().map(|l| l.to_proto()).collect(),
        }))
    }

    async fn kill_task(
        &self,
        request: Request<KillTaskRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        let _timer = self
            .metrics
            .rpc_timer("KillTask", Protocol::of(&request).label());
        let request = request.into_inner();
        let task_id = task_id(&request.task_id)?;
        self.driver
            .ask(|reply| Command::Kill {
                task_id,
                term_timeout_ms: request.term_timeout_ms.into(),
                reply,
            })
            .await?
            .map_err(kill_status)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn health_check(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<HealthResponse>, Status> {
        let _timer = self
            .metrics
            .rpc_timer("HealthCheck", Protocol::of(&request).label());
        let health = self.driver.ask(|reply| Command::Health { reply }).await?;
        Ok(Response::new(HealthResponse {
            healthy: true,
            uptime_ms: health.uptime.as_millis() as i64,
            running_tasks: health.running_tasks as i32,
        }))
    }
}
