//! The compute courier's ticket check. Before a job is taken, every ticket
//! it carries is verified against a recent ledger root and the job's
//! nullifiers are recorded durably, all or none, in the provider's
//! nullifier set. A nullifier seen before with the same `x` for another
//! job is a replay (refused); with another `x` it is a double spend: the
//! secret is recovered and the deposit slashed through the ledger.
//!
//! One provider, one nullifier set: one of its compute couriers keeps the
//! set in a redb file and serves it over HTTP (`POST /record`, all of a
//! job's nullifiers in one write transaction, committed before the answer);
//! the provider's other couriers record through it. The keeper's answer is
//! the single point of truth, so two couriers can never both accept one
//! nullifier.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use funion_compute::Dispatch;
use funion_credits::gate::{Admission, Refusal};
use funion_credits::nullifiers::{decide, NullifierStore, Record, Recorded};
use funion_pki::Credits;
use funion_tickets::{Scalar, Verifier};
use redb::{Database, ReadableTable, TableDefinition};
use tokio::net::TcpListener;

use funion_ledger::LedgerClient;
use funion_net::config::NullifierFile;

const NULLIFIERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("nullifiers");

/// How often the ledger's roots are fetched again at most.
const ROOTS_FRESH: Duration = Duration::from_secs(2);

/// The set's record of one spend, in redb: x ‖ y ‖ job.
fn encode(record: &Record) -> [u8; 96] {
    let mut bytes = [0u8; 96];
    bytes[..32].copy_from_slice(&record.x.0);
    bytes[32..64].copy_from_slice(&record.y.0);
    bytes[64..].copy_from_slice(&record.job.0);
    bytes
}

fn decode(nullifier: &[u8; 32], bytes: &[u8]) -> anyhow::Result<Record> {
    anyhow::ensure!(bytes.len() == 96, "the nullifier store is damaged");
    let part = |i: usize| Scalar(bytes[32 * i..32 * i + 32].try_into().expect("96 bytes"));
    Ok(Record {
        nullifier: Scalar(*nullifier),
        x: part(0),
        y: part(1),
        job: part(2),
    })
}

/// The provider's nullifier set in redb: one write transaction per job,
/// committed before the answer.
struct RedbNullifiers<'a>(&'a Database);

impl NullifierStore for RedbNullifiers<'_> {
    type Error = anyhow::Error;

    fn record(&mut self, records: &[Record]) -> anyhow::Result<Recorded> {
        let txn = self.0.begin_write()?;
        let outcome = {
            let mut table = txn.open_table(NULLIFIERS)?;
            let seen = records
                .iter()
                .map(|r| match table.get(&r.nullifier.0)? {
                    Some(v) => decode(&r.nullifier.0, v.value()).map(Some),
                    None => Ok(None),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (outcome, new) = decide(records, &seen);
            for record in &new {
                table.insert(&record.nullifier.0, encode(record).as_slice())?;
            }
            outcome
        };
        // A conflict records nothing: the transaction commits no change.
        txn.commit()?;
        Ok(outcome)
    }
}

fn record_local(db: &Database, records: &[Record]) -> anyhow::Result<Recorded> {
    RedbNullifiers(db).record(records)
}

enum Store {
    Local(Arc<Database>),
    Remote { http: reqwest::Client, url: String },
}

impl Store {
    async fn record(&self, records: Vec<Record>) -> anyhow::Result<Recorded> {
        match self {
            Store::Local(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || record_local(&db, &records)).await?
            }
            Store::Remote { http, url } => {
                let response = http
                    .post(format!("{url}/record"))
                    .body(serde_json::to_string(&records)?)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("the nullifier keeper is unreachable: {e}"))?;
                let status = response.status();
                let text = response.text().await?;
                if !status.is_success() {
                    anyhow::bail!("the nullifier keeper: {text}");
                }
                Ok(serde_json::from_str(&text)?)
            }
        }
    }
}

