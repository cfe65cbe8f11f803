//! The registry contract: deployment with its libraries linked, the
//! transactions a depositor, a revealer and the policy key send, the views,
//! and its events decoded for the indexer.

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{keccak256, Address, Bytes, FixedBytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolEventInterface, SolValue};
use funion_tickets::Scalar;

use crate::{to_scalar, to_u256};

sol!(
    #[sol(rpc, all_derives)]
    #[allow(missing_docs)]
    CreditRegistry,
    "../../contracts/build/CreditRegistry.abi.json"
);

pub use CreditRegistry::CreditRegistryEvents;

const REGISTRY_BIN: &str = include_str!("../../../contracts/build/CreditRegistry.bin");
const POSEIDON_T2_BIN: &str = include_str!("../../../contracts/build/PoseidonT2.bin");
const POSEIDON_T3_BIN: &str = include_str!("../../../contracts/build/PoseidonT3.bin");

/// The registry's constructor arguments.
#[derive(Clone, Copy, Debug)]
pub struct RegistryParams {
    /// Wei of double-spend stake per ticket of a limit.
    pub stake_per_ticket: U256,
    /// Smallest policy stake, wei.
    pub min_policy_stake: U256,
    /// Seconds between a withdrawal request and its claim.
    pub withdraw_delay_s: u64,
    /// Seconds a replaced root stays acceptable.
    pub root_validity_s: u64,
    /// The address that may burn policy stakes.
    pub policy: Address,
}

/// A deposit as the contract holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StakeOnChain {
    /// Who paid it (and may withdraw it).
    pub owner: Address,
    /// Its leaf.
    pub index: u32,
    /// Tickets per period.
    pub limit: u32,
    /// 1 active, 2 withdrawing, 3 closed.
    pub state: u8,
    /// Whether a revealer took D.
    pub slashed: bool,
    /// Whether S was burned.
    pub policy_burned: bool,
    /// When a withdrawal can be claimed (Unix s), once requested.
    pub claimable_at: u64,
    /// D, wei.
    pub double_spend_stake: u128,
    /// S, wei.
    pub policy_stake: u128,
}

/// One of the registry's events, with where it was mined.
#[derive(Clone, Debug)]
pub struct RegistryEvent {
    /// Its block.
    pub block: u64,
    /// That block's time (Unix s).
    pub block_time: u64,
    /// Its place in the block.
    pub log_index: u64,
    /// Its transaction.
    pub transaction: FixedBytes<32>,
    /// What happened.
    pub event: CreditRegistryEvents,
}

/// A registry on a chain, with the key that signs this side's
/// transactions.
#[derive(Clone)]
pub struct Registry {
    provider: DynProvider,
    address: Address,
    sender: Address,
}

/// Hex bytecode with each library placeholder replaced by its address.
fn link(bin: &str, libraries: &[(&str, Address)]) -> anyhow::Result<Bytes> {
    let mut code = bin.trim().to_string();
    for (name, address) in libraries {
        // solc's placeholder: __$ + 34 hex digits of keccak256(name) + $__.
        let hash = hex::encode(keccak256(name.as_bytes()));
        let placeholder = format!("__${}$__", &hash[..34]);
        code = code.replace(&placeholder, &hex::encode(address));
    }
    if code.contains("__$") {
        anyhow::bail!("the bytecode names a library that was not deployed");
    }
    Ok(Bytes::from(hex::decode(code)?))
}

fn provider_for(rpc_url: &str, signer: PrivateKeySigner) -> anyhow::Result<DynProvider> {
    let url = rpc_url
        .parse()
        .map_err(|e| anyhow::anyhow!("rpc url {rpc_url}: {e}"))?;
    // The nonce is read from the node for every transaction: a cached one
    // would be spent by a transaction refused while its gas is estimated,
    // leaving a gap that stalls every later one.
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased())
}

fn read_provider(rpc_url: &str) -> anyhow::Result<DynProvider> {
    let url = rpc_url
        .parse()
        .map_err(|e| anyhow::anyhow!("rpc url {rpc_url}: {e}"))?;
    Ok(ProviderBuilder::new().connect_http(url).erased())
}

