//! What a compute courier takes from a client with a dispatch, and what
//! the ledger takes with a deposit: any bytes offered as a ticket, as a
//! dispatch's tickets to price and check, as two spends to judge, or as a
//! deposit request are parsed and checked, or refused, and never panic.
//! (The zero-knowledge proof itself is the rln crate's to check.)
#![no_main]

use funion_compute::Dispatch;
use funion_credits::gate::Admission;
use funion_credits::ledger::{open_deposit, DepositRequest, StakeRules};
use funion_credits::nullifiers::decide;
use funion_pki::Credits;
use funion_tickets::{judge, recover_secret, Identity, Scalar, Spend, Ticket, TICKET_LEN};
use libfuzzer_sys::fuzz_target;

fn scalar(bytes: &[u8], at: usize) -> Scalar {
    let mut out = [0u8; 32];
    for (i, b) in bytes.iter().skip(at).take(32).enumerate() {
        out[i] = *b;
    }
    Scalar(out)
}

fuzz_target!(|data: &[u8]| {
    // A ticket's wire form: exactly TICKET_LEN bytes, round-tripping.
    if let Ok(ticket) = Ticket::decode(data) {
        assert_eq!(ticket.encode(), data, "a decoded ticket re-encodes");
    }
    if data.len() >= TICKET_LEN {
        let ticket = Ticket::decode(&data[..TICKET_LEN]).expect("the right length decodes");
        let _ = ticket.check_period_and_root(&[ticket.period], &[ticket.root]);
    }
    let _ = Identity::from_bytes(data.get(..32).unwrap_or(data));

    // A dispatch priced and its tickets checked (period and root; the
    // proof check is stood in for), then recorded against an empty set.
    if let Ok(dispatch) = Dispatch::decode(data) {
        let credits = Credits::default();
        if let Ok(admission) = Admission::begin(&credits, &dispatch, 1_800_000_000) {
            let roots = [scalar(data, 0)];
            let verified = admission.verify(&roots, |t, periods, roots| {
                t.check_period_and_root(periods, roots)?;
                Ok(t.spend())
            });
            if let Ok(verified) = verified {
                let seen = vec![None; verified.records().len()];
                let (recorded, _) = decide(verified.records(), &seen);
                let _ = verified.settle::<String>(Ok(recorded));
            }
        }
    }

    // Two spends on one message id: a replay, or the secret recovered.
    let seen = Spend {
        nullifier: scalar(data, 0),
        x: scalar(data, 32),
        y: scalar(data, 64),
    };
    let new = Spend {
        nullifier: scalar(data, 0),
        x: scalar(data, 96),
        y: scalar(data, 128),
    };
    let _ = judge(&seen, &new);
    let _ = recover_secret((seen.x, seen.y), (new.x, new.y));

    // A deposit request as the ledger's HTTP body carries it.
    if let Ok(request) = serde_json::from_slice::<DepositRequest>(data) {
        let rules = StakeRules {
            stake_per_ticket: 10,
            min_policy_stake: 100,
            withdraw_delay_s: 60,
        };
        let _ = open_deposit(&rules, &request, false, 0, 1_800_000_000);
    }
});
