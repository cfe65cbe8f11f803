//! Credit tickets, sans-I/O (DESIGN "Credits"): RLN-v2 proofs through the
//! `rln` crate (vacp2p/zerokit 3.0.0, its depth-20 circuit and keys built
//! in, so nothing is downloaded).
//!
//! A depositor holds an [`Identity`] (secret `k`); the ledger's tree leaf is
//! its rate commitment `Poseidon(Poseidon(k), limit)`. A [`Ticket`] is one
//! RLN proof for a `message_id` below `limit`, under the external nullifier
//! of a [`Scope`] (a credit period at one provider), with the signal `x`
//! taken from a random nonce, so tickets are proved ahead of time. The
//! provider's compute couriers check each ticket with a [`Verifier`]
//! against recent roots and keep each [`Spend`]: the same nullifier with
//! the same `x` is a replay; with another `x` it is a double spend, and
//! [`recover_secret`] gives `k` back for slashing.
//!
//! Nothing here touches sockets, clocks or files. The proof's blinding
//! randomness is drawn inside `rln` itself; everything the
//! courier checks is deterministic.

mod field;
mod prove;
mod ticket;
mod tree;

pub use field::{
    commitment_of_secret, rate_commitment, recover_secret, Identity, Scalar, Scope, SECRET_LEN,
};
pub use prove::{PartialProof, Prover, TicketRequest, Verifier};
pub use ticket::{judge, Spend, Ticket, Verdict, TICKET_LEN};
pub use tree::{MerklePath, RateTree, TREE_DEPTH};

/// What can go wrong with tickets, identities and paths.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    /// Bytes of the wrong length or that do not decode.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// A field element that is not below the BN254 scalar modulus.
    #[error("{0} is not a canonical field element")]
    NotCanonical(&'static str),
    /// The ticket's root is not one the ledger published recently.
    #[error("the ticket's root is not a recent ledger root (prove the book again)")]
    UnknownRoot,
    /// The ticket is for a credit period this courier does not accept now.
    #[error("the ticket is for credit period {period}, not one of {accepted:?}")]
    WrongPeriod {
        /// The ticket's period.
        period: u64,
        /// The periods accepted now.
        accepted: Vec<u64>,
    },
    /// The zero-knowledge proof does not verify.
    #[error("the ticket's proof is invalid")]
    InvalidProof,
    /// Proving failed (bad witness: message id not below the limit, wrong
    /// path length, ...).
    #[error("cannot prove the ticket: {0}")]
    Prove(String),
    /// A tree operation failed (index out of range).
    #[error("rate tree: {0}")]
    Tree(String),
}
