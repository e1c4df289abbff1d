//! A restarted worker's first steps: the journal replayed into the core, and the containers that
//! survived adopted (or removed and reported lost).

use tracing::{error, info, warn};

use super::Driver;
use crate::core::{AttemptKey, Event, RecoveredAttempt, WorkerCore};

impl Driver {
    pub(super) fn adopt(&mut self, adopted: Vec<RecoveredAttempt>) {
        for record in adopted {
            let key = AttemptKey {
                task_id: record.spec.task_id.clone(),
                attempt_id: record.spec.attempt_id,
            };
            let now = self.now_ms();
            let runtime = self.parts.runtime.clone();
            if self.core.adopt(now, record.clone()) {
                info!(attempt = %key, "adopted a running container");
                let sink = self.sink(&key);
                let events = self.inbox.events.clone();
                // An engine that never answers must not leave the attempt unwatched for good.
                let limit = self.parts.deadlines.start;
                tokio::spawn(async move {
                    let error = match tokio::time::timeout(limit, runtime.resume(&key, sink)).await
                    {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e.message,
                        Err(_) => format!("resume timed out after {limit:?}"),
                    };
                    let _ = events.send(Event::RuntimeLost {
                        attempt: key,
                        error,
                    });
                });
            } else {
                warn!(attempt = %key, "could not adopt; removing its container");
                self.core.recover_leftover(now, record);
            }
        }
    }
}

/// Replays the journal: finished attempts come back as they were, live ones as WORKER_FAILED.
pub(super) fn recover(
    core: &mut WorkerCore,
    records: Vec<Result<RecoveredAttempt, String>>,
    now_ms: u64,
) {
    for record in records {
        match record {
            Ok(record) => {
                if record.outcome.is_none() {
                    warn!(task_id = %record.spec.task_id, attempt_id = record.spec.attempt_id,
                        "attempt was live when the worker stopped; reporting it WORKER_FAILED");
                }
                core.recover(now_ms, record);
            }
            Err(e) => error!(error = %e, "journal record not recovered"),
        }
    }
}
