//! Compiles the messages of both wire contracts in the top-level `proto/` with protox (pure Rust),
//! so no system `protoc` is needed, and gives them the canonical proto3 JSON mapping (pbjson) that
//! Connect's `application/json` speaks. Both eras name their package `iris.cluster`, so each era
//! is generated into its own directory and module. Services are not generated here: the worker
//! crate generates the tonic ones over these types (`extern_path`), so this crate never depends
//! on tonic.

use std::path::{Path, PathBuf};

const PROTO: &str = "../../proto";

/// Generates `files` (and their imports) into `out`, messages and their JSON mapping.
fn generate(
    files: &[&str],
    out: &Path,
    json_packages: &[&str],
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out)?;
    let paths: Vec<String> = files.iter().map(|f| format!("{PROTO}/{f}")).collect();
    let fds = protox::compile(&paths, [PROTO])?;
    let descriptors = prost::Message::encode_to_vec(&fds);
    prost_build::Config::new().out_dir(out).compile_fds(fds)?;
    pbjson_build::Builder::new()
        .out_dir(out)
        .register_descriptors(&descriptors)?
        // A newer controller's fields must not break an older worker.
        .ignore_unknown_fields()
        .build(json_packages)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // 2026-01, the task era, and the worker's own journal record.
    generate(
        &["iris/cluster.proto", "iris/worker_journal.proto"],
        &out,
        &[".iris.cluster"],
    )?;
    // 2026-06, the reconcile era, and the finelog log service it pushes logs and stats rows to.
    generate(
        &[
            "iris/v2026_06/cluster.proto",
            "finelog/logging.proto",
            "finelog/stats.proto",
        ],
        &out.join("v2026_06"),
        &[".iris", ".finelog"],
    )?;
    println!("cargo:rerun-if-changed={PROTO}");
    Ok(())
}
