//! The ledger role: deposits and their stakes in an embedded store (redb),
//! the depth-20 tree of rate commitments, a history of recent roots,
//! slashing, policy burns and delayed withdrawals, served over HTTP (JSON).
//!
//! With a `[chain]` section (every devnet and demo) the deposits are paid
//! in ether to the registry contract and this role is its indexer: it reads
//! the registry's events once they have `confirmations` blocks on top,
//! rebuilds the same tree (checking each root against the one the contract
//! computed), serves roots and paths as below, and sends slashes to the
//! chain (commit, then reveal) from its own key: `POST /slash` queues the
//! secret durably and answers 202; a task reveals it and retries until the
//! chain shows the deposit slashed. The POSTs that would
//! change a deposit are refused then: they are transactions now. Without a
//! chain the ledger takes deposits over HTTP for free; it starts that way
//! only when told `unbacked_deposits = true` (tests of the couriers' gate).
//!
//! - `POST /deposit` `{id_commitment, limit, double_spend_stake,
//!   policy_stake, owner_key}`: a new leaf; answers `{index, root}`.
//! - `GET /deposit/{id_commitment}`: the deposit's record.
//! - `GET /path/{index}`: `{root, path}` for proving tickets.
//! - `GET /roots`: the recent roots, newest last (couriers accept these): the
//!   current one and those replaced less than `root_validity_s` ago.
//! - `POST /slash` `{secret, claimant}`: a revealed identity secret; the
//!   double-spend stake goes to `claimant`, the leaf is emptied.
//! - `POST /burn` `{id_commitment, evidence_hash, signature}`: signed by
//!   the policy key; the policy stake is burned (paid to nobody) and the
//!   burn is listed at `GET /burns`.
//! - `POST /withdraw` and `POST /withdraw/claim` `{id_commitment,
//!   signature}`: signed by the deposit's owner key; the leaf leaves the
//!   tree at once, the stakes only after the withdrawal delay (slashing
//!   still works meanwhile).
//! - `GET /balance/{account}`: what slashing paid an account.
//!
//! Every change commits to disk before it is answered; the tree is rebuilt
//! from the store when the ledger starts.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod indexer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use funion_credits::ledger::{self as rules, LedgerRefusal, RefusalKind, StakeRules};
pub use funion_credits::ledger::{
    Burn, Deposit, DepositRequest, DepositState, BURN_LABEL, WITHDRAW_LABEL,
};
use funion_tickets::{commitment_of_secret, rate_commitment, MerklePath, RateTree, Scalar};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

const DEPOSITS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("deposits");
const ROOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("roots");
const BURNS: TableDefinition<u64, &[u8]> = TableDefinition::new("burns");
const BALANCES: TableDefinition<&str, u128> = TableDefinition::new("balances");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Secrets to reveal on the chain, by identity commitment, kept until the
/// chain shows the deposit slashed (or beyond reach).
const PENDING_SLASHES: TableDefinition<&[u8; 32], &[u8; 32]> =
    TableDefinition::new("pending_slashes");
/// The last registry event applied: block × 2^20 + log index.
pub(crate) const CHAIN_CURSOR: &str = "chain_cursor";

/// The ledger's config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerFile {
    /// Address to serve HTTP on.
    pub listen: String,
    /// The store (a redb file; created if missing).
    pub store: PathBuf,
    /// Ed25519 public key (hex) whose signatures may burn policy stakes.
    pub policy_key: String,
    /// Seconds between a withdrawal request and its claim.
    #[serde(default = "default_withdraw_delay_s")]
    pub withdraw_delay_s: u64,
    /// Smallest double-spend stake per ticket of the limit.
    #[serde(default = "default_stake_per_ticket")]
    pub stake_per_ticket: u64,
    /// Smallest policy stake.
    #[serde(default = "default_min_policy_stake")]
    pub min_policy_stake: u64,
    /// Roots a courier may still accept (the newest this many).
    #[serde(default = "default_root_history")]
    pub root_history: usize,
    /// Seconds a replaced root stays acceptable (books proved against it
    /// keep working that long; keep it below the withdrawal delay).
    #[serde(default = "default_root_validity_s")]
    pub root_validity_s: u64,
    /// The registry contract this ledger indexes; deposits are paid on the
    /// chain.
    #[serde(default)]
    pub chain: Option<ChainSettings>,
    /// Take deposits over HTTP with nothing paid (tests only). Refused
    /// together with `chain`.
    #[serde(default)]
    pub unbacked_deposits: bool,
}

