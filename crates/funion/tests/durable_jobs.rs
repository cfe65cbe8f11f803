//! A compute courier that stops while it holds accepted jobs finishes them
//! after it starts again: on a --fast devnet with the real MiniLM, two paid
//! jobs (one by the fast path, one by the store path) are accepted by one
//! service node's compute courier, the node is stopped and started again
//! from its config and data folder, and both embeddings come home, each
//! equal to what the model gives directly.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use funion_chain::U256;
use funion_client::jobs::{pay, run_jobs, JobSpec};
use funion_client::wallet::{top_up, Wallet};
use funion_compute::{JobPath, Outcome, Sampling, Task};
use funion_devnet::{self as devnet, DevnetOptions};
use funion_inference::{candle_bert::BertEmbedder, minilm_dir, TextTokenizer, MINILM};
use funion_ledger::LedgerClient;
use funion_net::config::{ComputeFile, ModelFile};
use funion_pki::{Parameters, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_jobs_survive_a_compute_courier_restart() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("durable-jobs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let minilm = minilm_dir().expect("scripts/setup-models installs the MiniLM package");
    let options = DevnetOptions {
        metrics: true,
        compute: Some(ComputeFile {
            models: vec![ModelFile::folder(MINILM, minilm.clone())],
            ..ComputeFile::default()
        }),
        ..DevnetOptions::default()
    };
    let mut parameters = Parameters::fast();
    parameters.credits.prices = funion_pki::Credits::flat_prices(1);
    let mut net = devnet::start_with(&dir, parameters.clone(), &options)
        .await
        .unwrap();
    let mut credits = parameters.credits.clone();
    credits.ledger_url = net.ledger_url.clone();
    let ledger = LedgerClient::new(&net.ledger_url).unwrap();
    let wallet = Arc::new(Wallet::open(&dir.join("wallet.redb")).unwrap());
    let registry = net.client_registry().unwrap();
    wallet
        .deposit_on_chain(
            &registry,
            &ledger,
            10,
            U256::from(devnet::DEVNET_MIN_POLICY_STAKE),
        )
        .await
        .unwrap();
    top_up(wallet.clone(), &credits, 2, 1, Arc::new(AtomicU64::new(0)))
        .await
        .unwrap();

    // The service node that records nullifiers through the other one (the
    // keeper holds the provider's set and stays up), and its place among
    // the document's service nodes.
    let victim = net
        .nodes
        .iter()
        .find(|n| {
            n.config
                .compute
                .as_ref()
                .is_some_and(|c| c.nullifiers.url.is_some())
        })
        .expect("two compute couriers")
        .config
        .name
        .clone();
    let http = funion_net::http_client().unwrap();
    let authorities = net.trusted_authorities().unwrap();
    let epoch = funion_pki::epoch_at(funion_net::unix_ms(), parameters.epoch_ms);
    let document = funion_net::fetch_document(&http, &authorities, epoch, true)
        .await
        .unwrap();
    let courier = document
        .with_role(Role::Service)
        .position(|n| n.name == victim)
        .expect("the victim is in the document");

    let sentence = TextTokenizer::load(&minilm)
        .unwrap()
        .encode("Nothing paid for is forgotten.")
        .unwrap();
    // Edges 20 s after the input is in hand (Δ = 5 ms): time for the
    // restart, which reloads the model and reconnects to the gateway.
    let embed = |path| {
        let mut spec = JobSpec {
            model: MINILM.into(),
            task: Task::Embed,
            tokens: sentence.clone(),
            output_class: 512,
            sampling: Sampling::default(),
            bucket: 4_000,
            tickets: Vec::new(),
            courier: Some(courier),
            path,
        };
        pay(&mut spec, &credits, &wallet).unwrap();
        spec
    };
    let specs = vec![embed(JobPath::Fast), embed(JobPath::Store)];
    let client = net.client.clone();
    let jobs = tokio::spawn(async move { run_jobs(&client, specs).await });

    // Once the courier has taken both, stop its node and start it again.
    let metrics = net.node(&victim).unwrap().metrics.clone();
    let mut waited = 0;
    while metrics.compute("jobs_taken") < 2 {
        assert!(waited < 3_000, "the courier never took both jobs");
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    net.restart(&victim).await.unwrap();

    let report = jobs.await.unwrap().unwrap();
    let restarted = net.node(&victim).unwrap().metrics.clone();
    assert_eq!(
        restarted.compute("jobs_restored"),
        2,
        "the restarted courier took both jobs again from disk"
    );
    let alone = BertEmbedder::load(&minilm)
        .unwrap()
        .embed(&[&sentence])
        .unwrap()
        .remove(0);
    for (job, path) in report.jobs.into_iter().zip([JobPath::Fast, JobPath::Store]) {
        let job = job.unwrap_or_else(|e| panic!("{path:?} job lost: {e:#}"));
        let Outcome::Embedding(vector) = &job.outcome else {
            panic!("{path:?} job: {:?}", job.outcome)
        };
        let diff = vector
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{path:?} embedding differs by {diff}");
    }
    net.stop();
}
