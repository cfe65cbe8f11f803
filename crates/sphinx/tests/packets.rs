//! Sphinx end to end, for both KEMs at 2 kB and 30 kB payloads: five hops
//! (gateway, three mixes, service) forward and back through a SURB, every
//! header bit covered by a MAC, every payload bit by the end-to-end tag,
//! constant lengths, stable replay tags. Seeded, so every run is the same.

use funion_sphinx::kem::{Kem, XWing, X25519};
use funion_sphinx::{
    create_packet, Action, Delivery, Error, Geometry, NodeId, PathHop, SphinxNode, Surb,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const HOPS: usize = 5;

struct Network<K: Kem> {
    geometry: Geometry,
    nodes: Vec<SphinxNode<K>>,
    publics: Vec<K::PublicKey>,
    ids: Vec<NodeId>,
}

fn network<K: Kem>(payload_len: usize, seed: u64) -> Network<K> {
    let geometry = Geometry::new::<K>(payload_len, HOPS).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut nodes = Vec::new();
    let mut publics = Vec::new();
    let mut ids = Vec::new();
    for i in 0..HOPS {
        let (secret, public) = K::generate(&mut rng);
        nodes.push(SphinxNode::new(geometry, secret).unwrap());
        publics.push(public);
        ids.push(NodeId([i as u8 + 1; 32]));
    }
    Network {
        geometry,
        nodes,
        publics,
        ids,
    }
}

impl<K: Kem> Network<K> {
    fn path(&self, order: &[usize]) -> Vec<PathHop<'_, K>> {
        order
            .iter()
            .map(|&i| PathHop {
                node: self.ids[i],
                public_key: &self.publics[i],
                delay_us: 1000 * (i as u32 + 1),
            })
            .collect()
    }
}

