//! What the core does with the ledger of removed attempts (`ledger.rs`): brings it back after a
//! restart, answers whether an attempt was removed, and forgets what is past its time.

use super::effect::{Effect, JournalEntry};
use super::ids::TaskId;
use super::ledger::{REMOVED_MARGIN_MS, RemovedAttempt};
use super::worker::WorkerCore;

impl WorkerCore {
    /// Brings back what a restarted worker's journal remembers of removed attempts. Call before
    /// `recover`, so a record of an attempt that was removed is not brought back.
    pub fn recover_removed(&mut self, now_ms: u64, removed: Vec<RemovedAttempt>) {
        self.tick(now_ms);
        for entry in removed {
            self.removed.insert(entry);
        }
        self.expire_removed();
        self.end_step();
    }

    /// The removed attempt of a task that `attempt_id` is not newer than, if any: such an
    /// attempt finished and must never run again.
    pub fn removed_attempt(&self, task_id: &TaskId, attempt_id: i32) -> Option<&RemovedAttempt> {
        self.removed
            .get(task_id)
            .filter(|r| attempt_id <= r.attempt.attempt_id)
    }

    /// The removed attempt the controller's uid names, if it is remembered.
    pub fn removed_by_uid(&self, attempt_uid: &str) -> Option<&RemovedAttempt> {
        self.removed.get_by_uid(attempt_uid)
    }

    /// How many removed attempts are remembered.
    pub fn removed_len(&self) -> usize {
        self.removed.len()
    }

    pub(crate) fn remember_removed(&mut self, removed: RemovedAttempt) {
        self.removed.insert(removed);
        self.expire_removed();
        // Retention runs again before the step ends and arms the ledger's expiry.
        self.retention_due = true;
    }

    /// How long a removed attempt is remembered.
    pub(crate) fn removed_kept_for_ms(&self) -> u64 {
        self.config
            .retention
            .finished_for_ms
            .saturating_add(REMOVED_MARGIN_MS)
    }

    /// Forgets what is past its time or over the cap; the journal drops it too.
    pub(crate) fn expire_removed(&mut self) {
        let kept_for = self.removed_kept_for_ms();
        while let Some(gone) = self.removed.pop_expired(self.now_ms, kept_for) {
            self.effects
                .push_back(Effect::Journal(JournalEntry::Forgotten {
                    attempt: gone.attempt,
                }));
        }
    }
}
