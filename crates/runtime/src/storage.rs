//! Pigeonhole from the client's side: boxes written and read through
//! couriers, each operation one envelope in one echo. A courier that has no
//! reply within its hold time ACKs and the client polls with the same
//! envelope; a read that finds nothing asks for the other replica's reply,
//! then tries a fresh envelope a little later; an echo lost in the mixnet
//! is sent again by the session. `put` and `get` move a byte stream through
//! a BACAP stream of equal-sized boxes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use funion_bacap::{BoxContent, BoxId, ReadCap, SealedBox, WriteCap, Writer};
use funion_mixnet::{service_recipient, ClientEvent};
use funion_pigeonhole::envelope::{self, CourierAnswer, Recipient, ReplyKeys, Request, Sizes};
use funion_pigeonhole::{shard, stream, ErrorCode};
use funion_pki::KemKind;
use funion_sphinx::kem::{Kem, XWing, X25519};
use funion_sphinx::{Geometry, NodeId};
use rand_core::RngCore;

use crate::client::{Network, Session};
use crate::config::ClientFile;

/// The service name couriers run under on service nodes.
pub const COURIER_SERVICE: &str = "courier";
/// The BACAP context of streams written by `funion client put`.
pub const STREAM_CONTEXT: &[u8] = b"funion client stream v1";
/// Largest stream `get` accepts.
pub const MAX_STREAM: u64 = 1 << 32;
/// Fresh envelopes tried for one box before giving up.
const MAX_TRIES: u32 = 6;
/// Wait before a fresh envelope after a transient failure.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Envelope sizes for a geometry: an envelope fills what one echo request
/// carries beside its SURB.
pub fn sizes(geometry: &Geometry) -> anyhow::Result<Sizes> {
    let capacity = geometry
        .message_capacity()
        .checked_sub(geometry.surb_len())
        .ok_or_else(|| anyhow::anyhow!("payload too small for a SURB"))?;
    Ok(Sizes::fit(geometry.kem_ciphertext_len(), capacity)?)
}

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

/// A group of box operations started together; see [`StorageClient::start`].
pub type BatchId = u64;

struct BoxOp {
    batch: BatchId,
    slot: usize,
    request: Request,
    node: usize,
    body: Vec<u8>,
    keys: ReplyKeys,
    asked_other_slot: bool,
    tries: u32,
}

/// A client of the storage network over one mixnet session.
pub struct StorageClient<K: Kem> {
    network: Network,
    session: Session<K>,
    sizes: Sizes,
    replicas: Vec<NodeId>,
    next_seq: u64,
    in_flight: HashMap<u64, BoxOp>,
    retry: Vec<(Instant, BatchId, usize, Request, u32)>,
    batches: HashMap<BatchId, Vec<Option<BoxResult>>>,
    next_batch: BatchId,
    service_requests: std::collections::HashSet<u64>,
    service_replies: Vec<(u64, Option<Vec<u8>>)>,
    stats: StorageStats,
}

/// What one box operation ended with.
type BoxResult = Result<Option<SealedBox>, ErrorCode>;

impl<K: Kem> StorageClient<K> {
    /// Connects to the network `config` names.
    pub async fn connect(config: &ClientFile) -> anyhow::Result<Self> {
        let network = Network::fetch(config).await?;
        Self::over(network).await
    }

    /// Connects over an already fetched network.
    pub async fn over(network: Network) -> anyhow::Result<Self> {
        let geometry = network.parameters.geometry()?;
        let sizes = sizes(&geometry)?;
        // Resend after the courier's hold, a slow round trip and a margin.
        let retransmit =
            Duration::from_micros(network.parameters.mean_delay_us * 60) + Duration::from_secs(6);
        let session = Session::<K>::connect(&network, retransmit).await?;
        let replicas: Vec<NodeId> = session
            .client
            .topology()
            .replicas
            .iter()
            .map(|h| h.id)
            .collect();
        anyhow::ensure!(
            replicas.len() >= 2,
            "the network lists fewer than 2 replicas"
        );
        Ok(StorageClient {
            network,
            session,
            sizes,
            replicas,
            next_seq: 0,
            in_flight: HashMap::new(),
            retry: Vec::new(),
            batches: HashMap::new(),
            next_batch: 1,
            service_requests: Default::default(),
            service_replies: Vec::new(),
            stats: StorageStats::default(),
        })
    }

    /// The envelope sizes (the box payload a stream can use).
    pub fn sizes(&self) -> &Sizes {
        &self.sizes
    }

    /// Counts so far.
    pub fn stats(&self) -> &StorageStats {
        &self.stats
    }

    fn courier(&self) -> [u8; 32] {
        service_recipient(COURIER_SERVICE)
    }

