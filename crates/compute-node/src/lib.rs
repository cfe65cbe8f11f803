//! The compute courier for real: a service that takes dispatches from the
//! mixnet node it runs beside, and a mixnet client of its own (through the
//! gateway, with cover traffic, like any client) that reads inputs and
//! stores outputs through the storage couriers. Models run on a thread of
//! their own; the state machine in `funion-compute` decides when.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod gate;
pub mod jobs;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use funion_bacap::{BoxId, ReadCap, WriteCap, Writer};
use funion_compute::courier::JobTimes;
use funion_compute::{
    AcceptedJob, Action, ComputeCourier, CourierConfig, DispatchReply, HeldSurb, Input, JobId,
};
use funion_inference::Models;
use funion_pigeonhole::envelope::Request;
use funion_pki::{KemKind, Parameters};
use funion_sphinx::kem::{Kem, XWing, X25519};
use tokio::sync::{mpsc, Notify};

use funion_client::session::Network;
use funion_client::storage::{BatchId, StorageClient};
use funion_net::config::{ClientFile, ComputeFile};
use funion_net::metrics::Metrics;
use funion_pigeonhole::client::{open_stream, read_requests, write_requests};

use crate::jobs::{Change, StoredJob};

pub use funion_compute::client::{boxes_for, COMPUTE_FAST_SERVICE, COMPUTE_SERVICE};

/// A message for a client's SURB: the SURB and what to send through it.
pub type Delivery = (Vec<u8>, Vec<u8>);

/// A dispatch as the node hands it over.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The SURB the answer goes back through.
    pub surb: Vec<u8>,
    /// The dispatch.
    pub body: Vec<u8>,
    /// A fast-path dispatch's second SURB, held for the output.
    pub held: Option<Vec<u8>>,
}

/// How a compute courier runs.
#[derive(Clone)]
pub struct ComputeOptions {
    /// The models it serves.
    pub models: Models,
    /// Longest a fetched job waits for the rest of its bucket.
    pub batch_window: Duration,
    /// Most jobs in one batch.
    pub max_batch: usize,
    /// The ticket check every job passes before it is taken.
    pub gate: Arc<crate::gate::TicketGate>,
    /// Where accepted jobs are kept until their output is out.
    pub jobs: Arc<crate::jobs::JobStore>,
}

/// One job as the compute courier saw it, wall-clock times in
/// microseconds since the Unix epoch (for timelines and tests; the node
/// keeps the last few thousand in memory only).
#[derive(Clone, Debug, PartialEq)]
pub struct ComputeRecord {
    /// The first output box: the client knows it, nobody else can link it.
    pub output_box: BoxId,
    /// Dispatch taken.
    pub taken: u64,
    /// Input read.
    pub fetched: Option<u64>,
    /// Batch started.
    pub started: Option<u64>,
    /// Batch finished.
    pub finished: Option<u64>,
    /// The bucket edge `t_j`.
    pub edge: u64,
    /// When the output was handed to the mixnet client (at the edge).
    pub released: u64,
    /// When the storage network acknowledged it.
    pub stored: Option<u64>,
    /// OVERFLOW or the result.
    pub overflow: bool,
    /// Jobs in its batch.
    pub batch_size: usize,
    /// Boxes written.
    pub boxes: usize,
    /// Plaintext bytes per box.
    pub box_len: usize,
    /// Echoes the output took.
    pub store_echoes: u64,
}

static JOURNAL: Mutex<VecDeque<ComputeRecord>> = Mutex::new(VecDeque::new());
const JOURNAL_LEN: usize = 4_096;

/// What this process's compute couriers recorded about the job whose first
/// output box is `output_box` (from the moment its output was released;
/// `stored` is set once the storage network acknowledged it).
pub fn journal_entry(output_box: &BoxId) -> Option<ComputeRecord> {
    JOURNAL
        .lock()
        .expect("journal")
        .iter()
        .find(|r| r.output_box == *output_box)
        .cloned()
}

fn update(output_box: &BoxId, stored: Option<u64>, store_echoes: u64) {
    let mut journal = JOURNAL.lock().expect("journal");
    if let Some(entry) = journal
        .iter_mut()
        .rev()
        .find(|r| r.output_box == *output_box)
    {
        entry.stored = stored;
        entry.store_echoes = store_echoes;
    }
}

