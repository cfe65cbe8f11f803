//! The client's credits: its RLN identity, its deposit, and its ticket
//! books, in one redb file. A message id is reserved (committed) before
//! its ticket is proved, and a ticket leaves the book (committed) before
//! it is sent, so no crash can make the client prove or spend one message
//! id twice, which would reveal its secret.
//!
//! With a passphrase ([`Wallet::open_with`]; the command line reads
//! `FUNION_WALLET_PASSPHRASE`) the identity and the owner key are sealed
//! at rest: AES-256-GCM-SIV under a key Argon2id derives from the
//! passphrase and a random salt, so the file alone gives neither away.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey};
use funion_credits::wallet as rules;
use funion_tickets::{Identity, Prover, Scalar, Scope, Ticket, TicketRequest};
use rand_core::{OsRng, RngCore};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use funion_ledger::{DepositRequest, LedgerClient, WithdrawRequest, WITHDRAW_LABEL};

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const NUMBERS: TableDefinition<&str, u64> = TableDefinition::new("numbers");
const BOOK: TableDefinition<u64, &[u8]> = TableDefinition::new("book");

/// One ticket in the book.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    provider: String,
    period: u64,
    ticket: Vec<u8>,
}

/// The wallet's deposit, as recorded when the ledger took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepositInfo {
    /// Leaf index.
    pub index: u32,
    /// Tickets per period.
    pub limit: u32,
}

/// The client's credits file.
pub struct Wallet {
    db: Database,
    /// The key that seals the secrets, for a wallet with a passphrase.
    seal: Option<zeroize::Zeroizing<[u8; 32]>>,
}

/// The environment variable the command line takes the passphrase from.
pub const PASSPHRASE_ENV: &str = "FUNION_WALLET_PASSPHRASE";

/// The secrets a sealed wallet keeps only sealed.
const SECRETS: [&str; 2] = ["identity", "owner"];

/// The key for `passphrase` and `salt` (Argon2id, its default cost).
fn sealing_key(passphrase: &str, salt: &[u8]) -> anyhow::Result<zeroize::Zeroizing<[u8; 32]>> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| anyhow::anyhow!("cannot derive the wallet's key: {e}"))?;
    Ok(key)
}

fn seal(key: &[u8; 32], name: &str, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
    let cipher = aes_gcm_siv::Aes256GcmSiv::new(key.into());
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: plain,
                aad: name.as_bytes(),
            },
        )
        .map_err(|_| anyhow::anyhow!("cannot seal the wallet's {name}"))?;
    Ok([nonce.as_slice(), &sealed].concat())
}

fn unseal(key: &[u8; 32], name: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
    anyhow::ensure!(sealed.len() > 12, "the wallet's {name} is damaged");
    let (nonce, body) = sealed.split_at(12);
    aes_gcm_siv::Aes256GcmSiv::new(key.into())
        .decrypt(
            nonce.into(),
            Payload {
                msg: body,
                aad: name.as_bytes(),
            },
        )
        .map_err(|_| anyhow::anyhow!("wrong passphrase for the wallet (or its {name} is damaged)"))
}

fn next_id_key(provider: &str, period: u64) -> String {
    format!("next_id/{period}/{provider}")
}

