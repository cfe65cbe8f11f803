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
    "credits",
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

/// Crates no sans-I/O crate may depend on, directly or through others
/// (normal dependencies, as `cargo metadata` resolves them).
const FORBIDDEN_DEPENDENCIES: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "async-std",
    "reqwest",
    "axum",
    "hyper",
    "redb",
    "rayon",
];

/// The one forbidden crate a protocol crate may reach, and where: `rln`,
/// the RLN implementation the credit tickets are built on, reaches rayon
/// through arkworks (its `parallel` feature) and through `zerokit_utils`,
/// which depends on rayon whatever the features. So rayon is allowed where
/// the crate that pulls it in lies beneath `rln` (a proof may use rayon's
/// pool inside one `rln` call); funion's own crates start no thread.
const ALLOWED_BENEATH: (&str, &str) = ("rln", "rayon");

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
    }
}

/// `cargo metadata`'s resolved graph: package names by ID, and each
/// package's normal dependencies.
fn resolved_graph() -> Graph {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let names = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let id = p["id"].as_str().unwrap().to_string();
            (id, p["name"].as_str().unwrap().to_string())
        })
        .collect();
    let edges = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let normal = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| {
                    dep["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|dep| dep["pkg"].as_str().unwrap().to_string())
                .collect();
            (node["id"].as_str().unwrap().to_string(), normal)
        })
        .collect();
    (names, edges)
}

type Graph = (
    std::collections::HashMap<String, String>,
    std::collections::HashMap<String, Vec<String>>,
);

/// Every forbidden crate `package` reaches, as (the crate that depends on
/// it, the forbidden crate).
fn forbidden_reached((names, edges): &Graph, package: &str) -> Vec<(String, String)> {
    let root = names
        .iter()
        .find(|(_, n)| *n == package)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("{package} is not in cargo metadata"));
    let mut seen = std::collections::HashSet::from([root.clone()]);
    let mut frontier = vec![root];
    let mut found = Vec::new();
    while let Some(id) = frontier.pop() {
        for dep in edges.get(&id).into_iter().flatten() {
            let dep_name = &names[dep];
            if FORBIDDEN_DEPENDENCIES.contains(&dep_name.as_str()) {
                found.push((names[&id].clone(), dep_name.clone()));
            } else if seen.insert(dep.clone()) {
                frontier.push(dep.clone());
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Names of `package` and every crate it reaches through normal dependencies.
fn reachable((names, edges): &Graph, package: &str) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    let mut frontier: Vec<String> = names
        .iter()
        .filter(|(_, n)| *n == package)
        .map(|(id, _)| id.clone())
        .collect();
    while let Some(id) = frontier.pop() {
        if seen.insert(id.clone()) {
            frontier.extend(edges.get(&id).into_iter().flatten().cloned());
        }
    }
    seen.into_iter().map(|id| names[&id].clone()).collect()
}

#[test]
fn protocol_crates_depend_on_no_io_crate_even_transitively() {
    let graph = resolved_graph();
    // The walk finds what is there: a storage node reaches tokio and redb.
    let shell = forbidden_reached(&graph, "funion-node");
    for expected in ["tokio", "redb"] {
        assert!(
            shell.iter().any(|(_, dep)| dep == expected),
            "the walk missed {expected} under funion-node: {shell:?}"
        );
    }
    let (beneath, allowed) = ALLOWED_BENEATH;
    let under_rln = reachable(&graph, beneath);
    for name in SANS_IO {
        let package = format!("funion-{name}");
        for (via, dep) in forbidden_reached(&graph, &package) {
            assert!(
                dep == allowed && under_rln.contains(&via),
                "{package} depends on {dep} (through {via}): protocol crates are sans-I/O"
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

/// Lines in the `.rs` files under `dir`.
fn source_lines(dir: &Path) -> usize {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
        .sum()
}

#[test]
fn no_crate_holds_more_than_a_fifth_of_the_source() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sizes: Vec<(String, usize)> = std::fs::read_dir(&crates)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("Cargo.toml").exists())
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            (name, source_lines(&dir.join("src")))
        })
        .collect();
    assert!(sizes.len() > 10, "too few crates found: {sizes:?}");
    let total: usize = sizes.iter().map(|(_, n)| n).sum();
    for (name, lines) in &sizes {
        assert!(
            lines * 5 <= total,
            "{name} holds {lines} of {total} source lines, more than a fifth"
        );
    }
}
