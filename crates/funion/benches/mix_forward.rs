//! One mix node forwarding 30 kB X-Wing packets over loopback Noise links.
//!
//! The mix runs as its own process (`funion node`), so its CPU time can be
//! read from /proc. A sender, authenticated as a node the document lists,
//! pushes N prebuilt packets whose next hop is a sink that only counts them.
//! Printed: sustained packets/s, the mix's CPU time per packet, and the
//! per-hop Sphinx unwrap cost measured in the same run (the bound).
//!
//! Run: `cargo bench -p funion --bench mix_forward` (N from FUNION_BENCH_PACKETS).

use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use funion_authority as authority;
use funion_net::config::{self, AuthorityFile, NodeFile, NodeKeys};
use funion_net::link::{self, Frame, FrameReceiver, FrameSender};
use funion_net::unix_ms;
use funion_pki::{epoch_at, EpochKey, NodeDescriptor, NodeEntry, Parameters, Role};
use funion_sphinx::kem::{Kem, XWing};
use funion_sphinx::{create_packet, Delivery, NodeId, PathHop, SphinxNode};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tokio::net::{TcpListener, TcpStream};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// User plus system CPU seconds from a /proc `stat` file.
fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; after the ')' they are 12 and 13.
    (ticks(11) + ticks(12)) / 100.0
}

struct FakeNode {
    keys: NodeKeys,
    entry: NodeEntry,
}

