//! A whole network on loopback: an authority, a gateway, 3 layers × 2
//! mixes, 2 service nodes (echo and courier) and 4 storage replicas, each
//! with its config written to a folder, plus a client config. Also
//! `genconfig`: the same configs for many hosts.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod calibrate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use funion_pki::{Parameters, Role};
use rand_core::{OsRng, RngCore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use funion_ledger::LedgerFile;
use funion_net::config::{
    self, AuthorityFile, AuthorityRef, ClientFile, NodeFile, NodeKeys, SecretSeed,
};
use funion_net::metrics::Metrics;

/// Replicas in a standard network: four, so intermediates can always be
/// chosen disjoint from a box's two holders.
const REPLICAS: usize = 4;

/// The nodes of a standard network: (name, role, layer).
pub fn layout(
    layers: u8,
    mixes_per_layer: usize,
    services: usize,
    replicas: usize,
) -> Vec<(String, Role, u8)> {
    let mut nodes = vec![("gateway".to_string(), Role::Gateway, 0)];
    for layer in 1..=layers {
        for i in 0..mixes_per_layer {
            nodes.push((format!("mix{layer}.{i}"), Role::Mix, layer));
        }
    }
    for i in 0..services {
        nodes.push((format!("service{i}"), Role::Service, 0));
    }
    for i in 0..replicas {
        nodes.push((format!("replica{i}"), Role::Replica, 0));
    }
    nodes
}

/// How a devnet is started.
#[derive(Clone, Debug)]
pub struct DevnetOptions {
    /// Serve each node's metrics over HTTP.
    pub metrics: bool,
    /// Nodes whose configs are written but which are not started here (a
    /// test runs them as processes of their own).
    pub external: Vec<String>,
    /// Replicas' box lifetime, seconds.
    pub box_lifetime_s: u64,
    /// Couriers' SURB hold time, milliseconds.
    pub courier_hold_ms: u64,
    /// A compute courier on every service node, serving these models.
    pub compute: Option<funion_net::config::ComputeFile>,
}

impl Default for DevnetOptions {
    fn default() -> Self {
        DevnetOptions {
            metrics: false,
            external: Vec::new(),
            box_lifetime_s: 7 * 24 * 3600,
            courier_hold_ms: 2_000,
            compute: None,
        }
    }
}

/// One node's config file.
struct NodeSpec<'a> {
    name: &'a str,
    role: Role,
    layer: u8,
    listen: String,
    metrics_listen: Option<String>,
    data_dir: PathBuf,
    authorities: &'a [AuthorityRef],
    seed: SecretSeed,
}

impl NodeSpec<'_> {
    fn file(&self, options: &DevnetOptions) -> NodeFile {
        NodeFile {
            name: self.name.to_string(),
            role: self.role,
            layer: self.layer,
            listen: self.listen.clone(),
            metrics_listen: self.metrics_listen.clone(),
            secret_seed: self.seed.clone(),
            data_dir: self.data_dir.clone(),
            authorities: self.authorities.to_vec(),
            authority_threshold: None,
            box_lifetime_s: options.box_lifetime_s,
            courier_hold_ms: options.courier_hold_ms,
            compute: options
                .compute
                .clone()
                .filter(|_| self.role == Role::Service),
        }
    }
}

/// The client on this machine tokenizes with the very files the compute
/// couriers load (models served from an upstream server have none here).
fn local_models(
    compute: Option<&funion_net::config::ComputeFile>,
) -> Vec<funion_net::config::LocalModelFile> {
    compute
        .iter()
        .flat_map(|c| &c.models)
        .filter_map(|m| {
            m.path
                .clone()
                .map(|path| funion_net::config::LocalModelFile {
                    name: m.name.clone(),
                    path,
                })
        })
        .collect()
}

/// Fresh seeds for the nodes of `layout`, and the allowlist of their
/// identity keys for the authority.
fn node_seeds(count: usize) -> anyhow::Result<(Vec<SecretSeed>, Vec<String>)> {
    let seeds: Vec<SecretSeed> = (0..count).map(|_| random_seed().into()).collect();
    let allowed = seeds
        .iter()
        .map(|seed| Ok(NodeKeys::from_config(seed)?.identity_hex()))
        .collect::<anyhow::Result<_>>()?;
    Ok((seeds, allowed))
}

