//! The compute job's rules, in virtual time.

use funion_compute::{
    Action, ComputeCourier, CourierConfig, Dispatch, DispatchReply, HeldSurb, Input, Outcome,
    Sampling, Task, INPUT_CLASSES, OUTPUT_CLASSES,
};

const DELTA: u64 = 200_000;

fn dispatch(n: u8, bucket: u32, task: Task) -> Dispatch {
    Dispatch {
        read_cap_in: vec![n; 136],
        ctx_in: vec![1; 16],
        input: None,
        write_cap_out: vec![n; 168],
        ctx_out: vec![2; 16],
        model: "m".into(),
        task,
        input_class: 256,
        output_class: 512,
        sampling: Sampling {
            seed: u64::from(n),
            ..Sampling::default()
        },
        bucket,
        bucket_from_input: false,
        tickets: vec![],
    }
}

fn courier() -> ComputeCourier {
    ComputeCourier::new(CourierConfig {
        delta_us: DELTA,
        batch_window_us: 50_000,
        max_batch: 32,
        served: vec![("m".into(), Task::Generate), ("m".into(), Task::Embed)],
        ..CourierConfig::default()
    })
}

fn input(tokens: &[u32]) -> Vec<u8> {
    Input {
        tokens: tokens.to_vec(),
    }
    .encode(256)
    .unwrap()
}

fn fetches(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fetch { job, .. } => Some(*job),
            _ => None,
        })
        .collect()
}

fn stores(actions: &[Action]) -> Vec<(u64, Vec<u8>, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Store {
                job,
                payload,
                overflow,
                ..
            } => Some((*job, payload.clone(), *overflow)),
            _ => None,
        })
        .collect()
}

fn runs(actions: &[Action]) -> Vec<(u64, Vec<u64>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Run { batch, items } => Some((*batch, items.iter().map(|i| i.job).collect())),
            _ => None,
        })
        .collect()
}

#[test]
fn payloads_round_trip_and_their_size_is_the_class() {
    for &class in &INPUT_CLASSES {
        for len in [0, 1, class as usize / 2, class as usize] {
            let tokens: Vec<u32> = (0..len as u32).map(|t| t * 7919).collect();
            let bytes = Input {
                tokens: tokens.clone(),
            }
            .encode(class)
            .unwrap();
            assert_eq!(bytes.len(), Input::padded_len(class));
            assert_eq!(Input::decode(&bytes, class).unwrap().tokens, tokens);
        }
        let too_long = vec![0u32; class as usize + 1];
        assert!(Input { tokens: too_long }.encode(class).is_err());
    }
    for &class in &OUTPUT_CLASSES {
        let outcomes = [
            Outcome::Tokens(vec![5, 6, 7]),
            Outcome::Tokens(vec![1; class as usize]),
            Outcome::Embedding(vec![0.25, -1.5]),
            Outcome::Overflow,
            Outcome::Failed("no such model ✗".into()),
        ];
        for outcome in outcomes {
            let bytes = outcome.encode(class).unwrap();
            assert_eq!(bytes.len(), Outcome::padded_len(class), "{outcome:?}");
            assert_eq!(Outcome::decode(&bytes, class).unwrap(), outcome);
        }
    }
    // Garbage is an error, never a panic.
    assert!(Input::decode(&[0xff; 1028], 256).is_err());
    assert!(Outcome::decode(&[9; 2056], 512).is_err());
    assert!(Outcome::decode(&[1; 7], 512).is_err());
    assert!(
        Input::encode(&Input { tokens: vec![] }, 300).is_err(),
        "300 is no class"
    );
}

#[test]
fn dispatch_envelopes_round_trip_and_bad_ones_are_refused() {
    let d = dispatch(3, 10, Task::Generate);
    let mut bytes = d.encode();
    bytes.extend_from_slice(&[0; 100]); // Sphinx padding after the frame
    assert_eq!(Dispatch::decode(&bytes).unwrap(), d);
    assert!(Dispatch::decode(&bytes[..bytes.len() - 120]).is_err());
    assert!(Dispatch::decode(&[]).is_err());
    assert!(
        Dispatch::decode(&[7, 0, 0, 0, 0]).is_err(),
        "unknown version"
    );
    let mut short_cap = d.clone();
    short_cap.read_cap_in.pop();
    assert!(Dispatch::decode(&short_cap.encode()).is_err());
    let mut no_class = d.clone();
    no_class.output_class = 100;
    assert!(Dispatch::decode(&no_class.encode()).is_err());
    let mut greedy_long = d.clone();
    greedy_long.sampling.max_tokens = 513;
    assert!(Dispatch::decode(&greedy_long.encode()).is_err());
    let mut nan = d;
    nan.sampling.temperature = f32::NAN;
    assert!(Dispatch::decode(&nan.encode()).is_err());
    // Debug shows no caps.
    let shown = format!("{:?}", dispatch(0xab, 1, Task::Embed));
    assert!(!shown.contains("171"), "{shown}");
}

