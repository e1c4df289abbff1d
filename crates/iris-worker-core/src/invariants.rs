//! Invariants of `WorkerCore` that hold after every call. Tests, the fuzzer and the simulator
//! call `check_invariants` after each step so a violation shows at the step that caused it.

use std::collections::BTreeMap;

use super::attempt::{Attempt, Phase};
use super::ids::AttemptKey;
use super::state::{TaskState, is_task_finished};
use super::worker::WorkerCore;

impl WorkerCore {
    /// Returns the first broken invariant, described.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut owner_of_port: BTreeMap<u16, AttemptKey> = BTreeMap::new();
        for attempts in self.tasks.values() {
            self.check_history(attempts)?;
            for attempt in attempts {
                let key = attempt.task.attempt_key();
                self.check_attempt(attempt)?;
                if attempt.task.is_finished() {
                    continue;
                }
                for &port in attempt.task.ports.values() {
                    if let Some(other) = owner_of_port.insert(port, key.clone()) {
                        return Err(format!("port {port} held by live {other} and {key}"));
                    }
                    if self.ports.holder(port) != Some(&key) {
                        return Err(format!("port {port} of {key} is not reserved for it"));
                    }
                }
            }
        }
        for task_id in self.tasks.keys() {
            let indexed = self.settled_at.get(task_id).copied();
            if indexed != self.settled_since(task_id) {
                return Err(format!(
                    "{task_id}: retention index says {indexed:?}, its attempts {:?}",
                    self.settled_since(task_id)
                ));
            }
        }
        self.removed.check()?;
        self.check_uids()?;
        for (task_id, attempts) in &self.tasks {
            if let Some(removed) = self.removed.get(task_id)
                && let Some(a) = attempts
                    .iter()
                    .find(|a| a.task.attempt_id <= removed.attempt.attempt_id)
            {
                return Err(format!(
                    "{task_id}#{} kept, but attempt {} of its task was removed",
                    a.task.attempt_id, removed.attempt.attempt_id
                ));
            }
        }
        if self.settled.len() != self.settled_at.len() {
            return Err("retention index and its reverse map disagree".into());
        }
        for (port, holder) in self.ports.held() {
            if owner_of_port.get(&port) != Some(holder) {
                return Err(format!(
                    "port {port} still held for {holder}, not a live owner"
                ));
            }
        }
        Ok(())
    }

    fn check_history(&self, attempts: &[Attempt]) -> Result<(), String> {
        let ids: Vec<i32> = attempts.iter().map(|a| a.task.attempt_id).collect();
        if ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("attempt ids not increasing: {ids:?}"));
        }
        let live_containers = attempts
            .iter()
            .filter(|a| a.phase.may_have_container())
            .count();
        if live_containers > 1 {
            return Err(format!("{live_containers} containers of one task at once"));
        }
        Ok(())
    }

    fn check_attempt(&self, attempt: &Attempt) -> Result<(), String> {
        let task = &attempt.task;
        let key = task.attempt_key();
        let finished = is_task_finished(task.state);
        if finished != task.finished_at_ms.is_some() {
            return Err(format!(
                "{key}: finished_at_ms {:?} in {}",
                task.finished_at_ms, task.state
            ));
        }
        if finished != (attempt.phase == Phase::Done) {
            return Err(format!(
                "{key}: phase {} in {}",
                attempt.phase.name(),
                task.state
            ));
        }
        let entered_building = matches!(task.state, TaskState::Building | TaskState::Running);
        if entered_building && task.started_at_ms.is_none() {
            return Err(format!("{key}: {} without started_at_ms", task.state));
        }
        if task.state == TaskState::Pending && task.started_at_ms.is_some() {
            return Err(format!("{key}: PENDING with started_at_ms"));
        }
        let reported = attempt.told.is_reported();
        if finished && self.controller.enabled() && !reported {
            return Err(format!("{key}: terminal without a queued report"));
        }
        Ok(())
    }
}