fn random_seed() -> String {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    hex::encode(seed)
}

/// A running node of a devnet.
pub struct DevnetNode {
    /// Its config.
    pub config: NodeFile,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// Its task.
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// A running devnet.
pub struct Devnet {
    /// The folder holding every config.
    pub dir: PathBuf,
    /// The client's config.
    pub client: ClientFile,
    /// The directory authorities' tasks.
    pub authorities: Vec<JoinHandle<anyhow::Result<()>>>,
    /// The ledger's task.
    pub ledger: JoinHandle<anyhow::Result<()>>,
    /// The ledger's base URL.
    pub ledger_url: String,
    /// Seed (hex) of the key that may burn policy stakes.
    pub policy_seed: String,
    /// The local chain (anvil) the registry is on; stopped with the devnet.
    pub anvil: funion_chain::anvil::Anvil,
    /// The registry, as `chain.json` names it.
    pub chain: funion_chain::ChainFile,
    /// The nodes.
    pub nodes: Vec<DevnetNode>,
}

impl Devnet {
    /// The registry, sending from the client's key (`eth.key`, funded with
    /// 10 ether).
    pub fn client_registry(&self) -> anyhow::Result<funion_chain::Registry> {
        let key = funion_chain::keys::load(&self.dir.join("eth.key"))?;
        funion_chain::Registry::new(&self.chain.rpc_url, self.chain.registry, key)
    }

    /// The address the ledger slashes from (the double-spend stakes it
    /// reveals are paid there).
    pub fn slasher_address(&self) -> anyhow::Result<funion_chain::Address> {
        Ok(funion_chain::keys::load(&self.dir.join("keys").join("slasher.key"))?.address())
    }

    /// The directory authorities, as the client's config names them.
    pub fn trusted_authorities(&self) -> anyhow::Result<funion_net::Authorities> {
        funion_net::Authorities::new(&self.client.authorities, self.client.authority_threshold)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&DevnetNode> {
        self.nodes.iter().find(|n| n.config.name == name)
    }

    /// Stops node `name` and starts it again from its config (same keys,
    /// same data folder), on the same port.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self
            .nodes
            .iter()
            .position(|n| n.config.name == name)
            .ok_or_else(|| anyhow::anyhow!("no node {name}"))?;
        self.nodes[index].task.abort();
        let _ = (&mut self.nodes[index].task).await;
        let config = self.nodes[index].config.clone();
        let listener = bind_retrying(&config.listen).await?;
        let metrics = Arc::new(Metrics::new(config.name.clone()));
        let task = tokio::spawn(funion_node::run(
            config.clone(),
            listener,
            None,
            metrics.clone(),
        ));
        self.nodes[index] = DevnetNode {
            config,
            metrics,
            task,
        };
        Ok(())
    }

    /// Waits (up to a minute) until every node running here works from a
    /// document that lists at least `count` nodes: until then a node that
    /// started early may not know a replica yet, and would refuse envelopes
    /// for it or shard boxes over fewer replicas than the clients do.
    pub async fn wait_until_known(&self, count: usize) -> anyhow::Result<()> {
        for _ in 0..3000 {
            if self
                .nodes
                .iter()
                .all(|n| n.metrics.document_nodes() >= count as u64)
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let behind: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.metrics.document_nodes() < count as u64)
            .map(|n| format!("{} ({})", n.config.name, n.metrics.document_nodes()))
            .collect();
        anyhow::bail!(
            "nodes still work from documents with fewer than {count} nodes: {}",
            behind.join(", ")
        )
    }

