//! `funion credits deposit / status / tickets`: the client's deposit and
//! its ticket books, in a wallet file beside the client config; and
//! `deploy-registry` / `fund`, for a development chain.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use funion_client::jobs::{pay, JobSpec};
use funion_client::session::Network;
use funion_client::wallet::{drop_stale_tickets, top_up, Wallet};
use funion_ledger::LedgerClient;
use funion_net::config::{self, ClientFile};
use funion_pki::Credits;

/// `funion credits ...`.
#[derive(Subcommand)]
pub enum CreditsCommand {
    /// Pays a deposit to the registry contract for a message limit: a
    /// transaction from the key file, D = limit × the registry's stake per
    /// ticket plus the policy stake S.
    Deposit {
        #[command(flatten)]
        wallet: WalletArgs,
        /// Tickets per credit period.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Policy stake S in wei (burned, never paid out, on a policy
        /// violation); default: the registry's smallest.
        #[arg(long)]
        policy_stake: Option<u128>,
    },
    /// The deposit at the ledger and the tickets in the book.
    Status {
        #[command(flatten)]
        wallet: WalletArgs,
    },
    /// Starts the withdrawal of the deposit (its tickets stop working at
    /// once), or with --claim collects the stakes once the delay is over.
    Withdraw {
        #[command(flatten)]
        wallet: WalletArgs,
        /// Collect the stakes (after the ledger's withdrawal delay).
        #[arg(long)]
        claim: bool,
    },
    /// Deploys the credit registry (and its Poseidon libraries) from the
    /// chain node's first unlocked account: a development chain's (anvil),
    /// never a real one. Prints the address for `genconfig --registry`.
    DeployRegistry {
        /// The chain node's JSON-RPC URL.
        #[arg(long)]
        rpc_url: String,
        /// The Ethereum key whose address may burn policy stakes (0600;
        /// made if missing).
        #[arg(long)]
        policy_key: PathBuf,
        /// Double-spend stake per ticket, wei (what `genconfig`'s ledger
        /// expects by default).
        #[arg(long, default_value_t = funion_devnet::DEVNET_STAKE_PER_TICKET)]
        stake_per_ticket: u64,
        /// The smallest policy stake, wei.
        #[arg(long, default_value_t = funion_devnet::DEVNET_MIN_POLICY_STAKE)]
        min_policy_stake: u64,
        /// Seconds between a withdrawal request and the claim.
        #[arg(long, default_value_t = funion_devnet::GENCONFIG_WITHDRAW_DELAY_S)]
        withdraw_delay_s: u64,
        /// Seconds a root stays valid after a newer one.
        #[arg(long, default_value_t = 3600)]
        root_validity_s: u64,
    },
    /// Sends ether from the chain node's first unlocked account (a
    /// development chain's) to a key file's address, making the key (0600)
    /// if missing: gas money for a ledger's slasher, a client's deposit.
    Fund {
        /// The chain node's JSON-RPC URL.
        #[arg(long)]
        rpc_url: String,
        /// The Ethereum key file to fund.
        #[arg(long)]
        key: PathBuf,
        /// How much, in ether.
        #[arg(long, default_value_t = 1)]
        ether: u64,
    },
    /// Proves tickets ahead of time into the book.
    Tickets {
        #[command(flatten)]
        wallet: WalletArgs,
        /// How many.
        #[arg(long, default_value_t = 16)]
        count: u32,
        /// Prover threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// Where the wallet is.
#[derive(Args, Clone)]
pub struct WalletArgs {
    /// The client config (written by devnet or genconfig).
    #[arg(long)]
    config: PathBuf,
    /// The wallet file (default: wallet.redb beside the config).
    #[arg(long)]
    wallet: Option<PathBuf>,
    /// The Ethereum key file that pays (0600; default: eth.key beside the
    /// config; made if missing).
    #[arg(long)]
    key: Option<PathBuf>,
}

impl WalletArgs {
    /// The wallet's path.
    pub fn path(&self) -> PathBuf {
        default_wallet(&self.config, self.wallet.as_deref())
    }

    /// The key file's path.
    fn key_path(&self) -> PathBuf {
        self.key.clone().unwrap_or_else(|| {
            self.config
                .parent()
                .unwrap_or(Path::new("."))
                .join("eth.key")
        })
    }
}

/// The registry the network document names, sending from `key`.
pub fn registry_of(credits: &Credits, key: &Path) -> anyhow::Result<funion_chain::Registry> {
    if credits.registry.is_empty() {
        anyhow::bail!(
            "the network document names no registry: this network's deposits are not on a chain"
        );
    }
    let address = credits
        .registry
        .parse()
        .map_err(|e| anyhow::anyhow!("the document's registry address: {e}"))?;
    let signer = funion_chain::keys::load_or_create(key)?;
    funion_chain::Registry::new(&credits.chain_rpc_url, address, signer)
}

/// Wei as ether, for people.
fn ether(wei: u128) -> String {
    format!("{:.6} ETH", wei as f64 / 1e18)
}

/// `wallet` if given, else `wallet.redb` beside `config`.
pub fn default_wallet(config: &Path, wallet: Option<&Path>) -> PathBuf {
    wallet.map(Path::to_path_buf).unwrap_or_else(|| {
        config
            .parent()
            .unwrap_or(Path::new("."))
            .join("wallet.redb")
    })
}

async fn credits_of(config: &Path) -> anyhow::Result<Credits> {
    let client: ClientFile = config::read(config)?;
    Ok(Network::fetch(&client).await?.parameters.credits)
}

/// Runs a credits command.
pub async fn run(command: CreditsCommand) -> anyhow::Result<()> {
    match command {
        CreditsCommand::Deposit {
            wallet,
            limit,
            policy_stake,
        } => {
            let credits = credits_of(&wallet.config).await?;
            let w = Wallet::open_from_env(&wallet.path())?;
            let registry = registry_of(&credits, &wallet.key_path())?;
            let (per_ticket, min_policy) = registry.stakes().await?;
            let policy_stake = policy_stake
                .map(funion_chain::U256::from)
                .unwrap_or(min_policy);
            println!(
                "paying D = {} + S = {} from {} to the registry at {}",
                ether(u128::try_from(
                    per_ticket * funion_chain::U256::from(limit)
                )?),
                ether(u128::try_from(policy_stake)?),
                registry.sender(),
                registry.address()
            );
            let info = w
                .deposit_on_chain(
                    &registry,
                    &LedgerClient::new(&credits.ledger_url)?,
                    limit,
                    policy_stake,
                )
                .await?;
            println!(
                "deposited: leaf {}, {} tickets per {} s period at {}",
                info.index, info.limit, credits.period_s, credits.provider
            );
        }
        CreditsCommand::Status { wallet } => {
            let credits = credits_of(&wallet.config).await?;
            let w = Wallet::open_from_env(&wallet.path())?;
            let ledger = LedgerClient::new(&credits.ledger_url)?;
            let id = w.identity()?.commitment();
            if !credits.registry.is_empty() {
                let registry = registry_of(&credits, &wallet.key_path())?;
                println!(
                    "key {}: {}",
                    registry.sender(),
                    ether(u128::try_from(registry.balance(registry.sender()).await?)?)
                );
                match registry.deposit_of(&id).await? {
                    None => println!("no deposit on the chain"),
                    Some(stake) => println!("on the chain: {stake:?}"),
                }
            }
            match w.deposit_info()? {
                None => {
                    println!("no deposit recorded in the wallet (run `funion credits deposit`)")
                }
                Some(_) => {
                    let deposit = ledger.status(&id).await?;
                    println!("{}", serde_json::to_string_pretty(&deposit)?);
                }
            }
            drop_stale(&w, &credits).await?;
            let period = credits.period_at(funion_net::unix_ms() / 1000);
            for (provider, p, count) in w.book()? {
                let note = if p == period { " (this period)" } else { "" };
                println!("book: {count} tickets for {provider}, period {p}{note}");
            }
        }
        CreditsCommand::Withdraw { wallet, claim } => {
            let credits = credits_of(&wallet.config).await?;
            let w = Wallet::open_from_env(&wallet.path())?;
            let registry = registry_of(&credits, &wallet.key_path())?;
            let id = w.identity()?.commitment();
            let receipt = if claim {
                registry.claim(&id).await?
            } else {
                registry.request_withdraw(&id).await?
            };
            let stake = registry.deposit_of(&id).await?;
            println!(
                "{} in block {}: {stake:?}",
                if claim {
                    "claimed"
                } else {
                    "withdrawal requested"
                },
                receipt.block_number.unwrap_or_default()
            );
        }
        CreditsCommand::DeployRegistry {
            rpc_url,
            policy_key,
            stake_per_ticket,
            min_policy_stake,
            withdraw_delay_s,
            root_validity_s,
        } => {
            use funion_chain::{keys, registry, U256};
            let policy = keys::load_or_create(&policy_key)?;
            let (address, gas) = registry::deploy(
                &rpc_url,
                &registry::RegistryParams {
                    stake_per_ticket: U256::from(stake_per_ticket),
                    min_policy_stake: U256::from(min_policy_stake),
                    withdraw_delay_s,
                    root_validity_s,
                    policy: policy.address(),
                },
            )
            .await?;
            println!(
                "registry {address} (policy {}, {gas} gas)",
                policy.address()
            );
        }
        CreditsCommand::Fund {
            rpc_url,
            key,
            ether: amount,
        } => {
            use funion_chain::{keys, registry, U256};
            let to = keys::load_or_create(&key)?.address();
            let wei = U256::from(amount) * U256::from(10u64).pow(U256::from(18));
            registry::fund(&rpc_url, to, wei).await?;
            println!("sent {amount} ETH to {to} ({})", key.display());
        }
        CreditsCommand::Tickets {
            wallet,
            count,
            threads,
        } => {
            let credits = credits_of(&wallet.config).await?;
            let w = Arc::new(Wallet::open_from_env(&wallet.path())?);
            drop_stale(&w, &credits).await?;
            let started = std::time::Instant::now();
            prove_with_bar(w, &credits, count, threads).await?;
            let took = started.elapsed().as_secs_f64();
            println!(
                "{count} tickets in {took:.1} s ({:.0} ms each)",
                took * 1000.0 / f64::from(count.max(1))
            );
        }
    }
    Ok(())
}

/// Drops the book's tickets that couriers would refuse, and says so.
async fn drop_stale(w: &Wallet, credits: &Credits) -> anyhow::Result<()> {
    let dropped = drop_stale_tickets(w, credits).await?;
    if dropped > 0 {
        println!("dropped {dropped} tickets the couriers no longer take (expired root or period)");
    }
    Ok(())
}

/// Proves `count` tickets with a progress bar.
pub async fn prove_with_bar(
    wallet: Arc<Wallet>,
    credits: &Credits,
    count: u32,
    threads: Option<usize>,
) -> anyhow::Result<usize> {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bar = indicatif::ProgressBar::new(u64::from(count));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "proving tickets [{bar:30}] {pos}/{len} {elapsed} (eta {eta})",
        )?
        .progress_chars("=> "),
    );
    let progress = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (bar, progress) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(progress.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let result = top_up(wallet, credits, count, threads, progress.clone()).await;
    watcher.abort();
    bar.set_position(progress.load(Ordering::Relaxed));
    bar.finish();
    result
}

/// Pays for `specs` out of the wallet beside `config` (or `wallet`).
pub async fn pay_from_file(
    config: &Path,
    wallet: Option<&Path>,
    specs: &mut [JobSpec],
) -> anyhow::Result<()> {
    let credits = credits_of(config).await?;
    let w = Wallet::open_from_env(&default_wallet(config, wallet))?;
    // The book is not checked against the ledger's roots here: asking the
    // ledger just before each job would tell it when this client sends
    // one. `credits status` and `credits tickets` drop stale tickets.
    pay_all(&credits, &w, specs)
}

/// Pays for `specs` out of `w`'s book. Nothing is proved here: tickets
/// come from `funion credits tickets`, ahead of time.
pub fn pay_all(credits: &Credits, w: &Wallet, specs: &mut [JobSpec]) -> anyhow::Result<()> {
    for spec in specs.iter_mut() {
        pay(spec, credits, w)?;
    }
    Ok(())
}
