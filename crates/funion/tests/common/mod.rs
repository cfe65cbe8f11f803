//! What the devnet tests of paid jobs share: a --fast devnet whose compute
//! couriers serve the real MiniLM at one ticket a job, wallets with
//! deposits on its chain, and a paid embedding job for one courier.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use funion_chain::U256;
use funion_client::jobs::{pay, JobSpec};
use funion_client::wallet::{top_up, Wallet};
use funion_compute::{JobPath, Sampling, Task};
use funion_devnet::{self as devnet, Devnet, DevnetOptions};
use funion_inference::{minilm_dir, TextTokenizer, MINILM};
use funion_ledger::LedgerClient;
use funion_net::config::{ComputeFile, ModelFile};
use funion_pki::{Credits, Parameters, Role};

/// A running devnet for paid MiniLM jobs.
pub struct PaidDevnet {
    /// The devnet.
    pub net: Devnet,
    /// Its folder.
    pub dir: PathBuf,
    /// Its credits (the ledger's real URL in them).
    pub credits: Credits,
    /// The MiniLM folder the couriers load.
    pub minilm: PathBuf,
}

/// Starts a --fast devnet in a fresh folder named after `name`.
pub async fn minilm_devnet(name: &str) -> PaidDevnet {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
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
    parameters.credits.prices = Credits::flat_prices(1);
    let net = devnet::start_with(&dir, parameters.clone(), &options)
        .await
        .unwrap();
    let mut credits = parameters.credits.clone();
    credits.ledger_url = net.ledger_url.clone();
    PaidDevnet {
        net,
        dir,
        credits,
        minilm,
    }
}

impl PaidDevnet {
    /// A new wallet at `file` in the devnet's folder, with a deposit on
    /// the chain and `tickets` tickets made.
    pub async fn funded_wallet(&self, file: &str, tickets: u32) -> Arc<Wallet> {
        let ledger = LedgerClient::new(&self.net.ledger_url).unwrap();
        let wallet = Arc::new(Wallet::open(&self.dir.join(file)).unwrap());
        let registry = self.net.client_registry().unwrap();
        wallet
            .deposit_on_chain(
                &registry,
                &ledger,
                10,
                U256::from(devnet::DEVNET_MIN_POLICY_STAKE),
            )
            .await
            .unwrap();
        top_up(
            wallet.clone(),
            &self.credits,
            tickets,
            1,
            Arc::new(AtomicU64::new(0)),
        )
        .await
        .unwrap();
        wallet
    }

    /// The service node whose compute courier records nullifiers through
    /// the other one (the keeper, which holds the provider's set), and its
    /// place among the document's service nodes.
    pub async fn non_keeper_courier(&self) -> (String, usize) {
        let name = self
            .net
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
        let authorities = self.net.trusted_authorities().unwrap();
        let epoch = funion_pki::epoch_at(funion_net::unix_ms(), Parameters::fast().epoch_ms);
        let document = funion_net::fetch_document(&http, &authorities, epoch, true)
            .await
            .unwrap();
        let place = document
            .with_role(Role::Service)
            .position(|n| n.name == name)
            .expect("the courier is in the document");
        (name, place)
    }

    /// The MiniLM tokens of `sentence`.
    pub fn tokens(&self, sentence: &str) -> Vec<u32> {
        TextTokenizer::load(&self.minilm)
            .unwrap()
            .encode(sentence)
            .unwrap()
    }

    /// A paid embedding of `tokens` for courier `courier`, by `path`, due
    /// `bucket` bucket spacings after its input is in hand.
    pub fn embed_job(
        &self,
        wallet: &Wallet,
        tokens: &[u32],
        courier: usize,
        path: JobPath,
        bucket: u32,
    ) -> JobSpec {
        let mut spec = JobSpec {
            model: MINILM.into(),
            task: Task::Embed,
            tokens: tokens.to_vec(),
            output_class: 512,
            sampling: Sampling::default(),
            bucket,
            tickets: Vec::new(),
            courier: Some(courier),
            path,
        };
        pay(&mut spec, &self.credits, wallet).unwrap();
        spec
    }
}

/// Waits (up to a minute, in 20 ms steps) until the compute counter
/// `name` of `metrics` reaches `at_least`; fails naming `what` otherwise.
pub async fn wait_for_compute(
    metrics: &funion_net::metrics::Metrics,
    name: &str,
    at_least: u64,
    what: &str,
) {
    for _ in 0..3_000 {
        if metrics.compute(name) >= at_least {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{what}: {name} stayed below {at_least}");
}
