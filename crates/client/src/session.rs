//! The client runtime: fetches and verifies the document, connects to a
//! gateway over Noise, and drives the [`funion_mixnet::Client`] core on the
//! wall clock ([`Session`]). `ping` sends echo requests through the whole
//! network and measures round trips; `storage` builds on the same session.

use std::time::{Duration, Instant};

use funion_mixnet::{Client, ClientConfig, ClientEvent, Topology};
use funion_pki::{epoch_at, KemKind, NetworkDocument, Parameters};
use funion_sphinx::kem::{Kem, XWing, X25519};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use funion_net::config::ClientFile;
use funion_net::link::{self, Frame, FrameReceiver, FrameSender, NoiseSender};
use funion_net::{fetch_document, fetch_parameters, unix_ms};

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

/// The network as a client first sees it: parameters and the current
/// document, verified against the authority's key.
pub struct Network {
    pub(crate) http: reqwest::Client,
    pub(crate) authorities: funion_net::Authorities,
    /// The shared parameters.
    pub parameters: Parameters,
    /// The current epoch's document.
    pub document: NetworkDocument,
}

impl Network {
    /// Fetches the parameters and the current document.
    pub async fn fetch(config: &ClientFile) -> anyhow::Result<Self> {
        let http = funion_net::http_client()?;
        let authorities =
            funion_net::Authorities::new(&config.authorities, config.authority_threshold)?;
        let parameters = fetch_parameters(&http, &authorities).await?;
        let epoch = epoch_at(unix_ms(), parameters.epoch_ms);
        let document = fetch_document(&http, &authorities, epoch, true).await?;
        Ok(Network {
            http,
            authorities,
            parameters,
            document,
        })
    }
}

/// How late a send slot may come before its loop is shed: two mean slot
/// gaps, and at least 10 ms (a scheduler's hiccup is not overload).
pub(crate) fn max_lag_us(send_rate: f64) -> u64 {
    ((2e6 / send_rate) as u64).max(10_000)
}

/// A client connected to its gateway: the mixnet core, the link, the clock.
pub struct Session<K: Kem> {
    /// The mixnet client core.
    pub client: Client<K>,
    /// The session's RNG.
    pub rng: ChaCha20Rng,
    sender: NoiseSender,
    replies: mpsc::Receiver<Frame>,
    gateway: GatewayLink,
    documents: mpsc::Receiver<NetworkDocument>,
    follower: tokio::task::AbortHandle,
    fresh_document: Option<NetworkDocument>,
    reconnects: u64,
    start: Instant,
    epoch: u64,
}

