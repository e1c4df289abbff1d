//! Reconcile: a controller that drives the worker with the whole set of attempts it wants
//! (Iris 2026-06's `Reconcile`), as the kubelet's sync loop compares desired with actual. The
//! era's adapter (`shell::era2026_06`) translates the wire to `Desired` and `Observation`; the
//! core decides, with the same lifecycle as the task era:
//!
//! * a desired uid the core knows is observed as it is (PENDING as BUILDING; a terminal state is
//!   observed only after RUNNING was, when the container started, so an attempt that exits at
//!   once still passes RUNNING);
//! * an unknown uid with a spec is submitted (the same rules as RunTask: a same-task attempt
//!   with an equal or lower id than a live one is ignored, a higher one supersedes); one without
//!   a spec, a stop of an unknown uid and an ignored submission are observed MISSING, unless the
//!   removed-attempt ledger knows the uid: then its terminal state, never a new run;
//! * a stop kills; a live attempt missing from the set is killed and observed in the answer;
//! * a finished attempt left out of a desired set is settled (retention may remove it).
//!
//! The answer is built from the core's state at once; it never waits for a runtime.

use std::collections::BTreeSet;

use super::attempt::StopReason;
use super::effect::{Effect, JournalEntry};
use super::ids::AttemptKey;
use super::planted::PlantedBug;
use super::spec::TaskSpec;
use super::state::TaskState;
use super::task::ResourceUsage;
use super::worker::WorkerCore;

/// One entry of a desired set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub attempt_uid: String,
    pub intent: Intent,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Run it; the spec comes only with the first tick that names the attempt. A spec the
    /// adapter refused is `Invalid` and observed FAILED with the reason.
    Run(Option<Box<TaskSpec>>),
    Invalid(String),
    Stop,
}

/// What the worker answers for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub attempt_uid: String,
    /// `None`: MISSING (the worker has no such attempt).
    pub state: Option<TaskState>,
    pub exit_code: Option<i32>,
    pub error: String,
    pub finished_at_ms: Option<u64>,
    pub resource_usage: ResourceUsage,
}

impl Observation {
    fn missing(attempt_uid: &str) -> Observation {
        Observation::terminal(attempt_uid, None, String::new())
    }

    fn terminal(attempt_uid: &str, state: Option<TaskState>, error: String) -> Observation {
        Observation {
            attempt_uid: attempt_uid.to_string(),
            state,
            exit_code: None,
            error,
            finished_at_ms: None,
            resource_usage: ResourceUsage::default(),
        }
    }
}

impl WorkerCore {
    /// Applies a desired set and answers it: an observation per desired uid, plus one per live
    /// attempt the set left out (it is being killed).
    pub fn reconcile(&mut self, now_ms: u64, desired: Vec<Desired>) -> Vec<Observation> {
        self.tick(now_ms);
        for entry in &desired {
            self.apply_intent(entry);
        }
        let wanted: BTreeSet<&str> = desired.iter().map(|d| d.attempt_uid.as_str()).collect();
        let undesired = self.undesired(&wanted);
        let mut observed = Vec::with_capacity(desired.len() + undesired.len());
        for entry in &desired {
            observed.push(self.observe_uid(entry));
        }
        for key in &undesired {
            if !self.attempt(key).is_some_and(|a| a.task.is_finished()) {
                self.request_stop(key, StopReason::Kill, self.config.default_term_timeout_ms);
                observed.push(self.observe(key));
            } else {
                self.settle_undesired(key);
            }
        }
        self.end_step();
        observed
    }

    fn apply_intent(&mut self, entry: &Desired) {
        let known = self.uids.get(&entry.attempt_uid).cloned();
        match (&entry.intent, known) {
            // A refusal leaves the uid unknown: observed MISSING, as Iris's worker does.
            (Intent::Run(Some(spec)), None)
                if self.removed_by_uid(&entry.attempt_uid).is_none() =>
            {
                let _ = self.try_submit((**spec).clone());
            }
            (Intent::Run(Some(spec)), Some(key))
                if self.config.planted(PlantedBug::ReconcileRerunsFinished)
                    && self.attempt(&key).is_some_and(|a| a.task.is_finished()) =>
            {
                self.planted_rerun(&key, spec);
            }
            (Intent::Stop, Some(key)) => {
                let live = self.attempt(&key).is_some_and(|a| !a.task.is_finished());
                if live {
                    self.request_stop(&key, StopReason::Kill, self.config.default_term_timeout_ms);
                }
            }
            _ => {}
        }
    }

    /// The planted bug `ReconcileRerunsFinished`: the finished attempt is forgotten and its
    /// spec accepted as new work.
    fn planted_rerun(&mut self, key: &AttemptKey, spec: &TaskSpec) {
        if let Some(attempts) = self.tasks.get_mut(&key.task_id) {
            attempts.retain(|a| a.task.attempt_id != key.attempt_id);
            if attempts.is_empty() {
                self.tasks.remove(&key.task_id);
            }
        }
        let _ = self.accept(spec.clone());
    }

