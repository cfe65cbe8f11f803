//! Inference from the client's side (paper §3.3): upload the padded tokens
//! under a fresh write cap, dispatch the job to a compute courier, read the
//! output boxes when the bucket edge has passed. Every step is an echo
//! through the mixnet; several jobs share one session and run at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use funion_bacap::{BoxId, ReadCap, WriteCap, Writer};
use funion_compute::{
    class_for, Dispatch, DispatchReply, Input, Outcome, Sampling, Task, INPUT_CLASSES,
};
use funion_pigeonhole::envelope::Request;
use funion_pigeonhole::stream;
use funion_pki::KemKind;
use funion_sphinx::kem::{Kem, XWing, X25519};
use rand_core::RngCore;

use crate::client::Network;
use crate::compute::{boxes_for, COMPUTE_SERVICE};
use crate::config::ClientFile;
use crate::storage::{box_id, open_box, BatchId, StorageClient, StorageStats};

/// One job to run.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Model name.
    pub model: String,
    /// Generation or embedding.
    pub task: Task,
    /// The prompt's token IDs (tokenized locally).
    pub tokens: Vec<u32>,
    /// Output class.
    pub output_class: u32,
    /// Sampling parameters.
    pub sampling: Sampling,
    /// Latency bucket index `j`.
    pub bucket: u32,
    /// The credit tickets that pay for the job's cell (taken out of the
    /// wallet's book by [`pay`]).
    pub tickets: Vec<Vec<u8>>,
    /// Which service node's compute courier to use (an index into the
    /// document's service nodes); `None` lets the run choose one at random.
    pub courier: Option<usize>,
}

/// The input class a prompt of `tokens` tokens is padded to.
pub fn input_class_of(tokens: usize) -> anyhow::Result<u32> {
    class_for(&INPUT_CLASSES, tokens)
        .ok_or_else(|| anyhow::anyhow!("{tokens} tokens exceed the largest input class"))
}

/// Takes the tickets `spec`'s cell costs out of `wallet`'s book (durably:
/// they are never handed out again) and puts them in the spec.
pub fn pay(
    spec: &mut JobSpec,
    credits: &funion_pki::Credits,
    wallet: &crate::wallet::Wallet,
) -> anyhow::Result<()> {
    let input_class = input_class_of(spec.tokens.len())?;
    let price = credits
        .tickets_for(input_class, spec.output_class)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the cell ({input_class}, {}) has no price in the network document",
                spec.output_class
            )
        })?;
    // Couriers still take the period just ended: spend its leftovers first.
    let period = credits.period_at(unix_us() / 1_000_000);
    let periods = [period.saturating_sub(1), period];
    spec.tickets = wallet.take(&credits.provider, &periods, price as usize)?;
    Ok(())
}

/// When each step of a job happened, microseconds since the Unix epoch.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// Upload started.
    pub started: u64,
    /// Every input box stored.
    pub uploaded: u64,
    /// Dispatch handed to the mixnet client.
    pub dispatched: u64,
    /// The compute courier's answer arrived.
    pub accepted: u64,
    /// `j·Δ`, as the courier confirmed.
    pub edge_after_us: u64,
    /// The read of the output was handed to the mixnet client.
    pub fetch_sent: u64,
    /// The output was read.
    pub done: u64,
}

/// What one job gave.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// The outcome (tokens, an embedding, OVERFLOW, or the courier's error).
    pub outcome: Outcome,
    /// The input class the prompt was padded to.
    pub input_class: u32,
    /// The first output box (to find the compute courier's record in tests).
    pub output_box: BoxId,
    /// Output boxes read.
    pub output_boxes: usize,
    /// Steps.
    pub timeline: Timeline,
}

/// What a run of jobs gave.
#[derive(Debug)]
pub struct JobsReport {
    /// Each job's report or error, in the order given.
    pub jobs: Vec<anyhow::Result<JobReport>>,
    /// The session's storage traffic (echoes, polls, resends).
    pub stats: StorageStats,
    /// Echoes that were dispatches.
    pub dispatch_echoes: u64,
}

