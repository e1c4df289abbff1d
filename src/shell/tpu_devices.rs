//! A TPU VM's chips still held when the worker starts (a task of a preempted or crashed run
//! that did not let go of `/dev/vfio`): a task placed here would fail to initialise, so the
//! worker reports itself unhealthy, naming the devices, until they are free. Checked only while
//! no task of this worker runs (an adopted task holds its chips rightly).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::shell::driver::{Command, DriverHandle};
use crate::shell::trouble::Troubles;

/// Where the VFIO groups of the TPU chips are.
pub const VFIO_DIR: &str = "/dev/vfio";
const RECHECK_EVERY: Duration = Duration::from_secs(5);
const SOURCE: &str = "tpu-devices";

/// Whether opening `path` says another process holds it.
fn held(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    matches!(opened, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
}

/// The groups under `dir` (not its `vfio` control node) that `is_held` says are held.
pub fn busy_groups(dir: &Path, is_held: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut groups: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "vfio")
        .map(|e| e.path())
        .filter(|p| is_held(p))
        .collect();
    groups.sort();
    groups
}

/// Checks the chips until they are free (or a task of ours runs), holding the machine
/// unhealthy meanwhile.
pub fn spawn_watch(driver: DriverHandle, troubles: Troubles) {
    tokio::spawn(async move {
        loop {
            let running = driver
                .ask(|reply| Command::Health { reply })
                .await
                .map_or(0, |h| h.running_tasks);
            let busy = match running {
                0 => tokio::task::spawn_blocking(|| busy_groups(Path::new(VFIO_DIR), held))
                    .await
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if busy.is_empty() {
                troubles.clear(SOURCE);
                return;
            }
            let shown: Vec<String> = busy.iter().map(|p| p.display().to_string()).collect();
            let reason = format!(
                "TPU devices still held by another process ({}): after a preemption or crash, \
                 a task of an earlier run may not have let go",
                shown.join(", ")
            );
            tracing::error!("{reason}");
            troubles.set(SOURCE, reason);
            tokio::time::sleep(RECHECK_EVERY).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_groups_are_named_and_the_control_node_is_not_a_group() {
        let dir = std::env::temp_dir().join(format!("vfio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["vfio", "0", "1", "2"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let busy = busy_groups(&dir, |p| p.ends_with("1") || p.ends_with("vfio"));
        assert_eq!(busy, vec![dir.join("1")]);
        assert!(busy_groups(&dir, |_| false).is_empty());
        assert!(busy_groups(Path::new("/nonexistent-vfio"), |_| true).is_empty());
        // A plain file is never held.
        assert!(!held(&dir.join("0")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
