//! BACAP, the blinded cryptographic capabilities of Echomix, byte for byte as
//! Katzenpost's hpqc `bacap` package writes them.
//!
//! A writer holds a [`WriteCap`]: an Ed25519 root key and a position in a
//! one-way ratchet of [`MessageBoxIndex`]es. For each index and each context
//! (a byte string naming what the stream is for) it derives an unlinkable box
//! ID (a blinded Ed25519 public key), a per-box signing key, and an
//! AES-256-GCM-SIV key. A [`ReadCap`] carries the root public key and the same
//! ratchet, so its holder can find and decrypt every box from its index on,
//! but cannot write one. Any replica can check a box's signature against its
//! ID without learning anything else.
//!
//! The crate is sans-I/O: it takes bytes and randomness and returns bytes. The
//! stateful [`Writer`] and [`Reader`] are what the rest of funion uses; the
//! per-index operations on the caps are there for protocols that need them
//! (tombstones, resuming, checking positions) and for the test vectors.
//!
//! Secrets (seeds, scalars, ratchet state, keys) are zeroized when dropped and
//! never printed by `Debug`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod caps;
mod index;
pub mod primitives;
mod stream;

pub use caps::{ReadCap, WriteCap};
pub use index::MessageBoxIndex;
pub use stream::{Reader, Writer};

/// Size of a serialized [`MessageBoxIndex`]: Idx64 (LE) ‖ K ‖ E ‖ H.
pub const MESSAGE_BOX_INDEX_SIZE: usize = 8 + 32 + 32 + 32;
/// Size of a serialized [`WriteCap`]: Ed25519 seed ‖ public key ‖ index.
pub const WRITE_CAP_SIZE: usize = 64 + MESSAGE_BOX_INDEX_SIZE;
/// Size of a serialized [`ReadCap`]: root public key ‖ index.
pub const READ_CAP_SIZE: usize = 32 + MESSAGE_BOX_INDEX_SIZE;
/// Size of a box ID (a blinded Ed25519 public key).
pub const BOX_ID_SIZE: usize = 32;
/// Size of a box signature (Ed25519).
pub const SIGNATURE_SIZE: usize = 64;
/// Most ratchet steps a position check walks before giving up (hpqc's bound).
pub const MAX_CONTAINS_WALK: u64 = 1 << 18;

/// Why a BACAP operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bytes that do not parse as the named object.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// The object being parsed.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The ratchet only moves forward.
    #[error("cannot rewind a message box index from {from} to {to}")]
    CannotRewind {
        /// The index held.
        from: u64,
        /// The index asked for.
        to: u64,
    },
    /// There is no index after 2^64 - 1.
    #[error("message box index exhausted: there is no index after 2^64 - 1")]
    IndexExhausted,
    /// The signature does not verify under the box ID.
    #[error("box signature does not verify under its box ID")]
    SignatureInvalid,
    /// The ciphertext does not decrypt under this index and context.
    #[error("box does not decrypt under this index and context")]
    DecryptFailed,
    /// The box ID is not the one the capability derives at this index.
    #[error("box ID is not the one this capability derives at this index")]
    BoxMismatch,
    /// The index is not on the capability's stream.
    #[error("index does not lie on this capability's stream")]
    NotOnStream,
    /// The index is too far ahead to check cheaply.
    #[error("index lies more than {MAX_CONTAINS_WALK} steps ahead of the capability")]
    TooFarAhead,
}

/// A box ID: the blinded Ed25519 public key that names a box and verifies its
/// signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoxId(pub [u8; BOX_ID_SIZE]);

impl BoxId {
    /// Reads a box ID from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        bytes.try_into().map(BoxId).map_err(|_| Error::Malformed {
            what: "box ID",
            why: "not 32 bytes",
        })
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; BOX_ID_SIZE] {
        &self.0
    }
}

impl std::fmt::Display for BoxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for BoxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BoxId({self})")
    }
}

/// An Ed25519 signature over a box's ciphertext.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BoxSignature(pub [u8; SIGNATURE_SIZE]);

impl BoxSignature {
    /// Reads a signature from exactly 64 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        bytes
            .try_into()
            .map(BoxSignature)
            .map_err(|_| Error::Malformed {
                what: "box signature",
                why: "not 64 bytes",
            })
    }
}

impl std::fmt::Debug for BoxSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BoxSignature(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

/// A box ready for a replica: its ID, its ciphertext (empty for a tombstone)
/// and the signature over that ciphertext.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SealedBox {
    /// The box ID.
    pub id: BoxId,
    /// AES-256-GCM-SIV ciphertext with its tag; empty for a tombstone.
    pub ciphertext: Vec<u8>,
    /// Signature over `ciphertext` under the key `id` names.
    pub signature: BoxSignature,
}

impl SealedBox {
    /// Whether this box is a tombstone (a signed empty payload).
    pub fn is_tombstone(&self) -> bool {
        self.ciphertext.is_empty()
    }
}

/// What an opened box held. `Debug` shows a message's length, never its bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum BoxContent {
    /// A message (possibly empty: an empty message still has a 16-byte tag).
    Message(Vec<u8>),
    /// A tombstone: the writer deleted the box.
    Tombstone,
}

impl std::fmt::Debug for BoxContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoxContent::Message(bytes) => write!(f, "Message({} bytes)", bytes.len()),
            BoxContent::Tombstone => write!(f, "Tombstone"),
        }
    }
}

/// Checks a box's signature under its ID, as any replica can.
pub fn verify_box(id: &BoxId, ciphertext: &[u8], signature: &BoxSignature) -> Result<(), Error> {
    primitives::verify_ed25519(&id.0, ciphertext, &signature.0)
}
