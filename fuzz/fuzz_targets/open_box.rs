//! Arbitrary boxes offered to a reader and to the bare verify/decrypt path:
//! never a panic, and never anything but a rejection for bytes the writer
//! did not seal.
#![no_main]

use std::sync::OnceLock;

use funion_bacap::primitives::ed25519_public_key;
use funion_bacap::{verify_box, BoxId, BoxSignature, Reader, WriteCap};
use libfuzzer_sys::fuzz_target;

/// The writer every input is offered to, parsed once.
fn write_cap() -> WriteCap {
    let mut cap_bytes = [0u8; 168];
    cap_bytes[..32].copy_from_slice(&[7; 32]);
    cap_bytes[32..64].copy_from_slice(&ed25519_public_key(&[7; 32]));
    WriteCap::from_bytes(&cap_bytes).expect("a seed with its own public key parses")
}

fuzz_target!(|data: &[u8]| {
    static CAP: OnceLock<WriteCap> = OnceLock::new();
    if data.len() < 96 {
        return;
    }
    let cap = CAP.get_or_init(write_cap);
    let id = BoxId(data[..32].try_into().unwrap());
    let signature = BoxSignature(data[32..96].try_into().unwrap());
    let ciphertext = &data[96..];
    let reader = Reader::new(cap.read_cap(), b"fuzz");
    assert!(reader.peek(&id, ciphertext, &signature).is_err());
    let _ = verify_box(&id, ciphertext, &signature);
    let _ = cap.index().decrypt(b"fuzz", &id, ciphertext, &signature);
});