    fn submit(
        &mut self,
        batch: BatchId,
        slot: usize,
        request: Request,
        tries: u32,
    ) -> anyhow::Result<()> {
        let box_id = match &request {
            Request::Read(id) => *id,
            Request::Write(item) => item.id,
        };
        let k = usize::from(self.network.parameters.replicas.max(1));
        let rng = &mut self.session.rng;
        let [a, b] = shard::intermediates(&box_id, &self.replicas, k, rng)
            .ok_or_else(|| anyhow::anyhow!("too few replicas"))?;
        let topology = self.session.client.topology();
        let key = |id: NodeId| {
            topology
                .replicas
                .iter()
                .find(|h| h.id == id)
                .map(|h| h.public_key.clone())
                .ok_or_else(|| anyhow::anyhow!("replica without a key"))
        };
        let (key_a, key_b) = (key(a)?, key(b)?);
        let recipients = [
            Recipient::<K> {
                id: a,
                public_key: &key_a,
            },
            Recipient::<K> {
                id: b,
                public_key: &key_b,
            },
        ];
        let reply_index = (rng.next_u32() & 1) as u8;
        let (body, keys) = envelope::seal(&self.sizes, recipients, reply_index, &request, rng)?;
        let node = (rng.next_u64() % topology.services.len().max(1) as u64) as usize;
        if tries > 1 {
            self.stats.fresh_envelopes += 1;
        }
        let op = BoxOp {
            batch,
            slot,
            request,
            node,
            body,
            keys,
            asked_other_slot: false,
            tries,
        };
        self.send(op);
        Ok(())
    }

    fn send(&mut self, op: BoxOp) {
        self.next_seq += 1;
        let courier = self.courier();
        self.session
            .client
            .request(self.next_seq, courier, op.node, op.body.clone());
        self.in_flight.insert(self.next_seq, op);
    }

    fn later(&mut self, op: BoxOp, last_error: ErrorCode) {
        if op.tries >= MAX_TRIES {
            self.finish(&op, Err(last_error));
        } else {
            let at = Instant::now() + RETRY_DELAY;
            self.retry
                .push((at, op.batch, op.slot, op.request, op.tries + 1));
        }
    }

    fn finish(&mut self, op: &BoxOp, result: BoxResult) {
        if let Some(slot) = self
            .batches
            .get_mut(&op.batch)
            .and_then(|results| results.get_mut(op.slot))
        {
            *slot = Some(result);
        }
    }

    /// Starts `requests` (all in flight at once) and returns the batch's
    /// number; [`StorageClient::advance`] reports it when every operation
    /// has ended.
    pub fn start(&mut self, requests: Vec<Request>) -> anyhow::Result<BatchId> {
        let batch = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(batch, vec![None; requests.len()]);
        for (slot, request) in requests.into_iter().enumerate() {
            self.submit(batch, slot, request, 1)?;
        }
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
        let now = Instant::now();
        let (due, wait): (Vec<_>, Vec<_>) = self.retry.drain(..).partition(|(at, ..)| *at <= now);
        self.retry = wait;
        for (_, batch, slot, request, tries) in due {
            self.submit(batch, slot, request, tries)?;
        }
        let sent_before = self.session.client.stats().requests_sent;
        let resent_before = self.session.client.stats().retransmissions;
        for event in self.session.step_until(&self.network, wake, until).await? {
            match event {
                ClientEvent::Pong { seq, body, .. } => {
                    if let Some(op) = self.in_flight.remove(&seq) {
                        self.answered(op, &body)?;
                    } else if self.service_requests.remove(&seq) {
                        self.service_replies.push((seq, Some(body)));
                    }
                }
                ClientEvent::GaveUp { seq } => {
                    if let Some(op) = self.in_flight.remove(&seq) {
                        self.later(op, ErrorCode::Unavailable);
                    } else if self.service_requests.remove(&seq) {
                        self.service_replies.push((seq, None));
                    }
                }
                ClientEvent::LoopReturned { .. } => {}
            }
        }
        self.stats.echoes += self.session.client.stats().requests_sent - sent_before;
        self.stats.resends += self.session.client.stats().retransmissions - resent_before;
        self.stats.loops_shed = self.session.client.stats().loops_shed;
        let finished: Vec<BatchId> = self
            .batches
            .iter()
            .filter(|(_, results)| results.iter().all(Option::is_some))
            .map(|(id, _)| *id)
            .collect();
        Ok(finished
            .into_iter()
            .map(|id| {
                let results = self.batches.remove(&id).expect("listed above");
                self.stats.operations += results.len() as u64;
                (
                    id,
                    results.into_iter().map(|r| r.expect("all done")).collect(),
                )
            })
            .collect())
    }

