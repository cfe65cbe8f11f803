//! The hpqc vectors copied into `testdata/hpqc` (see its SOURCES.md) all
//! pass, and the checker notices when one does not.

use std::path::{Path, PathBuf};

use funion_vectors::{check_file, check_str, FileError};
use serde_json::Value;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/hpqc")
}

fn bundle() -> Value {
    let text = std::fs::read_to_string(testdata().join("bacap/bundle.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn section_mut<'a>(file: &'a mut Value, primitive: &str) -> &'a mut Value {
    file["sections"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["primitive"] == primitive)
        .unwrap()
}

#[test]
fn every_bundled_file_passes() {
    let mut files = 0;
    for dir in ["bacap", "primitives"] {
        for entry in std::fs::read_dir(testdata().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let report = check_file(&path).unwrap();
                assert!(report.passed(), "{}: {report:?}", path.display());
                assert!(report.checked() > 0, "{}", path.display());
                files += 1;
            }
        }
    }
    assert_eq!(files, 16);
}

#[test]
fn the_bundle_covers_every_section_with_every_vector() {
    let report = check_file(&testdata().join("bacap/bundle.json")).unwrap();
    assert!(report.passed());
    assert_eq!(report.sections.len(), 15);
    assert_eq!(report.checked(), 145);
    let negatives = report
        .sections
        .iter()
        .find(|(name, _)| name == "bacap_negative")
        .unwrap();
    assert_eq!(negatives.1, 26);
}

/// Changes one hex digit of `field` in the named vector and expects exactly
/// that vector to fail.
fn tamper_and_expect_failure(primitive: &str, vector: &str, field: &str) {
    let mut file = bundle();
    let entry = section_mut(&mut file, primitive)["vectors"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|v| v["name"] == vector)
        .unwrap();
    let mut text = entry[field].as_str().unwrap().to_string();
    let last = text.pop().unwrap();
    text.push(if last == '0' { '1' } else { '0' });
    entry[field] = Value::String(text);
    let report = check_str(&file.to_string()).unwrap();
    assert!(!report.passed());
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].section, primitive);
    assert_eq!(report.failures[0].vector, vector);
}

#[test]
fn a_wrong_expected_value_fails_that_vector_only() {
    tamper_and_expect_failure(
        "bacap_encrypt",
        "encrypt_short_at_first",
        "expected_ciphertext_hex",
    );
    tamper_and_expect_failure(
        "bacap_encrypt",
        "encrypt_short_at_first",
        "expected_signature_hex",
    );
    tamper_and_expect_failure(
        "bacap_box_id",
        "derive_after_advance_5",
        "expected_box_id_hex",
    );
    tamper_and_expect_failure(
        "bacap_message_box_index",
        "advance_by_1",
        "expected_index_hex",
    );
    tamper_and_expect_failure(
        "bacap_mutate_kdf_state",
        "mutate_at_first_index",
        "expected_mutated_index_hex",
    );
    tamper_and_expect_failure("bacap_layout", "cap_fixed", "expected_readcap_hex");
    tamper_and_expect_failure(
        "blinded_ed25519",
        "leif_chain_step_3",
        "blinded_signature_hex",
    );
    tamper_and_expect_failure(
        "hkdf_blake2b",
        "long_okm_to_catch_streaming_bugs",
        "okm_hex",
    );
    tamper_and_expect_failure(
        "aes_gcm_siv",
        "bacap_shape_long_plaintext",
        "ciphertext_hex",
    );
    tamper_and_expect_failure("sha512", "empty", "output_hex");
}

#[test]
fn a_negative_vector_must_fail_for_its_labelled_reason() {
    let mut file = bundle();
    let negatives = section_mut(&mut file, "bacap_negative")["vectors"]
        .as_array_mut()
        .unwrap();
    // Relabel a tampered-signature case as a decryption failure: the
    // checker must see that the rejection came for another reason.
    let case = negatives
        .iter_mut()
        .find(|v| v["name"] == "cap_fixed_tampered_signature")
        .unwrap();
    case["category"] = Value::String("decrypt_failed".into());
    let report = check_str(&file.to_string()).unwrap();
    assert_eq!(report.failures.len(), 1);
    assert!(
        report.failures[0].reason.contains("signature_invalid"),
        "{:?}",
        report.failures[0]
    );
}

#[test]
fn a_negative_vector_that_is_accepted_fails() {
    let mut file = bundle();
    let negatives = section_mut(&mut file, "bacap_negative")["vectors"]
        .as_array_mut()
        .unwrap();
    let good_index = negatives
        .iter()
        .find(|v| v["name"] == "index_long")
        .unwrap()["blob_hex"]
        .as_str()
        .unwrap()[..208]
        .to_string();
    let case = negatives
        .iter_mut()
        .find(|v| v["name"] == "index_long")
        .unwrap();
    case["blob_hex"] = Value::String(good_index);
    let report = check_str(&file.to_string()).unwrap();
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0].reason.starts_with("accepted"));
}

#[test]
fn an_unknown_section_is_reported_not_skipped() {
    let mut file = bundle();
    file["sections"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "primitive": "kem_mlkem768",
            "description": "",
            "vectors": [{"name": "x"}]
        }));
    let report = check_str(&file.to_string()).unwrap();
    assert!(!report.passed());
    assert_eq!(report.unknown_sections, vec!["kem_mlkem768".to_string()]);
    assert_eq!(report.checked(), 145);
}

#[test]
fn files_not_in_the_format_are_errors() {
    assert!(matches!(check_str("not json"), Err(FileError::Json(_))));
    assert!(matches!(check_str("[]"), Err(FileError::Format(_))));
    assert!(matches!(
        check_str(r#"{"format_version": 2, "vectors": []}"#),
        Err(FileError::Format(_))
    ));
    assert!(matches!(
        check_str(r#"{"format_version": 1, "files": {}}"#),
        Err(FileError::Format(_))
    ));
    let missing_field = r#"{"format_version": 1, "primitive": "sha512",
        "vectors": [{"name": "no output", "input_hex": ""}]}"#;
    let report = check_str(missing_field).unwrap();
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0].reason.contains("output_hex"));
}
