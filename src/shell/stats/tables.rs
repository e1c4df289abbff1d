//! The stats rows waiting for the cluster's log service: one bounded queue per table
//! (`StatsQueue`, by rows and by bytes; past either bound the oldest rows go, counted in
//! `iris_worker_stats_rows_dropped_total`), and the worker's three tables (`StatsTables`). Any
//! part of the worker may queue a row (the Reconcile handler, the service, the era's writer);
//! only the 2026-06 era's writer takes them (`era2026_06::stats_writer`). A push holds a mutex
//! for the push alone: nobody ever waits on the service.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use super::rows::{ProfileRow, StatsRow, TaskRow, WorkerRow};
use crate::shell::metrics::Metrics;

/// Rows queued per table (finelog's client's `max_buffer_rows`).
pub const ROWS_MAX: usize = 10_000;
pub const BATCH_ROWS_MAX: usize = 5_000;
/// A WriteRows call carries about this much at most (finelog takes 16 MiB bodies).
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// Profiles queued: at most this many, and this many bytes of them.
pub const PROFILES_MAX: usize = 64;
pub const PROFILE_BYTES_MAX: usize = 32 << 20;

/// One table's rows waiting for the log service, oldest first, bounded by count and bytes.
pub struct StatsQueue<R> {
    inner: Mutex<Queued<R>>,
    rows_max: usize,
    bytes_max: usize,
    metrics: Arc<Metrics>,
}

struct Queued<R> {
    rows: VecDeque<R>,
    bytes: usize,
}

impl<R: StatsRow> StatsQueue<R> {
    pub fn new(metrics: Arc<Metrics>, rows_max: usize, bytes_max: usize) -> StatsQueue<R> {
        StatsQueue {
            inner: Mutex::new(Queued {
                rows: VecDeque::new(),
                bytes: 0,
            }),
            rows_max,
            bytes_max,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued<R>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a row; never waits on the service.
    pub fn push(&self, row: R) {
        self.extend([row]);
    }

    /// Queues rows under one lock.
    pub fn extend(&self, more: impl IntoIterator<Item = R>) {
        let mut q = self.lock();
        for row in more {
            q.bytes += row.size();
            q.rows.push_back(row);
        }
        self.trim(&mut q);
    }

    /// The oldest rows go while the queue is over either bound.
    fn trim(&self, q: &mut Queued<R>) {
        while q.rows.len() > self.rows_max || (q.bytes > self.bytes_max && q.rows.len() > 1) {
            let Some(gone) = q.rows.pop_front() else {
                break;
            };
            q.bytes -= gone.size();
            self.metrics.stats_rows_dropped.inc();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().rows.is_empty()
    }

    /// The oldest rows, at most `BATCH_ROWS_MAX` and about `BATCH_BYTES_MAX` (at least one),
    /// out of the queue.
    pub fn take(&self) -> Vec<R> {
        let mut q = self.lock();
        let (mut n, mut bytes) = (0, 0);
        while n < q.rows.len().min(BATCH_ROWS_MAX) && (n == 0 || bytes < BATCH_BYTES_MAX) {
            bytes += q.rows[n].size();
            n += 1;
        }
        q.bytes -= bytes;
        q.rows.drain(..n).collect()
    }

    /// A batch that was not written goes back in front of what came since.
    pub fn put_back(&self, batch: Vec<R>) {
        let mut q = self.lock();
        for row in batch.into_iter().rev() {
            q.bytes += row.size();
            q.rows.push_front(row);
        }
        self.trim(&mut q);
    }
}

/// The worker's tables; clones share the queues. Rows are queued only once a writer runs
/// (`vm_id` is set): without a log service nothing would ever take them.
#[derive(Clone)]
pub struct StatsTables {
    pub workers: Arc<StatsQueue<WorkerRow>>,
    pub tasks: Arc<StatsQueue<TaskRow>>,
    pub profiles: Arc<StatsQueue<ProfileRow>>,
    writer: Arc<OnceLock<String>>,
}

impl StatsTables {
    pub fn new(metrics: &Arc<Metrics>) -> StatsTables {
        let m = || metrics.clone();
        StatsTables {
            workers: Arc::new(StatsQueue::new(m(), ROWS_MAX, ROWS_MAX * 512)),
            tasks: Arc::new(StatsQueue::new(m(), ROWS_MAX, ROWS_MAX * 512)),
            profiles: Arc::new(StatsQueue::new(m(), PROFILES_MAX, PROFILE_BYTES_MAX)),
            writer: Arc::new(OnceLock::new()),
        }
    }

    /// The worker id the rows carry, once a writer runs for this worker.
    pub fn vm_id(&self) -> Option<&str> {
        self.writer.get().map(String::as_str)
    }

    /// A writer runs for `worker_id`: rows are wanted from now on.
    pub fn start_writing(&self, worker_id: &str) {
        let _ = self.writer.set(worker_id.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: i64) -> TaskRow {
        TaskRow {
            attempt_id: i,
            ..TaskRow::default()
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_rows_and_counts_them() {
        let metrics = Arc::new(Metrics::new());
        let queue = StatsQueue::<TaskRow>::new(metrics.clone(), ROWS_MAX, usize::MAX);
        for i in 0..(ROWS_MAX as i64 + 7) {
            queue.push(row(i));
        }
        assert_eq!(queue.len(), ROWS_MAX);
        assert_eq!(metrics.stats_rows_dropped.get(), 7);
        let batch = queue.take();
        assert_eq!(batch.len(), BATCH_ROWS_MAX);
        assert_eq!(batch[0].attempt_id, 7, "the oldest seven went");
    }

    #[test]
    fn an_unwritten_batch_goes_back_in_front_in_order() {
        let metrics = Arc::new(Metrics::new());
        let queue = StatsQueue::<TaskRow>::new(metrics, ROWS_MAX, usize::MAX);
        (0..3).for_each(|i| queue.push(row(i)));
        let batch = queue.take();
        queue.push(row(3));
        queue.put_back(batch);
        let order: Vec<i64> = queue.take().iter().map(|r| r.attempt_id).collect();
        assert_eq!(order, [0, 1, 2, 3]);
    }

    #[test]
    fn profiles_are_bounded_by_bytes_and_a_batch_by_its_size() {
        let metrics = Arc::new(Metrics::new());
        let queue = StatsQueue::<ProfileRow>::new(metrics.clone(), PROFILES_MAX, 5 << 20);
        let profile = |n: u8| ProfileRow {
            profile_data: vec![n; 1 << 20],
            ..ProfileRow::default()
        };
        (0..8).for_each(|n| queue.push(profile(n)));
        assert_eq!(queue.len(), 4, "5 MiB hold four profiles of 1 MiB");
        assert_eq!(metrics.stats_rows_dropped.get(), 4);
        let first = queue.take();
        assert_eq!(first.len(), 4, "4 MiB a call");
        assert_eq!(first[0].profile_data[0], 4, "the oldest went");
        queue.push(profile(9));
        queue.push(profile(10));
        assert_eq!(queue.take().len(), 2);
    }
}
