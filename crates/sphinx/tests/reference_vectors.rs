//! HCTR2 and X-Wing against their published test vectors (see
//! `testdata/hctr2/SOURCES.md` and `testdata/xwing/SOURCES.md`).

use std::path::Path;

use funion_sphinx::hctr2::Hctr2;
use funion_sphinx::kem::{Kem, XWing};
use serde_json::Value;

fn load(path: &str) -> Vec<Value> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(full).unwrap()).unwrap()
}

fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().unwrap()).unwrap()
}

#[test]
fn hctr2_matches_the_published_vectors() {
    let vectors = load("hctr2/aes256_sample.json");
    assert_eq!(vectors.len(), 8);
    for v in &vectors {
        let key: [u8; 32] = hex_field(v, "key_hex").try_into().unwrap();
        let tweak = hex_field(v, "tweak_hex");
        let plaintext = hex_field(v, "plaintext_hex");
        let ciphertext = hex_field(v, "ciphertext_hex");
        let cipher = Hctr2::new(&key);
        let mut buffer = plaintext.clone();
        cipher.encrypt(&tweak, &mut buffer);
        assert_eq!(hex::encode(&buffer), hex::encode(&ciphertext));
        cipher.decrypt(&tweak, &mut buffer);
        assert_eq!(buffer, plaintext);
    }
}

#[test]
fn xwing_matches_the_draft_vectors() {
    let vectors = load("xwing/test-vectors.json");
    assert_eq!(vectors.len(), 2);
    for v in &vectors {
        let seed: [u8; 32] = hex_field(v, "seed").try_into().unwrap();
        let eseed: [u8; 64] = hex_field(v, "eseed").try_into().unwrap();
        let secret = XWing::secret_from_seed(&seed);
        let public = XWing::public_key(&secret);
        assert_eq!(
            hex::encode(XWing::public_key_bytes(&public)),
            v["pk"].as_str().unwrap()
        );
        let parsed = XWing::public_key_from_bytes(&hex_field(v, "pk")).unwrap();
        let mut ct = vec![0u8; XWing::CIPHERTEXT_LEN];
        let ss = XWing::encapsulate_with(&parsed, &eseed, &mut ct);
        assert_eq!(hex::encode(&ct), v["ct"].as_str().unwrap());
        assert_eq!(hex::encode(ss.as_ref()), v["ss"].as_str().unwrap());
        let decapsulated = XWing::decapsulate(&secret, &ct).unwrap();
        assert_eq!(decapsulated.as_ref(), ss.as_ref());
    }
}
