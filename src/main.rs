//! The `iris-worker` binary.

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use iris_worker::cli::{Cli, LogFormat, TopCommand, client, worker_config};
use iris_worker::shell::logs::worker_log::WorkerLogTap;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The worker's log on stderr (`RUST_LOG`, default info), and INFO and above also kept for the
/// cluster's log service (`WorkerLogTap`: a 2026-06 worker ships it under its worker key).
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let stderr = match format {
        LogFormat::Text => stderr.boxed(),
        LogFormat::Json => stderr.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(stderr.with_filter(filter))
        .with(WorkerLogTap)
        .init();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `iris-worker shim --parent-pid P -- ARGV...`, parsed by hand: the shim runs once per task
/// start, and building the full clap command tree would cost more than the rest of its start-up.
fn shim_args(args: &[String]) -> Option<(i32, &[String])> {
    match args {
        [_, shim, flag, pid, dashes, argv @ ..]
            if shim == "shim" && flag == "--parent-pid" && dashes == "--" =>
        {
            Some((pid.parse().ok()?, argv))
        }
        _ => None,
    }
}

async fn cleanup(cache_dir: std::path::PathBuf) -> anyhow::Result<i32> {
    match iris_worker::shell::runtime::docker::remove_all_managed().await {
        Ok(removed) => println!("removed {removed} iris-managed containers"),
        Err(e) => eprintln!("iris-worker: no containers removed: {e}"),
    }
    match std::fs::remove_dir_all(&cache_dir) {
        Ok(()) => println!("removed {}", cache_dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("removing {}: {e}", cache_dir.display()),
    }
    Ok(0)
}

/// `serve --worker-config FILE`: the command line parsed again with the file's flags spliced in
/// before its own, so a flag on the command line wins over the file.
fn with_worker_config(args: &[String], cli: Cli) -> anyhow::Result<Cli> {
    let TopCommand::Serve(serve) = &cli.command else {
        return Ok(cli);
    };
    let Some(path) = &serve.worker_config else {
        return Ok(cli);
    };
    let config = worker_config::read(path)?;
    for line in &config.unused {
        eprintln!("iris-worker: --worker-config {}: {line}", path.display());
    }
    let serve_at = args
        .iter()
        .position(|a| a == "serve")
        .context("no serve command")?;
    let spliced = worker_config::splice(args, serve_at, &config.args);
    let matches = Cli::command()
        .args_override_self(true)
        .try_get_matches_from(&spliced)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let TopCommand::Serve(serve) = &mut cli.command {
        serve.config_controller_token = config.controller_token;
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some((parent_pid, argv)) = shim_args(&args) {
        iris_worker::shell::runtime::shim::run(parent_pid, argv);
    }
    let cli = match with_worker_config(&args, Cli::parse()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("iris-worker: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result: anyhow::Result<i32> = match cli.command {
        // Before any runtime exists: the shim forks, which wants a single thread.
        TopCommand::Shim { parent_pid, argv } => {
            iris_worker::shell::runtime::shim::run(parent_pid, &argv)
        }
        TopCommand::Serve(args) => {
            init_tracing(args.log_format);
            iris_worker::shell::logs::worker_log::start_keeping();
            match args.options(cli.target.auth_token_file.as_deref()) {
                Ok(options) => runtime()
                    .block_on(iris_worker::shell::serve::serve(options))
                    .map(|()| 0),
                Err(e) => Err(e),
            }
        }
        TopCommand::Task { command } => runtime().block_on(client::task(&cli.target, command)),
        TopCommand::Health => runtime().block_on(client::health(&cli.target)),
        TopCommand::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "iris-worker", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(0)
        }
        TopCommand::Cleanup { cache_dir } => runtime().block_on(cleanup(cache_dir)),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            eprintln!("iris-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
