//! Ticket costs against the anchor, the `rln` crate called directly in the
//! same run (DESIGN: rln 3.0.0, depth 20: proof 427–457 ms, from a cached
//! partial proof 116–155 ms, verify about 2 ms, proof 128 B).
//!
//! `cargo bench -p funion-tickets` prints criterion's figures and then
//! verifications per second on one core and bytes per ticket.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use funion_tickets::{
    rate_commitment, Identity, Prover, RateTree, Scope, TicketRequest, Verifier, TICKET_LEN,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rln::prelude::{
    hash_to_field_le, Fr, Hasher, IdentityKeys, PoseidonHash, RLNBuilder, RLNPartialWitnessInput,
    RLNWitnessInput,
};
use zerokit_utils::merkle_tree::{OptimalMerkleTree, ZerokitMerkleTree};

struct Setup {
    identity: Identity,
    path: funion_tickets::MerklePath,
    root: funion_tickets::Scalar,
    scope: Scope,
}

fn setup() -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let identity = Identity::generate(&mut rng);
    let mut tree = RateTree::default();
    tree.set(3, &rate_commitment(&identity.commitment(), 100).unwrap())
        .unwrap();
    Setup {
        path: tree.path(3).unwrap(),
        root: tree.root(),
        identity,
        scope: Scope {
            period: 1,
            provider: "bench".into(),
        },
    }
}

fn request<'a>(s: &'a Setup, message_id: u32) -> TicketRequest<'a> {
    TicketRequest {
        identity: &s.identity,
        limit: 100,
        path: &s.path,
        scope: &s.scope,
        message_id,
        nonce: [message_id as u8; 32],
    }
}

/// The anchor's witness, built with rln's own types as its benchmark does.
fn anchor_witness() -> RLNWitnessInput {
    let keys = IdentityKeys::generate_seeded::<PoseidonHash, rand_chacha::ChaCha20Rng>(b"anchor");
    let limit = Fr::from(100);
    let leaf = Hasher::<PoseidonHash>::hash_pair(keys.id_commitment(), limit);
    let mut tree = OptimalMerkleTree::<PoseidonHash>::default(20).unwrap();
    tree.set(3, leaf).unwrap();
    let proof = tree.proof(3).unwrap();
    RLNWitnessInput::new_single()
        .identity_secret(keys.identity_secret())
        .user_message_limit(limit)
        .merkle_proof(&proof)
        .x(hash_to_field_le(b"signal"))
        .external_nullifier(hash_to_field_le(b"epoch"))
        .message_id(Fr::from(1))
        .build()
        .unwrap()
}

fn proving(c: &mut Criterion) {
    let s = setup();
    let prover = Prover::default();
    let rln = RLNBuilder::stateless().build();
    let witness = anchor_witness();
    let partial_witness = RLNPartialWitnessInput::from(&witness);
    let partial = prover.partial(&s.identity, 100, &s.path).unwrap();
    let anchor_partial = rln.generate_partial_proof(&partial_witness).unwrap();
    let mut group = c.benchmark_group("prove");
    group.sample_size(10);
    group.bench_function("anchor rln generate_proof", |b| {
        b.iter(|| rln.generate_proof(&witness).unwrap())
    });
    group.bench_function("ticket full", |b| {
        b.iter(|| prover.prove(&request(&s, 1)).unwrap())
    });
    group.bench_function("anchor rln finish_proof", |b| {
        b.iter(|| rln.finish_proof(&anchor_partial, &witness).unwrap())
    });
    group.bench_function("ticket from cached partial", |b| {
        b.iter(|| prover.finish(&partial, &request(&s, 1)).unwrap())
    });
    group.finish();
}

fn verifying(c: &mut Criterion) {
    let s = setup();
    let prover = Prover::default();
    let ticket = prover.prove(&request(&s, 2)).unwrap();
    let verifier = Verifier::new("bench");
    let rln = RLNBuilder::stateless().build();
    let witness = anchor_witness();
    let (proof, values) = rln.generate_proof(&witness).unwrap();
    let mut group = c.benchmark_group("verify");
    group.bench_function("anchor rln verify", |b| {
        b.iter(|| assert!(rln.verify(&proof, &values).unwrap()))
    });
    group.bench_function("ticket", |b| {
        b.iter(|| verifier.verify(&ticket, &[1], &[s.root]).unwrap())
    });
    group.finish();

    // One core: a one-thread pool, so rln's internal parallelism cannot
    // borrow the other.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (count, took) = pool.install(|| {
        let started = Instant::now();
        let mut count = 0u32;
        while started.elapsed().as_secs_f64() < 3.0 {
            verifier.verify(&ticket, &[1], &[s.root]).unwrap();
            count += 1;
        }
        (count, started.elapsed().as_secs_f64())
    });
    println!(
        "one core: {:.0} ticket verifications/s ({count} in {took:.2} s); {TICKET_LEN} bytes per ticket \
         (128-byte proof, period, root, nullifier, x, y)",
        f64::from(count) / took
    );
}

/// A ticket book of 8 from one partial proof, on 1 thread and on every
/// core (each thread finishes its share; rln also parallelises inside a
/// proof, so this shows whether outer threads still help).
fn book(_: &mut Criterion) {
    let s = setup();
    let prover = Prover::default();
    let partial = prover.partial(&s.identity, 100, &s.path).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, cores] {
        let started = Instant::now();
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (s, prover, partial) = (&s, &prover, &partial);
                scope.spawn(move || {
                    for id in (t as u32..8).step_by(threads) {
                        prover.finish(partial, &request(s, id)).unwrap();
                    }
                });
            }
        });
        let took = started.elapsed().as_secs_f64();
        println!(
            "book of 8 from one partial proof on {threads} thread(s): {took:.2} s ({:.0} ms a ticket)",
            took * 1000.0 / 8.0
        );
    }
}

criterion_group!(benches, proving, verifying, book);
criterion_main!(benches);