/// A transaction's receipt, or why it failed.
async fn mined(
    pending: Result<
        alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
        alloy::contract::Error,
    >,
    what: &str,
) -> anyhow::Result<TransactionReceipt> {
    let pending = pending.map_err(|e| anyhow::anyhow!("{what}: {}", revert_reason(&e)))?;
    let receipt = pending
        .get_receipt()
        .await
        .map_err(|e| anyhow::anyhow!("{what}: no receipt: {e}"))?;
    if !receipt.status() {
        anyhow::bail!("{what}: the transaction reverted");
    }
    Ok(receipt)
}

/// The revert string in a contract error, if it carries one.
fn revert_reason(error: &alloy::contract::Error) -> String {
    if let Some(reason) = error
        .as_revert_data()
        .and_then(|data| alloy::sol_types::decode_revert_reason(&data))
    {
        return reason;
    }
    error.to_string()
}

/// Sends a plain transaction from one of the node's own (unlocked)
/// accounts: anvil's, on a devnet.
async fn send_unlocked(
    provider: &DynProvider,
    tx: TransactionRequest,
) -> anyhow::Result<TransactionReceipt> {
    let receipt = provider.send_transaction(tx).await?.get_receipt().await?;
    if !receipt.status() {
        anyhow::bail!("the transaction reverted");
    }
    Ok(receipt)
}

/// Deploys the Poseidon libraries and the registry from the node's first
/// unlocked account (anvil's); returns the registry's address and the gas
/// the three deployments used.
pub async fn deploy(rpc_url: &str, params: &RegistryParams) -> anyhow::Result<(Address, u64)> {
    let arguments = (
        params.stake_per_ticket,
        params.min_policy_stake,
        params.withdraw_delay_s,
        params.root_validity_s,
        params.policy,
    )
        .abi_encode_params();
    deploy_with_poseidon(rpc_url, REGISTRY_BIN, &arguments).await
}

/// Deploys the Poseidon libraries, then the contract whose hex creation
/// code is `bin` (its library placeholders linked to them) with the
/// ABI-encoded `constructor_arguments`, from the node's first unlocked
/// account. Returns the contract's address and the gas of all three.
pub async fn deploy_with_poseidon(
    rpc_url: &str,
    bin: &str,
    constructor_arguments: &[u8],
) -> anyhow::Result<(Address, u64)> {
    let provider = read_provider(rpc_url)?;
    let from = *provider
        .get_accounts()
        .await?
        .first()
        .ok_or_else(|| anyhow::anyhow!("the node has no unlocked account to deploy from"))?;
    let mut gas = 0;
    let mut libraries = Vec::new();
    for (name, library) in [
        (
            "poseidon-solidity/PoseidonT2.sol:PoseidonT2",
            POSEIDON_T2_BIN,
        ),
        (
            "poseidon-solidity/PoseidonT3.sol:PoseidonT3",
            POSEIDON_T3_BIN,
        ),
    ] {
        let tx = TransactionRequest::default()
            .with_from(from)
            .with_deploy_code(Bytes::from(hex::decode(library.trim())?));
        let receipt = send_unlocked(&provider, tx).await?;
        gas += receipt.gas_used;
        let address = receipt
            .contract_address
            .ok_or_else(|| anyhow::anyhow!("{name} was not created"))?;
        libraries.push((name, address));
    }
    let mut code = link(bin, &libraries)?.to_vec();
    code.extend_from_slice(constructor_arguments);
    let tx = TransactionRequest::default()
        .with_from(from)
        .with_deploy_code(Bytes::from(code));
    let receipt = send_unlocked(&provider, tx).await?;
    gas += receipt.gas_used;
    let address = receipt
        .contract_address
        .ok_or_else(|| anyhow::anyhow!("the contract was not created"))?;
    Ok((address, gas))
}

/// Sends `wei` from the node's first unlocked account to `to` (funding a
/// devnet's keys).
pub async fn fund(rpc_url: &str, to: Address, wei: U256) -> anyhow::Result<()> {
    let provider = read_provider(rpc_url)?;
    let from = *provider
        .get_accounts()
        .await?
        .first()
        .ok_or_else(|| anyhow::anyhow!("the node has no unlocked account to fund from"))?;
    let tx = TransactionRequest::default()
        .with_from(from)
        .with_to(to)
        .with_value(wei);
    send_unlocked(&provider, tx).await?;
    Ok(())
}

/// The commitment a revealer sends first: keccak256(abi.encode(secret,
/// revealer)).
pub fn slash_commitment(secret: &Scalar, revealer: Address) -> FixedBytes<32> {
    keccak256((to_u256(secret), revealer).abi_encode_params())
}