impl<K: Kem> Drop for Session<K> {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// How long a session tries to reach its gateway again after the link
/// broke (the gateway restarting, say) before it gives up.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(120);

/// Where a session's gateway is, and the reply queue it reads there.
struct GatewayLink {
    address: String,
    link_key: [u8; 32],
    packet_len: usize,
    recipient: [u8; 32],
}

impl GatewayLink {
    /// Connects over Noise, checks the gateway's key, subscribes to the
    /// reply queue, and starts the task that reads the replies.
    async fn open(
        &self,
        rng: &mut ChaCha20Rng,
    ) -> anyhow::Result<(NoiseSender, mpsc::Receiver<Frame>)> {
        let mut link_secret = [0u8; 32];
        rng.fill_bytes(&mut link_secret);
        let stream =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&self.address))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("connecting to the gateway at {} timed out", self.address)
                })??;
        let link = link::initiate(stream, &link_secret, self.packet_len).await?;
        if link.peer_key != self.link_key {
            anyhow::bail!("the gateway's link key is not the one the document lists");
        }
        let mut sender = link.sender;
        let mut receiver = link.receiver;
        let (replies_tx, replies) = mpsc::channel(1024);
        tokio::spawn(async move {
            while let Ok(frame) = receiver.recv().await {
                if replies_tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
        sender.send(&Frame::Subscribe(self.recipient)).await?;
        Ok((sender, replies))
    }
}

/// How often the follower asks again for an epoch's document that no
/// authority serves yet.
const DOCUMENT_RETRY: Duration = Duration::from_secs(1);

/// Fetches each new epoch's document as the epoch begins and hands it to
/// the session: the HTTP requests run here, never in the loop that
/// releases packets. An epoch whose document cannot be had before the next
/// one begins is skipped; the session keeps the keys it has.
async fn follow_documents(
    http: reqwest::Client,
    authorities: funion_net::Authorities,
    epoch_ms: u64,
    mut have: u64,
    documents: mpsc::Sender<NetworkDocument>,
) {
    let epoch_ms = epoch_ms.max(1);
    loop {
        let now = unix_ms();
        let current = epoch_at(now, epoch_ms);
        if current <= have {
            let next_start = (have + 1).saturating_mul(epoch_ms);
            tokio::time::sleep(Duration::from_millis(next_start.saturating_sub(now))).await;
            continue;
        }
        match fetch_document(&http, &authorities, current, false).await {
            Ok(document) => {
                if documents.send(document).await.is_err() {
                    return;
                }
                have = current;
            }
            Err(e) => {
                tracing::debug!("document for epoch {current} not had yet: {e:#}");
                tokio::time::sleep(DOCUMENT_RETRY).await;
            }
        }
    }
}

impl<K: Kem> Session<K> {
    /// Connects to a gateway of `network` and subscribes to a fresh reply
    /// queue. Requests unanswered after `retransmit_after` are sent again.
    pub async fn connect(network: &Network, retransmit_after: Duration) -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let mut rng = ChaCha20Rng::from_seed(seed);
        let parameters = &network.parameters;
        let document = &network.document;
        let geometry = parameters.geometry()?;
        let topology = Topology::<K>::from_document(document, document.epoch)?;
        let mut recipient = [0u8; 32];
        rng.fill_bytes(&mut recipient);
        let client_config = ClientConfig {
            recipient,
            mean_delay_us: parameters.mean_delay_us as f64,
            send_rate: parameters.send_rate(),
            retransmit_after_us: retransmit_after.as_micros() as u64,
            max_lag_us: max_lag_us(parameters.send_rate()),
            max_attempts: 3,
            cover: true,
            loops_through_service: true,
        };
        let client = Client::new(client_config, geometry, topology, &mut rng);
        let gateway = document
            .node(&client.gateway().id)
            .ok_or_else(|| anyhow::anyhow!("gateway missing from the document"))?;
        let address = gateway
            .addresses
            .first()
            .ok_or_else(|| anyhow::anyhow!("gateway lists no address"))?;
        let gateway = GatewayLink {
            address: address.clone(),
            link_key: gateway.link_key,
            packet_len: geometry.packet_len(),
            recipient,
        };
        let (sender, replies) = gateway.open(&mut rng).await?;
        let (documents_tx, documents) = mpsc::channel(2);
        let follower = tokio::spawn(follow_documents(
            network.http.clone(),
            network.authorities.clone(),
            parameters.epoch_ms,
            document.epoch,
            documents_tx,
        ))
        .abort_handle();
        Ok(Session {
            client,
            rng,
            sender,
            replies,
            gateway,
            documents,
            follower,
            fresh_document: None,
            reconnects: 0,
            start: Instant::now(),
            epoch: document.epoch,
        })
    }

    /// Waits for the next reply or send slot, and returns what happened.
    /// Follows epoch changes: a new epoch's keys are used once its document
    /// (fetched by a task of its own) verifies; until then nodes still
    /// accept the old keys.
    pub async fn step(&mut self) -> anyhow::Result<Vec<ClientEvent>> {
        self.step_until(None, None).await
    }

    /// [`Session::step`], returning early (with no events) when `wake` is
    /// notified or `until` comes.
    pub async fn step_until(
        &mut self,
        wake: Option<&tokio::sync::Notify>,
        until: Option<tokio::time::Instant>,
    ) -> anyhow::Result<Vec<ClientEvent>> {
        let start = self.start;
        let now = || start.elapsed().as_micros() as u64;
        let deadline = self
            .client
            .next_deadline()
            .map(|d| tokio::time::Instant::from_std(start + Duration::from_micros(d)))
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_millis(10));
        let mut events = Vec::new();
        tokio::select! {
            frame = self.replies.recv() => {
                match frame {
                    Some(Frame::Reply { surb_id, payload }) => {
                        events.extend(self.client.handle_reply(now(), surb_id, &payload));
                    }
                    Some(_) => {}
                    None => self.reconnect("closed").await?,
                }
            }
            Some(new) = self.documents.recv() => {
                match Topology::<K>::from_document(&new, new.epoch) {
                    Ok(topology) if new.epoch > self.epoch => {
                        self.client.set_topology(topology);
                        self.epoch = new.epoch;
                        self.fresh_document = Some(new);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("the document for epoch {} is unusable: {e}", new.epoch),
                }
            }
            _ = async { wake.expect("guarded").notified().await }, if wake.is_some() => {}
            _ = async { tokio::time::sleep_until(until.expect("guarded")).await }, if until.is_some() => {}
            _ = tokio::time::sleep_until(deadline) => {
                let (packets, polled) = self.client.poll(now(), &mut self.rng);
                events.extend(polled);
                for packet in packets {
                    if let Err(e) = self.sender.send(&Frame::Packet(packet)).await {
                        self.reconnect(&e.to_string()).await?;
                        break;
                    }
                }
            }
        }
        Ok(events)
    }
}