#[test]
fn the_output_leaves_at_the_bucket_edge_not_before() {
    let mut c = courier();
    let (job, reply) = c.take(1_000, &dispatch(1, 5, Task::Generate).encode());
    let job = job.unwrap();
    assert_eq!(
        reply,
        DispatchReply::Accepted {
            edge_after_us: 5 * DELTA
        }
    );
    assert_eq!(fetches(&c.poll(1_000)), vec![job]);
    c.fetched(50_000, job, Ok(input(&[1, 2, 3])));
    // It waits the batch window for others of its bucket, then runs.
    assert!(runs(&c.poll(99_999)).is_empty());
    let actions = c.poll(100_000);
    assert_eq!(runs(&actions), vec![(1, vec![job])]);
    c.finished(90_000, 1, vec![(job, Ok(Outcome::Tokens(vec![9, 9])))]);
    let edge = 1_000 + 5 * DELTA;
    assert_eq!(c.next_deadline(), Some(edge));
    assert!(
        stores(&c.poll(edge - 1)).is_empty(),
        "nothing before the edge"
    );
    let out = stores(&c.poll(edge));
    assert_eq!(out.len(), 1);
    assert!(!out[0].2);
    assert_eq!(
        Outcome::decode(&out[0].1, 512).unwrap(),
        Outcome::Tokens(vec![9, 9])
    );
    assert!(stores(&c.poll(edge + 1)).is_empty(), "released once");
    c.stored(job, true);
    assert_eq!(c.jobs(), 0);
    assert_eq!(c.counters().stored, 1);
}

#[test]
fn an_overrun_gives_overflow_at_the_edge_and_the_late_result_is_dropped() {
    let mut c = courier();
    let (job, _) = c.take(0, &dispatch(1, 2, Task::Generate).encode());
    let job = job.unwrap();
    c.poll(0);
    c.fetched(10_000, job, Ok(input(&[4])));
    assert_eq!(runs(&c.poll(60_000)).len(), 1);
    let out = stores(&c.poll(2 * DELTA));
    assert_eq!(out.len(), 1);
    assert!(out[0].2, "overflow flag");
    assert_eq!(Outcome::decode(&out[0].1, 512).unwrap(), Outcome::Overflow);
    c.finished(3 * DELTA, 1, vec![(job, Ok(Outcome::Tokens(vec![1])))]);
    assert!(
        stores(&c.poll(3 * DELTA)).is_empty(),
        "the late result never leaves"
    );
    assert_eq!(c.counters().overflows, 1);
    // A job still fetching at its edge overflows too, and never runs.
    let (late, _) = c.take(0, &dispatch(2, 1, Task::Embed).encode());
    let out = c.poll(DELTA);
    assert_eq!(stores(&out)[0].0, late.unwrap());
    c.fetched(DELTA + 1, late.unwrap(), Ok(input(&[1])));
    assert!(runs(&c.poll(DELTA + 2)).is_empty());
}

#[test]
fn output_size_depends_only_on_the_class() {
    let mut c = courier();
    let mut sizes = Vec::new();
    for (n, outcome) in [
        Some(Ok(Outcome::Tokens(vec![1; 500]))),
        Some(Ok(Outcome::Embedding(vec![0.5; 384]))),
        Some(Err("model failed".to_string())),
        Some(Ok(Outcome::Tokens(vec![1; 600]))), // over the class: a failure, same size
        None,                                    // overflow
    ]
    .into_iter()
    .enumerate()
    {
        let (job, _) = c.take(0, &dispatch(n as u8 + 1, 3, Task::Generate).encode());
        let job = job.unwrap();
        c.poll(0);
        c.fetched(1, job, Ok(input(&[1])));
        let batch = runs(&c.poll(50_001)).first().map(|r| r.0);
        if let (Some(outcome), Some(batch)) = (outcome, batch) {
            c.finished(2, batch, vec![(job, outcome)]);
        }
        for (_, payload, _) in stores(&c.poll(3 * DELTA)) {
            sizes.push(payload.len());
        }
        c.stored(job, true);
    }
    assert_eq!(sizes, vec![Outcome::padded_len(512); 5]);
    assert_eq!(c.counters().failures, 2);
}