const SERVICE: Delivery = Delivery {
    recipient: [0xee; 32],
    surb_id: None,
};

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// Sends `message` through all five hops; returns what the service got.
fn forward_round_trip<K: Kem>(payload_len: usize) {
    let net = network::<K>(payload_len, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let text = message(net.geometry.message_capacity() - 5);
    let mut packet = create_packet(
        &net.geometry,
        &net.path(&[0, 1, 2, 3, 4]),
        &SERVICE,
        &text,
        &mut rng,
    )
    .unwrap();
    assert_eq!(packet.len(), net.geometry.packet_len());
    for hop in 0..HOPS {
        let before = packet.clone();
        let out = net.nodes[hop].unwrap(&mut packet, |_| false).unwrap();
        assert_eq!(
            packet.len(),
            net.geometry.packet_len(),
            "length is constant"
        );
        if hop < HOPS - 1 {
            assert_eq!(
                out.action,
                Action::Forward {
                    next_hop: net.ids[hop + 1],
                    delay_us: 1000 * (hop as u32 + 1)
                }
            );
            // Bitwise unlinkable: no 16-byte run of the payload survives.
            let header_len = net.geometry.header_len();
            let same = before[header_len..]
                .chunks(16)
                .zip(packet[header_len..].chunks(16))
                .filter(|(a, b)| a == b)
                .count();
            assert_eq!(same, 0);
        } else {
            match out.action {
                Action::Deliver {
                    recipient,
                    delay_us,
                    message,
                } => {
                    assert_eq!(recipient, SERVICE.recipient);
                    assert_eq!(delay_us, 5000);
                    assert_eq!(message.len(), net.geometry.message_capacity());
                    assert_eq!(&message[..text.len()], &text[..]);
                    assert!(message[text.len()..].iter().all(|&b| b == 0));
                }
                other => panic!("expected delivery, got {other:?}"),
            }
        }
    }
}

#[test]
fn forward_x25519_2k() {
    forward_round_trip::<X25519>(2_000);
}

#[test]
fn forward_x25519_30k() {
    forward_round_trip::<X25519>(30_000);
}

#[test]
fn forward_xwing_2k() {
    forward_round_trip::<XWing>(2_000);
}

#[test]
fn forward_xwing_30k() {
    forward_round_trip::<XWing>(30_000);
}

/// The client builds a SURB back to itself; the service replies through it.
fn surb_round_trip<K: Kem>(payload_len: usize) {
    let net = network::<K>(payload_len, 3);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let reply_to = Delivery {
        recipient: [0xc1; 32],
        surb_id: Some([0x5b; 16]),
    };
    // Back from the service: three mixes, then the client's gateway.
    let (surb, keys) =
        Surb::create(&net.geometry, &net.path(&[1, 2, 3, 0]), &reply_to, &mut rng).unwrap();
    let wire = surb.to_bytes();
    assert_eq!(wire.len(), net.geometry.surb_len());
    let received = Surb::from_bytes::<K>(&net.geometry, &wire).unwrap();
    assert_eq!(received.first_hop(), net.ids[1]);
    let answer = message(net.geometry.message_capacity());
    let mut packet = received.reply(&net.geometry, &answer).unwrap();
    assert_eq!(packet.len(), net.geometry.packet_len());
    for (step, node) in [1, 2, 3].into_iter().enumerate() {
        let out = net.nodes[node].unwrap(&mut packet, |_| false).unwrap();
        let next = [2, 3, 0][step];
        assert!(
            matches!(out.action, Action::Forward { next_hop, .. } if next_hop == net.ids[next])
        );
    }
    let out = net.nodes[0].unwrap(&mut packet, |_| false).unwrap();
    let Action::SurbReply {
        recipient,
        surb_id,
        payload,
        ..
    } = out.action
    else {
        panic!("expected a SURB reply");
    };
    assert_eq!(recipient, reply_to.recipient);
    assert_eq!(Some(surb_id), reply_to.surb_id);
    assert_eq!(keys.open_reply(&payload).unwrap(), answer);
}

#[test]
fn surb_x25519_2k() {
    surb_round_trip::<X25519>(2_000);
}

#[test]
fn surb_x25519_30k() {
    surb_round_trip::<X25519>(30_000);
}

#[test]
fn surb_xwing_2k() {
    surb_round_trip::<XWing>(2_000);
}

#[test]
fn surb_xwing_30k() {
    surb_round_trip::<XWing>(30_000);
}

/// Flips header bits just before hop `at` and checks that hop refuses them:
/// the version by its check, everything else by the header MAC (or, for a
/// KEM ciphertext knocked off the curve, by decapsulation).
fn header_bits_are_caught_at_their_hop<K: Kem>() {
    let net = network::<K>(2_000, 5);
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let original = create_packet(
        &net.geometry,
        &net.path(&[0, 1, 2, 3, 4]),
        &SERVICE,
        b"hi",
        &mut rng,
    )
    .unwrap();
    let header_len = net.geometry.header_len();
    for at in 0..HOPS {
        let mut packet = original.clone();
        for node in &net.nodes[..at] {
            node.unwrap(&mut packet, |_| false).unwrap();
        }
        // Bits spread over the version, the KEM ciphertext, the routing
        // information and the MAC.
        let step = header_len * 8 / 97;
        for bit in (0..header_len * 8)
            .step_by(step)
            .chain([header_len * 8 - 1])
        {
            let mut tampered = packet.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            let got = net.nodes[at].unwrap(&mut tampered, |_| false).unwrap_err();
            let in_ciphertext = (16..16 + 8 * K::CIPHERTEXT_LEN).contains(&bit);
            let refused = match got {
                Error::UnknownVersion => bit < 16,
                // A changed X25519 ciphertext may leave the curve and be
                // refused one step before the MAC, still at this hop.
                Error::Decapsulation => in_ciphertext,
                Error::HeaderMac => bit >= 16,
                _ => false,
            };
            assert!(refused, "hop {at}, bit {bit}: {got:?}");
        }
    }
}

#[test]
fn header_bits_x25519() {
    header_bits_are_caught_at_their_hop::<X25519>();
}

#[test]
fn header_bits_xwing() {
    header_bits_are_caught_at_their_hop::<XWing>();
}

/// Flips a payload bit before hop `at`: every hop still forwards (it cannot
/// tell), and the end refuses the payload.
fn payload_bits_are_caught_at_the_end<K: Kem>() {
    let net = network::<K>(2_000, 7);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let original = create_packet(
        &net.geometry,
        &net.path(&[0, 1, 2, 3, 4]),
        &SERVICE,
        b"hi",
        &mut rng,
    )
    .unwrap();
    let header_len = net.geometry.header_len();
    for (at, bit) in [(0, 0), (1, 977), (2, 8_000), (3, 15_999), (4, 4_242)] {
        let mut packet = original.clone();
        for (hop, node) in net.nodes.iter().enumerate() {
            if hop == at {
                packet[header_len + bit / 8] ^= 1 << (bit % 8);
            }
            let out = node.unwrap(&mut packet, |_| false);
            if hop < HOPS - 1 {
                assert!(matches!(out.unwrap().action, Action::Forward { .. }));
            } else {
                assert_eq!(out.unwrap_err(), Error::PayloadTampered);
            }
        }
    }

    // And through a SURB: the creator's check fails.
    let (surb, keys) = Surb::create(
        &net.geometry,
        &net.path(&[1, 2, 3, 0]),
        &Delivery {
            recipient: [1; 32],
            surb_id: Some([2; 16]),
        },
        &mut rng,
    )
    .unwrap();
    let mut packet = surb.reply(&net.geometry, b"answer").unwrap();
    packet[header_len + 100] ^= 0x10;
    for node in [1, 2, 3] {
        net.nodes[node].unwrap(&mut packet, |_| false).unwrap();
    }
    let Action::SurbReply { payload, .. } =
        net.nodes[0].unwrap(&mut packet, |_| false).unwrap().action
    else {
        panic!("expected a SURB reply");
    };
    assert_eq!(
        keys.open_reply(&payload).unwrap_err(),
        Error::PayloadTampered
    );
}

#[test]
fn payload_bits_x25519() {
    payload_bits_are_caught_at_the_end::<X25519>();
}

#[test]
fn payload_bits_xwing() {
    payload_bits_are_caught_at_the_end::<XWing>();
}

#[test]
fn wrong_sizes_are_rejected_before_any_cryptography() {
    let net = network::<XWing>(2_000, 9);
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let packet = create_packet(
        &net.geometry,
        &net.path(&[0, 1, 2]),
        &SERVICE,
        b"x",
        &mut rng,
    )
    .unwrap();
    for len in [0, 1, packet.len() - 1, packet.len() + 1, 2 * packet.len()] {
        let mut wrong = packet.clone();
        wrong.resize(len, 0);
        assert_eq!(
            net.nodes[0]
                .unwrap(&mut wrong, |_| panic!("no tag for a wrong size"))
                .unwrap_err(),
            Error::WrongLength {
                expected: net.geometry.packet_len(),
                got: len
            }
        );
    }
    // A packet of another geometry's KEM is refused by its version field.
    let other = network::<X25519>(2_000, 9);
    let mut foreign = vec![0u8; net.geometry.packet_len()];
    foreign[..2].copy_from_slice(&[1, 1]);
    assert_eq!(
        net.nodes[0].unwrap(&mut foreign, |_| false).unwrap_err(),
        Error::UnknownVersion
    );
    let (surb, _) = Surb::create(
        &other.geometry,
        &other.path(&[0, 1]),
        &Delivery {
            recipient: [0; 32],
            surb_id: Some([0; 16]),
        },
        &mut rng,
    )
    .unwrap();
    let wire = surb.to_bytes();
    assert!(matches!(
        Surb::from_bytes::<XWing>(&net.geometry, &wire),
        Err(Error::WrongLength { .. })
    ));
    assert!(matches!(
        Surb::from_bytes::<X25519>(&other.geometry, &wire[..wire.len() - 1]),
        Err(Error::WrongLength { .. })
    ));
    assert!(matches!(
        create_packet(
            &net.geometry,
            &net.path(&[0]),
            &SERVICE,
            &vec![0; net.geometry.message_capacity() + 1],
            &mut rng
        ),
        Err(Error::MessageTooLong { .. })
    ));
    let too_long: Vec<usize> = (0..HOPS).chain([0]).collect();
    assert!(matches!(
        create_packet(&net.geometry, &net.path(&too_long), &SERVICE, b"", &mut rng),
        Err(Error::PathLength {
            hops: 6,
            max_hops: 5
        })
    ));
}

#[test]
fn replay_tags_are_stable_and_replays_refused() {
    let net = network::<X25519>(2_000, 11);
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let packet = create_packet(
        &net.geometry,
        &net.path(&[0, 1, 2, 3, 4]),
        &SERVICE,
        b"r",
        &mut rng,
    )
    .unwrap();
    let mut first = packet.clone();
    let mut again = packet.clone();
    let tag = net.nodes[0]
        .unwrap(&mut first, |_| false)
        .unwrap()
        .replay_tag;
    assert_eq!(
        net.nodes[0]
            .unwrap(&mut again, |_| false)
            .unwrap()
            .replay_tag,
        tag
    );
    assert_eq!(first, again, "unwrapping is deterministic");
    let mut third = packet.clone();
    assert_eq!(
        net.nodes[0]
            .unwrap(&mut third, |seen| *seen == tag)
            .unwrap_err(),
        Error::Replay
    );
    // The next hop's tag is another one, and another packet's tag differs.
    let next = net.nodes[1]
        .unwrap(&mut first, |_| false)
        .unwrap()
        .replay_tag;
    assert_ne!(next, tag);
    let mut other = create_packet(
        &net.geometry,
        &net.path(&[0, 1, 2, 3, 4]),
        &SERVICE,
        b"r",
        &mut rng,
    )
    .unwrap();
    assert_ne!(
        net.nodes[0]
            .unwrap(&mut other, |_| false)
            .unwrap()
            .replay_tag,
        tag
    );
}

#[test]
fn shorter_paths_look_the_same_on_the_wire() {
    let net = network::<X25519>(2_000, 13);
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    for hops in 1..=HOPS {
        let order: Vec<usize> = (0..hops).collect();
        let mut packet = create_packet(
            &net.geometry,
            &net.path(&order),
            &SERVICE,
            b"short",
            &mut rng,
        )
        .unwrap();
        assert_eq!(packet.len(), net.geometry.packet_len());
        for (i, node) in net.nodes[..hops].iter().enumerate() {
            let out = node.unwrap(&mut packet, |_| false).unwrap();
            assert_eq!(i == hops - 1, matches!(out.action, Action::Deliver { .. }));
        }
    }
}

#[test]
fn sizes_follow_from_the_geometry() {
    let x = Geometry::new::<X25519>(30_000, 5).unwrap();
    assert_eq!(
        (
            x.header_len(),
            x.packet_len(),
            x.surb_len(),
            x.message_capacity()
        ),
        (530, 30_530, 594, 29_984)
    );
    let w = Geometry::new::<XWing>(30_000, 5).unwrap();
    assert_eq!(
        (w.header_len(), w.packet_len(), w.surb_len()),
        (7_058, 37_058, 7_122)
    );
    assert!(Geometry::new::<XWing>(31, 5).is_err());
    assert!(Geometry::new::<XWing>(2_000, 0).is_err());
    assert!(Geometry::new::<XWing>(2_000, 17).is_err());
    let (secret, _) = X25519::generate(&mut ChaCha20Rng::seed_from_u64(0));
    assert!(SphinxNode::<X25519>::new(w, secret).is_err());
}
