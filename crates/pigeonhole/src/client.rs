//! Pigeonhole from the client's side, as a state machine: box operations
//! sealed into envelopes, each one echo to a courier.
//!
//! A courier that has no reply within its hold time ACKs and the client
//! polls with the same envelope; a read that finds nothing asks for the
//! other intermediate's reply; a transient failure or an echo the mixnet
//! gave up on gets a fresh envelope (new intermediates) a little later, up
//! to `max_tries`. The driver carries each [`Echo`] through its mixnet
//! session and hands back replies ([`StorageClient::handle_reply`]) and
//! losses ([`StorageClient::handle_lost`]).

use std::collections::{HashMap, HashSet};

use funion_bacap::{BoxContent, BoxId, ReadCap, SealedBox, Writer};
use funion_sphinx::kem::Kem;
use funion_sphinx::NodeId;
use rand_core::{CryptoRng, RngCore};

use crate::envelope::{self, CourierAnswer, EnvelopeError, Recipient, ReplyKeys, Request, Sizes};
use crate::{shard, ErrorCode, Micros};

/// The service name storage couriers run under on service nodes.
pub const COURIER_SERVICE: &str = "courier";

/// The same couriers' service for reads that wait for their box
/// ([`Request::Await`]): they hold the SURB long enough for the wait.
pub const COURIER_WAIT_SERVICE: &str = "courier-wait";

/// Beyond its wait, the time a waiting read's holders and courier may take
/// to answer before the mixnet sends the echo again.
const WAIT_SLACK_US: Micros = 4_000_000;

/// Why the client could not start an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Fewer replicas than an envelope needs intermediates, beside the holders.
    #[error("the network lists too few replicas ({0})")]
    TooFewReplicas(usize),
    /// The envelope could not be sealed.
    #[error("envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// A box's content could not be opened.
    #[error("box {position}: {reason}")]
    Box {
        /// Its position in the stream.
        position: u64,
        /// Why.
        reason: String,
    },
}

/// How the client retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Holders per box (K), as the network's parameters say.
    pub holders_per_box: usize,
    /// Fresh envelopes tried for one box before giving up.
    pub max_tries: u32,
    /// Wait before a fresh envelope after a transient failure.
    pub retry_delay_us: Micros,
    /// Polls of one envelope after ACKs before it counts as a transient
    /// failure and a fresh envelope (other intermediates) is tried: a
    /// courier whose intermediates never answer would ACK for ever.
    pub max_polls: u32,
    /// Whether to keep the IDs of writes the replicas acknowledged
    /// ([`StorageClient::take_acknowledged`]), for checks that none is lost.
    pub record_acknowledged: bool,
}

impl ClientConfig {
    /// The runtime's values for `holders_per_box`.
    pub fn new(holders_per_box: usize) -> Self {
        ClientConfig {
            holders_per_box: holders_per_box.max(1),
            max_tries: 6,
            retry_delay_us: 500_000,
            max_polls: 8,
            record_acknowledged: false,
        }
    }
}

/// One echo to send: `body` to `service` on the `node`th service node,
/// answered (or given up on) under `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Echo {
    /// The request's number.
    pub seq: u64,
    /// The service on the node.
    pub service: &'static str,
    /// Which service node (an index into the document's service nodes).
    pub node: usize,
    /// The request body.
    pub body: Vec<u8>,
    /// With `Some(life)`, the echo carries a second SURB home that the
    /// service holds for a later message, usable for `life` microseconds
    /// (the mixnet's `request_held`); its message comes back through
    /// [`StorageClient::handle_held_reply`].
    pub held_for_us: Option<Micros>,
    /// How long the service may take before it answers, beyond the echo's
    /// trip (a read that waits for its box); the mixnet waits that much
    /// longer before sending the echo again.
    pub service_wait_us: Micros,
}

/// Counts of one client's storage traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Box operations completed.
    pub operations: u64,
    /// Echoes handed to the mixnet (polls and fresh envelopes included).
    pub echoes: u64,
    /// Polls after a courier's ACK (and asks for the other slot's reply).
    pub polls: u64,
    /// Fresh envelopes after a transient failure or a lost echo.
    pub fresh_envelopes: u64,
}

/// A group of box operations started together.
pub type BatchId = u64;

/// What one box operation ended with: `Ok(None)` for a box stored,
/// `Ok(Some(box))` for a box read, or the error that ended it.
pub type BoxResult = Result<Option<SealedBox>, ErrorCode>;

