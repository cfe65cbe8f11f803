//! The official OpenAI Python SDK against `funion proxy` on a --fast devnet
//! over real sockets: the compute couriers serve SmolLM2-135M-Instruct and
//! all-MiniLM-L6-v2, the proxy keeps its own ticket book (it starts empty
//! and proves in the background) and the SDK checks models, chat (plain and
//! streamed), completions, embeddings, errors and two concurrent requests
//! (`tests/openai_sdk.py` holds the assertions).

use std::path::PathBuf;
use std::process::Stdio;

use funion_client::wallet::Wallet;
use funion_devnet::{self as devnet, DevnetOptions};
use funion_inference::{minilm_dir, smollm2_gguf, MINILM, SMOLLM2};
use funion_ledger::LedgerClient;
use funion_net::config::{ComputeFile, ModelFile};
use funion_pki::Parameters;
use funion_proxy::book::BookPolicy;
use funion_proxy::{Proxy, ProxyOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_against_the_proxy() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("openai-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let smollm2 = smollm2_gguf().expect("scripts/setup-models installs SmolLM2-135M-Instruct");
    let minilm = minilm_dir().expect("scripts/setup-models installs all-MiniLM-L6-v2");
    let options = DevnetOptions {
        compute: Some(ComputeFile {
            models: vec![
                ModelFile::folder(SMOLLM2, smollm2),
                ModelFile::folder(MINILM, minilm),
            ],
            ..ComputeFile::default()
        }),
        ..DevnetOptions::default()
    };
    let mut parameters = Parameters::fast();
    // One ticket a job keeps the background proving short; the price table
    // itself is checked in the runtime's credits tests.
    parameters.credits.prices = funion_pki::Credits::flat_prices(1);
    let net = devnet::start_with(&dir, parameters, &options)
        .await
        .unwrap();
    assert!(
        net.client.models.iter().any(|m| m.name == SMOLLM2),
        "the devnet's client config says where the chat model's tokenizer is"
    );
    let wallet_path = dir.join("wallet.redb");
    // Paid in ether to the registry on the devnet's anvil.
    Wallet::open(&wallet_path)
        .unwrap()
        .deposit_on_chain(
            &net.client_registry().unwrap(),
            &LedgerClient::new(&net.ledger_url).unwrap(),
            100,
            funion_chain::U256::from(devnet::DEVNET_MIN_POLICY_STAKE),
        )
        .await
        .unwrap();
    let proxy = Proxy::start(ProxyOptions {
        client: net.client.clone(),
        wallet: wallet_path.clone(),
        models: net
            .client
            .models
            .iter()
            .map(|m| (m.name.clone(), m.path.clone()))
            .collect(),
        book: BookPolicy {
            low_water: 6,
            batch: 3,
            ..BookPolicy::default()
        },
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let served = tokio::spawn(funion_proxy::serve(listener, proxy.clone()));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_sdk.py");
    let base_url = format!("http://{address}/v1");
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .env("OPENAI_BASE_URL", base_url)
            .env("FUNION_CHAT_MODEL", SMOLLM2)
            .env("FUNION_EMBED_MODEL", MINILM)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (scripts/setup-models installs the openai package)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        run.status.success(),
        "the SDK's checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"));

    // What the compute couriers spent running the models, beside the times
    // the SDK saw (the operator's figure: it never leaves the node).
    let (mut busy_us, mut items) = (0, 0);
    for node in &net.nodes {
        busy_us += node.metrics.compute("model_busy_us");
        items += node.metrics.compute("model_items");
    }
    assert!(
        items >= 9,
        "every job ran on a compute courier ({items} items)"
    );
    println!(
        "TIMING compute: {items} jobs computed in {:.2} s of model time, {:.2} s a job",
        busy_us as f64 / 1e6,
        busy_us as f64 / 1e6 / items as f64
    );

    served.abort();
    net.stop();
}
