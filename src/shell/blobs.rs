//! The controller's content-addressed store as a worker reads it. In the 2026-06 era a bundle
//! (`bundle_id`) and each `workdir_file_refs` entry are named by the sha256 of their bytes and
//! served at `GET /blobs/<sha256>`. A blob is fetched once (concurrent asks for it wait for the
//! one fetch), checked against its name before anyone sees it, and kept on disk as
//! `<cache>/blobs/<sha256>`; past the cap the least recently used blobs go first. A download is
//! written beside its final name and renamed only once checked, so a crash leaves no blob that
//! was not verified.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::shell::connect::client::Dialer;

/// Where blobs live under the cache dir.
pub const BLOBS_DIR: &str = "blobs";
/// The largest blob taken (a bundle's own cap).
pub const BLOB_BYTES_MAX: u64 = crate::shell::bundle::TOTAL_BYTES_MAX;
/// Tries per fetch, and the pause before the second (doubling after).
const TRIES: u32 = 4;
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// One try's budget (Iris's own worker waits 120 s).
const TRY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{0:?} is not a sha256 (64 lowercase hex digits)")]
    Name(String),
    #[error("GET /blobs/{sha256}: {detail}")]
    Fetch { sha256: String, detail: String },
    #[error("blob cache: {0}")]
    Io(#[from] io::Error),
}

/// Whether `name` can name a blob: what `bundle_id` and `workdir_file_refs` values must be.
pub fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub struct BlobStore {
    dir: PathBuf,
    authority: String,
    dial: Dialer,
    authorization: Option<HeaderValue>,
    cap_bytes: u64,
    /// One fetch per blob at a time.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl BlobStore {
    /// Blobs of the controller at `authority` (`host:port`), kept in `cache_dir/blobs`.
    pub fn new(
        cache_dir: &Path,
        authority: &str,
        dial: Dialer,
        token: Option<&str>,
        cap_bytes: u64,
    ) -> BlobStore {
        BlobStore {
            dir: cache_dir.join(BLOBS_DIR),
            authority: authority.to_string(),
            dial,
            authorization: token.and_then(|t| HeaderValue::try_from(format!("Bearer {t}")).ok()),
            cap_bytes,
            fetching: Mutex::default(),
        }
    }

    /// The local file holding blob `sha256`, fetched and checked first if it is not here yet.
    pub async fn get(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        if !is_sha256(sha256) {
            return Err(BlobError::Name(sha256.to_string()));
        }
        let lock = self
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sha256.to_string())
            .or_default()
            .clone();
        let _one_fetch = lock.lock().await;
        let path = self.dir.join(sha256);
        if touch(&path).is_ok() {
            return Ok(path);
        }
        tokio::fs::create_dir_all(&self.dir).await?;
        let fetched = self.fetch_with_retries(sha256, &path).await;
        self.fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sha256);
        fetched?;
        let (dir, cap, keep) = (self.dir.clone(), self.cap_bytes, path.clone());
        let _ = tokio::task::spawn_blocking(move || evict(&dir, cap, &keep)).await;
        Ok(path)
    }

    async fn fetch_with_retries(&self, sha256: &str, path: &Path) -> Result<(), BlobError> {
        let partial = path.with_extension("partial");
        let mut pause = BACKOFF_FIRST;
        let mut last = String::new();
        for try_number in 1..=TRIES {
            match tokio::time::timeout(TRY_TIMEOUT, self.fetch_once(sha256, &partial)).await {
                Ok(Ok(())) => {
                    tokio::fs::rename(&partial, path).await?;
                    return Ok(());
                }
                Ok(Err(detail)) => last = detail,
                Err(_) => last = format!("no answer within {TRY_TIMEOUT:?}"),
            }
            let _ = tokio::fs::remove_file(&partial).await;
            tracing::warn!(sha256, try_number, error = %last, "blob fetch failed");
            if try_number < TRIES {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        Err(BlobError::Fetch {
            sha256: sha256.to_string(),
            detail: format!("{last} (after {TRIES} tries)"),
        })
    }

    /// One GET into `partial`, hashed on the way; an error says what went wrong.
    async fn fetch_once(&self, sha256: &str, partial: &Path) -> Result<(), String> {
        let stream = (self.dial)(self.authority.clone())
            .await
            .map_err(|e| format!("{}: {e}", self.authority))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let _close = AbortOnDrop(driver.abort_handle());
        let mut request = http::Request::builder()
            .method(Method::GET)
            .uri(format!("/blobs/{sha256}"))
            .header(header::HOST, &self.authority)
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        if let Some(auth) = &self.authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut body = response.into_body();
        let mut file = tokio::fs::File::create(partial)
            .await
            .map_err(|e| e.to_string())?;
        let (mut hasher, mut len) = (Sha256::new(), 0u64);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            len += data.len() as u64;
            if len > BLOB_BYTES_MAX {
                return Err(format!("larger than {BLOB_BYTES_MAX} bytes"));
            }
            hasher.update(data);
            file.write_all(data).await.map_err(|e| e.to_string())?;
        }
        file.sync_all().await.map_err(|e| e.to_string())?;
        let actual = hex(&hasher.finalize());
        if actual != sha256 {
            return Err(format!("the bytes have sha256 {actual}: refused"));
        }
        Ok(())
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Marks a blob as used now (eviction goes by modification time); fails if it is not there.
fn touch(path: &Path) -> io::Result<()> {
    std::fs::File::options()
        .append(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

/// Removes the least recently used blobs (never `keep`) until the rest fit in `cap` bytes.
fn evict(dir: &Path, cap: u64, keep: &Path) -> io::Result<()> {
    let mut blobs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_file() {
            blobs.push((meta.modified()?, meta.len(), entry.path()));
        }
    }
    let mut total: u64 = blobs.iter().map(|(_, len, _)| len).sum();
    blobs.sort();
    for (_, len, path) in blobs {
        if total <= cap {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sha256_hex() {
        let good = hex(&Sha256::digest(b"x"));
        assert!(is_sha256(&good));
        assert!(!is_sha256(&good.to_uppercase()));
        assert!(!is_sha256(&good[1..]));
        assert!(!is_sha256("../../etc/passwd"));
    }

    #[test]
    fn eviction_keeps_the_newest_within_the_cap() {
        let dir = std::env::temp_dir().join(format!("iris-blobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = SystemTime::now();
        for (i, name) in ["old", "mid", "new"].iter().enumerate() {
            let path = dir.join(name);
            std::fs::write(&path, [0u8; 100]).unwrap();
            let when = now - Duration::from_secs(100 - 10 * i as u64);
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        evict(&dir, 200, &dir.join("old")).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["new", "old"],
            "kept blob stays, the oldest other goes"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
