//! The ledger as the registry's indexer: it applies the contract's events,
//! once confirmed, to the same store and tree the HTTP API serves, checks
//! every root against the contract's, and sends slashes to the chain.

use std::time::Duration;

use axum::http::StatusCode;
use funion_chain::registry::CreditRegistryEvents;
use funion_chain::{to_scalar, Address, Registry, RegistryEvent, U256};
use funion_credits::ledger::{self as rules, Burn, Deposit, DepositState};
use funion_tickets::{commitment_of_secret, rate_commitment, Scalar};

use crate::{bad, lock, ok, Answer, ChainSettings, Inner, Shared, Slashed, CHAIN_CURSOR};

/// Blocks read in one `eth_getLogs`.
const BLOCKS_PER_READ: u64 = 1_000;
/// The next block to read.
const CHAIN_NEXT_BLOCK: &str = "chain_next_block";

/// The registry this ledger indexes and slashes at.
#[derive(Clone)]
pub(crate) struct Chain {
    registry: Registry,
    settings: ChainSettings,
    /// Wakes the slasher when a secret is queued.
    wake: std::sync::Arc<tokio::sync::Notify>,
}

fn anyhow_of((status, message): Answer) -> anyhow::Error {
    anyhow::anyhow!("{message} ({status})")
}

impl Chain {
    /// Reads the slasher key and names the registry.
    pub(crate) fn open(settings: &ChainSettings) -> anyhow::Result<Self> {
        let key = funion_chain::keys::load(&settings.slasher_key)?;
        let address: Address = settings
            .registry
            .parse()
            .map_err(|e| anyhow::anyhow!("registry address {}: {e}", settings.registry))?;
        Ok(Chain {
            registry: Registry::new(&settings.rpc_url, address, key)?,
            settings: settings.clone(),
            wake: Default::default(),
        })
    }

    /// The registry's address.
    pub(crate) fn registry_address(&self) -> Address {
        self.registry.address()
    }

    /// Takes a double spender's secret: checks it names a deposit that can
    /// still be slashed, queues it durably and wakes the slasher. The
    /// answer (202) comes after the queue is on disk; the stake reaches the
    /// slasher key once the reveal is mined.
    pub(crate) async fn slash(&self, state: &Shared, secret: &Scalar) -> Answer {
        let id = match commitment_of_secret(&secret.0) {
            Ok(id) => id,
            Err(e) => return bad(StatusCode::BAD_REQUEST, e),
        };
        // The queue is a redb commit: on a blocking thread.
        let (shared, secret) = (state.clone(), *secret);
        let queued = tokio::task::spawn_blocking(move || {
            let inner = lock(&shared);
            let deposit = inner.known(&id)?;
            rules::slash(&deposit, "chain").map_err(|e| bad(StatusCode::CONFLICT, e.message))?;
            inner.queue_slash(&id, &secret)?;
            Ok::<_, Answer>(deposit)
        })
        .await;
        let deposit = match queued {
            Ok(Ok(deposit)) => deposit,
            Ok(Err(answer)) => return answer,
            Err(e) => {
                return bad(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the ledger's store thread failed: {e}"),
                )
            }
        };
        self.wake.notify_one();
        let (_, body) = ok(&Slashed {
            id_commitment: id,
            paid: deposit.double_spend_stake,
        });
        (StatusCode::ACCEPTED, body)
    }

