//! Replays every seed of the fuzz corpus (`fuzz/corpus/<target>/`) through its entry point
//! in `qqmx::fuzzing`, so that the fuzz targets' invariants are checked on each test run
//! and a crash the fuzzer once found (kept as a seed) stays fixed. Needs the `fuzzing`
//! feature, which `cargo test --all-features` turns on.

#![cfg(feature = "fuzzing")]

use std::path::{Path, PathBuf};

/// The seeds of `target`, in name order; fails when there are none.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

fn text(path: &Path, bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap_or_else(|_| panic!("{} is not UTF-8", path.display()))
}

#[test]
fn smtp_session_corpus() {
    for (_, bytes) in seeds("smtp_session") {
        qqmx::fuzzing::smtp_session(&bytes);
    }
}

#[test]
fn proxy_header_corpus() {
    for (_, bytes) in seeds("proxy_header") {
        qqmx::fuzzing::proxy_header(&bytes);
    }
}

#[test]
fn config_corpus() {
    for (path, bytes) in seeds("config") {
        qqmx::fuzzing::config(&text(&path, &bytes));
    }
}

#[test]
fn scenario_corpus() {
    for (path, bytes) in seeds("scenario") {
        qqmx::fuzzing::scenario(&text(&path, &bytes));
    }
}

#[test]
fn api_body_corpus() {
    for (_, bytes) in seeds("api_body") {
        let (&route, body) = bytes.split_first().expect("a seed names its route");
        qqmx::fuzzing::api_body(route, body);
    }
}
