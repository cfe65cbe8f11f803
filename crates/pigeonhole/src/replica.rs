//! The rules every replica applies before it stores anything: the
//! signature must verify under the box ID; boxes are write-once (a
//! byte-identical rewrite succeeds); a tombstone signed by the same key
//! replaces a box, and nothing replaces a tombstone. [`Replica`] is the
//! replica itself, a state machine whose storage is effects
//! ([`storage`]).

mod machine;
pub mod storage;

pub use machine::{Replica, ReplicaConfig, ReplicaEffect};

use funion_bacap::{verify_box, SealedBox};

use crate::ErrorCode;

/// What to do with a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteDecision {
    /// Store the box (new, or a tombstone replacing a message).
    Store,
    /// The same bytes are stored already: succeed, change nothing.
    AlreadyStored,
    /// Refuse, changing nothing.
    Refuse(ErrorCode),
}

/// Decides a write of `new` given what is stored under its ID.
pub fn decide_write(existing: Option<&SealedBox>, new: &SealedBox) -> WriteDecision {
    if verify_box(&new.id, &new.ciphertext, &new.signature).is_err() {
        return WriteDecision::Refuse(ErrorCode::BadSignature);
    }
    match existing {
        None => WriteDecision::Store,
        Some(old) if old == new => WriteDecision::AlreadyStored,
        Some(old) if new.is_tombstone() && !old.is_tombstone() => WriteDecision::Store,
        Some(_) => WriteDecision::Refuse(ErrorCode::Conflict),
    }
}
