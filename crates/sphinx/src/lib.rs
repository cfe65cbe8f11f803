//! KEM Sphinx: the packet format every funion message travels in.
//!
//! Sphinx (Danezis–Goldberg) as Katzenpost's KEM Sphinx specifies it: each
//! hop's key comes from its own KEM ciphertext, carried in the routing slot
//! of the hop before, so any IND-CCA2 KEM works, including post-quantum ones.
//! Two are provided: [`kem::XWing`] (ML-KEM-768 + X25519, the default) and
//! [`kem::X25519`]. Packets have one constant length per [`Geometry`]; every
//! hop checks a header MAC, learns only its own commands (next hop, delay,
//! or delivery), and strips one layer of the payload's wide-block cipher
//! ([`hctr2::Hctr2`]), so a changed payload bit is caught at the end. SURBs
//! let a responder answer without learning where the answer goes.
//!
//! Sans-I/O: keys, randomness and packets are passed in; nothing here reads a
//! clock, a socket or a thread.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod commands;
mod crypto;
mod geometry;
pub mod hctr2;
pub mod kem;
mod model;
mod packet;
mod surb;

pub use geometry::{
    Geometry, COMMANDS_LEN, MAC_LEN, MAX_HOPS_LIMIT, NODE_ID_LEN, PAYLOAD_TAG_LEN, RECIPIENT_LEN,
    SPRP_KEY_LEN, SURB_ID_LEN, VERSION_LEN,
};
pub use packet::{create_packet, SphinxNode};
pub use surb::{Surb, SurbKeys};

/// A node's identifier, as next-hop commands name it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub [u8; NODE_ID_LEN]);

/// One hop of a path: which node, its KEM public key, and how long (chosen
/// by the sender, in microseconds) it must hold the packet.
pub struct PathHop<'a, K: kem::Kem> {
    /// The node.
    pub node: NodeId,
    /// Its KEM public key for the current epoch.
    pub public_key: &'a K::PublicKey,
    /// Its mixing delay for this packet, in microseconds.
    pub delay_us: u32,
}

/// What the last hop does with the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The queue or service the payload is for.
    pub recipient: [u8; RECIPIENT_LEN],
    /// Set for SURB replies: names the keys that open the payload.
    pub surb_id: Option<[u8; SURB_ID_LEN]>,
}

/// A per-hop replay tag: the same every time the same packet reaches the
/// same node under the same key; a node refuses a tag it has seen.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ReplayTag(pub [u8; 32]);

/// What unwrapping one layer produced.
#[derive(Debug)]
pub struct Unwrapped {
    /// The replay tag (already offered to the `seen` check).
    pub replay_tag: ReplayTag,
    /// What to do next.
    pub action: Action,
}

/// What a node does with an unwrapped packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Hold for `delay_us`, then send the (rewritten) packet to `next_hop`.
    Forward {
        /// The next node.
        next_hop: NodeId,
        /// Mixing delay chosen by the sender, microseconds.
        delay_us: u32,
    },
    /// The payload's tag checked: deliver `message` to `recipient`.
    Deliver {
        /// The queue or service.
        recipient: [u8; RECIPIENT_LEN],
        /// Mixing delay chosen by the sender, microseconds.
        delay_us: u32,
        /// The message, padded to the geometry's capacity.
        message: Vec<u8>,
    },
    /// A SURB reply: hand `payload` (still encrypted) to `recipient`, who
    /// opens it with the keys named `surb_id`.
    SurbReply {
        /// The queue the reply is for.
        recipient: [u8; RECIPIENT_LEN],
        /// Which SURB this answers.
        surb_id: [u8; SURB_ID_LEN],
        /// Mixing delay chosen by the sender, microseconds.
        delay_us: u32,
        /// The payload as it arrived.
        payload: Vec<u8>,
    },
}

/// Why a Sphinx operation failed. Every error on a received packet means:
/// drop it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A geometry that cannot be built, or was built for another KEM.
    #[error("bad geometry: {0}")]
    Geometry(&'static str),
    /// A packet or SURB of the wrong length (checked before any crypto).
    #[error("wrong length: expected {expected} bytes, got {got}")]
    WrongLength {
        /// The geometry's length.
        expected: usize,
        /// The length offered.
        got: usize,
    },
    /// A version field this node does not speak.
    #[error("unknown packet version or KEM")]
    UnknownVersion,
    /// A public key that does not decode or fails its check.
    #[error("malformed KEM public key")]
    BadPublicKey,
    /// A KEM ciphertext that does not decapsulate.
    #[error("KEM decapsulation failed")]
    Decapsulation,
    /// The header MAC does not verify: the header was changed, or is not
    /// for this node.
    #[error("header MAC does not verify")]
    HeaderMac,
    /// The replay tag was seen before.
    #[error("replayed packet")]
    Replay,
    /// Routing commands that do not parse, or make no sense together.
    #[error("invalid routing commands")]
    InvalidCommand,
    /// The payload's tag is wrong: it was changed on the way.
    #[error("payload was tampered with")]
    PayloadTampered,
    /// A path longer than the geometry allows, or empty.
    #[error("path of {hops} hops; the geometry allows 1 to {max_hops}")]
    PathLength {
        /// Hops asked for.
        hops: usize,
        /// The geometry's maximum.
        max_hops: usize,
    },
    /// A message longer than a packet carries.
    #[error("message of {len} bytes; a packet carries {capacity}")]
    MessageTooLong {
        /// The message length.
        len: usize,
        /// The geometry's capacity.
        capacity: usize,
    },
}
