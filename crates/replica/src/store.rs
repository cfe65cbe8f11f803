//! A replica's boxes on disk, in redb (an embedded ACID database): every
//! batch of writes is one transaction, committed durably before any of its
//! writes is acknowledged. The same transaction records which other holders
//! each newly stored box must still be copied to (the replication queue),
//! so a crash loses neither the box nor the duty to replicate it.

use std::path::Path;

use funion_bacap::{BoxId, BoxSignature, SealedBox, SIGNATURE_SIZE};
use funion_pigeonhole::replica::storage::BoxStorage;
pub use funion_pigeonhole::replica::storage::{WriteOp, Written};
use funion_pigeonhole::replica::{decide_write, WriteDecision};
use funion_sphinx::NodeId;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

/// box ID → stored-at (ms, u64 LE) ‖ signature ‖ ciphertext.
const BOXES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("boxes");
/// box ID ‖ holder ID → queued-at (ms): copies still owed to other holders.
const REPLICATION: TableDefinition<&[u8], u64> = TableDefinition::new("replication");

/// A failure of the database itself.
#[derive(Debug, thiserror::Error)]
#[error("box store: {0}")]
pub struct StoreError(String);

fn fail(error: impl std::fmt::Display) -> StoreError {
    StoreError(error.to_string())
}

/// The boxes one replica holds.
pub struct BoxStore {
    db: Database,
    lifetime_ms: u64,
}

fn encode(item: &SealedBox, now_ms: u64) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + SIGNATURE_SIZE + item.ciphertext.len());
    value.extend_from_slice(&now_ms.to_le_bytes());
    value.extend_from_slice(&item.signature.0);
    value.extend_from_slice(&item.ciphertext);
    value
}

/// Decodes a stored value; `None` for a corrupt record.
fn decode(id: &[u8], value: &[u8]) -> Option<(u64, SealedBox)> {
    let stored_at = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let signature = value.get(8..8 + SIGNATURE_SIZE)?.try_into().ok()?;
    Some((
        stored_at,
        SealedBox {
            id: BoxId(id.try_into().ok()?),
            signature: BoxSignature(signature),
            ciphertext: value[8 + SIGNATURE_SIZE..].to_vec(),
        },
    ))
}