#[test]
fn twenty_jobs_of_one_bucket_run_as_one_batch() {
    let mut c = courier();
    let mut ids = Vec::new();
    for n in 0..20u8 {
        let (id, _) = c.take(
            u64::from(n) * 1_000,
            &dispatch(n + 1, 50, Task::Embed).encode(),
        );
        ids.push(id.unwrap());
    }
    // A job of another bucket, ready first: its own batch.
    let (other, _) = c.take(0, &dispatch(99, 60, Task::Embed).encode());
    c.poll(20_000);
    // Inputs arrive over 38 ms, within the batch window of the first.
    for (k, id) in ids.iter().enumerate() {
        let t = 20_000 + k as u64 * 2_000;
        c.fetched(t, *id, Ok(input(&[k as u32])));
        if k < 19 {
            let r = runs(&c.poll(t));
            assert!(
                r.iter().all(|(_, jobs)| !jobs.contains(id)),
                "ran before the bucket was in"
            );
        }
    }
    assert!(runs(&c.poll(69_999)).is_empty());
    let r = runs(&c.poll(70_000));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, ids, "all twenty, one batch");
    c.fetched(70_000, other.unwrap(), Ok(input(&[1])));
    assert!(runs(&c.poll(130_000)).is_empty(), "one batch at a time");
    c.finished(
        130_000,
        r[0].0,
        ids.iter()
            .map(|&i| (i, Ok(Outcome::Embedding(vec![1.0]))))
            .collect(),
    );
    assert_eq!(runs(&c.poll(130_000))[0].1, vec![other.unwrap()]);
    assert_eq!(c.counters().largest_batch, 20);
}

#[test]
fn the_batch_window_bounds_the_wait_for_stragglers_and_a_full_batch_runs_at_once() {
    let mut c = courier();
    let (a, _) = c.take(0, &dispatch(1, 50, Task::Embed).encode());
    let (_b, _) = c.take(0, &dispatch(2, 50, Task::Embed).encode());
    c.poll(0);
    c.fetched(10_000, a.unwrap(), Ok(input(&[1])));
    assert!(runs(&c.poll(10_000)).is_empty());
    assert_eq!(c.next_deadline(), Some(60_000));
    assert_eq!(runs(&c.poll(60_000))[0].1, vec![a.unwrap()]);

    let mut c = ComputeCourier::new(CourierConfig {
        max_batch: 4,
        served: vec![("m".into(), Task::Embed)],
        ..CourierConfig::default()
    });
    for n in 0..4u8 {
        let (id, _) = c.take(0, &dispatch(n + 1, 50, Task::Embed).encode());
        c.poll(0);
        c.fetched(1, id.unwrap(), Ok(input(&[1])));
    }
    assert_eq!(runs(&c.poll(1))[0].1.len(), 4, "full: no wait");

    // A long window never eats more than half the time left to the edge.
    let mut c = ComputeCourier::new(CourierConfig {
        batch_window_us: 60_000_000,
        served: vec![("m".into(), Task::Embed)],
        ..CourierConfig::default()
    });
    let (id, _) = c.take(0, &dispatch(1, 10, Task::Embed).encode()); // edge 2 s
    c.poll(0);
    c.fetched(400_000, id.unwrap(), Ok(input(&[1])));
    assert_eq!(c.next_deadline(), Some(1_200_000));
    assert!(runs(&c.poll(1_199_999)).is_empty());
    assert_eq!(runs(&c.poll(1_200_000)).len(), 1);
}

