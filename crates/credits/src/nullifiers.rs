//! The provider's nullifier set: every accepted spend, with the job it paid
//! for. A job's spends are recorded all or none, in one atomic step of the
//! store ([`NullifierStore::record`]); [`decide`] is the rule that step
//! applies, the same for every store.

use std::collections::BTreeMap;

use funion_tickets::{Scalar, Spend};
use serde::{Deserialize, Serialize};

/// A spend as the set keeps it, with the job it paid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The ticket's nullifier (one per identity, period and message id).
    pub nullifier: Scalar,
    /// The signal.
    pub x: Scalar,
    /// The share.
    pub y: Scalar,
    /// The job it paid for ([`crate::gate::job_identity`]).
    pub job: Scalar,
}

impl Record {
    /// The spend, for [`funion_tickets::judge`].
    pub fn spend(&self) -> Spend {
        Spend {
            nullifier: self.nullifier,
            x: self.x,
            y: self.y,
        }
    }
}

/// The outcome of recording a job's spends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recorded {
    /// Every nullifier is now the job's (or already was: the same job sent
    /// again).
    Fresh,
    /// Nothing was recorded: spend `index` collides with `seen`.
    Conflict {
        /// Which of the job's spends.
        index: usize,
        /// What the set held under its nullifier.
        seen: Record,
    },
}

/// Decides a job's `records` given what the set holds under each one's
/// nullifier (`seen[i]` for `records[i]`): the same spend for the same job
/// is a resend and records nothing new; anything else under a nullifier
/// already held is a conflict, and then nothing of the job is recorded.
/// Returns the outcome and the records to add.
pub fn decide(records: &[Record], seen: &[Option<Record>]) -> (Recorded, Vec<Record>) {
    let mut new = Vec::with_capacity(records.len());
    for (index, (record, seen)) in records.iter().zip(seen).enumerate() {
        match seen {
            None => new.push(*record),
            Some(seen) if seen.x == record.x && seen.job == record.job => {}
            Some(seen) => {
                let seen = *seen;
                return (Recorded::Conflict { index, seen }, Vec::new());
            }
        }
    }
    (Recorded::Fresh, new)
}

/// A durable nullifier set.
pub trait NullifierStore {
    /// Why the store failed.
    type Error: std::fmt::Display;
    /// In one atomic, durable step: looks up every record's nullifier,
    /// applies [`decide`], and adds what it says. On an error nothing is
    /// recorded.
    fn record(&mut self, records: &[Record]) -> Result<Recorded, Self::Error>;
}

/// A nullifier set in memory (the simulator, tests).
#[derive(Clone, Debug, Default)]
pub struct MemoryNullifiers {
    records: BTreeMap<[u8; 32], Record>,
}

impl MemoryNullifiers {
    /// Spends recorded.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl NullifierStore for MemoryNullifiers {
    type Error = std::convert::Infallible;

    fn record(&mut self, records: &[Record]) -> Result<Recorded, Self::Error> {
        let seen: Vec<Option<Record>> = records
            .iter()
            .map(|r| self.records.get(&r.nullifier.0).copied())
            .collect();
        let (outcome, new) = decide(records, &seen);
        for record in new {
            self.records.insert(record.nullifier.0, record);
        }
        Ok(outcome)
    }
}
