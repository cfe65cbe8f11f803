//! A Pigeonhole storage replica for real: Noise links from couriers and
//! other replicas, boxes in redb ([`BoxStore`]), and three jobs.
//!
//! - **Intermediate.** A courier hands it one slot of a client's envelope.
//!   It opens it with its epoch key, checks a write's signature, and asks
//!   the box's K holders (rendezvous hashing over the document's replicas;
//!   itself included, when it is one). A write is answered `Ok` once one
//!   holder has it durably; a read with the first holder that has the box,
//!   and a holder that said it has none gets the box (read-repair).
//! - **Holder.** Stores writes in batches, one durable transaction each, and
//!   answers only after the commit. A write from an intermediate is queued,
//!   in the same transaction, for replication to the other holders.
//! - **Replicator.** Sends queued copies until their holders confirm them;
//!   the queue is on disk, so a restart resumes it. Expired boxes are swept.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use funion_bacap::{verify_box, BoxId, SealedBox};
use funion_pigeonhole::envelope::{ReplicaReply, ReplyKey, Request, Sizes};
use funion_pigeonhole::shard;
use funion_pigeonhole::wire::{ReplicaEnvelope, StorageMessage, WireBox};
use funion_pigeonhole::ErrorCode;
use funion_pki::{NetworkDocument, Parameters, Role};
use funion_sphinx::kem::Kem;
use funion_sphinx::NodeId;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::config::{hex32, NodeFile, NodeKeys};
use crate::link::Frame;
use crate::metrics::Metrics;
use crate::node::{publish, publish_at_start, start_tasks, AbortOnDrop, Inbound, NodeTasks, Peers};
use crate::store::{BoxStore, WriteOp, Written};
use crate::{fetch_document, unix_ms};

/// How long an intermediate waits for the holders before it answers.
const HOLDER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a read that found its box waits for the other holders' answers,
/// to repair those that lack it (a holder just restarted may be reached only
/// after its peers' reconnect backoff, up to 5 s).
const REPAIR_WINDOW: Duration = Duration::from_secs(10);
/// How often the loop looks at timeouts and the replication queue.
const TICK: Duration = Duration::from_millis(50);
/// A copy unconfirmed this long is sent again.
const RESEND_COPY: Duration = Duration::from_secs(2);
/// Copies taken from the queue per tick.
const COPIES_PER_TICK: usize = 256;
/// A copy is first sent this long after it was queued, giving the
/// intermediate time to confirm that every holder has the box already.
const COPY_AFTER: Duration = Duration::from_secs(1);
/// Inbound messages handled per durable batch.
const BATCH: usize = 256;