    /// Stops everything.
    pub fn stop(&self) {
        for authority in &self.authorities {
            authority.abort();
        }
        self.ledger.abort();
        for node in &self.nodes {
            node.task.abort();
        }
    }
}

/// How long a devnet's authority waits for all its nodes before it
/// freezes a document without the late ones (ms): every node of a devnet
/// starts at once, but on a busy machine the last may take tens of seconds
/// (a compute courier loads its models first). Documents freeze as soon as
/// all are in, so the grace costs nothing when none is late.
const BOOT_GRACE_MS: u64 = 90_000;

/// Waits until the authority's document lists every node, or says which
/// node stopped and why, or which are missing once the boot grace is over.
async fn wait_for_all(
    client: &ClientFile,
    parameters: &Parameters,
    nodes: &mut [DevnetNode],
) -> anyhow::Result<()> {
    let http = funion_net::http_client()?;
    let authorities =
        funion_net::Authorities::new(&client.authorities, client.authority_threshold)?;
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(BOOT_GRACE_MS.min(parameters.epoch_ms / 4) + 5_000);
    let mut missing: Option<Vec<String>> = None;
    while tokio::time::Instant::now() < deadline {
        for node in nodes.iter_mut() {
            if node.task.is_finished() {
                let why = match (&mut node.task).await {
                    Ok(Ok(())) => "it returned".to_string(),
                    Ok(Err(error)) => format!("{error:#}"),
                    Err(error) => error.to_string(),
                };
                anyhow::bail!(
                    "node {} stopped while the network came up: {why}",
                    node.config.name
                );
            }
        }
        let epoch = funion_pki::epoch_at(funion_net::unix_ms(), parameters.epoch_ms);
        if let Ok(document) = funion_net::fetch_document(&http, &authorities, epoch, false).await {
            let listed: std::collections::BTreeSet<[u8; 32]> =
                document.nodes.iter().map(|n| n.identity_key).collect();
            let missing = missing.insert(Vec::new());
            for node in nodes.iter() {
                let identity = NodeKeys::from_config(&node.config.secret_seed)?
                    .identity
                    .verifying_key()
                    .to_bytes();
                if !listed.contains(&identity) {
                    missing.push(node.config.name.clone());
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    match missing {
        Some(missing) => anyhow::bail!(
            "the network did not come up: {} of {} nodes not in the document ({})",
            missing.len(),
            nodes.len(),
            missing.join(", ")
        ),
        None => anyhow::bail!("the network did not come up: the authority served no document"),
    }
}

/// How many directory authorities a devnet runs; a document needs the
/// endorsements of a majority of them (two).
pub const AUTHORITIES: usize = 3;

/// The authorities at `addresses`, with the keys of `seeds`, as configs
/// name them.
fn authority_refs(addresses: Vec<String>, seeds: &[String]) -> anyhow::Result<Vec<AuthorityRef>> {
    addresses
        .into_iter()
        .zip(seeds)
        .map(|(address, seed)| {
            Ok(AuthorityRef {
                url: format!("http://{address}"),
                key: funion_authority::public_key_hex(seed)?,
            })
        })
        .collect()
}

/// One authority's config in a network of `authorities`.
fn authority_file(
    listen: String,
    seed: String,
    allowed_nodes: &[String],
    authorities: &[AuthorityRef],
    parameters: &Parameters,
) -> AuthorityFile {
    AuthorityFile {
        listen,
        secret_seed: seed.into(),
        allowed_nodes: allowed_nodes.to_vec(),
        boot_grace_ms: BOOT_GRACE_MS,
        authorities: authorities.to_vec(),
        authority_threshold: None,
        vote_window_ms: config::DEFAULT_VOTE_WINDOW_MS,
        parameters: parameters.clone(),
    }
}

async fn bind_retrying(address: &str) -> anyhow::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(address).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(last
        .map(Into::into)
        .unwrap_or_else(|| anyhow::anyhow!("cannot bind {address}")))
}

/// Starts a devnet on loopback with `parameters`, writing configs to `dir`.
/// Ports are chosen by the system; `metrics` also serves each node's
/// metrics over HTTP.
pub async fn start(dir: &Path, parameters: Parameters, metrics: bool) -> anyhow::Result<Devnet> {
    let options = DevnetOptions {
        metrics,
        ..DevnetOptions::default()
    };
    start_with(dir, parameters, &options).await
}

/// Starts a devnet as [`start`] does, with more choices. Nodes named in
/// `options.external` get configs but are not started; the call returns
/// once every other node is in the document.
pub async fn start_with(
    dir: &Path,
    parameters: Parameters,
    options: &DevnetOptions,
) -> anyhow::Result<Devnet> {
    let metrics = options.metrics;
    std::fs::create_dir_all(dir)?;
    let (anvil, chain, slasher_key) = start_chain(dir).await?;
    // The ledger first: its address goes into the document.
    let ledger_listener = TcpListener::bind("127.0.0.1:0").await?;
    let ledger_url = format!("http://{}", ledger_listener.local_addr()?);
    let policy_seed = random_seed();
    let ledger_config = LedgerFile {
        listen: ledger_listener.local_addr()?.to_string(),
        store: dir.join("data").join("ledger").join("ledger.redb"),
        policy_key: funion_authority::public_key_hex(&policy_seed)?,
        withdraw_delay_s: 3600,
        stake_per_ticket: 10,
        min_policy_stake: 100,
        root_history: 256,
        root_validity_s: 3600,
        chain: Some(funion_ledger::ChainSettings {
            rpc_url: chain.rpc_url.clone(),
            registry: format!("{:#x}", chain.registry),
            confirmations: 1,
            from_block: 0,
            poll_ms: 200,
            slasher_key,
        }),
        unbacked_deposits: false,
    };
    // A fresh chain: the index of an earlier one would not match it.
    let _ = std::fs::remove_file(&ledger_config.store);
    config::write(&dir.join("ledger.toml"), &ledger_config)?;
    let ledger = tokio::spawn(funion_ledger::serve(ledger_config, ledger_listener));
    let mut parameters = parameters;
    parameters.credits.ledger_url = ledger_url.clone();
    parameters.credits.chain_rpc_url = chain.rpc_url.clone();
    parameters.credits.registry = format!("{:#x}", chain.registry);
    let mut keeper: Option<String> = None;
    let mut authority_listeners = Vec::new();
    for _ in 0..AUTHORITIES {
        authority_listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let authority_seeds: Vec<String> = (0..AUTHORITIES).map(|_| random_seed()).collect();
    let authority_refs = authority_refs(
        authority_listeners
            .iter()
            .map(|l| Ok(l.local_addr()?.to_string()))
            .collect::<anyhow::Result<Vec<_>>>()?,
        &authority_seeds,
    )?;
    let node_layout = layout(parameters.layers, 2, 2, REPLICAS);
    let (seeds, allowed_nodes) = node_seeds(node_layout.len())?;
    let mut authorities = Vec::new();
    for (i, (listener, seed)) in authority_listeners
        .into_iter()
        .zip(authority_seeds)
        .enumerate()
    {
        let authority_config = authority_file(
            listener.local_addr()?.to_string(),
            seed,
            &allowed_nodes,
            &authority_refs,
            &parameters,
        );
        config::write(
            &dir.join(format!("authority{}.toml", i + 1)),
            &authority_config,
        )?;
        authorities.push(tokio::spawn(funion_authority::serve(
            authority_config,
            listener,
        )));
    }

    let mut nodes = Vec::new();
    for ((name, role, layer), seed) in node_layout.into_iter().zip(seeds) {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let metrics_listener = if metrics {
            Some(TcpListener::bind("127.0.0.1:0").await?)
        } else {
            None
        };
        let config = NodeSpec {
            name: &name,
            role,
            layer,
            listen: listener.local_addr()?.to_string(),
            metrics_listen: match &metrics_listener {
                Some(l) => Some(l.local_addr()?.to_string()),
                None => None,
            },
            data_dir: dir.join("data").join(&name),
            authorities: &authority_refs,
            seed,
        }
        .file(options);
        let mut config = config;
        // The first compute courier keeps the provider's nullifier set; the
        // others record through it.
        if let Some(compute) = config.compute.as_mut() {
            match &keeper {
                None => {
                    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
                    compute.nullifiers.listen = Some(port.to_string());
                    keeper = Some(format!("http://{port}"));
                }
                Some(url) => compute.nullifiers.url = Some(url.clone()),
            }
        }
        config::write(&dir.join(format!("{name}.toml")), &config)?;
        if options.external.contains(&name) {
            drop((listener, metrics_listener));
            continue;
        }
        let metrics = Arc::new(Metrics::new(name));
        let task = tokio::spawn(funion_node::run(
            config.clone(),
            listener,
            metrics_listener,
            metrics.clone(),
        ));
        nodes.push(DevnetNode {
            config,
            metrics,
            task,
        });
    }
    let models = local_models(options.compute.as_ref());
    let client = ClientFile {
        authorities: authority_refs,
        authority_threshold: None,
        models,
    };
    config::write(&dir.join("client.toml"), &client)?;
    wait_for_all(&client, &parameters, &mut nodes).await?;
    let count = nodes.len();
    let net = Devnet {
        dir: dir.to_path_buf(),
        client,
        authorities,
        ledger,
        ledger_url,
        policy_seed,
        anvil,
        chain,
        nodes,
    };
    net.wait_until_known(count).await?;
    Ok(net)
}

/// Wei of double-spend stake per ticket on a devnet's registry (10^12 wei,
/// a millionth of an ether).
pub const DEVNET_STAKE_PER_TICKET: u64 = 1_000_000_000_000;
/// The smallest policy stake on a devnet's registry (10^14 wei).
pub const DEVNET_MIN_POLICY_STAKE: u64 = 100_000_000_000_000;
/// The withdrawal delay a `genconfig` ledger expects: a week.
pub const GENCONFIG_WITHDRAW_DELAY_S: u64 = 7 * 24 * 3600;

/// Starts anvil, deploys the registry, makes the devnet's keys (0600) and
/// funds them from anvil's first account: the client's `eth.key` (10
/// ether), the ledger's slasher key and the policy key (1 ether each).
/// Writes `chain.json`. Returns the chain and the slasher key's path.
async fn start_chain(
    dir: &Path,
) -> anyhow::Result<(funion_chain::anvil::Anvil, funion_chain::ChainFile, PathBuf)> {
    use funion_chain::{keys, registry, U256};
    let anvil = funion_chain::anvil::Anvil::start(1, None).await?;
    let keys_dir = dir.join("keys");
    let _ = std::fs::remove_dir_all(&keys_dir);
    let _ = std::fs::remove_file(dir.join("eth.key"));
    let policy = keys::load_or_create(&keys_dir.join("policy.key"))?;
    let slasher_path = keys_dir.join("slasher.key");
    let slasher = keys::load_or_create(&slasher_path)?;
    let client = keys::load_or_create(&dir.join("eth.key"))?;
    let (address, _) = registry::deploy(
        &anvil.rpc_url,
        &registry::RegistryParams {
            stake_per_ticket: U256::from(DEVNET_STAKE_PER_TICKET),
            min_policy_stake: U256::from(DEVNET_MIN_POLICY_STAKE),
            withdraw_delay_s: 3600,
            root_validity_s: 3600,
            policy: policy.address(),
        },
    )
    .await?;
    let ether = U256::from(10u64).pow(U256::from(18));
    registry::fund(&anvil.rpc_url, client.address(), ether * U256::from(10)).await?;
    registry::fund(&anvil.rpc_url, slasher.address(), ether).await?;
    registry::fund(&anvil.rpc_url, policy.address(), ether).await?;
    let chain = funion_chain::ChainFile {
        rpc_url: anvil.rpc_url.clone(),
        registry: address,
    };
    std::fs::write(
        dir.join("chain.json"),
        serde_json::to_string_pretty(&chain)? + "\n",
    )?;
    Ok((anvil, chain, slasher_path))
}

/// The chain a generated network's credits live on.
#[derive(Clone, Debug)]
pub struct ChainPlan {
    /// The chain node's JSON-RPC URL.
    pub rpc_url: String,
    /// The deployed registry.
    pub registry: funion_chain::Address,
    /// Blocks on top of an event before the ledger applies it.
    pub confirmations: u64,
    /// The block the registry was deployed in.
    pub from_block: u64,
}

/// What `genconfig` wrote.
#[derive(Debug)]
pub struct Generated {
    /// The config and key files.
    pub files: Vec<PathBuf>,
    /// The ledger's slasher address, which needs gas money.
    pub slasher: funion_chain::Address,
}

/// Writes configs for a network spread over `hosts` (round robin), ports
/// from `base_port` up, the authority on the first host, its ledger
/// indexing the registry `chain` names (with a fresh slasher key, 0600).
/// With `compute`, every service node is a compute courier too.
pub fn genconfig(
    dir: &Path,
    hosts: &[String],
    base_port: u16,
    parameters: Parameters,
    chain: &ChainPlan,
    compute: Option<funion_net::config::ComputeFile>,
) -> anyhow::Result<Generated> {
    anyhow::ensure!(!hosts.is_empty(), "give at least one host");
    std::fs::create_dir_all(dir)?;
    let layout = layout(parameters.layers, 2, 2, REPLICAS);
    // The first authority on the first host at the base port, the others
    // on the next hosts, on the ports after the ledger's.
    let authority_addresses: Vec<String> = (0..AUTHORITIES)
        .map(|k| {
            let port = match k {
                0 => base_port,
                k => base_port + 1 + 2 * layout.len() as u16 + k as u16,
            };
            format!("{}:{port}", hosts[k % hosts.len()])
        })
        .collect();
    let authority_seeds: Vec<String> = (0..AUTHORITIES).map(|_| random_seed()).collect();
    let authority_refs = authority_refs(authority_addresses.clone(), &authority_seeds)?;
    let (seeds, allowed_nodes) = node_seeds(layout.len())?;
    // The ledger on the first host, on the port after the nodes'.
    let ledger_address = format!("{}:{}", hosts[0], base_port + 1 + 2 * layout.len() as u16);
    let mut parameters = parameters;
    parameters.credits.ledger_url = format!("http://{ledger_address}");
    parameters.credits.chain_rpc_url = chain.rpc_url.clone();
    parameters.credits.registry = chain.registry.to_string();
    let slasher_path = dir.join("slasher.key");
    let slasher = funion_chain::keys::load_or_create(&slasher_path)?.address();
    let policy_seed = random_seed();
    config::write(
        &dir.join("ledger.toml"),
        &LedgerFile {
            listen: ledger_address,
            store: PathBuf::from("data").join("ledger").join("ledger.redb"),
            policy_key: funion_authority::public_key_hex(&policy_seed)?,
            withdraw_delay_s: GENCONFIG_WITHDRAW_DELAY_S,
            stake_per_ticket: DEVNET_STAKE_PER_TICKET,
            min_policy_stake: DEVNET_MIN_POLICY_STAKE,
            root_history: 256,
            root_validity_s: 3600,
            chain: Some(funion_ledger::ChainSettings {
                rpc_url: chain.rpc_url.clone(),
                registry: chain.registry.to_string(),
                confirmations: chain.confirmations,
                from_block: chain.from_block,
                poll_ms: 2_000,
                slasher_key: PathBuf::from("slasher.key"),
            }),
            unbacked_deposits: false,
        },
    )?;
    config::write_owner_only(&dir.join("policy.seed"), policy_seed.as_bytes())?;
    let mut written = vec![
        dir.join("ledger.toml"),
        slasher_path,
        dir.join("policy.seed"),
    ];
    for (k, (address, seed)) in authority_addresses
        .into_iter()
        .zip(authority_seeds)
        .enumerate()
    {
        let path = dir.join(format!("authority{}.toml", k + 1));
        config::write(
            &path,
            &authority_file(address, seed, &allowed_nodes, &authority_refs, &parameters),
        )?;
        written.push(path);
    }
    for (i, ((name, role, layer), seed)) in layout.into_iter().zip(seeds).enumerate() {
        let host = &hosts[(i + 1) % hosts.len()];
        let port = base_port + 1 + 2 * i as u16;
        let path = dir.join(format!("{name}.toml"));
        let spec = NodeSpec {
            name: &name,
            role,
            layer,
            listen: format!("{host}:{port}"),
            metrics_listen: Some(format!("{host}:{}", port + 1)),
            data_dir: PathBuf::from("data").join(&name),
            authorities: &authority_refs,
            seed,
        };
        let options = DevnetOptions {
            compute: compute.clone(),
            ..DevnetOptions::default()
        };
        config::write(&path, &spec.file(&options))?;
        written.push(path);
    }
    let client = dir.join("client.toml");
    config::write(
        &client,
        &ClientFile {
            authorities: authority_refs,
            authority_threshold: None,
            models: local_models(compute.as_ref()),
        },
    )?;
    written.push(client);
    Ok(Generated {
        files: written,
        slasher,
    })
}
