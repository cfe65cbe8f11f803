//! The ledger's rules: what a deposit must stake, and how slashing, a
//! policy burn, a withdrawal and its claim change a deposit; which roots
//! couriers may take. Each rule is a function from a deposit and a request
//! to the new deposit and what it pays. The ledger role keeps the deposits
//! in redb, serves them over HTTP, and carries out what these say.

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use funion_tickets::{rate_commitment, Scalar, TREE_DEPTH};
use serde::{Deserialize, Serialize};

/// What a withdrawal request signs: this label, then the id commitment.
pub const WITHDRAW_LABEL: &[u8] = b"funion ledger withdraw v1";
/// What a policy burn signs: this label, the id commitment, the evidence hash.
pub const BURN_LABEL: &[u8] = b"funion ledger policy burn v1";

/// Where a deposit stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DepositState {
    /// In the tree; its tickets are good.
    Active,
    /// Out of the tree; stakes claimable from `claimable_at` (Unix s).
    Withdrawing {
        /// When the claim opens.
        claimable_at: u64,
    },
    /// Paid back to its owner.
    Withdrawn,
    /// Its secret was revealed by a double spend; D went to `claimant`.
    Slashed {
        /// Who revealed it.
        claimant: String,
    },
}

/// One deposit, as the ledger keeps and shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    /// `Poseidon(k)`.
    pub id_commitment: Scalar,
    /// Tickets per credit period.
    pub limit: u32,
    /// Leaf index in the tree.
    pub index: u32,
    /// Stake D, paid to whoever reveals the secret.
    pub double_spend_stake: u128,
    /// Stake S, burned on a policy violation.
    pub policy_stake: u128,
    /// Whether S was burned.
    pub policy_burned: bool,
    /// Ed25519 key (hex) that signs withdrawals.
    pub owner_key: String,
    /// Where it stands.
    pub state: DepositState,
    /// Unix seconds.
    pub deposited_at: u64,
}

/// A deposit request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DepositRequest {
    /// `Poseidon(k)`.
    pub id_commitment: Scalar,
    /// Tickets per credit period.
    pub limit: u32,
    /// Stake D.
    pub double_spend_stake: u128,
    /// Stake S.
    pub policy_stake: u128,
    /// Ed25519 key (hex) that will sign the withdrawal.
    pub owner_key: String,
}

/// One line of the public burn log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burn {
    /// The deposit.
    pub id_commitment: Scalar,
    /// Evidence hash.
    pub evidence_hash: String,
    /// Amount burned.
    pub amount: u128,
    /// Unix seconds.
    pub at: u64,
}

/// What kind of refusal a rule gave (the ledger answers each with its own
/// HTTP status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request is malformed or breaks a rule.
    Invalid,
    /// A signature is missing or wrong.
    Forbidden,
    /// The deposit's state does not allow it.
    Conflict,
    /// The tree has no free leaf.
    Full,
}

/// A refused ledger request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LedgerRefusal {
    /// Its kind.
    pub kind: RefusalKind,
    /// What the requester is told.
    pub message: String,
}

fn refuse(kind: RefusalKind, message: impl std::fmt::Display) -> LedgerRefusal {
    LedgerRefusal {
        kind,
        message: message.to_string(),
    }
}

/// What deposits must stake, and how long a withdrawal waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StakeRules {
    /// Stake D per ticket of the limit.
    pub stake_per_ticket: u128,
    /// Least stake S.
    pub min_policy_stake: u128,
    /// Seconds between a withdrawal and its claim.
    pub withdraw_delay_s: u64,
}

/// Checks that `signature_hex` is the Ed25519 signature of `key_hex` over
/// `message`.
pub fn check_signature(
    key_hex: &str,
    message: &[u8],
    signature_hex: &str,
) -> Result<(), LedgerRefusal> {
    let forbidden = |why: &str| refuse(RefusalKind::Forbidden, why);
    let key: [u8; 32] = hex::decode(key_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| forbidden("the key is not 32 bytes of hex"))?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| forbidden("the key is not a point"))?;
    let signature: [u8; 64] = hex::decode(signature_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| forbidden("the signature is not 64 bytes of hex"))?;
    key.verify(message, &Signature::from_bytes(&signature))
        .map_err(|_| forbidden("the signature does not verify"))
}

