//! The one-echo experiment's controls: mixing at μ = 1 ms must leak the
//! sender to the global passive adversary; the paper's μ must hide it among
//! the clients; shuffled labels must show nothing.

use funion_sim::jobs::{run_jobs, JobsConfig};
use funion_sim::privacy::one_echo;
use funion_sphinx::kem::XWing;

/// One run's one-echo scores at mean delay `mean_delay_us`, seed 7.
fn scores(clients: usize, seconds: u64, mean_delay_us: u64) -> funion_sim::privacy::EchoScores {
    let mut config = JobsConfig::paper(clients, seconds);
    config.seed = 7;
    config.parameters.mean_delay_us = mean_delay_us;
    config.abstract_packets = true;
    config.trace = true;
    config.tickets = false;
    let trace = run_jobs::<XWing>(&config).trace.expect("asked for a trace");
    let scores = one_echo(&trace, mean_delay_us, 0, 10_000_000, 200, 1);
    eprintln!(
        "μ = {mean_delay_us} µs: H {:?}, advantage {:?}",
        scores.entropy(),
        scores.advantage()
    );
    scores
}

#[test]
fn one_echo_controls() {
    let weak = scores(30, 130, 1_000);
    let strong = scores(30, 130, 200_000);
    assert!(
        weak.games >= 80 && strong.games >= 80,
        "{} {}",
        weak.games,
        strong.games
    );
    // The positive control must leak, or the adversary is broken.
    assert!(weak.advantage().low >= 0.9, "{:?}", weak.advantage());
    assert!(weak.entropy().value < 2.0, "{:?}", weak.entropy());
    // The paper's μ hides the sender among the 30 clients.
    assert!(
        strong.entropy().value > (30f64).log2() - 0.5,
        "{:?}",
        strong.entropy()
    );
    assert!(strong.advantage().high < 0.5, "{:?}", strong.advantage());
    // Shuffled labels must show nothing.
    for r in [&weak, &strong] {
        let null = r.shuffled_advantage();
        assert!(null.low < 0.0 && null.high > 0.0, "{null:?}");
    }
}