impl Wallet {
    /// Opens (or creates) the wallet at `path`, with a fresh identity and
    /// owner key the first time; a wallet sealed with a passphrase is
    /// refused (use [`Wallet::open_with`]).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Wallet::open_with(path, None)
    }

    /// [`Wallet::open_with`], the passphrase from `FUNION_WALLET_PASSPHRASE`
    /// if that is set.
    pub fn open_from_env(path: &Path) -> anyhow::Result<Self> {
        let passphrase = std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty());
        Wallet::open_with(path, passphrase.as_deref())
    }

    /// Opens (or creates) the wallet at `path`. With a passphrase its
    /// secrets are sealed at rest; a sealed wallet opens only with its
    /// passphrase. An unsealed wallet given a passphrase is sealed now,
    /// but pages of the file redb has freed may still hold its old clear
    /// secrets: for a wallet never in the clear, create it with one.
    pub fn open_with(path: &Path, passphrase: Option<&str>) -> anyhow::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let db = Database::create(path)
            .map_err(|e| anyhow::anyhow!("wallet {}: {e}", path.display()))?;
        // Only the owner may read the wallet's secrets, set before any is
        // written.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| anyhow::anyhow!("wallet {}: {e}", path.display()))?;
        }
        let txn = db.begin_write()?;
        {
            let mut keys = txn.open_table(KEYS)?;
            if keys.get("identity")?.is_none() {
                let identity = Identity::generate(&mut OsRng);
                let mut seed = zeroize::Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(seed.as_mut());
                let plain = [
                    (
                        "identity",
                        zeroize::Zeroizing::new(identity.to_bytes().to_vec()),
                    ),
                    ("owner", zeroize::Zeroizing::new(seed.to_vec())),
                ];
                // A new wallet with a passphrase never has its secrets on
                // disk in the clear, not even in a page freed later.
                match passphrase {
                    Some(passphrase) => {
                        let mut salt = [0u8; 16];
                        OsRng.fill_bytes(&mut salt);
                        let key = sealing_key(passphrase, &salt)?;
                        for (name, value) in &plain {
                            keys.insert(*name, seal(&key, name, value)?.as_slice())?;
                        }
                        keys.insert("salt", salt.as_slice())?;
                    }
                    None => {
                        for (name, value) in &plain {
                            keys.insert(*name, value.as_slice())?;
                        }
                    }
                }
            }
            txn.open_table(NUMBERS)?;
            txn.open_table(BOOK)?;
        }
        txn.commit()?;
        let mut wallet = Wallet { db, seal: None };
        wallet.unlock(passphrase)?;
        Ok(wallet)
    }

    /// Derives the sealing key and checks it (sealing an unsealed wallet
    /// first when a passphrase is given).
    fn unlock(&mut self, passphrase: Option<&str>) -> anyhow::Result<()> {
        let salt = {
            let read = self.db.begin_read()?;
            let table = read.open_table(KEYS)?;
            let salt = table.get("salt")?.map(|v| v.value().to_vec());
            salt
        };
        match (salt, passphrase) {
            (None, None) => Ok(()),
            (Some(_), None) => {
                anyhow::bail!("the wallet is sealed with a passphrase: set {PASSPHRASE_ENV}")
            }
            (Some(salt), Some(passphrase)) => {
                let key = sealing_key(passphrase, &salt)?;
                self.seal = Some(key);
                // Wrong passphrases fail here, not at the first payment.
                self.key("identity").map(drop)
            }
            (None, Some(passphrase)) => {
                let mut salt = [0u8; 16];
                OsRng.fill_bytes(&mut salt);
                let key = sealing_key(passphrase, &salt)?;
                let txn = self.db.begin_write()?;
                {
                    let mut keys = txn.open_table(KEYS)?;
                    for name in SECRETS {
                        let plain = keys
                            .get(name)?
                            .map(|v| zeroize::Zeroizing::new(v.value().to_vec()))
                            .ok_or_else(|| anyhow::anyhow!("the wallet has no {name}"))?;
                        let sealed = seal(&key, name, &plain)?;
                        keys.insert(name, sealed.as_slice())?;
                    }
                    keys.insert("salt", salt.as_slice())?;
                }
                txn.commit()?;
                self.seal = Some(key);
                Ok(())
            }
        }
    }

    fn key(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let read = self.db.begin_read()?;
        let table = read.open_table(KEYS)?;
        let value = table
            .get(name)?
            .ok_or_else(|| anyhow::anyhow!("the wallet has no {name}"))?;
        match &self.seal {
            Some(key) if SECRETS.contains(&name) => unseal(key, name, value.value()),
            _ => Ok(value.value().to_vec()),
        }
    }

    fn number(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let read = self.db.begin_read()?;
        let table = read.open_table(NUMBERS)?;
        let value = table.get(name)?.map(|v| v.value());
        Ok(value)
    }

    /// The RLN identity.
    pub fn identity(&self) -> anyhow::Result<Identity> {
        Ok(Identity::from_bytes(&self.key("identity")?)?)
    }

    /// The key that signs this deposit's withdrawal.
    pub fn owner_key(&self) -> anyhow::Result<SigningKey> {
        let seed: [u8; 32] = self
            .key("owner")?
            .try_into()
            .map_err(|_| anyhow::anyhow!("the wallet's owner key is damaged"))?;
        Ok(SigningKey::from_bytes(&seed))
    }

    /// The deposit, once the ledger took it.
    pub fn deposit_info(&self) -> anyhow::Result<Option<DepositInfo>> {
        match (self.number("index")?, self.number("limit")?) {
            (Some(index), Some(limit)) => Ok(Some(DepositInfo {
                index: index as u32,
                limit: limit as u32,
            })),
            _ => Ok(None),
        }
    }

    /// Deposits stakes D and S for `limit` tickets per period at `ledger`.
    pub async fn deposit(
        &self,
        ledger: &LedgerClient,
        limit: u32,
        double_spend_stake: u128,
        policy_stake: u128,
    ) -> anyhow::Result<DepositInfo> {
        if let Some(info) = self.deposit_info()? {
            anyhow::bail!("this wallet already deposited (leaf {})", info.index);
        }
        let answer = ledger
            .deposit(&DepositRequest {
                id_commitment: self.identity()?.commitment(),
                limit,
                double_spend_stake,
                policy_stake,
                owner_key: hex::encode(self.owner_key()?.verifying_key().to_bytes()),
            })
            .await?;
        let txn = self.db.begin_write()?;
        {
            let mut numbers = txn.open_table(NUMBERS)?;
            numbers.insert("index", u64::from(answer.index))?;
            numbers.insert("limit", u64::from(limit))?;
        }
        txn.commit()?;
        Ok(DepositInfo {
            index: answer.index,
            limit,
        })
    }

    /// Pays a deposit for `limit` tickets per period to the registry
    /// (D = limit × the contract's stake per ticket, plus `policy_stake`
    /// wei), then waits until `ledger` has indexed it. A deposit whose
    /// receipt was never seen (a crash, a lost connection) is found on the
    /// chain by its commitment and recorded instead of paid twice.
    pub async fn deposit_on_chain(
        &self,
        registry: &funion_chain::Registry,
        ledger: &LedgerClient,
        limit: u32,
        policy_stake: funion_chain::U256,
    ) -> anyhow::Result<DepositInfo> {
        if let Some(info) = self.deposit_info()? {
            anyhow::bail!("this wallet already deposited (leaf {})", info.index);
        }
        let id = self.identity()?.commitment();
        let stake = match registry.deposit_of(&id).await? {
            Some(stake) => {
                tracing::info!(
                    index = stake.index,
                    "wallet: found this identity's deposit on the chain"
                );
                stake
            }
            None => {
                registry.deposit(&id, limit, policy_stake).await?;
                registry.deposit_of(&id).await?.ok_or_else(|| {
                    anyhow::anyhow!("the deposit was mined but is not in the registry")
                })?
            }
        };
        // The ledger indexes it once it has its confirmations.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            match ledger.status(&id).await {
                Ok(d) if d.index == stake.index => break,
                Ok(d) => anyhow::bail!(
                    "the ledger has this identity at leaf {}, the chain at {}",
                    d.index,
                    stake.index
                ),
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await
                }
                Err(e) => anyhow::bail!("the ledger did not index the deposit within 120 s: {e:#}"),
            }
        }
        let txn = self.db.begin_write()?;
        {
            let mut numbers = txn.open_table(NUMBERS)?;
            numbers.insert("index", u64::from(stake.index))?;
            numbers.insert("limit", u64::from(stake.limit))?;
        }
        txn.commit()?;
        Ok(DepositInfo {
            index: stake.index,
            limit: stake.limit,
        })
    }

    /// A signed withdrawal request (or claim) for this wallet's deposit.
    pub fn withdraw_request(&self) -> anyhow::Result<WithdrawRequest> {
        let id = self.identity()?.commitment();
        let signature = self
            .owner_key()?
            .sign(&[WITHDRAW_LABEL, &id.0].concat())
            .to_bytes();
        Ok(WithdrawRequest {
            id_commitment: id,
            signature: hex::encode(signature),
        })
    }

    /// Reserves `count` message ids of `period` at `provider`, durably,
    /// before anything is proved with them.
    pub fn reserve(&self, provider: &str, period: u64, count: u32) -> anyhow::Result<Range<u32>> {
        let info = self
            .deposit_info()?
            .ok_or_else(|| anyhow::anyhow!("no deposit yet: run `funion credits deposit`"))?;
        let key = next_id_key(provider, period);
        let txn = self.db.begin_write()?;
        let range = {
            let mut numbers = txn.open_table(NUMBERS)?;
            let next = numbers.get(key.as_str())?.map_or(0, |v| v.value()) as u32;
            let range = rules::reserve(next, count, info.limit)
                .map_err(|e| anyhow::anyhow!("{e} at {provider}"))?;
            numbers.insert(key.as_str(), u64::from(range.end))?;
            range
        };
        txn.commit()?;
        Ok(range)
    }

    /// Puts proved tickets in the book.
    pub fn add(&self, provider: &str, tickets: &[Ticket]) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut book = txn.open_table(BOOK)?;
            let first = book.last()?.map_or(0, |(k, _)| k.value() + 1);
            for (seq, ticket) in (first..).zip(tickets) {
                let entry = Entry {
                    provider: provider.to_string(),
                    period: ticket.period,
                    ticket: ticket.encode(),
                };
                book.insert(seq, serde_json::to_vec(&entry)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Takes `count` tickets for `provider` of one of `periods` out of the
    /// book, durably, and hands them over: whatever happens next, they are
    /// never handed over again.
    pub fn take(
        &self,
        provider: &str,
        periods: &[u64],
        count: usize,
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        let txn = self.db.begin_write()?;
        let taken = {
            let mut book = txn.open_table(BOOK)?;
            let chosen = select(&book, count, |entry| {
                rules::spendable(&entry.provider, entry.period, provider, periods)
            })?;
            if chosen.len() < count {
                anyhow::bail!(
                    "the ticket book holds {} usable tickets for {provider}, the job needs {count}: \
                     run `funion credits tickets`",
                    chosen.len()
                );
            }
            for (k, _) in &chosen {
                book.remove(*k)?;
            }
            chosen.into_iter().map(|(_, t)| t).collect()
        };
        txn.commit()?;
        Ok(taken)
    }

    /// Removes from the book the tickets for `provider` that no courier
    /// takes any more: proved for a period before `oldest_period`, or
    /// against a root not in `live_roots` (the ledger's recent roots), or
    /// unreadable. Their message ids stay used, so no new ticket ever
    /// shares a nullifier with one of them. Returns how many went.
    pub fn drop_stale(
        &self,
        provider: &str,
        oldest_period: u64,
        live_roots: &[Scalar],
    ) -> anyhow::Result<usize> {
        let txn = self.db.begin_write()?;
        let dropped = {
            let mut book = txn.open_table(BOOK)?;
            let stale = select(&book, usize::MAX, |entry| {
                rules::stale(
                    &entry.provider,
                    entry.period,
                    &entry.ticket,
                    provider,
                    oldest_period,
                    live_roots,
                )
            })?;
            for (k, _) in &stale {
                book.remove(*k)?;
            }
            stale.len()
        };
        txn.commit()?;
        Ok(dropped)
    }

    /// Tickets in the book: (provider, period, count).
    pub fn book(&self) -> anyhow::Result<Vec<(String, u64, usize)>> {
        let read = self.db.begin_read()?;
        let table = read.open_table(BOOK)?;
        let mut counts: std::collections::BTreeMap<(String, u64), usize> = Default::default();
        for row in table.iter()? {
            let (_, v) = row?;
            let entry: Entry = serde_json::from_slice(v.value())?;
            *counts.entry((entry.provider, entry.period)).or_default() += 1;
        }
        Ok(counts.into_iter().map(|((p, n), c)| (p, n, c)).collect())
    }
}

/// The first `most` entries of the book that `pick` chooses, in book
/// order: (key, ticket bytes).
fn select(
    book: &impl ReadableTable<u64, &'static [u8]>,
    most: usize,
    mut pick: impl FnMut(&Entry) -> bool,
) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
    let mut chosen = Vec::new();
    for row in book.iter()? {
        if chosen.len() == most {
            break;
        }
        let (k, v) = row?;
        let entry: Entry = serde_json::from_slice(v.value())?;
        if pick(&entry) {
            chosen.push((k.value(), entry.ticket));
        }
    }
    Ok(chosen)
}