    /// How many operations of `batch` have ended so far.
    fn done(&self, batch: BatchId) -> usize {
        self.batches
            .get(&batch)
            .map_or(0, |r| r.iter().filter(|r| r.is_some()).count())
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
            let now_done = self.done(batch);
            if now_done != done {
                done = now_done;
                progress(done, total);
            }
        }
    }

    /// Sends `body` to a courier as it is and returns the courier's answer
    /// (for tests of what couriers do with bad envelopes).
    pub async fn send_raw(&mut self, body: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        self.next_seq += 1;
        let seq = self.next_seq;
        let courier = self.courier();
        self.session.client.request(seq, courier, 0, body);
        loop {
            for event in self.session.step(&self.network).await? {
                match event {
                    ClientEvent::Pong { seq: s, body, .. } if s == seq => return Ok(body),
                    ClientEvent::GaveUp { seq: s } if s == seq => {
                        anyhow::bail!("no answer from the courier")
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends `body` in one echo to the service `service` on the `node`th
    /// service node of the document; its answer comes from
    /// [`StorageClient::take_service_replies`] under the returned number.
    pub fn send_to_service(&mut self, service: &str, node: usize, body: Vec<u8>) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.session
            .client
            .request(seq, service_recipient(service), node, body);
        self.service_requests.insert(seq);
        seq
    }

    /// Answers to [`StorageClient::send_to_service`] so far: the body, or
    /// `None` when every resend went unanswered.
    pub fn take_service_replies(&mut self) -> Vec<(u64, Option<Vec<u8>>)> {
        std::mem::take(&mut self.service_replies)
    }

    /// The session's RNG (for fresh caps and contexts).
    pub fn rng(&mut self) -> &mut rand_chacha::ChaCha20Rng {
        &mut self.session.rng
    }

    /// Service nodes in the document.
    pub fn service_nodes(&self) -> usize {
        self.session.client.topology().services.len()
    }

    /// The network this client works in.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Box plaintext available to a stream in one box.
    pub fn box_payload(&self) -> usize {
        self.sizes.max_plaintext()
    }

    /// The replicas the client addresses, as the document lists them.
    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    fn answered(&mut self, mut op: BoxOp, body: &[u8]) -> anyhow::Result<()> {
        let answer = match op.keys.open(&self.sizes, body) {
            Ok(answer) => answer,
            Err(_) => match envelope::refusal(body) {
                Some(code) => CourierAnswer::Refused(code),
                None => {
                    self.later(op, ErrorCode::Malformed);
                    return Ok(());
                }
            },
        };
        match answer {
            CourierAnswer::Pending => {
                self.stats.polls += 1;
                self.send(op);
            }
            // A courier whose document is older than ours may not know a
            // replica yet: a fresh envelope picks intermediates again.
            CourierAnswer::Refused(code)
                if code.is_transient() || code == ErrorCode::UnknownReplica =>
            {
                self.later(op, code)
            }
            CourierAnswer::Refused(code) => self.finish(&op, Err(code)),
            CourierAnswer::Reply { reply, slot } => match (reply.code, &op.request) {
                (ErrorCode::Ok, Request::Write(_)) => self.finish(&op, Ok(None)),
                (ErrorCode::Ok, Request::Read(id)) => match reply.found {
                    Some(found) if found.id == *id => self.finish(&op, Ok(Some(found))),
                    _ => self.later(op, ErrorCode::Malformed),
                },
                (ErrorCode::NotFound, _) if !op.asked_other_slot => {
                    // The other intermediate may have found it: ask the
                    // courier for its reply to the same envelope.
                    op.asked_other_slot = true;
                    let other = 1 - slot;
                    envelope::set_reply_index(&mut op.body, other);
                    self.stats.polls += 1;
                    self.send(op);
                }
                (code, _) if code.is_transient() => self.later(op, code),
                (code, _) => self.finish(&op, Err(code)),
            },
        }
        Ok(())
    }
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
    let cap = WriteCap::generate(&mut client.session.rng);
    let read_cap = hex::encode(cap.read_cap().to_bytes().as_slice());
    let write_cap = hex::encode(cap.to_bytes().as_slice());
    let mut writer = Writer::new(cap, STREAM_CONTEXT);
    let requests = stream::split(data, client.sizes.max_plaintext())
        .iter()
        .map(|plain| writer.seal_next(plain).map(Request::Write))
        .collect::<Result<Vec<_>, _>>()?;
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
        stats: client.stats.clone(),
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

pub(crate) fn open_box(
    cap: &ReadCap,
    ctx: &[u8],
    position: u64,
    item: &SealedBox,
) -> anyhow::Result<Vec<u8>> {
    let index = cap.index().advance_to(cap.index().idx64() + position)?;
    let content = cap.open(&index, ctx, &item.id, &item.ciphertext, &item.signature)?;
    match content {
        BoxContent::Message(plain) => Ok(plain),
        BoxContent::Tombstone => anyhow::bail!("box {position} was deleted"),
    }
}

pub(crate) fn box_id(cap: &ReadCap, ctx: &[u8], position: u64) -> anyhow::Result<BoxId> {
    let index = cap.index().advance_to(cap.index().idx64() + position)?;
    Ok(cap.box_id(&index, ctx))
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
        .collect::<anyhow::Result<Vec<_>>>()?;
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
            stats: client.stats.clone(),
        },
    ))
}
