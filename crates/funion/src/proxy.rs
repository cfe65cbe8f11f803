//! `funion proxy`: the OpenAI-compatible server over the client.

use std::path::PathBuf;

use clap::Args;
use funion_net::config::{self, ClientFile};
use funion_proxy::book::BookPolicy;
use funion_proxy::{Proxy, ProxyOptions};

/// `funion proxy`.
#[derive(Args)]
pub struct ProxyArgs {
    /// The client config (written by devnet or genconfig); its `models`
    /// say where this machine has each model's tokenizer.
    #[arg(long)]
    config: PathBuf,
    /// Where to listen (keep it on loopback: whoever reaches it spends
    /// this wallet's tickets).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The wallet that pays (default: wallet.redb beside the config); its
    /// deposit must be made (`funion credits deposit`).
    #[arg(long)]
    wallet: Option<PathBuf>,
    /// Another model's tokenizer: NAME=PATH (a GGUF file or a folder with
    /// tokenizer.json).
    #[arg(long = "model")]
    models: Vec<String>,
    /// Prove more tickets when fewer than this are left.
    #[arg(long, default_value_t = 8)]
    low_water: usize,
}

/// Runs the proxy until Ctrl-C.
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let client: ClientFile = config::read(&args.config)?;
    let mut models: Vec<(String, PathBuf)> = client
        .models
        .iter()
        .map(|m| (m.name.clone(), m.path.clone()))
        .collect();
    for spec in &args.models {
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--model {spec:?}: use NAME=PATH"))?;
        models.retain(|(n, _)| n != name);
        models.push((name.to_string(), PathBuf::from(path)));
    }
    let wallet = crate::credits::default_wallet(&args.config, args.wallet.as_deref());
    let proxy = Proxy::start(ProxyOptions {
        client,
        wallet,
        models,
        book: BookPolicy {
            low_water: args.low_water,
            ..BookPolicy::default()
        },
    })
    .await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    println!(
        "funion proxy: OpenAI API at http://{}/v1 ({} tickets in the book; more are proved in the background)",
        listener.local_addr()?,
        proxy.tickets()
    );
    tokio::select! {
        served = funion_proxy::serve(listener, proxy) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