/// Proves `count` tickets for `scope` into `wallet`'s book: one partial
/// proof for the deposit's current path, then the tickets finished on
/// `threads` threads; `progress` counts finished tickets. Each ticket is in
/// the book as soon as it is proved.
fn prove_book(
    wallet: &Wallet,
    path: &funion_tickets::MerklePath,
    scope: &Scope,
    count: u32,
    threads: usize,
    progress: &AtomicU64,
) -> anyhow::Result<Vec<Ticket>> {
    let info = wallet
        .deposit_info()?
        .ok_or_else(|| anyhow::anyhow!("no deposit yet: run `funion credits deposit`"))?;
    let identity = wallet.identity()?;
    let ids = wallet.reserve(&scope.provider, scope.period, count)?;
    let prover = Prover::default();
    let partial = prover.partial(&identity, info.limit, path)?;
    let ids: Vec<u32> = ids.collect();
    let threads = threads.clamp(1, ids.len().max(1));
    let chunks: Vec<&[u32]> = ids.chunks(ids.len().div_ceil(threads).max(1)).collect();
    let results: Vec<anyhow::Result<Vec<Ticket>>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let (identity, partial, prover) = (&identity, &partial, &prover);
                s.spawn(move || {
                    let mut out = Vec::with_capacity(chunk.len());
                    for &message_id in *chunk {
                        let mut nonce = [0u8; 32];
                        OsRng.fill_bytes(&mut nonce);
                        let ticket = prover.finish(
                            partial,
                            &TicketRequest {
                                identity,
                                limit: info.limit,
                                path,
                                scope,
                                message_id,
                                nonce,
                            },
                        )?;
                        wallet.add(&scope.provider, std::slice::from_ref(&ticket))?;
                        progress.fetch_add(1, Ordering::Relaxed);
                        out.push(ticket);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a prover thread panicked")))
            })
            .collect()
    });
    let mut tickets = Vec::with_capacity(ids.len());
    for r in results {
        tickets.extend(r?);
    }
    Ok(tickets)
}

