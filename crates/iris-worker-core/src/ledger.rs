//! The ledger of what retention forgot, remembered compactly (the data; `removed.rs` holds
//! what the core does with it): per task, the newest attempt it removed, with
//! that attempt's terminal state. A late or repeated request for such an attempt (a retried
//! RunTask whose first answer was lost, a Reconcile computed before the controller saw the
//! terminal state) is answered as for a finished attempt and never starts it again.
//!
//! Bounded twice: an entry is kept `finished_for_ms + REMOVED_MARGIN_MS` after its removal, and
//! at most `REMOVED_MAX` entries are kept (the oldest go first). Each one costs its task id and
//! about 80 bytes of map overhead in the core, and a tombstone record in the journal.

use std::collections::{BTreeMap, BTreeSet};

use super::ids::{AttemptKey, TaskId};
use super::state::TaskState;

/// How long past the retention age a removed attempt is still remembered: longer than any
/// controller retry or reconcile round a finished attempt can still be the subject of.
pub const REMOVED_MARGIN_MS: u64 = 3_600_000;
/// Removed attempts remembered at most (the oldest removals are forgotten first).
pub const REMOVED_MAX: usize = 10_000;

/// The newest attempt of a task that retention removed, as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedAttempt {
    pub attempt: AttemptKey,
    /// Reconcile era: the controller's uid of the attempt.
    pub attempt_uid: Option<String>,
    pub state: TaskState,
    pub finished_at_ms: u64,
    pub removed_at_ms: u64,
}

/// The removed attempts, by task and by removal time (for expiry, oldest first).
#[derive(Default, Debug)]
pub(crate) struct RemovedLedger {
    by_task: BTreeMap<TaskId, RemovedAttempt>,
    by_time: BTreeSet<(u64, TaskId)>,
    /// Reconcile era: the task of each removed uid.
    by_uid: BTreeMap<String, TaskId>,
}

impl RemovedLedger {
    pub(crate) fn get(&self, task_id: &TaskId) -> Option<&RemovedAttempt> {
        self.by_task.get(task_id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_task.len()
    }

    /// Keeps the newer of what is there and `removed` (an older removal never hides a newer).
    pub(crate) fn insert(&mut self, removed: RemovedAttempt) {
        let task_id = removed.attempt.task_id.clone();
        if let Some(old) = self.by_task.get(&task_id) {
            if old.attempt.attempt_id > removed.attempt.attempt_id {
                return;
            }
            self.by_time.remove(&(old.removed_at_ms, task_id.clone()));
            if let Some(uid) = &old.attempt_uid {
                self.by_uid.remove(uid);
            }
        }
        self.by_time
            .insert((removed.removed_at_ms, task_id.clone()));
        if let Some(uid) = &removed.attempt_uid {
            self.by_uid.insert(uid.clone(), task_id.clone());
        }
        self.by_task.insert(task_id, removed);
    }

    /// The oldest entry, if it is due at `now_ms` for `kept_for_ms` or the ledger is over its cap.
    pub(crate) fn pop_expired(&mut self, now_ms: u64, kept_for_ms: u64) -> Option<RemovedAttempt> {
        let (at, task_id) = self.by_time.first()?.clone();
        let due = at.saturating_add(kept_for_ms) <= now_ms || self.by_task.len() > REMOVED_MAX;
        if !due {
            return None;
        }
        self.by_time.pop_first();
        let gone = self.by_task.remove(&task_id)?;
        if let Some(uid) = &gone.attempt_uid {
            self.by_uid.remove(uid);
        }
        Some(gone)
    }

    pub(crate) fn get_by_uid(&self, attempt_uid: &str) -> Option<&RemovedAttempt> {
        self.by_task.get(self.by_uid.get(attempt_uid)?)
    }

    /// When the oldest entry expires.
    pub(crate) fn next_expiry(&self, kept_for_ms: u64) -> Option<u64> {
        let (at, _) = self.by_time.first()?;
        Some(at.saturating_add(kept_for_ms))
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        let uids = self
            .by_task
            .values()
            .filter(|r| r.attempt_uid.is_some())
            .count();
        if uids != self.by_uid.len() {
            return Err("removed ledger and its uid index disagree".into());
        }
        if self.by_task.len() != self.by_time.len() {
            return Err("removed ledger and its time index disagree".into());
        }
        for (at, task_id) in &self.by_time {
            if self.by_task.get(task_id).map(|r| r.removed_at_ms) != Some(*at) {
                return Err(format!("{task_id}: removed-ledger time index is stale"));
            }
        }
        Ok(())
    }
}
