//! Modelled packets (the simulator's abstract mode) make every node decide
//! what a Sphinx packet along the same path makes it decide: next hop, delay,
//! delivery, the same padded message, replays refused. A real node refuses
//! them.

use funion_sphinx::kem::{Kem, X25519};
use funion_sphinx::{
    create_packet, Action, Delivery, Error, Geometry, NodeId, PathHop, SphinxNode, Surb,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const HOPS: usize = 5;

struct Net {
    real: Vec<SphinxNode<X25519>>,
    modelled: Vec<SphinxNode<X25519>>,
    publics: Vec<<X25519 as Kem>::PublicKey>,
    ids: Vec<NodeId>,
    geometry: Geometry,
}

fn net() -> Net {
    let geometry = Geometry::new::<X25519>(4_000, HOPS).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (mut real, mut modelled, mut publics, mut ids) = (vec![], vec![], vec![], vec![]);
    for i in 0..HOPS {
        let (secret, public) = X25519::generate(&mut rng);
        let again = X25519::secret_from_seed(&[i as u8; 32]);
        real.push(SphinxNode::new(geometry, secret).unwrap());
        modelled.push(SphinxNode::new(geometry.modelled(), again).unwrap());
        publics.push(public);
        ids.push(NodeId([i as u8 + 1; 32]));
    }
    Net {
        real,
        modelled,
        publics,
        ids,
        geometry,
    }
}

impl Net {
    fn path(&self, order: &[usize]) -> Vec<PathHop<'_, X25519>> {
        order
            .iter()
            .map(|&i| PathHop {
                node: self.ids[i],
                public_key: &self.publics[i],
                delay_us: 700 * (i as u32 + 3),
            })
            .collect()
    }
}

/// Runs `packet` through the nodes in `order`; returns every action.
fn walk(nodes: &[SphinxNode<X25519>], order: &[usize], mut packet: Vec<u8>) -> Vec<Action> {
    order
        .iter()
        .map(|&i| nodes[i].unwrap(&mut packet, |_| false).unwrap().action)
        .collect()
}

#[test]
fn a_modelled_packet_takes_the_decisions_of_a_sphinx_packet() {
    let net = net();
    let order = [0, 1, 2, 3, 4];
    let service = Delivery {
        recipient: [0xee; 32],
        surb_id: None,
    };
    let text = b"the same message either way".to_vec();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let path = net.path(&order);
    let real = create_packet(&net.geometry, &path, &service, &text, &mut rng).unwrap();
    let modelled =
        create_packet(&net.geometry.modelled(), &path, &service, &text, &mut rng).unwrap();
    assert!(modelled.len() < 400, "no padding, no key material");
    assert_eq!(
        walk(&net.real, &order, real),
        walk(&net.modelled, &order, modelled)
    );

    // Through a SURB too: the same hops, and the same opened reply.
    let back = [1, 2, 3, 0];
    let reply_to = Delivery {
        recipient: [0xc1; 32],
        surb_id: Some([0x5b; 16]),
    };
    let mut opened = Vec::new();
    let mut actions = Vec::new();
    for (geometry, nodes) in [
        (net.geometry, &net.real),
        (net.geometry.modelled(), &net.modelled),
    ] {
        let (surb, keys) = Surb::create(&geometry, &net.path(&back), &reply_to, &mut rng).unwrap();
        let wire = surb.to_bytes();
        assert_eq!(wire.len(), geometry.surb_len(), "a SURB is one length");
        let surb = Surb::from_bytes::<X25519>(&geometry, &wire).unwrap();
        let mut taken = walk(nodes, &back, surb.reply(&geometry, b"answer").unwrap());
        let Some(Action::SurbReply { payload, .. }) = taken.last_mut() else {
            panic!("a SURB reply at the end");
        };
        opened.push(keys.open_reply(&std::mem::take(payload)).unwrap());
        actions.push(taken);
    }
    assert_eq!(opened[0], opened[1]);
    assert_eq!(opened[0].len(), net.geometry.message_capacity());
    assert_eq!(actions[0], actions[1]);
}

#[test]
fn modelled_packets_are_refused_when_replayed_and_by_real_nodes() {
    let net = net();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let service = Delivery {
        recipient: [0xee; 32],
        surb_id: None,
    };
    let geometry = net.geometry.modelled();
    let packet = create_packet(&geometry, &net.path(&[0, 1]), &service, b"x", &mut rng).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut first = packet.clone();
    net.modelled[0]
        .unwrap(&mut first, |tag| !seen.insert(*tag))
        .unwrap();
    let mut again = packet.clone();
    assert_eq!(
        net.modelled[0]
            .unwrap(&mut again, |tag| !seen.insert(*tag))
            .unwrap_err(),
        Error::Replay
    );
    let mut wrong = packet;
    assert!(matches!(
        net.real[0].unwrap(&mut wrong, |_| false),
        Err(Error::WrongLength { .. })
    ));
    let mut padded = create_packet(&geometry, &net.path(&[0]), &service, b"y", &mut rng).unwrap();
    padded.resize(net.geometry.packet_len(), 0);
    assert_eq!(
        net.real[0].unwrap(&mut padded, |_| false).unwrap_err(),
        Error::UnknownVersion
    );
}
