//! Pigeonhole put and get on a --fast devnet (in this process, real sockets
//! and Noise links, X-Wing, 30,000-byte payloads): time to store and read
//! back 1 MB, echoes per box operation, and, in the same run, the echo
//! round trip every operation rides on. Prints its figures.
//!
//! `cargo bench -p funion --bench pigeonhole`

use std::time::Duration;

use funion_client::{session as client, storage};
use funion_devnet as devnet;
use funion_pki::Parameters;
use funion_sim::summarize;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    // Couriers that hold the SURB until a replica answers (the default),
    // then couriers that ACK at once, so that every operation is ACK then
    // poll.
    for hold_ms in [2_000, 0] {
        println!("courier hold {hold_ms} ms:");
        on_devnet(hold_ms).await;
    }
}

async fn on_devnet(courier_hold_ms: u64) {
    let dir = std::env::temp_dir().join(format!("funion-pigeonhole-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let parameters = Parameters::fast();
    let options = devnet::DevnetOptions {
        courier_hold_ms,
        ..devnet::DevnetOptions::default()
    };
    let net = devnet::start_with(&dir, parameters.clone(), &options)
        .await
        .unwrap();
    let ping = client::ping(&net.client, 100, Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();
    let rtt = summarize(&ping.rtts_us);
    println!(
        "--fast devnet (μ = {} ms, λ_s = {}/s): echo RTT mean {:.1} ms, p50 {:.1} ms over {} echoes",
        parameters.mean_delay_us as f64 / 1e3,
        parameters.send_rate(),
        rtt.mean * 1e3,
        rtt.p50 * 1e3,
        ping.rtts_us.len()
    );
    let mut data = vec![0u8; 1_000_000];
    ChaCha20Rng::seed_from_u64(1).fill_bytes(&mut data);
    for round in 1..=3 {
        let put = storage::put(&net.client, &data, |_, _| {}).await.unwrap();
        let (back, get) = storage::get(&net.client, &put.read_cap, |_, _| {})
            .await
            .unwrap();
        assert!(back == data);
        let per = |s: &storage::StorageStats| s.echoes as f64 / s.operations.max(1) as f64;
        println!(
            "round {round}: put 1 MB in {:.3} s ({} boxes, {:.2} echoes per write, {} polls, \
             {} fresh, {} resent); get in {:.3} s ({:.2} echoes per read, {} polls, {} fresh, \
             {} resent)",
            put.elapsed.as_secs_f64(),
            put.boxes,
            per(&put.stats),
            put.stats.polls,
            put.stats.fresh_envelopes,
            put.stats.resends,
            get.elapsed.as_secs_f64(),
            per(&get.stats),
            get.stats.polls,
            get.stats.fresh_envelopes,
            get.stats.resends
        );
        println!(
            "         a box every {:.1} ms writing, {:.1} ms reading; send slots alone allow one per {:.1} ms",
            put.elapsed.as_secs_f64() * 1e3 / put.boxes as f64,
            get.elapsed.as_secs_f64() * 1e3 / get.boxes as f64,
            1e3 / parameters.send_rate()
        );
    }
    net.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
