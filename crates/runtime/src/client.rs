//! The client runtime: fetches and verifies the document, connects to a
//! gateway over Noise, and drives the [`funion_mixnet::Client`] core on the
//! wall clock. `ping` sends echo requests through the whole network and
//! measures round trips.

use std::time::{Duration, Instant};

use funion_mixnet::{Client, ClientConfig, ClientEvent, Topology};
use funion_pki::{epoch_at, KemKind, NetworkDocument, Parameters};
use funion_sphinx::kem::{Kem, XWing, X25519};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::{hex32, ClientFile};
use crate::link::{self, Frame, FrameReceiver, FrameSender};
use crate::{fetch_document, fetch_parameters, unix_ms};

/// What one ping run measured.
#[derive(Clone, Debug, Default)]
pub struct PingReport {
    /// Round trips of the echoes that came back, microseconds, in order.
    pub rtts_us: Vec<u64>,
    /// Echoes given up.
    pub lost: u64,
    /// Echo requests asked for.
    pub requested: u64,
    /// Requests sent again after a timeout.
    pub retransmissions: u64,
    /// Cover loops that came back.
    pub loops_returned: u64,
    /// Mean per-hop delay μ, microseconds.
    pub mean_delay_us: u64,
    /// Hops per echo (forward and reply).
    pub echo_hops: u32,
}

/// Sends `count` echo requests through the network and waits for them
/// (each gets up to three sends); `on_pong` sees each round trip.
pub async fn ping(
    config: &ClientFile,
    count: u64,
    timeout: Duration,
    on_pong: impl FnMut(u64, u64),
) -> anyhow::Result<PingReport> {
    let http = reqwest::Client::new();
    let parameters = fetch_parameters(&http, &config.authority_url).await?;
    let authority_key = hex32(&config.authority_key)?;
    let epoch = epoch_at(unix_ms(), parameters.epoch_ms);
    let document =
        fetch_document(&http, &config.authority_url, &authority_key, epoch, true).await?;
    let directory = Directory {
        http,
        url: config.authority_url.clone(),
        key: authority_key,
    };
    let run = Run {
        directory: &directory,
        parameters: &parameters,
        document: &document,
        count,
        timeout,
    };
    match parameters.kem {
        KemKind::XWing => ping_kem::<XWing>(run, on_pong).await,
        KemKind::X25519 => ping_kem::<X25519>(run, on_pong).await,
    }
}

/// Where the client gets each epoch's document.
struct Directory {
    http: reqwest::Client,
    url: String,
    key: [u8; 32],
}

/// One ping run's inputs.
struct Run<'a> {
    directory: &'a Directory,
    parameters: &'a Parameters,
    document: &'a NetworkDocument,
    count: u64,
    timeout: Duration,
}

async fn ping_kem<K: Kem>(
    run: Run<'_>,
    mut on_pong: impl FnMut(u64, u64),
) -> anyhow::Result<PingReport> {
    let Run {
        directory,
        parameters,
        document,
        count,
        timeout,
    } = run;
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let mut rng = ChaCha20Rng::from_seed(seed);
    let geometry = parameters.geometry()?;
    let topology = Topology::<K>::from_document(document, document.epoch)?;
    let mut recipient = [0u8; 32];
    rng.fill_bytes(&mut recipient);
    let mu = parameters.mean_delay_us;
    let client_config = ClientConfig {
        recipient,
        mean_delay_us: mu as f64,
        send_rate: parameters.send_rate(),
        retransmit_after_us: mu * 60 + 2_000_000,
        max_attempts: 3,
        cover: true,
    };
    let mut client = Client::new(client_config, geometry, topology, &mut rng);
    let gateway = document
        .node(&client.gateway().id)
        .ok_or_else(|| anyhow::anyhow!("gateway missing from the document"))?;
    let address = gateway
        .addresses
        .first()
        .ok_or_else(|| anyhow::anyhow!("gateway lists no address"))?;
    let mut link_secret = [0u8; 32];
    rng.fill_bytes(&mut link_secret);
    let stream = TcpStream::connect(address).await?;
    let link = link::initiate(stream, &link_secret, geometry.packet_len()).await?;
    if link.peer_key != gateway.link_key {
        anyhow::bail!("the gateway's link key is not the one the document lists");
    }
    let mut sender = link.sender;
    let mut receiver = link.receiver;
    let (replies_tx, mut replies) = mpsc::channel(1024);
    tokio::spawn(async move {
        while let Ok(frame) = receiver.recv().await {
            if replies_tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    sender.send(&Frame::Subscribe(recipient)).await?;

    for seq in 0..count {
        client.request_echo(seq, seq.to_le_bytes().to_vec());
    }
    let mut report = PingReport {
        requested: count,
        mean_delay_us: mu,
        echo_hops: u32::from(parameters.hops) * 2 - 1,
        ..PingReport::default()
    };
    let start = Instant::now();
    let now = || start.elapsed().as_micros() as u64;
    let mut answered = 0u64;
    let mut epoch = document.epoch;
    while answered + report.lost < count && start.elapsed() < timeout {
        // A new epoch: new Sphinx keys. Switch once its document verifies;
        // until then the nodes still accept the old keys (grace period).
        if epoch_at(unix_ms(), parameters.epoch_ms) > epoch {
            let next = epoch + 1;
            if let Ok(new) =
                fetch_document(&directory.http, &directory.url, &directory.key, next, false).await
            {
                if let Ok(topology) = Topology::<K>::from_document(&new, next) {
                    client.set_topology(topology);
                    epoch = next;
                }
            }
        }
        let deadline = client
            .next_deadline()
            .map(|d| tokio::time::Instant::from_std(start + Duration::from_micros(d)))
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_millis(10));
        let mut events = Vec::new();
        tokio::select! {
            frame = replies.recv() => {
                match frame {
                    Some(Frame::Reply { surb_id, payload }) => {
                        events.extend(client.handle_reply(now(), surb_id, &payload));
                    }
                    Some(_) => {}
                    None => anyhow::bail!("the gateway closed the link"),
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let (packets, polled) = client.poll(now(), &mut rng);
                events.extend(polled);
                for packet in packets {
                    sender.send(&Frame::Packet(packet)).await?;
                }
            }
        }
        for event in events {
            match event {
                ClientEvent::Pong { seq, rtt_us, .. } => {
                    answered += 1;
                    report.rtts_us.push(rtt_us);
                    on_pong(seq, rtt_us);
                }
                ClientEvent::GaveUp { .. } => report.lost += 1,
                ClientEvent::LoopReturned { .. } => report.loops_returned += 1,
            }
        }
    }
    report.lost = count - answered;
    report.retransmissions = client.stats().retransmissions;
    Ok(report)
}