struct BoxOp {
    batch: BatchId,
    slot: usize,
    request: Request,
    node: usize,
    body: Vec<u8>,
    keys: ReplyKeys,
    asked_other_slot: bool,
    tries: u32,
    polls: u32,
}

struct Retry {
    at: Micros,
    batch: BatchId,
    slot: usize,
    request: Request,
    tries: u32,
}

/// A client of the storage network; see the module documentation.
pub struct StorageClient<K: Kem> {
    config: ClientConfig,
    sizes: Sizes,
    replicas: Vec<(NodeId, K::PublicKey)>,
    replica_ids: Vec<NodeId>,
    services: usize,
    next_seq: u64,
    in_flight: HashMap<u64, BoxOp>,
    retry: Vec<Retry>,
    batches: HashMap<BatchId, Vec<Option<BoxResult>>>,
    next_batch: BatchId,
    service_requests: HashSet<u64>,
    service_replies: Vec<(u64, Option<Vec<u8>>)>,
    held_waiting: HashSet<u64>,
    held_replies: Vec<(u64, Vec<u8>)>,
    max_held_body: usize,
    max_held_reply: usize,
    echoes: Vec<Echo>,
    batch_echoes: HashMap<BatchId, u64>,
    finished_echoes: HashMap<BatchId, u64>,
    acknowledged: Vec<BoxId>,
    stats: ClientStats,
}

impl<K: Kem> StorageClient<K> {
    /// A client over `replicas` (ID and this epoch's envelope key) and
    /// `services` service nodes.
    pub fn new(
        config: ClientConfig,
        sizes: Sizes,
        replicas: Vec<(NodeId, K::PublicKey)>,
        services: usize,
    ) -> Result<Self, ClientError> {
        if replicas.len() < 2 {
            return Err(ClientError::TooFewReplicas(replicas.len()));
        }
        Ok(StorageClient {
            config,
            sizes,
            replica_ids: replicas.iter().map(|(id, _)| *id).collect(),
            replicas,
            services: services.max(1),
            next_seq: 0,
            in_flight: HashMap::new(),
            retry: Vec::new(),
            batches: HashMap::new(),
            next_batch: 1,
            service_requests: HashSet::new(),
            service_replies: Vec::new(),
            held_waiting: HashSet::new(),
            held_replies: Vec::new(),
            max_held_body: 0,
            max_held_reply: 0,
            echoes: Vec::new(),
            batch_echoes: HashMap::new(),
            finished_echoes: HashMap::new(),
            acknowledged: Vec::new(),
            stats: ClientStats::default(),
        })
    }

    /// The envelope sizes.
    pub fn sizes(&self) -> &Sizes {
        &self.sizes
    }

    /// Box plaintext available to a stream in one box.
    pub fn box_payload(&self) -> usize {
        self.sizes.max_plaintext()
    }

    /// The replicas the client addresses.
    pub fn replicas(&self) -> &[NodeId] {
        &self.replica_ids
    }

    /// Service nodes the client spreads its echoes over.
    pub fn service_nodes(&self) -> usize {
        self.services
    }