/// Where the registry is and how this ledger reads it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSettings {
    /// The chain node's JSON-RPC URL.
    pub rpc_url: String,
    /// The registry's address (`0x…`).
    pub registry: String,
    /// Blocks on top of an event's before it counts.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// The block the registry was deployed in (events before it are not
    /// read).
    #[serde(default)]
    pub from_block: u64,
    /// Milliseconds between looks at the chain.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// The key file (0600) this ledger slashes from: the double-spend
    /// stakes it reveals are paid to its address.
    pub slasher_key: PathBuf,
}

fn default_confirmations() -> u64 {
    1
}
fn default_poll_ms() -> u64 {
    500
}

fn default_withdraw_delay_s() -> u64 {
    7 * 24 * 3600
}
fn default_stake_per_ticket() -> u64 {
    10
}
fn default_min_policy_stake() -> u64 {
    100
}
fn default_root_validity_s() -> u64 {
    3600
}
fn default_root_history() -> usize {
    256
}

/// The answer to a deposit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deposited {
    /// Leaf index.
    pub index: u32,
    /// The root with the new leaf.
    pub root: Scalar,
}

/// A leaf's path and the root it leads to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PathAnswer {
    /// The current root.
    pub root: Scalar,
    /// The leaf's path to it.
    pub path: MerklePath,
}

/// The recent roots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Roots {
    /// Oldest first; the last is current.
    pub roots: Vec<Scalar>,
}

/// A slashing request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlashRequest {
    /// The revealed identity secret (hex of its 32 bytes).
    pub secret: Scalar,
    /// Account paid the double-spend stake.
    pub claimant: String,
}

/// The answer to a slashing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Slashed {
    /// The deposit slashed.
    pub id_commitment: Scalar,
    /// Paid to the claimant; on a chain, what the slasher key will be paid
    /// once the queued reveal is mined (wei).
    pub paid: u128,
}

/// A policy burn request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BurnRequest {
    /// The deposit.
    pub id_commitment: Scalar,
    /// Hash of the evidence (kept by whoever asks; listed publicly).
    pub evidence_hash: String,
    /// Policy key's signature (hex) over [`BURN_LABEL`] ‖ commitment ‖
    /// evidence hash.
    pub signature: String,
}

/// A withdrawal request or claim.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WithdrawRequest {
    /// The deposit.
    pub id_commitment: Scalar,
    /// Owner key's signature (hex) over [`WITHDRAW_LABEL`] ‖ commitment.
    pub signature: String,
}

pub(crate) struct Inner {
    db: Database,
    pub(crate) tree: RateTree,
    config: LedgerFile,
}

pub(crate) type Shared = Arc<Mutex<Inner>>;

pub(crate) type Answer = (StatusCode, String);

pub(crate) fn bad(status: StatusCode, reason: impl std::fmt::Display) -> Answer {
    (status, reason.to_string())
}

pub(crate) fn ok<T: Serialize>(value: &T) -> Answer {
    (
        StatusCode::OK,
        serde_json::to_string(value).expect("serializing to memory cannot fail"),
    )
}

fn internal(e: impl std::fmt::Display) -> Answer {
    bad(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}"))
}

pub(crate) fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse<T: for<'de> Deserialize<'de>>(body: &str) -> Result<T, Answer> {
    serde_json::from_str(body).map_err(|e| bad(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))
}

/// The answer to a refused request: its kind's status and message.
fn refused(e: LedgerRefusal) -> Answer {
    let status = match e.kind {
        RefusalKind::Invalid => StatusCode::BAD_REQUEST,
        RefusalKind::Forbidden => StatusCode::FORBIDDEN,
        RefusalKind::Conflict => StatusCode::CONFLICT,
        RefusalKind::Full => StatusCode::INSUFFICIENT_STORAGE,
    };
    bad(status, e.message)
}

