//! What the authority, nodes and clients take from each other: any bytes
//! offered as a signed descriptor or a signed network document are parsed
//! and checked, or refused, and never panic; a forged one never verifies.
#![no_main]

use std::sync::OnceLock;

use funion_pki::{NetworkDocument, NodeDescriptor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A descriptor names the key that must have signed it.
    if let Ok(descriptor) = NodeDescriptor::verify(data) {
        // Whatever verified re-signs to the same node; nothing to assert
        // beyond not panicking while looking at it.
        let _ = descriptor.node.sphinx_key(descriptor.epoch);
    }
    // A document must carry the signature of this key (seed 7…7),
    // which no input can forge.
    static AUTHORITY: OnceLock<[u8; 32]> = OnceLock::new();
    let authority = AUTHORITY.get_or_init(|| {
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .to_bytes()
    });
    for epoch in [0, 1, u64::MAX] {
        assert!(
            NetworkDocument::verify(data, authority, epoch).is_err(),
            "an unsigned document verified"
        );
    }
});
