//! Pigeonhole storage on a whole --fast devnet over real sockets: 1 MB
//! written and read back through couriers and replicas, then deleted; a forged signature,
//! a wrong-size envelope and a rewrite with other bytes each get their error
//! and change nothing stored; one replica, a process of its own, is killed
//! with SIGKILL in the middle of 500 writes: every acknowledged write reads
//! back while it is down and after it restarts, and the copies it missed
//! reach it from the other holders' replication queues; boxes deleted from
//! its database behind its back come back by read-repair.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use funion_bacap::{BoxSignature, SealedBox, WriteCap, Writer};
use funion_client::storage::{self, StorageClient};
use funion_devnet::{self as devnet, Devnet, DevnetOptions};
use funion_net::config::{self, NodeFile};
use funion_net::{fetch_document, unix_ms};
use funion_pigeonhole::envelope::{self, Request};
use funion_pigeonhole::{shard, ErrorCode};
use funion_pki::{epoch_at, Parameters};
use funion_replica::store::BoxStore;
use funion_sphinx::kem::XWing;
use funion_sphinx::NodeId;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

const EXTERNAL: &str = "replica1";

/// The replica run as its own process, killed when dropped.
struct ReplicaProcess {
    child: Child,
}

impl ReplicaProcess {
    fn start(config: &Path, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_funion"))
            .args(["node", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the funion binary runs");
        ReplicaProcess { child }
    }

    /// SIGKILL: no chance to flush or clean up anything.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn storage_counter(net: &Devnet, counter: &str) -> u64 {
    net.nodes
        .iter()
        .filter(|n| n.config.name.starts_with("replica"))
        .map(|n| n.metrics.storage(counter))
        .sum()
}

/// Waits (bounded) until the document lists `count` nodes.
async fn wait_for_nodes(net: &Devnet, count: usize) {
    let http = funion_net::http_client().unwrap();
    let authorities = net.trusted_authorities().unwrap();
    for _ in 0..600 {
        let epoch = epoch_at(unix_ms(), Parameters::fast().epoch_ms);
        if let Ok(document) = fetch_document(&http, &authorities, epoch, false).await {
            if document.nodes.len() >= count {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the external replica never joined the document");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pigeonhole_on_a_devnet() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("pigeonhole-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = DevnetOptions {
        external: vec![EXTERNAL.to_string()],
        metrics: true,
        ..DevnetOptions::default()
    };
    // The external replica starts beside the others, as its config
    // appears: the epoch's document freezes once every admitted node is in,
    // and a node that comes later waits for the next epoch.
    let replica_config = dir.join(format!("{EXTERNAL}.toml"));
    let external = async {
        for _ in 0..6_000 {
            if replica_config.exists() {
                return ReplicaProcess::start(&replica_config, &dir.join("replica1.log"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the devnet never wrote {}", replica_config.display());
    };
    let (net, mut replica) = tokio::join!(
        devnet::start_with(&dir, Parameters::fast(), &options),
        external
    );
    let net = net.unwrap();
    wait_for_nodes(&net, net.nodes.len() + 1).await;
    net.wait_until_known(net.nodes.len() + 1).await.unwrap();

    a_megabyte_round_trips(&net).await;
    bad_writes_get_their_error_and_change_nothing(&net).await;
    a_replica_killed_mid_write_loses_nothing(&net, &mut replica, &replica_config, &dir).await;
    net.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn a_megabyte_round_trips(net: &Devnet) {
    let mut data = vec![0u8; 1_000_000];
    ChaCha20Rng::seed_from_u64(7).fill_bytes(&mut data);
    let put = storage::put(&net.client, &data, |_, _| {}).await.unwrap();
    assert_eq!(put.boxes, put.stats.operations as usize);
    assert!(put.boxes >= 1_000_000 / 30_000, "{} boxes", put.boxes);
    let (back, got) = storage::get(&net.client, &put.read_cap, |_, _| {})
        .await
        .unwrap();
    assert!(back == data, "the megabyte came back different");
    assert_eq!(got.boxes, put.boxes);
    // A read cap that is not one is refused before anything is sent.
    assert!(storage::get(&net.client, "zz", |_, _| {}).await.is_err());
    assert!(storage::get(&net.client, "00", |_, _| {}).await.is_err());
    // The write cap deletes it: every box becomes a tombstone.
    assert!(storage::delete(&net.client, &put.read_cap).await.is_err());
    let deleted = storage::delete(&net.client, &put.write_cap).await.unwrap();
    assert_eq!(deleted, put.boxes);
    let error = storage::get(&net.client, &put.read_cap, |_, _| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("deleted"), "{error}");
}

async fn bad_writes_get_their_error_and_change_nothing(net: &Devnet) {
    let mut client = StorageClient::<XWing>::connect(&net.client).await.unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let writer = Writer::new(WriteCap::generate(&mut rng), b"errors");
    let original = writer.prepare(b"the original bytes");
    let rewrite = writer.prepare(b"other bytes, same box");
    let stored_before = storage_counter(net, "writes_stored");
    let results = client
        .run(vec![Request::Write(original.clone())], |_, _| {})
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(None)]);
    // The write is acknowledged once one holder has it; wait (bounded) for
    // every holder in this process to have stored it.
    let holders = shard::holders(&original.id, client.replicas(), 2);
    let here = holders.iter().filter(|h| **h != external_id(net)).count() as u64;
    let mut stored = 0;
    for _ in 0..100 {
        stored = storage_counter(net, "writes_stored");
        if stored == stored_before + here {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored, stored_before + here);
    let forwarded: u64 = courier_forwarded(net);

    // A rewrite with other bytes: Conflict, and the original stays.
    let results = client
        .run(vec![Request::Write(rewrite)], |_, _| {})
        .await
        .unwrap();
    assert_eq!(results, vec![Err(ErrorCode::Conflict)]);

    // A forged signature: refused by the intermediate, no holder sees it.
    let mut forged = Writer::new(WriteCap::generate(&mut rng), b"errors").prepare(b"forged");
    forged.signature = BoxSignature([0x42; 64]);
    let results = client
        .run(vec![Request::Write(forged.clone())], |_, _| {})
        .await
        .unwrap();
    assert_eq!(results, vec![Err(ErrorCode::BadSignature)]);

    // A wrong-size envelope: the courier refuses it and forwards nothing.
    let before = courier_forwarded(net);
    let len = client.sizes().request_len();
    let mut raw = ((len - 1) as u32).to_le_bytes().to_vec();
    raw.resize(len, envelope::VERSION);
    let answer = client.send_raw(raw).await.unwrap();
    assert_eq!(envelope::refusal(&answer), Some(ErrorCode::WrongSize));
    assert_eq!(courier_forwarded(net), before);

    // Nothing stored changed: the original reads back, the forged box is
    // nowhere, and no replica stored anything new.
    assert_eq!(storage_counter(net, "writes_stored"), stored);
    let results = client
        .run(
            vec![Request::Read(original.id), Request::Read(forged.id)],
            |_, _| {},
        )
        .await
        .unwrap();
    assert_eq!(results[0], Ok(Some(original)));
    assert_eq!(results[1], Err(ErrorCode::NotFound));
    assert!(courier_forwarded(net) > forwarded);
}

fn external_id(net: &Devnet) -> NodeId {
    let external: NodeFile = config::read(&net.dir.join(format!("{EXTERNAL}.toml"))).unwrap();
    NodeId(
        config::NodeKeys::from_config(&external.secret_seed)
            .unwrap()
            .identity
            .verifying_key()
            .to_bytes(),
    )
}

fn courier_forwarded(net: &Devnet) -> u64 {
    net.nodes
        .iter()
        .map(|n| n.metrics.storage("courier_forwarded"))
        .sum()
}

async fn a_replica_killed_mid_write_loses_nothing(
    net: &Devnet,
    replica: &mut ReplicaProcess,
    replica_config: &Path,
    dir: &Path,
) {
    let mut client = StorageClient::<XWing>::connect(&net.client).await.unwrap();
    let external: NodeFile = config::read(replica_config).unwrap();
    let external_id = external_id(net);
    let replicas = client.replicas().to_vec();
    assert!(replicas.contains(&external_id));
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut writer = Writer::new(WriteCap::generate(&mut rng), b"kill");
    let boxes: Vec<SealedBox> = (0..500u32)
        .map(|i| writer.seal_next(&i.to_le_bytes().repeat(64)).unwrap())
        .collect();
    let on_external: Vec<&SealedBox> = boxes
        .iter()
        .filter(|b| shard::holders(&b.id, &replicas, 2).contains(&external_id))
        .collect();
    assert!(on_external.len() > 100, "{} boxes", on_external.len());

    let mut killed_at = None;
    let results = client
        .run(
            boxes.iter().cloned().map(Request::Write).collect(),
            |done, _| {
                if done >= 150 && killed_at.is_none() {
                    replica.kill();
                    killed_at = Some(done);
                }
            },
        )
        .await
        .unwrap();
    assert!(killed_at.is_some());
    let acknowledged: Vec<&SealedBox> = boxes
        .iter()
        .zip(&results)
        .filter(|(_, r)| **r == Ok(None))
        .map(|(b, _)| b)
        .collect();
    assert_eq!(acknowledged.len(), 500, "writes refused: {results:?}");

    // With one holder down, every acknowledged box reads back.
    let reads: Vec<Request> = acknowledged.iter().map(|b| Request::Read(b.id)).collect();
    let back = client.run(reads.clone(), |_, _| {}).await.unwrap();
    for (item, result) in acknowledged.iter().zip(&back) {
        assert_eq!(result, &Ok(Some((*item).clone())));
    }

    // Restarted from the same data folder, it gets the copies it missed.
    *replica = ReplicaProcess::start(replica_config, &dir.join("replica1-again.log"));
    let mut drained = false;
    for _ in 0..600 {
        if storage_counter(net, "copies_owed") == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(drained, "copies still owed to the restarted replica");
    let back = client.run(reads, |_, _| {}).await.unwrap();
    assert!(back.iter().all(|r| r.is_ok()));

    // Kill it again and look inside its database: it holds every box it is
    // a holder of, written before, during or after its first death.
    replica.kill();
    let database = external.data_dir.join("boxes.redb");
    let store = BoxStore::open(&database, 3_600_000).unwrap();
    for item in &on_external {
        assert_eq!(
            store.get(&item.id, unix_ms()).unwrap().as_ref(),
            Some(*item)
        );
    }

    // Delete 20 of its boxes behind its back; reading them repairs it.
    let lost: Vec<&SealedBox> = on_external.iter().take(20).copied().collect();
    for item in &lost {
        assert!(store.remove(&item.id).unwrap());
    }
    drop(store);
    *replica = ReplicaProcess::start(replica_config, &dir.join("replica1-third.log"));
    let metrics_url = format!(
        "http://{}/metrics",
        external.metrics_listen.as_ref().unwrap()
    );
    let stored_before = scrape(&metrics_url, "writes_stored").await;
    let reads = lost.iter().map(|b| Request::Read(b.id)).collect();
    let back = client.run(reads, |_, _| {}).await.unwrap();
    for (item, result) in lost.iter().zip(&back) {
        assert_eq!(result, &Ok(Some((*item).clone())));
    }
    let mut repaired = 0;
    for _ in 0..750 {
        repaired = scrape(&metrics_url, "writes_stored").await - stored_before;
        if repaired >= lost.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(repaired, lost.len() as u64);
    replica.kill();
    let store = BoxStore::open(&database, 3_600_000).unwrap();
    for item in lost {
        assert_eq!(store.get(&item.id, unix_ms()).unwrap().as_ref(), Some(item));
    }
}

/// A storage counter from a node's metrics endpoint (0 until it is set or
/// while the node is starting).
async fn scrape(url: &str, counter: &str) -> u64 {
    let Ok(response) = reqwest::get(url).await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    let prefix = format!("funion_storage_{counter}{{");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
