//! SURBs and SURB replies as a responder and a client receive them: any bytes
//! offered as a SURB parse or are refused, and a SURB that parses always
//! yields a reply of the right length; any bytes offered as a reply payload
//! are refused unless they are the real one.
#![no_main]

use std::sync::OnceLock;

use funion_sphinx::kem::{Kem, X25519};
use funion_sphinx::{Delivery, Geometry, NodeId, PathHop, Surb, SurbKeys};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;

/// The SURB every reply payload is tried against, made once.
struct Fixture {
    geometry: Geometry,
    keys: SurbKeys,
}

fn fixture() -> Fixture {
    let geometry = Geometry::new::<X25519>(256, 3).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    let (_, public) = X25519::generate(&mut rng);
    let path = [PathHop::<X25519> {
        node: NodeId([1; 32]),
        public_key: &public,
        delay_us: 0,
    }];
    let delivery = Delivery {
        recipient: [2; 32],
        surb_id: Some([3; 16]),
    };
    let (_, keys) = Surb::create(&geometry, &path, &delivery, &mut rng).unwrap();
    Fixture { geometry, keys }
}

fuzz_target!(|data: &[u8]| {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    let Fixture { geometry, keys } = FIXTURE.get_or_init(fixture);
    if let Ok(surb) = Surb::from_bytes::<X25519>(geometry, data) {
        let packet = surb
            .reply(geometry, b"reply")
            .expect("a parsed SURB replies");
        assert_eq!(packet.len(), geometry.packet_len());
    }
    assert!(
        keys.clone().open_reply(data).is_err(),
        "random bytes opened as a reply"
    );
});
