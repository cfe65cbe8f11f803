//! funion's credit registry on Ethereum: the contract `contracts/src/
//! CreditRegistry.sol` (compiled by solc-js; its ABI and bytecode are
//! committed under `contracts/build/`), deployed with its Poseidon
//! libraries linked; deposits, slashes (commit, then reveal in a later
//! block), policy burns and withdrawals as real transactions; its events
//! read back for the ledger's indexer; key files; and a local anvil for
//! devnets and tests.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod anvil;
pub mod keys;
pub mod registry;

use funion_tickets::Scalar;
use serde::{Deserialize, Serialize};

pub use alloy::primitives::{Address, U256};
pub use registry::{Registry, RegistryEvent, RegistryParams, StakeOnChain};

/// Where the registry lives: what `chain.json` in a devnet folder holds, so
/// any Ethereum tool can look.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainFile {
    /// The node's JSON-RPC URL (`http://host:port`).
    pub rpc_url: String,
    /// The registry contract's address (`0x…`).
    pub registry: Address,
}

/// A BN254 scalar (funion's little-endian bytes) as the uint256 the
/// contract sees.
pub fn to_u256(value: &Scalar) -> U256 {
    U256::from_le_bytes(value.0)
}

/// A uint256 from the contract as a scalar; `None` if it is not below the
/// field (the contract never emits such a value).
pub fn to_scalar(value: U256) -> Option<Scalar> {
    let scalar = Scalar(value.to_le_bytes());
    funion_tickets::rate_commitment(&scalar, 1)
        .ok()
        .map(|_| scalar)
}
