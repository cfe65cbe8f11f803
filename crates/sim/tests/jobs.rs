//! Whole jobs in the simulator: the runtime's state machines end to end.

use funion_pki::{KemKind, Parameters};
use funion_sim::jobs::{run_jobs, Fault, FrameKind, JobsConfig, JobsReport, LinkModel};
use funion_sphinx::kem::X25519;

/// Millisecond delays, X25519, small compute: many jobs in little CPU.
fn fast(clients: usize, seconds: u64) -> JobsConfig {
    let mut config = JobsConfig::paper(clients, seconds);
    config.parameters = Parameters {
        kem: KemKind::X25519,
        ..Parameters::fast()
    };
    config.compute.ttft_us = 2_000;
    config.compute.itl_us = 50;
    config.output_tokens = 100;
    config.think_us = 20_000;
    config.courier_hold_us = 30_000;
    config.cover = false;
    config.links = LinkModel {
        latency_us: 500,
        jitter_us: 500,
        loss: 0.0,
    };
    config
}

#[test]
fn jobs_complete_and_the_run_replays_from_its_seed() {
    let mut config = fast(10, 5);
    config.jobs_per_client = Some(3);
    let report = run_jobs::<X25519>(&config);
    assert_eq!(report.jobs_started, 30, "{report:#?}");
    assert_eq!(report.jobs_completed, 30, "{report:#?}");
    assert_eq!(report.jobs_overflowed, 0, "{report:#?}");
    assert!(report.jobs_failed.is_empty(), "{report:#?}");
    // Five echoes at least: upload, dispatch, read by the client; fetch and
    // store by the compute courier.
    assert!(
        report.client_echoes_per_job.iter().all(|&e| e >= 3),
        "{report:#?}"
    );
    assert_eq!(report.echoes_per_job.len(), 30, "{report:#?}");
    assert!(report.echoes_per_job.iter().all(|&e| e >= 5), "{report:#?}");
    assert_eq!(report.writes_lost, 0);
    assert!(report.writes_acknowledged >= 60);
    // Every job paid its cell's two tickets, and the gate took them all.
    assert_eq!(report.tickets_accepted, 60, "{report:#?}");
    assert!(report.jobs_refused_unpaid.is_empty(), "{report:#?}");
    assert_eq!(run_jobs::<X25519>(&config), report, "same seed, same run");
    // Tracing watches without touching: the same run, and a view of it.
    config.trace = true;
    let traced = run_jobs::<X25519>(&config);
    let trace = traced.trace.clone().expect("asked for a trace");
    assert_eq!(
        JobsReport {
            trace: None,
            ..traced
        },
        report
    );
    assert_eq!(trace.truth.len(), 30);
    assert!(trace
        .truth
        .iter()
        .all(|t| t.completed && t.ended_us > Some(t.started_us)));
    let sent: u64 = report.links.values().sum();
    assert_eq!(
        trace.observations.len() as u64,
        sent,
        "one observation per frame sent"
    );
    assert!(trace
        .observations
        .windows(2)
        .all(|w| w[0].at_us <= w[1].at_us));
    config.trace = false;
    config.seed = 2;
    assert_ne!(
        run_jobs::<X25519>(&config),
        report,
        "another seed, another run"
    );
}

#[test]
fn a_thousand_jobs_under_loss_and_a_replica_crash_complete_or_fail_with_a_reason() {
    let mut config = fast(100, 40);
    config.jobs_per_client = Some(10);
    config.links.loss = 0.01;
    config.faults = vec![Fault::ReplicaDown {
        replica: 1,
        at_us: 5_000_000,
        until_us: 9_000_000,
    }];
    let report = run_jobs::<X25519>(&config);
    eprintln!("{report:#?}");
    assert_eq!(report.jobs_started, 1_000);
    let failed: u64 = report.jobs_failed.values().sum();
    assert_eq!(
        report.jobs_completed + failed + report.jobs_unfinished,
        1_000,
        "every job is accounted for"
    );
    assert_eq!(report.jobs_unfinished, 0, "every job ends: {report:#?}");
    assert!(report.jobs_completed >= 950, "{report:#?}");
    assert!(report.dropped.get("link_loss").copied().unwrap_or(0) > 0);
    assert!(report.dropped.get("replica_down").copied().unwrap_or(0) > 0);
    assert_eq!(report.writes_lost, 0, "no acknowledged write is lost");
}

