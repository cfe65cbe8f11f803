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

/// What identifies a job in the nullifier set: SHA-256 of its output write
/// cap, which only the client and this job's courier know. A resend of the
/// same job carries the same cap, so it may present the same tickets again.
pub fn job_identity(dispatch: &Dispatch) -> Scalar {
    Scalar(Sha256::digest(&dispatch.write_cap_out).into())
}

/// Two of one job's own tickets for one message id.
fn conflict_within(spends: &[Spend]) -> Option<Refusal> {
    spends.iter().enumerate().find_map(|(i, a)| {
        spends[..i]
            .iter()
            .find(|b| b.nullifier == a.nullifier)
            .map(|b| refusal(judge(b, a)))
    })
}

/// The refusal a nullifier collision means.
fn refusal(verdict: Verdict) -> Refusal {
    match verdict {
        Verdict::Replay => Refusal::Replay,
        Verdict::DoubleSpend { secret } => Refusal::DoubleSpend { secret },
    }
}

/// A job on its way through the gate: priced, its periods fixed, its
/// tickets parsed but not yet verified. Every driver takes the same three
/// steps: [`Admission::begin`], [`Admission::verify`] against the ledger's
/// roots, then [`Verified::settle`] with what the nullifier set answered to
/// [`Verified::records`]. Between them it may fetch roots, verify on
/// another thread or record over the network.
pub struct Admission {
    tickets: Vec<Ticket>,
    periods: [u64; 2],
    job: Scalar,
}

impl Admission {
    /// Prices `dispatch` and fixes the periods its tickets may name at
    /// `now_s` (Unix seconds).
    pub fn begin(credits: &Credits, dispatch: &Dispatch, now_s: u64) -> Result<Self, Refusal> {
        Ok(Admission {
            tickets: priced_tickets(credits, dispatch)?,
            periods: accepted_periods(credits, now_s),
            job: job_identity(dispatch),
        })
    }

    /// Whether a ticket names a root not in `roots`: then the driver fetches
    /// the ledger's recent roots again before it verifies.
    pub fn needs_fresh_roots(&self, roots: &[Scalar]) -> bool {
        self.tickets.iter().any(|t| !roots.contains(&t.root))
    }

    /// Checks each ticket with `verify` (period, root, proof), then looks for
    /// two of the job's own tickets on one message id.
    pub fn verify(
        self,
        roots: &[Scalar],
        verify: impl Fn(&Ticket, &[u64], &[Scalar]) -> Result<Spend, TicketError>,
    ) -> Result<Verified, Refusal> {
        let spends = self
            .tickets
            .iter()
            .map(|t| verify(t, &self.periods, roots))
            .collect::<Result<Vec<Spend>, TicketError>>()
            .map_err(|e| Refusal::BadTicket(e.to_string()))?;
        if let Some(refused) = conflict_within(&spends) {
            return Err(refused);
        }
        let records = spends
            .iter()
            .map(|s| Record {
                nullifier: s.nullifier,
                x: s.x,
                y: s.y,
                job: self.job,
            })
            .collect();
        Ok(Verified { spends, records })
    }
}

/// A job whose tickets all verified: what remains is the atomic record.
pub struct Verified {
    spends: Vec<Spend>,
    records: Vec<Record>,
}

impl Verified {
    /// What the nullifier set must record, all or none.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The gate's verdict once the set answered: the tickets paid, or why
    /// not (a replay, a double spend with the secret it gives away, or a set
    /// that could not record now).
    pub fn settle<E: std::fmt::Display>(
        &self,
        recorded: Result<Recorded, E>,
    ) -> Result<usize, Refusal> {
        match recorded {
            Ok(Recorded::Fresh) => Ok(self.spends.len()),
            Ok(Recorded::Conflict { index, seen }) => {
                Err(refusal(judge(&seen.spend(), &self.spends[index])))
            }
            Err(e) => Err(Refusal::Unavailable(e.to_string())),
        }
    }
}

/// The whole gate in one step, for a driver that holds the ledger's roots
/// and whose nullifier set answers at once (the simulator). Returns the
/// tickets paid.
pub fn admit<S: NullifierStore>(
    credits: &Credits,
    dispatch: &Dispatch,
    now_s: u64,
    roots: &[Scalar],
    verify: impl Fn(&Ticket, &[u64], &[Scalar]) -> Result<Spend, TicketError>,
    store: &mut S,
) -> Result<usize, Refusal> {
    let verified = Admission::begin(credits, dispatch, now_s)?.verify(roots, verify)?;
    verified.settle(store.record(verified.records()))
}