#[test]
fn refusals_and_resent_dispatches() {
    let mut c = courier();
    let refused = |c: &mut ComputeCourier, d: Dispatch| match c.take(0, &d.encode()) {
        (None, DispatchReply::Refused { reason }) => reason,
        other => panic!("{other:?}"),
    };
    let mut unknown = dispatch(1, 5, Task::Generate);
    unknown.model = "other".into();
    assert!(refused(&mut c, unknown).contains("not served"));
    assert!(refused(&mut c, dispatch(1, 0, Task::Generate)).contains("bucket"));
    assert!(refused(&mut c, dispatch(1, 1_000_000, Task::Generate)).contains("bucket"));
    assert!(matches!(
        c.take(0, b"garbage"),
        (None, DispatchReply::Refused { .. })
    ));
    // The same dispatch again: the same job, the time left to its edge.
    let d = dispatch(7, 5, Task::Generate);
    let (first, _) = c.take(0, &d.encode());
    let (again, reply) = c.take(300_000, &d.encode());
    assert_eq!(first, again);
    assert_eq!(
        reply,
        DispatchReply::Accepted {
            edge_after_us: 700_000
        }
    );
    assert_eq!(fetches(&c.poll(300_000)).len(), 1, "fetched once");
    // Another job naming the same output write cap is refused.
    let mut clash = d;
    clash.sampling.seed = 99;
    assert!(refused(&mut c, clash).contains("write cap"));
    assert_eq!(c.counters().taken, 1);
    assert_eq!(c.counters().refused, 5);
    // A bad input becomes a failure released at the edge.
    let (job, _) = c.take(0, &dispatch(8, 1, Task::Generate).encode());
    c.fetched(1, job.unwrap(), Ok(vec![1, 2, 3]));
    let out = stores(&c.poll(DELTA));
    let failed = out.iter().find(|s| s.0 == job.unwrap()).unwrap();
    assert!(matches!(
        Outcome::decode(&failed.1, 512).unwrap(),
        Outcome::Failed(_)
    ));
}