#[test]
fn abstract_packets_leave_the_trace_of_sphinx_packets_event_for_event() {
    let mut config = fast(6, 3);
    config.jobs_per_client = Some(2);
    config.cover = true;
    config.links.loss = 0.01;
    config.trace = true;
    let sphinx = run_jobs::<X25519>(&config);
    config.abstract_packets = true;
    let modelled = run_jobs::<X25519>(&config);
    let (a, b) = (
        sphinx.trace.as_ref().expect("traced"),
        modelled.trace.as_ref().expect("traced"),
    );
    assert!(a.observations.len() > 1_000, "{}", a.observations.len());
    assert_eq!(a.observations.len(), b.observations.len());
    let first_difference = a
        .observations
        .iter()
        .zip(&b.observations)
        .position(|(x, y)| x != y);
    if let Some(i) = first_difference {
        let from = i.saturating_sub(3);
        panic!(
            "the traces part at {i}:\nsphinx {:#?}\nmodelled {:#?}\nnames {:?}\n{sphinx:#?}\n{modelled:#?}",
            &a.observations[from..i + 3],
            &b.observations[from..i + 3],
            a.names,
            sphinx = JobsReport { trace: None, ..sphinx.clone() },
            modelled = JobsReport { trace: None, ..modelled.clone() },
        );
    }
    assert_eq!((&a.names, &a.truth), (&b.names, &b.truth));
    // Only the abstract mode knows its packets' identities (ground truth
    // for the privacy experiments): every Sphinx frame of it has one.
    assert!(a.packets.iter().all(|&id| id == 0));
    assert_eq!(b.packets.len(), b.observations.len());
    assert!(b
        .observations
        .iter()
        .zip(&b.packets)
        .all(|(o, &id)| (o.kind == FrameKind::Sphinx) == (id != 0)));
    let strip = |r: &JobsReport| JobsReport {
        trace: None,
        ..r.clone()
    };
    assert_eq!(strip(&sphinx), strip(&modelled), "the same figures too");
    let failed: u64 = sphinx.jobs_failed.values().sum();
    assert_eq!(sphinx.jobs_completed + failed, 12, "{sphinx:#?}");
    assert!(sphinx.jobs_completed >= 10, "{sphinx:#?}");
    // The control: a change to the route stream's seed shows in the trace.
    config.seed = 2;
    let other = run_jobs::<X25519>(&config);
    assert_ne!(other.trace.expect("traced").observations, b.observations);
}

#[test]
fn the_gate_refuses_double_spenders_and_recovers_their_secrets() {
    let mut config = fast(8, 5);
    config.jobs_per_client = Some(3);
    config.double_spenders = 2;
    let report = run_jobs::<X25519>(&config);
    // Each cheater's first job pays; its next two reuse the same message
    // ids with new signals, and each is caught.
    assert_eq!(
        report.jobs_refused_unpaid.get("double_spend"),
        Some(&4),
        "{report:#?}"
    );
    assert_eq!(
        report.deposits_slashed, 2,
        "both cheaters' deposits: {report:#?}"
    );
    assert_eq!(report.jobs_failed.get("refused"), Some(&4), "{report:#?}");
    assert_eq!(report.jobs_completed, 20, "{report:#?}");
    assert_eq!(report.tickets_accepted, 2 * 20, "{report:#?}");
    // Without cheaters, nothing is refused: the refusals above are the
    // gate's doing, not the network's.
    config.double_spenders = 0;
    let honest = run_jobs::<X25519>(&config);
    assert!(honest.jobs_refused_unpaid.is_empty(), "{honest:#?}");
    assert_eq!(honest.jobs_completed, 24, "{honest:#?}");
}

