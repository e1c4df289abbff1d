//! The shell's side of retention: the core decides which tasks go; this deletes their files,
//! sweeps files no journal record owns (a crash between the tombstone and the deletion), and
//! measures the cache dir's file system for the core's disk thresholds.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::core::AttemptKey;
use crate::shell::logs::store::{LOGS_DIR, pushed_path, segment_paths};

/// What an attempt leaves in the cache dir: its log segments and its workdir.
fn attempt_paths(cache_dir: &Path, key: &AttemptKey) -> [PathBuf; 4] {
    let [log, rotated] = segment_paths(cache_dir, key);
    let pushed = pushed_path(cache_dir, key);
    [log, rotated, pushed, cache_dir.join(key.workdir())]
}

fn remove_path(path: &Path) -> io::Result<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Deletes the files of removed attempts (blocking: run it off the driver).
pub fn remove_attempt_files(cache_dir: &Path, attempts: &[AttemptKey]) -> io::Result<()> {
    for key in attempts {
        for path in attempt_paths(cache_dir, key) {
            remove_path(&path)?;
        }
    }
    Ok(())
}

/// Deletes log files and workdirs of attempts the journal does not hold; returns how many.
/// Called at start-up, before any attempt runs.
pub fn sweep_orphans<'a>(
    cache_dir: &Path,
    known: impl Iterator<Item = &'a AttemptKey>,
) -> io::Result<usize> {
    let owned: BTreeSet<PathBuf> = known
        .flat_map(|key| attempt_paths(cache_dir, key))
        .collect();
    let mut removed = 0;
    for dir in [cache_dir.join(LOGS_DIR), cache_dir.join("tasks")] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if !owned.contains(&path) {
                remove_path(&path)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::key;

    #[test]
    fn orphans_go_and_known_attempts_stay() {
        let dir = std::env::temp_dir().join(format!("iris-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kept = key("job/task-0", 0);
        let orphan = key("job/task-1", 2);
        for k in [&kept, &orphan] {
            let [log, rotated, pushed, workdir] = attempt_paths(&dir, k);
            std::fs::create_dir_all(workdir.join("sub")).unwrap();
            std::fs::create_dir_all(log.parent().unwrap()).unwrap();
            std::fs::write(&log, "x").unwrap();
            std::fs::write(&rotated, "x").unwrap();
            std::fs::write(&pushed, "7").unwrap();
        }
        assert_eq!(sweep_orphans(&dir, [&kept].into_iter()).unwrap(), 4);
        assert!(attempt_paths(&dir, &kept).iter().all(|p| p.exists()));
        assert!(attempt_paths(&dir, &orphan).iter().all(|p| !p.exists()));
        remove_attempt_files(&dir, std::slice::from_ref(&kept)).unwrap();
        assert!(attempt_paths(&dir, &kept).iter().all(|p| !p.exists()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