async fn serve_keeper(db: Arc<Database>, listener: TcpListener) -> anyhow::Result<()> {
    async fn record(State(db): State<Arc<Database>>, body: String) -> (StatusCode, String) {
        let records: Vec<Record> = match serde_json::from_str(&body) {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
        };
        match tokio::task::spawn_blocking(move || record_local(&db, &records)).await {
            Ok(Ok(answer)) => (
                StatusCode::OK,
                serde_json::to_string(&answer).expect("serializing to memory cannot fail"),
            ),
            Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    let app = Router::new().route("/record", post(record)).with_state(db);
    axum::serve(listener, app).await?;
    Ok(())
}

/// Counts of what the gate saw.
#[derive(Debug, Default)]
pub struct GateCounters {
    /// Tickets accepted.
    pub accepted: AtomicU64,
    /// Tickets refused as replays.
    pub replays: AtomicU64,
    /// Double spends caught.
    pub double_spends: AtomicU64,
    /// Deposits slashed through the ledger.
    pub slashed: AtomicU64,
    /// Tickets that did not verify (or jobs that did not pay the price).
    pub invalid: AtomicU64,
}

/// A compute courier's ticket check.
pub struct TicketGate {
    verifier: Arc<Verifier>,
    store: Store,
    credits: Credits,
    ledger: LedgerClient,
    roots: Mutex<(Vec<Scalar>, Option<Instant>)>,
    /// What it saw.
    pub counters: Arc<GateCounters>,
}

impl TicketGate {
    /// A gate for the provider `credits` names. With `nullifiers.url` it
    /// records through that keeper; otherwise it keeps the set itself in
    /// `data_dir/nullifiers.redb`, and serves it on `nullifiers.listen`
    /// when given.
    pub async fn new(
        credits: Credits,
        nullifiers: &NullifierFile,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let store = match &nullifiers.url {
            Some(url) => Store::Remote {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()?,
                url: url.trim_end_matches('/').to_string(),
            },
            None => {
                std::fs::create_dir_all(data_dir)?;
                let path = data_dir.join("nullifiers.redb");
                let db = Arc::new(
                    Database::create(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                );
                if let Some(listen) = &nullifiers.listen {
                    let listener = TcpListener::bind(listen).await?;
                    let keeper = db.clone();
                    tokio::spawn(async move {
                        if let Err(error) = serve_keeper(keeper, listener).await {
                            tracing::error!(%error, "nullifier keeper stopped");
                        }
                    });
                }
                Store::Local(db)
            }
        };
        // The first verifier in a process loads the circuit's keys: seconds
        // of CPU, kept off the async workers.
        let provider = credits.provider.clone();
        let verifier = tokio::task::spawn_blocking(move || Verifier::new(&provider)).await?;
        Ok(TicketGate {
            verifier: Arc::new(verifier),
            ledger: LedgerClient::new(&credits.ledger_url)?,
            credits,
            store,
            roots: Mutex::new((Vec::new(), None)),
            counters: Arc::new(GateCounters::default()),
        })
    }

    async fn roots(&self, refresh: bool) -> Result<Vec<Scalar>, String> {
        {
            let cached = self.roots.lock().expect("roots");
            if !refresh && cached.1.is_some_and(|t| t.elapsed() < ROOTS_FRESH) {
                return Ok(cached.0.clone());
            }
        }
        let roots = self
            .ledger
            .roots()
            .await
            .map_err(|e| format!("cannot check tickets now: {e}"))?;
        *self.roots.lock().expect("roots") = (roots.clone(), Some(Instant::now()));
        Ok(roots)
    }

    /// Checks and records the tickets of `dispatch`; `Ok` means the job is
    /// paid and may be taken. `now_s` is Unix time in seconds. The steps
    /// and every verdict are `funion_credits::gate`'s; this shell fetches
    /// the roots, verifies on a blocking thread and records through the
    /// provider's keeper.
    pub async fn admit(&self, dispatch: &Dispatch, now_s: u64) -> Result<(), String> {
        let admission = match Admission::begin(&self.credits, dispatch, now_s) {
            Ok(admission) => admission,
            Err(refused) => return self.caught(refused).await,
        };
        let mut roots = self.roots(false).await?;
        if admission.needs_fresh_roots(&roots) {
            roots = self.roots(true).await?;
        }
        let verifier = self.verifier.clone();
        let verified = tokio::task::spawn_blocking(move || {
            admission.verify(&roots, |t, periods, roots| {
                verifier.verify(t, periods, roots)
            })
        })
        .await
        .map_err(|e| format!("ticket check failed: {e}"))?;
        let verified = match verified {
            Ok(verified) => verified,
            Err(refused) => return self.caught(refused).await,
        };
        let recorded = self.store.record(verified.records().to_vec()).await;
        match verified.settle(recorded) {
            Ok(paid) => {
                self.counters
                    .accepted
                    .fetch_add(paid as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(refused) => self.caught(refused).await,
        }
    }

    async fn caught(&self, refused: Refusal) -> Result<(), String> {
        match &refused {
            Refusal::DoubleSpend { secret } => {
                self.counters.double_spends.fetch_add(1, Ordering::Relaxed);
                let claimant = format!("provider:{}", self.credits.provider);
                match self.ledger.slash(*secret, &claimant).await {
                    Ok(slashed) => {
                        self.counters.slashed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(deposit = ?slashed.id_commitment, paid = slashed.paid, "double spend: deposit slashed");
                    }
                    Err(error) => tracing::warn!(%error, "double spend: slashing failed"),
                }
            }
            Refusal::Replay => {
                self.counters.replays.fetch_add(1, Ordering::Relaxed);
            }
            Refusal::NoPrice { .. } | Refusal::WrongPrice { .. } | Refusal::BadTicket(_) => {
                self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            }
            Refusal::Unavailable(_) => {}
        }
        Err(refused.to_string())
    }
}
