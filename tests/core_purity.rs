//! Architecture invariant: the core (`crates/iris-worker-core`) does no IO, reads no clock, uses
//! no randomness and no hash-ordered iteration. Cargo keeps IO crates out of reach as long as the
//! core's manifest lists none, which the first test checks; the second reads the sources for what
//! Cargo cannot see (the standard library's clocks, files, sockets and hash maps).

use std::path::Path;

/// What Cargo cannot keep out: the standard library's IO, clocks and hash-ordered collections.
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::process",
    "std::net",
    "std::thread",
    "std::env",
    "SystemTime",
    "Instant",
    "HashSet",
    "HashMap",
    "std::time",
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

/// What the core may depend on: the messages, regex (log filters) and thiserror.
const CORE_DEPENDENCIES: &[&str] = &["iris-proto", "regex", "thiserror"];
/// What its tests may add: itself with `testing`, proptest and insta.
const CORE_DEV_DEPENDENCIES: &[&str] = &["iris-worker-core", "proptest", "insta"];

#[test]
fn the_core_depends_on_no_io_crate() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/iris-worker-core/Cargo.toml"),
    )
    .unwrap();
    let mut section = "";
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section.contains("dependencies") && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.']).next().unwrap_or("").trim();
            found.push(format!("{section} {name}"));
            let allowed = match section {
                "[dependencies]" => CORE_DEPENDENCIES,
                "[dev-dependencies]" => CORE_DEV_DEPENDENCIES,
                _ => &[],
            };
            assert!(
                allowed.contains(&name),
                "the core may depend only on {CORE_DEPENDENCIES:?} (and its tests on \
                 {CORE_DEV_DEPENDENCIES:?}); found {name} in {section}"
            );
        }
    }
    assert_eq!(
        found.len(),
        CORE_DEPENDENCIES.len() + CORE_DEV_DEPENDENCIES.len(),
        "{found:?}"
    );
}

/// `cargo test -p iris-worker-core` builds none of the shell's world: what its tests compile is
/// the whole resolved tree of its normal and dev dependencies, features unified.
#[test]
fn the_cores_tests_build_no_async_or_rpc_crate() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "iris-worker-core",
            "-e",
            "normal,dev",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.contains("proptest "),
        "the tree lists the dev-dependencies:\n{tree}"
    );
    for forbidden in ["tokio", "tonic", "axum", "bollard", "hyper", "iris-worker "] {
        let hits: Vec<&str> = tree.lines().filter(|l| l.starts_with(forbidden)).collect();
        assert!(hits.is_empty(), "the core's tests would build {hits:?}");
    }
}

#[test]
fn core_has_no_io_clock_or_randomness() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/iris-worker-core/src"),
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
        "forbidden in the core:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_check_bites() {
    let sample = "use std::time::Instant;";
    assert!(FORBIDDEN.iter().any(|w| sample.contains(w)));
}
