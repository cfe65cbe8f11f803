//! Inference from the client's side: the job state machine
//! ([`funion_compute::JobClient`]: upload, dispatch, read at the edge) over
//! one mixnet session on the wall clock. Several jobs share the session
//! and run at once.

use std::collections::BTreeMap;

use funion_compute::client::{input_class_of, JobClient};
pub use funion_compute::client::{JobResult as JobReport, JobSpec, Timeline};
use funion_pki::KemKind;
use funion_sphinx::kem::{Kem, XWing, X25519};

use crate::session::Network;
use crate::storage::{at_time, StorageClient, StorageStats};
use funion_net::config::ClientFile;

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
    let period = credits.period_at(funion_net::unix_us() / 1_000_000);
    let periods = [period.saturating_sub(1), period];
    spec.tickets = wallet.take(&credits.provider, &periods, price as usize)?;
    Ok(())
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

/// Runs `specs` against the network `config` names.
pub async fn run_jobs(config: &ClientFile, specs: Vec<JobSpec>) -> anyhow::Result<JobsReport> {
    let network = Network::fetch(config).await?;
    run_jobs_over(network, specs).await
}

/// When to read outputs on this network: from its public delay model.
pub fn read_plan(parameters: &funion_pki::Parameters) -> funion_compute::ReadPlan {
    funion_compute::ReadPlan::from_timing(&funion_compute::MixTiming::new(
        parameters.mean_delay_us as f64,
        u32::from(parameters.hops),
        parameters.send_rate(),
    ))
}

/// `spec` as the network document says it can go: by the fast path only
/// where the compute courier it names (or, naming none, every one) offers
/// it, by the store path otherwise.
fn as_offered(mut spec: JobSpec, document: &funion_pki::NetworkDocument) -> JobSpec {
    if spec.path == funion_compute::JobPath::Fast {
        let mut services = document.with_role(funion_pki::Role::Service);
        let offered = match spec.courier {
            Some(i) => services.nth(i).is_some_and(|node| node.fast_path),
            None => services.all(|node| node.fast_path),
        };
        if !offered {
            spec.path = funion_compute::JobPath::Store;
        }
    }
    spec
}

/// Runs `specs` over an already fetched network.
async fn run_jobs_over(network: Network, specs: Vec<JobSpec>) -> anyhow::Result<JobsReport> {
    match network.parameters.kem {
        KemKind::XWing => run_kem::<XWing>(network, specs).await,
        KemKind::X25519 => run_kem::<X25519>(network, specs).await,
    }
}

async fn run_kem<K: Kem>(network: Network, specs: Vec<JobSpec>) -> anyhow::Result<JobsReport> {
    let mut client = StorageClient::<K>::over(network).await?;
    // A compute courier per job: which courier a person's jobs reach ties
    // nothing together (they batch with other people's jobs there).
    let mut jobs = JobClient::per_job(client.service_nodes());
    jobs.set_read_plan(read_plan(&client.network().parameters));
    let now = client.now();
    let ids: Vec<u64> = specs
        .into_iter()
        .map(|spec| {
            let spec = as_offered(spec, &client.network().document);
            let (core, rng) = client.parts();
            jobs.submit(now, rng, core, spec)
        })
        .collect();
    client.flush();
    let mut results = BTreeMap::new();
    loop {
        let now = client.now();
        let (core, rng) = client.parts();
        jobs.poll(now, rng, core);
        client.flush();
        results.extend(jobs.take_finished());
        if results.len() >= ids.len() {
            break;
        }
        let until = jobs.next_wakeup().map(|at| at_time(now, at));
        client.step(None, until).await?;
    }
    let jobs_done = ids
        .iter()
        .map(|id| {
            results
                .remove(id)
                .expect("every job finished")
                .map_err(anyhow::Error::from)
        })
        .collect();
    Ok(JobsReport {
        jobs: jobs_done,
        stats: client.stats(),
        dispatch_echoes: jobs.dispatch_echoes(),
    })
}

/// One job handed to a [`JobRunner`], with where its result goes.
struct Submission {
    spec: JobSpec,
    done: tokio::sync::oneshot::Sender<anyhow::Result<JobReport>>,
}

/// A long-lived client session that runs jobs as they are handed to it,
/// each concurrently with the others over the same mixnet session (one
/// gateway link, one stream of send slots, one cover process). The OpenAI
/// proxy keeps one for its whole life.
#[derive(Clone)]
pub struct JobRunner {
    submissions: tokio::sync::mpsc::UnboundedSender<Submission>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    document: std::sync::Arc<std::sync::RwLock<funion_pki::NetworkDocument>>,
    parameters: funion_pki::Parameters,
}

