//! The simulated container runtime, behind the worker's real `Runtime` trait. Containers live in
//! the machine (so they outlive a worker crash and are adopted after it); each call may hang or
//! fail as the seed says; it checks the container-level safety invariants as calls arrive.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use iris_worker::core::{AttemptKey, BuildSpec, ContainerSpec, LogSource, Signal};
use iris_worker::shell::logs::output_mark::{OutputMark, ResumeFilter};
use iris_worker::shell::runtime::{AttemptSink, BuiltImage, Runtime, RuntimeError};

use crate::plan::Behaviour;
use crate::plan::EPOCH_MS;
use crate::rng::{Rng, fnv1a};
use crate::shared::Shared;

/// How often a watcher looks at its container.
const WATCH_INTERVAL: Duration = Duration::from_millis(25);

pub struct SimRuntime {
    shared: Arc<Shared>,
    worker: usize,
    cache_dir: PathBuf,
}

/// What goes wrong with one call, drawn from the seed and the call's identity.
#[derive(Debug, PartialEq, Eq)]
enum CallFault {
    None,
    Fail,
    Infrastructure,
    Hang,
}

impl SimRuntime {
    pub fn new(shared: Arc<Shared>, worker: usize) -> SimRuntime {
        let cache_dir = shared.cache_dirs[worker].clone();
        SimRuntime {
            shared,
            worker,
            cache_dir,
        }
    }

    fn now(&self) -> u64 {
        self.shared.now_ms()
    }

    fn rng(&self, call: &str, attempt: &AttemptKey, detail: u64) -> Rng {
        let id = format!("{call}/{attempt}/{detail}/{}", self.worker);
        Rng::new(self.shared.plan.seed ^ fnv1a(id.as_bytes()))
    }

    fn fault(&self, call: &str, attempt: &AttemptKey, detail: u64, percent: u64) -> CallFault {
        let mut rng = self.rng(call, attempt, detail);
        if !rng.chance(percent) {
            return CallFault::None;
        }
        match rng.range(0, 2) {
            0 => CallFault::Fail,
            1 => CallFault::Infrastructure,
            _ => CallFault::Hang,
        }
    }

    /// An engine that does not answer: the call never returns (the driver's deadline ends it).
    async fn gate(&self) {
        if self.shared.machine(self.worker).engine_hung {
            std::future::pending::<()>().await;
        }
    }

    fn event(&self, what: impl std::fmt::Display) {
        self.shared
            .event(format!("{} {what}", crate::plan::worker_host(self.worker)));
    }

    /// Takes back this machine's containers after a restart: those of a live attempt, running or
    /// exited while the worker was down, are adopted; every other one is removed, as the docker
    /// runtime's survey does.
    pub fn survey(&self, live: &BTreeSet<AttemptKey>) -> BTreeSet<AttemptKey> {
        let now = self.now();
        let mut machine = self.shared.machine(self.worker);
        let keys: Vec<AttemptKey> = machine.containers.keys().cloned().collect();
        let mut adopted = BTreeSet::new();
        for key in keys {
            // As the docker runtime does: a container that exited while the worker was down is
            // adopted too, its exit and output read from the engine.
            if live.contains(&key) {
                adopted.insert(key);
            } else {
                machine.remove(&key, now);
            }
        }
        drop(machine);
        self.event(format!("survey adopted {adopted:?}"));
        adopted
    }

    /// Follows the container: its output into the log (after an adoption, only what the log
    /// lacks, as the docker runtime does), then its exit (or disappearance).
    fn watch(&self, key: AttemptKey, sink: AttemptSink, after: Option<OutputMark>) {
        let shared = self.shared.clone();
        let worker = self.worker;
        tokio::spawn(async move {
            let mut filter = ResumeFilter::new(after);
            let mut taken = 0;
            loop {
                let now = shared.now_ms();
                let seen = shared
                    .machine(worker)
                    .containers
                    .get(&key)
                    .map(|c| (c.state.clone(), c.output(now)));
                let Some((state, output)) = seen else {
                    sink.lost("container removed".to_string());
                    return;
                };
                for (at, line) in output.into_iter().skip(taken) {
                    taken += 1;
                    let at = (EPOCH_MS + at) as i64;
                    if filter.is_new(at) {
                        sink.log_line_at(at, LogSource::Stdout, line.as_bytes());
                    }
                }
                if let crate::machine::ContainerState::Exited { status, .. } = state {
                    sink.exited(status);
                    return;
                }
                tokio::time::sleep(WATCH_INTERVAL).await;
            }
        });
    }

    /// Safety, at the moment a container is created: one per attempt, and no port shared with
    /// another live container of this machine.
    fn check_start(&self, spec: &ContainerSpec, ports: &[u16]) {
        let machine = self.shared.machine(self.worker);
        let mut problems = Vec::new();
        if machine
            .containers
            .get(&spec.attempt)
            .is_some_and(|c| c.is_running())
        {
            problems.push(format!("second live container for {}", spec.attempt));
        } else if machine.created.contains(&spec.attempt) {
            problems.push(format!(
                "{} started a second time (an attempt runs once)",
                spec.attempt
            ));
        }
        for (other, c) in machine.live() {
            for port in ports.iter().filter(|p| c.ports.contains(p)) {
                problems.push(format!(
                    "{} starts on port {port}, held by live {other}",
                    spec.attempt
                ));
            }
        }
        drop(machine);
        for p in problems {
            self.shared.violation(p);
        }
    }
}