impl Inner {
    fn open(config: LedgerFile) -> anyhow::Result<Self> {
        if let Some(parent) = config.store.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let db = Database::create(&config.store)?;
        let mut tree = RateTree::default();
        let txn = db.begin_write()?;
        {
            txn.open_table(DEPOSITS)?;
            txn.open_table(ROOTS)?;
            txn.open_table(BURNS)?;
            txn.open_table(BALANCES)?;
            txn.open_table(META)?;
            txn.open_table(PENDING_SLASHES)?;
        }
        txn.commit()?;
        let read = db.begin_read()?;
        for row in read.open_table(DEPOSITS)?.iter()? {
            let (_, value) = row?;
            let deposit: Deposit = serde_json::from_slice(value.value())?;
            if deposit.state == DepositState::Active {
                tree.set(
                    deposit.index,
                    &rate_commitment(&deposit.id_commitment, deposit.limit)?,
                )?;
            }
        }
        let mut inner = Inner { db, tree, config };
        // The first root, or the one the store ends with, is current.
        inner.push_root(unix_s())?;
        Ok(inner)
    }

    pub(crate) fn deposit(&self, id: &Scalar) -> Result<Option<Deposit>, Answer> {
        let read = self.db.begin_read().map_err(internal)?;
        let table = read.open_table(DEPOSITS).map_err(internal)?;
        let row = table.get(&id.0).map_err(internal)?;
        row.map(|v| serde_json::from_slice(v.value()).map_err(internal))
            .transpose()
    }

    pub(crate) fn known(&self, id: &Scalar) -> Result<Deposit, Answer> {
        self.deposit(id)?
            .ok_or_else(|| bad(StatusCode::NOT_FOUND, "no such deposit"))
    }

    /// Writes `deposit` and, when `payout` names an account, credits it;
    /// then brings the tree and the root history up to date.
    fn commit(
        &mut self,
        deposit: &Deposit,
        payout: Option<(&str, u128)>,
        burn: Option<&Burn>,
        next_index: Option<u64>,
    ) -> Result<(), Answer> {
        self.commit_at(deposit, payout, burn, next_index, None, unix_s())
    }

    /// [`Inner::commit`] with the chain cursor (the event just applied)
    /// written in the same transaction, and the time the root changed.
    pub(crate) fn commit_at(
        &mut self,
        deposit: &Deposit,
        payout: Option<(&str, u128)>,
        burn: Option<&Burn>,
        next_index: Option<u64>,
        cursor: Option<u64>,
        now_s: u64,
    ) -> Result<(), Answer> {
        let txn = self.db.begin_write().map_err(internal)?;
        {
            let mut deposits = txn.open_table(DEPOSITS).map_err(internal)?;
            let bytes = serde_json::to_vec(deposit).map_err(internal)?;
            deposits
                .insert(&deposit.id_commitment.0, bytes.as_slice())
                .map_err(internal)?;
            if let Some((account, amount)) = payout {
                let mut balances = txn.open_table(BALANCES).map_err(internal)?;
                let before = balances
                    .get(account)
                    .map_err(internal)?
                    .map_or(0, |v| v.value());
                balances
                    .insert(account, before.saturating_add(amount))
                    .map_err(internal)?;
            }
            if let Some(burn) = burn {
                let mut burns = txn.open_table(BURNS).map_err(internal)?;
                let seq = burns
                    .last()
                    .map_err(internal)?
                    .map_or(0, |(k, _)| k.value() + 1);
                let bytes = serde_json::to_vec(burn).map_err(internal)?;
                burns.insert(seq, bytes.as_slice()).map_err(internal)?;
            }
            let mut meta = txn.open_table(META).map_err(internal)?;
            if let Some(next) = next_index {
                meta.insert("next_index", next).map_err(internal)?;
            }
            if let Some(cursor) = cursor {
                meta.insert(CHAIN_CURSOR, cursor).map_err(internal)?;
            }
        }
        txn.commit().map_err(internal)?;
        match deposit.state {
            DepositState::Active => self.tree.set(
                deposit.index,
                &rate_commitment(&deposit.id_commitment, deposit.limit).map_err(internal)?,
            ),
            _ => self.tree.remove(deposit.index),
        }
        .map_err(internal)?;
        self.push_root(now_s).map_err(internal)
    }

