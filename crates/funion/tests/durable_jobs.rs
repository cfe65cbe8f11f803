//! A compute courier that stops while it holds accepted jobs finishes them
//! after it starts again: on a --fast devnet with the real MiniLM, two paid
//! jobs (one by the fast path, one by the store path) are accepted by one
//! service node's compute courier, the node is stopped and started again
//! from its config and data folder, and both embeddings come home, each
//! equal to what the model gives directly.

mod common;

use funion_client::jobs::run_jobs;
use funion_compute::{JobPath, Outcome};
use funion_inference::candle_bert::BertEmbedder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_jobs_survive_a_compute_courier_restart() {
    let paid = common::minilm_devnet("durable-jobs").await;
    let wallet = paid.funded_wallet("wallet.redb", 2).await;
    let (victim, courier) = paid.non_keeper_courier().await;
    let sentence = paid.tokens("Nothing paid for is forgotten.");
    let minilm = paid.minilm.clone();
    // Edges 20 s after the input is in hand (Δ = 5 ms): time for the
    // restart, which reloads the model and reconnects to the gateway.
    let embed = |path| paid.embed_job(&wallet, &sentence, courier, path, 4_000);
    let specs = vec![embed(JobPath::Fast), embed(JobPath::Store)];
    let mut net = paid.net;
    let client = net.client.clone();
    let jobs = tokio::spawn(async move { run_jobs(&client, specs).await });

    // Once the courier has taken both, stop its node and start it again.
    let metrics = net.node(&victim).unwrap().metrics.clone();
    common::wait_for_compute(
        &metrics,
        "jobs_taken",
        2,
        "the courier never took both jobs",
    )
    .await;
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
