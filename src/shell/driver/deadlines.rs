//! The deadline of every runtime call, and `timed`: the one place a call is put under its
//! deadline and measured.

use std::future::Future;
use std::time::Duration;

use tokio::time::error::Elapsed;

use crate::core::{Event, KILL_REPEAT_MS};
use crate::shell::metrics::Metrics;

/// Deadlines of runtime calls.
#[derive(Clone, Debug)]
pub struct CallDeadlines {
    pub prepare: Duration,
    pub fetch: Duration,
    pub build: Duration,
    pub start: Duration,
    pub signal: Duration,
    pub remove: Duration,
}

impl Default for CallDeadlines {
    fn default() -> Self {
        CallDeadlines {
            prepare: Duration::from_secs(60),
            fetch: Duration::from_secs(600),
            build: Duration::from_secs(1800),
            start: Duration::from_secs(120),
            signal: Duration::from_secs(10),
            remove: Duration::from_secs(60),
        }
    }
}

impl CallDeadlines {
    /// The longest of them: a call an engine swallowed has ended by then.
    pub fn longest(&self) -> Duration {
        [
            self.prepare,
            self.fetch,
            self.build,
            self.start,
            self.signal,
            self.remove,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }
}

pub(super) const REMOVE_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// As often as SIGKILL repeats: once the engine answers again, a container being removed is gone
/// within a call deadline plus this.
pub(super) const REMOVE_RETRY_MAX: Duration = Duration::from_millis(KILL_REPEAT_MS);

/// Whether a call's outcome counts as a success in `iris_worker_runtime_call_*`.
pub(super) trait Succeeded {
    fn succeeded(&self) -> bool;
}

impl<T, E> Succeeded for Result<T, E> {
    fn succeeded(&self) -> bool {
        self.is_ok()
    }
}

impl Succeeded for Event {
    fn succeeded(&self) -> bool {
        !matches!(
            self,
            Event::WorkdirFailed { .. }
                | Event::BundleFailed { .. }
                | Event::BuildFailed { .. }
                | Event::RuntimeLost { .. }
        )
    }
}

/// Runs a runtime call under its deadline and records its latency and outcome (a call that ran
/// out of time is a failure).
pub(super) async fn timed<T: Succeeded>(
    metrics: &Metrics,
    call: &'static str,
    limit: Duration,
    future: impl Future<Output = T>,
) -> Result<T, Elapsed> {
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(limit, future).await;
    let ok = outcome.as_ref().is_ok_and(Succeeded::succeeded);
    metrics.runtime_call(call, started, ok);
    outcome
}
