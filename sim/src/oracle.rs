//! The oracle: the run's trace (every event worth replaying, stamped with simulated time and
//! folded into a hash) and the violations found. Both the controller and the world's loop write
//! to it; it never decides anything.

use std::fmt::Display;

use crate::rng::fnv1a;

/// Lines of the trace kept for printing on failure.
const TAIL_LINES: usize = 60;

#[derive(Debug, Default)]
pub struct Oracle {
    hash: u64,
    events: u64,
    tail: std::collections::VecDeque<String>,
    pub violations: Vec<String>,
}

impl Oracle {
    pub fn event(&mut self, now_ms: u64, what: impl Display) {
        let line = format!("{now_ms:>7} {what}");
        self.hash = fnv1a(format!("{:016x}{line}", self.hash).as_bytes());
        self.events += 1;
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("{line}");
        }
        self.tail.push_back(line);
    }

    pub fn violation(&mut self, now_ms: u64, what: impl Display) {
        let what = what.to_string();
        self.event(now_ms, format!("VIOLATION {what}"));
        self.violations.push(format!("at {now_ms} ms: {what}"));
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn tail(&self) -> impl Iterator<Item = &String> {
        self.tail.iter()
    }
}
