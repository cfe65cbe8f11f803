//! What a replica asks of its box store, and a store in memory.
//!
//! The replica state machine never touches a database: it emits
//! [`StorageEffect`]s, and its driver carries each out against a
//! [`BoxStorage`] (redb in the runtime, [`MemoryStore`] in the simulator)
//! with [`execute`] and hands the [`StorageAnswer`] back. Both stores apply
//! the same rules ([`decide_write`](super::decide_write)) and the same
//! lifetime.

use std::collections::BTreeMap;

use funion_bacap::{BoxId, SealedBox};
use funion_sphinx::NodeId;

use super::{decide_write, WriteDecision};
use crate::ErrorCode;

/// One write in a batch: the box, and the holders to copy it to once it
/// is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOp {
    /// The box.
    pub item: SealedBox,
    /// Other holders that must get a copy (empty for copies and repairs).
    pub replicate_to: Vec<NodeId>,
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Stored (a new box, or a tombstone over one).
    Stored,
    /// The same bytes were there already; nothing changed.
    Unchanged,
    /// Refused; nothing changed.
    Refused(ErrorCode),
}

impl Written {
    /// The outcome as the protocol reports it.
    pub fn code(self) -> ErrorCode {
        match self {
            Written::Stored | Written::Unchanged => ErrorCode::Ok,
            Written::Refused(code) => code,
        }
    }
}

/// A replica's durable boxes and replication queue. `write_batch` is one
/// atomic, durable step: either every outcome it returns holds after a
/// crash, or none does.
pub trait BoxStorage {
    /// Why the store failed.
    type Error: std::fmt::Display;
    /// Applies a batch of writes (and queues the copies of each box stored)
    /// durably, and returns what each did.
    fn write_batch(&mut self, ops: &[WriteOp], now_ms: u64) -> Result<Vec<Written>, Self::Error>;
    /// The box stored under `id`, unless it expired.
    fn get(&mut self, id: &BoxId, now_ms: u64) -> Result<Option<SealedBox>, Self::Error>;
    /// Up to `limit` copies owed to other holders, queued before `before_ms`.
    fn replication_backlog(
        &mut self,
        limit: usize,
        before_ms: u64,
    ) -> Result<Vec<(SealedBox, NodeId)>, Self::Error>;
    /// Copies owed, in all.
    fn replication_owed(&mut self) -> Result<u64, Self::Error>;
    /// Forgets copies that reached their holders.
    fn replicated(&mut self, done: &[(BoxId, NodeId)]) -> Result<(), Self::Error>;
    /// Deletes expired boxes and the copies owed of them; returns how many.
    fn expire(&mut self, now_ms: u64) -> Result<usize, Self::Error>;
}

/// A storage step the replica needs done. Every one is answered with
/// [`Replica::answer`](super::Replica::answer); none blocks the replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageEffect {
    /// Make these writes durable.
    Write {
        /// Names the batch in the answer.
        token: u64,
        /// The writes, in order.
        ops: Vec<WriteOp>,
    },
    /// Read one box.
    Read {
        /// Names the read in the answer.
        token: u64,
        /// The box.
        box_id: BoxId,
    },
    /// Load copies owed that were queued at least `min_age_ms` ago.
    LoadBacklog {
        /// At most this many.
        limit: usize,
        /// Their least age.
        min_age_ms: u64,
    },
    /// Forget these copies: their holders have them.
    Replicated(Vec<(BoxId, NodeId)>),
    /// Sweep expired boxes.
    Expire,
}

/// A store's answer to one [`StorageEffect`]; errors carry the store's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageAnswer {
    /// The outcome of `Write`.
    Written {
        /// The batch.
        token: u64,
        /// Each write's outcome, or why the batch failed (then none happened).
        outcomes: Result<Vec<Written>, String>,
    },
    /// The outcome of `Read`.
    Read {
        /// The read.
        token: u64,
        /// The box if stored.
        result: Result<Option<SealedBox>, String>,
    },
    /// The outcome of `LoadBacklog`: the copies, and how many are owed in all.
    Backlog(Result<(Vec<(SealedBox, NodeId)>, u64), String>),
    /// The outcome of `Replicated`.
    Replicated(Result<(), String>),
    /// The outcome of `Expire`: boxes deleted.
    Expired(Result<usize, String>),
}

impl StorageAnswer {
    /// The answer to `effect` when the store could not carry it out at all.
    pub fn failure(effect: &StorageEffect, reason: &str) -> StorageAnswer {
        let error = reason.to_string();
        match effect {
            StorageEffect::Write { token, .. } => StorageAnswer::Written {
                token: *token,
                outcomes: Err(error),
            },
            StorageEffect::Read { token, .. } => StorageAnswer::Read {
                token: *token,
                result: Err(error),
            },
            StorageEffect::LoadBacklog { .. } => StorageAnswer::Backlog(Err(error)),
            StorageEffect::Replicated(_) => StorageAnswer::Replicated(Err(error)),
            StorageEffect::Expire => StorageAnswer::Expired(Err(error)),
        }
    }

