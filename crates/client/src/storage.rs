//! Pigeonhole from the client's side: boxes written and read through
//! couriers, each operation one envelope in one echo. A courier that has no
//! reply within its hold time ACKs and the client polls with the same
//! envelope; a read that finds nothing asks for the other replica's reply,
//! then tries a fresh envelope a little later; an echo lost in the mixnet
//! is sent again by the session. `put` and `get` move a byte stream through
//! a BACAP stream of equal-sized boxes.

use std::time::{Duration, Instant};

use funion_bacap::{ReadCap, WriteCap, Writer};
use funion_mixnet::{service_recipient, ClientEvent};
pub use funion_pigeonhole::client::BatchId;
use funion_pigeonhole::client::{self as core, BoxResult, ClientConfig};
pub use funion_pigeonhole::client::{box_id, open_box, COURIER_SERVICE};
use funion_pigeonhole::envelope::{Request, Sizes};
use funion_pigeonhole::stream;
use funion_pki::{KemKind, NetworkDocument};
use funion_sphinx::kem::{Kem, XWing, X25519};
use funion_sphinx::NodeId;

use crate::session::{Network, Session};
use funion_net::config::ClientFile;

/// The BACAP context of streams written by `funion client put`.
const STREAM_CONTEXT: &[u8] = b"funion client stream v1";
/// Largest stream `get` accepts.
const MAX_STREAM: u64 = 1 << 32;

/// Counts of one client's storage traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Box operations completed.
    pub operations: u64,
    /// Echoes (request packets) they took, resends and polls included.
    pub echoes: u64,
    /// Polls after a courier's ACK.
    pub polls: u64,
    /// Fresh envelopes after a transient failure or a lost echo.
    pub fresh_envelopes: u64,
    /// Echoes the session sent again after no reply came in time.
    pub resends: u64,
    /// Cover loops the session shed because it was behind.
    pub loops_shed: u64,
}

/// A client of the storage network over one mixnet session: the
/// sans-I/O [`funion_pigeonhole::client::StorageClient`] on the wall clock.
pub struct StorageClient<K: Kem> {
    network: Network,
    session: Session<K>,
    core: core::StorageClient<K>,
}

impl<K: Kem> StorageClient<K> {
    /// Connects to the network `config` names.
    pub async fn connect(config: &ClientFile) -> anyhow::Result<Self> {
        let network = Network::fetch(config).await?;
        Self::over(network).await
    }

    /// Connects over an already fetched network.
    pub async fn over(network: Network) -> anyhow::Result<Self> {
        let geometry = network.parameters.geometry()?;
        let sizes = Sizes::for_geometry(&geometry)?;
        // Resend after the courier's hold, a slow round trip and a margin.
        let retransmit =
            Duration::from_micros(network.parameters.mean_delay_us * 60) + Duration::from_secs(6);
        let session = Session::<K>::connect(&network, retransmit).await?;
        let topology = session.client.topology();
        let replicas: Vec<(NodeId, K::PublicKey)> = topology
            .replicas
            .iter()
            .map(|h| (h.id, h.public_key.clone()))
            .collect();
        let services = topology.services.len();
        let config = ClientConfig::new(usize::from(network.parameters.replicas.max(1)));
        let mut core = core::StorageClient::new(config, sizes, replicas, services)?;
        core.set_held_limits(session.client.max_held_body(), session.client.max_reply());
        Ok(StorageClient {
            network,
            session,
            core,
        })
    }

    /// The envelope sizes (the box payload a stream can use).
    pub fn sizes(&self) -> &Sizes {
        self.core.sizes()
    }

    /// Counts so far.
    pub fn stats(&self) -> StorageStats {
        let core = self.core.stats();
        let session = self.session.client.stats();
        StorageStats {
            operations: core.operations,
            echoes: core.echoes + session.retransmissions,
            polls: core.polls,
            fresh_envelopes: core.fresh_envelopes,
            resends: session.retransmissions,
            loops_shed: session.loops_shed,
        }
    }

