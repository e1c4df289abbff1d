//! `iris-sim`: runs seeds and reports. `SIM_SEED=N` replays one seed; `--seeds K` (or
//! `SIM_SEEDS=K`) runs K seeds from `--start`. Exits non-zero if any seed fails.

use std::time::{Duration, Instant};

use clap::Parser;
use iris_sim::{Outcome, Shape, Variant, failure_report, run_seeds, summary_line};

#[derive(Parser, Debug)]
#[command(about = "Deterministic simulation of Iris workers and a controller")]
struct Args {
    /// Replay exactly this seed.
    #[arg(long, env = "SIM_SEED")]
    seed: Option<u64>,
    /// How many seeds to run (from --start).
    #[arg(long, env = "SIM_SEEDS", default_value_t = 100)]
    seeds: u64,
    /// The first seed of a --seeds run.
    #[arg(long, env = "SIM_START", default_value_t = 0)]
    start: u64,
    /// Worker hosts per run.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Threads running seeds side by side (each run is single-threaded and independent).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Run a deliberately broken worker (needs the `planted` feature).
    #[cfg(feature = "planted")]
    #[arg(long)]
    planted: Option<String>,
}

fn variant(args: &Args) -> Variant {
    #[cfg(feature = "planted")]
    {
        let planted = args.planted.as_deref().map(|name| {
            iris_worker::core::PlantedBug::from_name(name)
                .unwrap_or_else(|| panic!("unknown planted bug {name}"))
        });
        Variant { planted }
    }
    #[cfg(not(feature = "planted"))]
    {
        let _ = args;
        Variant::default()
    }
}

fn repro(args: &Args, seed: u64) -> String {
    #[cfg(feature = "planted")]
    if let Some(bug) = &args.planted {
        return format!(
            "SIM_SEED={seed} cargo run -p iris-sim --release --features planted -- --workers {} --planted {bug}",
            args.workers
        );
    }
    format!(
        "SIM_SEED={seed} cargo run -p iris-sim --release -- --workers {}",
        args.workers
    )
}

fn main() {
    if std::env::var_os("SIM_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("SIM_LOG"))
            .with_writer(std::io::stderr)
            .init();
    }
    let args = Args::parse();
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.start..args.start + args.seeds).collect(),
    };
    let shape = Shape {
        workers: args.workers,
        ..Shape::default()
    };
    let variant = variant(&args);
    let started = Instant::now();
    let each = |o: &Outcome| {
        println!("{}", summary_line(o));
        if !o.passed() {
            eprint!("{}", failure_report(o, &repro(&args, o.seed)));
        }
    };
    let results = run_seeds(&seeds, &shape, &variant, args.jobs, &each);
    let wall = started.elapsed();
    let sim: Duration = results
        .iter()
        .map(|o| Duration::from_millis(o.sim_ms))
        .sum();
    let mut failed: Vec<u64> = results
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.seed)
        .collect();
    failed.sort_unstable();
    println!(
        "{} seeds in {:.1} s: {:.1} seeds/s, simulated {:.0} s, sim/wall {:.0}x, {} failed {:?}",
        results.len(),
        wall.as_secs_f64(),
        results.len() as f64 / wall.as_secs_f64(),
        sim.as_secs_f64(),
        sim.as_secs_f64() / wall.as_secs_f64(),
        failed.len(),
        failed
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
