//! What the dashboard draws: per attempt a bounded series of memory and CPU samples (the ones the
//! worker already takes), and the worker's running-task count over the last hour. Bounded: a
//! series that fills up halves its resolution (adjacent points merge, keeping the peaks), a
//! finished attempt's series shrinks to `FINISHED_POINTS_MAX`, and a removed task's goes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::core::{AttemptKey, ResourceUsage};

/// Points per running attempt.
pub const POINTS_MAX: usize = 600;
/// Points kept once the attempt is over (a thousand kept tasks cost ~2 MiB at most).
pub const FINISHED_POINTS_MAX: usize = 120;
/// The running-task series: a point per `RUNNING_EVERY_MS`, an hour of them.
pub const RUNNING_EVERY_MS: u64 = 10_000;
const RUNNING_POINTS_MAX: usize = 360;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: u64,
    pub memory_mb: i64,
    pub cpu_millicores: i32,
}

#[derive(Default)]
struct Inner {
    attempts: BTreeMap<AttemptKey, Vec<Sample>>,
    /// Each running attempt's newest sample, whole (the stats rows take every field).
    latest: BTreeMap<AttemptKey, (u64, ResourceUsage)>,
    running: VecDeque<(u64, usize)>,
}

#[derive(Clone, Default)]
pub struct SampleStore {
    inner: Arc<Mutex<Inner>>,
}

/// Halves a series: each pair of points becomes one, at the later time, with the higher values.
fn halve(points: &mut Vec<Sample>) {
    let merged: Vec<Sample> = points
        .chunks(2)
        .map(|pair| Sample {
            at_ms: pair[pair.len() - 1].at_ms,
            memory_mb: pair.iter().map(|s| s.memory_mb).max().unwrap_or(0),
            cpu_millicores: pair.iter().map(|s| s.cpu_millicores).max().unwrap_or(0),
        })
        .collect();
    *points = merged;
}

impl SampleStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, attempt: &AttemptKey, at_ms: u64, usage: &ResourceUsage) {
        let mut inner = self.lock();
        inner.latest.insert(attempt.clone(), (at_ms, *usage));
        let points = inner.attempts.entry(attempt.clone()).or_default();
        if points.len() >= POINTS_MAX {
            halve(points);
        }
        points.push(Sample {
            at_ms,
            memory_mb: usage.memory_mb,
            cpu_millicores: usage.cpu_millicores,
        });
    }

    /// The attempt is over: its series shrinks to what a finished task keeps.
    pub fn finish(&self, attempt: &AttemptKey) {
        let mut inner = self.lock();
        inner.latest.remove(attempt);
        if let Some(points) = inner.attempts.get_mut(attempt) {
            while points.len() > FINISHED_POINTS_MAX {
                halve(points);
            }
            points.shrink_to_fit();
        }
    }

    pub fn remove(&self, attempt: &AttemptKey) {
        let mut inner = self.lock();
        inner.attempts.remove(attempt);
        inner.latest.remove(attempt);
    }

    /// The newest sample of each attempt still running, with when it was taken.
    pub fn latest(&self) -> Vec<(AttemptKey, u64, ResourceUsage)> {
        let inner = self.lock();
        inner
            .latest
            .iter()
            .map(|(key, (at, usage))| (key.clone(), *at, *usage))
            .collect()
    }

    pub fn series(&self, attempt: &AttemptKey) -> Vec<Sample> {
        self.lock()
            .attempts
            .get(attempt)
            .cloned()
            .unwrap_or_default()
    }

    /// Records the running-task count, at most once per `RUNNING_EVERY_MS`; `running` is asked
    /// only then (counting walks every kept task).
    pub fn record_running(&self, at_ms: u64, running: impl FnOnce() -> usize) {
        let mut inner = self.lock();
        if inner
            .running
            .back()
            .is_some_and(|(last, _)| at_ms < last + RUNNING_EVERY_MS)
        {
            return;
        }
        if inner.running.len() >= RUNNING_POINTS_MAX {
            inner.running.pop_front();
        }
        inner.running.push_back((at_ms, running()));
    }

    pub fn running(&self) -> Vec<(u64, usize)> {
        self.lock().running.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::key;

    #[test]
    fn series_stay_bounded_and_keep_their_peaks() {
        let store = SampleStore::default();
        let k = key("job/task-0", 0);
        for i in 0..10_000u64 {
            let usage = ResourceUsage {
                memory_mb: if i == 777 { 5_000 } else { 10 },
                cpu_millicores: 100,
                ..ResourceUsage::default()
            };
            store.record(&k, i * 1000, &usage);
        }
        let series = store.series(&k);
        assert!(series.len() <= POINTS_MAX, "{}", series.len());
        assert_eq!(series.iter().map(|s| s.memory_mb).max(), Some(5_000));
        assert_eq!(series.last().unwrap().at_ms, 9_999_000);
        store.finish(&k);
        assert!(store.series(&k).len() <= FINISHED_POINTS_MAX);
        assert_eq!(
            store.series(&k).iter().map(|s| s.memory_mb).max(),
            Some(5_000)
        );
        store.remove(&k);
        assert!(store.series(&k).is_empty());
        for i in 0..1_000 {
            store.record_running(i * 5_000, || i as usize);
        }
        let running = store.running();
        assert_eq!(running.len(), 360);
        assert!(
            running
                .windows(2)
                .all(|w| w[1].0 - w[0].0 >= RUNNING_EVERY_MS)
        );
    }
}