fn replies(actions: &[Action]) -> Vec<(u64, DispatchReply)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { token, reply } => Some((*token, reply.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn admission_is_an_effect_and_edges_keep_their_time_while_a_check_runs() {
    let mut c = courier();
    // Job 1 is taken and paid for at t = 0; its edge is 1·Δ later.
    c.receive(0, 1, &dispatch(1, 1, Task::Generate).encode());
    let actions = c.poll(0);
    let Some(Action::Admit { admission, .. }) = actions.first().cloned() else {
        panic!("a new job asks for its payment check first: {actions:?}");
    };
    c.admitted(0, admission, Ok(()));
    let actions = c.poll(0);
    assert_eq!(
        replies(&actions),
        vec![(
            1,
            DispatchReply::Accepted {
                edge_after_us: DELTA
            }
        )]
    );
    let job1 = fetches(&actions)[0];
    c.fetched(10, job1, Ok(input(&[1, 2, 3])));
    // Job 2's check is slow: it starts at t = 20 and takes past job 1's edge.
    let d2 = dispatch(2, 3, Task::Generate);
    c.receive(20, 2, &d2.encode());
    let admit2 = match c.poll(20).as_slice() {
        [Action::Admit { admission, .. }, ..] => *admission,
        other => panic!("expected a payment check: {other:?}"),
    };
    // Its resend while the check runs waits for the same verdict, and no
    // second check starts.
    c.receive(30, 3, &d2.encode());
    assert!(c
        .poll(30)
        .iter()
        .all(|a| !matches!(a, Action::Admit { .. })));
    assert_eq!(c.admitting(), 1);
    // Job 1's edge comes while job 2 is still being checked: it is
    // released on time (OVERFLOW, since it never ran).
    let at_edge = c.poll(DELTA);
    assert_eq!(stores(&at_edge).len(), 1, "job 1 leaves at its edge");
    // The verdict for job 2 comes late; its edge counts from the verdict.
    c.admitted(DELTA + 5, admit2, Ok(()));
    let answers = replies(&c.poll(DELTA + 5));
    let expected = DispatchReply::Accepted {
        edge_after_us: 3 * DELTA,
    };
    assert_eq!(answers, vec![(2, expected.clone()), (3, expected)]);
    // A refused check answers every copy, and the job is not held.
    let d4 = dispatch(4, 1, Task::Generate);
    c.receive(DELTA + 10, 4, &d4.encode());
    let admit4 = match c.poll(DELTA + 10).as_slice() {
        [Action::Admit { admission, .. }, ..] => *admission,
        other => panic!("expected a payment check: {other:?}"),
    };
    c.admitted(DELTA + 11, admit4, Err("ticket replayed".into()));
    assert_eq!(
        replies(&c.poll(DELTA + 11)),
        vec![(
            4,
            DispatchReply::Refused {
                reason: "ticket replayed".into()
            }
        )]
    );
    assert!(!c.holds(&d4));
    // Bytes that do not parse are refused without a check.
    c.receive(DELTA + 12, 5, b"junk");
    assert!(matches!(
        replies(&c.poll(DELTA + 12)).as_slice(),
        [(5, DispatchReply::Refused { .. })]
    ));
}

#[test]
fn the_wire_carries_a_public_preset_and_a_power_of_two_for_max_tokens() {
    let person = Sampling {
        seed: 99,
        temperature: 0.73,
        top_p: Some(0.92),
        max_tokens: 300,
    };
    let wire = person.on_the_wire(512);
    assert_eq!(
        (wire.seed, wire.temperature, wire.top_p, wire.max_tokens),
        (99, 0.7, Some(0.9), 512)
    );
    let greedy = Sampling {
        seed: 1,
        temperature: 0.0,
        top_p: None,
        max_tokens: 5,
    };
    let wire = greedy.on_the_wire(256);
    assert_eq!(
        (wire.temperature, wire.top_p, wire.max_tokens),
        (0.0, None, 16)
    );
    // Every choice lands on a preset, and on at most a handful of lengths.
    let mut seen = std::collections::HashSet::new();
    for t in 0..=20 {
        for max_tokens in [1u32, 17, 100, 129, 256] {
            let s = Sampling {
                seed: 0,
                temperature: t as f32 * 0.1,
                top_p: Some(0.5 + t as f32 * 0.025),
                max_tokens,
            }
            .on_the_wire(256);
            assert!(funion_compute::SAMPLING_PRESETS.contains(&(s.temperature, s.top_p)));
            seen.insert(s.max_tokens);
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}

/// Takes fast-path dispatch `d` through the payment check: it is accepted
/// and needs no fetch.
fn admit_fast(c: &mut ComputeCourier, now: u64, token: u64, d: &Dispatch, surb: HeldSurb) {
    c.receive_fast(now, token, surb, &d.encode());
    let Some(Action::Admit { admission, .. }) = c
        .poll(now)
        .into_iter()
        .find(|a| matches!(a, Action::Admit { .. }))
    else {
        panic!("a new job is checked first");
    };
    c.admitted(now, admission, Ok(()));
    let actions = c.poll(now);
    assert!(fetches(&actions).is_empty(), "the input came inline");
    assert!(matches!(
        replies(&actions).as_slice(),
        [(t, DispatchReply::Accepted { .. })] if *t == token
    ));
}

/// The one job the batch window lets run at `now`.
fn runs_one(c: &mut ComputeCourier, now: u64) -> (u64, u64) {
    match runs(&c.poll(now)).as_slice() {
        [(batch, jobs)] if jobs.len() == 1 => (*batch, jobs[0]),
        other => panic!("expected one batch of one: {other:?}"),
    }
}

fn deliveries(actions: &[Action]) -> Vec<(u64, u64, Vec<u8>, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver {
                job,
                surb,
                payload,
                overflow,
                ..
            } => Some((*job, *surb, payload.clone(), *overflow)),
            _ => None,
        })
        .collect()
}

fn fast_dispatch(n: u8, bucket: u32, tokens: &[u32]) -> Dispatch {
    Dispatch {
        read_cap_in: Vec::new(),
        ctx_in: Vec::new(),
        input: Some(input(tokens)),
        bucket_from_input: true,
        ..dispatch(n, bucket, Task::Generate)
    }
}

#[test]
fn a_fast_job_needs_no_fetch_and_leaves_through_its_held_surb_at_the_edge() {
    let mut c = courier();
    let surb = HeldSurb {
        surb: 77,
        usable_until: 10 * DELTA,
    };
    admit_fast(&mut c, 0, 1, &fast_dispatch(1, 5, &[1, 2]), surb);
    let (batch, job) = runs_one(&mut c, 50_000);
    c.finished(60_000, batch, vec![(job, Ok(Outcome::Tokens(vec![7, 8])))]);
    assert!(
        deliveries(&c.poll(5 * DELTA - 1)).is_empty(),
        "not before the edge"
    );
    let at_edge = c.poll(5 * DELTA);
    assert!(stores(&at_edge).is_empty());
    let out = deliveries(&at_edge);
    assert_eq!(out.len(), 1);
    let (j, named, payload, overflow) = &out[0];
    assert_eq!((*j, *named, *overflow), (job, 77, false));
    assert_eq!(
        payload.len(),
        Outcome::padded_len(512),
        "padded to the class"
    );
    assert_eq!(
        Outcome::decode(payload, 512).unwrap(),
        Outcome::Tokens(vec![7, 8])
    );
    c.delivered(job, true);
    assert_eq!(c.jobs(), 0);
    assert_eq!(c.counters().delivered, 1);
    let later = c.poll(6 * DELTA);
    assert!(
        deliveries(&later).is_empty() && stores(&later).is_empty(),
        "released once"
    );

    // An overrun leaves as OVERFLOW through the SURB, the same size.
    admit_fast(&mut c, 0, 2, &fast_dispatch(2, 1, &[3]), surb);
    let (_, job) = runs_one(&mut c, 50_000);
    let out = deliveries(&c.poll(DELTA));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, out[0].3), (job, true));
    assert_eq!(out[0].2.len(), Outcome::padded_len(512));
}

