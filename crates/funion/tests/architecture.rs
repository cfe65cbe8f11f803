//! The invariants ARCHITECTURE.md states that a test can hold: protocol
//! crates stay sans-I/O, and dependencies point one way.

use std::path::{Path, PathBuf};

/// Crates that hold protocol logic only: no sockets, clocks, threads, files
/// or async runtime inside them.
const SANS_IO: &[&str] = &[
    "bacap",
    "sphinx",
    "pki",
    "mixnet",
    "pigeonhole",
    "compute",
    "tickets",
    "sim",
];

/// Paths a sans-I/O crate must not name in its source.
const FORBIDDEN_PATHS: &[&str] = &[
    "std::net",
    "std::fs",
    "std::thread",
    "std::time::Instant",
    "std::time::SystemTime",
    "std::process",
    "tokio",
    "OsRng",
    "thread_rng",
];

/// Crates a sans-I/O crate must not depend on.
const FORBIDDEN_DEPENDENCIES: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "async-std",
    "reqwest",
    "axum",
    "redb",
];

fn crate_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
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
fn protocol_crates_do_no_io() {
    for name in SANS_IO {
        let mut files = Vec::new();
        rust_files(&crate_dir(name).join("src"), &mut files);
        assert!(!files.is_empty(), "no sources found for {name}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for forbidden in FORBIDDEN_PATHS {
                assert!(
                    !text.contains(forbidden),
                    "{} names {forbidden}: protocol crates are sans-I/O",
                    file.display()
                );
            }
        }
        let manifest = std::fs::read_to_string(crate_dir(name).join("Cargo.toml")).unwrap();
        let dependencies = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap_or("")
            .split("\n[")
            .next()
            .unwrap_or("");
        for line in dependencies.lines() {
            let dependency = line.split(['.', '=', ' ']).next().unwrap_or("");
            assert!(
                !FORBIDDEN_DEPENDENCIES.contains(&dependency),
                "{name} depends on {dependency}: protocol crates are sans-I/O"
            );
        }
    }
}

#[test]
fn protocol_crates_do_not_depend_on_the_binary_or_the_checker() {
    for name in SANS_IO {
        let manifest = std::fs::read_to_string(crate_dir(name).join("Cargo.toml")).unwrap();
        for upward in ["funion-vectors", "\nfunion ", "\nfunion."] {
            assert!(!manifest.contains(upward), "{name} depends on {upward:?}");
        }
    }
}
