//! The pipeline of one attempt: Waiting -> Preparing (PENDING) -> FetchingBundle -> Building ->
//! Starting (BUILDING) -> Running (RUNNING) -> Done (terminal), and the stops that cut it short.
//! Every state change goes through `set_state` or `finish`, which assert the lifecycle.

use std::collections::BTreeMap;

use super::attempt::{Attempt, Outcome, Phase, Running, StopReason, StopRequest, Stopping, Told};
use super::config::KILL_REPEAT_MS;
use super::effect::{BuildSpec, BundleSource, ContainerSpec, Effect, JournalEntry, Signal};
use super::env::{EnvContext, RuntimeFlavour, build_iris_env};
use super::event::{Event, ExitStatus};
use super::hostpaths;
use super::ids::{AttemptKey, TaskId};
use super::logs::LogSource;
use super::planted::PlantedBug;
use super::ports::PortsExhausted;
use super::spec::{Entrypoint, TaskSpec};
use super::state::{TaskState, is_legal_transition};
use super::task::{BuildMetrics, ResourceUsage, Task};
use super::timers::Timer;
use super::worker::{SubmitError, WorkerCore};

/// The file a callable entrypoint is written to, in the workdir.
pub const CALLABLE_FILE: &str = "_iris_callable.pkl";

/// Runs a cloudpickled `(fn, args, kwargs)` from the workdir; the worker never unpickles it.
pub const CALLABLE_THUNK: &str = "import cloudpickle\n\
with open('_iris_callable.pkl', 'rb') as f:\n    fn, args, kwargs = cloudpickle.load(f)\n\
fn(*args, **kwargs)\n";

impl WorkerCore {
    pub(crate) fn accept(&mut self, spec: TaskSpec) -> Result<TaskState, SubmitError> {
        let key = AttemptKey {
            task_id: spec.task_id.clone(),
            attempt_id: spec.attempt_id,
        };
        let ports = self
            .allocate_ports(&key, &spec.port_names)
            .map_err(|source| SubmitError::PortsExhausted {
                task_id: spec.task_id.clone(),
                source,
            })?;
        let older_live: Vec<AttemptKey> = self
            .tasks
            .get(&spec.task_id)
            .into_iter()
            .flatten()
            .filter(|a| !a.task.is_finished())
            .map(|a| a.task.attempt_key())
            .collect();
        let attempt = self.new_attempt(spec, ports, older_live.last());
        // The journal knows the attempt before any effect of it (or of its supersession) runs.
        self.effects
            .push_back(Effect::Journal(JournalEntry::Accepted {
                spec: Box::new(attempt.spec.clone()),
                submitted_at_ms: attempt.task.submitted_at_ms,
                ports: attempt.task.ports.clone(),
            }));
        self.push_attempt(attempt);
        // Every older attempt still alive is stopped; the new one begins once none is left.
        for old in &older_live {
            let term_ms = self.config.default_term_timeout_ms;
            self.request_stop(old, StopReason::Superseded(key.attempt_id), term_ms);
        }
        self.begin_successor(&key.task_id);
        Ok(self.attempt(&key).expect("just added").task.state)
    }

