//! A core driven by hand, its effects kept as a one-line-per-effect trace: what the scenario tests
//! of the core and of each era's adapter assert on.

use crate::*;

use super::config;

/// Drives a core and keeps a one-line-per-effect trace, stamped with the time it appeared.
pub struct Harness {
    pub core: WorkerCore,
    pub now: u64,
    pub trace: Vec<String>,
    pub effects: Vec<Effect>,
}

impl Harness {
    pub fn new(config: CoreConfig) -> Harness {
        let mut h = Harness {
            core: WorkerCore::new(config, 0),
            now: 0,
            trace: Vec::new(),
            effects: Vec::new(),
        };
        h.advance(0);
        h
    }

    /// A harness with the controller already registered.
    pub fn registered() -> Harness {
        let mut h = Harness::new(config());
        h.event(Event::RegisterAccepted {
            should_reset: false,
        });
        h.trace.clear();
        h.effects.clear();
        h
    }

    pub fn drain(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        while let Some(effect) = self.core.poll_effect() {
            self.trace.push(format!("{:>6} {effect}", self.now));
            self.effects.push(effect.clone());
            out.push(effect);
        }
        self.core.check_invariants().expect("invariants hold");
        out
    }

    pub fn note(&mut self, line: impl AsRef<str>) {
        self.trace
            .push(format!("{:>6} # {}", self.now, line.as_ref()));
    }

    pub fn submit(&mut self, spec: TaskSpec) -> Result<TaskState, SubmitError> {
        self.note(format!("submit {}#{}", spec.task_id, spec.attempt_id));
        let out = self.core.submit(self.now, spec);
        self.drain();
        out
    }

    pub fn kill(&mut self, task_id: &str, term_ms: i64) -> Result<(), KillError> {
        self.note(format!("kill {task_id} term_timeout_ms={term_ms}"));
        let out = self
            .core
            .kill(self.now, &TaskId::new(task_id).unwrap(), term_ms);
        self.drain();
        out
    }

    pub fn event(&mut self, event: Event) {
        self.note(format!("{event}"));
        self.core.handle(self.now, event);
        self.drain();
    }

    /// Moves time to `to_ms`, firing every timer on the way at its own deadline.
    pub fn advance(&mut self, to_ms: u64) {
        while let Some(deadline) = self.core.poll_timeout().filter(|d| *d <= to_ms) {
            self.now = self.now.max(deadline);
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.now = self.now.max(to_ms);
    }

    /// Acks every report effect in the trace so far that is still pending.
    pub fn ack_reports(&mut self) {
        loop {
            let ids: Vec<u64> = self
                .effects
                .iter()
                .filter_map(|e| match e {
                    Effect::ReportTaskState { report_id, .. } => Some(*report_id),
                    _ => None,
                })
                .collect();
            self.effects.clear();
            if ids.is_empty() {
                return;
            }
            for report_id in ids {
                self.event(Event::ReportAcked { report_id });
            }
        }
    }

    /// Runs an attempt through workdir and build, up to its StartContainer.
    pub fn build(&mut self, attempt: &AttemptKey) {
        self.event(Event::WorkdirReady {
            attempt: attempt.clone(),
        });
        self.event(Event::BuildFinished {
            attempt: attempt.clone(),
            image: None,
            from_cache: false,
        });
    }

    /// Runs an attempt through workdir, build and container start.
    pub fn start(&mut self, attempt: &AttemptKey) {
        self.build(attempt);
        self.event(Event::ContainerStarted {
            attempt: attempt.clone(),
        });
    }

    pub fn state(&self, task_id: &str) -> TaskState {
        self.core
            .get_task(&TaskId::new(task_id).unwrap())
            .unwrap()
            .state
    }

    pub fn task(&self, task_id: &str) -> Task {
        self.core
            .get_task(&TaskId::new(task_id).unwrap())
            .unwrap()
            .clone()
    }

    pub fn render(&self) -> String {
        self.trace.join("\n")
    }
}