fn record(entry: ComputeRecord) {
    let mut journal = JOURNAL.lock().expect("journal");
    if journal.len() >= JOURNAL_LEN {
        journal.pop_front();
    }
    journal.push_back(entry);
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

enum Pending {
    Fetch {
        job: JobId,
        cap: ReadCap,
        ctx: Vec<u8>,
    },
    Store {
        job: JobId,
        record: ComputeRecord,
        echoes_before: u64,
    },
}

/// Runs a compute courier until the node stops: connects to the network as
/// a client (retrying until the gateway answers), then takes dispatches
/// from `deliveries` and sends each answer (SURB, body) to `replies`.
pub async fn run(
    client: ClientFile,
    parameters: Parameters,
    options: ComputeOptions,
    deliveries: mpsc::Receiver<Incoming>,
    replies: mpsc::Sender<Delivery>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let mut deliveries = deliveries;
    loop {
        let network = match Network::fetch(&client).await {
            Ok(network) => network,
            Err(error) => {
                tracing::debug!(%error, "compute courier: no document yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let parts = Parts {
            parameters: parameters.clone(),
            options: options.clone(),
            replies: replies.clone(),
            wake: wake.clone(),
            metrics: metrics.clone(),
        };
        let outcome = match parameters.kem {
            KemKind::XWing => drive::<XWing>(network, parts, &mut deliveries).await,
            KemKind::X25519 => drive::<X25519>(network, parts, &mut deliveries).await,
        };
        match outcome {
            Ok(()) => return Ok(()),
            // Its session failed (the gateway went away): start again; the
            // jobs it held are on disk and are taken again.
            Err(error) => {
                tracing::warn!(%error, "compute courier lost its session; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

struct Parts {
    parameters: Parameters,
    options: ComputeOptions,
    replies: mpsc::Sender<Delivery>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

async fn drive<K: Kem>(
    network: Network,
    parts: Parts,
    deliveries: &mut mpsc::Receiver<Incoming>,
) -> anyhow::Result<()> {
    let Parts {
        parameters,
        options,
        replies,
        wake,
        metrics,
    } = parts;
    let mut storage = StorageClient::<K>::over(network).await?;
    let box_len = storage.box_payload();
    let mut courier = ComputeCourier::new(CourierConfig {
        delta_us: parameters.bucket_spacing_us,
        // Buckets up to ten minutes out, whatever Δ is.
        max_bucket: u32::try_from(600_000_000 / parameters.bucket_spacing_us.max(1))
            .unwrap_or(u32::MAX),
        max_batch: options.max_batch,
        batch_window_us: options.batch_window.as_micros() as u64,
        served: options.models.served(),
        ..CourierConfig::default()
    });
    // The model thread: batches in, outcomes out.
    let (work_tx, work_rx) = std::sync::mpsc::channel::<(u64, Vec<funion_compute::WorkItem>)>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let models = options.models.clone();
    let model_wake = wake.clone();
    let model_metrics = metrics.clone();
    std::thread::Builder::new()
        .name("funion-models".into())
        .spawn(move || {
            // What the models cost, for the operator (never on the wire).
            let (mut busy_us, mut items_run) = (0u64, 0u64);
            while let Ok((batch, items)) = work_rx.recv() {
                let clock = Instant::now();
                let outcomes = models.run(&items);
                let took = clock.elapsed().as_micros() as u64;
                busy_us += took;
                items_run += items.len() as u64;
                model_metrics.set_compute("model_busy_us", busy_us);
                model_metrics.set_compute("model_items", items_run);
                model_metrics.set_compute("model_last_batch_us", took);
                let ids: Vec<JobId> = items.iter().map(|i| i.job).collect();
                if done_tx
                    .send((batch, ids.into_iter().zip(outcomes).collect::<Vec<_>>()))
                    .is_err()
                {
                    return;
                }
                model_wake.notify_one();
            }
        })?;
    let start = Instant::now();
    let start_unix = unix_us();
    let now = move || start.elapsed().as_micros() as u64;
    let unix = move |t: u64| start_unix + t;
    let mut pending: HashMap<BatchId, Pending> = HashMap::new();
    // The ways back of dispatches not answered yet, by the courier's token.
    let mut surbs: HashMap<u64, Vec<u8>> = HashMap::new();
    // Fast-path dispatches' second SURBs, held for their outputs.
    let mut held: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut next_token = 0u64;
    // The jobs a run before this one accepted and did not finish.
    for (key, stored) in options.jobs.load()? {
        let reply = stored.reply.map(|(surb, until_unix)| {
            next_token += 1;
            held.insert(next_token, surb);
            HeldSurb {
                surb: next_token,
                usable_until: until_unix.saturating_sub(start_unix),
            }
        });
        let record = AcceptedJob {
            key: key.clone(),
            dispatch: stored.dispatch,
            taken: stored.taken_unix_us.saturating_sub(start_unix),
            edge: stored.edge_unix_us.saturating_sub(start_unix),
            edge_fixed: stored.edge_fixed,
            reply,
        };
        match courier.restore(now(), record) {
            Ok(job) => tracing::info!(job, "compute courier: an accepted job taken again"),
            Err(error) => {
                tracing::error!(%error, "compute courier: a kept job cannot be taken again");
                options.jobs.commit_now(&[Change::Remove(key)])?;
            }
        }
    }
    // Payment checks run as tasks of their own; their verdicts come back
    // here, so a slow ledger or keeper never holds up a bucket edge.
    let (verdict_tx, mut verdicts) = mpsc::unbounded_channel::<(u64, Result<(), String>)>();
    tracing::info!(models = ?options.models.served(), "compute courier running");
    loop {
        loop {
            match deliveries.try_recv() {
                Ok(incoming) => {
                    next_token += 1;
                    surbs.insert(next_token, incoming.surb);
                    match incoming.held {
                        Some(surb) => {
                            held.insert(next_token, surb);
                            // The SURB's hops keep their keys until the
                            // grace period after its epoch.
                            let until_ms = funion_pki::surb_usable_until(
                                unix_us() / 1000,
                                parameters.epoch_ms.max(1),
                                parameters.grace_ms,
                            );
                            let left_us = (until_ms * 1000).saturating_sub(unix_us());
                            let reply = HeldSurb {
                                surb: next_token,
                                usable_until: now() + left_us,
                            };
                            courier.receive_fast(now(), next_token, reply, &incoming.body);
                        }
                        None => courier.receive(now(), next_token, &incoming.body),
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        while let Ok((admission, verdict)) = verdicts.try_recv() {
            courier.admitted(now(), admission, verdict);
        }
        while let Ok((batch, outcomes)) = done_rx.try_recv() {
            courier.finished(now(), batch, outcomes);
        }
        // Records to keep or drop, and the answers that must wait for them.
        let (mut changes, mut after_commit) = (Vec::new(), Vec::new());
        for action in courier.poll(now()) {
            match action {
                Action::Persist(record) => {
                    let reply = record.reply.and_then(|r| {
                        let surb = held.get(&r.surb)?.clone();
                        Some((surb, unix(r.usable_until)))
                    });
                    changes.push(Change::Put(
                        record.key,
                        StoredJob {
                            dispatch: record.dispatch,
                            taken_unix_us: unix(record.taken),
                            edge_unix_us: unix(record.edge),
                            edge_fixed: record.edge_fixed,
                            reply,
                        },
                    ));
                }
                Action::Forget { key } => changes.push(Change::Remove(key)),
                Action::Admit {
                    admission,
                    dispatch,
                } => {
                    let gate = options.gate.clone();
                    let verdict_tx = verdict_tx.clone();
                    let wake = wake.clone();
                    tokio::spawn(async move {
                        let verdict = gate.admit(&dispatch, unix_us() / 1_000_000).await;
                        let _ = verdict_tx.send((admission, verdict));
                        wake.notify_one();
                    });
                }
                Action::Reply { token, reply } => {
                    if let Some(surb) = surbs.remove(&token) {
                        if !changes.iter().any(|c| matches!(c, Change::Put(..))) {
                            let _ = replies.try_send((surb, reply.encode()));
                        } else {
                            // Only once the job is on disk.
                            after_commit.push((surb, reply.encode()));
                        }
                    }
                    if matches!(reply, DispatchReply::Refused { .. }) {
                        held.remove(&token);
                    }
                }
                Action::Deliver {
                    job,
                    surb,
                    payload,
                    overflow,
                    times,
                } => {
                    let released = now();
                    let sent = held
                        .remove(&surb)
                        .is_some_and(|surb| replies.try_send((surb, payload)).is_ok());
                    if sent {
                        let output_box = courier.dispatch_of(job).and_then(|d| {
                            let cap = WriteCap::from_bytes(&d.write_cap_out).ok()?;
                            funion_pigeonhole::client::box_id(&cap.read_cap(), &d.ctx_out, 0).ok()
                        });
                        if let Some(output_box) = output_box {
                            let mut record = journal_record(
                                output_box, &times, released, overflow, 0, box_len, &unix,
                            );
                            // Through the held SURB: delivered, not stored.
                            record.stored = Some(unix_us());
                            record_and_log(record);
                        }
                    }
                    courier.delivered(job, sent);
                }
                Action::Fetch {
                    job,
                    read_cap,
                    ctx,
                    input_class,
                } => {
                    let count = boxes_for(Input::padded_len(input_class), box_len);
                    let prepared = ReadCap::from_bytes(&read_cap)
                        .map_err(|e| format!("read cap: {e}"))
                        .and_then(|cap| {
                            let ids =
                                read_requests(&cap, &ctx, count).map_err(|e| e.to_string())?;
                            Ok((cap, ids))
                        });
                    match prepared {
                        Ok((cap, requests)) => {
                            let batch = storage.start(requests)?;
                            pending.insert(batch, Pending::Fetch { job, cap, ctx });
                        }
                        Err(e) => courier.fetched(now(), job, Err(e)),
                    }
                }
                Action::Run { batch, items } => {
                    work_tx
                        .send((batch, items))
                        .map_err(|_| anyhow::anyhow!("the model thread stopped"))?;
                }
                Action::Store {
                    job,
                    write_cap,
                    ctx,
                    payload,
                    overflow,
                    times,
                } => {
                    let released = now();
                    match seal_output(&write_cap, &ctx, &payload, box_len) {
                        Ok(requests) => {
                            let output_box = requests[0].box_id();
                            let record = journal_record(
                                output_box,
                                &times,
                                released,
                                overflow,
                                requests.len(),
                                box_len,
                                &unix,
                            );
                            record_and_log(record.clone());
                            let echoes_before = storage.stats().echoes;
                            let batch = storage.start(requests)?;
                            pending.insert(
                                batch,
                                Pending::Store {
                                    job,
                                    record,
                                    echoes_before,
                                },
                            );
                        }
                        Err(error) => {
                            tracing::warn!(%error, "compute courier: output not sealed");
                            courier.stored(job, false);
                        }
                    }
                }
            }
        }
        if !(changes.is_empty() && after_commit.is_empty()) {
            options
                .jobs
                .commit_then_send(changes, after_commit, &replies);
        }
        export(&metrics, &courier, &storage.stats(), &options.gate);
        let until = courier
            .next_deadline()
            .map(|d| tokio::time::Instant::from_std(start + Duration::from_micros(d)));
        for (batch, results) in storage.advance(Some(&wake), until).await? {
            match pending.remove(&batch) {
                Some(Pending::Fetch { job, cap, ctx }) => {
                    if funion_compute::client::not_there_yet(&results) {
                        // Uploaded beside the dispatch and not landed yet.
                        courier.input_missing(now(), job);
                        continue;
                    }
                    let input = open_stream(&cap, &ctx, results).map_err(|e| format!("input {e}"));
                    courier.fetched(now(), job, input);
                }
                Some(Pending::Store {
                    job,
                    mut record,
                    echoes_before,
                }) => {
                    let ok = results.iter().all(|r| r.is_ok());
                    if ok {
                        record.stored = Some(unix_us());
                    }
                    // Echoes are counted per session step, so with other
                    // operations in flight this is an upper bound.
                    record.store_echoes = storage.stats().echoes - echoes_before;
                    update(&record.output_box, record.stored, record.store_echoes);
                    courier.stored(job, ok);
                }
                None => {}
            }
        }
    }
}

fn journal_record(
    output_box: BoxId,
    times: &JobTimes,
    released: u64,
    overflow: bool,
    boxes: usize,
    box_len: usize,
    unix: &impl Fn(u64) -> u64,
) -> ComputeRecord {
    ComputeRecord {
        output_box,
        taken: unix(times.taken),
        fetched: times.fetched.map(unix),
        started: times.started.map(unix),
        finished: times.finished.map(unix),
        edge: unix(times.edge),
        released: unix(released),
        stored: None,
        overflow,
        batch_size: times.batch_size,
        boxes,
        box_len,
        store_echoes: 0,
    }
}

fn record_and_log(entry: ComputeRecord) {
    tracing::debug!(
        late_us = entry.released.saturating_sub(entry.edge),
        overflow = entry.overflow,
        "output released at its bucket edge"
    );
    record(entry);
}

/// The output payload as BACAP boxes of the stream `write_cap`, `ctx`.
fn seal_output(
    write_cap: &[u8],
    ctx: &[u8],
    payload: &[u8],
    box_len: usize,
) -> anyhow::Result<Vec<Request>> {
    let cap = WriteCap::from_bytes(write_cap).map_err(|e| anyhow::anyhow!("write cap: {e}"))?;
    Ok(write_requests(
        &mut Writer::new(cap, ctx),
        payload,
        box_len,
    )?)
}

fn export(
    metrics: &Metrics,
    courier: &ComputeCourier,
    storage: &funion_client::storage::StorageStats,
    gate: &crate::gate::TicketGate,
) {
    let c = courier.counters();
    for (name, value) in [
        ("jobs_taken", c.taken),
        ("jobs_refused", c.refused),
        ("batches", c.batches),
        ("batched_jobs", c.batched_jobs),
        ("largest_batch", c.largest_batch),
        ("overflows", c.overflows),
        ("failures", c.failures),
        ("stored", c.stored),
        ("jobs_restored", c.restored),
        ("store_failures", c.store_failures),
        ("jobs_held", courier.jobs() as u64),
        ("admitting", courier.admitting() as u64),
        ("echoes", storage.echoes),
        ("polls", storage.polls),
        ("resends", storage.resends),
        ("fresh_envelopes", storage.fresh_envelopes),
        ("loops_shed", storage.loops_shed),
    ] {
        metrics.set_compute(name, value);
    }
    let g = &gate.counters;
    for (name, value) in [
        ("tickets_accepted", &g.accepted),
        ("tickets_replayed", &g.replays),
        ("tickets_double_spent", &g.double_spends),
        ("deposits_slashed", &g.slashed),
        ("tickets_refused", &g.invalid),
    ] {
        let value = value.load(std::sync::atomic::Ordering::Relaxed);
        metrics.set_compute(name, value);
    }
}

/// Loads every model (folders are read now: a bad one stops the node
/// with the reason).
pub fn load_models(compute: &ComputeFile) -> anyhow::Result<funion_inference::Models> {
    let mut models = funion_inference::Models::new();
    for m in &compute.models {
        let backend: std::sync::Arc<dyn funion_inference::Backend> = match (&m.path, &m.upstream) {
            (Some(path), None) => funion_inference::load_path(path)
                .map_err(|e| anyhow::anyhow!("model {}: {e}", m.name))?,
            (None, Some(url)) => {
                let task = match m.task.as_deref() {
                    Some("generate") | None => funion_compute::Task::Generate,
                    Some("embed") => funion_compute::Task::Embed,
                    Some(other) => {
                        anyhow::bail!("model {}: task {other:?} is not generate or embed", m.name)
                    }
                };
                let upstream_name = m.upstream_model.as_deref().unwrap_or(&m.name);
                let flavor = match m.flavor.as_deref() {
                    Some("openai") | None => funion_inference::upstream::Flavor::OpenAi,
                    Some("llama.cpp") => funion_inference::upstream::Flavor::LlamaCpp,
                    Some(other) => anyhow::bail!(
                        "model {}: flavor {other:?} is not openai or llama.cpp",
                        m.name
                    ),
                };
                std::sync::Arc::new(
                    funion_inference::upstream::Upstream::new(
                        url,
                        upstream_name,
                        task,
                        std::env::var("FUNION_UPSTREAM_KEY").ok(),
                    )?
                    .with_flavor(flavor),
                )
            }
            _ => anyhow::bail!("model {}: give either path or upstream", m.name),
        };
        models.insert(m.name.clone(), backend);
    }
    Ok(models)
}

/// Prompt tokens in the load-time measurement of a model.
const PROBE_PROMPT: usize = 64;
/// Tokens generated beyond the first in that measurement.
const PROBE_TOKENS: u32 = 8;

/// What this compute courier publishes about each model it serves: the
/// digests of its tokenizer and chat template, its context and its speed,
/// measured here and now by running it on a probe prompt (a prefill of
/// [`PROBE_PROMPT`] tokens, then [`PROBE_TOKENS`] more tokens), scaled to
/// every input class within the context.
pub fn describe_models(
    compute: &ComputeFile,
    models: &Models,
) -> anyhow::Result<Vec<funion_pki::ModelEntry>> {
    let mut entries = Vec::new();
    for file in &compute.models {
        let Some(backend) = models.get(&file.name) else {
            continue;
        };
        let facts = match &file.path {
            Some(path) => Some(
                funion_inference::card::LocalModel::open(path)
                    .map_err(|e| anyhow::anyhow!("model {}: {e:#}", file.name))?
                    .facts,
            ),
            None => None,
        };
        let context = facts.as_ref().map_or(8_192, |f| f.context);
        let task = backend.task();
        let probe = |max_tokens: u32, seed: u64| -> anyhow::Result<(f64, usize)> {
            let item = funion_compute::WorkItem {
                job: 0,
                model: file.name.clone(),
                task,
                tokens: (0..PROBE_PROMPT as u32).map(|i| 3 + i % 60).collect(),
                // Sampled, so that a probe prompt rarely ends at once.
                sampling: funion_compute::Sampling {
                    seed,
                    temperature: 1.0,
                    top_p: None,
                    max_tokens,
                },
                // Embeddings: the largest class holds any model's vector.
                output_class: match task {
                    funion_compute::Task::Generate => funion_compute::OUTPUT_CLASSES[0],
                    funion_compute::Task::Embed => {
                        *funion_compute::OUTPUT_CLASSES.last().expect("classes")
                    }
                },
            };
            let clock = Instant::now();
            let outcome = backend
                .run(std::slice::from_ref(&item))
                .pop()
                .unwrap_or_else(|| Err("no outcome".into()))
                .map_err(|e| anyhow::anyhow!("model {} failed its probe: {e}", file.name))?;
            let items = match outcome {
                funion_compute::Outcome::Tokens(t) => t.len(),
                funion_compute::Outcome::Embedding(v) => v.len(),
                _ => 0,
            };
            Ok((clock.elapsed().as_secs_f64(), items))
        };
        // The first run warms the model up and is not counted.
        probe(1, 0)?;
        let (first_s, first_items) = probe(1, 0)?;
        let per_prompt_us = first_s * 1e6 / PROBE_PROMPT as f64;
        let (per_token_us, dimensions) = match task {
            funion_compute::Task::Generate => {
                // The longest of a few sampled runs: one that meets the end
                // of text at once measures nothing.
                let mut longest = (0.0, 0);
                for seed in 1..=4 {
                    let run = probe(1 + PROBE_TOKENS, seed)?;
                    if run.1 > longest.1 {
                        longest = run;
                    }
                    if run.1 > PROBE_TOKENS as usize {
                        break;
                    }
                }
                let (more_s, more_items) = longest;
                let extra = more_items.saturating_sub(first_items);
                let per_token = if extra >= 2 {
                    (more_s - first_s).max(0.0) / extra as f64 * 1e6
                } else {
                    // No run got going: a step per token is at least a
                    // prompt token's cost; publish a generous bound.
                    tracing::warn!(model = %file.name, "probe generated {more_items} tokens; publishing a bound for the per-token time");
                    per_prompt_us * 8.0
                };
                (per_token as u64, 0)
            }
            funion_compute::Task::Embed => (0, first_items as u32),
        };
        let timings = funion_compute::INPUT_CLASSES
            .iter()
            .filter(|&&class| class < context)
            .map(|&class| funion_pki::ClassTiming {
                input_class: class,
                prefill_us: (per_prompt_us * f64::from(class)) as u64,
                per_token_us,
            })
            .collect();
        entries.push(funion_pki::ModelEntry {
            name: file.name.clone(),
            task: match task {
                funion_compute::Task::Generate => funion_pki::ModelTask::Generate,
                funion_compute::Task::Embed => funion_pki::ModelTask::Embed,
            },
            tokenizer_digest: facts.as_ref().map(|f| f.tokenizer_digest),
            template_digest: facts.as_ref().and_then(|f| f.template_digest),
            context,
            dimensions,
            timings,
            batch_wait_ms: compute.batch_window_ms.min(u64::from(u32::MAX)) as u32,
        });
    }
    Ok(entries)
}
