//! Debian's `docker-registry`, for the tests that pull images.

use std::time::Duration;

use super::free_port;

/// Debian's `docker-registry` on a free loopback port (the engine trusts loopback registries
/// without TLS); stopped when dropped.
pub struct Registry {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Registry {
    pub fn start(dir: &std::path::Path) -> Registry {
        let port = free_port();
        let config = dir.join("registry.yml");
        let storage = dir.join("registry-data");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\n\
                 http: {{addr: 127.0.0.1:{port}}}\n",
                storage.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            // It logs every 404 it answers; the tests look at what the worker says.
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's package; scripts/setup-test-deps installs it)");
        super::wait_for_listener(port, Duration::from_secs(30), "the registry");
        Registry {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
