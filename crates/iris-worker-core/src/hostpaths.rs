//! Iris's container layout on the host. Iris's client writes its jobs for a container: the
//! workdir at `/app`, uv's cache at `/uv/cache`, cargo's at `/root/.cargo/...`. The docker runtime
//! mounts host directories there (`CACHE_MOUNTS`, shared by every task of the worker); the
//! process runtime runs on the host, so those paths in a task's argv and env point at the same
//! host directories instead (as Iris's process runtime maps them).

/// uv's cache and cargo's registry and target: each a directory `<cache dir>/<name>` mounted at
/// the path, into the setup container and the run container alike. `uv sync --link-mode
/// symlink` links a venv's packages into uv's cache, so a run container without the setup's
/// cache would see broken packages.
pub const CACHE_MOUNTS: &[(&str, &str)] = &[
    ("/uv/cache", "uv-cache"),
    ("/root/.cargo/registry", "cargo-registry"),
    ("/root/.cargo/target", "cargo-target"),
];

/// Where the workdir is in a container of the reconcile era.
pub const APP_DIR: &str = "/app";
/// `UV_PYTHON_INSTALL_DIR` of Iris's tasks: pythons uv downloads land in the shared cache.
pub const UV_PYTHON_INSTALL_DIR: &str = "/uv/cache/python";
/// `CARGO_TARGET_DIR` of Iris's tasks.
pub const CARGO_TARGET_DIR: &str = "/root/.cargo/target";

/// `path` (a container path) on the host: `workdir` for `/app`, `cache_root/<name>` for a cache
/// mount, each with the rest of the path; `None` when `path` is under none of them. Only whole
/// components match: `/apple` is not under `/app`.
pub fn map(path: &str, workdir: &str, cache_root: &str) -> Option<String> {
    let mounts = std::iter::once((APP_DIR, workdir.to_string())).chain(
        CACHE_MOUNTS
            .iter()
            .map(|(at, name)| (*at, format!("{cache_root}/{name}"))),
    );
    for (at, host) in mounts {
        if let Some(rest) = path.strip_prefix(at)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return Some(format!("{host}{rest}"));
        }
    }
    None
}

/// A process-runtime task's argv: container paths mapped (`map`), and a bare `python` or
/// `python3` as the command is the worker's interpreter (`python`), as Iris's process runtime
/// runs `Entrypoint.from_command("python", ...)` with its own.
pub fn map_argv(argv: &[String], workdir: &str, cache_root: &str, python: &str) -> Vec<String> {
    argv.iter()
        .enumerate()
        .map(|(i, arg)| match (i, arg.as_str()) {
            (0, "python" | "python3") => python.to_string(),
            _ => map(arg, workdir, cache_root).unwrap_or_else(|| arg.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_components_of_the_layout_are_mapped() {
        let m = |p| map(p, "/c/tasks/t", "/c");
        assert_eq!(m("/app").as_deref(), Some("/c/tasks/t"));
        assert_eq!(m("/app/_run.py").as_deref(), Some("/c/tasks/t/_run.py"));
        assert_eq!(m("/uv/cache/python").as_deref(), Some("/c/uv-cache/python"));
        assert_eq!(m("/root/.cargo/target").as_deref(), Some("/c/cargo-target"));
        assert_eq!(m("/apple"), None);
        assert_eq!(m("app/x"), None);
        assert_eq!(m("/root/.cargo"), None);
    }

    #[test]
    fn the_interpreter_is_replaced_only_as_the_command() {
        let argv: Vec<String> = ["python3", "-u", "/app/main.py", "python"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            map_argv(&argv, "/w", "/c", "/usr/bin/python3.11"),
            ["/usr/bin/python3.11", "-u", "/w/main.py", "python"]
        );
    }
}
