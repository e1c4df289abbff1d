//! The `iris-worker` binary.

use std::process::ExitCode;

use clap::Parser;
use iris_worker::cli::{Cli, LogFormat, TopCommand, client};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some((parent_pid, argv)) = shim_args(&args) {
        iris_worker::shell::runtime::shim::run(parent_pid, argv);
    }
    let cli = Cli::parse();
    let result: anyhow::Result<i32> = match cli.command {
        // Before any runtime exists: the shim forks, which wants a single thread.
        TopCommand::Shim { parent_pid, argv } => {
            iris_worker::shell::runtime::shim::run(parent_pid, &argv)
        }
        TopCommand::Serve(args) => {
            init_tracing(args.log_format);
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