/// The deposit a request opens at leaf `index` (the next free one), or why
/// not. `exists` says whether the identity deposited already.
pub fn open_deposit(
    rules: &StakeRules,
    request: &DepositRequest,
    exists: bool,
    index: u64,
    now_s: u64,
) -> Result<Deposit, LedgerRefusal> {
    use RefusalKind::*;
    if request.limit == 0 {
        return Err(refuse(Invalid, "the limit must be positive"));
    }
    let want = u128::from(request.limit).saturating_mul(rules.stake_per_ticket);
    if request.double_spend_stake < want {
        return Err(refuse(
            Invalid,
            format!(
                "a limit of {} needs a double-spend stake of at least {want}",
                request.limit
            ),
        ));
    }
    if request.policy_stake < rules.min_policy_stake {
        return Err(refuse(
            Invalid,
            format!(
                "the policy stake must be at least {}",
                rules.min_policy_stake
            ),
        ));
    }
    rate_commitment(&request.id_commitment, request.limit).map_err(|e| refuse(Invalid, e))?;
    let owner: Option<[u8; 32]> = hex::decode(&request.owner_key)
        .ok()
        .and_then(|k| k.try_into().ok());
    if owner.is_none_or(|k| VerifyingKey::from_bytes(&k).is_err()) {
        return Err(refuse(
            Invalid,
            "owner_key must be an Ed25519 public key (32 bytes of hex)",
        ));
    }
    if exists {
        return Err(refuse(Conflict, "this identity already deposited"));
    }
    if index >= 1 << TREE_DEPTH {
        return Err(refuse(Full, "the tree is full"));
    }
    Ok(Deposit {
        id_commitment: request.id_commitment,
        limit: request.limit,
        index: index as u32,
        double_spend_stake: request.double_spend_stake,
        policy_stake: request.policy_stake,
        policy_burned: false,
        owner_key: request.owner_key.clone(),
        state: DepositState::Active,
        deposited_at: now_s,
    })
}

/// Slashes `deposit`, whose secret a double spend revealed: its stake D
/// goes to `claimant`. Returns the slashed deposit and what it pays.
pub fn slash(deposit: &Deposit, claimant: &str) -> Result<(Deposit, u128), LedgerRefusal> {
    match deposit.state {
        DepositState::Slashed { .. } => {
            return Err(refuse(RefusalKind::Conflict, "already slashed"))
        }
        DepositState::Withdrawn => return Err(refuse(RefusalKind::Conflict, "already withdrawn")),
        _ => {}
    }
    if claimant.is_empty() {
        return Err(refuse(RefusalKind::Invalid, "name a claimant"));
    }
    let slashed = Deposit {
        state: DepositState::Slashed {
            claimant: claimant.to_string(),
        },
        ..deposit.clone()
    };
    Ok((slashed, deposit.double_spend_stake))
}

/// Burns `deposit`'s policy stake S for the evidence `evidence_hash` (the
/// policy key's signature already checked). Returns the deposit and the
/// burn's public record.
pub fn burn(
    deposit: &Deposit,
    evidence_hash: &str,
    now_s: u64,
) -> Result<(Deposit, Burn), LedgerRefusal> {
    if evidence_hash.is_empty() {
        return Err(refuse(RefusalKind::Invalid, "an evidence hash is required"));
    }
    if deposit.policy_burned {
        return Err(refuse(
            RefusalKind::Conflict,
            "the policy stake is already burned",
        ));
    }
    if deposit.state == DepositState::Withdrawn {
        return Err(refuse(RefusalKind::Conflict, "already withdrawn"));
    }
    let record = Burn {
        id_commitment: deposit.id_commitment,
        evidence_hash: evidence_hash.to_string(),
        amount: deposit.policy_stake,
        at: now_s,
    };
    let burned = Deposit {
        policy_burned: true,
        ..deposit.clone()
    };
    Ok((burned, record))
}

/// A withdrawal (`claim` false: the leaf leaves the tree, the stakes wait
/// `withdraw_delay_s`) or its claim (`claim` true: after the delay, the
/// stakes left go to the owner). The owner's signature is already checked.
/// Returns the deposit and the payout (account, amount), if any.
pub fn withdraw(
    rules: &StakeRules,
    deposit: &Deposit,
    claim: bool,
    now_s: u64,
) -> Result<(Deposit, Option<(String, u128)>), LedgerRefusal> {
    match (&deposit.state, claim) {
        (DepositState::Active, false) => {
            let withdrawing = Deposit {
                state: DepositState::Withdrawing {
                    claimable_at: now_s + rules.withdraw_delay_s,
                },
                ..deposit.clone()
            };
            Ok((withdrawing, None))
        }
        (DepositState::Withdrawing { claimable_at }, true) => {
            if now_s < *claimable_at {
                return Err(refuse(
                    RefusalKind::Conflict,
                    format!("the stakes can be claimed in {} s", claimable_at - now_s),
                ));
            }
            let account = format!("owner:{}", deposit.owner_key);
            let amount = deposit.double_spend_stake
                + if deposit.policy_burned {
                    0
                } else {
                    deposit.policy_stake
                };
            let withdrawn = Deposit {
                state: DepositState::Withdrawn,
                ..deposit.clone()
            };
            Ok((withdrawn, Some((account, amount))))
        }
        (state, _) => Err(refuse(
            RefusalKind::Conflict,
            format!("the deposit is {state:?}"),
        )),
    }
}

/// The roots couriers may take at `now_s`, from the history (root, when it
/// became current), oldest first: the current one, and each older one until
/// `validity_s` after it was replaced, so a removed leaf's tickets die
/// within that time.
pub fn live_roots(history: &[(Scalar, u64)], now_s: u64, validity_s: u64) -> Vec<Scalar> {
    history
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            history
                .get(i + 1)
                .is_none_or(|(_, replaced)| now_s < replaced.saturating_add(validity_s))
        })
        .map(|(_, (root, _))| *root)
        .collect()
}
