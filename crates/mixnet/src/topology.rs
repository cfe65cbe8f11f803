//! The network as a client or service needs it: decoded Sphinx keys of every
//! gateway, mix (by layer) and service for one epoch.

use funion_pki::{NetworkDocument, Role};
use funion_sphinx::kem::Kem;
use funion_sphinx::{NodeId, RECIPIENT_LEN};

/// One node with its decoded Sphinx key.
pub struct Hop<K: Kem> {
    /// The node.
    pub id: NodeId,
    /// Its name in the document.
    pub name: String,
    /// Its Sphinx public key for the topology's epoch.
    pub public_key: K::PublicKey,
}

impl<K: Kem> Clone for Hop<K> {
    fn clone(&self) -> Self {
        Hop {
            id: self.id,
            name: self.name.clone(),
            public_key: self.public_key.clone(),
        }
    }
}

/// Every node a path can use, for one epoch.
pub struct Topology<K: Kem> {
    /// The epoch the keys are for.
    pub epoch: u64,
    /// Gateways.
    pub gateways: Vec<Hop<K>>,
    /// Mixes, by layer (index 0 is layer 1).
    pub layers: Vec<Vec<Hop<K>>>,
    /// Service nodes.
    pub services: Vec<Hop<K>>,
    /// Storage replicas (their keys open Pigeonhole envelopes).
    pub replicas: Vec<Hop<K>>,
}

impl<K: Kem> Clone for Topology<K> {
    fn clone(&self) -> Self {
        Topology {
            epoch: self.epoch,
            gateways: self.gateways.clone(),
            layers: self.layers.clone(),
            services: self.services.clone(),
            replicas: self.replicas.clone(),
        }
    }
}

/// Why a document gives no usable topology.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// A node lists no Sphinx key for the epoch asked for.
    #[error("node {0} has no Sphinx key for epoch {1}")]
    MissingKey(String, u64),
    /// A node's Sphinx key does not decode for this network's KEM.
    #[error("node {0} has a malformed Sphinx key")]
    BadKey(String),
    /// No node of a role a path needs.
    #[error("the document has no {0}")]
    Missing(&'static str),
}

impl<K: Kem> Topology<K> {
    /// Decodes the keys for `epoch` from a verified document.
    pub fn from_document(document: &NetworkDocument, epoch: u64) -> Result<Self, TopologyError> {
        let hop = |entry: &funion_pki::NodeEntry| -> Result<Hop<K>, TopologyError> {
            let bytes = entry
                .sphinx_key(epoch)
                .ok_or_else(|| TopologyError::MissingKey(entry.name.clone(), epoch))?;
            Ok(Hop {
                id: entry.id(),
                name: entry.name.clone(),
                public_key: K::public_key_from_bytes(bytes)
                    .map_err(|_| TopologyError::BadKey(entry.name.clone()))?,
            })
        };
        let gateways = document
            .with_role(Role::Gateway)
            .map(hop)
            .collect::<Result<Vec<_>, _>>()?;
        let services = document
            .with_role(Role::Service)
            .map(hop)
            .collect::<Result<Vec<_>, _>>()?;
        let replicas = document
            .with_role(Role::Replica)
            .map(hop)
            .collect::<Result<Vec<_>, _>>()?;
        let layers = (1..=document.parameters.layers)
            .map(|layer| {
                document
                    .layer(layer)
                    .map(hop)
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        if gateways.is_empty() {
            return Err(TopologyError::Missing("gateway"));
        }
        if services.is_empty() {
            return Err(TopologyError::Missing("service node"));
        }
        if layers.iter().any(Vec::is_empty) {
            return Err(TopologyError::Missing("mix in every layer"));
        }
        Ok(Topology {
            epoch,
            gateways,
            layers,
            services,
            replicas,
        })
    }
}

/// The recipient field that names a built-in service (`"echo"`): its name,
/// zero padded.
pub fn service_recipient(name: &str) -> [u8; RECIPIENT_LEN] {
    let mut out = [0u8; RECIPIENT_LEN];
    let bytes = name.as_bytes();
    let len = bytes.len().min(RECIPIENT_LEN);
    out[..len].copy_from_slice(&bytes[..len]);
    out
}