impl BoxStore {
    /// Opens (or creates) the store at `path`; boxes expire `lifetime_ms`
    /// after they were stored.
    pub fn open(path: &Path, lifetime_ms: u64) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(fail)?;
        let txn = db.begin_write().map_err(fail)?;
        txn.open_table(BOXES).map_err(fail)?;
        txn.open_table(REPLICATION).map_err(fail)?;
        txn.commit().map_err(fail)?;
        Ok(BoxStore { db, lifetime_ms })
    }

    fn live(&self, stored_at: u64, now_ms: u64) -> bool {
        stored_at.saturating_add(self.lifetime_ms) > now_ms
    }

    /// Applies a batch of writes in one durable transaction and returns
    /// what each did. Nothing is changed by a refused write; on an error
    /// nothing at all is.
    pub fn write_batch(&self, ops: &[WriteOp], now_ms: u64) -> Result<Vec<Written>, StoreError> {
        let txn = self.db.begin_write().map_err(fail)?;
        let mut outcomes = Vec::with_capacity(ops.len());
        {
            let mut boxes = txn.open_table(BOXES).map_err(fail)?;
            let mut queue = txn.open_table(REPLICATION).map_err(fail)?;
            for op in ops {
                let id = op.item.id.0;
                let existing = match boxes.get(id.as_slice()).map_err(fail)? {
                    Some(value) => decode(&id, value.value())
                        .filter(|(at, _)| self.live(*at, now_ms))
                        .map(|(_, b)| b),
                    None => None,
                };
                let outcome = match decide_write(existing.as_ref(), &op.item) {
                    WriteDecision::Store => {
                        boxes
                            .insert(id.as_slice(), encode(&op.item, now_ms).as_slice())
                            .map_err(fail)?;
                        for holder in &op.replicate_to {
                            let key = [id.as_slice(), holder.0.as_slice()].concat();
                            queue.insert(key.as_slice(), now_ms).map_err(fail)?;
                        }
                        Written::Stored
                    }
                    WriteDecision::AlreadyStored => Written::Unchanged,
                    WriteDecision::Refuse(code) => Written::Refused(code),
                };
                outcomes.push(outcome);
            }
        }
        txn.commit().map_err(fail)?;
        Ok(outcomes)
    }

    /// The box stored under `id`, unless it expired.
    pub fn get(&self, id: &BoxId, now_ms: u64) -> Result<Option<SealedBox>, StoreError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let boxes = txn.open_table(BOXES).map_err(fail)?;
        let found = boxes.get(id.0.as_slice()).map_err(fail)?;
        Ok(found
            .and_then(|v| decode(&id.0, v.value()))
            .filter(|(at, _)| self.live(*at, now_ms))
            .map(|(_, b)| b))
    }

    /// Copies owed to other holders that were queued before `before_ms`
    /// (the intermediate usually confirms both holders first), at most
    /// `limit`.
    pub fn replication_backlog(
        &self,
        limit: usize,
        before_ms: u64,
    ) -> Result<Vec<(SealedBox, NodeId)>, StoreError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let queue = txn.open_table(REPLICATION).map_err(fail)?;
        let boxes = txn.open_table(BOXES).map_err(fail)?;
        let mut out = Vec::new();
        for entry in queue.iter().map_err(fail)? {
            if out.len() >= limit {
                break;
            }
            let (key, queued_at) = entry.map_err(fail)?;
            if queued_at.value() >= before_ms {
                continue;
            }
            let key = key.value();
            let (id, holder) = key.split_at(32);
            let Some(value) = boxes.get(id).map_err(fail)? else {
                continue;
            };
            if let (Some((_, item)), Ok(holder)) = (decode(id, value.value()), holder.try_into()) {
                out.push((item, NodeId(holder)));
            }
        }
        Ok(out)
    }

    /// Copies owed, in all.
    pub fn replication_owed(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let queue = txn.open_table(REPLICATION).map_err(fail)?;
        queue.len().map_err(fail)
    }

    /// Records copies that reached their holders.
    pub fn replicated(&self, done: &[(BoxId, NodeId)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(fail)?;
        {
            let mut queue = txn.open_table(REPLICATION).map_err(fail)?;
            for (id, holder) in done {
                let key = [id.0.as_slice(), holder.0.as_slice()].concat();
                queue.remove(key.as_slice()).map_err(fail)?;
            }
        }
        txn.commit().map_err(fail)
    }

    /// Deletes expired boxes (and copies owed of them); returns how many.
    pub fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(fail)?;
        let removed;
        {
            let mut boxes = txn.open_table(BOXES).map_err(fail)?;
            let mut queue = txn.open_table(REPLICATION).map_err(fail)?;
            let expired: Vec<Vec<u8>> = boxes
                .iter()
                .map_err(fail)?
                .filter_map(|entry| {
                    let (key, value) = entry.ok()?;
                    let stored_at = u64::from_le_bytes(value.value().get(..8)?.try_into().ok()?);
                    (!self.live(stored_at, now_ms)).then(|| key.value().to_vec())
                })
                .collect();
            for id in &expired {
                boxes.remove(id.as_slice()).map_err(fail)?;
                let owed: Vec<Vec<u8>> = queue
                    .range(id.as_slice()..)
                    .map_err(fail)?
                    .filter_map(|e| e.ok().map(|(k, _)| k.value().to_vec()))
                    .take_while(|k| k.starts_with(id))
                    .collect();
                for key in owed {
                    queue.remove(key.as_slice()).map_err(fail)?;
                }
            }
            removed = expired.len();
        }
        txn.commit().map_err(fail)?;
        Ok(removed)
    }

    /// Deletes a box outright, as if it had never been written here (an
    /// operator's repair tool; reads elsewhere bring it back by read-repair).
    /// Returns whether it was there.
    pub fn remove(&self, id: &BoxId) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(fail)?;
        let removed = {
            let mut boxes = txn.open_table(BOXES).map_err(fail)?;
            let removed = boxes.remove(id.0.as_slice()).map_err(fail)?.is_some();
            removed
        };
        txn.commit().map_err(fail)?;
        Ok(removed)
    }

    /// Boxes stored (expired ones not yet swept included).
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let boxes = txn.open_table(BOXES).map_err(fail)?;
        boxes.len().map_err(fail)
    }

    /// Whether no box is stored.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

/// The state machine's view of the store: the same calls, through a
/// shared reference (redb serialises writers itself).
impl BoxStorage for &BoxStore {
    type Error = StoreError;

    fn write_batch(&mut self, ops: &[WriteOp], now_ms: u64) -> Result<Vec<Written>, StoreError> {
        BoxStore::write_batch(self, ops, now_ms)
    }

    fn get(&mut self, id: &BoxId, now_ms: u64) -> Result<Option<SealedBox>, StoreError> {
        BoxStore::get(self, id, now_ms)
    }

    fn replication_backlog(
        &mut self,
        limit: usize,
        before_ms: u64,
    ) -> Result<Vec<(SealedBox, NodeId)>, StoreError> {
        BoxStore::replication_backlog(self, limit, before_ms)
    }

    fn replication_owed(&mut self) -> Result<u64, StoreError> {
        BoxStore::replication_owed(self)
    }

    fn replicated(&mut self, done: &[(BoxId, NodeId)]) -> Result<(), StoreError> {
        BoxStore::replicated(self, done)
    }

    fn expire(&mut self, now_ms: u64) -> Result<usize, StoreError> {
        BoxStore::expire(self, now_ms)
    }
}