    /// The clock the state machines run on: microseconds since the Unix
    /// epoch.
    pub fn now(&self) -> u64 {
        funion_net::unix_us()
    }

    /// The state machine and the session's RNG, for a state machine above
    /// it (the job client); call [`StorageClient::flush`] after using them.
    pub fn parts(&mut self) -> (&mut core::StorageClient<K>, &mut rand_chacha::ChaCha20Rng) {
        (&mut self.core, &mut self.session.rng)
    }

    /// Hands the state machine's echoes to the mixnet client.
    pub fn flush(&mut self) {
        for echo in self.core.take_echoes() {
            let recipient = service_recipient(echo.service);
            let client = &mut self.session.client;
            match echo.held_for_us {
                Some(life) => client.request_held(echo.seq, recipient, echo.node, echo.body, life),
                None => client.request_waiting(
                    echo.seq,
                    recipient,
                    echo.node,
                    echo.body,
                    echo.service_wait_us,
                ),
            }
        }
    }

    /// Starts `requests` (all in flight at once) and returns the batch's
    /// number; [`StorageClient::advance`] reports it when every operation
    /// has ended.
    pub fn start(&mut self, requests: Vec<Request>) -> anyhow::Result<BatchId> {
        let batch = self.core.start(&mut self.session.rng, requests)?;
        self.flush();
        Ok(batch)
    }

    /// Waits for the next reply or send slot (or for `wake`, or `until`),
    /// and returns the batches that finished, each with one outcome per
    /// request, in order: `Ok(None)` for a stored box, `Ok(Some(box))` for
    /// a box read, or the error that ended it.
    pub async fn advance(
        &mut self,
        wake: Option<&tokio::sync::Notify>,
        until: Option<tokio::time::Instant>,
    ) -> anyhow::Result<Vec<(BatchId, Vec<BoxResult>)>> {
        self.step(wake, until).await?;
        Ok(self.core.take_finished())
    }

