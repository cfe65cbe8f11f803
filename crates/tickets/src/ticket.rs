//! A ticket on the wire, what a courier keeps of it, and what a second
//! sighting of its nullifier means.

use crate::{recover_secret, Scalar, TicketError};

/// Bytes of a compressed Groth16 proof on BN254.
const PROOF_LEN: usize = 128;

/// Bytes of one ticket: period (8) ‖ root ‖ nullifier ‖ x ‖ y (32 each) ‖
/// proof (128). The external nullifier is not sent: the courier derives it
/// from the period and its own provider's name.
pub const TICKET_LEN: usize = 8 + 4 * 32 + PROOF_LEN;

/// One RLN proof that pays for one unit of a job.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Credit period it was proved for.
    pub period: u64,
    /// The ledger root it was proved against.
    pub root: Scalar,
    /// `Poseidon(a₁)`: the same for every use of one message id.
    pub nullifier: Scalar,
    /// The signal: hash of the ticket's random nonce.
    pub x: Scalar,
    /// The share `y = k + x·a₁`.
    pub y: Scalar,
    /// The compressed Groth16 proof.
    pub proof: [u8; PROOF_LEN],
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("period", &self.period)
            .field("nullifier", &self.nullifier)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// The wire form, [`TICKET_LEN`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TICKET_LEN);
        out.extend_from_slice(&self.period.to_le_bytes());
        for s in [&self.root, &self.nullifier, &self.x, &self.y] {
            out.extend_from_slice(&s.0);
        }
        out.extend_from_slice(&self.proof);
        out
    }

    /// The checks before the proof's: the ticket names one of `periods`
    /// and one of `roots`.
    pub fn check_period_and_root(
        &self,
        periods: &[u64],
        roots: &[Scalar],
    ) -> Result<(), TicketError> {
        if !periods.contains(&self.period) {
            return Err(TicketError::WrongPeriod {
                period: self.period,
                accepted: periods.to_vec(),
            });
        }
        if !roots.contains(&self.root) {
            return Err(TicketError::UnknownRoot);
        }
        Ok(())
    }

    /// Parses the wire form (the proof itself is checked by the verifier).
    pub fn decode(bytes: &[u8]) -> Result<Self, TicketError> {
        if bytes.len() != TICKET_LEN {
            return Err(TicketError::Malformed {
                what: "ticket",
                detail: format!("{} bytes, want {TICKET_LEN}", bytes.len()),
            });
        }
        let scalar = |i: usize| {
            let at = 8 + 32 * i;
            Scalar(bytes[at..at + 32].try_into().expect("32 bytes"))
        };
        Ok(Ticket {
            period: u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            root: scalar(0),
            nullifier: scalar(1),
            x: scalar(2),
            y: scalar(3),
            proof: bytes[8 + 4 * 32..].try_into().expect("128 bytes"),
        })
    }

    /// What a courier records once the ticket verified.
    pub fn spend(&self) -> Spend {
        Spend {
            nullifier: self.nullifier,
            x: self.x,
            y: self.y,
        }
    }
}

/// What a provider keeps of a verified ticket: its nullifier and share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spend {
    /// The nullifier.
    pub nullifier: Scalar,
    /// The signal.
    pub x: Scalar,
    /// The share.
    pub y: Scalar,
}

/// What a second ticket with a nullifier already seen is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The very same ticket again (same `x`): refuse it, nobody is slashed.
    Replay,
    /// Another ticket for the same message id: its owner's secret, to slash.
    DoubleSpend {
        /// The recovered identity secret `k`.
        secret: [u8; 32],
    },
}

/// Judges `new` against `seen`, both for the same nullifier.
pub fn judge(seen: &Spend, new: &Spend) -> Verdict {
    if seen.x == new.x {
        return Verdict::Replay;
    }
    match recover_secret((seen.x, seen.y), (new.x, new.y)) {
        Ok(secret) => Verdict::DoubleSpend { secret },
        // Unreachable with different x; treat as a replay rather than panic.
        Err(_) => Verdict::Replay,
    }
}
