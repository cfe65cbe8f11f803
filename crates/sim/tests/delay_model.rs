//! The simulator against the paper's delay model, and its determinism.

use funion_pki::{KemKind, Parameters};
use funion_sim::{erlang_quantile, ks_distance, run, summarize, SimConfig};
use funion_sphinx::kem::X25519;

fn paper_x25519(clients: usize, seconds: u64) -> SimConfig {
    let mut config = SimConfig::paper(clients, seconds);
    // X25519 and 2 kB payloads keep the test quick; the delays are the
    // paper's (μ = 0.2 s per hop, 9 hops per echo).
    config.parameters = Parameters {
        kem: KemKind::X25519,
        payload_len: 2_000,
        ..Parameters::paper()
    };
    config
}

#[test]
fn one_echo_follows_erlang_9_with_mean_1_8_s() {
    let mut config = paper_x25519(20, 300);
    config.cover = false;
    let report = run::<X25519>(&config);
    let summary = summarize(&report.echo_rtts);
    assert!(summary.count >= 2_000, "only {} echoes", summary.count);
    let expected_mean = 9.0 * 0.2;
    let error = (summary.mean - expected_mean).abs() / expected_mean;
    assert!(
        error < 0.02,
        "mean {} s is {:.1} % off 1.8 s",
        summary.mean,
        error * 100.0
    );
    let p95 = erlang_quantile(9, 0.2, 0.95);
    assert!(
        (summary.p95 - p95).abs() / p95 < 0.05,
        "p95 {} vs {}",
        summary.p95,
        p95
    );
    let ks = ks_distance(&report.echo_rtts, 9, 0.2);
    assert!(ks < 0.03, "KS distance {ks}");
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    assert_eq!(report.retransmissions, 0);
}

#[test]
fn runs_replay_exactly_and_cover_loops_come_back() {
    let config = paper_x25519(4, 20);
    let first = run::<X25519>(&config);
    let second = run::<X25519>(&config);
    assert_eq!(first.echo_rtts, second.echo_rtts);
    assert_eq!(first.links, second.links);
    assert!(!first.loop_rtts.is_empty(), "no cover loop came back");
    assert!(first.dropped.is_empty(), "{:?}", first.dropped);
    // Every client sends at λ_s = 2.5/s whether or not it has a request:
    // about 4 × 20 × 2.5 = 200 packets to the gateway.
    let to_gateway: u64 = first
        .links
        .iter()
        .filter(|((from, to), _)| from.starts_with("client") && to == "gateway0")
        .map(|(_, n)| n)
        .sum();
    assert!(
        (150..=250).contains(&to_gateway),
        "{to_gateway} packets from clients"
    );
    let mut other = config.clone();
    other.seed = 2;
    assert_ne!(run::<X25519>(&other).echo_rtts, first.echo_rtts);
}
