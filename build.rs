//! Generates the tonic services (client and server) of the wire contract with protox (pure Rust,
//! no system `protoc`). The messages are not generated here: they live in `iris-proto`, which
//! the services name through `extern_path`.

/// `iris-worker --version` names the commit it was built from (`unknown` outside a git
/// checkout). Only HEAD is watched, so editing files does not rebuild the world.
fn git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=IRIS_WORKER_GIT_COMMIT={commit}");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["iris/cluster.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".iris.cluster", "::iris_proto::cluster")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    git_commit();
    Ok(())
}
