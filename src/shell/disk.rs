//! How much disk: the file system holding a path (statvfs), and the bytes under a directory.
//! Retention, health and the probe all measure through here.

use std::fs;
use std::io;
use std::path::Path;

/// How full the file system holding a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsUsage {
    pub used_bytes: u64,
    pub total_bytes: u64,
    /// What an unprivileged writer can still write.
    pub available_bytes: u64,
    pub used_inodes: u64,
    pub total_inodes: u64,
}

impl FsUsage {
    pub fn of(path: &Path) -> io::Result<FsUsage> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a statvfs the call fills in.
        if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let block = stat.f_frsize as u64;
        Ok(FsUsage {
            used_bytes: (stat.f_blocks as u64).saturating_sub(stat.f_bfree as u64) * block,
            // What an unprivileged writer can reach: used plus available.
            total_bytes: ((stat.f_blocks as u64).saturating_sub(stat.f_bfree as u64)
                + stat.f_bavail as u64)
                * block,
            available_bytes: stat.f_bavail as u64 * block,
            used_inodes: (stat.f_files as u64).saturating_sub(stat.f_ffree as u64),
            total_inodes: stat.f_files as u64,
        })
    }

    pub fn bytes_percent(&self) -> u8 {
        percent(self.used_bytes, self.total_bytes)
    }

    /// 0 on file systems without an inode count (some report none).
    pub fn inodes_percent(&self) -> u8 {
        percent(self.used_inodes, self.total_inodes)
    }
}

fn percent(used: u64, total: u64) -> u8 {
    if total == 0 {
        return 0;
    }
    (used.saturating_mul(100) / total).min(100) as u8
}

/// Bytes under `dir`, walking at most `entries_max` entries (a huge tree is under-counted rather
/// than stalling the sampler).
pub fn disk_usage_bytes(dir: &Path, entries_max: usize) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(path) = stack.pop() {
        let Ok(entries) = fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > entries_max {
                return total;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_file_system_and_a_tree() {
        let dir = std::env::temp_dir().join(format!("iris-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/f"), [0u8; 1000]).unwrap();
        std::fs::write(dir.join("g"), [0u8; 24]).unwrap();
        assert_eq!(disk_usage_bytes(&dir, 100), 1024);
        assert!(
            disk_usage_bytes(&dir, 1) < 1024,
            "the entry cap under-counts"
        );
        let usage = FsUsage::of(&dir).unwrap();
        assert!(usage.used_bytes > 0 && usage.used_bytes <= usage.total_bytes);
        assert!(usage.available_bytes <= usage.total_bytes);
        assert!(usage.bytes_percent() <= 100);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
