//! Attempt workdirs under the cache dir, the same for every runtime: created fresh, filled with
//! the attempt's files and bundle, removed when the attempt is over (logs live elsewhere).

use std::path::Path;

use super::error::RuntimeError;
use crate::core::AttemptKey;
use crate::shell::blobs::BlobStore;
use crate::shell::bundle;

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

/// Content named by sha256 (2026-06): the bundle extracted into the workdir, then each file
/// copied to its path in it (names were checked at submission). A blob is fetched once per
/// worker and copied, so a task that changes its files changes only its own copy.
pub async fn fetch_content(
    blobs: Option<&BlobStore>,
    cache_dir: &Path,
    workdir: &str,
    bundle: Option<&str>,
    files: &[(String, String)],
) -> Result<(), RuntimeError> {
    let blobs = blobs.ok_or_else(|| {
        RuntimeError::new("this worker has no controller to fetch blobs from".to_string())
    })?;
    let dir = cache_dir.join(workdir);
    let fetch_error = |e: crate::shell::blobs::BlobError| RuntimeError::new(e.to_string());
    if let Some(sha256) = bundle {
        let zip = blobs.get(sha256).await.map_err(fetch_error)?;
        let dest = dir.clone();
        tokio::task::spawn_blocking(move || -> Result<(), bundle::BundleError> {
            let file = std::fs::File::open(&zip)?;
            bundle::extract(file, &dest)
        })
        .await
        .map_err(blocking_error)?
        .map_err(|e| RuntimeError::new(format!("bundle {sha256}: {e}")))?;
    }
    for (name, sha256) in files {
        let blob = blobs.get(sha256).await.map_err(fetch_error)?;
        let path = dir.join(name);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(blob, path).map(|_| ())
        })
        .await
        .map_err(blocking_error)?
        .map_err(|e| RuntimeError::new(format!("workdir file {name}: {e}")))?;
    }
    Ok(())
}

pub async fn remove(cache_dir: &Path, attempt: &AttemptKey) {
    let dir = cache_dir.join(attempt.workdir());
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
}
