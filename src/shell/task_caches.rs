//! The caches every 2026-06 task of the worker shares: uv's and cargo's, directories under the
//! cache dir (`core::CACHE_MOUNTS`) that docker mounts into setup and run containers
//! and the process runtime points the task's paths at. Made at start-up, and bounded: a task's
//! venv is links into uv's cache, so the caches are emptied only when no task can be using them,
//! at start-up before any task runs and when no container survived to be adopted, if together
//! they hold more than `--task-cache-bytes`. The next tasks fill them again.

use std::path::Path;

use crate::core::CACHE_MOUNTS;
use crate::shell::disk::disk_usage_bytes;

/// Entries a start-up measurement walks at most (a larger cache is under-counted).
const ENTRIES_MAX: usize = 5_000_000;

/// Makes the cache directories; empties them first when they hold more than `bytes_max` and
/// nothing is `in_use`. Returns the bytes measured and whether they were emptied.
pub fn prepare(cache_dir: &Path, bytes_max: u64, in_use: bool) -> (u64, bool) {
    let dirs: Vec<_> = CACHE_MOUNTS
        .iter()
        .map(|(_, name)| cache_dir.join(name))
        .collect();
    let bytes: u64 = dirs.iter().map(|d| disk_usage_bytes(d, ENTRIES_MAX)).sum();
    let empty = bytes > bytes_max && !in_use;
    for dir in &dirs {
        if empty {
            // Renamed at once, deleted in the background: start-up does not wait for it.
            let old = dir.with_extension(format!("old-{}", std::process::id()));
            if std::fs::rename(dir, &old).is_ok() {
                std::thread::spawn(move || std::fs::remove_dir_all(old));
            }
        }
        let _ = std::fs::create_dir_all(dir);
    }
    (bytes, empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_bound_and_unused_the_caches_are_emptied_else_kept() {
        let dir = std::env::temp_dir().join(format!("iris-task-caches-{}", std::process::id()));
        let uv = dir.join("uv-cache");
        std::fs::create_dir_all(&uv).unwrap();
        std::fs::write(uv.join("wheel"), vec![0u8; 4096]).unwrap();
        assert_eq!(
            prepare(&dir, 1 << 20, false),
            (4096, false),
            "under the bound"
        );
        assert_eq!(prepare(&dir, 1024, true), (4096, false), "in use");
        assert!(uv.join("wheel").exists());
        assert_eq!(prepare(&dir, 1024, false), (4096, true));
        assert!(!uv.join("wheel").exists());
        for (_, name) in CACHE_MOUNTS {
            assert!(dir.join(name).is_dir(), "{name} made");
        }
        // The emptied copy may still be going in the background.
        let _ = std::fs::remove_dir_all(&dir);
    }
}
