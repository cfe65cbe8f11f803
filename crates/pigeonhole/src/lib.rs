//! Pigeonhole storage as state machines (Katzenpost's `pigeonhole` spec):
//! BACAP boxes live on replicas and are reached only through couriers.
//!
//! - [`envelope`]: the client's multi-recipient KEM envelope to two
//!   *intermediate* replicas (one KEM encapsulation and a wrapped data key
//!   per replica, one AEAD body), every read, write and tombstone padded to
//!   the same size; the replicas' replies sealed back to the client, padded
//!   too. The courier sees only which replicas to forward to.
//! - [`shard`]: which replicas hold a box (rendezvous hashing) and how a
//!   client picks intermediates disjoint from them.
//! - [`client`]: the storage client: envelopes per box operation, polls,
//!   the other slot after NotFound, fresh envelopes, retries.
//! - [`courier`]: the courier service: de-duplicates envelopes, forwards
//!   them to the intermediates, answers through the client's SURB (holding
//!   it for a bounded time, else an ACK the client polls on), caches replies.
//! - [`wire`]: messages between couriers and replicas and between replicas.
//! - [`stream`]: a byte stream cut into equal BACAP box payloads.
//! - [`replica`]: the storage rules every replica applies, and the replica
//!   (intermediate, holder, replicator) with its store as effects.
//!
//! Sans-I/O: bytes, time (microseconds) and a caller's RNG in; bytes out.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod courier;
pub mod envelope;
pub mod replica;
pub mod shard;
pub mod stream;
pub mod wire;

/// Microseconds on the driver's clock.
pub type Micros = u64;

/// Why a storage operation failed, as replicas and couriers report it. One
/// byte on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum ErrorCode {
    /// Done.
    Ok = 0,
    /// No such box (never written, or expired).
    NotFound = 1,
    /// The signature does not verify under the box ID.
    BadSignature = 2,
    /// The box holds other bytes already (boxes are write-once).
    Conflict = 3,
    /// An envelope of the wrong size.
    WrongSize = 4,
    /// The envelope does not decrypt under any of the replica's keys.
    Undecryptable = 5,
    /// No replica that holds the box answered in time; try again.
    Unavailable = 6,
    /// The replica's store failed; try again.
    StorageFailure = 7,
    /// Bytes that do not parse.
    Malformed = 8,
    /// The envelope names a replica the network does not list.
    UnknownReplica = 9,
}

impl ErrorCode {
    /// The code a byte stands for.
    pub fn from_byte(byte: u8) -> Option<Self> {
        use ErrorCode::*;
        [
            Ok,
            NotFound,
            BadSignature,
            Conflict,
            WrongSize,
            Undecryptable,
            Unavailable,
            StorageFailure,
            Malformed,
            UnknownReplica,
        ]
        .into_iter()
        .find(|c| *c as u8 == byte)
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::StorageFailure | ErrorCode::NotFound
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorCode::Ok => "ok",
            ErrorCode::NotFound => "no such box",
            ErrorCode::BadSignature => "signature does not verify under the box ID",
            ErrorCode::Conflict => "the box already holds other bytes",
            ErrorCode::WrongSize => "envelope of the wrong size",
            ErrorCode::Undecryptable => "envelope does not decrypt",
            ErrorCode::Unavailable => "no holder of the box answered in time",
            ErrorCode::StorageFailure => "the replica's store failed",
            ErrorCode::Malformed => "malformed message",
            ErrorCode::UnknownReplica => "envelope names an unknown replica",
        })
    }
}

impl std::error::Error for ErrorCode {}
