//! `funion vectors check` as a user runs it: output lines and exit status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/hpqc")
}

fn funion(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_funion"))
        .args(args)
        .output()
        .expect("run funion")
}

#[test]
fn the_bundled_vectors_pass() {
    let bundle = testdata().join("bacap/bundle.json");
    let out = funion(&["vectors".as_ref(), "check".as_ref(), bundle.as_os_str()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.starts_with("ok "), "{stdout}");
    assert!(stdout.contains("145 vectors in 15 sections"), "{stdout}");
}

#[test]
fn a_failing_vector_is_named_and_the_exit_status_is_nonzero() {
    let text = std::fs::read_to_string(testdata().join("bacap/tombstone.json")).unwrap();
    let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
    file["vectors"][1]["expected_signature_hex"] = "00".repeat(64).into();
    let name = file["vectors"][1]["name"].as_str().unwrap().to_string();
    let tampered = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tampered_tombstone.json");
    std::fs::write(&tampered, file.to_string()).unwrap();
    let good = testdata().join("primitives/sha512.json");
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no_such_file.json");
    let out = funion(&[
        "vectors".as_ref(),
        "check".as_ref(),
        good.as_os_str(),
        tampered.as_os_str(),
        missing.as_os_str(),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("ok "), "{stdout}");
    assert!(
        lines[1].starts_with("FAIL ") && lines[1].contains("1 of 8 vectors failed"),
        "{stdout}"
    );
    assert!(
        lines[2].contains(&format!("bacap_tombstone/{name}: signature differs")),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("FAIL ") && lines[3].contains("cannot read"),
        "{stdout}"
    );
}

#[test]
fn no_files_is_a_usage_error() {
    let out = funion(&["vectors".as_ref(), "check".as_ref()]);
    assert_eq!(out.status.code(), Some(2));
}
