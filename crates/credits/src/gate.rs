//! The compute courier's ticket gate, as rules: what a job must pay, which
//! periods and roots a ticket may name, what identifies a job, and what a
//! collision in the nullifier set means. The runtime's gate fetches roots,
//! verifies proofs on a blocking thread and records through a
//! [`NullifierStore`](crate::nullifiers::NullifierStore); every decision
//! is one of these functions.

use funion_compute::Dispatch;
use funion_pki::Credits;
use funion_tickets::{judge, Scalar, Spend, Ticket, TicketError, Verdict};
use sha2::{Digest, Sha256};

use crate::nullifiers::{NullifierStore, Record, Recorded};

/// Why the gate refused a job. `Display` is what the client is told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The network's price table has no cell for the job's classes.
    #[error("the cell ({input_class}, {output_class}) has no price")]
    NoPrice {
        /// Input class.
        input_class: u32,
        /// Output class.
        output_class: u32,
    },
    /// The job carries another number of tickets than its cell costs.
    #[error(
        "the cell ({input_class}, {output_class}) costs {price} tickets, the job carries {carried}"
    )]
    WrongPrice {
        /// Input class.
        input_class: u32,
        /// Output class.
        output_class: u32,
        /// Tickets the cell costs.
        price: u32,
        /// Tickets the job carries.
        carried: usize,
    },
    /// A ticket does not parse or does not verify.
    #[error("a ticket was refused: {0}")]
    BadTicket(String),
    /// A ticket was spent already, by this very ticket (nobody is slashed).
    #[error("a ticket was already spent (replay)")]
    Replay,
    /// The nullifier set could not record the job now (nothing recorded).
    #[error("cannot record the tickets now: {0}")]
    Unavailable(String),
    /// Two tickets for one message id: the owner's secret is out.
    #[error("a ticket double-spends its message id: the deposit is slashed")]
    DoubleSpend {
        /// The recovered identity secret, for the ledger's `slash`.
        secret: [u8; 32],
    },
}

impl Refusal {
    /// A short name for counting refusals by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoPrice { .. } | Refusal::WrongPrice { .. } => "price",
            Refusal::BadTicket(_) => "invalid",
            Refusal::Replay => "replay",
            Refusal::Unavailable(_) => "unavailable",
            Refusal::DoubleSpend { .. } => "double_spend",
        }
    }
}

/// The job's tickets, parsed, if it carries exactly its cell's price.
pub fn priced_tickets(credits: &Credits, dispatch: &Dispatch) -> Result<Vec<Ticket>, Refusal> {
    let (input_class, output_class) = (dispatch.input_class, dispatch.output_class);
    let price = credits
        .tickets_for(input_class, output_class)
        .ok_or(Refusal::NoPrice {
            input_class,
            output_class,
        })?;
    if dispatch.tickets.len() != price as usize {
        return Err(Refusal::WrongPrice {
            input_class,
            output_class,
            price,
            carried: dispatch.tickets.len(),
        });
    }
    dispatch
        .tickets
        .iter()
        .map(|t| Ticket::decode(t).map_err(|e| Refusal::BadTicket(e.to_string())))
        .collect()
}

/// The credit periods a ticket may name at `now_s` (Unix seconds): this one
/// and the one just ended, so a book proved before the turn is not wasted.
pub fn accepted_periods(credits: &Credits, now_s: u64) -> [u64; 2] {
    let period = credits.period_at(now_s);
    [period, period.saturating_sub(1)]
}

/// Whether a ticket names a root the gate does not hold: then it fetches the
/// ledger's recent roots again before it judges.
pub fn needs_fresh_roots(tickets: &[Ticket], roots: &[Scalar]) -> bool {
    tickets.iter().any(|t| !roots.contains(&t.root))
}

/// What identifies a job in the nullifier set: SHA-256 of its output write
/// cap, which only the client and this job's courier know. A resend of the
/// same job carries the same cap, so it may present the same tickets again.
pub fn job_identity(dispatch: &Dispatch) -> Scalar {
    Scalar(Sha256::digest(&dispatch.write_cap_out).into())
}

/// Two of one job's own tickets for one message id.
pub fn conflict_within(spends: &[Spend]) -> Option<Refusal> {
    spends.iter().enumerate().find_map(|(i, a)| {
        spends[..i]
            .iter()
            .find(|b| b.nullifier == a.nullifier)
            .map(|b| refusal(judge(b, a)))
    })
}

/// The refusal a nullifier collision means.
pub fn refusal(verdict: Verdict) -> Refusal {
    match verdict {
        Verdict::Replay => Refusal::Replay,
        Verdict::DoubleSpend { secret } => Refusal::DoubleSpend { secret },
    }
}

/// The records a verified job's spends become.
pub fn records(spends: &[Spend], job: Scalar) -> Vec<Record> {
    spends
        .iter()
        .map(|s| Record {
            nullifier: s.nullifier,
            x: s.x,
            y: s.y,
            job,
        })
        .collect()
}

/// The whole gate in one step, for a driver that holds the ledger's roots
/// and whose nullifier set answers at once (the simulator): the price, each
/// ticket checked by `verify` (period, root, proof), conflicts among the
/// job's own tickets, then the atomic record. Returns the tickets paid.
/// The runtime takes the same steps, fetching roots and recording over the
/// network in between.
pub fn admit<S: NullifierStore>(
    credits: &Credits,
    dispatch: &Dispatch,
    now_s: u64,
    roots: &[Scalar],
    verify: impl Fn(&Ticket, &[u64], &[Scalar]) -> Result<Spend, TicketError>,
    store: &mut S,
) -> Result<usize, Refusal> {
    let tickets = priced_tickets(credits, dispatch)?;
    let periods = accepted_periods(credits, now_s);
    let spends = tickets
        .iter()
        .map(|t| verify(t, &periods, roots))
        .collect::<Result<Vec<Spend>, TicketError>>()
        .map_err(|e| Refusal::BadTicket(e.to_string()))?;
    if let Some(refused) = conflict_within(&spends) {
        return Err(refused);
    }
    match store.record(&records(&spends, job_identity(dispatch))) {
        Ok(Recorded::Fresh) => Ok(spends.len()),
        Ok(Recorded::Conflict { index, seen }) => {
            Err(refusal(judge(&seen.spend(), &spends[index])))
        }
        Err(e) => Err(Refusal::Unavailable(e.to_string())),
    }
}
