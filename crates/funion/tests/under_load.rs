//! funion on a machine that is not idle, as a person's laptop never is.
//!
//! - Beside a CPU-bound process on every core, `funion demo` finishes with
//!   real answers (no OVERFLOW), and a --fast devnet with its compute
//!   couriers answers every ping and carries a 1 MB put and get.
//! - A devnet driven past what the CPU can carry (many clients at once at
//!   the --fast rate) sheds work, and says so in its metrics (loops the
//!   clients shed, packets the nodes dropped as overloaded); its queues stay
//!   within their bounds and its memory bounded; once the load is gone it
//!   answers every ping again, without a restart.
//!
//! The tests of this file take turns (one lock), so only one busy group of
//! processes runs at a time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use funion_client::session::{self as client, Network, Session};
use funion_client::storage;
use funion_devnet::calibrate::peak_rss_bytes;
use funion_devnet::{self as devnet, Devnet, DevnetOptions};
use funion_inference::tiny;
use funion_mixnet::DropReason;
use funion_net::config::{ComputeFile, ModelFile};
use funion_pki::Parameters;
use funion_sphinx::kem::XWing;

static TURNS: Mutex<()> = Mutex::new(());

fn my_turn() -> MutexGuard<'static, ()> {
    TURNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One CPU-bound process per core (a shell's empty loop), killed on drop.
struct Busy(Vec<Child>);

impl Busy {
    fn every_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Busy(
            (0..cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("sh runs")
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `test` in this file's turn on a runtime like the nodes' (two
/// workers).
fn in_turn(test: impl std::future::Future<Output = ()>) {
    let _turn = my_turn();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test);
}

fn test_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_demo_finishes_beside_a_busy_process_on_every_core() {
    let _turn = my_turn();
    let _busy = Busy::every_core();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_funion"))
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the funion binary runs");
    // A hang guard, not a speed check: a demo that has not finished in
    // fifteen minutes is stuck.
    let started = Instant::now();
    while demo.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(900) {
            let _ = demo.kill();
            panic!("funion demo did not finish beside the busy processes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = demo.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "funion demo failed:\n{stdout}\n{stderr}"
    );
    let answers: Vec<&str> = stdout.lines().filter(|l| l.contains("answer:")).collect();
    assert_eq!(answers.len(), 2, "two answers expected:\n{stdout}");
    assert!(
        answers.iter().all(|a| !a.contains("OVERFLOW")),
        "a job overflowed its bucket:\n{stdout}"
    );
    assert!(stdout.contains("384 dimensions"), "{stdout}");
    assert!(stdout.contains("λ_s = "), "{stdout}");
    eprintln!("{stdout}");
}

#[test]
fn a_devnet_serves_beside_a_busy_process_on_every_core() {
    in_turn(devnet_beside_busy_cores());
}

async fn devnet_beside_busy_cores() {
    let dir = test_dir("busy-devnet");
    let tiny_dir = dir.join("tiny-llama");
    tiny::write_tiny_llama(&tiny_dir, tiny::SEED, tiny::TinyShape::default()).unwrap();
    let options = DevnetOptions {
        metrics: true,
        // Compute couriers are clients with cover of their own, as on
        // `funion devnet --fast`.
        compute: Some(ComputeFile {
            models: vec![ModelFile::folder("tiny-llama", tiny_dir)],
            ..ComputeFile::default()
        }),
        ..DevnetOptions::default()
    };
    let net = devnet::start_with(&dir, Parameters::fast(), &options)
        .await
        .unwrap();
    let _busy = Busy::every_core();
    let report = twenty_pings_all_answered(&net, "beside busy cores").await;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let put = storage::put(&net.client, &data, |_, _| {}).await.unwrap();
    let (copy, _) = storage::get(&net.client, &put.read_cap, |_, _| {})
        .await
        .unwrap();
    assert_eq!(copy, data);
    eprintln!(
        "beside busy cores: 20 pings, median RTT {:.1} ms, {} resends; 1 MB put and got; loops shed by the compute couriers: {}",
        median_ms(&report.rtts_us),
        report.retransmissions,
        net.nodes
            .iter()
            .map(|n| n.metrics.compute("loops_shed"))
            .sum::<u64>()
    );
    net.stop();
}

/// Sends twenty pings through `net` and checks that every one came back.
async fn twenty_pings_all_answered(net: &Devnet, when: &str) -> client::PingReport {
    let report = client::ping(&net.client, 20, Duration::from_secs(600), |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        report.rtts_us.len(),
        20,
        "{when}: every ping is answered (lost {}, resends {})",
        report.lost,
        report.retransmissions
    );
    report
}

fn median_ms(rtts_us: &[u64]) -> f64 {
    let mut sorted = rtts_us.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0) as f64 / 1e3
}

fn overloaded(net: &Devnet) -> u64 {
    net.nodes
        .iter()
        .map(|n| {
            let counters = n.metrics.counters();
            counters
                .dropped
                .get(&DropReason::Overloaded)
                .copied()
                .unwrap_or(0)
        })
        .sum()
}

/// Clients past what this machine carries: each is a full mixnet client at
/// the --fast rate (200 slots a second, every one a 37 kB X-Wing loop).
const OVERLOAD_CLIENTS: usize = 24;

#[test]
fn an_overloaded_devnet_sheds_stays_bounded_and_recovers() {
    in_turn(overload_and_recovery());
}

async fn overload_and_recovery() {
    let dir = test_dir("overload");
    let options = DevnetOptions {
        metrics: true,
        ..DevnetOptions::default()
    };
    let net = devnet::start_with(&dir, Parameters::fast(), &options)
        .await
        .unwrap();
    let rss_before = peak_rss_bytes();

    // The load: many clients sending cover as fast as the rate says.
    let mut load = Vec::new();
    let shed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..OVERLOAD_CLIENTS {
        let network = Network::fetch(&net.client).await.unwrap();
        let mut session = Session::<XWing>::connect(&network, Duration::from_secs(2))
            .await
            .unwrap();
        let shed = shed.clone();
        load.push(tokio::spawn(async move {
            let mut counted = 0;
            loop {
                if session.step().await.is_err() {
                    return;
                }
                let now = session.client.stats().loops_shed;
                shed.fetch_add(now - counted, std::sync::atomic::Ordering::Relaxed);
                counted = now;
            }
        }));
    }
    // Six seconds of overload, watching the queues.
    let mut deepest = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for node in &net.nodes {
            deepest = deepest.max(node.metrics.queue_depth());
        }
    }
    for task in &load {
        task.abort();
    }
    for task in load {
        let _ = task.await;
    }
    let shed_by_clients = shed.load(std::sync::atomic::Ordering::Relaxed);
    let dropped_by_nodes = overloaded(&net);
    let peak_rss = peak_rss_bytes();
    eprintln!(
        "overload: {OVERLOAD_CLIENTS} clients for 6 s; clients shed {shed_by_clients} loops; nodes dropped \
         {dropped_by_nodes} packets as overloaded; deepest node queue {deepest} packets; peak RSS \
         {:?} MB (before the load {:?} MB)",
        peak_rss.map(|b| b / 1_000_000),
        rss_before.map(|b| b / 1_000_000)
    );
    assert!(
        shed_by_clients + dropped_by_nodes > 0,
        "{OVERLOAD_CLIENTS} clients at 200 loops/s each did not overload this devnet"
    );
    // What was shed is in the metrics a scraper sees.
    let rendered: String = net.nodes.iter().map(|n| n.metrics.render()).collect();
    assert!(rendered.contains("funion_queue_peak"));
    if dropped_by_nodes > 0 {
        assert!(rendered.contains("reason=\"overloaded\""));
    }
    // Bounded: no node held more than its delay queue's limit and the
    // replay log's (7,243 + 2,048 packets at 37 kB), and the whole process
    // (thirteen nodes, the authority, the ledger, twenty-four clients)
    // stayed under 2 GB.
    for node in &net.nodes {
        assert!(
            node.metrics.queue_peak() <= 7_243 + 2_048,
            "{} held {} packets",
            node.config.name,
            node.metrics.queue_peak()
        );
    }
    if let Some(peak) = peak_rss {
        assert!(peak < 2_000_000_000, "peak RSS {peak} bytes");
    }

    // The load is gone: the same nodes, not restarted, drain their queues
    // and answer every ping.
    for _ in 0..600 {
        if net.nodes.iter().all(|n| n.metrics.queue_depth() == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = twenty_pings_all_answered(&net, "after the overload").await;
    eprintln!(
        "recovered: 20 pings answered, median RTT {:.1} ms, {} resends",
        median_ms(&report.rtts_us),
        report.retransmissions
    );
    assert!(net.nodes.iter().all(|n| !n.task.is_finished()));
    net.stop();
}
