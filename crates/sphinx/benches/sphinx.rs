//! One forward-hop unwrap, side by side in one run:
//!
//! - `funion_x25519`, `funion_xwing`: `SphinxNode::unwrap` on a 5-hop packet
//!   (replay check included, answering "not seen");
//! - `nym_sphinx_packet`: Nym's `sphinx-packet` 0.8 `SphinxPacket::process`
//!   on a 5-hop packet with the same payload length;
//! - `bound_x25519`, `bound_xwing`: only what one hop cannot avoid, one KEM
//!   decapsulation and one HCTR2 pass over the payload.
//!
//! Groups `sphinx_hop_30k` and `sphinx_hop_2k`. Packets are copied in
//! untimed setup for every function alike. Group `sprp_30k` compares the
//! payload ciphers: funion's HCTR2 and Nym's LIONESS (ChaCha20 + BLAKE2b).
//!
//! Run: `cargo bench -p funion-sphinx --bench sphinx`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use funion_sphinx::hctr2::Hctr2;
use funion_sphinx::kem::{Kem, XWing, X25519};
use funion_sphinx::{create_packet, Delivery, Geometry, NodeId, PathHop, SphinxNode};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const HOPS: usize = 5;

/// A 5-hop packet for node 0 of a fresh network, and that node.
fn funion_setup<K: Kem>(payload_len: usize) -> (SphinxNode<K>, Vec<u8>) {
    let geometry = Geometry::new::<K>(payload_len, HOPS).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let keys: Vec<_> = (0..HOPS).map(|_| K::generate(&mut rng)).collect();
    let path: Vec<PathHop<'_, K>> = keys
        .iter()
        .enumerate()
        .map(|(i, (_, public))| PathHop {
            node: NodeId([i as u8; 32]),
            public_key: public,
            delay_us: 200_000,
        })
        .collect();
    let delivery = Delivery {
        recipient: [9; 32],
        surb_id: None,
    };
    let message = vec![0x42; geometry.message_capacity()];
    let packet = create_packet(&geometry, &path, &delivery, &message, &mut rng).unwrap();
    let secret = keys.into_iter().next().unwrap().0;
    (SphinxNode::new(geometry, secret).unwrap(), packet)
}

fn bench_funion<K: Kem>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    payload_len: usize,
) {
    let (node, packet) = funion_setup::<K>(payload_len);
    group.bench_function(name, |b| {
        b.iter_batched_ref(
            || packet.clone(),
            |p| node.unwrap(black_box(p), |_| false).unwrap(),
            BatchSize::SmallInput,
        )
    });
}

fn bench_bound<K: Kem>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    payload_len: usize,
) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (secret, public) = K::generate(&mut rng);
    let mut ciphertext = vec![0u8; K::CIPHERTEXT_LEN];
    K::encapsulate(&public, &mut rng, &mut ciphertext);
    let payload = vec![0x17u8; payload_len];
    group.bench_function(name, |b| {
        b.iter_batched_ref(
            || payload.clone(),
            |p| {
                let shared = K::decapsulate(&secret, black_box(&ciphertext)).unwrap();
                Hctr2::new(&shared).decrypt(&[], black_box(p));
            },
            BatchSize::SmallInput,
        )
    });
}

fn bench_nym(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    payload_len: usize,
) {
    use sphinx_packet::constants::{
        DESTINATION_ADDRESS_LENGTH, IDENTIFIER_LENGTH, NODE_ADDRESS_LENGTH,
    };
    use sphinx_packet::header::delays;
    use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
    use sphinx_packet::{SphinxPacket, SphinxPacketBuilder};
    use x25519_dalek_nym::{PublicKey, StaticSecret};

    let secrets: Vec<StaticSecret> = (0..HOPS as u8)
        .map(|i| StaticSecret::from([i + 1; 32]))
        .collect();
    let route: Vec<Node> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Node::new(
                NodeAddressBytes::from_bytes([i as u8; NODE_ADDRESS_LENGTH]),
                PublicKey::from(s),
            )
        })
        .collect();
    let delays = delays::generate_from_average_duration(HOPS, Duration::from_millis(200));
    let destination = Destination::new(
        DestinationAddressBytes::from_bytes([3u8; DESTINATION_ADDRESS_LENGTH]),
        [4u8; IDENTIFIER_LENGTH],
    );
    let packet = SphinxPacketBuilder::new()
        .with_payload_size(payload_len)
        .build_packet(vec![0x42; payload_len / 2], &route, &destination, &delays)
        .unwrap();
    let bytes = packet.to_bytes();
    group.bench_function("nym_sphinx_packet", |b| {
        b.iter_batched(
            || SphinxPacket::from_bytes(&bytes).unwrap(),
            |p| p.process(black_box(&secrets[0])).unwrap(),
            BatchSize::SmallInput,
        )
    });
}

fn hop_group(c: &mut Criterion, name: &str, payload_len: usize) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(payload_len as u64));
    bench_funion::<X25519>(&mut group, "funion_x25519", payload_len);
    bench_funion::<XWing>(&mut group, "funion_xwing", payload_len);
    bench_nym(&mut group, payload_len);
    bench_bound::<X25519>(&mut group, "bound_x25519", payload_len);
    bench_bound::<XWing>(&mut group, "bound_xwing", payload_len);
    group.finish();
}

fn sphinx_hop_30k(c: &mut Criterion) {
    hop_group(c, "sphinx_hop_30k", 30_000);
}

fn sphinx_hop_2k(c: &mut Criterion) {
    hop_group(c, "sphinx_hop_2k", 2_000);
}

/// The payload SPRP candidates over 30 kB: funion's HCTR2 (AES-256 +
/// POLYVAL) and Nym's LIONESS (ChaCha20 + keyed BLAKE2b).
fn sprp_30k(c: &mut Criterion) {
    let mut group = c.benchmark_group("sprp_30k");
    group.throughput(Throughput::Bytes(30_000));
    let hctr2 = Hctr2::new(&[7; 32]);
    group.bench_function("hctr2_aes256", |b| {
        b.iter_batched_ref(
            || vec![0x33u8; 30_000],
            |p| hctr2.decrypt(&[], black_box(p)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("hctr2_key_setup_and_pass", |b| {
        b.iter_batched_ref(
            || vec![0x33u8; 30_000],
            |p| Hctr2::new(black_box(&[7; 32])).decrypt(&[], black_box(p)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("lioness_nym", |b| {
        use sphinx_packet::payload::Payload;
        b.iter_batched(
            || Payload::from_bytes(&[0x33u8; 30_000]).unwrap(),
            |p| p.unwrap(black_box(&[7u8; 192])).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, sphinx_hop_30k, sphinx_hop_2k, sprp_30k);
criterion_main!(benches);
