//! The replica's redb store: writes are durable across a reopen, refused
//! writes change nothing, the replication queue survives restarts, boxes
//! expire.

use funion_bacap::{BoxSignature, WriteCap, Writer};
use funion_pigeonhole::ErrorCode;
use funion_replica::store::{BoxStore, WriteOp, Written};
use funion_sphinx::NodeId;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn op(item: &funion_bacap::SealedBox, replicate_to: Vec<NodeId>) -> WriteOp {
    WriteOp {
        item: item.clone(),
        replicate_to,
    }
}

#[test]
fn writes_survive_a_reopen_and_refusals_change_nothing() {
    let path = dir("durable").join("boxes.redb");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let writer = Writer::new(WriteCap::generate(&mut rng), b"ctx");
    let first = writer.prepare(b"first");
    let other = writer.prepare(b"other");
    let mut forged = Writer::new(WriteCap::generate(&mut rng), b"ctx").prepare(b"forged");
    forged.signature = BoxSignature([3; 64]);
    let holder = NodeId([9; 32]);
    {
        let store = BoxStore::open(&path, 60_000).unwrap();
        let outcomes = store
            .write_batch(
                &[
                    op(&first, vec![holder]),
                    op(&first, vec![]),
                    op(&other, vec![]),
                    op(&forged, vec![]),
                ],
                1_000,
            )
            .unwrap();
        assert_eq!(
            outcomes,
            vec![
                Written::Stored,
                Written::Unchanged,
                Written::Refused(ErrorCode::Conflict),
                Written::Refused(ErrorCode::BadSignature)
            ]
        );
    }
    let store = BoxStore::open(&path, 60_000).unwrap();
    assert_eq!(store.get(&first.id, 2_000).unwrap(), Some(first.clone()));
    assert_eq!(store.get(&forged.id, 2_000).unwrap(), None);
    assert_eq!(store.len().unwrap(), 1);
    // The copy owed to the other holder is still queued after the reopen,
    // but only offered once it is old enough.
    assert!(store.replication_backlog(10, 1_000).unwrap().is_empty());
    assert_eq!(
        store.replication_backlog(10, 1_001).unwrap(),
        vec![(first.clone(), holder)]
    );
    store.replicated(&[(first.id, holder)]).unwrap();
    assert_eq!(store.replication_owed().unwrap(), 0);
}

#[test]
fn tombstones_replace_boxes_and_boxes_expire() {
    let path = dir("expiry").join("boxes.redb");
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let writer = Writer::new(WriteCap::generate(&mut rng), b"ctx");
    let item = writer.prepare(b"short-lived");
    let tombstone = writer.prepare_tombstone();
    let store = BoxStore::open(&path, 10_000).unwrap();
    let owed = NodeId([1; 32]);
    assert_eq!(
        store
            .write_batch(&[op(&item, vec![owed]), op(&tombstone, vec![])], 0)
            .unwrap(),
        vec![Written::Stored, Written::Stored]
    );
    assert_eq!(store.get(&item.id, 1).unwrap(), Some(tombstone.clone()));
    // Expired: invisible at once, deleted by the sweep with what it owed.
    assert_eq!(store.get(&item.id, 10_000).unwrap(), None);
    assert_eq!(store.expire(9_999).unwrap(), 0);
    assert_eq!(store.expire(10_000).unwrap(), 1);
    assert!(store.is_empty().unwrap());
    assert_eq!(store.replication_owed().unwrap(), 0);
    // Once expired, the ID can be written again.
    assert_eq!(
        store.write_batch(&[op(&item, vec![])], 20_000).unwrap(),
        vec![Written::Stored]
    );
}
