//! Running many seeds side by side, and what is printed about them. Each run is single-threaded
//! and independent, so seeds spread over threads without changing any run.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::plan::Shape;
use crate::shared::Variant;
use crate::world::{Outcome, run_seed};

/// Runs `seeds` on `jobs` threads; `each` sees every outcome as it completes. Returns the
/// outcomes in seed order.
pub fn run_seeds(
    seeds: &[u64],
    shape: &Shape,
    variant: &Variant,
    jobs: usize,
    each: &(dyn Fn(&Outcome) + Sync),
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = run_seed(seed, shape.clone(), variant.clone());
                    each(&outcome);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(outcome);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|o| o.seed);
    results
}

/// The line printed for every seed: its seed and the hash of its trace.
pub fn summary_line(o: &Outcome) -> String {
    format!(
        "seed {} hash {:016x} events {} sim {:.1} s wall {} ms {}",
        o.seed,
        o.hash,
        o.events,
        o.sim_ms as f64 / 1000.0,
        o.wall.as_millis(),
        if o.passed() { "ok" } else { "FAILED" }
    )
}

const VIOLATIONS_SHOWN: usize = 10;

/// What a failed seed prints: the violations, the fault schedule, the last events and `repro`.
pub fn failure_report(o: &Outcome, repro: &str) -> String {
    let mut out = format!("\nFAILED seed {}\nviolations:\n", o.seed);
    for v in o.violations.iter().take(VIOLATIONS_SHOWN) {
        out += &format!("  {v}\n");
    }
    if o.violations.len() > VIOLATIONS_SHOWN {
        out += &format!("  ({} more)\n", o.violations.len() - VIOLATIONS_SHOWN);
    }
    out += "fault schedule:\n";
    for f in &o.faults {
        out += &format!("  {f}\n");
    }
    out += "last events:\n";
    for line in &o.tail {
        out += &format!("  {line}\n");
    }
    out += &format!("repro: {repro}\n");
    out
}
