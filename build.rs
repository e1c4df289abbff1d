//! Compiles the wire contract with protox (pure Rust), so no system `protoc` is needed. The
//! messages also get the canonical proto3 JSON mapping (pbjson), which Connect's
//! `application/json` speaks.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(
        [
            "proto/iris/cluster.proto",
            "proto/iris/worker_journal.proto",
        ],
        ["proto"],
    )?;
    let descriptors = prost::Message::encode_to_vec(&fds);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        // A newer controller's fields must not break an older worker.
        .ignore_unknown_fields()
        .build(&[".iris.cluster"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