fn fake_node(
    name: &str,
    layer: u8,
    address: String,
    epoch: u64,
    rng: &mut ChaCha20Rng,
) -> FakeNode {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let keys = NodeKeys::from_seed(seed);
    let sphinx_keys = [epoch, epoch + 1]
        .into_iter()
        .map(|e| EpochKey {
            epoch: e,
            public_key: XWing::public_key_bytes(&XWing::public_key(&XWing::secret_from_seed(
                &keys.sphinx_seed(e).unwrap(),
            ))),
        })
        .collect();
    let entry = NodeEntry {
        name: name.into(),
        role: Role::Mix,
        layer,
        identity_key: keys.identity.verifying_key().to_bytes(),
        link_key: link::public_link_key(&keys.link_secret),
        addresses: vec![address],
        sphinx_keys,
        models: Vec::new(),
        fast_path: false,
    };
    FakeNode { keys, entry }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count: usize = std::env::var("FUNION_BENCH_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000);
    let parameters = Parameters::fast(); // X-Wing, 30,000-byte payload, 5 hops
    let geometry = parameters.geometry().unwrap();
    let epoch = epoch_at(unix_ms(), parameters.epoch_ms);
    let dir = std::env::temp_dir().join(format!("funion-mix-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(42);

    // The authority.
    let authority_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority_url = format!("http://{}", authority_listener.local_addr().unwrap());
    let authority_seed = hex::encode([5u8; 32]);
    let authority_key = authority::public_key_hex(&authority_seed).unwrap();
    // The sink (layer 2) and the sender's identity (layer 3), published.
    let sink_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = fake_node(
        "sink",
        2,
        sink_listener.local_addr().unwrap().to_string(),
        epoch,
        &mut rng,
    );
    let sender = fake_node("sender", 3, "127.0.0.1:1".into(), epoch, &mut rng);
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let mix_seed: config::SecretSeed = hex::encode(seed).into();
    let mix_identity = NodeKeys::from_config(&mix_seed).unwrap().identity_hex();
    tokio::spawn(authority::serve(
        AuthorityFile {
            listen: String::new(),
            secret_seed: authority_seed.into(),
            allowed_nodes: vec![
                hex::encode(sink.entry.identity_key),
                hex::encode(sender.entry.identity_key),
                mix_identity,
            ],
            boot_grace_ms: config::DEFAULT_BOOT_GRACE_MS,
            authorities: Vec::new(),
            authority_threshold: None,
            vote_window_ms: config::DEFAULT_VOTE_WINDOW_MS,
            parameters: parameters.clone(),
        },
        authority_listener,
    ));
    let http = funion_net::http_client().unwrap();
    for node in [&sink, &sender] {
        for e in [epoch, epoch + 1] {
            let body = NodeDescriptor {
                epoch: e,
                node: node.entry.clone(),
            }
            .sign(&node.keys.identity)
            .unwrap();
            let response = http
                .post(format!("{authority_url}/descriptor"))
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        }
    }

    // The mix under test, in its own process.
    let mix_listen = {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mix_config = NodeFile {
        name: "mix".into(),
        role: Role::Mix,
        layer: 1,
        listen: mix_listen.clone(),
        metrics_listen: None,
        secret_seed: mix_seed,
        data_dir: dir.join("mix"),
        authorities: vec![config::AuthorityRef {
            url: authority_url.clone(),
            key: authority_key.clone(),
        }],
        authority_threshold: None,
        box_lifetime_s: 3600,
        courier_hold_ms: 2_000,
        compute: None,
    };
    let config_path = dir.join("mix.toml");
    config::write(&config_path, &mix_config).unwrap();
    let child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_funion"))
            .args(["node", "--config"])
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mix_keys = NodeKeys::from_config(&mix_config.secret_seed).unwrap();
    // The mix draws its Sphinx key when it publishes; read it from its
    // data directory once it is there.
    let store = funion_net::config::EpochKeyStore::new(&mix_config.data_dir);
    let mut mix_seed = None;
    for _ in 0..1_500 {
        mix_seed = store.existing(epoch).unwrap();
        if mix_seed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mix_seed = mix_seed.expect("the mix never drew its Sphinx key");
    let mix_public = XWing::public_key(&XWing::secret_from_seed(&mix_seed));
    let mix_id = NodeId(mix_keys.identity.verifying_key().to_bytes());
    let _ = SigningKey::from_bytes(&[0; 32]);

    // N packets: mix (no delay) then the sink.
    eprintln!("building {count} packets ...");
    let sink_public = XWing::public_key(&XWing::secret_from_seed(
        &sink.keys.sphinx_seed(epoch).unwrap(),
    ));
    let path = [
        PathHop::<XWing> {
            node: mix_id,
            public_key: &mix_public,
            delay_us: 0,
        },
        PathHop::<XWing> {
            node: sink.entry.id(),
            public_key: &sink_public,
            delay_us: 0,
        },
    ];
    let delivery = Delivery {
        recipient: [0; 32],
        surb_id: None,
    };
    let packets: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            create_packet(
                &geometry,
                &path,
                &delivery,
                &(i as u64).to_le_bytes(),
                &mut rng,
            )
            .unwrap()
        })
        .collect();

    // The bound, in the same run: one Sphinx unwrap per packet, one core.
    // Measured before and after forwarding; the faster (stricter) is used.
    let node = SphinxNode::<XWing>::new(geometry, XWing::secret_from_seed(&mix_seed)).unwrap();
    let sample: Vec<Vec<u8>> = packets[..1_000.min(count)].to_vec();
    let measure_unwrap = || {
        let mut copies = sample.clone();
        let started = Instant::now();
        for packet in &mut copies {
            node.unwrap(packet, |_| false).unwrap();
        }
        started.elapsed().as_secs_f64() * 1e6 / copies.len() as f64
    };
    let unwrap_before = measure_unwrap();

    // The sink counts what arrives.
    let arrived = Arc::new(AtomicU64::new(0));
    let last_arrival = Arc::new(std::sync::Mutex::new(Instant::now()));
    {
        let (arrived, last_arrival, secret) =
            (arrived.clone(), last_arrival.clone(), sink.keys.link_secret);
        tokio::spawn(async move {
            loop {
                let (stream, _) = sink_listener.accept().await.unwrap();
                let (arrived, last_arrival) = (arrived.clone(), last_arrival.clone());
                tokio::spawn(async move {
                    let Ok(mut link) = link::respond(stream, &secret, geometry.packet_len()).await
                    else {
                        return;
                    };
                    while let Ok(frame) = link.receiver.recv().await {
                        if matches!(frame, Frame::Packet(_)) {
                            arrived.fetch_add(1, Ordering::Relaxed);
                            *last_arrival.lock().unwrap() = Instant::now();
                        }
                    }
                });
            }
        });
    }

    // Connect to the mix as "sender" once it has the document with us in it.
    let mut link = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(stream) = TcpStream::connect(&mix_listen).await else {
            continue;
        };
        let Ok(mut link) =
            link::initiate(stream, &sender.keys.link_secret, geometry.packet_len()).await
        else {
            continue;
        };
        if link.sender.send(&Frame::Padding).await.is_ok() {
            break link;
        }
    };
    tokio::time::sleep(Duration::from_millis(2_500)).await; // the mix's document refresh

    let cpu_before = cpu_seconds(child.0.id());
    let started = Instant::now();
    for packet in packets {
        link.sender.send(&Frame::Packet(packet)).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (arrived.load(Ordering::Relaxed) as usize) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = last_arrival
        .lock()
        .unwrap()
        .duration_since(started)
        .as_secs_f64();
    let cpu = cpu_seconds(child.0.id()) - cpu_before;
    if std::env::var("FUNION_BENCH_THREADS").is_ok() {
        for task in std::fs::read_dir(format!("/proc/{}/task", child.0.id()))
            .unwrap()
            .flatten()
        {
            let path = task.path().join("stat");
            let stat = std::fs::read_to_string(&path).unwrap_or_default();
            let name = stat
                .split('(')
                .nth(1)
                .and_then(|s| s.split(')').next())
                .unwrap_or("")
                .to_string();
            let seconds = stat_cpu_seconds(&path.to_string_lossy());
            eprintln!("  thread {name}: {seconds:.2} s");
        }
    }
    let unwrap_after = measure_unwrap();
    let unwrap_us = unwrap_before.min(unwrap_after);
    let delivered = arrived.load(Ordering::Relaxed);
    let rate = delivered as f64 / elapsed;
    let bound = 1e6 / unwrap_us;
    println!("mix_forward: X-Wing, 30,000-byte payload ({} B packets), {count} packets sent, {delivered} forwarded", geometry.packet_len());
    println!(
        "  sustained {rate:.0} packets/s ({:.1} MB/s), mix CPU {:.1} µs per packet",
        rate * geometry.packet_len() as f64 / 1e6,
        cpu * 1e6 / delivered.max(1) as f64
    );
    println!("  Sphinx unwrap in the same run: {unwrap_us:.1} µs per hop (before {unwrap_before:.1}, after {unwrap_after:.1}), bound {bound:.0} packets/s on one core");
    println!("  throughput / bound = {:.2}", rate / bound);
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
