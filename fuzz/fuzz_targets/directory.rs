//! What the authorities, nodes and clients take from each other: any bytes
//! offered as a signed descriptor, an authority's vote or endorsement, or
//! an endorsed network document are parsed and checked, or refused, and
//! never panic; a forged one never verifies.
#![no_main]

use std::sync::OnceLock;

use funion_pki::{Endorsement, NetworkDocument, NodeDescriptor, Trust, Vote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A descriptor names the key that must have signed it.
    if let Ok(descriptor) = NodeDescriptor::verify(data) {
        // Whatever verified re-signs to the same node; nothing to assert
        // beyond not panicking while looking at it.
        let _ = descriptor.node.sphinx_key(descriptor.epoch);
    }
    // A document and a vote must carry the signatures of these keys
    // (seeds 7…7, 8…8, 9…9), which no input can forge.
    static AUTHORITIES: OnceLock<Trust> = OnceLock::new();
    let trust = AUTHORITIES.get_or_init(|| {
        let keys = (7..10u8)
            .map(|seed| {
                ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                    .verifying_key()
                    .to_bytes()
            })
            .collect();
        Trust::new(keys, None).expect("three distinct keys")
    });
    for epoch in [0, 1, u64::MAX] {
        assert!(
            NetworkDocument::verify(data, trust, epoch).is_err(),
            "an unsigned document verified"
        );
    }
    assert!(
        Vote::verify(data, trust).is_err(),
        "an unsigned vote verified"
    );
    let _ = Endorsement::from_bytes(data);
});
