//! Deadlines the core waits for, in deadline order. Timers are not cancelled eagerly: the core
//! removes the ones it knows are dead and checks the rest against its state when they fire.

use std::collections::BTreeSet;

use super::ids::AttemptKey;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Register with the controller, or send the next heartbeat.
    Register,
    /// Retry a failed report.
    ReportRetry(u64),
    /// Send SIGKILL to an attempt that ignored SIGTERM.
    Escalate(AttemptKey),
    /// The attempt ran past its `timeout_seconds`.
    TaskTimeout(AttemptKey),
    /// The oldest settled task reaches its retention age.
    Retention,
}

#[derive(Debug, Default)]
pub struct Timers {
    queue: BTreeSet<(u64, Timer)>,
}

impl Timers {
    pub fn set(&mut self, deadline_ms: u64, timer: Timer) {
        self.queue.insert((deadline_ms, timer));
    }

    pub fn cancel(&mut self, deadline_ms: u64, timer: Timer) {
        self.queue.remove(&(deadline_ms, timer));
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.queue.first().map(|(deadline, _)| *deadline)
    }

    /// Removes and returns the earliest timer due at or before `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Timer> {
        match self.queue.first() {
            Some((deadline, _)) if *deadline <= now_ms => self.queue.pop_first().map(|(_, t)| t),
            _ => None,
        }
    }
}
