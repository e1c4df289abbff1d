//! Why this machine must not take work, by source (a TPU VM without its worker number, a
//! preemption, chips that keep failing, a TPU device still held): shared by whatever finds the
//! trouble and the health answer the controller reads. The worker is healthy while it holds
//! none.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Reasons by source; cheap to clone, every clone the same set.
#[derive(Clone, Debug, Default)]
pub struct Troubles(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    reasons: BTreeMap<&'static str, String>,
    /// Attempts that failed with a TPU bad-node signature since the worker started.
    bad_node_exits: u32,
    /// How many make the machine unhealthy until the worker restarts (`None`: never).
    bad_node_limit: Option<u32>,
}

impl Troubles {
    /// Troubles that hold the machine unhealthy after `limit` bad-node exits (0: never).
    pub fn with_bad_node_limit(limit: u32) -> Troubles {
        let troubles = Troubles::default();
        troubles.inner().bad_node_limit = (limit > 0).then_some(limit);
        troubles
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `source` says the machine is unfit, with `reason`.
    pub fn set(&self, source: &'static str, reason: impl Into<String>) {
        self.inner().reasons.insert(source, reason.into());
    }

    /// `source` no longer holds the machine back.
    pub fn clear(&self, source: &'static str) {
        self.inner().reasons.remove(source);
    }

    /// An attempt failed with a TPU bad-node signature (`fault`); at the limit the machine is
    /// unhealthy until the worker restarts (the chips are the suspects, not the tasks).
    pub fn bad_node_exit(&self, fault: &str) {
        let mut inner = self.inner();
        inner.bad_node_exits += 1;
        let count = inner.bad_node_exits;
        if inner.bad_node_limit.is_some_and(|limit| count >= limit) {
            let reason = format!(
                "{count} tasks failed with TPU bad-node signatures (the last: {fault}); \
                 check the chips and restart the worker"
            );
            inner.reasons.insert("bad-chips", reason);
        }
    }

    /// Every reason, in source order, joined; `None` when healthy.
    pub fn reason(&self) -> Option<String> {
        let inner = self.inner();
        let reasons = &inner.reasons;
        (!reasons.is_empty()).then(|| reasons.values().cloned().collect::<Vec<_>>().join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_kept_per_source_until_cleared() {
        let t = Troubles::default();
        assert_eq!(t.reason(), None);
        t.set("tpu", "no worker number");
        t.clone().set("preemption", "preempted");
        assert_eq!(t.reason().as_deref(), Some("preempted; no worker number"));
        t.clear("preemption");
        assert_eq!(t.reason().as_deref(), Some("no worker number"));
    }

    #[test]
    fn bad_node_exits_make_the_machine_unhealthy_at_the_limit() {
        let t = Troubles::with_bad_node_limit(2);
        t.bad_node_exit("No accelerator found");
        assert_eq!(t.reason(), None, "one could be the task's bad luck");
        t.clone().bad_node_exit("TPU initialization failed");
        let reason = t.reason().unwrap();
        assert!(reason.starts_with("2 tasks failed"), "{reason}");
        assert!(reason.contains("TPU initialization failed"), "{reason}");
        let never = Troubles::with_bad_node_limit(0);
        (0..10).for_each(|_| never.bad_node_exit("x"));
        assert_eq!(never.reason(), None);
    }
}
