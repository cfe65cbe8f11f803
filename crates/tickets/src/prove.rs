//! Proving tickets (the client, ahead of time) and checking them (the
//! provider's couriers, on the request path).

use rln::prelude::{
    hash_to_field_le, ArkGroth16Backend, CanonicalDeserialize, CanonicalSerialize, Fr,
    PoseidonHash, Proof, RLNBuilder, RLNPartialWitnessInput, RLNProofValues, RLNWitnessInput,
    Stateless, VerifyProofError, RLN,
};

use crate::{Identity, MerklePath, Scalar, Scope, Spend, Ticket, TicketError};

type Rln = RLN<Stateless, ArkGroth16Backend<PoseidonHash>>;

/// Everything one ticket is proved from.
pub struct TicketRequest<'a> {
    /// The depositor.
    pub identity: &'a Identity,
    /// The deposit's message limit (tickets per period).
    pub limit: u32,
    /// The deposit's leaf path under the root the ticket will carry.
    pub path: &'a MerklePath,
    /// Period and provider.
    pub scope: &'a Scope,
    /// Which of the period's tickets, below `limit`; never used twice.
    pub message_id: u32,
    /// Fresh randomness: the signal `x` is its hash.
    pub nonce: [u8; 32],
}

impl TicketRequest<'_> {
    fn witness(&self) -> Result<RLNWitnessInput, TicketError> {
        if self.message_id >= self.limit {
            return Err(TicketError::Prove(format!(
                "message id {} is not below the limit {}",
                self.message_id, self.limit
            )));
        }
        RLNWitnessInput::new_single()
            .identity_secret(self.identity.secret_fr())
            .user_message_limit(Fr::from(self.limit))
            .merkle_proof(self.path.to_rln()?)
            .x(signal(&self.nonce))
            .external_nullifier(self.scope.external_nullifier())
            .message_id(Fr::from(self.message_id))
            .build()
            .map_err(|e| TicketError::Prove(e.to_string()))
    }
}

fn signal(nonce: &[u8; 32]) -> Fr {
    hash_to_field_le(&[b"funion ticket nonce ".as_slice(), nonce].concat())
}

/// The part of a proof that depends only on the identity, its limit and
/// its path: made once per ticket book, it makes each ticket cheaper.
pub struct PartialProof {
    inner: rln::prelude::PartialProof,
}

/// Makes tickets. Loading the circuit's proving key takes a moment the
/// first time in a process; after that a prover is cheap to make.
pub struct Prover {
    rln: Rln,
}

impl Default for Prover {
    fn default() -> Self {
        Prover {
            rln: RLNBuilder::stateless().build(),
        }
    }
}

fn to_ticket(proof: &Proof, values: &RLNProofValues, period: u64) -> Ticket {
    let mut bytes = [0u8; 128];
    proof
        .serialize_compressed(&mut bytes[..])
        .expect("a Groth16 proof on BN254 compresses to 128 bytes");
    with_proof(values, period, bytes)
}

fn with_proof(values: &RLNProofValues, period: u64, proof: [u8; 128]) -> Ticket {
    Ticket {
        period,
        root: Scalar::from_fr(&values.root()),
        nullifier: Scalar::from_fr(&values.nullifier().expect("single message id")),
        x: Scalar::from_fr(&values.x()),
        y: Scalar::from_fr(&values.y().expect("single message id")),
        proof,
    }
}

impl TicketRequest<'_> {
    /// The ticket's public values (root, nullifier, signal, share) as the
    /// circuit computes them, with no proof: for the simulator, which
    /// models what proving and verifying cost. [`Verifier::verify`] refuses
    /// it.
    pub fn unproved(&self) -> Result<Ticket, TicketError> {
        let values = RLNProofValues::from_witness::<PoseidonHash>(&self.witness()?);
        Ok(with_proof(&values, self.scope.period, [0u8; 128]))
    }
}

impl Prover {
    /// A whole proof, from nothing cached.
    pub fn prove(&self, request: &TicketRequest<'_>) -> Result<Ticket, TicketError> {
        let witness = request.witness()?;
        let (proof, values) = self
            .rln
            .generate_proof(&witness)
            .map_err(|e| TicketError::Prove(e.to_string()))?;
        Ok(to_ticket(&proof, &values, request.scope.period))
    }

    /// The cached part for one identity, limit and path.
    pub fn partial(
        &self,
        identity: &Identity,
        limit: u32,
        path: &MerklePath,
    ) -> Result<PartialProof, TicketError> {
        let witness = RLNPartialWitnessInput::new()
            .identity_secret(identity.secret_fr())
            .user_message_limit(Fr::from(limit))
            .merkle_proof(path.to_rln()?)
            .build()
            .map_err(|e| TicketError::Prove(e.to_string()))?;
        let inner = self
            .rln
            .generate_partial_proof(&witness)
            .map_err(|e| TicketError::Prove(e.to_string()))?;
        Ok(PartialProof { inner })
    }

    /// A ticket from a partial proof made for the same identity, limit and
    /// path.
    pub fn finish(
        &self,
        partial: &PartialProof,
        request: &TicketRequest<'_>,
    ) -> Result<Ticket, TicketError> {
        let witness = request.witness()?;
        let (proof, values) = self
            .rln
            .finish_proof(&partial.inner, &witness)
            .map_err(|e| TicketError::Prove(e.to_string()))?;
        Ok(to_ticket(&proof, &values, request.scope.period))
    }
}

/// Checks tickets for one provider. Deterministic; about a couple of
/// milliseconds a ticket (two pairings' worth of work).
pub struct Verifier {
    rln: Rln,
    provider: String,
}

impl Verifier {
    /// A verifier for tickets scoped to `provider`.
    pub fn new(provider: &str) -> Self {
        Verifier {
            rln: RLNBuilder::stateless().build(),
            provider: provider.to_string(),
        }
    }

    /// Checks `ticket`: its period is one of `periods`, its root one of
    /// `roots`, and its proof verifies for this provider's scope. Returns
    /// what to record.
    pub fn verify(
        &self,
        ticket: &Ticket,
        periods: &[u64],
        roots: &[Scalar],
    ) -> Result<Spend, TicketError> {
        ticket.check_period_and_root(periods, roots)?;
        let proof = Proof::deserialize_compressed(&ticket.proof[..]).map_err(|e| {
            TicketError::Malformed {
                what: "ticket proof",
                detail: e.to_string(),
            }
        })?;
        let scope = Scope {
            period: ticket.period,
            provider: self.provider.clone(),
        };
        let x = ticket.x.to_fr("x")?;
        let values = RLNProofValues::new_single()
            .y(ticket.y.to_fr("y")?)
            .root(ticket.root.to_fr("root")?)
            .nullifier(ticket.nullifier.to_fr("nullifier")?)
            .x(x)
            .external_nullifier(scope.external_nullifier())
            .build();
        match self.rln.verify_with_signal(&proof, &values, &x) {
            Ok(true) => Ok(ticket.spend()),
            Ok(false) | Err(VerifyProofError::Synthesis(_)) => Err(TicketError::InvalidProof),
            Err(VerifyProofError::InvalidRoot) => Err(TicketError::UnknownRoot),
            Err(VerifyProofError::InvalidSignal) => Err(TicketError::InvalidProof),
        }
    }
}
