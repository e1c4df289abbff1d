//! Attempt workdirs under the cache dir, the same for every runtime: created fresh, filled with
//! the attempt's files and bundle, removed when the attempt is over (logs live elsewhere).

use std::path::Path;

use crate::core::AttemptKey;
use crate::shell::bundle;
use crate::shell::runtime_error::RuntimeError;

fn blocking_error(e: tokio::task::JoinError) -> RuntimeError {
    RuntimeError::new(format!("worker thread failed: {e}"))
}

pub async fn prepare(
    cache_dir: &Path,
    workdir: &str,
    files: Vec<(String, Vec<u8>)>,
) -> Result<(), RuntimeError> {
    let dir = cache_dir.join(workdir);
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in files {
            // Names are relative paths inside the workdir (checked at submission).
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, bytes)?;
        }
        Ok(())
    })
    .await
    .map_err(blocking_error)?
    .map_err(RuntimeError::from)
}

pub async fn fetch_bundle(
    cache_dir: &Path,
    bundle_path: &str,
    workdir: &str,
) -> Result<(), RuntimeError> {
    let dir = cache_dir.join(workdir);
    let path = bundle_path.to_string();
    tokio::task::spawn_blocking(move || bundle::fetch_and_extract(&path, &dir))
        .await
        .map_err(blocking_error)?
        .map_err(|e| RuntimeError::new(e.to_string()))
}

pub async fn remove(cache_dir: &Path, attempt: &AttemptKey) {
    let dir = cache_dir.join(attempt.workdir());
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
}