/// Runs a replica until the task is dropped or fails.
pub(crate) async fn run<K: Kem>(
    config: NodeFile,
    parameters: Parameters,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
) -> anyhow::Result<()> {
    let keys = NodeKeys::from_seed(hex32(&config.secret_seed)?);
    let authority_key = hex32(&config.authority_key)?;
    let geometry = parameters.geometry()?;
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Arc::new(BoxStore::open(
        &config.data_dir.join("boxes.redb"),
        config.box_lifetime_s.saturating_mul(1000),
    )?);

    let mut epoch = publish_at_start::<K>(&http, &config, &keys, parameters.epoch_ms).await?;
    let document =
        fetch_document(&http, &config.authority_url, &authority_key, epoch, true).await?;

    let mut tasks = AbortOnDrop(Vec::new());
    let (mut inbound, _) = start_tasks(
        NodeTasks {
            config: &config,
            keys: &keys,
            packet_len: geometry.packet_len(),
            document: &document,
            listener,
            metrics_listener,
            metrics: &metrics,
            http: &http,
            authority_key,
            epoch_ms: parameters.epoch_ms,
        },
        &mut tasks,
    );

    let mut replica = Replica::<K> {
        own_id: NodeId(keys.identity.verifying_key().to_bytes()),
        sizes: crate::storage::sizes(&geometry)?,
        holders_per_box: usize::from(parameters.replicas.max(1)),
        store,
        secrets: BTreeMap::new(),
        current_epoch: epoch,
        document,
        peers: Peers::new(keys.link_secret, geometry.packet_len(), metrics.clone()),
        metrics: metrics.clone(),
        next_request: 0,
        next_op: 0,
        ops: HashMap::new(),
        waiting: HashMap::new(),
        copies_in_flight: HashMap::new(),
        repairs_to_self: Vec::new(),
        may_owe: true,
        counters: BTreeMap::new(),
    };
    for e in [epoch.saturating_sub(1), epoch, epoch + 1] {
        replica
            .secrets
            .insert(e, K::secret_from_seed(&keys.sphinx_seed(e)));
    }
    metrics.set_document_nodes(replica.document.nodes.len());
    tracing::info!(name = %config.name, epoch, "replica running");

    let epoch_start =
        |e: u64| Duration::from_millis((e * parameters.epoch_ms).saturating_sub(unix_ms()));
    let mut next_epoch = Instant::now() + epoch_start(epoch + 1);
    let expiry_every =
        Duration::from_millis((config.box_lifetime_s.saturating_mul(100)).clamp(1_000, 60_000));
    let mut next_expiry = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = inbound.recv() => {
                let Some(first) = message else { break };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match inbound.try_recv() {
                        Ok(message) => batch.push(message),
                        Err(_) => break,
                    }
                }
                replica.handle_batch(batch).await;
            }
            _ = tick.tick() => {
                replica.tick().await;
                if Instant::now() >= next_expiry {
                    next_expiry = Instant::now() + expiry_every;
                    let store = replica.store.clone();
                    match tokio::task::spawn_blocking(move || store.expire(unix_ms())).await {
                        Ok(Ok(n)) if n > 0 => tracing::info!(boxes = n, "expired boxes deleted"),
                        Ok(Err(error)) => tracing::error!(%error, "expiry sweep failed"),
                        _ => {}
                    }
                }
            }
            _ = tokio::time::sleep_until(next_epoch) => {
                epoch += 1;
                replica.current_epoch = epoch;
                replica.secrets.insert(epoch + 1, K::secret_from_seed(&keys.sphinx_seed(epoch + 1)));
                replica.secrets.retain(|&e, _| e + 1 >= epoch);
                if let Err(error) = publish::<K>(&http, &config, &keys, epoch + 1).await {
                    tracing::warn!(%error, "could not publish the next epoch's descriptor");
                }
                if let Ok(new) = fetch_document(&http, &config.authority_url, &authority_key, epoch, false).await {
                    metrics.set_document_nodes(new.nodes.len());
                    replica.document = new;
                }
                next_epoch = Instant::now() + epoch_start(epoch + 1);
            }
        }
    }
    Ok(())
}

/// What waits for a holder's answer.
enum Waiter {
    /// An intermediate's operation.
    Op { op: u64, holder: NodeId },
    /// A copy from the replication queue.
    Copy { box_id: BoxId, holder: NodeId },
}

/// What to do once a local write is durable.
enum AfterWrite {
    /// Answer the holder request `request` from `to`.
    Answer { to: NodeId, request: u64 },
    /// Feed the outcome to an intermediate operation.
    Op(u64),
    /// A read-repair of our own copy: nothing to answer.
    Nothing,
}

/// An intermediate's operation on behalf of a client.
struct Op {
    courier: NodeId,
    hash: [u8; 32],
    slot: u8,
    reply_key: ReplyKey,
    read: Option<BoxId>,
    write: Option<BoxId>,
    holders: Vec<NodeId>,
    answered: Vec<NodeId>,
    found: Option<SealedBox>,
    lacking: Vec<NodeId>,
    stored: Vec<NodeId>,
    failures: Vec<ErrorCode>,
    replied: bool,
    deadline: Instant,
    keep_until: Instant,
}

struct Replica<K: Kem> {
    own_id: NodeId,
    sizes: Sizes,
    holders_per_box: usize,
    store: Arc<BoxStore>,
    secrets: BTreeMap<u64, K::SecretKey>,
    current_epoch: u64,
    document: NetworkDocument,
    peers: Peers,
    metrics: Arc<Metrics>,
    next_request: u64,
    next_op: u64,
    ops: HashMap<u64, Op>,
    waiting: HashMap<u64, Waiter>,
    copies_in_flight: HashMap<(BoxId, NodeId), Instant>,
    repairs_to_self: Vec<SealedBox>,
    /// Whether the replication queue may hold anything (so an idle replica
    /// does not read it every tick).
    may_owe: bool,
    counters: BTreeMap<&'static str, u64>,
}

