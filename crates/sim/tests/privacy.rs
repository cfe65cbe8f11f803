//! The passive experiments' controls: mixing at μ = 1 ms must leak the
//! sender of an echo and of a whole job to the global passive adversary;
//! the paper's μ must hide an echo's sender among the clients; shuffled
//! labels must show nothing. The linking adversaries' controls: no cover
//! and no mixing give a client's service nodes away, 16 replicas give a
//! box's read and write away, every node's logs give every job away.

use funion_sim::jobs::{run_jobs, JobsConfig};
use funion_sim::privacy::{one_echo, whole_job, EchoScores, JobScores, MixObserver};
use funion_sphinx::kem::XWing;

/// One run's one-echo and whole-job scores at mean delay `mean_delay_us`,
/// seed 7.
fn scores(clients: usize, seconds: u64, mean_delay_us: u64) -> (EchoScores, JobScores) {
    let mut config = JobsConfig::paper(clients, seconds);
    config.seed = 7;
    config.parameters.mean_delay_us = mean_delay_us;
    config.abstract_packets = true;
    config.trace = true;
    config.tickets = false;
    let trace = run_jobs::<XWing>(&config).trace.expect("asked for a trace");
    let observer = MixObserver::new(&trace, mean_delay_us, 0);
    let scores = one_echo(&observer, 10_000_000, 200, 1);
    let jobs = whole_job(&observer, 10_000_000, 200, 1);
    eprintln!(
        "μ = {mean_delay_us} µs: H {:?}, advantage {:?}; job: {:?} bits, {} of {} games",
        scores.entropy(),
        scores.advantage(),
        jobs.leaked(),
        jobs.wins,
        jobs.games
    );
    (scores, jobs)
}

#[test]
fn passive_controls() {
    let (weak, weak_jobs) = scores(30, 130, 1_000);
    let (strong, strong_jobs) = scores(30, 130, 200_000);
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
    // A whole job: the control gives its client away, the paper's μ keeps
    // most of the log2 N bits, shuffled labels show nothing.
    let n = (30f64).log2();
    assert!(weak_jobs.games >= 20, "{}", weak_jobs.games);
    assert!(weak_jobs.wins as f64 >= 0.95 * weak_jobs.games as f64);
    assert!(
        weak_jobs.leaked().value > n - 0.5,
        "{:?}",
        weak_jobs.leaked()
    );
    assert!(
        strong_jobs.leaked().value < n / 2.0,
        "{:?}",
        strong_jobs.leaked()
    );
    // Over 47 jobs the shuffled game may land below 0 by chance; it must
    // never be won.
    let null = funion_sim::stats::advantage(strong_jobs.shuffled_wins, strong_jobs.games);
    assert!(null.low < 0.0, "{null:?}");
}

/// A trace of `population_config(30, 130, 7)` changed by `change`.
fn trace_of(change: impl Fn(&mut JobsConfig)) -> (JobsConfig, funion_sim::jobs::Trace) {
    let mut config = funion_sim::privacy::population_config(30, 130, 7);
    change(&mut config);
    let trace = run_jobs::<XWing>(&config).trace.expect("asked for a trace");
    (config, trace)
}

#[test]
fn linking_and_compromise_controls() {
    use funion_sim::privacy::{block_auc, service_samples, shuffled_scored, BoxSamples, Role};
    let burn_in = 10_000_000;
    let (config, paper) = trace_of(|_| {});
    let mu = config.parameters.mean_delay_us;
    // Experiment 4: no cover and no mixing give a client's service nodes
    // away; shuffled labels show nothing.
    let (_, open) = trace_of(|c| {
        c.cover = false;
        c.parameters.mean_delay_us = 1_000;
    });
    let control = block_auc(&service_samples(&open, 1_000, burn_in, 1, 30), 0, 1);
    let samples = service_samples(&paper, mu, burn_in, 1, 30);
    let null = block_auc(&shuffled_scored(&samples, 2), 0, 1);
    eprintln!(
        "service: control {control:?}, paper {:?}, null {null:?}",
        block_auc(&samples, 0, 1)
    );
    assert!(control.value >= 0.9, "{control:?}");
    assert!((0.4..=0.6).contains(&null.value), "{null:?}");
    // Experiment 3: with 16 replicas a box's holders nearly name it.
    let (_, many) = trace_of(|c| c.replicas = 16);
    let mut boxes = BoxSamples::default();
    boxes.add(&many, burn_in, 1);
    let control = block_auc(&boxes.scored(), 0, 1);
    let null = block_auc(&shuffled_scored(&boxes.scored(), 3), 0, 1);
    eprintln!("boxes: control {control:?}, null {null:?}");
    assert!(control.value >= 0.9, "{control:?}");
    assert!((0.4..=0.6).contains(&null.value), "{null:?}");
    // Experiment 8: the logs of every gateway and mix give every job away;
    // without them the paper's μ keeps the game far from won.
    let mut all = MixObserver::new(&paper, mu, 0);
    let mut nodes = all.nodes(Role::Mix);
    nodes.extend(all.nodes(Role::Gateway));
    all.compromise(&nodes);
    let jobs = whole_job(&all, burn_in, 100, 1);
    let plain = whole_job(&MixObserver::new(&paper, mu, 0), burn_in, 100, 1);
    eprintln!(
        "compromise: all {} of {}, none {} of {}",
        jobs.wins, jobs.games, plain.wins, plain.games
    );
    assert!(jobs.games >= 20, "{}", jobs.games);
    assert!(jobs.wins as f64 >= 0.95 * jobs.games as f64);
    assert!(plain.wins < jobs.wins);
}