#[test]
fn mix_keys_rotate_every_epoch_and_the_grace_period_carries_packets_in_flight() {
    let mut config = fast(6, 5);
    config.jobs_per_client = Some(4);
    config.cover = true;
    config.parameters.epoch_ms = 1_000;
    config.parameters.grace_ms = 200;
    let report = run_jobs::<X25519>(&config);
    let refused = |r: &JobsReport| {
        ["decapsulation", "header_mac"]
            .iter()
            .map(|k| r.dropped.get(*k).copied().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(refused(&report), 0, "{report:#?}");
    assert_eq!(report.jobs_completed, 24, "{report:#?}");
    // The modelled packets take the same path across the rotations.
    config.abstract_packets = true;
    assert_eq!(
        run_jobs::<X25519>(&config),
        report,
        "abstract and Sphinx agree"
    );
    // The control: with no grace period, packets sealed under the old
    // keys and still in flight at a boundary are refused, so the keys
    // really change.
    config.abstract_packets = false;
    config.parameters.grace_ms = 0;
    let abrupt = run_jobs::<X25519>(&config);
    assert!(refused(&abrupt) > 0, "{abrupt:#?}");
}

#[test]
fn the_fast_path_takes_one_echo_and_brings_every_output_home_through_its_held_surb() {
    let mut config = fast(10, 5);
    config.jobs_per_client = Some(3);
    config.path = funion_compute::JobPath::Fast;
    let report = run_jobs::<X25519>(&config);
    assert_eq!(report.jobs_completed, 30, "{report:#?}");
    assert_eq!(report.jobs_overflowed, 0, "{report:#?}");
    assert!(report.jobs_failed.is_empty(), "{report:#?}");
    assert_eq!(report.held_replies, 30, "{report:#?}");
    // Counted, not assumed: the dispatch is the only echo; no boxes either
    // way, so no courier echoes and no replica writes.
    assert!(report.echoes_per_job.iter().all(|&e| e == 1), "{report:#?}");
    assert!(report.client_echoes_per_job.iter().all(|&e| e == 1));
    assert_eq!(report.writes_acknowledged, 0, "{report:#?}");
    assert_eq!(report.tickets_accepted, 60, "{report:#?}");
    assert_eq!(run_jobs::<X25519>(&config), report, "same seed, same run");
}

#[test]
fn the_overlapped_store_path_is_faster_than_the_serial_one_and_its_waiting_read_than_a_plain_one() {
    let mut config = fast(10, 5);
    config.jobs_per_client = Some(3);
    let mean = |r: &JobsReport| {
        r.latency_minus_compute_us.iter().sum::<u64>() as f64
            / r.latency_minus_compute_us.len().max(1) as f64
    };
    let serial = run_jobs::<X25519>(&config);
    config.path = funion_compute::JobPath::Store;
    let store = run_jobs::<X25519>(&config);
    for r in [&serial, &store] {
        assert_eq!(r.jobs_completed, 30, "{r:#?}");
        assert_eq!(r.jobs_overflowed, 0, "{r:#?}");
        assert_eq!(r.held_replies, 0, "{r:#?}");
        // Upload, dispatch, read by the client; fetch and store by the
        // compute courier: both paths take the same steps.
        assert!(r.echoes_per_job.iter().all(|&e| e >= 5), "{r:#?}");
        assert_eq!(r.writes_lost, 0);
    }
    assert!(
        mean(&store) < mean(&serial),
        "store {} µs, serial {} µs",
        mean(&store),
        mean(&serial)
    );
    assert_eq!(run_jobs::<X25519>(&config), store, "same seed, same run");
    // The read that waits at the replicas for the output beats a plain
    // read timed to find it nine times in ten (the control).
    config.read_quantile = Some(funion_compute::client::STORE_READ_QUANTILE);
    let plain = run_jobs::<X25519>(&config);
    assert_eq!(plain.jobs_completed, 30, "{plain:#?}");
    assert!(
        mean(&store) < mean(&plain),
        "waiting {} µs, plain {} µs",
        mean(&store),
        mean(&plain)
    );
}