    /// [`StorageClient::advance`] without taking the finished batches: they
    /// stay in the state machine for the one above it.
    pub async fn step(
        &mut self,
        wake: Option<&tokio::sync::Notify>,
        until: Option<tokio::time::Instant>,
    ) -> anyhow::Result<()> {
        let now = self.now();
        self.core.poll(now, &mut self.session.rng)?;
        self.flush();
        let retry = self.core.next_wakeup().map(|at| at_time(now, at));
        let until = match (until, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for event in self.session.step_until(wake, until).await? {
            let now = self.now();
            match event {
                ClientEvent::Pong { seq, body, .. } => {
                    self.core.handle_reply(now, seq, &body);
                }
                ClientEvent::HeldReply { seq, body } => {
                    self.core.handle_held_reply(seq, body);
                }
                ClientEvent::GaveUp { seq } => {
                    self.core.handle_lost(now, seq);
                }
                ClientEvent::LoopReturned { .. } => {}
            }
        }
        self.flush();
        Ok(())
    }

    /// Carries out `requests` (all in flight at once) and returns each one's
    /// outcome, in order (see [`StorageClient::advance`]). `progress` sees
    /// (done, total). Other batches started before are carried along but
    /// their outcomes are dropped.
    pub async fn run(
        &mut self,
        requests: Vec<Request>,
        mut progress: impl FnMut(usize, usize),
    ) -> anyhow::Result<Vec<BoxResult>> {
        let total = requests.len();
        let batch = self.start(requests)?;
        let mut done = 0;
        loop {
            for (id, results) in self.advance(None, None).await? {
                if id == batch {
                    progress(total, total);
                    return Ok(results);
                }
            }
            let now_done = self.core.done(batch);
            if now_done != done {
                done = now_done;
                progress(done, total);
            }
        }
    }

    /// Sends `body` to a courier as it is and returns the courier's answer
    /// (for tests of what couriers do with bad envelopes).
    pub async fn send_raw(&mut self, body: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let seq = self.send_to_service(COURIER_SERVICE, 0, body);
        loop {
            self.advance(None, None).await?;
            let replies = self.core.take_service_replies();
            if let Some((_, reply)) = replies.into_iter().find(|(s, _)| *s == seq) {
                return reply.ok_or_else(|| anyhow::anyhow!("no answer from the courier"));
            }
        }
    }

    /// Sends `body` in one echo to the service `service` on the `node`th
    /// service node of the document; its answer comes from
    /// [`StorageClient::take_service_replies`] under the returned number.
    pub fn send_to_service(&mut self, service: &'static str, node: usize, body: Vec<u8>) -> u64 {
        let seq = self.core.send_to_service(service, node, body);
        self.flush();
        seq
    }

    /// Answers to [`StorageClient::send_to_service`] so far: the body, or
    /// `None` when every resend went unanswered.
    pub fn take_service_replies(&mut self) -> Vec<(u64, Option<Vec<u8>>)> {
        self.core.take_service_replies()
    }

    /// The session's RNG (for fresh caps and contexts).
    pub fn rng(&mut self) -> &mut rand_chacha::ChaCha20Rng {
        &mut self.session.rng
    }

    /// Service nodes in the document.
    pub fn service_nodes(&self) -> usize {
        self.core.service_nodes()
    }

    /// The network this client works in.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The document the session moved to since the last call, if a new
    /// epoch began and its document verified.
    pub fn take_fresh_document(&mut self) -> Option<NetworkDocument> {
        self.session.take_fresh_document()
    }

    /// Box plaintext available to a stream in one box.
    pub fn box_payload(&self) -> usize {
        self.core.box_payload()
    }

    /// The replicas the client addresses, as the document lists them.
    pub fn replicas(&self) -> &[NodeId] {
        self.core.replicas()
    }
}

/// The tokio instant of `at` on the clock that reads `now` at present.
pub(crate) fn at_time(now: u64, at: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_micros(at.saturating_sub(now))
}

/// What `put` did.
#[derive(Clone, Debug)]
pub struct PutReport {
    /// The read cap to give `get` (hex).
    pub read_cap: String,
    /// The write cap, which `delete` needs (hex; keep it secret).
    pub write_cap: String,
    /// Bytes stored.
    pub bytes: usize,
    /// Boxes written.
    pub boxes: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Storage traffic.
    pub stats: StorageStats,
}

/// What `get` did.
#[derive(Clone, Debug)]
pub struct GetReport {
    /// Boxes read.
    pub boxes: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Storage traffic.
    pub stats: StorageStats,
}

/// Writes `data` into a fresh BACAP stream and returns its read cap.
pub async fn put(
    config: &ClientFile,
    data: &[u8],
    progress: impl FnMut(usize, usize),
) -> anyhow::Result<PutReport> {
    let network = Network::fetch(config).await?;
    match network.parameters.kem {
        KemKind::XWing => put_kem::<XWing>(network, data, progress).await,
        KemKind::X25519 => put_kem::<X25519>(network, data, progress).await,
    }
}

async fn put_kem<K: Kem>(
    network: Network,
    data: &[u8],
    progress: impl FnMut(usize, usize),
) -> anyhow::Result<PutReport> {
    let start = Instant::now();
    let mut client = StorageClient::<K>::over(network).await?;
    let cap = WriteCap::generate(client.rng());
    let read_cap = hex::encode(cap.read_cap().to_bytes().as_slice());
    let write_cap = hex::encode(cap.to_bytes().as_slice());
    let mut writer = Writer::new(cap, STREAM_CONTEXT);
    let requests = core::write_requests(&mut writer, data, client.box_payload())?;
    let boxes = requests.len();
    for (i, result) in client
        .run(requests, progress)
        .await?
        .into_iter()
        .enumerate()
    {
        if let Err(code) = result {
            anyhow::bail!("box {i} was not stored: {code}");
        }
    }
    Ok(PutReport {
        read_cap,
        write_cap,
        bytes: data.len(),
        boxes,
        elapsed: start.elapsed(),
        stats: client.stats(),
    })
}

/// Reads back the stream a read cap (hex) names.
pub async fn get(
    config: &ClientFile,
    read_cap: &str,
    progress: impl FnMut(usize, usize),
) -> anyhow::Result<(Vec<u8>, GetReport)> {
    let bytes =
        hex::decode(read_cap.trim()).map_err(|_| anyhow::anyhow!("the read cap is not hex"))?;
    let cap = ReadCap::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("bad read cap: {e}"))?;
    let network = Network::fetch(config).await?;
    match network.parameters.kem {
        KemKind::XWing => get_kem::<XWing>(network, cap, progress).await,
        KemKind::X25519 => get_kem::<X25519>(network, cap, progress).await,
    }
}

