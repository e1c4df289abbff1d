//! The simulator bites: every deliberately broken worker is caught within 200 seeds.
//! Needs `--features planted` (`cargo test -p iris-sim --features planted --test planted`).

use iris_sim::{Shape, Variant, run_seeds, summary_line};
use iris_worker::core::PlantedBug;

const SEEDS_MAX: u64 = 200;
const BATCH: u64 = 10;

/// The first seed (in batches of 10) whose run breaks an invariant.
fn first_catching_seed(bug: PlantedBug) -> Option<(u64, String)> {
    let variant = Variant { planted: Some(bug) };
    for start in (0..SEEDS_MAX).step_by(BATCH as usize) {
        let seeds: Vec<u64> = (start..start + BATCH).collect();
        let outcomes = run_seeds(&seeds, &Shape::default(), &variant, 2, &|_| {});
        if let Some(o) = outcomes.iter().find(|o| !o.passed()) {
            println!("{}: {}", bug.name(), summary_line(o));
            return Some((o.seed, o.violations[0].clone()));
        }
    }
    None
}

#[test]
fn every_planted_bug_is_caught_within_200_seeds() {
    for bug in PlantedBug::ALL {
        let caught = first_catching_seed(bug);
        let (seed, violation) = caught
            .unwrap_or_else(|| panic!("planted bug {} survived {SEEDS_MAX} seeds", bug.name()));
        println!(
            "{} caught by seed {seed}: {violation}\n  repro: SIM_SEED={seed} cargo run -p iris-sim \
             --release --features planted -- --planted {}",
            bug.name(),
            bug.name()
        );
    }
}

#[test]
fn the_same_seeds_pass_without_the_planted_bug() {
    let seeds: Vec<u64> = (0..BATCH).collect();
    let outcomes = run_seeds(&seeds, &Shape::default(), &Variant::default(), 2, &|_| {});
    assert!(outcomes.iter().all(|o| o.passed()));
}