    /// Reveals one queued secret; Ok once nothing is left to do for it.
    async fn reveal(&self, id: &Scalar, secret: &Scalar) -> anyhow::Result<()> {
        match self.registry.deposit_of(id).await? {
            // Closed (withdrawn) or already slashed: beyond this key's reach.
            Some(d) if d.slashed || d.state == 3 => return Ok(()),
            Some(_) => {}
            None => return Ok(()),
        }
        match self.registry.slash(secret).await {
            Ok((_, reveal)) => {
                tracing::warn!(
                    revealer = %self.registry.sender(),
                    transaction = %reveal.transaction_hash,
                    "ledger: slashed a double spender on the chain"
                );
                Ok(())
            }
            Err(e) if format!("{e:#}").contains("already slashed") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Carries out the queued slashes, one at a time from the slasher key,
/// until the ledger stops; a failed one is tried again a little later.
pub(crate) async fn slasher(chain: Chain, state: Shared) {
    let retry = Duration::from_millis(chain.settings.poll_ms.max(10) * 4);
    loop {
        let pending = lock(&state).pending_slashes();
        let mut failed = false;
        match pending {
            Ok(pending) => {
                for (id, secret) in pending {
                    match chain.reveal(&id, &secret).await {
                        Ok(()) => {
                            let shared = state.clone();
                            let done =
                                tokio::task::spawn_blocking(move || lock(&shared).slash_done(&id))
                                    .await;
                            let error = match done {
                                Ok(Ok(())) => None,
                                Ok(Err((_, e))) => Some(e),
                                Err(e) => Some(e.to_string()),
                            };
                            if let Some(e) = error {
                                tracing::error!("ledger: recording a slash: {e}");
                                failed = true;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("ledger: slashing on the chain: {e:#}; will retry");
                            failed = true;
                        }
                    }
                }
            }
            Err((_, e)) => {
                tracing::error!("ledger: reading the slash queue: {e}");
                failed = true;
            }
        }
        if failed {
            let _ = tokio::time::timeout(retry, chain.wake.notified()).await;
        } else {
            chain.wake.notified().await;
        }
    }
}

/// Follows the chain until the ledger stops. A node that cannot be reached
/// is retried; a root that differs from the contract's stops the ledger
/// (its tree would serve paths nobody can prove against).
pub(crate) async fn run(chain: Chain, state: Shared) -> anyhow::Result<()> {
    let poll = Duration::from_millis(chain.settings.poll_ms.max(10));
    check_registry(&chain, poll).await?;
    loop {
        match step(&chain, &state).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(Step::Chain(e)) => tracing::warn!("ledger: reading the chain: {e:#}"),
            Err(Step::Fatal(e)) => {
                tracing::error!("ledger: {e:#}");
                return Err(e);
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// Waits for the chain node to answer, then refuses an address that holds
/// no contract or one that does not answer as a credit registry.
async fn check_registry(chain: &Chain, poll: Duration) -> anyhow::Result<()> {
    let address = chain.registry.address();
    loop {
        match chain.registry.has_code().await {
            Ok(true) => break,
            Ok(false) => anyhow::bail!(
                "no contract at the registry address {address} on {}",
                chain.settings.rpc_url
            ),
            Err(e) => tracing::warn!("ledger: reaching the chain: {e:#}"),
        }
        tokio::time::sleep(poll).await;
    }
    chain
        .registry
        .stakes()
        .await
        .map_err(|e| anyhow::anyhow!("{address} does not answer as a credit registry: {e:#}"))?;
    Ok(())
}

enum Step {
    /// The node did not answer: try again.
    Chain(anyhow::Error),
    /// The events disagree with this ledger's tree or store.
    Fatal(anyhow::Error),
}

/// Reads and applies one stretch of confirmed blocks; true if more are
/// waiting.
async fn step(chain: &Chain, state: &Shared) -> Result<bool, Step> {
    let head = chain.registry.head().await.map_err(Step::Chain)?;
    let safe = head.saturating_sub(chain.settings.confirmations);
    let (from, cursor) = {
        let inner = lock(state);
        let from = inner
            .meta(CHAIN_NEXT_BLOCK)
            .map_err(|e| Step::Fatal(anyhow_of(e)))?
            .unwrap_or(chain.settings.from_block);
        let cursor = inner
            .meta(CHAIN_CURSOR)
            .map_err(|e| Step::Fatal(anyhow_of(e)))?;
        (from, cursor)
    };
    if safe < from {
        return Ok(false);
    }
    let to = safe.min(from + BLOCKS_PER_READ - 1);
    let events = chain.registry.events(from, to).await.map_err(Step::Chain)?;
    // Applying them commits to redb: on a blocking thread.
    let shared = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut inner = lock(&shared);
        for event in &events {
            let key = (event.block << 20) | event.log_index;
            if cursor.is_some_and(|c| key <= c) {
                continue;
            }
            apply(&mut inner, event, key)?;
        }
        inner.set_meta(CHAIN_NEXT_BLOCK, to + 1).map_err(anyhow_of)
    })
    .await
    .map_err(|e| Step::Fatal(anyhow::anyhow!("the ledger's store thread failed: {e}")))?
    .map_err(Step::Fatal)?;
    Ok(to < safe)
}

fn scalar(value: U256, what: &str) -> anyhow::Result<Scalar> {
    to_scalar(value).ok_or_else(|| anyhow::anyhow!("the registry sent a {what} outside the field"))
}

fn amount(value: U256) -> anyhow::Result<u128> {
    u128::try_from(value).map_err(|_| anyhow::anyhow!("an amount above 2^128 wei"))
}

/// Applies one event, writing `key` as the cursor in the same transaction.
fn apply(inner: &mut Inner, event: &RegistryEvent, key: u64) -> anyhow::Result<()> {
    let at = event.block_time;
    let known = |inner: &Inner, id: U256| -> anyhow::Result<Deposit> {
        inner.known(&scalar(id, "commitment")?).map_err(anyhow_of)
    };
    let commit = |inner: &mut Inner,
                  deposit: &Deposit,
                  payout: Option<(&str, u128)>,
                  burn: Option<&Burn>,
                  next: Option<u64>| {
        inner
            .commit_at(deposit, payout, burn, next, Some(key), at)
            .map_err(anyhow_of)
    };
    match &event.event {
        CreditRegistryEvents::Deposited(d) => {
            let id = scalar(d.idCommitment, "commitment")?;
            let leaf = rate_commitment(&id, d.limit)?;
            anyhow::ensure!(
                Some(leaf) == to_scalar(d.rateCommitment),
                "block {}: the registry's rate commitment for leaf {} is not Poseidon(id, limit)",
                event.block,
                d.index
            );
            let deposit = Deposit {
                id_commitment: id,
                limit: d.limit,
                index: d.index,
                double_spend_stake: amount(d.doubleSpendStake)?,
                policy_stake: amount(d.policyStake)?,
                policy_burned: false,
                owner_key: format!("{:#x}", d.owner),
                state: DepositState::Active,
                deposited_at: at,
            };
            tracing::info!(
                index = d.index,
                limit = d.limit,
                "ledger: deposit on the chain"
            );
            commit(inner, &deposit, None, None, Some(u64::from(d.index) + 1))
        }
        CreditRegistryEvents::RootChanged(r) => {
            let root = scalar(r.root, "root")?;
            anyhow::ensure!(
                inner.tree.root() == root,
                "block {}: the registry's root {} is not this ledger's {}",
                event.block,
                root.to_hex(),
                inner.tree.root().to_hex()
            );
            inner.set_meta(CHAIN_CURSOR, key).map_err(anyhow_of)
        }
        CreditRegistryEvents::SlashCommitted(_) => {
            inner.set_meta(CHAIN_CURSOR, key).map_err(anyhow_of)
        }
        CreditRegistryEvents::Slashed(s) => {
            let claimant = format!("{:#x}", s.revealer);
            let deposit = Deposit {
                state: DepositState::Slashed {
                    claimant: claimant.clone(),
                },
                ..known(inner, s.idCommitment)?
            };
            commit(
                inner,
                &deposit,
                Some((&claimant, amount(s.paid)?)),
                None,
                None,
            )
        }
        CreditRegistryEvents::PolicyBurned(b) => {
            let deposit = Deposit {
                policy_burned: true,
                ..known(inner, b.idCommitment)?
            };
            let burn = Burn {
                id_commitment: deposit.id_commitment,
                evidence_hash: hex::encode(b.evidenceHash),
                amount: amount(b.amount)?,
                at,
            };
            commit(inner, &deposit, None, Some(&burn), None)
        }
        CreditRegistryEvents::WithdrawRequested(w) => {
            let mut deposit = known(inner, w.idCommitment)?;
            // A slashed deposit stays marked slashed while it withdraws.
            if deposit.state == DepositState::Active {
                deposit.state = DepositState::Withdrawing {
                    claimable_at: w.claimableAt,
                };
            }
            commit(inner, &deposit, None, None, None)
        }
        CreditRegistryEvents::Withdrawn(w) => {
            let deposit = Deposit {
                state: DepositState::Withdrawn,
                ..known(inner, w.idCommitment)?
            };
            commit(inner, &deposit, None, None, None)
        }
    }
}
