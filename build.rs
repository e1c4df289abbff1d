//! Generates the tonic services (client and server) of the wire contract with protox (pure Rust,
//! no system `protoc`). The messages are not generated here: they live in `iris-proto`, which
//! the services name through `extern_path`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["iris/cluster.proto"], ["crates/iris-proto/proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".iris.cluster", "::iris_proto::cluster")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=crates/iris-proto/proto");
    Ok(())
}
