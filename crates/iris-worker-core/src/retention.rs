//! Retention: which finished tasks a long-running worker forgets, and when. A task may go once
//! every attempt of it is settled (finished, and its terminal report acknowledged, or there is no
//! controller to tell); then the oldest go first, when there are more than
//! `finished_tasks_max`, when they finished more than `finished_for_ms` ago, or when the cache
//! dir's file system is fuller than the thresholds (the shell measures, the core decides). The
//! outbox decides, never the clock: a live attempt or an unacknowledged report is never removed.
//! Removing journals a tombstone per attempt before the shell deletes the files.

use super::effect::{Effect, JournalEntry, RemovalReason};
use super::ids::TaskId;
use super::ledger::RemovedAttempt;
use super::timers::Timer;
use super::worker::WorkerCore;

/// Share of the settled tasks removed per measurement over a disk threshold (at least one).
const DISK_BATCH_DIVISOR: usize = 10;

impl WorkerCore {
    /// Whether a task may be removed, and when its last attempt finished: computed from its
    /// attempts (the index `settled` caches it).
    pub(crate) fn settled_since(&self, task_id: &TaskId) -> Option<u64> {
        let attempts = self.tasks.get(task_id)?;
        let all_settled = attempts
            .iter()
            .all(|a| self.is_settled(&a.task.attempt_key()));
        if !all_settled {
            return None;
        }
        attempts.iter().filter_map(|a| a.task.finished_at_ms).max()
    }

    /// Brings the index up to date for one task, after any change to its attempts. O(log n), so
    /// retention costs nothing per task however many are kept.
    pub(crate) fn refresh_settled(&mut self, task_id: &TaskId) {
        if let Some(at) = self.settled_at.remove(task_id) {
            self.settled.remove(&(at, task_id.clone()));
        }
        if let Some(at) = self.settled_since(task_id) {
            self.settled_at.insert(task_id.clone(), at);
            self.settled.insert((at, task_id.clone()));
            self.retention_due = true;
        }
    }

    /// Removes what the count and age limits say must go, and arms the timer of the next age
    /// removal. Runs at the end of a step in which a task became settled, and at that timer.
    pub(crate) fn enforce_retention(&mut self) {
        self.retention_due = false;
        let limits = self.config.retention.clone();
        let now = self.now_ms;
        // Oldest first: the excess over the count, then whatever is past its age.
        while let Some((finished, task_id)) = self.settled.first().cloned() {
            if self.settled.len() > limits.finished_tasks_max {
                self.remove_task(&task_id, RemovalReason::Count);
            } else if finished.saturating_add(limits.finished_for_ms) <= now {
                self.remove_task(&task_id, RemovalReason::Age);
            } else {
                break;
            }
        }
        self.expire_removed();
        let settled_due = self
            .settled
            .first()
            .map(|(oldest, _)| oldest.saturating_add(limits.finished_for_ms));
        let removed_due = self.removed.next_expiry(self.removed_kept_for_ms());
        if let Some(at) = settled_due.into_iter().chain(removed_due).min()
            && self.retention_timer.is_none_or(|armed| at < armed)
        {
            if let Some(armed) = self.retention_timer {
                self.timers.cancel(armed, Timer::Retention);
            }
            self.retention_timer = Some(at);
            self.timers.set(at, Timer::Retention);
        }
    }

    pub(crate) fn on_retention_timer(&mut self) {
        self.retention_timer = None;
        self.enforce_retention();
    }

    /// The shell's measurement of the cache dir's file system: over a threshold, a batch of the
    /// oldest settled tasks goes.
    pub(crate) fn on_disk_usage(&mut self, bytes_percent: u8, inodes_percent: u8) {
        let limits = &self.config.retention;
        let over = bytes_percent > limits.disk_used_percent_max
            || inodes_percent > limits.inodes_used_percent_max;
        if !over {
            return;
        }
        let batch = (self.settled.len() / DISK_BATCH_DIVISOR).max(1);
        // The oldest settled tasks, from the index (which `remove_task` changes).
        let oldest: Vec<TaskId> = self
            .settled
            .iter()
            .take(batch)
            .map(|(_, id)| id.clone())
            .collect();
        for task_id in oldest {
            self.remove_task(&task_id, RemovalReason::Disk);
        }
    }

    /// Forgets a settled task: a journal tombstone per attempt, then its files.
    fn remove_task(&mut self, task_id: &TaskId, reason: RemovalReason) {
        // The index first: whatever happens below, the retention loop moves on.
        if let Some(at) = self.settled_at.remove(task_id) {
            self.settled.remove(&(at, task_id.clone()));
        }
        let Some(attempts) = self.tasks.remove(task_id) else {
            return;
        };
        debug_assert!(
            attempts
                .iter()
                .all(|a| a.task.is_finished() && (a.told.is_acked() || !self.needs_ack())),
            "{task_id}: removed while not settled"
        );
        let keys: Vec<_> = attempts.iter().map(|a| a.task.attempt_key()).collect();
        for attempt in &attempts {
            if let Some(uid) = attempt.spec.attempt_uid() {
                self.uids.remove(uid);
            }
            let removed = RemovedAttempt {
                attempt_uid: attempt.spec.attempt_uid().map(str::to_string),
                attempt: attempt.task.attempt_key(),
                state: attempt.task.state,
                finished_at_ms: attempt.task.finished_at_ms.unwrap_or(self.now_ms),
                removed_at_ms: self.now_ms,
            };
            self.effects
                .push_back(Effect::Journal(JournalEntry::Removed {
                    attempt: removed.attempt.clone(),
                    attempt_uid: removed.attempt_uid.clone(),
                    state: removed.state,
                    finished_at_ms: removed.finished_at_ms,
                    removed_at_ms: removed.removed_at_ms,
                }));
            self.remember_removed(removed);
        }
        self.effects.push_back(Effect::RemoveTask {
            task_id: task_id.clone(),
            attempts: keys,
            reason,
        });
    }
}
