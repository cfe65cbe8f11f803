//! Where a box lives: the K replicas with the smallest
//! BLAKE2b-256(replica ID ‖ box ID) (rendezvous hashing), and the two
//! intermediates a client addresses, disjoint from those holders whenever
//! at least K + 2 replicas exist.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use funion_bacap::BoxId;
use funion_sphinx::NodeId;
use rand_core::RngCore;

use crate::envelope::SLOTS;

fn score(replica: &NodeId, box_id: &BoxId) -> [u8; 32] {
    let mut hash = Blake2b::<U32>::new();
    hash.update(replica.0);
    hash.update(box_id.0);
    hash.finalize().into()
}

/// The `k` replicas that hold `box_id`, best first.
pub fn holders(box_id: &BoxId, replicas: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut scored: Vec<([u8; 32], NodeId)> =
        replicas.iter().map(|r| (score(r, box_id), *r)).collect();
    scored.sort();
    scored.into_iter().take(k).map(|(_, r)| r).collect()
}

/// Two distinct intermediates for `box_id`, chosen uniformly from the
/// replicas that do not hold it (from all replicas when too few remain).
/// `None` with fewer than two replicas.
pub fn intermediates<R: RngCore + ?Sized>(
    box_id: &BoxId,
    replicas: &[NodeId],
    k: usize,
    rng: &mut R,
) -> Option<[NodeId; SLOTS]> {
    if replicas.len() < SLOTS {
        return None;
    }
    let holding = holders(box_id, replicas, k);
    let others: Vec<NodeId> = replicas
        .iter()
        .filter(|r| !holding.contains(r))
        .copied()
        .collect();
    let pool = if others.len() >= SLOTS {
        others
    } else {
        replicas.to_vec()
    };
    let first = (rng.next_u64() % pool.len() as u64) as usize;
    let mut second = (rng.next_u64() % (pool.len() as u64 - 1)) as usize;
    if second >= first {
        second += 1;
    }
    Some([pool[first], pool[second]])
}