enum Phase {
    Uploading(BatchId),
    Dispatching,
    Waiting(Instant),
    Fetching,
    Done(anyhow::Result<Outcome>),
}

struct Job {
    spec: JobSpec,
    input_class: u32,
    read_cap_in: ReadCap,
    ctx_in: Vec<u8>,
    write_cap_out: WriteCap,
    ctx_out: Vec<u8>,
    output_box: BoxId,
    phase: Phase,
    timeline: Timeline,
}

/// Runs `specs` against the network `config` names.
pub async fn run_jobs(config: &ClientFile, specs: Vec<JobSpec>) -> anyhow::Result<JobsReport> {
    let network = Network::fetch(config).await?;
    run_jobs_over(network, specs).await
}

/// Runs `specs` over an already fetched network.
pub async fn run_jobs_over(network: Network, specs: Vec<JobSpec>) -> anyhow::Result<JobsReport> {
    match network.parameters.kem {
        KemKind::XWing => run_kem::<XWing>(network, specs).await,
        KemKind::X25519 => run_kem::<X25519>(network, specs).await,
    }
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn fresh_context(rng: &mut impl RngCore) -> Vec<u8> {
    let mut ctx = vec![0u8; 16];
    rng.fill_bytes(&mut ctx);
    ctx
}

async fn run_kem<K: Kem>(network: Network, specs: Vec<JobSpec>) -> anyhow::Result<JobsReport> {
    let mut client = StorageClient::<K>::over(network).await?;
    let box_len = client.box_payload();
    // One compute courier for the whole run, so jobs of one bucket can be
    // batched there.
    let services = client.service_nodes().max(1) as u64;
    let courier = (client.rng().next_u64() % services) as usize;
    let mut jobs = Vec::with_capacity(specs.len());
    let mut dispatch_echoes = 0;
    for spec in specs {
        let input_class = input_class_of(spec.tokens.len())?;
        let payload = Input {
            tokens: spec.tokens.clone(),
        }
        .encode(input_class)?;
        let rng = client.rng();
        let cap_in = WriteCap::generate(rng);
        let ctx_in = fresh_context(rng);
        let write_cap_out = WriteCap::generate(rng);
        let ctx_out = fresh_context(rng);
        let read_cap_in = cap_in.read_cap();
        let output_box = box_id(&write_cap_out.read_cap(), &ctx_out, 0)?;
        let mut writer = Writer::new(cap_in, &ctx_in);
        let requests = stream::split(&payload, box_len)
            .iter()
            .map(|plain| writer.seal_next(plain).map(Request::Write))
            .collect::<Result<Vec<_>, _>>()?;
        let timeline = Timeline {
            started: unix_us(),
            ..Timeline::default()
        };
        let batch = client.start(requests)?;
        jobs.push(Job {
            spec,
            input_class,
            read_cap_in,
            ctx_in,
            write_cap_out,
            ctx_out,
            output_box,
            phase: Phase::Uploading(batch),
            timeline,
        });
    }
    let mut by_batch: HashMap<BatchId, usize> = jobs
        .iter()
        .enumerate()
        .filter_map(|(i, j)| match j.phase {
            Phase::Uploading(b) => Some((b, i)),
            _ => None,
        })
        .collect();
    let mut by_seq: HashMap<u64, usize> = HashMap::new();
    while jobs.iter().any(|j| !matches!(j.phase, Phase::Done(_))) {
        let now = Instant::now();
        for (i, job) in jobs.iter_mut().enumerate() {
            if let Phase::Waiting(at) = job.phase {
                if at <= now {
                    let cap = job.write_cap_out.read_cap();
                    let count = boxes_for(Outcome::padded_len(job.spec.output_class), box_len);
                    let requests = (0..count as u64)
                        .map(|n| box_id(&cap, &job.ctx_out, n).map(Request::Read))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let batch = client.start(requests)?;
                    by_batch.insert(batch, i);
                    job.timeline.fetch_sent = unix_us();
                    job.phase = Phase::Fetching;
                }
            }
        }
        let until = jobs
            .iter()
            .filter_map(|j| match j.phase {
                Phase::Waiting(at) => Some(tokio::time::Instant::from_std(at)),
                _ => None,
            })
            .min();
        for (batch, results) in client.advance(None, until).await? {
            let Some(i) = by_batch.remove(&batch) else {
                continue;
            };
            let job = &mut jobs[i];
            match job.phase {
                Phase::Uploading(_) => {
                    if let Some((n, Err(code))) =
                        results.iter().enumerate().find(|(_, r)| r.is_err())
                    {
                        job.phase = Phase::Done(Err(anyhow::anyhow!("input box {n}: {code}")));
                        continue;
                    }
                    job.timeline.uploaded = unix_us();
                    let dispatch = Dispatch {
                        read_cap_in: job.read_cap_in.to_bytes().to_vec(),
                        ctx_in: job.ctx_in.clone(),
                        write_cap_out: job.write_cap_out.to_bytes().to_vec(),
                        ctx_out: job.ctx_out.clone(),
                        model: job.spec.model.clone(),
                        task: job.spec.task,
                        input_class: job.input_class,
                        output_class: job.spec.output_class,
                        sampling: job.spec.sampling,
                        bucket: job.spec.bucket,
                        tickets: job.spec.tickets.clone(),
                    };
                    dispatch.check()?;
                    let target = job.spec.courier.unwrap_or(courier);
                    let seq = client.send_to_service(COMPUTE_SERVICE, target, dispatch.encode());
                    dispatch_echoes += 1;
                    by_seq.insert(seq, i);
                    job.timeline.dispatched = unix_us();
                    job.phase = Phase::Dispatching;
                }
                Phase::Fetching => {
                    let cap = job.write_cap_out.read_cap();
                    let opened = results
                        .into_iter()
                        .enumerate()
                        .map(|(n, r)| match r {
                            Ok(Some(item)) => open_box(&cap, &job.ctx_out, n as u64, &item),
                            Ok(None) => Err(anyhow::anyhow!("no box came back")),
                            Err(code) => Err(anyhow::anyhow!("output box {n}: {code}")),
                        })
                        .collect::<anyhow::Result<Vec<_>>>();
                    job.timeline.done = unix_us();
                    job.phase = Phase::Done(opened.and_then(|boxes| {
                        let bytes = stream::join(&boxes)?;
                        Ok(Outcome::decode(&bytes, job.spec.output_class)?)
                    }));
                }
                _ => {}
            }
        }
        for (seq, reply) in client.take_service_replies() {
            let Some(i) = by_seq.remove(&seq) else {
                continue;
            };
            let job = &mut jobs[i];
            job.timeline.accepted = unix_us();
            let reply = reply
                .ok_or_else(|| anyhow::anyhow!("no compute courier answered the dispatch"))
                .and_then(|body| Ok(DispatchReply::decode(&body)?));
            job.phase = match reply {
                Ok(DispatchReply::Accepted { edge_after_us }) => {
                    job.timeline.edge_after_us = edge_after_us;
                    // The courier took the job one way (its reply's way back)
                    // before now: reading at now + j·Δ leaves that much time
                    // for its output, which leaves at the edge, to reach the
                    // replicas ahead of our read.
                    Phase::Waiting(Instant::now() + Duration::from_micros(edge_after_us))
                }
                Ok(DispatchReply::Refused { reason }) => Phase::Done(Err(anyhow::anyhow!(
                    "the compute courier refused: {reason}"
                ))),
                Err(e) => Phase::Done(Err(e)),
            };
        }
    }
    let stats = client.stats().clone();
    let jobs = jobs
        .into_iter()
        .map(|job| {
            let Phase::Done(outcome) = job.phase else {
                unreachable!("the loop ends when every job is done")
            };
            outcome.map(|outcome| JobReport {
                outcome,
                input_class: job.input_class,
                output_box: job.output_box,
                output_boxes: boxes_for(Outcome::padded_len(job.spec.output_class), box_len),
                timeline: job.timeline,
            })
        })
        .collect();
    Ok(JobsReport {
        jobs,
        stats,
        dispatch_echoes,
    })
}
