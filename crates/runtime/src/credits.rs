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
use funion_pki::Credits;
use funion_tickets::{judge, Scalar, Spend, Ticket, TicketError, Verdict, Verifier};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::config::NullifierFile;
use crate::ledger::LedgerClient;

const NULLIFIERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("nullifiers");

/// How often the ledger's roots are fetched again at most.
const ROOTS_FRESH: Duration = Duration::from_secs(2);

/// A spend as the keeper stores and sends it, with the job it paid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    nullifier: Scalar,
    x: Scalar,
    y: Scalar,
    job: Scalar,
}

impl Record {
    fn spend(&self) -> Spend {
        Spend {
            nullifier: self.nullifier,
            x: self.x,
            y: self.y,
        }
    }
}

/// The keeper's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Recorded {
    /// Every nullifier is now the job's (or already was: the same job
    /// sent again).
    Fresh,
    /// Nothing was recorded: ticket `index` collides with `seen`.
    Conflict { index: usize, seen: Record },
}

fn record_local(db: &Database, records: &[Record]) -> anyhow::Result<Recorded> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(NULLIFIERS)?;
        for (index, record) in records.iter().enumerate() {
            let seen = table.get(&record.nullifier.0)?.map(|v| v.value().to_vec());
            match seen {
                None => {
                    let mut bytes = Vec::with_capacity(96);
                    bytes.extend_from_slice(&record.x.0);
                    bytes.extend_from_slice(&record.y.0);
                    bytes.extend_from_slice(&record.job.0);
                    table.insert(&record.nullifier.0, bytes.as_slice())?;
                }
                Some(bytes) if bytes.len() == 96 => {
                    let part = |i: usize| Scalar(bytes[32 * i..32 * i + 32].try_into().unwrap());
                    let seen = Record {
                        nullifier: record.nullifier,
                        x: part(0),
                        y: part(1),
                        job: part(2),
                    };
                    if seen.x == record.x && seen.job == record.job {
                        continue; // the same job, sent again after a restart
                    }
                    // Dropping the transaction records nothing of this job.
                    return Ok(Recorded::Conflict { index, seen });
                }
                Some(_) => anyhow::bail!("the nullifier store is damaged"),
            }
        }
    }
    txn.commit()?;
    Ok(Recorded::Fresh)
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

    fn refuse(&self, reason: String) -> Result<(), String> {
        self.counters.invalid.fetch_add(1, Ordering::Relaxed);
        Err(reason)
    }

    /// Checks and records the tickets of `dispatch`; `Ok` means the job is
    /// paid and may be taken. `now_s` is Unix time in seconds.
    pub async fn admit(&self, dispatch: &Dispatch, now_s: u64) -> Result<(), String> {
        let Some(price) = self
            .credits
            .tickets_for(dispatch.input_class, dispatch.output_class)
        else {
            return self.refuse(format!(
                "the cell ({}, {}) has no price",
                dispatch.input_class, dispatch.output_class
            ));
        };
        if dispatch.tickets.len() != price as usize {
            return self.refuse(format!(
                "the cell ({}, {}) costs {price} tickets, the job carries {}",
                dispatch.input_class,
                dispatch.output_class,
                dispatch.tickets.len()
            ));
        }
        let tickets = match dispatch
            .tickets
            .iter()
            .map(|t| Ticket::decode(t))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(t) => t,
            Err(e) => return self.refuse(e.to_string()),
        };
        let period = self.credits.period_at(now_s);
        // The period just ended is still good: a book proved before the
        // turn is not wasted.
        let periods = vec![period, period.saturating_sub(1)];
        let mut roots = self.roots(false).await?;
        if tickets.iter().any(|t| !roots.contains(&t.root)) {
            roots = self.roots(true).await?;
        }
        let verifier = self.verifier.clone();
        let checked = tokio::task::spawn_blocking(move || {
            tickets
                .iter()
                .map(|t| verifier.verify(t, &periods, &roots))
                .collect::<Result<Vec<Spend>, TicketError>>()
        })
        .await
        .map_err(|e| format!("ticket check failed: {e}"))?;
        let spends = match checked {
            Ok(s) => s,
            Err(e) => return self.refuse(format!("a ticket was refused: {e}")),
        };
        // Two tickets of one job for one message id.
        for (i, a) in spends.iter().enumerate() {
            if let Some(b) = spends[..i].iter().find(|b| b.nullifier == a.nullifier) {
                return self.caught(judge(b, a)).await;
            }
        }
        let job = Scalar(Sha256::digest(&dispatch.write_cap_out).into());
        let records = spends
            .iter()
            .map(|s| Record {
                nullifier: s.nullifier,
                x: s.x,
                y: s.y,
                job,
            })
            .collect();
        match self.store.record(records).await {
            Ok(Recorded::Fresh) => {
                self.counters
                    .accepted
                    .fetch_add(spends.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Ok(Recorded::Conflict { index, seen }) => {
                self.caught(judge(&seen.spend(), &spends[index])).await
            }
            Err(e) => Err(format!("cannot record the tickets now: {e}")),
        }
    }

    async fn caught(&self, verdict: Verdict) -> Result<(), String> {
        match verdict {
            Verdict::Replay => {
                self.counters.replays.fetch_add(1, Ordering::Relaxed);
                Err("a ticket was already spent (replay)".into())
            }
            Verdict::DoubleSpend { secret } => {
                self.counters.double_spends.fetch_add(1, Ordering::Relaxed);
                let claimant = format!("provider:{}", self.credits.provider);
                match self.ledger.slash(secret, &claimant).await {
                    Ok(slashed) => {
                        self.counters.slashed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(deposit = ?slashed.id_commitment, paid = slashed.paid, "double spend: deposit slashed");
                    }
                    Err(error) => tracing::warn!(%error, "double spend: slashing failed"),
                }
                Err("a ticket double-spends its message id: the deposit is slashed".into())
            }
        }
    }
}