    /// The store's error, if this answer carries one.
    pub fn error(&self) -> Option<&str> {
        match self {
            StorageAnswer::Written {
                outcomes: Err(e), ..
            }
            | StorageAnswer::Read { result: Err(e), .. }
            | StorageAnswer::Backlog(Err(e))
            | StorageAnswer::Replicated(Err(e))
            | StorageAnswer::Expired(Err(e)) => Some(e),
            _ => None,
        }
    }
}

/// Carries out `effect` against `store` at `now_ms` (the store's clock).
pub fn execute<S: BoxStorage>(store: &mut S, effect: StorageEffect, now_ms: u64) -> StorageAnswer {
    let text = |e: S::Error| e.to_string();
    match effect {
        StorageEffect::Write { token, ops } => StorageAnswer::Written {
            token,
            outcomes: store.write_batch(&ops, now_ms).map_err(text),
        },
        StorageEffect::Read { token, box_id } => StorageAnswer::Read {
            token,
            result: store.get(&box_id, now_ms).map_err(text),
        },
        StorageEffect::LoadBacklog { limit, min_age_ms } => StorageAnswer::Backlog(
            store
                .replication_backlog(limit, now_ms.saturating_sub(min_age_ms))
                .and_then(|items| Ok((items, store.replication_owed()?)))
                .map_err(text),
        ),
        StorageEffect::Replicated(done) => {
            StorageAnswer::Replicated(store.replicated(&done).map_err(text))
        }
        StorageEffect::Expire => StorageAnswer::Expired(store.expire(now_ms).map_err(text)),
    }
}

/// Boxes in memory, for the simulator and tests: the same rules and
/// lifetime as the durable store, and "durable" for as long as the value
/// lives (a simulated crash keeps it, as a disk would).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    lifetime_ms: u64,
    boxes: BTreeMap<BoxId, (u64, SealedBox)>,
    queue: BTreeMap<(BoxId, NodeId), u64>,
    /// While set, every call fails (a disk that is gone).
    pub failing: bool,
}

/// The failure a [`MemoryStore`] reports while `failing` is set.
#[derive(Debug)]
pub struct MemoryStoreDown;

impl std::fmt::Display for MemoryStoreDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the store is down")
    }
}

impl MemoryStore {
    /// An empty store whose boxes live `lifetime_ms`.
    pub fn new(lifetime_ms: u64) -> Self {
        MemoryStore {
            lifetime_ms,
            ..MemoryStore::default()
        }
    }

    /// Boxes held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether no box is held.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    fn check(&self) -> Result<(), MemoryStoreDown> {
        if self.failing {
            Err(MemoryStoreDown)
        } else {
            Ok(())
        }
    }

    fn live(&self, stored_at: u64, now_ms: u64) -> bool {
        stored_at.saturating_add(self.lifetime_ms) > now_ms
    }
}

impl BoxStorage for MemoryStore {
    type Error = MemoryStoreDown;

    fn write_batch(&mut self, ops: &[WriteOp], now_ms: u64) -> Result<Vec<Written>, Self::Error> {
        self.check()?;
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            let existing = self
                .boxes
                .get(&op.item.id)
                .filter(|(at, _)| self.live(*at, now_ms))
                .map(|(_, b)| b);
            outcomes.push(match decide_write(existing, &op.item) {
                WriteDecision::Store => {
                    self.boxes.insert(op.item.id, (now_ms, op.item.clone()));
                    for holder in &op.replicate_to {
                        self.queue.insert((op.item.id, *holder), now_ms);
                    }
                    Written::Stored
                }
                WriteDecision::AlreadyStored => Written::Unchanged,
                WriteDecision::Refuse(code) => Written::Refused(code),
            });
        }
        Ok(outcomes)
    }

    fn get(&mut self, id: &BoxId, now_ms: u64) -> Result<Option<SealedBox>, Self::Error> {
        self.check()?;
        Ok(self
            .boxes
            .get(id)
            .filter(|(at, _)| self.live(*at, now_ms))
            .map(|(_, b)| b.clone()))
    }

    fn replication_backlog(
        &mut self,
        limit: usize,
        before_ms: u64,
    ) -> Result<Vec<(SealedBox, NodeId)>, Self::Error> {
        self.check()?;
        Ok(self
            .queue
            .iter()
            .filter(|(_, at)| **at < before_ms)
            .filter_map(|((id, holder), _)| Some((self.boxes.get(id)?.1.clone(), *holder)))
            .take(limit)
            .collect())
    }

    fn replication_owed(&mut self) -> Result<u64, Self::Error> {
        self.check()?;
        Ok(self.queue.len() as u64)
    }

    fn replicated(&mut self, done: &[(BoxId, NodeId)]) -> Result<(), Self::Error> {
        self.check()?;
        for key in done {
            self.queue.remove(key);
        }
        Ok(())
    }

    fn expire(&mut self, now_ms: u64) -> Result<usize, Self::Error> {
        self.check()?;
        let lifetime = self.lifetime_ms;
        let expired: Vec<BoxId> = self
            .boxes
            .iter()
            .filter(|(_, (at, _))| at.saturating_add(lifetime) <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.boxes.remove(id);
        }
        self.queue.retain(|(id, _), _| !expired.contains(id));
        Ok(expired.len())
    }
}
