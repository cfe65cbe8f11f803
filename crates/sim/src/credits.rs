//! Payment in the simulator: every client holds a deposit (a leaf of the
//! ledger's rate tree) and a wallet that spends real RLN ticket values
//! (nullifier, signal, share, as the circuit computes them); every compute
//! courier runs the gate's rules ([`funion_credits::gate::admit`]) against
//! one nullifier set for the provider. Only the Groth16 proof is modelled:
//! a ticket carries none, the gate checks period and root but not a proof,
//! and its answer comes [`Gate::verify_us`] per ticket later, the cost of a
//! real verification. A double spender (the positive control) reuses one
//! message id, and the gate must catch it and recover its secret.

use funion_compute::Dispatch;
use funion_credits::gate::{admit, Refusal};
use funion_credits::nullifiers::MemoryNullifiers;
use funion_credits::wallet::reserve;
use funion_pki::Credits;
use funion_tickets::{
    commitment_of_secret, rate_commitment, Identity, MerklePath, RateTree, Scalar, Scope, Spend,
    Ticket, TicketError, TicketRequest,
};
use rand_core::{CryptoRng, RngCore};

use funion_mixnet::Micros;

/// One client's deposit and what it has spent.
pub(crate) struct Wallet {
    identity: Identity,
    limit: u32,
    path: MerklePath,
    /// The period the next ids are for, and the next unused id in it.
    period: u64,
    next_id: u32,
    /// Spends message id 0 for every ticket (the positive control).
    cheats: bool,
}

/// Why a wallet could not pay.
#[derive(Debug)]
pub(crate) enum Unpaid {
    /// Every message id of the period is spent.
    Exhausted,
    /// The cell has no price.
    NoPrice,
}

impl Unpaid {
    /// A short name for counting failures by reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Unpaid::Exhausted => "no_tickets_left",
            Unpaid::NoPrice => "no_price",
        }
    }
}

impl Wallet {
    /// Tickets for one job of the cell at `now_s`: the ids are taken before
    /// the tickets are made, so a ticket is never made twice for one id.
    pub(crate) fn pay<R: RngCore + CryptoRng>(
        &mut self,
        credits: &Credits,
        cell: (u32, u32),
        now_s: u64,
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>, Unpaid> {
        let price = credits.tickets_for(cell.0, cell.1).ok_or(Unpaid::NoPrice)?;
        let period = credits.period_at(now_s);
        if period != self.period {
            (self.period, self.next_id) = (period, 0);
        }
        // The ids are taken before any ticket is made with them; a cheat
        // makes its first ids again for every job.
        let ids = if self.cheats {
            0..price
        } else {
            let ids = reserve(self.next_id, price, self.limit).map_err(|_| Unpaid::Exhausted)?;
            self.next_id = ids.end;
            ids
        };
        let scope = Scope {
            period,
            provider: credits.provider.clone(),
        };
        ids.map(|message_id| {
            let mut nonce = [0u8; 32];
            rng.fill_bytes(&mut nonce);
            let request = TicketRequest {
                identity: &self.identity,
                limit: self.limit,
                path: &self.path,
                scope: &scope,
                message_id,
                nonce,
            };
            request
                .unproved()
                .map(|t| t.encode())
                .map_err(|_| Unpaid::Exhausted)
        })
        .collect()
    }
}

/// The provider's gate: the ledger's root, the nullifier set, and counts.
pub(crate) struct Gate {
    credits: Credits,
    roots: Vec<Scalar>,
    nullifiers: MemoryNullifiers,
    /// What one ticket's verification costs, microseconds.
    pub(crate) verify_us: Micros,
    /// Tickets accepted.
    pub(crate) accepted: u64,
    /// Deposits whose secret a caught double spend gave away (the ledger
    /// slashes each once).
    pub(crate) slashed: std::collections::BTreeSet<Scalar>,
}

impl Gate {
    /// The network's credit parameters.
    pub(crate) fn credits(&self) -> &Credits {
        &self.credits
    }

    /// Decides a dispatch at `now_s`; `Ok` is the tickets paid.
    pub(crate) fn check(&mut self, dispatch: &Dispatch, now_s: u64) -> Result<usize, Refusal> {
        let verdict = admit(
            &self.credits,
            dispatch,
            now_s,
            &self.roots,
            modelled_verify,
            &mut self.nullifiers,
        );
        match &verdict {
            Ok(paid) => self.accepted += *paid as u64,
            // What the ledger checks before it slashes: the secret opens a
            // deposit.
            Err(Refusal::DoubleSpend { secret }) => {
                if let Ok(deposit) = commitment_of_secret(secret) {
                    self.slashed.insert(deposit);
                }
            }
            Err(_) => {}
        }
        verdict
    }

    /// The answer's delay for a dispatch carrying `tickets` tickets.
    pub(crate) fn delay_us(&self, tickets: usize) -> Micros {
        self.verify_us * tickets.max(1) as Micros
    }
}

/// The verifier's checks but the proof's: period and root.
fn modelled_verify(
    ticket: &Ticket,
    periods: &[u64],
    roots: &[Scalar],
) -> Result<Spend, TicketError> {
    ticket.check_period_and_root(periods, roots)?;
    Ok(ticket.spend())
}

/// Deposits for `clients` clients of `limit` tickets a period each, the
/// first `cheaters` of them double spenders; their wallets and the gate.
pub(crate) fn deposits<R: RngCore + CryptoRng>(
    credits: &Credits,
    clients: usize,
    limit: u32,
    cheaters: usize,
    verify_us: Micros,
    rng: &mut R,
) -> (Vec<Wallet>, Gate) {
    let mut tree = RateTree::default();
    let identities: Vec<Identity> = (0..clients).map(|_| Identity::generate(rng)).collect();
    for (i, identity) in identities.iter().enumerate() {
        let leaf = rate_commitment(&identity.commitment(), limit).expect("a valid limit");
        tree.set(i as u32, &leaf)
            .expect("the tree holds every client");
    }
    let wallets = identities
        .into_iter()
        .enumerate()
        .map(|(i, identity)| Wallet {
            path: tree.path(i as u32).expect("a leaf just set"),
            identity,
            limit,
            period: 0,
            next_id: 0,
            cheats: i < cheaters,
        })
        .collect();
    let gate = Gate {
        credits: credits.clone(),
        roots: vec![tree.root()],
        nullifiers: MemoryNullifiers::default(),
        verify_us,
        accepted: 0,
        slashed: Default::default(),
    };
    (wallets, gate)
}