impl<K: Kem> Session<K> {
    /// Opens the link to the gateway again after it broke, subscribing to
    /// the same reply queue, trying with a growing pause for up to
    /// [`RECONNECT_PATIENCE`]. Packets lost meanwhile are the client
    /// core's to send again; replies the gateway queued before it went
    /// away are gone with it.
    async fn reconnect(&mut self, why: &str) -> anyhow::Result<()> {
        tracing::info!("the link to the gateway broke ({why}); connecting again");
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match self.gateway.open(&mut self.rng).await {
                Ok((sender, replies)) => {
                    self.sender = sender;
                    self.replies = replies;
                    self.reconnects += 1;
                    return Ok(());
                }
                Err(e) if started.elapsed() < RECONNECT_PATIENCE => {
                    tracing::debug!("gateway not back yet: {e:#}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    anyhow::bail!(
                        "the gateway closed the link ({why}) and did not come back: {e:#}"
                    )
                }
            }
        }
    }

    /// How many times the session opened its gateway link again.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The document the session moved to since the last call, if it moved.
    pub fn take_fresh_document(&mut self) -> Option<NetworkDocument> {
        self.fresh_document.take()
    }
}

/// Sends `count` echo requests through the network and waits for them
/// (each gets up to three sends); `on_pong` sees each round trip.
pub async fn ping(
    config: &ClientFile,
    count: u64,
    timeout: Duration,
    on_pong: impl FnMut(u64, u64),
) -> anyhow::Result<PingReport> {
    let network = Network::fetch(config).await?;
    match network.parameters.kem {
        KemKind::XWing => ping_kem::<XWing>(&network, count, timeout, on_pong).await,
        KemKind::X25519 => ping_kem::<X25519>(&network, count, timeout, on_pong).await,
    }
}

async fn ping_kem<K: Kem>(
    network: &Network,
    count: u64,
    timeout: Duration,
    mut on_pong: impl FnMut(u64, u64),
) -> anyhow::Result<PingReport> {
    let mu = network.parameters.mean_delay_us;
    let retransmit = Duration::from_micros(mu * 60 + 2_000_000);
    let mut session = Session::<K>::connect(network, retransmit).await?;
    for seq in 0..count {
        let body = seq.to_le_bytes().to_vec();
        session.client.request_echo(seq, body);
    }
    let mut report = PingReport {
        requested: count,
        mean_delay_us: mu,
        echo_hops: u32::from(network.parameters.hops) * 2 - 1,
        ..PingReport::default()
    };
    let start = Instant::now();
    let mut answered = 0u64;
    while answered + report.lost < count && start.elapsed() < timeout {
        for event in session.step().await? {
            match event {
                ClientEvent::Pong { seq, rtt_us, .. } => {
                    answered += 1;
                    report.rtts_us.push(rtt_us);
                    on_pong(seq, rtt_us);
                }
                ClientEvent::GaveUp { .. } => report.lost += 1,
                ClientEvent::LoopReturned { .. } => report.loops_returned += 1,
                ClientEvent::HeldReply { .. } => {}
            }
        }
    }
    report.lost = count - answered;
    report.retransmissions = session.client.stats().retransmissions;
    Ok(report)
}
