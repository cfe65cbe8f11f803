//! What couriers and replicas take from the network: any bytes offered as a
//! storage message, a courier request, a replica's envelope slot or a
//! courier reply are parsed or refused, never panic, and never open unless
//! they are real.
#![no_main]

use std::sync::OnceLock;

use funion_pigeonhole::courier::{Courier, CourierConfig};
use funion_pigeonhole::envelope::{self, CourierEnvelope, Recipient, Request, Sizes};
use funion_pigeonhole::wire::StorageMessage;
use funion_sphinx::kem::{Kem, X25519};
use funion_sphinx::NodeId;
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;

/// What every input is tried against, made once: the sizes, a replica's key
/// pair and the reply keys of one real envelope sealed to it.
struct Fixture {
    sizes: Sizes,
    secret: <X25519 as Kem>::SecretKey,
    reply_keys: envelope::ReplyKeys,
}

fn fixture() -> Fixture {
    let sizes = Sizes::fit(X25519::CIPHERTEXT_LEN, 1_024).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let (secret, public) = X25519::generate(&mut rng);
    let recipients = [NodeId([1; 32]), NodeId([2; 32])].map(|id| Recipient::<X25519> {
        id,
        public_key: &public,
    });
    let (_, reply_keys) = envelope::seal(
        &sizes,
        recipients,
        0,
        &Request::Read(funion_bacap::BoxId([0; 32])),
        &mut rng,
    )
    .unwrap();
    Fixture {
        sizes,
        secret,
        reply_keys,
    }
}

fuzz_target!(|data: &[u8]| {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    let Fixture {
        sizes,
        secret,
        reply_keys,
    } = FIXTURE.get_or_init(fixture);
    let me = NodeId([1; 32]);
    if let Ok(StorageMessage::Envelope(part)) = StorageMessage::decode(data) {
        let _ = part.open::<X25519>(sizes, &me, &[secret]);
    }
    let mut courier = Courier::new(*sizes, CourierConfig::default());
    let _ = courier.handle_request(0, vec![0; 8], data, |_| true);
    let _ = courier.handle_replica_message(1, me, data);
    let _ = courier.poll(u64::MAX / 2);
    if let Ok(envelope) = CourierEnvelope::parse(sizes, data) {
        for slot in 0..2 {
            assert!(envelope
                .for_replica(slot)
                .open::<X25519>(sizes, &me, &[secret])
                .is_err());
        }
    }
    if let Ok(envelope::CourierAnswer::Reply { .. }) = reply_keys.open(sizes, data) {
        panic!("random bytes opened as a replica's reply");
    }
    let _ = envelope::refusal(data);
});
