//! BACAP costs: sealing and opening a box (1 kB and 30 kB), deriving a box
//! ID (read-cap and write-cap paths), and one ratchet step.
//!
//! Run with `cargo bench -p funion-bacap --bench bacap`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use funion_bacap::{verify_box, Reader, WriteCap};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;

const CTX: &[u8] = b"funion bench context";

fn boxes(c: &mut Criterion) {
    let cap = WriteCap::generate(&mut ChaCha20Rng::seed_from_u64(1));
    let read = cap.read_cap();
    let index = cap.index().clone();
    let mut group = c.benchmark_group("box");
    for size in [1_000usize, 30_000] {
        let plaintext = vec![0x5a; size];
        let sealed = cap.seal(&index, CTX, &plaintext);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("encrypt_sign", size),
            &plaintext,
            |b, p| b.iter(|| cap.seal(black_box(&index), CTX, black_box(p))),
        );
        group.bench_with_input(BenchmarkId::new("verify_decrypt", size), &sealed, |b, s| {
            b.iter(|| {
                index
                    .decrypt(
                        CTX,
                        black_box(&s.id),
                        black_box(&s.ciphertext),
                        &s.signature,
                    )
                    .unwrap()
            })
        });
        group.bench_with_input(
            BenchmarkId::new("open_checked_box_id", size),
            &sealed,
            |b, s| {
                b.iter(|| {
                    read.open(
                        &index,
                        CTX,
                        black_box(&s.id),
                        black_box(&s.ciphertext),
                        &s.signature,
                    )
                    .unwrap()
                })
            },
        );
        let reader = Reader::new(read.clone(), CTX);
        group.bench_with_input(BenchmarkId::new("reader_peek", size), &sealed, |b, s| {
            b.iter(|| {
                reader
                    .peek(black_box(&s.id), black_box(&s.ciphertext), &s.signature)
                    .unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("verify_only", size), &sealed, |b, s| {
            b.iter(|| verify_box(black_box(&s.id), black_box(&s.ciphertext), &s.signature).unwrap())
        });
    }
    group.finish();
}

fn derivation(c: &mut Criterion) {
    let cap = WriteCap::generate(&mut ChaCha20Rng::seed_from_u64(2));
    let read = cap.read_cap();
    let index = cap.index().clone();
    c.bench_function("box_id/read_cap", |b| {
        b.iter(|| read.box_id(black_box(&index), CTX))
    });
    c.bench_function("box_id/write_cap", |b| {
        b.iter(|| cap.box_id(black_box(&index), CTX))
    });
    c.bench_function("ratchet/next", |b| {
        b.iter(|| black_box(&index).next().unwrap())
    });
}

/// Reference points measured in the same run: plain Ed25519 (ed25519-dalek)
/// and bare AES-256-GCM-SIV, the two costs a box is made of.
fn reference(c: &mut Criterion) {
    use ed25519_dalek::{Signer, SigningKey, Verifier};
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public = key.verifying_key();
    let mut group = c.benchmark_group("reference");
    for size in [1_000usize, 30_000] {
        let message = vec![0x5a; size];
        let signature = key.sign(&message);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("ed25519_sign", size), &message, |b, m| {
            b.iter(|| key.sign(black_box(m)))
        });
        group.bench_with_input(
            BenchmarkId::new("ed25519_verify", size),
            &message,
            |b, m| b.iter(|| public.verify(black_box(m), &signature).unwrap()),
        );
        group.bench_with_input(BenchmarkId::new("gcm_siv_seal", size), &message, |b, m| {
            b.iter(|| {
                funion_bacap::primitives::gcm_siv_seal(&[1; 32], &[2; 12], &[3; 32], black_box(m))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, boxes, derivation, reference);
criterion_main!(benches);
