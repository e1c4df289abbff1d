//! The controller outbox: reports waiting for an acknowledgement.
//!
//! Per task, reports leave in the order they were made and only one is in flight at a time, so
//! the controller never sees a task's states out of order. A failed report is retried with
//! exponential backoff (capped) for as long as it takes; nothing is ever dropped.

use std::collections::{BTreeMap, VecDeque};

use super::effect::TaskReport;
use super::ids::TaskId;

#[derive(Debug)]
struct Pending {
    task_id: TaskId,
    report: TaskReport,
    in_flight: bool,
    failures: u32,
}

#[derive(Debug, Default)]
pub struct Outbox {
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    queues: BTreeMap<TaskId, VecDeque<u64>>,
}

impl Outbox {
    /// Queues a report; returns it with its id if it may be sent now.
    pub fn push(&mut self, task_id: TaskId, report: TaskReport) -> (u64, Option<TaskReport>) {
        let id = self.next_id;
        self.next_id += 1;
        let queue = self.queues.entry(task_id.clone()).or_default();
        queue.push_back(id);
        let send_now = queue.len() == 1;
        self.pending.insert(
            id,
            Pending {
                task_id,
                report: report.clone(),
                in_flight: send_now,
                failures: 0,
            },
        );
        (id, send_now.then_some(report))
    }

    /// Drops an acknowledged report; returns it, and the next report of the same task to send
    /// now.
    #[allow(clippy::type_complexity)]
    pub fn ack(&mut self, id: u64) -> Option<(TaskReport, Option<(u64, TaskReport)>)> {
        let done = self.pending.remove(&id)?;
        let queue = self.queues.get_mut(&done.task_id).expect("queued");
        debug_assert_eq!(queue.front(), Some(&id), "acks come for the head only");
        queue.retain(|q| *q != id);
        let Some(&next_id) = queue.front() else {
            self.queues.remove(&done.task_id);
            return Some((done.report, None));
        };
        let next = self.pending.get_mut(&next_id).expect("pending");
        next.in_flight = true;
        Some((done.report, Some((next_id, next.report.clone()))))
    }

    /// Marks a report failed; returns how many times it has failed, or `None` if unknown.
    pub fn fail(&mut self, id: u64) -> Option<u32> {
        let pending = self.pending.get_mut(&id).filter(|p| p.in_flight)?;
        pending.in_flight = false;
        pending.failures += 1;
        Some(pending.failures)
    }

    /// Takes a report out for a retry.
    pub fn retry(&mut self, id: u64) -> Option<TaskReport> {
        let pending = self.pending.get_mut(&id).filter(|p| !p.in_flight)?;
        pending.in_flight = true;
        Some(pending.report.clone())
    }

    pub fn contains(&self, id: u64) -> bool {
        self.pending.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

/// `initial * 2^(failures-1)`, capped.
pub fn backoff_ms(failures: u32, initial_ms: u64, max_ms: u64) -> u64 {
    let shift = failures.saturating_sub(1).min(20);
    initial_ms.saturating_mul(1 << shift).min(max_ms)
}
