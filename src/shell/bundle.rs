//! Bundles: a zip fetched from `file://PATH` or a plain path and extracted into the workdir.
//! Entries that would land outside the workdir, links, and archives past the caps are refused.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub const ENTRIES_MAX: usize = 10_000;
pub const TOTAL_BYTES_MAX: u64 = 1 << 30;
/// Uncompressed-to-compressed ratio above which an entry is taken for a zip bomb.
pub const RATIO_MAX: u64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("unsupported bundle location {0:?}: only file:// and local paths are supported")]
    Scheme(String),
    #[error("cannot open bundle {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("bundle is not a valid zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("bundle entry {0:?} escapes the workdir")]
    Escapes(String),
    #[error("bundle entry {0:?} is a link; links are refused")]
    Link(String),
    #[error("bundle has {0} entries; the limit is {ENTRIES_MAX}")]
    TooManyEntries(usize),
    #[error("bundle expands past {TOTAL_BYTES_MAX} bytes")]
    TooLarge,
    #[error("bundle entry {0:?} compresses suspiciously well (zip bomb?)")]
    Ratio(String),
    #[error("extracting bundle: {0}")]
    Io(#[from] io::Error),
}

/// The local file a bundle path names.
pub fn local_path(bundle_path: &str) -> Result<PathBuf, BundleError> {
    if let Some(rest) = bundle_path.strip_prefix("file://") {
        return Ok(PathBuf::from(rest));
    }
    if bundle_path.contains("://") {
        return Err(BundleError::Scheme(bundle_path.to_string()));
    }
    Ok(PathBuf::from(bundle_path))
}

/// Extracts the zip at `bundle_path` into `dest`.
pub fn fetch_and_extract(bundle_path: &str, dest: &Path) -> Result<(), BundleError> {
    let path = local_path(bundle_path)?;
    let open_error = |source| BundleError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(&path).map_err(open_error)?;
    if file.metadata().is_ok_and(|m| m.is_file()) {
        return extract(file, dest);
    }
    // A pipe or device cannot seek: read it whole, within the size cap.
    let mut bytes = Vec::new();
    (&mut file)
        .take(TOTAL_BYTES_MAX + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > TOTAL_BYTES_MAX {
        return Err(BundleError::TooLarge);
    }
    extract(io::Cursor::new(bytes), dest)
}

const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;

pub fn extract<R: Read + io::Seek>(reader: R, dest: &Path) -> Result<(), BundleError> {
    let mut archive = zip::ZipArchive::new(reader)?;
    if archive.len() > ENTRIES_MAX {
        return Err(BundleError::TooManyEntries(archive.len()));
    }
    let mut budget = TOTAL_BYTES_MAX;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index)?;
        let name = entry.name().to_string();
        let relative = entry
            .enclosed_name()
            .ok_or_else(|| BundleError::Escapes(name.clone()))?;
        if entry.unix_mode().is_some_and(|m| m & S_IFMT == S_IFLNK) {
            return Err(BundleError::Link(name));
        }
        let target = dest.join(&relative);
        if entry.is_dir() {
            fs::create_dir_all(&target)?;
            continue;
        }
        if entry.compressed_size() > 0 && entry.size() / entry.compressed_size().max(1) > RATIO_MAX
        {
            return Err(BundleError::Ratio(name));
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut out = File::create(&target)?;
        // Declared sizes can lie: the copy itself is bounded.
        let copied = io::copy(&mut (&mut entry).take(budget + 1), &mut out)?;
        if copied > budget {
            return Err(BundleError::TooLarge);
        }
        budget -= copied;
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o755))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut buf);
        for (name, data) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        buf.into_inner()
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iris-bundle-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn extracts_nested_files() {
        let dir = tmp("ok");
        let bytes = zip_of(&[("main.py", b"print(1)"), ("pkg/mod.py", b"x = 2")]);
        extract(Cursor::new(bytes), &dir).unwrap();
        assert_eq!(fs::read(dir.join("pkg/mod.py")).unwrap(), b"x = 2");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_entries_escaping_the_workdir() {
        let dir = tmp("escape");
        for bad in ["../evil", "/etc/evil", "a/../../evil"] {
            let err = extract(Cursor::new(zip_of(&[(bad, b"x")])), &dir).unwrap_err();
            assert!(matches!(err, BundleError::Escapes(_)), "{bad}: {err}");
        }
        assert!(!dir.parent().unwrap().join("evil").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_zip_bombs_and_other_schemes() {
        let dir = tmp("bomb");
        let zeros = vec![0u8; 10 << 20];
        let mut buf = Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("zeros", opts).unwrap();
        zip.write_all(&zeros).unwrap();
        zip.finish().unwrap();
        let err = extract(Cursor::new(buf.into_inner()), &dir).unwrap_err();
        assert!(matches!(err, BundleError::Ratio(_)), "{err}");
        assert!(matches!(
            local_path("gs://b/x.zip"),
            Err(BundleError::Scheme(_))
        ));
        assert_eq!(
            local_path("file:///a/b.zip").unwrap(),
            PathBuf::from("/a/b.zip")
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
