//! The gate's rules without a network: prices, periods, job identity and
//! the nullifier set's all-or-none recording.

use funion_compute::{Dispatch, Sampling, Task};
use funion_credits::gate::{accepted_periods, job_identity, priced_tickets, Refusal};
use funion_credits::nullifiers::{MemoryNullifiers, NullifierStore, Record, Recorded};
use funion_credits::wallet::{reserve, spendable, stale, WalletError};
use funion_pki::{Credits, PriceCell};
use funion_tickets::Scalar;

fn scalar(n: u8) -> Scalar {
    Scalar([n; 32])
}

fn record(nullifier: u8, x: u8, job: u8) -> Record {
    Record {
        nullifier: scalar(nullifier),
        x: scalar(x),
        y: scalar(x),
        job: scalar(job),
    }
}

fn dispatch(tickets: usize) -> Dispatch {
    Dispatch {
        read_cap_in: vec![1; 136],
        ctx_in: vec![1; 16],
        input: None,
        write_cap_out: vec![2; 168],
        ctx_out: vec![2; 16],
        model: "m".into(),
        task: Task::Generate,
        input_class: 256,
        output_class: 256,
        sampling: Sampling::default(),
        bucket: 1,
        bucket_from_input: false,
        tickets: vec![vec![0; 3]; tickets],
    }
}

#[test]
fn a_job_records_all_its_spends_or_none() {
    let mut set = MemoryNullifiers::default();
    let job = [record(1, 10, 7), record(2, 11, 7)];
    assert_eq!(set.record(&job).unwrap(), Recorded::Fresh);
    assert_eq!(set.len(), 2);
    // The same job sent again: accepted, nothing new.
    assert_eq!(set.record(&job).unwrap(), Recorded::Fresh);
    assert_eq!(set.len(), 2);
    // Another job presenting spend 2 again (a replay) with a fresh one
    // before it: refused, and the fresh one is not recorded either.
    let other = [record(3, 12, 8), record(2, 11, 8)];
    assert_eq!(
        set.record(&other).unwrap(),
        Recorded::Conflict {
            index: 1,
            seen: record(2, 11, 7)
        }
    );
    assert_eq!(set.len(), 2, "a refused job records nothing");
    // Another x under a held nullifier (a double spend) conflicts too.
    assert!(matches!(
        set.record(&[record(1, 99, 9)]).unwrap(),
        Recorded::Conflict { index: 0, .. }
    ));
}

#[test]
fn prices_periods_and_job_identity() {
    let credits = Credits {
        period_s: 100,
        prices: vec![PriceCell {
            input_class: 256,
            output_class: 256,
            tickets: 2,
        }],
        ..Credits::default()
    };
    assert_eq!(
        priced_tickets(&credits, &dispatch(1)).unwrap_err(),
        Refusal::WrongPrice {
            input_class: 256,
            output_class: 256,
            price: 2,
            carried: 1
        }
    );
    // The right count of tickets that do not parse is a bad ticket.
    assert!(matches!(
        priced_tickets(&credits, &dispatch(2)),
        Err(Refusal::BadTicket(_))
    ));
    let mut unpriced = dispatch(2);
    unpriced.output_class = 512;
    assert!(matches!(
        priced_tickets(&credits, &unpriced),
        Err(Refusal::NoPrice { .. })
    ));
    assert_eq!(accepted_periods(&credits, 1_050), [10, 9]);
    assert_eq!(accepted_periods(&credits, 50), [0, 0]);
    let a = dispatch(2);
    let mut b = dispatch(2);
    assert_eq!(
        job_identity(&a),
        job_identity(&b),
        "a resend is the same job"
    );
    b.write_cap_out[0] ^= 1;
    assert_ne!(job_identity(&a), job_identity(&b));
}

#[test]
fn a_wallet_reserves_only_ids_below_its_limit_and_drops_what_couriers_refuse() {
    assert_eq!(reserve(0, 3, 10), Ok(0..3));
    assert_eq!(reserve(7, 3, 10), Ok(7..10));
    assert_eq!(
        reserve(8, 3, 10),
        Err(WalletError::Exhausted { left: 2, limit: 10 })
    );
    assert_eq!(
        reserve(u32::MAX - 1, 5, 10),
        Err(WalletError::Exhausted { left: 0, limit: 10 })
    );
    assert!(spendable("acme", 7, "acme", &[7, 6]));
    assert!(!spendable("acme", 5, "acme", &[7, 6]));
    assert!(!spendable("other", 7, "acme", &[7, 6]));
    let ticket = funion_tickets::Ticket {
        period: 7,
        root: scalar(9),
        nullifier: scalar(1),
        x: scalar(2),
        y: scalar(3),
        proof: [0; 128],
    }
    .encode();
    let live = [scalar(9)];
    assert!(!stale("acme", 7, &ticket, "acme", 6, &live));
    assert!(stale("acme", 5, &ticket, "acme", 6, &live), "an old period");
    assert!(
        stale("acme", 7, &ticket, "acme", 6, &[scalar(8)]),
        "a dead root"
    );
    assert!(stale("acme", 7, b"junk", "acme", 6, &live), "unreadable");
    assert!(!stale("other", 5, &ticket, "acme", 6, &live), "not judged");
}
