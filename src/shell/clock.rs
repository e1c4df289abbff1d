//! The worker's clock: the milliseconds the core is given, and the instants the driver sleeps
//! until. tokio's clock, so tests and the simulator can drive it.

use std::time::Duration;

use tokio::time::Instant;

/// Milliseconds for the core: wall-clock at start plus monotonic time since, so core time never
/// jumps backwards while staying comparable to wall-clock timestamps.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    epoch_ms: u64,
}

impl Clock {
    pub fn new(epoch_ms: u64) -> Clock {
        Clock {
            start: Instant::now(),
            epoch_ms,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch_ms + self.start.elapsed().as_millis() as u64
    }

    pub fn instant_of(&self, deadline_ms: u64) -> Instant {
        self.start + Duration::from_millis(deadline_ms.saturating_sub(self.epoch_ms))
    }

    pub fn uptime(&self) -> Duration {
        self.start.elapsed()
    }
}
