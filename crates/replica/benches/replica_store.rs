//! Replica store throughput, in-process: durable writes per second (each
//! batch one redb transaction committed to disk, signatures checked) at
//! several batch sizes, and reads per second. Boxes are full-size for the
//! default geometry (X-Wing, 30,000-byte payloads). Prints its figures.
//!
//! `cargo bench -p funion-replica --bench replica_store`

use std::time::Instant;

use funion_bacap::{SealedBox, WriteCap, Writer};
use funion_pigeonhole::envelope::Sizes;
use funion_pki::Parameters;
use funion_replica::store::{BoxStore, WriteOp, Written};
use funion_sphinx::NodeId;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn main() {
    let geometry = Parameters::paper().geometry().unwrap();
    let sizes = Sizes::for_geometry(&geometry).unwrap();
    let plaintext_len = sizes.max_plaintext();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let total = 2_048;
    let mut writer = Writer::new(WriteCap::generate(&mut rng), b"bench");
    let mut plaintext = vec![0u8; plaintext_len];
    let boxes: Vec<SealedBox> = (0..total)
        .map(|_| {
            rng.fill_bytes(&mut plaintext);
            writer.seal_next(&plaintext).unwrap()
        })
        .collect();
    println!(
        "replica store: {} boxes of {} bytes (X-Wing geometry), redb, durable commits",
        total,
        boxes[0].ciphertext.len()
    );
    let dir = std::env::temp_dir().join(format!("funion-store-bench-{}", std::process::id()));
    let other_holder = NodeId([7; 32]);
    for batch in [1usize, 16, 256] {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = BoxStore::open(&dir.join("boxes.redb"), u64::MAX / 2).unwrap();
        let count = if batch == 1 { 256 } else { total };
        let start = Instant::now();
        for chunk in boxes[..count].chunks(batch) {
            let ops: Vec<WriteOp> = chunk
                .iter()
                .map(|item| WriteOp {
                    item: item.clone(),
                    replicate_to: vec![other_holder],
                })
                .collect();
            let outcomes = store.write_batch(&ops, 1).unwrap();
            assert!(outcomes.iter().all(|w| *w == Written::Stored));
        }
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "  writes, batch {batch:>3}: {:>8.0} boxes/s ({:.1} MB/s), {:.3} ms per commit",
            count as f64 / elapsed,
            count as f64 * boxes[0].ciphertext.len() as f64 / elapsed / 1e6,
            elapsed * 1e3 / count.div_ceil(batch) as f64
        );
        if batch == 256 {
            let reads = 20_000;
            let start = Instant::now();
            for i in 0..reads {
                let item = &boxes[(i * 7919) % total];
                assert!(store.get(&item.id, 2).unwrap().is_some());
            }
            let elapsed = start.elapsed().as_secs_f64();
            println!(
                "  reads:            {:>8.0} boxes/s ({:.1} µs each)",
                reads as f64 / elapsed,
                elapsed * 1e6 / reads as f64
            );
        }
    }
    // For scale, in the same run: checking one box's signature.
    let start = Instant::now();
    for item in &boxes[..256] {
        funion_bacap::verify_box(&item.id, &item.ciphertext, &item.signature).unwrap();
    }
    println!(
        "  reference: Ed25519 check of one box {:.1} µs",
        start.elapsed().as_secs_f64() * 1e6 / 256.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