    /// Attempts with a uid that the set does not name: the controller no longer wants them.
    fn undesired(&self, wanted: &BTreeSet<&str>) -> Vec<AttemptKey> {
        self.uids
            .iter()
            .filter(|(uid, _)| !wanted.contains(uid.as_str()))
            .map(|(_, key)| key.clone())
            .filter(|key| self.attempt(key).is_some_and(|a| !a.told.is_acked()))
            .collect()
    }

    /// A finished attempt the controller stopped asking about: nothing will ask again.
    fn settle_undesired(&mut self, key: &AttemptKey) {
        let Some(attempt) = self.attempt_mut(key) else {
            return;
        };
        attempt.told.settle();
        self.effects
            .push_back(Effect::Journal(JournalEntry::ReportAcked {
                attempt: key.clone(),
            }));
        self.refresh_settled(&key.task_id);
    }

    fn observe_uid(&mut self, entry: &Desired) -> Observation {
        if let Some(key) = self.uids.get(&entry.attempt_uid).cloned() {
            return self.observe(&key);
        }
        if let Intent::Invalid(reason) = &entry.intent {
            return Observation::terminal(
                &entry.attempt_uid,
                Some(TaskState::Failed),
                reason.clone(),
            );
        }
        match self.removed_by_uid(&entry.attempt_uid) {
            Some(removed) => {
                let state = Some(removed.state);
                let mut seen = Observation::terminal(&entry.attempt_uid, state, String::new());
                seen.finished_at_ms = Some(removed.finished_at_ms);
                seen
            }
            None => Observation::missing(&entry.attempt_uid),
        }
    }

    /// The attempt as the controller may see it now.
    fn observe(&mut self, key: &AttemptKey) -> Observation {
        let attempt = self.attempt_mut(key).expect("indexed attempts exist");
        let task = &attempt.task;
        let mut state = match task.state {
            TaskState::Pending => TaskState::Building,
            s => s,
        };
        let passes_running = attempt.container_started && !attempt.told.running_observed;
        if task.is_finished() && passes_running {
            state = TaskState::Running;
        }
        if state == TaskState::Running {
            attempt.told.running_observed = true;
        }
        let finished = task.is_finished() && state == task.state;
        Observation {
            attempt_uid: attempt.spec.attempt_uid().unwrap_or_default().to_string(),
            state: Some(state),
            exit_code: finished.then(|| task.effective_exit_code()),
            error: if finished {
                task.error.clone().unwrap_or_default()
            } else {
                String::new()
            },
            finished_at_ms: task.finished_at_ms.filter(|_| finished),
            resource_usage: task.resource_usage,
        }
    }

    /// Every attempt of the reconcile era the core holds: its key, Iris's task path and
    /// whether it is finished (the log pusher's work list).
    pub fn reconcile_attempts(&self) -> Vec<(AttemptKey, String, bool)> {
        self.uids
            .values()
            .filter_map(|key| {
                let a = self.attempt(key)?;
                let path = a.spec.era.reconcile()?.task_path.clone();
                Some((key.clone(), path, a.task.is_finished()))
            })
            .collect()
    }

    /// The shell's log pusher has every line of this finished attempt in the log service: the
    /// attempt may now be settled (and retention may remove it).
    pub fn logs_shipped(&mut self, now_ms: u64, key: &AttemptKey) {
        self.tick(now_ms);
        if let Some(a) = self.attempt_mut(key)
            && a.task.is_finished()
            && !a.told.logs_shipped
        {
            a.told.logs_shipped = true;
            self.refresh_settled(&key.task_id);
        }
        self.end_step();
    }

    /// The attempt with this uid, if the core holds it.
    pub fn attempt_by_uid(&self, attempt_uid: &str) -> Option<&AttemptKey> {
        self.uids.get(attempt_uid)
    }

    pub(crate) fn index_uid(&mut self, key: &AttemptKey) {
        let uid = self
            .attempt(key)
            .and_then(|a| a.spec.attempt_uid())
            .map(str::to_string);
        if let Some(uid) = uid {
            self.uids.insert(uid, key.clone());
        }
    }

    /// Attempts of the task era keep no uid; every other attempt is in the index.
    pub(crate) fn check_uids(&self) -> Result<(), String> {
        for (uid, key) in &self.uids {
            let held = self.attempt(key).and_then(|a| a.spec.attempt_uid());
            if held != Some(uid.as_str()) {
                return Err(format!("uid {uid} indexed for {key}, which holds {held:?}"));
            }
        }
        let with_uid = self
            .tasks
            .values()
            .flatten()
            .filter(|a| a.spec.attempt_uid().is_some())
            .count();
        if with_uid != self.uids.len() {
            return Err(format!(
                "{with_uid} attempts have a uid, {} are indexed",
                self.uids.len()
            ));
        }
        Ok(())
    }
}