    fn push_root(&mut self, now_s: u64) -> anyhow::Result<()> {
        let root = self.tree.root();
        let txn = self.db.begin_write()?;
        {
            let mut roots = txn.open_table(ROOTS)?;
            let last = roots.last()?.map(|(k, v)| (k.value(), v.value().to_vec()));
            if last.as_ref().map(|(_, v)| &v[..32]) != Some(&root.0[..]) {
                let seq = last.map_or(0, |(k, _)| k + 1);
                // The root, then when it became current (Unix s).
                let entry = [&root.0[..], &now_s.to_le_bytes()].concat();
                roots.insert(seq, entry.as_slice())?;
                let keep = self.config.root_history.max(1) as u64;
                if seq >= keep {
                    let old: Vec<u64> = roots
                        .range(..seq + 1 - keep)?
                        .map(|r| r.map(|(k, _)| k.value()))
                        .collect::<Result<_, _>>()?;
                    for k in old {
                        roots.remove(k)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The roots a courier may accept now: the current one, and each older
    /// one until `root_validity_s` after it was replaced, so a slashed or
    /// withdrawn leaf's tickets die within that time.
    fn roots(&self) -> Result<Vec<Scalar>, Answer> {
        let read = self.db.begin_read().map_err(internal)?;
        let table = read.open_table(ROOTS).map_err(internal)?;
        let mut all: Vec<(Scalar, u64)> = Vec::new();
        for row in table.iter().map_err(internal)? {
            let (_, v) = row.map_err(internal)?;
            let v = v.value();
            if v.len() != 40 {
                return Err(internal("a root entry is damaged"));
            }
            let root = Scalar(v[..32].try_into().expect("32 bytes"));
            all.push((
                root,
                u64::from_le_bytes(v[32..].try_into().expect("8 bytes")),
            ));
        }
        Ok(rules::live_roots(
            &all,
            unix_s(),
            self.config.root_validity_s,
        ))
    }

    /// Writes a number into the meta table.
    pub(crate) fn set_meta(&self, key: &str, value: u64) -> Result<(), Answer> {
        let txn = self.db.begin_write().map_err(internal)?;
        txn.open_table(META)
            .map_err(internal)?
            .insert(key, value)
            .map_err(internal)?;
        txn.commit().map_err(internal)
    }

    /// Queues `secret` (of deposit `id`) for a slash on the chain.
    pub(crate) fn queue_slash(&self, id: &Scalar, secret: &Scalar) -> Result<(), Answer> {
        let txn = self.db.begin_write().map_err(internal)?;
        txn.open_table(PENDING_SLASHES)
            .map_err(internal)?
            .insert(&id.0, &secret.0)
            .map_err(internal)?;
        txn.commit().map_err(internal)
    }

    /// The slashes still to be made, as (identity commitment, secret).
    pub(crate) fn pending_slashes(&self) -> Result<Vec<(Scalar, Scalar)>, Answer> {
        let read = self.db.begin_read().map_err(internal)?;
        let table = read.open_table(PENDING_SLASHES).map_err(internal)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(internal)? {
            let (id, secret) = row.map_err(internal)?;
            out.push((Scalar(*id.value()), Scalar(*secret.value())));
        }
        Ok(out)
    }

    /// Drops a slash from the queue: made, or no longer possible.
    pub(crate) fn slash_done(&self, id: &Scalar) -> Result<(), Answer> {
        let txn = self.db.begin_write().map_err(internal)?;
        txn.open_table(PENDING_SLASHES)
            .map_err(internal)?
            .remove(&id.0)
            .map_err(internal)?;
        txn.commit().map_err(internal)
    }

    /// A number in the meta table.
    pub(crate) fn meta(&self, key: &str) -> Result<Option<u64>, Answer> {
        let read = self.db.begin_read().map_err(internal)?;
        let table = read.open_table(META).map_err(internal)?;
        Ok(table.get(key).map_err(internal)?.map(|v| v.value()))
    }

    fn stakes(&self) -> StakeRules {
        StakeRules {
            stake_per_ticket: u128::from(self.config.stake_per_ticket),
            min_policy_stake: u128::from(self.config.min_policy_stake),
            withdraw_delay_s: self.config.withdraw_delay_s,
        }
    }

    fn next_index(&self) -> Result<u64, Answer> {
        let read = self.db.begin_read().map_err(internal)?;
        let table = read.open_table(META).map_err(internal)?;
        let next = table
            .get("next_index")
            .map_err(internal)?
            .map_or(0, |v| v.value());
        Ok(next)
    }
}

/// Opens the store and serves the ledger on an already bound listener
/// until the task is dropped.
pub async fn serve(config: LedgerFile, listener: TcpListener) -> anyhow::Result<()> {
    hex::decode(&config.policy_key)
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| anyhow::anyhow!("policy_key must be 32 bytes of hex"))?;
    let chain = match (&config.chain, config.unbacked_deposits) {
        (Some(_), true) => anyhow::bail!("a ledger with a chain takes no unbacked deposits"),
        (None, false) => anyhow::bail!(
            "the ledger has no [chain]: deposits would be numbers nobody paid \
             (set unbacked_deposits = true for tests only)"
        ),
        (Some(chain), false) => Some(indexer::Chain::open(chain)?),
        (None, true) => None,
    };
    // Opening fsyncs and rebuilds the tree: off the async workers, and safe
    // on any runtime flavour.
    let inner = tokio::task::spawn_blocking(move || Inner::open(config)).await??;
    let state: Shared = Arc::new(Mutex::new(inner));
    // The slasher stops with the ledger, whichever way it stops.
    let slashing = chain
        .clone()
        .map(|chain| tokio::spawn(indexer::slasher(chain, state.clone())))
        .map(|task| AbortOnDrop(task.abort_handle()));
    let indexing = chain
        .clone()
        .map(|chain| tokio::spawn(indexer::run(chain, state.clone())));
    let _indexing_stops = indexing
        .as_ref()
        .map(|task| AbortOnDrop(task.abort_handle()));
    let state = AppState {
        inner: state,
        chain,
    };
    let app = Router::new()
        .route("/deposit", post(post_deposit))
        .route("/deposit/{id}", get(get_deposit))
        .route("/path/{index}", get(get_path))
        .route("/roots", get(get_roots))
        .route("/slash", post(post_slash))
        .route("/burn", post(post_burn))
        .route("/burns", get(get_burns))
        .route("/withdraw", post(post_withdraw))
        .route("/withdraw/claim", post(post_claim))
        .route("/balance/{account}", get(get_balance))
        .with_state(state);
    let served = axum::serve(listener, app);
    match indexing {
        Some(indexing) => tokio::select! {
            served = served => served?,
            indexed = indexing => indexed??,
        },
        None => served.await?,
    }
    drop(slashing);
    Ok(())
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the handlers share: the store, and the chain when there is one.
#[derive(Clone)]
struct AppState {
    inner: Shared,
    chain: Option<indexer::Chain>,
}

impl axum::extract::FromRef<AppState> for Shared {
    fn from_ref(state: &AppState) -> Shared {
        state.inner.clone()
    }
}

/// The refusal for a change that is a transaction on a chain ledger.
fn on_chain(state: &AppState) -> Option<Answer> {
    state.chain.as_ref().map(|chain| {
        bad(
            StatusCode::GONE,
            format!(
                "deposits are paid on the chain: send this to the registry at {}",
                chain.registry_address()
            ),
        )
    })
}

pub(crate) fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Parses a JSON request body and runs `handle` on it under the lock, on
/// a blocking thread: its redb commit never holds an async worker.
async fn with_request<T: for<'de> Deserialize<'de> + Send + 'static>(
    state: &Shared,
    body: &str,
    handle: impl FnOnce(&mut Inner, T) -> Result<Answer, Answer> + Send + 'static,
) -> Answer {
    let request = match parse(body) {
        Ok(request) => request,
        Err(e) => return e,
    };
    let state = state.clone();
    tokio::task::spawn_blocking(move || handle(&mut lock(&state), request).unwrap_or_else(|e| e))
        .await
        .unwrap_or_else(|e| internal(format!("the ledger's store thread failed: {e}")))
}

async fn post_deposit(State(app): State<AppState>, body: String) -> Answer {
    if let Some(refusal) = on_chain(&app) {
        return refusal;
    }
    let state = app.inner;
    with_request(
        &state,
        &body,
        |inner: &mut Inner, request: DepositRequest| {
            let exists = inner.deposit(&request.id_commitment)?.is_some();
            let index = inner.next_index()?;
            let deposit = rules::open_deposit(&inner.stakes(), &request, exists, index, unix_s())
                .map_err(refused)?;
            inner.commit(&deposit, None, None, Some(index + 1))?;
            tracing::info!(index, limit = request.limit, "ledger: deposit");
            Ok(ok(&Deposited {
                index: index as u32,
                root: inner.tree.root(),
            }))
        },
    )
    .await
}

async fn get_deposit(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let id = match Scalar::from_hex(&id) {
        Ok(id) => id,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    lock(&state).known(&id).map_or_else(|e| e, |d| ok(&d))
}

async fn get_path(State(state): State<Shared>, Path(index): Path<u32>) -> Answer {
    let inner = lock(&state);
    match inner.tree.path(index) {
        Ok(path) => ok(&PathAnswer {
            root: inner.tree.root(),
            path,
        }),
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

async fn get_roots(State(state): State<Shared>) -> Answer {
    lock(&state)
        .roots()
        .map_or_else(|e| e, |roots| ok(&Roots { roots }))
}

async fn post_slash(State(app): State<AppState>, body: String) -> Answer {
    if let Some(chain) = &app.chain {
        let request: SlashRequest = match parse(&body) {
            Ok(r) => r,
            Err(e) => return e,
        };
        return chain.slash(&app.inner, &request.secret).await;
    }
    let state = app.inner;
    with_request(&state, &body, |inner: &mut Inner, request: SlashRequest| {
        let id =
            commitment_of_secret(&request.secret.0).map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
        let (deposit, paid) =
            rules::slash(&inner.known(&id)?, &request.claimant).map_err(refused)?;
        inner.commit(&deposit, Some((&request.claimant, paid)), None, None)?;
        tracing::warn!(index = deposit.index, claimant = %request.claimant, "ledger: slashed a double spender");
        Ok(ok(&Slashed {
            id_commitment: id,
            paid,
        }))
    }).await
}

async fn post_burn(State(app): State<AppState>, body: String) -> Answer {
    if let Some(refusal) = on_chain(&app) {
        return refusal;
    }
    let state = app.inner;
    with_request(&state, &body, |inner: &mut Inner, request: BurnRequest| {
        let message = [
            BURN_LABEL,
            &request.id_commitment.0,
            request.evidence_hash.as_bytes(),
        ]
        .concat();
        rules::check_signature(&inner.config.policy_key, &message, &request.signature)
            .map_err(refused)?;
        let (deposit, burn) = rules::burn(
            &inner.known(&request.id_commitment)?,
            &request.evidence_hash,
            unix_s(),
        )
        .map_err(refused)?;
        inner.commit(&deposit, None, Some(&burn), None)?;
        Ok(ok(&burn))
    })
    .await
}

async fn get_burns(State(state): State<Shared>) -> Answer {
    let inner = lock(&state);
    let result = (|| {
        let read = inner.db.begin_read().map_err(internal)?;
        let table = read.open_table(BURNS).map_err(internal)?;
        let mut burns: Vec<Burn> = Vec::new();
        for row in table.iter().map_err(internal)? {
            let (_, v) = row.map_err(internal)?;
            burns.push(serde_json::from_slice(v.value()).map_err(internal)?);
        }
        Ok(ok(&burns))
    })();
    result.unwrap_or_else(|e| e)
}

async fn post_withdraw(State(app): State<AppState>, body: String) -> Answer {
    if let Some(refusal) = on_chain(&app) {
        return refusal;
    }
    withdraw(app.inner, body, false).await
}

async fn post_claim(State(app): State<AppState>, body: String) -> Answer {
    if let Some(refusal) = on_chain(&app) {
        return refusal;
    }
    withdraw(app.inner, body, true).await
}

async fn withdraw(state: Shared, body: String, claim: bool) -> Answer {
    with_request(
        &state,
        &body,
        move |inner: &mut Inner, request: WithdrawRequest| {
            let deposit = inner.known(&request.id_commitment)?;
            let message = [WITHDRAW_LABEL, &request.id_commitment.0].concat();
            rules::check_signature(&deposit.owner_key, &message, &request.signature)
                .map_err(refused)?;
            let (deposit, payout) =
                rules::withdraw(&inner.stakes(), &deposit, claim, unix_s()).map_err(refused)?;
            let payout = payout.as_ref().map(|(account, n)| (account.as_str(), *n));
            inner.commit(&deposit, payout, None, None)?;
            Ok(ok(&deposit))
        },
    )
    .await
}

async fn get_balance(State(state): State<Shared>, Path(account): Path<String>) -> Answer {
    let inner = lock(&state);
    let result = (|| {
        let read = inner.db.begin_read().map_err(internal)?;
        let table = read.open_table(BALANCES).map_err(internal)?;
        let balance = table
            .get(account.as_str())
            .map_err(internal)?
            .map_or(0, |v| v.value());
        Ok(ok(&balance))
    })();
    result.unwrap_or_else(|e| e)
}

/// A ledger's HTTP client.
#[derive(Clone)]
pub struct LedgerClient {
    http: reqwest::Client,
    url: String,
}

impl LedgerClient {
    /// A client for the ledger at `url` (`http://host:port`).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        if url.is_empty() {
            anyhow::bail!("the network document names no ledger");
        }
        Ok(LedgerClient {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    async fn answer<T: for<'de> Deserialize<'de>>(
        response: reqwest::Result<reqwest::Response>,
    ) -> anyhow::Result<T> {
        let response = response.map_err(|e| anyhow::anyhow!("ledger unreachable: {e}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            anyhow::bail!("ledger: {text} ({status})");
        }
        Ok(serde_json::from_str(&text)?)
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> anyhow::Result<T> {
        Self::answer(self.http.get(format!("{}{path}", self.url)).send().await).await
    }

    async fn post<B: Serialize, T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let body = serde_json::to_string(body)?;
        Self::answer(
            self.http
                .post(format!("{}{path}", self.url))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await,
        )
        .await
    }

    /// Makes a deposit.
    pub async fn deposit(&self, request: &DepositRequest) -> anyhow::Result<Deposited> {
        self.post("/deposit", request).await
    }

    /// A deposit's record.
    pub async fn status(&self, id: &Scalar) -> anyhow::Result<Deposit> {
        self.get(&format!("/deposit/{}", id.to_hex())).await
    }

    /// Leaf `index`'s path and the current root.
    pub async fn path(&self, index: u32) -> anyhow::Result<PathAnswer> {
        self.get(&format!("/path/{index}")).await
    }

    /// The recent roots, oldest first.
    pub async fn roots(&self) -> anyhow::Result<Vec<Scalar>> {
        Ok(self.get::<Roots>("/roots").await?.roots)
    }

    /// Reveals a double spender's secret; the stake goes to `claimant`.
    pub async fn slash(&self, secret: [u8; 32], claimant: &str) -> anyhow::Result<Slashed> {
        self.post(
            "/slash",
            &SlashRequest {
                secret: Scalar(secret),
                claimant: claimant.to_string(),
            },
        )
        .await
    }

    /// Burns a deposit's policy stake (signed by the policy key).
    pub async fn burn(&self, request: &BurnRequest) -> anyhow::Result<Burn> {
        self.post("/burn", request).await
    }

    /// The public burn log.
    pub async fn burns(&self) -> anyhow::Result<Vec<Burn>> {
        self.get("/burns").await
    }

    /// Starts (`claim = false`) or completes a withdrawal.
    pub async fn withdraw(
        &self,
        request: &WithdrawRequest,
        claim: bool,
    ) -> anyhow::Result<Deposit> {
        let path = if claim {
            "/withdraw/claim"
        } else {
            "/withdraw"
        };
        self.post(path, request).await
    }

    /// What slashing and withdrawals paid `account` (on a chain: what
    /// slashes paid that address, wei).
    pub async fn balance(&self, account: &str) -> anyhow::Result<u128> {
        self.get(&format!("/balance/{account}")).await
    }
}
