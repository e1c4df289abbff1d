//! `iris-sim`: runs seeds and reports. `SIM_SEED=N` replays one seed; `--seeds K` (or
//! `SIM_SEEDS=K`) runs K seeds from `--start`. Exits non-zero if any seed fails.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use iris_sim::{Outcome, Shape, Variant, run_seed};

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
            iris_worker::core::planted::PlantedBug::from_name(name)
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

fn report_failure(args: &Args, o: &Outcome) {
    let mut out = format!("\nFAILED seed {}\nviolations:\n", o.seed);
    for v in &o.violations {
        out += &format!("  {v}\n");
    }
    out += "fault schedule:\n";
    for f in &o.faults {
        out += &format!("  {f}\n");
    }
    out += "last events:\n";
    for line in &o.tail {
        out += &format!("  {line}\n");
    }
    out += &format!("repro: {}\n", repro(args, o.seed));
    eprint!("{out}");
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
    let next = AtomicU64::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&seed) = seeds.get(i) else { return };
                    let o = run_seed(seed, shape.clone(), variant.clone());
                    println!(
                        "seed {seed} hash {:016x} events {} sim {:.1} s wall {} ms {}",
                        o.hash,
                        o.events,
                        o.sim_ms as f64 / 1000.0,
                        o.wall.as_millis(),
                        if o.passed() { "ok" } else { "FAILED" }
                    );
                    if !o.passed() {
                        report_failure(&args, &o);
                    }
                    results.lock().unwrap().push(o);
                }
            });
        }
    });
    let wall = started.elapsed();
    let results = results.into_inner().unwrap();
    let sim: Duration = results.iter().map(|o| Duration::from_millis(o.sim_ms)).sum();
    let mut failed: Vec<u64> = results.iter().filter(|o| !o.passed()).map(|o| o.seed).collect();
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
