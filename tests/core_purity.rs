//! Architecture invariant: `src/core/` does no IO, reads no clock, uses no randomness and no
//! hash-ordered iteration. This test reads the sources and fails on any forbidden name.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::fs",
    "std::process",
    "std::net",
    "std::thread",
    "std::env",
    "SystemTime",
    "Instant",
    "rand::",
    "HashSet",
    "tonic::",
    "bollard",
];

/// Names the core may mention although they contain a forbidden word.
const ALLOWED_LINES: &[&str] = &[
    // Validation reads the request's proto map; it is converted to a BTreeMap straight away.
    "vars: &std::collections::HashMap<String, String>,",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_has_no_io_clock_or_randomness() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core"),
        &mut files,
    );
    assert!(files.len() >= 10, "found only {files:?}");
    let mut offences = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if ALLOWED_LINES.contains(&line.trim()) {
                continue;
            }
            for word in FORBIDDEN {
                if code.contains(word) {
                    offences.push(format!("{}:{}: {word}: {line}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "forbidden in src/core:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_check_bites() {
    let sample = "use tokio::time::Instant;";
    assert!(FORBIDDEN.iter().any(|w| sample.contains(w)));
}
