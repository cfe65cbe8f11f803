//! Anonymous inference end to end on a --fast devnet over real sockets:
//! the compute couriers on the service nodes serve the tiny seeded llama
//! and the real all-MiniLM-L6-v2. A generation and an embedding equal what
//! the backends give directly; every output leaves on its bucket edge, never
//! before; an overrun gives OVERFLOW at the edge; the output boxes are the
//! same number and size whatever the outcome; twenty jobs of one bucket run
//! as one batch. Every job pays with real RLN tickets from a wallet; a
//! ticket sent again is refused as a replay, and two tickets for one message
//! id sent to the two different compute couriers are caught as a double
//! spend, which slashes the deposit at the ledger.

use std::path::PathBuf;

use funion_chain::registry::CreditRegistryEvents;
use funion_chain::U256;
use funion_client::jobs::{pay, run_jobs, JobSpec};
use funion_client::wallet::{top_up, Wallet};
use funion_compute::{JobPath, Outcome, Sampling, Task, WorkItem};
use funion_compute_node::journal_entry;
use funion_devnet::{self as devnet, DevnetOptions};
use funion_inference::{
    candle_bert::BertEmbedder, load_folder, minilm_dir, tiny, TextTokenizer, MINILM,
};
use funion_ledger::{DepositState, LedgerClient};
use funion_net::config::{ComputeFile, ModelFile};
use funion_pki::Parameters;
use funion_tickets::{Prover, Scope, TicketRequest};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