    /// Counts so far.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Whether nothing is in flight or waiting to be retried.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.retry.is_empty() && self.service_requests.is_empty()
    }

    /// Echoes to send, oldest first.
    pub fn take_echoes(&mut self) -> Vec<Echo> {
        std::mem::take(&mut self.echoes)
    }

    /// The earliest time [`StorageClient::poll`] has work.
    pub fn next_wakeup(&self) -> Option<Micros> {
        self.retry.iter().map(|r| r.at).min()
    }

    /// Starts `requests`, all in flight at once, and returns the batch's
    /// number; [`StorageClient::take_finished`] reports it once every
    /// operation has ended.
    pub fn start<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        requests: Vec<Request>,
    ) -> Result<BatchId, ClientError> {
        let batch = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(batch, vec![None; requests.len()]);
        for (slot, request) in requests.into_iter().enumerate() {
            self.submit(rng, batch, slot, request, 1)?;
        }
        Ok(batch)
    }

    /// Sends the fresh envelopes that are due.
    pub fn poll<R: RngCore + CryptoRng>(
        &mut self,
        now: Micros,
        rng: &mut R,
    ) -> Result<(), ClientError> {
        let (due, wait): (Vec<Retry>, Vec<Retry>) = self.retry.drain(..).partition(|r| r.at <= now);
        self.retry = wait;
        for r in due {
            self.submit(rng, r.batch, r.slot, r.request, r.tries)?;
        }
        Ok(())
    }

    /// Sends `body` in one echo to `service` on the `node`th service node;
    /// its answer comes from [`StorageClient::take_service_replies`] under
    /// the returned number.
    pub fn send_to_service(&mut self, service: &'static str, node: usize, body: Vec<u8>) -> u64 {
        self.service_echo(service, node, body, None)
    }

    /// Like [`StorageClient::send_to_service`], with a held SURB the service
    /// may send one later message through, for `life_us`: that message
    /// comes from [`StorageClient::take_held_replies`] under the same number.
    pub fn send_to_service_held(
        &mut self,
        service: &'static str,
        node: usize,
        body: Vec<u8>,
        life_us: Micros,
    ) -> u64 {
        let seq = self.service_echo(service, node, body, Some(life_us));
        self.held_waiting.insert(seq);
        seq
    }

    /// The largest body [`StorageClient::send_to_service_held`] carries,
    /// as the driver said ([`StorageClient::set_held_limits`]; 0 until then).
    pub fn max_held_body(&self) -> usize {
        self.max_held_body
    }

    /// The largest message a held SURB brings back (0 until set).
    pub fn max_held_reply(&self) -> usize {
        self.max_held_reply
    }

    /// Tells the client how large a body beside a held SURB and a message
    /// through one may be (the mixnet's geometry sets both).
    pub fn set_held_limits(&mut self, body: usize, reply: usize) {
        self.max_held_body = body;
        self.max_held_reply = reply;
    }

    /// The later message through the held SURB of echo `seq`; returns
    /// whether that echo was this client's and still waited for one.
    pub fn handle_held_reply(&mut self, seq: u64, body: Vec<u8>) -> bool {
        if self.held_waiting.remove(&seq) {
            self.held_replies.push((seq, body));
            true
        } else {
            false
        }
    }

    /// Messages through held SURBs so far, by the echo's number.
    pub fn take_held_replies(&mut self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut self.held_replies)
    }

    /// Stops waiting for a message through the held SURB of echo `seq`.
    pub fn forget_held(&mut self, seq: u64) {
        self.held_waiting.remove(&seq);
    }

    fn service_echo(
        &mut self,
        service: &'static str,
        node: usize,
        body: Vec<u8>,
        held_for_us: Option<Micros>,
    ) -> u64 {
        let seq = self.allocate_seq();
        self.echoes.push(Echo {
            seq,
            service,
            node: node % self.services,
            body,
            held_for_us,
            service_wait_us: 0,
        });
        self.stats.echoes += 1;
        self.service_requests.insert(seq);
        seq
    }

    /// Answers to [`StorageClient::send_to_service`] so far: the body, or
    /// `None` when the mixnet gave up on the echo.
    pub fn take_service_replies(&mut self) -> Vec<(u64, Option<Vec<u8>>)> {
        std::mem::take(&mut self.service_replies)
    }

    /// Batches that finished, each with one outcome per request, in order.
    pub fn take_finished(&mut self) -> Vec<(BatchId, Vec<BoxResult>)> {
        let mut finished: Vec<BatchId> = self
            .batches
            .iter()
            .filter(|(_, results)| results.iter().all(Option::is_some))
            .map(|(id, _)| *id)
            .collect();
        finished.sort_unstable();
        self.finished_echoes.clear();
        for id in &finished {
            let echoes = self.batch_echoes.remove(id).unwrap_or(0);
            self.finished_echoes.insert(*id, echoes);
        }
        finished
            .into_iter()
            .filter_map(|id| {
                let results = self.batches.remove(&id)?;
                self.stats.operations += results.len() as u64;
                Some((id, results.into_iter().flatten().collect()))
            })
            .collect()
    }

    /// Echoes `batch` took (polls and fresh envelopes included, the
    /// mixnet's own resends not), while it runs and until the next
    /// [`StorageClient::take_finished`] after the one that reported it.
    pub fn echoes_of(&self, batch: BatchId) -> u64 {
        self.batch_echoes
            .get(&batch)
            .or_else(|| self.finished_echoes.get(&batch))
            .copied()
            .unwrap_or(0)
    }

    /// Box IDs of writes acknowledged since the last call (kept only with
    /// `record_acknowledged`).
    pub fn take_acknowledged(&mut self) -> Vec<BoxId> {
        std::mem::take(&mut self.acknowledged)
    }

    /// How many operations of `batch` have ended so far.
    pub fn done(&self, batch: BatchId) -> usize {
        self.batches
            .get(&batch)
            .map_or(0, |r| r.iter().filter(|r| r.is_some()).count())
    }

    /// The reply to echo `seq`; returns whether the echo was this client's.
    pub fn handle_reply(&mut self, now: Micros, seq: u64, body: &[u8]) -> bool {
        if let Some(op) = self.in_flight.remove(&seq) {
            self.answered(now, op, body);
            true
        } else if self.service_requests.remove(&seq) {
            self.service_replies.push((seq, Some(body.to_vec())));
            true
        } else {
            false
        }
    }

    /// The mixnet gave up on echo `seq`; returns whether it was this client's.
    pub fn handle_lost(&mut self, now: Micros, seq: u64) -> bool {
        if let Some(op) = self.in_flight.remove(&seq) {
            self.later(now, op, ErrorCode::Unavailable);
            true
        } else if self.service_requests.remove(&seq) {
            self.service_replies.push((seq, None));
            true
        } else {
            false
        }
    }

    fn allocate_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn submit<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        batch: BatchId,
        slot: usize,
        request: Request,
        tries: u32,
    ) -> Result<(), ClientError> {
        let box_id = request.box_id();
        let k = self.config.holders_per_box;
        let [a, b] = shard::intermediates(&box_id, &self.replica_ids, k, rng)
            .ok_or(ClientError::TooFewReplicas(self.replicas.len()))?;
        let key = |id: NodeId| {
            self.replicas
                .iter()
                .find(|(r, _)| *r == id)
                .map(|(_, key)| key)
                .ok_or(ClientError::TooFewReplicas(self.replicas.len()))
        };
        let recipients = [
            Recipient::<K> {
                id: a,
                public_key: key(a)?,
            },
            Recipient::<K> {
                id: b,
                public_key: key(b)?,
            },
        ];
        let reply_index = (rng.next_u32() & 1) as u8;
        let (body, keys) = envelope::seal(&self.sizes, recipients, reply_index, &request, rng)?;
        let node = (rng.next_u64() % self.services as u64) as usize;
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
            polls: 0,
        };
        self.send(op);
        Ok(())
    }

    fn send(&mut self, op: BoxOp) {
        let seq = self.allocate_seq();
        // A waiting read goes to the waiting service the first time; its
        // polls find the courier's entry through the ordinary one.
        let (service, service_wait_us) = match op.request {
            Request::Await { wait_ms, .. } if op.polls == 0 && !op.asked_other_slot => (
                COURIER_WAIT_SERVICE,
                u64::from(wait_ms) * 1_000 + WAIT_SLACK_US,
            ),
            _ => (COURIER_SERVICE, 0),
        };
        self.echoes.push(Echo {
            seq,
            service,
            node: op.node,
            body: op.body.clone(),
            held_for_us: None,
            service_wait_us,
        });
        self.stats.echoes += 1;
        *self.batch_echoes.entry(op.batch).or_default() += 1;
        self.in_flight.insert(seq, op);
    }

    fn later(&mut self, now: Micros, op: BoxOp, last_error: ErrorCode) {
        if op.tries >= self.config.max_tries {
            self.finish(&op, Err(last_error));
        } else {
            self.retry.push(Retry {
                at: now + self.config.retry_delay_us,
                batch: op.batch,
                slot: op.slot,
                request: op.request,
                tries: op.tries + 1,
            });
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

    fn answered(&mut self, now: Micros, mut op: BoxOp, body: &[u8]) {
        let answer = match op.keys.open(&self.sizes, body) {
            Ok(answer) => answer,
            Err(_) => match envelope::refusal(body) {
                Some(code) => CourierAnswer::Refused(code),
                None => return self.later(now, op, ErrorCode::Malformed),
            },
        };
        match answer {
            CourierAnswer::Pending if op.polls >= self.config.max_polls => {
                self.later(now, op, ErrorCode::Unavailable)
            }
            CourierAnswer::Pending => {
                op.polls += 1;
                self.stats.polls += 1;
                self.send(op);
            }
            // A courier whose document is older than ours may not know a
            // replica yet: a fresh envelope picks intermediates again.
            CourierAnswer::Refused(code)
                if code.is_transient() || code == ErrorCode::UnknownReplica =>
            {
                self.later(now, op, code)
            }
            CourierAnswer::Refused(code) => self.finish(&op, Err(code)),
            CourierAnswer::Reply { reply, slot } => match (reply.code, &op.request) {
                (ErrorCode::Ok, Request::Write(item)) => {
                    if self.config.record_acknowledged {
                        self.acknowledged.push(item.id);
                    }
                    self.finish(&op, Ok(None))
                }
                (ErrorCode::Ok, Request::Read(id) | Request::Await { id, .. }) => match reply.found
                {
                    Some(found) if found.id == *id => self.finish(&op, Ok(Some(found))),
                    _ => self.later(now, op, ErrorCode::Malformed),
                },
                (ErrorCode::NotFound, _) if !op.asked_other_slot => {
                    // The other intermediate may have found it: ask the
                    // courier for its reply to the same envelope.
                    op.asked_other_slot = true;
                    envelope::set_reply_index(&mut op.body, 1 - slot);
                    self.stats.polls += 1;
                    self.send(op);
                }
                (code, _) if code.is_transient() => self.later(now, op, code),
                (code, _) => self.finish(&op, Err(code)),
            },
        }
    }
}

/// The ID of the box at `position` of the stream `cap`, `ctx`.
pub fn box_id(cap: &ReadCap, ctx: &[u8], position: u64) -> Result<BoxId, ClientError> {
    let index = cap
        .index()
        .advance_to(cap.index().idx64() + position)
        .map_err(|e| ClientError::Box {
            position,
            reason: e.to_string(),
        })?;
    Ok(cap.box_id(&index, ctx))
}

/// Writes of `data` as a stream of boxes of `box_len` plaintext bytes
/// under `writer` (its next boxes, in order).
pub fn write_requests(
    writer: &mut Writer,
    data: &[u8],
    box_len: usize,
) -> Result<Vec<Request>, ClientError> {
    crate::stream::split(data, box_len)
        .iter()
        .enumerate()
        .map(|(n, plain)| {
            writer
                .seal_next(plain)
                .map(Request::Write)
                .map_err(|e| ClientError::Box {
                    position: n as u64,
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// Reads for the first `count` boxes of the stream `cap`, `ctx`.
pub fn read_requests(cap: &ReadCap, ctx: &[u8], count: usize) -> Result<Vec<Request>, ClientError> {
    (0..count as u64)
        .map(|n| box_id(cap, ctx, n).map(Request::Read))
        .collect()
}

/// Reads of the first `count` boxes of the stream `cap`, `ctx` that wait
/// up to `wait_ms` for boxes not written yet.
pub fn await_requests(
    cap: &ReadCap,
    ctx: &[u8],
    count: usize,
    wait_ms: u32,
) -> Result<Vec<Request>, ClientError> {
    (0..count as u64)
        .map(|n| box_id(cap, ctx, n).map(|id| Request::Await { id, wait_ms }))
        .collect()
}

/// The plaintext of the box at `position` of the stream `cap`, `ctx`.
pub fn open_box(
    cap: &ReadCap,
    ctx: &[u8],
    position: u64,
    item: &SealedBox,
) -> Result<Vec<u8>, ClientError> {
    let fail = |reason: String| ClientError::Box { position, reason };
    let index = cap
        .index()
        .advance_to(cap.index().idx64() + position)
        .map_err(|e| fail(e.to_string()))?;
    match cap
        .open(&index, ctx, &item.id, &item.ciphertext, &item.signature)
        .map_err(|e| fail(e.to_string()))?
    {
        BoxContent::Message(plain) => Ok(plain),
        BoxContent::Tombstone => Err(fail("deleted".into())),
    }
}

/// The byte stream a read batch's results carry: every box opened in
/// order, then joined. Names the first box that failed.
pub fn open_stream(
    cap: &ReadCap,
    ctx: &[u8],
    results: Vec<BoxResult>,
) -> Result<Vec<u8>, ClientError> {
    let boxes = results
        .into_iter()
        .enumerate()
        .map(|(n, r)| match r {
            Ok(Some(item)) => open_box(cap, ctx, n as u64, &item),
            Ok(None) => Err(ClientError::Box {
                position: n as u64,
                reason: "no box came back".into(),
            }),
            Err(code) => Err(ClientError::Box {
                position: n as u64,
                reason: code.to_string(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    crate::stream::join(&boxes).map_err(|e| ClientError::Box {
        position: 0,
        reason: e.to_string(),
    })
}