#[tonic::async_trait]
impl Runtime for SimRuntime {
    fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    async fn prepare_workdir(
        &self,
        attempt: &AttemptKey,
        _workdir: &str,
        _files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), RuntimeError> {
        self.gate().await;
        match self.fault("prepare", attempt, 0, 3) {
            CallFault::None => Ok(()),
            CallFault::Fail => Err(RuntimeError::new("sim: disk full")),
            CallFault::Infrastructure => Err(RuntimeError::infrastructure("sim: io error")),
            CallFault::Hang => std::future::pending().await,
        }
    }

    async fn fetch_bundle(
        &self,
        _attempt: &AttemptKey,
        _bundle_path: &str,
        _workdir: &str,
    ) -> Result<(), RuntimeError> {
        self.gate().await;
        Ok(())
    }

    async fn build_image(
        &self,
        attempt: &AttemptKey,
        _spec: &BuildSpec,
        sink: AttemptSink,
    ) -> Result<BuiltImage, RuntimeError> {
        self.gate().await;
        let build_ms = self.rng("build", attempt, 0).range(0, 3) * 400;
        tokio::time::sleep(Duration::from_millis(build_ms)).await;
        sink.log(LogSource::Build, "sim: image ready");
        match self.fault("build", attempt, 0, 3) {
            CallFault::None => Ok(BuiltImage {
                image: Some("sim:latest".to_string()),
                from_cache: build_ms == 0,
            }),
            CallFault::Fail => Err(RuntimeError::new("sim: build step failed")),
            CallFault::Infrastructure => Err(RuntimeError::infrastructure("sim: engine error")),
            CallFault::Hang => std::future::pending().await,
        }
    }

    async fn start(&self, spec: &ContainerSpec, sink: AttemptSink) -> Result<(), RuntimeError> {
        self.gate().await;
        let key = spec.attempt.clone();
        let Some(behaviour) = Behaviour::from_argv(&spec.argv) else {
            return Err(RuntimeError::new(format!(
                "sim: unknown argv {:?}",
                spec.argv
            )));
        };
        let ports: Vec<u16> = spec.ports.values().copied().collect();
        let squatted: Vec<u16> = {
            let machine = self.shared.machine(self.worker);
            ports
                .iter()
                .copied()
                .filter(|p| machine.squatted.contains(p))
                .collect()
        };
        if !squatted.is_empty() {
            self.event(format!("start {key} port conflict {squatted:?}"));
            return Err(RuntimeError {
                port_conflict: true,
                ..RuntimeError::new(format!("port {squatted:?} is already allocated"))
            });
        }
        let fault = self.fault("start", &key, u64::from(spec.start_try), 6);
        if matches!(fault, CallFault::Fail | CallFault::Infrastructure) {
            self.event(format!("start {key} fails ({fault:?})"));
            return Err(match fault {
                CallFault::Fail => RuntimeError::new("sim: no such image"),
                _ => RuntimeError::infrastructure("sim: engine error"),
            });
        }
        self.check_start(spec, &ports);
        let now = self.now();
        self.shared
            .machine(self.worker)
            .create(key.clone(), ports.clone(), behaviour, now);
        self.event(format!("container {key} created ports={ports:?}"));
        if fault == CallFault::Hang {
            // Created, but the engine never answers: the worker must clean it up.
            std::future::pending::<()>().await;
        }
        sink.started();
        self.watch(key, sink, None);
        Ok(())
    }

    async fn signal(&self, attempt: &AttemptKey, signal: Signal) -> Result<(), RuntimeError> {
        // The kill bound counts from the worker's call, whether or not the engine answers it.
        let now = self.now();
        if let Some(c) = self.shared.machine(self.worker).containers.get_mut(attempt)
            && c.is_running()
        {
            c.term_seen_ms.get_or_insert(now);
        }
        self.gate().await;
        let now = self.now();
        let found = self
            .shared
            .machine(self.worker)
            .signal(attempt, signal, now);
        self.event(format!("signal {attempt} {signal:?} found={found}"));
        if found {
            Ok(())
        } else {
            Err(RuntimeError::new(format!("no such container {attempt}")))
        }
    }

    async fn remove(&self, attempt: &AttemptKey) -> Result<(), RuntimeError> {
        self.gate().await;
        let now = self.now();
        let removed = self.shared.machine(self.worker).remove(attempt, now);
        self.event(format!("remove {attempt} found={}", removed.is_some()));
        Ok(())
    }

    async fn release(&self, _attempt: &AttemptKey) {}

    async fn resume(&self, attempt: &AttemptKey, sink: AttemptSink) -> Result<(), RuntimeError> {
        self.gate().await;
        if !self
            .shared
            .machine(self.worker)
            .containers
            .contains_key(attempt)
        {
            return Err(RuntimeError::new(format!("no such container {attempt}")));
        }
        let after = sink.output_mark();
        self.watch(attempt.clone(), sink, after);
        Ok(())
    }
}
