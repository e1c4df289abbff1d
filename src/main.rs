//! The `iris-worker` binary. The serving shell arrives with the worker-binary issue; until then
//! the binary says so rather than pretending to run.

fn main() -> std::process::ExitCode {
    eprintln!(
        "iris-worker {}: the serving shell is not built yet (see README.md, Status)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