impl Registry {
    /// The registry at `address`, sending as `signer`.
    pub fn new(rpc_url: &str, address: Address, signer: PrivateKeySigner) -> anyhow::Result<Self> {
        let sender = signer.address();
        Ok(Registry {
            provider: provider_for(rpc_url, signer)?,
            address,
            sender,
        })
    }

    fn contract(&self) -> CreditRegistry::CreditRegistryInstance<DynProvider> {
        CreditRegistry::new(self.address, self.provider.clone())
    }

    /// The registry's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The address this side sends from.
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// `who`'s balance, wei.
    pub async fn balance(&self, who: Address) -> anyhow::Result<U256> {
        Ok(self.provider.get_balance(who).await?)
    }

    /// What transaction `hash` cost its sender, wei.
    pub async fn fee_of(&self, hash: FixedBytes<32>) -> anyhow::Result<U256> {
        let receipt = self
            .provider
            .get_transaction_receipt(hash)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no receipt for {hash}"))?;
        Ok(U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price))
    }

    /// Whether any contract is deployed at the registry's address.
    pub async fn has_code(&self) -> anyhow::Result<bool> {
        Ok(!self.provider.get_code_at(self.address).await?.is_empty())
    }

    /// The latest block number.
    pub async fn head(&self) -> anyhow::Result<u64> {
        Ok(self.provider.get_block_number().await?)
    }

    /// The stake per ticket and the smallest policy stake, wei.
    pub async fn stakes(&self) -> anyhow::Result<(U256, U256)> {
        let c = self.contract();
        Ok((
            c.stakePerTicket().call().await?,
            c.minPolicyStake().call().await?,
        ))
    }

    /// Pays a deposit for `limit` tickets per period: D = limit × stake
    /// per ticket plus `policy_stake`.
    pub async fn deposit(
        &self,
        id_commitment: &Scalar,
        limit: u32,
        policy_stake: U256,
    ) -> anyhow::Result<TransactionReceipt> {
        let (per_ticket, _) = self.stakes().await?;
        let value = per_ticket * U256::from(limit) + policy_stake;
        let c = self.contract();
        mined(
            c.deposit(to_u256(id_commitment), limit)
                .value(value)
                .send()
                .await,
            "deposit",
        )
        .await
    }

    /// The deposit under `id_commitment`, if there is one.
    pub async fn deposit_of(&self, id_commitment: &Scalar) -> anyhow::Result<Option<StakeOnChain>> {
        let d = self
            .contract()
            .depositOf(to_u256(id_commitment))
            .call()
            .await?;
        if d.state == 0 {
            return Ok(None);
        }
        Ok(Some(StakeOnChain {
            owner: d.owner,
            index: d.index,
            limit: d.limit,
            state: d.state,
            slashed: d.slashed,
            policy_burned: d.policyBurned,
            claimable_at: d.claimableAt,
            double_spend_stake: d.doubleSpendStake,
            policy_stake: d.policyStake,
        }))
    }

    /// Wei of policy stakes burned so far.
    pub async fn burned(&self) -> anyhow::Result<U256> {
        Ok(self.contract().burned().call().await?)
    }

    /// The current root.
    pub async fn root(&self) -> anyhow::Result<Scalar> {
        let root = self.contract().root().call().await?;
        to_scalar(root).ok_or_else(|| anyhow::anyhow!("the registry's root is not a field element"))
    }

    /// Whether the contract accepts `root` now.
    pub async fn is_known_root(&self, root: &Scalar) -> anyhow::Result<bool> {
        Ok(self.contract().isKnownRoot(to_u256(root)).call().await?)
    }

    /// The first half of a slash: commits to `secret` for this sender.
    pub async fn commit_slash(&self, secret: &Scalar) -> anyhow::Result<TransactionReceipt> {
        let c = self.contract();
        mined(
            c.commitSlash(slash_commitment(secret, self.sender))
                .send()
                .await,
            "slash commitment",
        )
        .await
    }

    /// The second half: reveals `secret` (in a later block than the
    /// commitment); D comes to this sender.
    pub async fn reveal_slash(&self, secret: &Scalar) -> anyhow::Result<TransactionReceipt> {
        let c = self.contract();
        mined(c.revealSlash(to_u256(secret)).send().await, "slash reveal").await
    }

    /// Both halves: commit, wait for a later block, reveal.
    pub async fn slash(
        &self,
        secret: &Scalar,
    ) -> anyhow::Result<(TransactionReceipt, TransactionReceipt)> {
        let commit = self.commit_slash(secret).await?;
        let at = commit.block_number.unwrap_or_default();
        while self.head().await? <= at {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let reveal = self.reveal_slash(secret).await?;
        Ok((commit, reveal))
    }

    /// Burns a deposit's policy stake (the policy key only).
    pub async fn burn(
        &self,
        id_commitment: &Scalar,
        evidence_hash: FixedBytes<32>,
    ) -> anyhow::Result<TransactionReceipt> {
        let c = self.contract();
        mined(
            c.burn(to_u256(id_commitment), evidence_hash).send().await,
            "policy burn",
        )
        .await
    }

    /// Starts this owner's withdrawal of `id_commitment`.
    pub async fn request_withdraw(
        &self,
        id_commitment: &Scalar,
    ) -> anyhow::Result<TransactionReceipt> {
        let c = self.contract();
        mined(
            c.requestWithdraw(to_u256(id_commitment)).send().await,
            "withdrawal",
        )
        .await
    }

    /// Claims the stakes once the delay is over.
    pub async fn claim(&self, id_commitment: &Scalar) -> anyhow::Result<TransactionReceipt> {
        let c = self.contract();
        mined(c.claim(to_u256(id_commitment)).send().await, "claim").await
    }

    /// The registry's events in blocks `from..=to`, in chain order.
    pub async fn events(&self, from: u64, to: u64) -> anyhow::Result<Vec<RegistryEvent>> {
        let filter = Filter::new()
            .address(self.address)
            .from_block(from)
            .to_block(to);
        let logs = self.provider.get_logs(&filter).await?;
        let mut times = std::collections::BTreeMap::new();
        let mut out = Vec::with_capacity(logs.len());
        for log in logs {
            let block = log
                .block_number
                .ok_or_else(|| anyhow::anyhow!("a log without a block"))?;
            let block_time = match times.get(&block) {
                Some(&t) => t,
                None => {
                    let t = match log.block_timestamp {
                        Some(t) => t,
                        None => {
                            self.provider
                                .get_block_by_number(block.into())
                                .await?
                                .ok_or_else(|| anyhow::anyhow!("block {block} is missing"))?
                                .header
                                .timestamp
                        }
                    };
                    times.insert(block, t);
                    t
                }
            };
            let transaction = log.transaction_hash.unwrap_or_default();
            let event = CreditRegistryEvents::decode_log(&log.inner)
                .map_err(|e| anyhow::anyhow!("block {block}: an event that does not decode: {e}"))?
                .data;
            out.push(RegistryEvent {
                block,
                log_index: log.log_index.unwrap_or_default(),
                block_time,
                transaction,
                event,
            });
        }
        Ok(out)
    }

    /// Sends a slash commitment and its reveal into one block (anvil only:
    /// the test that such a reveal is refused). Gas limits are fixed, so
    /// nothing is estimated against the pending state.
    pub async fn commit_and_reveal_in_one_block(
        &self,
        secret: &Scalar,
    ) -> anyhow::Result<(TransactionReceipt, TransactionReceipt)> {
        let anvil = |method: &'static str, arg: serde_json::Value| {
            let provider = self.provider.clone();
            async move {
                let _: serde_json::Value = provider.raw_request(method.into(), arg).await?;
                anyhow::Ok(())
            }
        };
        anvil("evm_setIntervalMining", serde_json::json!([0])).await?;
        anvil("evm_setAutomine", serde_json::json!([false])).await?;
        let c = self.contract();
        let commit = c
            .commitSlash(slash_commitment(secret, self.sender))
            .gas(200_000)
            .send()
            .await?;
        let reveal = c.revealSlash(to_u256(secret)).gas(1_000_000).send().await?;
        anvil("evm_mine", serde_json::json!([])).await?;
        anvil("evm_setAutomine", serde_json::json!([true])).await?;
        anvil("evm_setIntervalMining", serde_json::json!([1])).await?;
        Ok((commit.get_receipt().await?, reveal.get_receipt().await?))
    }

    /// Moves the chain's clock on by `seconds` and mines a block (anvil
    /// only: tests of the withdrawal delay).
    pub async fn advance_time(&self, seconds: u64) -> anyhow::Result<()> {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_increaseTime".into(), (seconds,))
            .await?;
        let _: serde_json::Value = self.provider.raw_request("evm_mine".into(), ()).await?;
        Ok(())
    }
}
