//! Property tests over random paths, delays and messages: whatever the
//! sender chooses, each hop sees exactly its own commands and the end gets
//! exactly the message. Seeded.

use funion_sphinx::kem::{Kem, X25519};
use funion_sphinx::{create_packet, Action, Delivery, Geometry, NodeId, PathHop, SphinxNode, Surb};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn config() -> Config {
    Config {
        cases: 64,
        rng_seed: RngSeed::Fixed(0x5f1e),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_path_round_trips(
        seed in any::<u64>(),
        delays in proptest::collection::vec(any::<u32>(), 1..=5),
        message in proptest::collection::vec(any::<u8>(), 0..=480),
        recipient in any::<[u8; 32]>(),
    ) {
        let geometry = Geometry::new::<X25519>(512, 5).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys: Vec<_> = delays.iter().map(|_| X25519::generate(&mut rng)).collect();
        let path: Vec<PathHop<'_, X25519>> = keys
            .iter()
            .zip(&delays)
            .enumerate()
            .map(|(i, ((_, public), &delay_us))| PathHop { node: NodeId([i as u8; 32]), public_key: public, delay_us })
            .collect();
        let delivery = Delivery { recipient, surb_id: None };
        let mut packet = create_packet(&geometry, &path, &delivery, &message, &mut rng).unwrap();
        let nodes: Vec<SphinxNode<X25519>> = keys
            .into_iter()
            .map(|(secret, _)| SphinxNode::new(geometry, secret).unwrap())
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            let action = node.unwrap(&mut packet, |_| false).unwrap().action;
            if i + 1 < nodes.len() {
                prop_assert_eq!(action, Action::Forward { next_hop: NodeId([i as u8 + 1; 32]), delay_us: delays[i] });
            } else {
                let Action::Deliver { recipient: got, delay_us, message: body } = action else {
                    return Err(TestCaseError::fail("expected delivery"));
                };
                prop_assert_eq!(got, recipient);
                prop_assert_eq!(delay_us, delays[i]);
                prop_assert_eq!(&body[..message.len()], &message[..]);
                prop_assert!(body[message.len()..].iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn any_surb_reply_round_trips(
        seed in any::<u64>(),
        hops in 1usize..=5,
        message in proptest::collection::vec(any::<u8>(), 0..=496),
    ) {
        let geometry = Geometry::new::<X25519>(512, 5).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys: Vec<_> = (0..hops).map(|_| X25519::generate(&mut rng)).collect();
        let path: Vec<PathHop<'_, X25519>> = keys
            .iter()
            .enumerate()
            .map(|(i, (_, public))| PathHop { node: NodeId([i as u8; 32]), public_key: public, delay_us: 0 })
            .collect();
        let delivery = Delivery { recipient: [1; 32], surb_id: Some([2; 16]) };
        let (surb, surb_keys) = Surb::create(&geometry, &path, &delivery, &mut rng).unwrap();
        let mut packet = surb.reply(&geometry, &message).unwrap();
        let mut last = None;
        for (secret, _) in keys {
            last = Some(SphinxNode::<X25519>::new(geometry, secret).unwrap().unwrap(&mut packet, |_| false).unwrap().action);
        }
        let Some(Action::SurbReply { payload, .. }) = last else {
            return Err(TestCaseError::fail("expected a SURB reply"));
        };
        let opened = surb_keys.open_reply(&payload).unwrap();
        prop_assert_eq!(&opened[..message.len()], &message[..]);
    }
}
