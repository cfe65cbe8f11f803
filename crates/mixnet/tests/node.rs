//! The node state machine on its own: key epochs, replays, delays, roles.

use funion_mixnet::{DropReason, Node, NodeConfig, Output, Source};
use funion_pki::Role;
use funion_sphinx::kem::{Kem, X25519};
use funion_sphinx::{create_packet, Delivery, Geometry, NodeId, PathHop};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn packet_for(
    geometry: &Geometry,
    key: &<X25519 as Kem>::PublicKey,
    delay_us: u32,
    rng: &mut ChaCha20Rng,
) -> Vec<u8> {
    let (_, next) = X25519::generate(rng);
    let path = [
        PathHop::<X25519> {
            node: NodeId([1; 32]),
            public_key: key,
            delay_us,
        },
        PathHop::<X25519> {
            node: NodeId([2; 32]),
            public_key: &next,
            delay_us: 0,
        },
    ];
    let delivery = Delivery {
        recipient: [3; 32],
        surb_id: None,
    };
    create_packet(geometry, &path, &delivery, b"m", rng).unwrap()
}

#[test]
fn both_epoch_keys_open_packets_and_replays_are_per_epoch() {
    let geometry = Geometry::new::<X25519>(256, 5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (old_secret, old_public) = X25519::generate(&mut rng);
    let (new_secret, new_public) = X25519::generate(&mut rng);
    let mut node = Node::<X25519>::new(NodeConfig::for_role(Role::Mix, 2.5), geometry);
    node.add_epoch_key(7, old_secret, []).unwrap();
    node.add_epoch_key(8, new_secret, []).unwrap();
    node.set_current_epoch(8);
    for (public, epoch) in [(&old_public, 7), (&new_public, 8)] {
        let packet = packet_for(&geometry, public, 1_000, &mut rng);
        let out = node.handle_packet(10, Source::Peer(NodeId([9; 32])), packet.clone());
        assert!(
            matches!(out.as_slice(), [Output::PersistReplayTag { epoch: e, .. }] if *e == epoch)
        );
        assert!(node
            .handle_packet(11, Source::Peer(NodeId([9; 32])), packet)
            .iter()
            .all(|o| !matches!(o, Output::Send { .. })));
    }
    assert_eq!(node.counters().dropped.get(&DropReason::Replay), Some(&2));
    // Held for exactly the sender's delay.
    assert_eq!(node.next_deadline(), Some(1_010));
    assert!(node.poll(1_009).is_empty());
    let sent = node.poll(1_011);
    assert_eq!(
        sent.iter()
            .filter(|o| matches!(o, Output::Send { to, .. } if *to == NodeId([2; 32])))
            .count(),
        2
    );
    // After retiring the old epoch its packets are refused.
    node.retire_epoch(7);
    let late = packet_for(&geometry, &old_public, 0, &mut rng);
    node.handle_packet(2_000, Source::Peer(NodeId([9; 32])), late);
    assert_eq!(
        node.counters()
            .dropped
            .get(&DropReason::HeaderMac)
            .copied()
            .unwrap_or(0)
            + node
                .counters()
                .dropped
                .get(&DropReason::Decapsulation)
                .copied()
                .unwrap_or(0),
        1
    );
}

#[test]
fn clients_are_rate_limited_and_only_gateways_take_them() {
    let geometry = Geometry::new::<X25519>(256, 5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (secret, public) = X25519::generate(&mut rng);
    let mut config = NodeConfig::for_role(Role::Gateway, 2.5);
    config.client_burst = 3.0;
    config.client_rate = 1.0;
    let mut gateway = Node::<X25519>::new(config, geometry);
    gateway.add_epoch_key(0, secret, []).unwrap();
    for i in 0..5u64 {
        let packet = packet_for(&geometry, &public, 0, &mut rng);
        gateway.handle_packet(i, Source::Client(1), packet);
    }
    assert_eq!(
        gateway.counters().dropped.get(&DropReason::RateLimited),
        Some(&2)
    );
    let (mix_secret, mix_public) = X25519::generate(&mut rng);
    let mut mix = Node::<X25519>::new(NodeConfig::for_role(Role::Mix, 2.5), geometry);
    mix.add_epoch_key(0, mix_secret, []).unwrap();
    mix.handle_packet(
        0,
        Source::Client(1),
        packet_for(&geometry, &mix_public, 0, &mut rng),
    );
    assert_eq!(mix.counters().dropped.get(&DropReason::WrongRole), Some(&1));
    // Garbage is dropped with a reason, never a panic.
    mix.handle_packet(0, Source::Peer(NodeId([0; 32])), vec![1, 2, 3]);
    assert_eq!(
        mix.counters().dropped.get(&DropReason::WrongLength),
        Some(&1)
    );
}
