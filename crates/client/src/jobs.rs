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
    let now = client.now();
    let ids: Vec<u64> = specs
        .into_iter()
        .map(|spec| {
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