impl JobRunner {
    /// Connects to the network `config` names and starts the session's
    /// task, which ends when every handle is dropped or the session fails.
    pub async fn start(config: &ClientFile) -> anyhow::Result<Self> {
        let network = Network::fetch(config).await?;
        let parameters = network.parameters.clone();
        let document = std::sync::Arc::new(std::sync::RwLock::new(network.document.clone()));
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let (submissions, receiver) = tokio::sync::mpsc::unbounded_channel();
        let driver = Driver {
            receiver,
            wake: wake.clone(),
            document: document.clone(),
        };
        match parameters.kem {
            KemKind::XWing => driver.spawn::<XWing>(network).await?,
            KemKind::X25519 => driver.spawn::<X25519>(network).await?,
        }
        Ok(JobRunner {
            submissions,
            wake,
            document,
            parameters,
        })
    }

    /// Runs `spec` (paid already) and returns its report. A spec that
    /// names no courier gets one of those the document lists as serving
    /// its model, chosen uniformly per job.
    pub async fn run(&self, spec: JobSpec) -> anyhow::Result<JobReport> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.submissions
            .send(Submission { spec, done })
            .map_err(|_| anyhow::anyhow!("the client's session has ended"))?;
        self.wake.notify_one();
        result
            .await
            .map_err(|_| anyhow::anyhow!("the client's session ended before the job did"))?
    }

    /// The network's parameters.
    pub fn parameters(&self) -> &funion_pki::Parameters {
        &self.parameters
    }

    /// The newest network document the session follows.
    pub fn document(&self) -> funion_pki::NetworkDocument {
        self.document.read().expect("document lock").clone()
    }

    /// Every model the document's compute couriers publish, once each by
    /// name (the first listing), with how many couriers serve it.
    pub fn models(&self) -> Vec<(funion_pki::ModelEntry, usize)> {
        models_of(&self.document())
    }
}

/// The models a document's compute couriers serve, once each by name, with
/// how many couriers serve each.
pub fn models_of(document: &funion_pki::NetworkDocument) -> Vec<(funion_pki::ModelEntry, usize)> {
    let mut out: Vec<(funion_pki::ModelEntry, usize)> = Vec::new();
    for node in document.with_role(funion_pki::Role::Service) {
        for model in &node.models {
            match out.iter_mut().find(|(m, _)| m.name == model.name) {
                Some((_, count)) => *count += 1,
                None => out.push((model.clone(), 1)),
            }
        }
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    out
}

/// The positions, among the document's service nodes, of those whose
/// compute courier serves `model`.
pub fn couriers_serving(document: &funion_pki::NetworkDocument, model: &str) -> Vec<usize> {
    document
        .with_role(funion_pki::Role::Service)
        .enumerate()
        .filter(|(_, node)| node.models.iter().any(|m| m.name == model))
        .map(|(i, _)| i)
        .collect()
}

struct Driver {
    receiver: tokio::sync::mpsc::UnboundedReceiver<Submission>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    document: std::sync::Arc<std::sync::RwLock<funion_pki::NetworkDocument>>,
}

impl Driver {
    async fn spawn<K: Kem>(self, network: Network) -> anyhow::Result<()> {
        let client = StorageClient::<K>::over(network).await?;
        tokio::spawn(async move {
            if let Err(error) = self.drive(client).await {
                tracing::warn!(%error, "the job runner's session ended");
            }
        });
        Ok(())
    }

    async fn drive<K: Kem>(mut self, mut client: StorageClient<K>) -> anyhow::Result<()> {
        use rand_core::RngCore;
        let mut jobs = JobClient::new(0);
        jobs.set_read_plan(read_plan(&client.network().parameters));
        let mut waiting: BTreeMap<u64, tokio::sync::oneshot::Sender<anyhow::Result<JobReport>>> =
            BTreeMap::new();
        let mut open = true;
        loop {
            // New jobs.
            loop {
                match self.receiver.try_recv() {
                    Ok(Submission { mut spec, done }) => {
                        let document = self.document.read().expect("document lock").clone();
                        if spec.courier.is_none() {
                            let serving = couriers_serving(&document, &spec.model);
                            if serving.is_empty() {
                                let _ = done.send(Err(anyhow::anyhow!(
                                    "no compute courier in the network document serves {:?}",
                                    spec.model
                                )));
                                continue;
                            }
                            let pick = client.rng().next_u64() % serving.len() as u64;
                            spec.courier = Some(serving[pick as usize]);
                        }
                        let spec = as_offered(spec, &document);
                        let now = client.now();
                        let (core, rng) = client.parts();
                        let id = jobs.submit(now, rng, core, spec);
                        waiting.insert(id, done);
                    }
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let now = client.now();
            let (core, rng) = client.parts();
            jobs.poll(now, rng, core);
            client.flush();
            for (id, result) in jobs.take_finished() {
                if let Some(done) = waiting.remove(&id) {
                    let _ = done.send(result.map_err(anyhow::Error::from));
                }
            }
            if !open && waiting.is_empty() {
                return Ok(());
            }
            // Follow the document into each new epoch (models come and go);
            // the session's follower fetched it, off this loop.
            if let Some(fresh) = client.take_fresh_document() {
                *self.document.write().expect("document lock") = fresh;
            }
            let until = jobs.next_wakeup().map(|at| at_time(now, at));
            let wake = self.wake.clone();
            client.step(Some(&wake), until).await?;
        }
    }
}