const TINY: &str = "tiny-llama";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_on_a_devnet() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("inference-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tiny_dir = dir.join("tiny-llama");
    tiny::write_tiny_llama(&tiny_dir, tiny::SEED, tiny::TinyShape::default()).unwrap();
    let minilm = minilm_dir().expect("scripts/setup-models installs the MiniLM package");
    let options = DevnetOptions {
        metrics: true,
        compute: Some(ComputeFile {
            models: vec![
                ModelFile::folder(TINY, tiny_dir.clone()),
                ModelFile::folder(MINILM, minilm.clone()),
            ],
            // A batch runs when twenty jobs are in, or halfway to its edge.
            batch_window_ms: 60_000,
            max_batch: 20,
            ..ComputeFile::default()
        }),
        ..DevnetOptions::default()
    };
    let mut parameters = Parameters::fast();
    // One ticket a job keeps the proving in this test short; the price
    // table itself is checked in the runtime's credits tests.
    parameters.credits.prices = funion_pki::Credits::flat_prices(1);
    let delta = parameters.bucket_spacing_us;
    let net = devnet::start_with(&dir, parameters.clone(), &options)
        .await
        .unwrap();
    let mut credits = parameters.credits.clone();
    credits.ledger_url = net.ledger_url.clone();
    let ledger = LedgerClient::new(&net.ledger_url).unwrap();
    let wallet = Arc::new(Wallet::open(&dir.join("wallet.redb")).unwrap());
    let registry = net.client_registry().unwrap();
    let paid_from = registry.balance(registry.sender()).await.unwrap();
    wallet
        .deposit_on_chain(
            &registry,
            &ledger,
            100,
            U256::from(devnet::DEVNET_MIN_POLICY_STAKE),
        )
        .await
        .unwrap();
    let d = U256::from(100 * devnet::DEVNET_STAKE_PER_TICKET);
    assert!(
        registry.balance(registry.sender()).await.unwrap()
            <= paid_from - d - U256::from(devnet::DEVNET_MIN_POLICY_STAKE),
        "the deposit was paid in ether"
    );
    let proved = top_up(wallet.clone(), &credits, 23, 2, Arc::new(AtomicU64::new(0)))
        .await
        .unwrap();
    assert_eq!(proved, 23);
    let paid = |mut spec: JobSpec| {
        pay(&mut spec, &credits, &wallet).unwrap();
        spec
    };

    let llama_tokens = TextTokenizer::load(&tiny_dir)
        .unwrap()
        .encode("Who asked what?")
        .unwrap();
    let bert_tokenizer = TextTokenizer::load(&minilm).unwrap();
    let sentence = bert_tokenizer
        .encode("Anonymous inference over a mix network.")
        .unwrap();
    let sampling = Sampling {
        seed: 42,
        temperature: 0.8,
        top_p: Some(0.95),
        max_tokens: 16,
    };
    let generate = |bucket, path| JobSpec {
        model: TINY.into(),
        task: Task::Generate,
        tokens: llama_tokens.clone(),
        output_class: 256,
        sampling,
        bucket,
        tickets: Vec::new(),
        courier: None,
        path,
    };
    let embed = |tokens: Vec<u32>, bucket, path| JobSpec {
        model: MINILM.into(),
        task: Task::Embed,
        tokens,
        output_class: 512,
        sampling: Sampling::default(),
        bucket,
        tickets: Vec::new(),
        courier: None,
        path,
    };

    // One generation by the fast path (the input inside the dispatch, the
    // output home through the held SURB), one embedding by the store path
    // (boxes both ways); the edge is 6 s after the courier has the input,
    // each runs halfway there, after waiting for company. One generation
    // by the serial path with a 5 ms bucket that the fetch alone overruns.
    let report = run_jobs(
        &net.client,
        vec![
            paid(generate(1200, JobPath::Fast)),
            paid(embed(sentence.clone(), 1200, JobPath::Store)),
            paid(generate(1, JobPath::Serial)),
        ],
    )
    .await
    .unwrap();
    let mut results = report.jobs.into_iter().map(Result::unwrap);
    let (generated, embedded, overflowed) = (
        results.next().unwrap(),
        results.next().unwrap(),
        results.next().unwrap(),
    );

    // The courier runs what the wire carries: the nearest public preset.
    let direct = load_folder(&tiny_dir).unwrap().run(&[WorkItem {
        job: 0,
        model: TINY.into(),
        task: Task::Generate,
        tokens: llama_tokens.clone(),
        sampling: sampling.on_the_wire(256),
        output_class: 256,
    }]);
    assert_eq!(
        Ok(generated.outcome.clone()),
        direct[0],
        "same seed, same tokens"
    );
    let Outcome::Embedding(vector) = &embedded.outcome else {
        panic!("{:?}", embedded.outcome)
    };
    let alone = BertEmbedder::load(&minilm)
        .unwrap()
        .embed(&[&sentence])
        .unwrap()
        .remove(0);
    let diff = vector
        .iter()
        .zip(&alone)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert_eq!(vector.len(), 384);
    assert!(diff < 1e-5, "embedding differs by {diff}");
    assert_eq!(overflowed.outcome, Outcome::Overflow);

    assert!(
        generated.held_reply,
        "the fast path's output came home through its held SURB"
    );
    assert_eq!(generated.echoes, 1, "one echo: the dispatch");
    assert!(!embedded.held_reply && !overflowed.held_reply);
    let records: Vec<_> = [&generated, &embedded, &overflowed]
        .iter()
        .map(|r| journal_entry(&r.output_box).expect("the courier recorded the job"))
        .collect();
    let buckets = [
        (1200u64, JobPath::Fast),
        (1200, JobPath::Store),
        (1, JobPath::Serial),
    ];
    for (r, (bucket, path)) in records.iter().zip(buckets) {
        // The fast and store paths' buckets count from the input in hand
        // (the fast path's came with the dispatch), the serial path's from
        // the dispatch.
        let from = match path {
            JobPath::Serial => r.taken,
            _ => r.fetched.expect("the input was in hand"),
        };
        assert_eq!(r.edge - from, bucket * delta, "t_j = start + j·Δ");
        assert!(
            r.released >= r.edge,
            "released {} µs before its edge",
            r.edge - r.released
        );
        eprintln!("released {} µs after the edge", r.released - r.edge);
    }
    assert!(!records[0].overflow && !records[1].overflow && records[2].overflow);
    // Same output class, same boxes: a result and OVERFLOW look alike.
    // (The fast path's went home through its SURB, no boxes written; the
    // overrun's boxes are as many as the class's result would fill.)
    assert_eq!(records[0].boxes, 0);
    assert_eq!(records[2].boxes, generated.output_boxes);
    assert_eq!(generated.output_boxes, overflowed.output_boxes);
    assert!(records[2].started.is_none(), "an overrun job never runs");

    // Twenty embeddings in one bucket (30 s): their dispatches and fetches
    // spread over a second or so (more on a loaded machine); the batch runs
    // once all twenty are in (the courier's largest batch), long before it
    // is halfway to the edge; each result is the backend's.
    let texts: Vec<String> = (0..20)
        .map(|i| format!("Question number {i} about the weather."))
        .collect();
    let specs: Vec<JobSpec> = texts
        .iter()
        .map(|t| JobSpec {
            // One courier for all twenty (the client picks one per job
            // unless a spec names it), so they batch there.
            courier: Some(0),
            ..paid(embed(
                bert_tokenizer.encode(t).unwrap(),
                6000,
                JobPath::Store,
            ))
        })
        .collect();
    let report = run_jobs(&net.client, specs.clone()).await.unwrap();
    let embedder = BertEmbedder::load(&minilm).unwrap();
    let mut jitter = Vec::new();
    let reports: Vec<_> = report.jobs.into_iter().map(Result::unwrap).collect();
    let records: Vec<_> = reports
        .iter()
        .map(|j| journal_entry(&j.output_box).unwrap())
        .collect();
    for ((job, spec), record) in reports.into_iter().zip(&specs).zip(records) {
        assert_eq!(
            record.batch_size, 20,
            "ran in a batch of {}",
            record.batch_size
        );
        assert!(record.released >= record.edge);
        jitter.push(record.released - record.edge);
        let Outcome::Embedding(v) = job.outcome else {
            panic!()
        };
        let alone = embedder.embed(&[&spec.tokens]).unwrap().remove(0);
        let diff = v
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "batched embedding differs by {diff}");
    }
    jitter.sort_unstable();
    eprintln!(
        "20 jobs: release after the edge median {} µs, max {} µs; echoes {} for 20 jobs (client side)",
        jitter[10], jitter[19], report.stats.echoes
    );
    let largest: u64 = net
        .nodes
        .iter()
        .map(|n| n.metrics.compute("largest_batch"))
        .max()
        .unwrap();
    assert_eq!(largest, 20);
    let accepted: u64 = net
        .nodes
        .iter()
        .map(|n| n.metrics.compute("tickets_accepted"))
        .sum();
    assert_eq!(accepted, 23, "every job paid one ticket");

    // A ticket already spent, sent again in a new job: a replay.
    let spent = specs[0].tickets.clone();
    let replay = JobSpec {
        tickets: spent,
        courier: Some(1),
        ..embed(sentence.clone(), 1200, JobPath::Fast)
    };
    let report = run_jobs(&net.client, vec![replay]).await.unwrap();
    let refused = report.jobs[0].as_ref().unwrap_err().to_string();
    assert!(refused.contains("replay"), "{refused}");

    // Two tickets for one message id (a client that cheats), one to each
    // compute courier: the second is caught and the deposit slashed.
    let identity = wallet.identity().unwrap();
    let info = wallet.deposit_info().unwrap().unwrap();
    let path = ledger.path(info.index).await.unwrap().path;
    let scope = Scope {
        period: credits.period_at(funion_net::unix_ms() / 1000),
        provider: credits.provider.clone(),
    };
    let message_id = wallet
        .reserve(&scope.provider, scope.period, 1)
        .unwrap()
        .start;
    let prover = Prover::default();
    let cheat = |nonce: u8| {
        prover
            .prove(&TicketRequest {
                identity: &identity,
                limit: info.limit,
                path: &path,
                scope: &scope,
                message_id,
                nonce: [nonce; 32],
            })
            .unwrap()
            .encode()
    };
    let (first, second) = (cheat(1), cheat(2));
    let slasher = net.slasher_address().unwrap();
    let slasher_before = registry.balance(slasher).await.unwrap();
    let from_block = registry.head().await.unwrap();
    let at = |courier, ticket| JobSpec {
        tickets: vec![ticket],
        courier: Some(courier),
        ..embed(sentence.clone(), 1200, JobPath::Fast)
    };
    let report = run_jobs(&net.client, vec![at(0, first)]).await.unwrap();
    assert!(report.jobs[0].is_ok(), "the first use is fine");
    let report = run_jobs(&net.client, vec![at(1, second)]).await.unwrap();
    let refused = report.jobs[0].as_ref().unwrap_err().to_string();
    assert!(refused.contains("double-spends"), "{refused}");
    // The slash is two transactions (commit, then reveal in a later
    // block) and the ledger indexes it one confirmation later.
    let claimant = format!("{slasher:#x}");
    let mut deposit = ledger.status(&identity.commitment()).await.unwrap();
    for _ in 0..600 {
        if deposit.state != DepositState::Active {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        deposit = ledger.status(&identity.commitment()).await.unwrap();
    }
    assert_eq!(
        deposit.state,
        DepositState::Slashed {
            claimant: claimant.clone()
        }
    );
    assert_eq!(
        ledger.balance(&claimant).await.unwrap(),
        100 * u128::from(devnet::DEVNET_STAKE_PER_TICKET)
    );
    // On the chain: the Slashed event names the slasher and D, and its
    // balance rose by D less the two transactions' fees.
    let events = registry
        .events(from_block, registry.head().await.unwrap())
        .await
        .unwrap();
    let mut fees = U256::ZERO;
    let mut slashed = None;
    for event in &events {
        match &event.event {
            CreditRegistryEvents::SlashCommitted(c) if c.revealer == slasher => {
                fees += registry.fee_of(event.transaction).await.unwrap();
            }
            CreditRegistryEvents::Slashed(s) => {
                fees += registry.fee_of(event.transaction).await.unwrap();
                slashed = Some(s.clone());
            }
            _ => {}
        }
    }
    let slashed = slashed.expect("a Slashed event on the chain");
    assert_eq!(slashed.revealer, slasher);
    assert_eq!(slashed.paid, d);
    assert_eq!(
        registry.balance(slasher).await.unwrap(),
        slasher_before + d - fees,
        "the revealer's balance rose by D"
    );
    net.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