/// Deletes the stream a write cap (hex) names: every box becomes a
/// tombstone, which replicas keep in place of the message. Returns how many
/// boxes were deleted.
pub async fn delete(config: &ClientFile, write_cap: &str) -> anyhow::Result<usize> {
    let bytes =
        hex::decode(write_cap.trim()).map_err(|_| anyhow::anyhow!("the write cap is not hex"))?;
    let cap = WriteCap::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("bad write cap: {e}"))?;
    let network = Network::fetch(config).await?;
    match network.parameters.kem {
        KemKind::XWing => delete_kem::<XWing>(network, cap).await,
        KemKind::X25519 => delete_kem::<X25519>(network, cap).await,
    }
}

async fn delete_kem<K: Kem>(network: Network, cap: WriteCap) -> anyhow::Result<usize> {
    let mut client = StorageClient::<K>::over(network).await?;
    let (_, count) = first_box(&mut client, &cap.read_cap()).await?;
    let mut writer = Writer::new(cap, STREAM_CONTEXT);
    let mut tombstones = Vec::with_capacity(count);
    for _ in 0..count {
        tombstones.push(Request::Write(writer.prepare_tombstone()));
        writer.advance()?;
    }
    for (i, result) in client
        .run(tombstones, |_, _| {})
        .await?
        .into_iter()
        .enumerate()
    {
        if let Err(code) = result {
            anyhow::bail!("box {i} was not deleted: {code}");
        }
    }
    Ok(count)
}

/// Reads a stream's first box: its plaintext, and how many boxes the
/// stream has.
async fn first_box<K: Kem>(
    client: &mut StorageClient<K>,
    cap: &ReadCap,
) -> anyhow::Result<(Vec<u8>, usize)> {
    let read = vec![Request::Read(box_id(cap, STREAM_CONTEXT, 0)?)];
    let first = match client.run(read, |_, _| {}).await?.remove(0) {
        Ok(Some(item)) => open_box(cap, STREAM_CONTEXT, 0, &item)?,
        Ok(None) => anyhow::bail!("no box came back"),
        Err(code) => anyhow::bail!("box 0: {code}"),
    };
    let (_, count) = stream::length(&first, MAX_STREAM)?;
    Ok((first, count))
}

async fn get_kem<K: Kem>(
    network: Network,
    cap: ReadCap,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<(Vec<u8>, GetReport)> {
    let start = Instant::now();
    let mut client = StorageClient::<K>::over(network).await?;
    let (first, count) = first_box(&mut client, &cap).await?;
    progress(1, count);
    let requests = (1..count as u64)
        .map(|i| box_id(&cap, STREAM_CONTEXT, i).map(Request::Read))
        .collect::<Result<Vec<_>, _>>()?;
    let results = client
        .run(requests, |done, _| progress(done + 1, count))
        .await?;
    let mut boxes = vec![first];
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(Some(item)) => boxes.push(open_box(&cap, STREAM_CONTEXT, i as u64 + 1, &item)?),
            Ok(None) => anyhow::bail!("no box came back"),
            Err(code) => anyhow::bail!("box {}: {code}", i + 1),
        }
    }
    let data = stream::join(&boxes)?;
    Ok((
        data,
        GetReport {
            boxes: count,
            elapsed: start.elapsed(),
            stats: client.stats(),
        },
    ))
}
