//! Gas of every registry operation on a real anvil, for the design funion
//! took (the depth-20 Poseidon tree kept on chain, CreditRegistry) and the
//! one it did not (commitments logged, the tree rebuilt off chain by
//! indexers, CommitmentLog), and what one ticket costs in gas.
//!
//! `cargo run --release -p funion-chain --example registry_gas [deposits]`
//! (after `scripts/setup-chain`).

use alloy::network::EthereumWallet;
use alloy::primitives::{keccak256, FixedBytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolValue;
use funion_chain::anvil::Anvil;
use funion_chain::registry::{self, Registry, RegistryParams};
use funion_chain::to_u256;
use funion_tickets::{Identity, Scalar};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

sol!(
    #[sol(rpc)]
    #[allow(missing_docs)]
    CommitmentLog,
    "../../contracts/build/CommitmentLog.abi.json"
);

const COMMITMENT_LOG_BIN: &str = include_str!("../../../contracts/build/CommitmentLog.bin");
const PER_TICKET: u64 = 1_000_000_000_000; // the devnet's D per ticket, 10^12 wei
const MIN_POLICY: u64 = 100_000_000_000_000;
const DELAY_S: u64 = 3_600;
const LIMIT: u32 = 100;

/// Gas of each operation in one design.
#[derive(Default)]
struct Costs {
    deploy: u64,
    deposits: Vec<u64>,
    commit_slash: u64,
    reveal_slash: u64,
    burn: u64,
    request_withdraw: u64,
    claim: u64,
}

impl Costs {
    fn mean_deposit(&self) -> u64 {
        self.deposits.iter().sum::<u64>() / self.deposits.len().max(1) as u64
    }
}

fn signer(seed: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&FixedBytes::from([seed; 32])).expect("a valid key")
}

async fn funded(rpc_url: &str, seed: u8) -> anyhow::Result<PrivateKeySigner> {
    let key = signer(seed);
    registry::fund(
        rpc_url,
        key.address(),
        U256::from(10u64).pow(U256::from(20)),
    )
    .await?;
    Ok(key)
}

async fn on_chain_tree(rpc_url: &str, identities: &[Identity]) -> anyhow::Result<Costs> {
    let policy = funded(rpc_url, 0x70).await?;
    let params = RegistryParams {
        stake_per_ticket: U256::from(PER_TICKET),
        min_policy_stake: U256::from(MIN_POLICY),
        withdraw_delay_s: DELAY_S,
        root_validity_s: 600,
        policy: policy.address(),
    };
    let (address, deploy) = registry::deploy(rpc_url, &params).await?;
    let owner = Registry::new(rpc_url, address, funded(rpc_url, 0x71).await?)?;
    let revealer = Registry::new(rpc_url, address, funded(rpc_url, 0x72).await?)?;
    let policy = Registry::new(rpc_url, address, policy)?;
    let mut costs = Costs {
        deploy,
        ..Costs::default()
    };
    for id in identities {
        let receipt = owner
            .deposit(&id.commitment(), LIMIT, U256::from(MIN_POLICY))
            .await?;
        costs.deposits.push(receipt.gas_used);
    }
    let (commit, reveal) = revealer.slash(&Scalar(identities[0].to_bytes())).await?;
    costs.commit_slash = commit.gas_used;
    costs.reveal_slash = reveal.gas_used;
    costs.burn = policy
        .burn(&identities[1].commitment(), keccak256(b"evidence"))
        .await?
        .gas_used;
    costs.request_withdraw = owner
        .request_withdraw(&identities[2].commitment())
        .await?
        .gas_used;
    owner.advance_time(DELAY_S).await?;
    costs.claim = owner.claim(&identities[2].commitment()).await?.gas_used;
    Ok(costs)
}

fn provider(rpc_url: &str, key: PrivateKeySigner) -> anyhow::Result<DynProvider> {
    Ok(ProviderBuilder::new()
        .wallet(EthereumWallet::from(key))
        .connect_http(rpc_url.parse()?)
        .erased())
}

async fn gas_of<C: alloy::sol_types::SolCall>(
    call: alloy::contract::SolCallBuilder<&DynProvider, C>,
) -> anyhow::Result<u64> {
    let receipt = call.send().await?.get_receipt().await?;
    anyhow::ensure!(receipt.status(), "a transaction of the baseline reverted");
    Ok(receipt.gas_used)
}