/// Asks the ledger which roots couriers take now and drops the book's
/// tickets for the document's provider that they would refuse (see
/// [`Wallet::drop_stale`]). Returns how many went.
pub async fn drop_stale_tickets(
    wallet: &Wallet,
    credits: &funion_pki::Credits,
) -> anyhow::Result<usize> {
    let roots = LedgerClient::new(&credits.ledger_url)?.roots().await?;
    let [_, oldest] = rules::spendable_periods(credits, funion_net::unix_ms() / 1000);
    wallet.drop_stale(&credits.provider, oldest, &roots)
}

/// Proves `count` more tickets for the current credit period at the
/// document's provider: fetches the deposit's path from the ledger, then
/// proves off the async runtime. `progress` counts finished tickets.
pub async fn top_up(
    wallet: Arc<Wallet>,
    credits: &funion_pki::Credits,
    count: u32,
    threads: usize,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<usize> {
    let info = wallet
        .deposit_info()?
        .ok_or_else(|| anyhow::anyhow!("no deposit yet: run `funion credits deposit`"))?;
    let ledger = LedgerClient::new(&credits.ledger_url)?;
    let answer = ledger.path(info.index).await?;
    let scope = Scope {
        period: credits.period_at(funion_net::unix_ms() / 1000),
        provider: credits.provider.clone(),
    };
    let tickets = tokio::task::spawn_blocking(move || {
        prove_book(&wallet, &answer.path, &scope, count, threads, &progress)
    })
    .await??;
    Ok(tickets.len())
}

#[cfg(test)]
mod sealed_tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("funion-wallet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("wallet.redb")
    }

    fn holds(path: &Path, secret: &[u8]) -> bool {
        let bytes = std::fs::read(path).unwrap();
        bytes.windows(secret.len()).any(|w| w == secret)
    }

    #[test]
    fn a_wallet_with_a_passphrase_keeps_its_secrets_sealed_on_disk() {
        // The control: a wallet without one holds its identity in the clear.
        let clear = scratch("clear");
        let clear_identity = Wallet::open(&clear).unwrap().identity().unwrap().to_bytes();
        assert!(
            holds(&clear, &clear_identity),
            "the control must find the secret"
        );

        let path = scratch("sealed");
        let wallet = Wallet::open_with(&path, Some("correct horse")).unwrap();
        let identity = wallet.identity().unwrap().to_bytes();
        let owner = wallet.owner_key().unwrap().to_bytes();
        drop(wallet);
        assert!(
            !holds(&path, &identity),
            "the identity is on disk in the clear"
        );
        assert!(
            !holds(&path, &owner),
            "the owner key is on disk in the clear"
        );

        // Its passphrase opens it to the same secrets; another, or none,
        // is refused with the reason.
        let again = Wallet::open_with(&path, Some("correct horse")).unwrap();
        assert_eq!(again.identity().unwrap().to_bytes(), identity);
        assert_eq!(again.owner_key().unwrap().to_bytes(), owner);
        drop(again);
        let wrong = Wallet::open_with(&path, Some("battery staple"))
            .err()
            .unwrap();
        assert!(wrong.to_string().contains("wrong passphrase"), "{wrong:#}");
        let none = Wallet::open(&path).err().unwrap();
        assert!(none.to_string().contains(PASSPHRASE_ENV), "{none:#}");

        // A clear wallet given a passphrase is sealed and keeps its keys.
        drop(Wallet::open_with(&clear, Some("later")).unwrap());
        assert!(Wallet::open(&clear).is_err(), "sealed now");
        let sealed_later = Wallet::open_with(&clear, Some("later")).unwrap();
        assert_eq!(sealed_later.identity().unwrap().to_bytes(), clear_identity);
        for path in [&clear, &path] {
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }
}
