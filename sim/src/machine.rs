//! A worker's machine as the simulator sees it: the container engine's state (containers outlive
//! the worker, as Docker's do) and ports taken by other programs. Containers advance lazily to
//! the simulated time they are looked at, so nothing here needs a task of its own.

use std::collections::{BTreeMap, BTreeSet};

use iris_worker::core::{AttemptKey, ExitStatus, Signal};

use crate::plan::{Behaviour, ExitPlan};

/// How soon a SIGKILLed container is gone.
const KILL_MS: u64 = 20;
/// A running container prints a line at its start and then this often.
const OUTPUT_EVERY_MS: u64 = 700;

#[derive(Clone, Debug)]
pub enum ContainerState {
    Running,
    Exited { at_ms: u64, status: ExitStatus },
}

#[derive(Clone, Debug)]
pub struct Container {
    pub ports: Vec<u16>,
    pub behaviour: Behaviour,
    pub started_ms: u64,
    pub state: ContainerState,
    /// When SIGTERM makes it stop (it does not if it ignores TERM).
    term_exit_ms: Option<u64>,
    kill_exit_ms: Option<u64>,
    /// First SIGTERM since the worker last came up: the kill-bound clock.
    pub term_seen_ms: Option<u64>,
}

impl Container {
    pub fn is_running(&self) -> bool {
        matches!(self.state, ContainerState::Running)
    }

    fn natural_exit_ms(&self) -> Option<u64> {
        self.behaviour.run_ms.map(|ms| self.started_ms + ms)
    }

    /// When and how it ends, as things stand.
    fn end(&self) -> Option<(u64, ExitStatus)> {
        let natural = self.natural_exit_ms().map(|at| {
            let status = match self.behaviour.exit {
                ExitPlan::Code(code) => exited(code),
                ExitPlan::Signal(signal) => signalled(signal),
                ExitPlan::Oom => ExitStatus {
                    code: Some(137),
                    signal: None,
                    oom_killed: true,
                    ..ExitStatus::default()
                },
            };
            (at, status)
        });
        let term = self.term_exit_ms.map(|at| (at, signalled(15)));
        let kill = self.kill_exit_ms.map(|at| (at, signalled(9)));
        [natural, term, kill]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// What it has printed by `now_ms`: (simulated time, line). The engine keeps it, so a
    /// worker that adopts the container after a restart can read what it missed.
    pub fn output(&self, now_ms: u64) -> Vec<(u64, String)> {
        let until = match &self.state {
            ContainerState::Running => now_ms,
            ContainerState::Exited { at_ms, .. } => now_ms.min(*at_ms),
        };
        (0..)
            .map(|k| (self.started_ms + k * OUTPUT_EVERY_MS, k))
            .take_while(|(at, _)| *at <= until)
            .map(|(at, k)| (at, format!("out {k}")))
            .collect()
    }

    fn advance(&mut self, now_ms: u64) {
        if let (ContainerState::Running, Some((at, status))) = (&self.state, self.end())
            && at <= now_ms
        {
            self.state = ContainerState::Exited { at_ms: at, status };
        }
    }
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus {
        code: Some(code),
        ..ExitStatus::default()
    }
}

fn signalled(signal: i32) -> ExitStatus {
    ExitStatus {
        code: None,
        signal: Some(signal),
        ..ExitStatus::default()
    }
}

#[derive(Debug, Default)]
pub struct Machine {
    pub containers: BTreeMap<AttemptKey, Container>,
    /// Every attempt a container was ever created for: an attempt runs once.
    pub created: BTreeSet<AttemptKey>,
    /// Ports bound by programs other than the worker's containers.
    pub squatted: BTreeSet<u16>,
    /// The engine answers no call while this is set.
    pub engine_hung: bool,
    /// Whether the worker process is up (the kill bound holds only while it is).
    pub worker_up: bool,
    /// The whole output of every container removed so far (the log check's reference).
    pub removed_output: BTreeMap<AttemptKey, Vec<String>>,
    pub worker_boots: u32,
    /// When the worker last came up (a timeout missed while it was down is due from then).
    pub up_since_ms: u64,
    /// A graceful stop asked of the worker: `Some(kill_tasks)`.
    pub stop_requested: Option<bool>,
    /// When the engine last came back from hanging (the kill bound counts from then too).
    pub hang_ended_ms: u64,
    /// The running worker's log store, so a crash can be made as harsh as `kill -9` and what
    /// it serves can be recorded; `None` while no worker runs.
    pub log_store: Option<iris_worker::shell::logs::store::LogStore>,
}

impl Machine {
    pub fn advance(&mut self, now_ms: u64) {
        for container in self.containers.values_mut() {
            container.advance(now_ms);
        }
    }

    pub fn live(&self) -> impl Iterator<Item = (&AttemptKey, &Container)> {
        self.containers.iter().filter(|(_, c)| c.is_running())
    }

    pub fn create(&mut self, key: AttemptKey, ports: Vec<u16>, behaviour: Behaviour, now_ms: u64) {
        self.created.insert(key.clone());
        self.containers.insert(
            key,
            Container {
                ports,
                behaviour,
                started_ms: now_ms,
                state: ContainerState::Running,
                term_exit_ms: None,
                kill_exit_ms: None,
                term_seen_ms: None,
            },
        );
    }

    /// Delivers a signal; false if there is no such container.
    pub fn signal(&mut self, key: &AttemptKey, signal: Signal, now_ms: u64) -> bool {
        let Some(c) = self.containers.get_mut(key) else {
            return false;
        };
        if c.is_running() {
            match signal {
                Signal::Term => {
                    c.term_seen_ms.get_or_insert(now_ms);
                    if !c.behaviour.ignores_term && c.term_exit_ms.is_none() {
                        c.term_exit_ms = Some(now_ms + c.behaviour.stop_ms);
                    }
                }
                Signal::Kill => {
                    c.kill_exit_ms.get_or_insert(now_ms + KILL_MS);
                }
            }
        }
        true
    }

    /// `docker rm -f`: a running container is killed at once. False if there is none.
    pub fn remove(&mut self, key: &AttemptKey, now_ms: u64) -> Option<Container> {
        let mut c = self.containers.remove(key)?;
        if c.is_running() {
            c.state = ContainerState::Exited {
                at_ms: now_ms,
                status: signalled(9),
            };
        }
        let output = c.output(now_ms).into_iter().map(|(_, line)| line).collect();
        self.removed_output.insert(key.clone(), output);
        Some(c)
    }

    /// The worker died or stopped: its escalation timers went with it.
    pub fn worker_down(&mut self) {
        self.worker_up = false;
        for c in self.containers.values_mut() {
            c.term_seen_ms = None;
        }
    }
}
