//! Bytes a mix node receives: a real packet with fuzzer-chosen changes (bits
//! flipped, cut short, grown, or replaced outright), for both KEMs. The node
//! must refuse or process them, never panic, and never accept a packet whose
//! header was changed.
#![no_main]

use std::sync::OnceLock;

use funion_sphinx::kem::{Kem, XWing, X25519};
use funion_sphinx::{create_packet, Delivery, Geometry, NodeId, PathHop, SphinxNode};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;

struct Net<K: Kem> {
    node: SphinxNode<K>,
    packet: Vec<u8>,
    header_len: usize,
}

fn net<K: Kem>() -> Net<K> {
    let geometry = Geometry::new::<K>(256, 3).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let keys: Vec<_> = (0..3).map(|_| K::generate(&mut rng)).collect();
    let path: Vec<PathHop<'_, K>> = keys
        .iter()
        .enumerate()
        .map(|(i, (_, public))| PathHop {
            node: NodeId([i as u8; 32]),
            public_key: public,
            delay_us: 5,
        })
        .collect();
    let delivery = Delivery {
        recipient: [7; 32],
        surb_id: None,
    };
    let packet = create_packet(&geometry, &path, &delivery, b"fuzz", &mut rng).unwrap();
    let secret = keys.into_iter().next().unwrap().0;
    Net {
        node: SphinxNode::new(geometry, secret).unwrap(),
        packet,
        header_len: geometry.header_len(),
    }
}

fn run<K: Kem>(net: &Net<K>, data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut packet = net.packet.clone();
    match mode % 4 {
        0 => packet.iter_mut().zip(rest).for_each(|(p, d)| *p ^= d),
        1 => packet.truncate(rest.len()),
        2 => packet.extend_from_slice(rest),
        _ => packet = rest.to_vec(),
    }
    let header_changed = packet.len() != net.packet.len()
        || packet[..net.header_len] != net.packet[..net.header_len];
    let outcome = net.node.unwrap(&mut packet, |_| false);
    if header_changed {
        assert!(outcome.is_err(), "a changed header was accepted");
    }
}

fuzz_target!(|data: &[u8]| {
    static X: OnceLock<Net<X25519>> = OnceLock::new();
    static W: OnceLock<Net<XWing>> = OnceLock::new();
    if data.first().is_some_and(|b| b & 0x80 != 0) {
        run(W.get_or_init(net::<XWing>), data);
    } else {
        run(X.get_or_init(net::<X25519>), data);
    }
});