async fn off_chain_tree(rpc_url: &str, identities: &[Identity]) -> anyhow::Result<Costs> {
    let policy_key = funded(rpc_url, 0x80).await?;
    let arguments = (
        U256::from(PER_TICKET),
        U256::from(MIN_POLICY),
        DELAY_S,
        policy_key.address(),
    )
        .abi_encode_params();
    let (address, deploy) =
        registry::deploy_with_poseidon(rpc_url, COMMITMENT_LOG_BIN, &arguments).await?;
    let owner = provider(rpc_url, funded(rpc_url, 0x81).await?)?;
    let revealer_key = funded(rpc_url, 0x82).await?;
    let revealer_address = revealer_key.address();
    let revealer = provider(rpc_url, revealer_key)?;
    let policy = provider(rpc_url, policy_key)?;
    let as_owner = CommitmentLog::new(address, owner.clone());
    let as_revealer = CommitmentLog::new(address, revealer);
    let as_policy = CommitmentLog::new(address, policy);
    let mut costs = Costs {
        deploy,
        ..Costs::default()
    };
    let value = U256::from(PER_TICKET) * U256::from(LIMIT) + U256::from(MIN_POLICY);
    for id in identities {
        let call = as_owner
            .deposit(to_u256(&id.commitment()), LIMIT)
            .value(value);
        costs.deposits.push(gas_of(call).await?);
    }
    let secret = to_u256(&Scalar(identities[0].to_bytes()));
    let commitment = keccak256((secret, revealer_address).abi_encode_params());
    costs.commit_slash = gas_of(as_revealer.commitSlash(commitment)).await?;
    costs.reveal_slash = gas_of(as_revealer.revealSlash(secret)).await?;
    let burn = as_policy.burn(to_u256(&identities[1].commitment()), keccak256(b"evidence"));
    costs.burn = gas_of(burn).await?;
    let third = to_u256(&identities[2].commitment());
    costs.request_withdraw = gas_of(as_owner.requestWithdraw(third)).await?;
    let _: serde_json::Value = owner
        .raw_request("evm_increaseTime".into(), (DELAY_S,))
        .await?;
    costs.claim = gas_of(as_owner.claim(third)).await?;
    Ok(costs)
}

fn row(what: &str, tree: u64, log: u64) {
    let ratio = tree as f64 / log.max(1) as f64;
    println!("{what:<28} {tree:>12} {log:>12} {ratio:>8.2}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let deposits: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| anyhow::anyhow!("deposits: a number, not {n}"))?,
        None => 64,
    };
    anyhow::ensure!(
        deposits >= 3,
        "at least 3 deposits (one slashed, one burned, one withdrawn)"
    );
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let identities: Vec<Identity> = (0..deposits)
        .map(|_| Identity::generate(&mut rng))
        .collect();
    let anvil = Anvil::start(1, None).await?;
    let tree = on_chain_tree(&anvil.rpc_url, &identities).await?;
    let log = off_chain_tree(&anvil.rpc_url, &identities).await?;
    anvil.stop().await;

    println!("gas per transaction (receipts' gasUsed, intrinsic 21000 included), {deposits} deposits of limit {LIMIT}");
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "operation", "on-chain", "off-chain", "ratio"
    );
    println!("{:<28} {:>12} {:>12} {:>8}", "", "tree", "tree (log)", "");
    row("deploy (with Poseidon libs)", tree.deploy, log.deploy);
    row("deposit, first", tree.deposits[0], log.deposits[0]);
    row("deposit, mean", tree.mean_deposit(), log.mean_deposit());
    row(
        "deposit, max",
        *tree.deposits.iter().max().unwrap_or(&0),
        *log.deposits.iter().max().unwrap_or(&0),
    );
    row("slash: commit", tree.commit_slash, log.commit_slash);
    row("slash: reveal", tree.reveal_slash, log.reveal_slash);
    row(
        "slash: both",
        tree.commit_slash + tree.reveal_slash,
        log.commit_slash + log.reveal_slash,
    );
    row("policy burn", tree.burn, log.burn);
    row(
        "withdraw: request",
        tree.request_withdraw,
        log.request_withdraw,
    );
    row("withdraw: claim", tree.claim, log.claim);

    // A deposit serves `LIMIT` tickets in every credit period (a day on a
    // devnet) until it is withdrawn; its gas is paid once, and no ticket
    // touches the chain.
    let lifetime = tree.mean_deposit() + tree.request_withdraw + tree.claim;
    println!();
    println!(
        "one ticket's stake D = {PER_TICKET} wei = {} gas at 1 gwei, {} gas at 10 gwei",
        PER_TICKET / 1_000_000_000,
        PER_TICKET / 10_000_000_000
    );
    println!(
        "gas of a deposit's life (deposit + request + claim) = {lifetime}; per ticket served:"
    );
    for days in [1u64, 30, 365] {
        let tickets = u64::from(LIMIT) * days;
        println!(
            "  limit {LIMIT}, held {days:>3} day(s): {:>7} tickets, {:>8.1} gas per ticket",
            tickets,
            lifetime as f64 / tickets as f64
        );
    }
    Ok(())
}