#[test]
fn a_fast_output_is_stored_when_its_surb_cannot_carry_it() {
    let mut c = courier();
    // The SURB works until past the edge, but the driver could not send.
    let surb = HeldSurb {
        surb: 5,
        usable_until: 10 * DELTA,
    };
    admit_fast(&mut c, 0, 1, &fast_dispatch(1, 2, &[1]), surb);
    let (batch, job) = runs_one(&mut c, 50_000);
    c.finished(60_000, batch, vec![(job, Ok(Outcome::Tokens(vec![4])))]);
    let (_, _, sent, _) = deliveries(&c.poll(2 * DELTA)).remove(0);
    c.delivered(job, false);
    let stored = stores(&c.poll(2 * DELTA));
    assert_eq!(stored, vec![(job, sent, false)], "the same output, stored");
    c.stored(job, true);
    assert_eq!(c.jobs(), 0);
    // A SURB whose epoch ends before the edge is not tried at all.
    let stale = HeldSurb {
        surb: 6,
        usable_until: DELTA,
    };
    admit_fast(&mut c, 0, 2, &fast_dispatch(2, 2, &[1]), stale);
    let (batch, job) = runs_one(&mut c, 50_000);
    c.finished(60_000, batch, vec![(job, Ok(Outcome::Tokens(vec![4])))]);
    let at_edge = c.poll(2 * DELTA);
    assert!(deliveries(&at_edge).is_empty());
    assert_eq!(stores(&at_edge).len(), 1);
}

#[test]
fn a_store_job_whose_input_has_not_landed_reads_again_and_its_edge_counts_from_the_input() {
    let mut c = courier();
    let d = Dispatch {
        bucket_from_input: true,
        ..dispatch(1, 3, Task::Generate)
    };
    let (job, _) = c.take(0, &d.encode());
    let job = job.unwrap();
    assert_eq!(fetches(&c.poll(0)), vec![job]);
    // The upload left beside the dispatch and has not landed yet.
    c.input_missing(10_000, job);
    assert!(fetches(&c.poll(10_000 + 199_999)).is_empty());
    assert_eq!(fetches(&c.poll(210_000)), vec![job], "read again");
    c.fetched(400_000, job, Ok(input(&[1])));
    let (batch, _) = runs_one(&mut c, 450_000);
    c.finished(460_000, batch, vec![(job, Ok(Outcome::Tokens(vec![2])))]);
    let edge = 400_000 + 3 * DELTA;
    assert!(
        stores(&c.poll(edge - 1)).is_empty(),
        "the edge counts from the input"
    );
    assert_eq!(stores(&c.poll(edge)).len(), 1);
}

fn persisted(actions: &[Action]) -> Vec<funion_compute::AcceptedJob> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(record) => Some((**record).clone()),
            _ => None,
        })
        .collect()
}

