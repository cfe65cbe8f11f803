//! Messages between couriers and replicas, and between replicas, over the
//! nodes' Noise links (postcard-encoded; every decode is checked).

use funion_bacap::{BoxId, BoxSignature, SealedBox, SIGNATURE_SIZE};
use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// The part of a client's envelope one intermediate replica gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEnvelope {
    /// The envelope's hash (the courier's key for it).
    pub hash: [u8; 32],
    /// Which of the two intermediates this is.
    pub slot: u8,
    /// Version and both intermediates' IDs (authenticated by the body).
    pub header: Vec<u8>,
    /// The KEM ciphertext to this replica.
    pub kem_ciphertext: Vec<u8>,
    /// The data key, wrapped for this replica.
    pub wrapped_key: Vec<u8>,
    /// The encrypted request, common to both slots.
    pub body: Vec<u8>,
}

/// A box on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBox {
    /// The box ID (its verifying key).
    pub id: [u8; 32],
    /// The signature (64 bytes).
    pub signature: Vec<u8>,
    /// The ciphertext (empty for a tombstone).
    pub ciphertext: Vec<u8>,
}

impl WireBox {
    /// The box, if the signature has the right length.
    pub fn to_sealed(&self) -> Result<SealedBox, ErrorCode> {
        let signature: [u8; SIGNATURE_SIZE] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| ErrorCode::Malformed)?;
        Ok(SealedBox {
            id: BoxId(self.id),
            ciphertext: self.ciphertext.clone(),
            signature: BoxSignature(signature),
        })
    }
}

impl From<&SealedBox> for WireBox {
    fn from(item: &SealedBox) -> Self {
        WireBox {
            id: item.id.0,
            signature: item.signature.0.to_vec(),
            ciphertext: item.ciphertext.clone(),
        }
    }
}

/// One message on a courier–replica or replica–replica link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageMessage {
    /// Courier to intermediate: a client's envelope.
    Envelope(ReplicaEnvelope),
    /// Intermediate to courier: the sealed reply (empty when the envelope
    /// could not be opened; `code` says why).
    EnvelopeReply {
        /// The envelope's hash.
        hash: [u8; 32],
        /// The intermediate's slot.
        slot: u8,
        /// What the courier may see: `Ok` when `sealed` holds the reply.
        code: ErrorCode,
        /// The reply, sealed to the client.
        sealed: Vec<u8>,
    },
    /// Intermediate to holder (`replicate`: the holder copies it to the
    /// other holders), or holder to holder (replication, read-repair).
    Write {
        /// The sender's request number.
        request: u64,
        /// The box.
        item: WireBox,
        /// Whether the receiver should replicate it to the other holders.
        replicate: bool,
    },
    /// The outcome of a write, sent once it is durable.
    WriteReply {
        /// The request number.
        request: u64,
        /// The outcome.
        code: ErrorCode,
    },
    /// Intermediate to holders: every holder listed has the box durably,
    /// so copies owed to them can be forgotten.
    Stored {
        /// The box.
        box_id: [u8; 32],
        /// The holders that confirmed it.
        holders: Vec<[u8; 32]>,
    },
    /// Intermediate to holder: read a box; with `wait_ms` above 0, a
    /// holder that lacks it answers when it is written, or `NotFound` once
    /// the wait (capped by the holder) is over.
    Read {
        /// The sender's request number.
        request: u64,
        /// The box ID.
        box_id: [u8; 32],
        /// The longest wait for the box, milliseconds.
        wait_ms: u32,
    },
    /// The outcome of a read.
    ReadReply {
        /// The request number.
        request: u64,
        /// The outcome.
        code: ErrorCode,
        /// The box, when found.
        item: Option<WireBox>,
    },
}

impl StorageMessage {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding to memory cannot fail")
    }

    /// Decodes a message; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, ErrorCode> {
        match postcard::take_from_bytes(bytes) {
            Ok((message, [])) => Ok(message),
            _ => Err(ErrorCode::Malformed),
        }
    }
}
