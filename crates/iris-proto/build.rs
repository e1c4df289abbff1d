//! Compiles the messages of the wire contract with protox (pure Rust), so no system `protoc` is
//! needed, and gives them the canonical proto3 JSON mapping (pbjson) that Connect's
//! `application/json` speaks. Services are not generated here: the worker crate generates the
//! tonic ones over these types (`extern_path`), so this crate never depends on tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(
        [
            "proto/iris/cluster.proto",
            "proto/iris/worker_journal.proto",
        ],
        ["proto"],
    )?;
    let descriptors = prost::Message::encode_to_vec(&fds);
    prost_build::Config::new().compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        // A newer controller's fields must not break an older worker.
        .ignore_unknown_fields()
        .build(&[".iris.cluster"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