type Outbox = Vec<(NodeId, StorageMessage)>;

impl<K: Kem> Replica<K> {
    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_default() += 1;
    }

    fn replicas(&self) -> Vec<NodeId> {
        self.document
            .with_role(Role::Replica)
            .map(|n| n.id())
            .collect()
    }

    fn request_number(&mut self, waiter: Waiter) -> u64 {
        self.next_request += 1;
        self.waiting.insert(self.next_request, waiter);
        self.next_request
    }

    async fn handle_batch(&mut self, batch: Vec<Inbound>) {
        let mut out = Outbox::new();
        let mut writes: Vec<(WriteOp, AfterWrite)> = Vec::new();
        for item in self.repairs_to_self.drain(..) {
            let op = WriteOp {
                item,
                replicate_to: Vec::new(),
            };
            writes.push((op, AfterWrite::Nothing));
        }
        for message in batch {
            match message {
                Inbound::Frame {
                    source: funion_mixnet::Source::Peer(from),
                    frame: Frame::Storage(bytes),
                    ..
                } => match StorageMessage::decode(&bytes) {
                    Ok(message) => self.handle(from, message, &mut out, &mut writes),
                    Err(_) => self.count("malformed"),
                },
                Inbound::Frame { .. } => self.count("unexpected_frame"),
                Inbound::Document(new) => {
                    if new.epoch >= self.document.epoch {
                        self.metrics.set_document_nodes(new.nodes.len());
                        self.document = *new;
                    }
                }
                Inbound::ClientConnected { .. } | Inbound::ClientGone(_) => {}
            }
        }
        self.commit(writes, &mut out).await;
        self.send(out);
    }

    /// Makes a batch of local writes durable, then acts on each outcome.
    async fn commit(&mut self, writes: Vec<(WriteOp, AfterWrite)>, out: &mut Outbox) {
        if writes.is_empty() {
            return;
        }
        let (ops, afters): (Vec<WriteOp>, Vec<AfterWrite>) = writes.into_iter().unzip();
        let store = self.store.clone();
        let count = ops.len();
        let outcomes =
            match tokio::task::spawn_blocking(move || store.write_batch(&ops, unix_ms())).await {
                Ok(Ok(outcomes)) => outcomes,
                Ok(Err(error)) => {
                    tracing::error!(%error, "write batch failed");
                    vec![Written::Refused(ErrorCode::StorageFailure); count]
                }
                Err(_) => vec![Written::Refused(ErrorCode::StorageFailure); count],
            };
        for (after, written) in afters.into_iter().zip(outcomes) {
            self.may_owe |= written == Written::Stored;
            self.count(match written {
                Written::Stored => "writes_stored",
                Written::Unchanged => "writes_unchanged",
                Written::Refused(_) => "writes_refused",
            });
            let code = written.code();
            match after {
                AfterWrite::Answer { to, request } => {
                    out.push((to, StorageMessage::WriteReply { request, code }))
                }
                AfterWrite::Op(op) => {
                    let own = self.own_id;
                    self.holder_answered(op, own, code, None, out);
                }
                AfterWrite::Nothing => {}
            }
        }
    }

    fn handle(
        &mut self,
        from: NodeId,
        message: StorageMessage,
        out: &mut Outbox,
        writes: &mut Vec<(WriteOp, AfterWrite)>,
    ) {
        match message {
            StorageMessage::Envelope(envelope) => self.envelope(from, envelope, out, writes),
            StorageMessage::Write {
                request,
                item,
                replicate,
            } => {
                self.count("holder_writes");
                let Ok(item) = item.to_sealed() else {
                    let code = ErrorCode::Malformed;
                    out.push((from, StorageMessage::WriteReply { request, code }));
                    return;
                };
                let replicate_to = if replicate {
                    shard::holders(&item.id, &self.replicas(), self.holders_per_box)
                        .into_iter()
                        .filter(|h| *h != self.own_id)
                        .collect()
                } else {
                    Vec::new()
                };
                let op = WriteOp { item, replicate_to };
                writes.push((op, AfterWrite::Answer { to: from, request }));
            }
            StorageMessage::Read { request, box_id } => {
                self.count("holder_reads");
                let (code, item) = self.read_local(&BoxId(box_id));
                let item = item.as_ref().map(WireBox::from);
                out.push((
                    from,
                    StorageMessage::ReadReply {
                        request,
                        code,
                        item,
                    },
                ));
            }
            StorageMessage::WriteReply { request, code } => match self.waiting.remove(&request) {
                Some(Waiter::Op { op, holder }) if holder == from => {
                    self.holder_answered(op, from, code, None, out)
                }
                Some(Waiter::Copy { box_id, holder }) if holder == from => {
                    self.copies_in_flight.remove(&(box_id, holder));
                    if matches!(code, ErrorCode::Ok | ErrorCode::Conflict) {
                        if code == ErrorCode::Conflict {
                            tracing::warn!("a holder keeps other bytes under a replicated box");
                        }
                        self.count("copies_confirmed");
                        if let Err(error) = self.store.replicated(&[(box_id, holder)]) {
                            tracing::error!(%error, "cannot update the replication queue");
                        }
                    }
                }
                _ => self.count("stray_replies"),
            },
            StorageMessage::ReadReply {
                request,
                code,
                item,
            } => match self.waiting.remove(&request) {
                Some(Waiter::Op { op, holder }) if holder == from => {
                    let item = item.and_then(|i| i.to_sealed().ok());
                    self.holder_answered(op, from, code, item, out)
                }
                _ => self.count("stray_replies"),
            },
            StorageMessage::Stored { box_id, holders } => {
                let done: Vec<(BoxId, NodeId)> = holders
                    .into_iter()
                    .map(|h| (BoxId(box_id), NodeId(h)))
                    .collect();
                if let Err(error) = self.store.replicated(&done) {
                    tracing::error!(%error, "cannot update the replication queue");
                }
            }
            StorageMessage::EnvelopeReply { .. } => self.count("unexpected_message"),
        }
    }

    fn read_local(&self, id: &BoxId) -> (ErrorCode, Option<SealedBox>) {
        match self.store.get(id, unix_ms()) {
            Ok(Some(item)) => (ErrorCode::Ok, Some(item)),
            Ok(None) => (ErrorCode::NotFound, None),
            Err(error) => {
                tracing::error!(%error, "read failed");
                (ErrorCode::StorageFailure, None)
            }
        }
    }

    /// A client's envelope slot, from a courier.
    fn envelope(
        &mut self,
        courier: NodeId,
        envelope: ReplicaEnvelope,
        out: &mut Outbox,
        writes: &mut Vec<(WriteOp, AfterWrite)>,
    ) {
        self.count("envelopes");
        let current = self.current_epoch;
        let mut keys: Vec<(&u64, &K::SecretKey)> = self.secrets.iter().collect();
        keys.sort_by_key(|(e, _)| (**e != current, std::cmp::Reverse(**e)));
        let keys: Vec<&K::SecretKey> = keys.into_iter().map(|(_, k)| k).collect();
        let (hash, slot) = (envelope.hash, envelope.slot);
        let (request, reply_key) = match envelope.open::<K>(&self.sizes, &self.own_id, &keys) {
            Ok(opened) => opened,
            Err(code) => {
                self.count("envelopes_refused");
                let reply = StorageMessage::EnvelopeReply {
                    hash,
                    slot,
                    code,
                    sealed: Vec::new(),
                };
                out.push((courier, reply));
                return;
            }
        };
        let (box_id, write) = match request {
            Request::Read(id) => (id, None),
            Request::Write(item) => (item.id, Some(item)),
        };
        let holders = shard::holders(&box_id, &self.replicas(), self.holders_per_box);
        self.next_op += 1;
        let op_id = self.next_op;
        let mut op = Op {
            courier,
            hash,
            slot,
            reply_key,
            read: write.is_none().then_some(box_id),
            write: write.is_some().then_some(box_id),
            holders: holders.clone(),
            answered: Vec::new(),
            found: None,
            lacking: Vec::new(),
            stored: Vec::new(),
            failures: Vec::new(),
            replied: false,
            deadline: Instant::now() + HOLDER_TIMEOUT,
            keep_until: Instant::now() + REPAIR_WINDOW,
        };
        if let Some(item) = &write {
            // Refuse a forged box here: no holder ever sees it.
            if verify_box(&item.id, &item.ciphertext, &item.signature).is_err() {
                self.count("bad_signatures");
                op.replied = true;
                let reply = ReplicaReply {
                    code: ErrorCode::BadSignature,
                    found: None,
                };
                out.push((courier, self.sealed_reply(&op, &reply)));
                return;
            }
        }
        self.ops.insert(op_id, op);
        let mut local_read = None;
        for holder in holders {
            if holder == self.own_id {
                match &write {
                    Some(item) => {
                        let others = self.replicas();
                        let replicate_to = shard::holders(&item.id, &others, self.holders_per_box)
                            .into_iter()
                            .filter(|h| *h != self.own_id)
                            .collect();
                        let op = WriteOp {
                            item: item.clone(),
                            replicate_to,
                        };
                        writes.push((op, AfterWrite::Op(op_id)));
                    }
                    None => local_read = Some(self.read_local(&box_id)),
                }
                continue;
            }
            let request = self.request_number(Waiter::Op { op: op_id, holder });
            let message = match &write {
                Some(item) => StorageMessage::Write {
                    request,
                    item: WireBox::from(item),
                    replicate: true,
                },
                None => StorageMessage::Read {
                    request,
                    box_id: box_id.0,
                },
            };
            out.push((holder, message));
        }
        if let Some((code, item)) = local_read {
            let own = self.own_id;
            self.holder_answered(op_id, own, code, item, out);
        }
    }

    fn sealed_reply(&self, op: &Op, reply: &ReplicaReply) -> StorageMessage {
        StorageMessage::EnvelopeReply {
            hash: op.hash,
            slot: op.slot,
            code: ErrorCode::Ok,
            sealed: op.reply_key.seal(&self.sizes, reply),
        }
    }

    /// One holder's answer to an intermediate operation.
    fn holder_answered(
        &mut self,
        op_id: u64,
        holder: NodeId,
        code: ErrorCode,
        item: Option<SealedBox>,
        out: &mut Outbox,
    ) {
        let Some(mut op) = self.ops.remove(&op_id) else {
            return;
        };
        if !op.answered.contains(&holder) {
            op.answered.push(holder);
        }
        match op.read {
            Some(box_id) => {
                let valid = item.filter(|i| {
                    i.id == box_id && verify_box(&i.id, &i.ciphertext, &i.signature).is_ok()
                });
                match (code, valid) {
                    (ErrorCode::Ok, Some(found)) => {
                        for lacking in std::mem::take(&mut op.lacking) {
                            self.repair(lacking, &found, out);
                        }
                        if !op.replied {
                            op.replied = true;
                            let reply = ReplicaReply {
                                code: ErrorCode::Ok,
                                found: Some(found.clone()),
                            };
                            out.push((op.courier, self.sealed_reply(&op, &reply)));
                        }
                        op.found = Some(found);
                    }
                    (ErrorCode::NotFound, _) => match &op.found {
                        Some(found) => {
                            let found = found.clone();
                            self.repair(holder, &found, out);
                        }
                        None => op.lacking.push(holder),
                    },
                    (code, _) => op.failures.push(code),
                }
            }
            None => {
                if code == ErrorCode::Ok {
                    op.stored.push(holder);
                }
                match code {
                    ErrorCode::Ok | ErrorCode::Conflict | ErrorCode::BadSignature => {
                        if !op.replied {
                            op.replied = true;
                            let reply = ReplicaReply { code, found: None };
                            out.push((op.courier, self.sealed_reply(&op, &reply)));
                        }
                    }
                    code => op.failures.push(code),
                }
                if op.stored.len() == op.holders.len() {
                    // Every holder has it: the copies they owe each other
                    // are not needed.
                    self.all_stored(&op, out);
                }
            }
        }
        if op.answered.len() < op.holders.len() {
            self.ops.insert(op_id, op);
        } else {
            self.finish(&mut op, out);
        }
    }

    /// Tells every holder of a box that all of them have it, so none owes
    /// the others a copy.
    fn all_stored(&mut self, op: &Op, out: &mut Outbox) {
        let Some(box_id) = op.write else {
            return;
        };
        let holders: Vec<[u8; 32]> = op.stored.iter().map(|h| h.0).collect();
        for holder in &op.stored {
            if *holder == self.own_id {
                let done: Vec<(BoxId, NodeId)> = op.stored.iter().map(|h| (box_id, *h)).collect();
                if let Err(error) = self.store.replicated(&done) {
                    tracing::error!(%error, "cannot update the replication queue");
                }
            } else {
                let message = StorageMessage::Stored {
                    box_id: box_id.0,
                    holders: holders.clone(),
                };
                out.push((*holder, message));
            }
        }
    }

    /// Answers an operation whose holders all answered or timed out.
    fn finish(&mut self, op: &mut Op, out: &mut Outbox) {
        if op.replied {
            return;
        }
        op.replied = true;
        let code = if op.read.is_some() && !op.lacking.is_empty() {
            ErrorCode::NotFound
        } else if op.failures.contains(&ErrorCode::StorageFailure) {
            ErrorCode::StorageFailure
        } else {
            ErrorCode::Unavailable
        };
        self.count(match code {
            ErrorCode::NotFound => "reads_not_found",
            _ => "ops_unavailable",
        });
        let reply = ReplicaReply { code, found: None };
        out.push((op.courier, self.sealed_reply(op, &reply)));
    }

    /// Sends `item` to a holder that lacks it (read-repair).
    fn repair(&mut self, holder: NodeId, item: &SealedBox, out: &mut Outbox) {
        self.count("read_repairs");
        if holder == self.own_id {
            self.repairs_to_self.push(item.clone());
            return;
        }
        // Nobody waits for the answer: a failed repair is retried by the
        // next read.
        self.next_request += 1;
        out.push((
            holder,
            StorageMessage::Write {
                request: self.next_request,
                item: WireBox::from(item),
                replicate: false,
            },
        ));
    }

    /// Timeouts, the replication queue, metrics.
    async fn tick(&mut self) {
        let mut out = Outbox::new();
        let now = Instant::now();
        let expired: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| op.deadline <= now && !op.replied || op.keep_until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(mut op) = self.ops.remove(&id) {
                self.finish(&mut op, &mut out);
                // A read that found its box stays a while to repair late
                // answers.
                if op.found.is_some() && op.keep_until > now {
                    self.ops.insert(id, op);
                }
            }
        }
        self.waiting.retain(|_, w| match w {
            Waiter::Op { op, .. } => self.ops.contains_key(op),
            Waiter::Copy { box_id, holder } => self
                .copies_in_flight
                .get(&(*box_id, *holder))
                .is_some_and(|sent| now.duration_since(*sent) < RESEND_COPY),
        });
        self.copies_in_flight
            .retain(|_, sent| now.duration_since(*sent) < RESEND_COPY);
        let backlog = if !self.may_owe {
            Ok(Ok(Vec::new()))
        } else {
            let store = self.store.clone();
            let before = unix_ms().saturating_sub(COPY_AFTER.as_millis() as u64);
            tokio::task::spawn_blocking(move || store.replication_backlog(COPIES_PER_TICK, before))
                .await
        };
        if let Ok(Ok(backlog)) = backlog {
            for (item, holder) in backlog {
                if self.copies_in_flight.contains_key(&(item.id, holder)) {
                    continue;
                }
                self.copies_in_flight.insert((item.id, holder), now);
                let request = self.request_number(Waiter::Copy {
                    box_id: item.id,
                    holder,
                });
                self.count("copies_sent");
                out.push((
                    holder,
                    StorageMessage::Write {
                        request,
                        item: WireBox::from(&item),
                        replicate: false,
                    },
                ));
            }
        }
        if !self.repairs_to_self.is_empty() {
            self.handle_batch(Vec::new()).await;
        }
        self.send(out);
        for (name, value) in &self.counters {
            self.metrics.set_storage(name, *value);
        }
        if self.may_owe {
            if let Ok(owed) = self.store.replication_owed() {
                self.metrics.set_storage("copies_owed", owed);
                self.may_owe = owed > 0;
            }
        }
    }

    fn send(&mut self, out: Outbox) {
        for (to, message) in out {
            self.peers
                .send(to, &self.document, Frame::Storage(message.encode()));
        }
    }
}
