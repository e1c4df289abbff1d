//! Why this machine must not take work, by source (a TPU VM without its worker number, a
//! preemption, chips that failed): shared by whatever finds the trouble and the health answer
//! the controller reads. The worker is healthy while it holds none.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Reasons by source; cheap to clone, every clone the same set.
#[derive(Clone, Debug, Default)]
pub struct Troubles(Arc<Mutex<BTreeMap<&'static str, String>>>);

impl Troubles {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `source` says the machine is unfit, with `reason`.
    pub fn set(&self, source: &'static str, reason: impl Into<String>) {
        self.map().insert(source, reason.into());
    }

    /// `source` no longer holds the machine back.
    pub fn clear(&self, source: &'static str) {
        self.map().remove(source);
    }

    /// Every reason, in source order, joined; `None` when healthy.
    pub fn reason(&self) -> Option<String> {
        let map = self.map();
        (!map.is_empty()).then(|| map.values().cloned().collect::<Vec<_>>().join("; "))
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
}