    fn allocate_ports(
        &mut self,
        key: &AttemptKey,
        names: &[String],
    ) -> Result<BTreeMap<String, u16>, PortsExhausted> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let numbers = self.ports.allocate(key, names.len())?;
        Ok(names.iter().cloned().zip(numbers).collect())
    }

    pub(crate) fn push_attempt(&mut self, attempt: Attempt) {
        let task_id = attempt.task.task_id.clone();
        let key = attempt.task.attempt_key();
        self.tasks.entry(task_id.clone()).or_default().push(attempt);
        self.index_uid(&key);
        self.refresh_settled(&task_id);
    }

    pub(crate) fn new_attempt(
        &self,
        spec: TaskSpec,
        ports: BTreeMap<String, u16>,
        previous: Option<&AttemptKey>,
    ) -> Attempt {
        let pending_reason = match previous {
            Some(old) => format!("waiting for attempt {} to stop", old.attempt_id),
            None => String::new(),
        };
        let task = Task {
            task_id: spec.task_id.clone(),
            job_id: spec.job_id.clone(),
            task_index: spec.task_index,
            num_tasks: spec.num_tasks,
            attempt_id: spec.attempt_id,
            state: TaskState::Pending,
            status_message: String::new(),
            pending_reason,
            exit_code: None,
            exit_signal: None,
            oom_killed: false,
            error: None,
            submitted_at_ms: self.now_ms,
            started_at_ms: None,
            finished_at_ms: None,
            ports,
            resource_usage: ResourceUsage::default(),
            build_metrics: None,
        };
        Attempt {
            task,
            spec,
            phase: Phase::Waiting,
            start_try: 0,
            image: None,
            container_started: false,
            told: Told::default(),
        }
    }

    /// Starts the pipeline of a Waiting attempt.
    fn begin(&mut self, key: &AttemptKey) {
        let attempt = self.attempt_mut(key).expect("exists");
        debug_assert_eq!(attempt.phase, Phase::Waiting);
        attempt.enter(Phase::Preparing);
        attempt.task.pending_reason.clear();
        let mut files = match &attempt.spec.entrypoint {
            Entrypoint::Callable(bytes) => vec![(CALLABLE_FILE.to_string(), bytes.clone())],
            Entrypoint::Command(_) => Vec::new(),
        };
        files.extend(attempt.spec.era.workdir_files().iter().cloned());
        self.effects.push_back(Effect::PrepareWorkdir {
            attempt: key.clone(),
            workdir: key.workdir(),
            files,
        });
    }

    /// Once every older attempt of a task is over, its Waiting newest attempt may begin.
    fn begin_successor(&mut self, task_id: &TaskId) {
        let Some(attempts) = self.tasks.get(task_id) else {
            return;
        };
        let (newest, older) = attempts.split_last().expect("a task has an attempt");
        let older_live = older.iter().any(|a| !a.task.is_finished());
        if newest.phase == Phase::Waiting && !older_live {
            let key = newest.task.attempt_key();
            self.begin(&key);
        }
    }

    pub(crate) fn on_runtime_event(&mut self, event: Event) {
        match event {
            Event::WorkdirReady { attempt } => self.on_workdir_ready(&attempt),
            Event::WorkdirFailed { attempt, error } => self.fail_setup(
                &attempt,
                Phase::Preparing,
                TaskState::WorkerFailed,
                format!("Workdir setup failed: {error}"),
            ),
            Event::BundleReady { attempt } => {
                if self.phase_is(&attempt, Phase::FetchingBundle) {
                    self.build_image(&attempt);
                }
            }
            Event::BundleFailed { attempt, error } => self.fail_setup(
                &attempt,
                Phase::FetchingBundle,
                TaskState::Failed,
                format!("Bundle fetch failed: {error}"),
            ),
            Event::BuildStarted { attempt, image_tag } => {
                self.on_build_started(&attempt, image_tag)
            }
            Event::BuildFinished {
                attempt,
                image,
                from_cache,
            } => self.on_build_finished(&attempt, image, from_cache),
            Event::BuildFailed {
                attempt,
                error,
                machine,
            } => self.fail_setup(
                &attempt,
                Phase::Building,
                match machine {
                    true => TaskState::WorkerFailed,
                    false => TaskState::Failed,
                },
                format!("Build failed: {error}"),
            ),
            Event::ContainerStarted { attempt } => self.on_container_started(&attempt),
            Event::StartFailed {
                attempt,
                error,
                port_conflict,
            } => self.on_start_failed(&attempt, error, port_conflict),
            Event::Exited { attempt, status } => self.on_exited(&attempt, status),
            Event::Stats { attempt, usage } => self.on_stats(&attempt, usage),
            Event::RuntimeLost { attempt, error } => self.on_runtime_lost(&attempt, error),
            Event::ContainerRemoved { attempt } => self.on_container_removed(&attempt),
            Event::RegisterAccepted { .. }
            | Event::RegisterFailed { .. }
            | Event::ReportAcked { .. }
            | Event::ReportFailed { .. }
            | Event::DiskUsage { .. } => unreachable!("worker-wide events are handled apart"),
        }
    }

    /// Stale events (for an attempt already past that phase) are ignored. For the set-up
    /// phases, which carry no data.
    fn phase_is(&self, key: &AttemptKey, phase: Phase) -> bool {
        self.attempt(key).is_some_and(|a| a.phase == phase)
    }

    fn is_starting(&self, key: &AttemptKey) -> bool {
        self.attempt(key)
            .is_some_and(|a| matches!(a.phase, Phase::Starting { .. }))
    }

    /// The workdir exists: the attempt enters BUILDING, which covers fetching the bundle and
    /// building (or resolving) the image.
    fn on_workdir_ready(&mut self, key: &AttemptKey) {
        if !self.phase_is(key, Phase::Preparing) {
            return;
        }
        let now = self.now_ms;
        self.set_state(key, TaskState::Building);
        let attempt = self.attempt_mut(key).expect("exists");
        attempt.task.started_at_ms = Some(now);
        match bundle_source(&attempt.spec) {
            Some(source) => {
                attempt.enter(Phase::FetchingBundle);
                self.effects.push_back(Effect::FetchBundle {
                    attempt: key.clone(),
                    source,
                    workdir: key.workdir(),
                });
            }
            None => self.build_image(key),
        }
    }

    fn fail_setup(&mut self, key: &AttemptKey, phase: Phase, state: TaskState, error: String) {
        if !self.phase_is(key, phase) {
            return;
        }
        self.write_log(key, LogSource::Error, error.clone());
        self.finish(key, Outcome::new(state, error));
    }

    fn build_image(&mut self, key: &AttemptKey) {
        let now = self.now_ms;
        let attempt = self.attempt_mut(key).expect("exists");
        attempt.enter(Phase::Building);
        attempt.task.build_metrics = Some(BuildMetrics {
            build_started_ms: now,
            ..BuildMetrics::default()
        });
        let env = &attempt.spec.environment;
        let spec = BuildSpec {
            job_id: attempt.spec.job_id.to_string(),
            workdir: key.workdir(),
            base_image: env.docker_image.clone(),
            workspace: env.workspace.clone(),
            has_bundle: attempt.spec.bundle_path.is_some(),
            pip_packages: env.pip_packages.clone(),
            extras: env.extras.clone(),
            setup_commands: attempt.spec.era.setup_commands().to_vec(),
            env: Vec::new(),
            container_workdir: attempt.spec.era.container_workdir().to_string(),
            resources: attempt.spec.resources.clone(),
        };
        // Setup commands see the task's whole environment (Iris's build container gets it).
        let spec = match spec.setup_commands.is_empty() {
            true => spec,
            false => BuildSpec {
                env: self.env_and_argv(key).0,
                ..spec
            },
        };
        self.effects.push_back(Effect::BuildImage {
            attempt: key.clone(),
            spec,
        });
    }

    fn on_build_started(&mut self, key: &AttemptKey, image_tag: String) {
        if !self.phase_is(key, Phase::Building) {
            return;
        }
        let now = self.now_ms;
        let attempt = self.attempt_mut(key).expect("exists");
        if let Some(metrics) = attempt.task.build_metrics.as_mut() {
            metrics.build_started_ms = now;
            metrics.image_tag = image_tag;
        }
    }

    fn on_build_finished(&mut self, key: &AttemptKey, image: Option<String>, from_cache: bool) {
        if !self.phase_is(key, Phase::Building) {
            return;
        }
        let now = self.now_ms;
        let attempt = self.attempt_mut(key).expect("exists");
        if let Some(metrics) = attempt.task.build_metrics.as_mut() {
            metrics.build_finished_ms = now;
            metrics.from_cache = from_cache;
            if let Some(image) = &image {
                metrics.image_tag = image.clone();
            }
        }
        attempt.image = image;
        self.start_container(key);
    }

    fn start_container(&mut self, key: &AttemptKey) {
        let spec = self.container_spec(key);
        let attempt = self.attempt_mut(key).expect("exists");
        attempt.enter(Phase::Starting { stop: None });
        attempt.start_try += 1;
        if attempt.start_try == 1 {
            let started_at_ms = attempt.task.started_at_ms.expect("set at BUILDING");
            self.effects
                .push_back(Effect::Journal(JournalEntry::Started {
                    attempt: key.clone(),
                    started_at_ms,
                }));
        }
        let attempt = self.attempt(key).expect("exists");
        let spec = ContainerSpec {
            start_try: attempt.start_try,
            ..spec
        };
        self.effects
            .push_back(Effect::StartContainer(Box::new(spec)));
    }

    pub(crate) fn container_spec(&self, key: &AttemptKey) -> ContainerSpec {
        let attempt = self.attempt(key).expect("exists");
        let container_workdir = attempt.spec.era.container_workdir();
        let (env, argv) = self.env_and_argv(key);
        ContainerSpec {
            attempt: key.clone(),
            image: attempt.image.clone(),
            argv,
            env,
            ports: attempt.task.ports.clone(),
            resources: attempt.spec.resources.clone(),
            workdir: key.workdir(),
            container_workdir: container_workdir.to_string(),
            activate_venv: !attempt.spec.era.setup_commands().is_empty(),
            labels: self.labels(&attempt.task),
            start_try: attempt.start_try,
        }
    }

    /// The attempt's environment and argv as its runtime runs them.
    fn env_and_argv(&self, key: &AttemptKey) -> (Vec<(String, String)>, Vec<String>) {
        let attempt = self.attempt(key).expect("exists");
        let config = &self.config;
        let workdir = match config.flavour {
            RuntimeFlavour::Docker => attempt.spec.era.container_workdir().to_string(),
            RuntimeFlavour::Process => format!("{}/{}", config.workdir_root, key.workdir()),
        };
        let ctx = EnvContext {
            flavour: config.flavour,
            worker_id: Some(config.identity.worker_id.as_str()),
            controller_address: config.controller_address.as_deref(),
            advertise_host: &config.advertise_host,
            workdir: &workdir,
            host_network: config.host_network,
            python: &config.task_python,
            cache_root: &config.workdir_root,
            worker_region: config.worker_region.as_deref(),
            task_env: &config.task_env,
        };
        let argv = match &attempt.spec.entrypoint {
            Entrypoint::Command(argv) => argv.clone(),
            Entrypoint::Callable(_) => ["python3", "-u", "-c", CALLABLE_THUNK]
                .map(String::from)
                .to_vec(),
        };
        // Iris's client writes a reconcile-era command for its container layout.
        let map = attempt.spec.era.uses_container_layout();
        let argv = match config.flavour {
            RuntimeFlavour::Process if map => {
                hostpaths::map_argv(&argv, &workdir, &config.workdir_root, &config.task_python)
            }
            _ => argv,
        };
        let env = build_iris_env(&attempt.spec, &attempt.task.ports, &ctx);
        (env, argv)
    }

    fn labels(&self, task: &Task) -> BTreeMap<String, String> {
        [
            ("iris.managed", "true".to_string()),
            ("iris.task_id", task.task_id.to_string()),
            ("iris.attempt_id", task.attempt_id.to_string()),
            ("iris.job_id", task.job_id.to_string()),
            ("iris.worker_id", self.config.identity.worker_id.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn on_container_started(&mut self, key: &AttemptKey) {
        let now = self.now_ms;
        let Some(attempt) = self.attempt_mut(key) else {
            return;
        };
        let Phase::Starting { stop } = &mut attempt.phase else {
            return;
        };
        let stop = stop.take();
        attempt.enter(Phase::Running(Running::default()));
        attempt.container_started = true;
        if let Some(StopRequest {
            reason,
            term_timeout_ms,
        }) = stop
        {
            // Killed while starting: it never shows as RUNNING, it goes straight to stopping.
            self.signal_and_arm_escalation(key, reason, term_timeout_ms);
            return;
        }
        self.set_state(key, TaskState::Running);
        let attempt = self.attempt_mut(key).expect("exists");
        if attempt.spec.timeout_ms > 0 {
            let deadline = now + attempt.spec.timeout_ms;
            attempt.enter(Phase::Running(Running {
                timeout_at: Some(deadline),
                stop: None,
            }));
            self.timers.set(deadline, Timer::TaskTimeout(key.clone()));
        }
        self.report(key);
    }

    fn on_start_failed(&mut self, key: &AttemptKey, error: String, port_conflict: bool) {
        if !self.is_starting(key) {
            return;
        }
        let attempt = self.attempt(key).expect("exists");
        if let Some(reason) = attempt.stop_reason() {
            let outcome = Outcome::of_stop(reason);
            self.finish(key, outcome);
            return;
        }
        if port_conflict && attempt.start_try < self.config.start_tries_max {
            self.retry_with_fresh_ports(key, error);
            return;
        }
        let error = format!("Container start failed: {error}");
        self.write_log(key, LogSource::Error, error.clone());
        self.finish(key, Outcome::new(TaskState::Failed, error));
    }

    fn retry_with_fresh_ports(&mut self, key: &AttemptKey, error: String) {
        let attempt = self.attempt(key).expect("exists");
        let names = attempt.spec.port_names.clone();
        let old: Vec<u16> = attempt.task.ports.values().copied().collect();
        // The fresh ports are taken while the old ones are still held, so the port that
        // conflicted is never handed straight back.
        match self.allocate_ports(key, &names) {
            Ok(ports) => {
                self.ports.release_ports(&old);
                // Journalled before the start: a restart that adopts the container must hold
                // these ports, not the ones it was accepted with (found by sim seed 702116).
                self.effects.push_back(Effect::Journal(JournalEntry::Ports {
                    attempt: key.clone(),
                    ports: ports.clone(),
                }));
                self.attempt_mut(key).expect("exists").task.ports = ports;
                let line = format!("Port conflict ({error}); retrying with fresh ports");
                self.write_log(key, LogSource::Error, line);
                self.start_container(key);
            }
            Err(exhausted) => {
                let error = format!("Container start failed: {error}; {exhausted}");
                self.write_log(key, LogSource::Error, error.clone());
                self.finish(key, Outcome::new(TaskState::Failed, error));
            }
        }
    }

    fn on_exited(&mut self, key: &AttemptKey, status: ExitStatus) {
        let Some(attempt) = self.attempt_mut(key) else {
            return;
        };
        if !matches!(attempt.phase, Phase::Starting { .. } | Phase::Running(_)) {
            return;
        }
        attempt.container_started = true;
        let quote_stderr = attempt.spec.era.quotes_stderr();
        let mut outcome = Outcome::of_exit(attempt.stop_reason(), status);
        if quote_stderr {
            outcome.quote_stderr();
        }
        if let Some(error) = &outcome.error {
            self.write_log(key, LogSource::Error, error.clone());
        }
        self.finish(key, outcome);
    }

    fn on_stats(&mut self, key: &AttemptKey, usage: ResourceUsage) {
        let Some(attempt) = self.attempt_mut(key) else {
            return;
        };
        if !matches!(attempt.phase, Phase::Running(_)) {
            return;
        }
        let peak = attempt
            .task
            .resource_usage
            .memory_peak_mb
            .max(usage.memory_mb)
            .max(usage.memory_peak_mb);
        attempt.task.resource_usage = ResourceUsage {
            memory_peak_mb: peak,
            ..usage
        };
    }

    fn on_runtime_lost(&mut self, key: &AttemptKey, error: String) {
        let Some(attempt) = self.attempt(key) else {
            return;
        };
        if matches!(
            attempt.phase,
            Phase::Done | Phase::Waiting | Phase::Removing(_)
        ) {
            return;
        }
        let container_may_run = attempt.phase.may_have_container();
        let error = format!("Worker failure: {error}");
        self.write_log(key, LogSource::Error, error.clone());
        let outcome = Outcome::new(TaskState::WorkerFailed, error);
        if container_may_run {
            self.remove_then_finish(key, outcome);
        } else {
            self.finish(key, outcome);
        }
    }

    /// Whatever the runtime created may still run: remove it, and end the attempt only once the
    /// runtime confirms it is gone.
    pub(crate) fn remove_then_finish(&mut self, key: &AttemptKey, outcome: Outcome) {
        self.cancel_timers(key);
        let attempt = self.attempt_mut(key).expect("exists");
        attempt.enter(Phase::Removing(outcome));
        attempt.task.status_message = "removing the container".to_string();
        self.effects.push_back(Effect::RemoveContainer {
            attempt: key.clone(),
        });
    }

    fn on_container_removed(&mut self, key: &AttemptKey) {
        let Some(Phase::Removing(outcome)) = self.attempt(key).map(|a| &a.phase) else {
            return;
        };
        let outcome = outcome.clone();
        self.attempt_mut(key).expect("exists").container_started = false;
        self.finish(key, outcome);
    }

    // ---- stopping -------------------------------------------------------------------------

    pub(crate) fn request_stop(&mut self, key: &AttemptKey, reason: StopReason, term_ms: u64) {
        let now = self.now_ms;
        let Some(attempt) = self.attempt_mut(key) else {
            return;
        };
        match &mut attempt.phase {
            Phase::Done | Phase::Removing(_) => {}
            Phase::Waiting => {
                attempt.task.status_message = "stopping".to_string();
                self.finish(key, Outcome::of_stop(&reason));
            }
            Phase::Preparing | Phase::FetchingBundle | Phase::Building => {
                attempt.task.status_message = "stopping".to_string();
                self.effects.push_back(Effect::CancelBuild {
                    attempt: key.clone(),
                });
                self.finish(key, Outcome::of_stop(&reason));
            }
            // The container may be coming up: wait for the runtime's answer, then signal it.
            Phase::Starting { stop: Some(asked) } => {
                asked.term_timeout_ms = asked.term_timeout_ms.min(term_ms);
            }
            Phase::Starting { stop } => {
                *stop = Some(StopRequest {
                    reason,
                    term_timeout_ms: term_ms,
                });
                attempt.task.status_message = "stopping".to_string();
            }
            // SIGKILL repeats on its own: a later kill changes nothing.
            Phase::Running(Running {
                stop: Some(Stopping {
                    sigkilled: true, ..
                }),
                ..
            }) => {}
            // Already stopping: a later kill may only shorten the grace period.
            Phase::Running(Running {
                stop: Some(stopping),
                ..
            }) => {
                let shorter = now + term_ms;
                if shorter < stopping.escalate_at {
                    let old = std::mem::replace(&mut stopping.escalate_at, shorter);
                    self.timers.cancel(old, Timer::Escalate(key.clone()));
                    self.timers.set(shorter, Timer::Escalate(key.clone()));
                }
            }
            Phase::Running(Running { stop: None, .. }) => {
                attempt.task.status_message = "stopping".to_string();
                self.signal_and_arm_escalation(key, reason, term_ms);
            }
        }
    }

    /// SIGTERM now, SIGKILL at the end of the grace period. The attempt must be Running.
    fn signal_and_arm_escalation(&mut self, key: &AttemptKey, reason: StopReason, term_ms: u64) {
        let deadline = self.now_ms + term_ms;
        let attempt = self.attempt_mut(key).expect("exists");
        let Phase::Running(running) = &mut attempt.phase else {
            unreachable!("only a running container is signalled");
        };
        running.stop = Some(Stopping {
            reason,
            escalate_at: deadline,
            sigkilled: false,
        });
        if self.config.planted(PlantedBug::PortsReleasedAtKill) {
            let attempt = self.attempt(key).expect("exists");
            let ports: Vec<u16> = attempt.task.ports.values().copied().collect();
            self.ports.release_ports(&ports);
        }
        if !self.config.planted(PlantedBug::KillWithoutEscalation) {
            self.timers.set(deadline, Timer::Escalate(key.clone()));
        }
        self.effects.push_back(Effect::SignalContainer {
            attempt: key.clone(),
            signal: Signal::Term,
        });
    }

    pub(crate) fn escalate(&mut self, key: &AttemptKey) {
        let now = self.now_ms;
        let Some(attempt) = self.attempt_mut(key) else {
            return;
        };
        let Phase::Running(Running {
            stop: Some(stopping),
            ..
        }) = &mut attempt.phase
        else {
            return;
        };
        if stopping.escalate_at > now {
            return;
        }
        let again = now + KILL_REPEAT_MS;
        stopping.escalate_at = again;
        stopping.sigkilled = true;
        attempt.task.status_message = "killing (SIGKILL)".to_string();
        self.timers.set(again, Timer::Escalate(key.clone()));
        self.effects.push_back(Effect::SignalContainer {
            attempt: key.clone(),
            signal: Signal::Kill,
        });
    }

    pub(crate) fn on_task_timeout(&mut self, key: &AttemptKey) {
        let now = self.now_ms;
        let Some(attempt) = self.attempt(key) else {
            return;
        };
        let Phase::Running(Running {
            timeout_at: Some(deadline),
            stop: None,
        }) = attempt.phase
        else {
            return;
        };
        if deadline > now {
            return;
        }
        let line = format!(
            "Timeout exceeded: ran longer than {} s",
            attempt.spec.timeout_ms / 1000
        );
        self.write_log(key, LogSource::Error, line);
        let term_ms = self.config.default_term_timeout_ms;
        self.request_stop(key, StopReason::Timeout, term_ms);
    }

    // ---- state changes --------------------------------------------------------------------

    fn set_state(&mut self, key: &AttemptKey, state: TaskState) {
        let task = &mut self.attempt_mut(key).expect("exists").task;
        assert!(
            is_legal_transition(task.state, state),
            "illegal transition {} -> {state} for {key}",
            task.state
        );
        task.state = state;
    }

    /// Ends an attempt: terminal state, container removal, resources freed, report queued, and
    /// the task's next attempt (if one waits) begun.
    pub(crate) fn finish(&mut self, key: &AttemptKey, outcome: Outcome) {
        self.set_state(key, outcome.state);
        self.cancel_timers(key);
        let now = self.now_ms;
        let attempt = self.attempt_mut(key).expect("exists");
        attempt.enter(Phase::Done);
        let task = &mut attempt.task;
        // The runtime's own finish time (an exit that happened while the worker was down),
        // kept within what the worker saw of the attempt.
        let started = task.started_at_ms.unwrap_or(now).min(now);
        task.finished_at_ms = Some(
            outcome
                .exit
                .finished_at_ms
                .map_or(now, |at| at.clamp(started, now)),
        );
        task.error = outcome.error;
        task.exit_code = outcome.exit.code;
        task.exit_signal = outcome.exit.signal;
        task.oom_killed = outcome.exit.oom_killed;
        task.status_message.clear();
        task.pending_reason.clear();
        // A finished attempt keeps what it shows, not what it ran: no payload, no env values.
        attempt.spec.forget_payload();
        let entry = JournalEntry::Finished {
            attempt: key.clone(),
            state: task.state,
            exit: outcome.exit,
            error: task.error.clone(),
            started_at_ms: task.started_at_ms,
            finished_at_ms: task.finished_at_ms.expect("just set"),
        };
        let container = attempt.container_started;
        // Journaled before the report goes out and the container goes away: a restart never
        // reports an attempt the journal thinks is live.
        self.effects.push_back(Effect::Journal(entry));
        if container {
            self.effects.push_back(Effect::RemoveContainer {
                attempt: key.clone(),
            });
        }
        self.ports.release(key);
        self.effects.push_back(Effect::ReleaseResources {
            attempt: key.clone(),
        });
        self.report(key);
        self.refresh_settled(&key.task_id);
        self.begin_successor(&key.task_id);
    }

    /// Cancels the attempt's kill escalation and task timeout, before it leaves Running.
    fn cancel_timers(&mut self, key: &AttemptKey) {
        let attempt = self.attempt(key).expect("exists");
        let Phase::Running(running) = &attempt.phase else {
            return;
        };
        let escalate = running.stop.as_ref().map(|s| s.escalate_at);
        let timers = [
            escalate.map(|d| (d, Timer::Escalate(key.clone()))),
            running
                .timeout_at
                .map(|d| (d, Timer::TaskTimeout(key.clone()))),
        ];
        for (deadline, timer) in timers.into_iter().flatten() {
            self.timers.cancel(deadline, timer);
        }
    }

    pub(crate) fn write_log(&mut self, key: &AttemptKey, source: LogSource, data: String) {
        self.effects.push_back(Effect::WriteLog {
            attempt: key.clone(),
            source,
            data,
        });
    }
}

/// What an attempt fetches into its workdir before building, if anything.
fn bundle_source(spec: &TaskSpec) -> Option<BundleSource> {
    if let Some(path) = &spec.bundle_path {
        return Some(BundleSource::Path(path.clone()));
    }
    let r = spec.era.reconcile()?;
    if r.bundle_id.is_none() && r.workdir_file_refs.is_empty() {
        return None;
    }
    Some(BundleSource::Content {
        bundle: r.bundle_id.clone(),
        files: r.workdir_file_refs.clone(),
    })
}
