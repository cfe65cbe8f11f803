//! A slow ledger does not delay a bucket release: on a --fast devnet with
//! the real MiniLM, job A is accepted by a compute courier; then the
//! ledger is replaced by a listener that takes connections and never
//! answers, and job B, paid from a deposit made after A (so the courier
//! must ask the ledger for its fresh roots), reaches the same courier. A's
//! embedding comes home at its edge while B's payment check still hangs;
//! B is then refused with the reason, not taken unpaid.

mod common;

use std::time::Duration;

use funion_client::jobs::run_jobs;
use funion_compute::{JobPath, Outcome};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_ledger_does_not_delay_a_bucket_release() {
    let paid = common::minilm_devnet("slow-ledger").await;
    let first = paid.funded_wallet("first.redb", 1).await;
    let (name, courier) = paid.non_keeper_courier().await;
    let tokens = paid.tokens("The edge does not wait for the ledger.");
    let metrics = paid.net.node(&name).unwrap().metrics.clone();

    // A: due 30 s after its input is in hand (Δ = 5 ms), time enough for
    // the second deposit below.
    let a = paid.embed_job(&first, &tokens, courier, JobPath::Fast, 6_000);
    let client = paid.net.client.clone();
    let job_a = tokio::spawn(async move { run_jobs(&client, vec![a]).await });
    common::wait_for_compute(&metrics, "jobs_taken", 1, "the courier never took job A").await;

    // A deposit the courier has not seen the root of, then the ledger
    // goes silent on the same port.
    let second = paid.funded_wallet("second.redb", 1).await;
    let b = paid.embed_job(&second, &tokens, courier, JobPath::Fast, 1);
    paid.net.ledger.abort();
    let address = paid
        .net
        .ledger_url
        .trim_start_matches("http://")
        .to_string();
    let mut silent = None;
    for _ in 0..100 {
        match TcpListener::bind(&address).await {
            Ok(listener) => {
                silent = Some(listener);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let silent = silent.expect("the ledger's port is free again");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let client = paid.net.client.clone();
    let job_b = tokio::spawn(async move { run_jobs(&client, vec![b]).await });
    common::wait_for_compute(
        &metrics,
        "admitting",
        1,
        "job B's payment check never started",
    )
    .await;

    // A comes home while B's check still waits on the ledger.
    let report_a = job_a.await.unwrap().unwrap();
    let still_checking = metrics.compute("admitting");
    let b_finished = job_b.is_finished();
    let outcome = &report_a.jobs[0].as_ref().expect("job A").outcome;
    assert!(
        matches!(outcome, Outcome::Embedding(v) if v.len() == 384),
        "{outcome:?}"
    );
    assert_eq!(still_checking, 1, "A left while B's check was running");
    assert!(!b_finished, "B was not answered before A left");

    // B is refused once the ledger call gives up: never taken unpaid.
    let report_b = job_b.await.unwrap().unwrap();
    let error = report_b.jobs[0]
        .as_ref()
        .expect_err("job B cannot be checked");
    assert!(
        format!("{error:#}").contains("cannot check tickets now"),
        "{error:#}"
    );
    assert_eq!(metrics.compute("jobs_taken"), 1);
    holder.abort();
    paid.net.stop();
}
