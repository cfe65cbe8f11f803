//! The ledger's tree of rate commitments: depth 20, Poseidon, sparse in
//! memory (the ledger rebuilds it from its store when it starts).

use rln::prelude::{Fr, PoseidonHash, RLNMerkleProof};
use serde::{Deserialize, Serialize};
use zerokit_utils::merkle_tree::{OptimalMerkleTree, ZerokitMerkleProof, ZerokitMerkleTree};

use crate::{Scalar, TicketError};

/// Depth of the rate-commitment tree (2²⁰ deposits), fixed by the circuit.
pub const TREE_DEPTH: usize = 20;

/// A leaf's authentication path, as the ledger hands it to a depositor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerklePath {
    /// Siblings from the leaf up.
    pub elements: Vec<Scalar>,
    /// For each level, 1 when the path goes through the right child.
    pub bits: Vec<u8>,
}

impl MerklePath {
    pub(crate) fn to_rln(&self) -> Result<RLNMerkleProof, TicketError> {
        if self.elements.len() != TREE_DEPTH || self.bits.len() != TREE_DEPTH {
            return Err(TicketError::Malformed {
                what: "merkle path",
                detail: format!(
                    "{} elements and {} bits, want {TREE_DEPTH} each",
                    self.elements.len(),
                    self.bits.len()
                ),
            });
        }
        if self.bits.iter().any(|&b| b > 1) {
            return Err(TicketError::Malformed {
                what: "merkle path",
                detail: "path bits must be 0 or 1".into(),
            });
        }
        let elements = self
            .elements
            .iter()
            .map(|e| e.to_fr("path element"))
            .collect::<Result<Vec<Fr>, _>>()?;
        Ok(RLNMerkleProof::new(elements, self.bits.clone()))
    }
}

/// The tree of rate commitments.
pub struct RateTree {
    tree: OptimalMerkleTree<PoseidonHash>,
}

impl Default for RateTree {
    fn default() -> Self {
        RateTree {
            tree: OptimalMerkleTree::default(TREE_DEPTH).expect("depth 20 is valid"),
        }
    }
}

impl RateTree {
    /// Sets leaf `index` to `leaf`.
    pub fn set(&mut self, index: u32, leaf: &Scalar) -> Result<(), TicketError> {
        let leaf = leaf.to_fr("leaf")?;
        self.tree
            .set(index as usize, leaf)
            .map_err(|e| TicketError::Tree(e.to_string()))
    }

    /// Empties leaf `index` (a slashed or withdrawn deposit): no proof
    /// against a later root can use it.
    pub fn remove(&mut self, index: u32) -> Result<(), TicketError> {
        self.tree
            .delete(index as usize)
            .map_err(|e| TicketError::Tree(e.to_string()))
    }

    /// The current root.
    pub fn root(&self) -> Scalar {
        Scalar::from_fr(&self.tree.root())
    }

    /// The authentication path of leaf `index`.
    pub fn path(&self, index: u32) -> Result<MerklePath, TicketError> {
        let proof = self
            .tree
            .proof(index as usize)
            .map_err(|e| TicketError::Tree(e.to_string()))?;
        Ok(MerklePath {
            elements: proof
                .get_path_elements()
                .iter()
                .map(Scalar::from_fr)
                .collect(),
            bits: proof.get_path_index(),
        })
    }
}