fn forgotten(actions: &[Action]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Forget { key } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_accepted_job_is_kept_before_its_answer_and_a_restarted_courier_finishes_it() {
    let mut c = courier();
    let d = Dispatch {
        bucket_from_input: true,
        ..dispatch(1, 5, Task::Generate)
    };
    c.receive(0, 1, &d.encode());
    let Some(Action::Admit { admission, .. }) = c.poll(0).first().cloned() else {
        panic!("checked first");
    };
    c.admitted(0, admission, Ok(()));
    let actions = c.poll(0);
    // The record comes before the answer, so a driver that carries the
    // actions out in order never says "accepted" of a job it could lose.
    let persist_at = actions
        .iter()
        .position(|a| matches!(a, Action::Persist(_)))
        .expect("kept");
    let reply_at = actions
        .iter()
        .position(|a| matches!(a, Action::Reply { .. }))
        .expect("answered");
    assert!(persist_at < reply_at, "{actions:?}");
    let first = persisted(&actions).remove(0);
    assert_eq!(first.key, d.write_cap_out);
    assert!(!first.edge_fixed, "its edge waits for the input");
    let job = fetches(&actions)[0];
    // Once the input is in hand the edge is known, and kept.
    c.fetched(100_000, job, Ok(input(&[1, 2])));
    let kept = persisted(&c.poll(100_000)).remove(0);
    let edge = 100_000 + 5 * DELTA;
    assert_eq!((kept.edge, kept.edge_fixed), (edge, true));

    // A fast job with its held SURB, kept too.
    let surb = HeldSurb {
        surb: 9,
        usable_until: 20 * DELTA,
    };
    let fast = fast_dispatch(2, 4, &[3]);
    c.receive_fast(0, 2, surb, &fast.encode());
    let Some(Action::Admit { admission, .. }) = c.poll(0).first().cloned() else {
        panic!("checked first");
    };
    c.admitted(0, admission, Ok(()));
    let fast_kept = persisted(&c.poll(0)).remove(0);
    assert_eq!(fast_kept.reply, Some(surb));

    // The courier crashes; a new one takes both records at t = 300 ms.
    let mut c = courier();
    let store_job = c.restore(300_000, kept.clone()).unwrap();
    let fast_job = c.restore(300_000, fast_kept.clone()).unwrap();
    assert!(c.restore(300_000, kept.clone()).is_err(), "held already");
    let mut wrong_key = fast_kept.clone();
    wrong_key.key = vec![0; 168];
    assert!(c.restore(300_000, wrong_key).is_err());
    assert_eq!(c.counters().restored, 2);
    // The store job's input is read again; its edge does not move.
    let actions = c.poll(300_000);
    assert_eq!(fetches(&actions), vec![store_job]);
    c.fetched(350_000, store_job, Ok(input(&[1, 2])));
    let actions = c.poll(350_000);
    assert!(persisted(&actions).is_empty(), "the edge was known");
    let mut ran = Vec::new();
    let mut batches = runs(&actions);
    for t in [450_000, 470_000] {
        for (batch, jobs) in batches {
            let outcomes = jobs.iter().map(|&j| (j, Ok(Outcome::Tokens(vec![5]))));
            c.finished(t - 10_000, batch, outcomes.collect());
            ran.extend(jobs);
        }
        batches = runs(&c.poll(t));
    }
    ran.sort();
    assert_eq!(ran, vec![store_job, fast_job]);
    // The fast job leaves through its old SURB at its old edge (4·Δ).
    let out = deliveries(&c.poll(4 * DELTA));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, out[0].1, out[0].3), (fast_job, 9, false));
    c.delivered(fast_job, true);
    assert_eq!(forgotten(&c.poll(4 * DELTA)), vec![fast.write_cap_out]);
    assert!(stores(&c.poll(edge - 1)).is_empty(), "not before its edge");
    let stored = stores(&c.poll(edge));
    assert_eq!(stored.len(), 1);
    assert_eq!(
        Outcome::decode(&stored[0].1, 512).unwrap(),
        Outcome::Tokens(vec![5])
    );
    c.stored(store_job, true);
    assert_eq!(forgotten(&c.poll(edge)), vec![d.write_cap_out.clone()]);
    assert_eq!(c.jobs(), 0);

    // A record whose edge passed while the courier was down leaves as
    // OVERFLOW at once, without reading its input.
    let mut c = courier();
    let late = c.restore(edge + 1, kept).unwrap();
    let actions = c.poll(edge + 1);
    assert!(fetches(&actions).is_empty());
    assert_eq!(stores(&actions).len(), 1);
    assert_eq!((stores(&actions)[0].0, stores(&actions)[0].2), (late, true));
}
