//! The replica as a state machine: every role a Pigeonhole replica plays,
//! with its storage as effects.
//!
//! - **Intermediate.** A courier hands it one slot of a client's envelope.
//!   It opens it with its epoch keys, checks a write's signature, and asks
//!   the box's K holders (rendezvous hashing over the replicas; itself
//!   included when it is one). A write is answered `Ok` once one holder has
//!   it durably; a read with the first holder that has the box, and a holder
//!   that said it has none gets the box (read-repair). A waiting read
//!   ([`Request::Await`]) asks the holders to wait for the box too.
//! - **Holder.** Writes go to the store in batches (one
//!   [`StorageEffect::Write`] per [`Replica::take_effects`]) and are
//!   answered only after the store said they are durable. A write from an
//!   intermediate queues, in the same batch, its copies for the other holders.
//!   A read that may wait and finds nothing is parked until the box is
//!   written or the wait is over (a bounded number of them, each for a
//!   bounded time); the store must answer effects in the order it got them.
//! - **Replicator.** Sends queued copies until their holders confirm them;
//!   the queue is the store's, so a restart resumes it. Expired boxes are
//!   swept.
//!
//! Time is the driver's, in microseconds; nothing here waits.

use std::collections::{BTreeMap, HashMap};

use funion_bacap::{verify_box, BoxId, SealedBox};
use funion_sphinx::kem::Kem;
use funion_sphinx::NodeId;

use super::storage::{StorageAnswer, StorageEffect, WriteOp, Written};
use crate::envelope::{ReplicaReply, ReplyKey, Request, Sizes};
use crate::shard;
use crate::wire::{ReplicaEnvelope, StorageMessage, WireBox};
use crate::{ErrorCode, Micros};

/// How a replica is tuned; [`ReplicaConfig::new`] gives the runtime's values.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This replica's node ID.
    pub own_id: NodeId,
    /// Envelope sizes of the network.
    pub sizes: Sizes,
    /// Holders per box (K).
    pub holders_per_box: usize,
    /// How long an intermediate waits for the holders before it answers.
    pub holder_timeout_us: Micros,
    /// How long a read that found its box keeps listening, to repair
    /// holders that answer late without it (a restarted holder may be
    /// reached only after its peers' reconnect backoff, up to 5 s).
    pub repair_window_us: Micros,
    /// A copy unconfirmed this long is sent again.
    pub resend_copy_us: Micros,
    /// Copies loaded from the queue per tick.
    pub copies_per_tick: usize,
    /// A copy is first sent this long after it was queued, giving the
    /// intermediate time to confirm that every holder has the box already.
    pub copy_after_ms: u64,
    /// How often expired boxes are swept.
    pub expiry_every_us: Micros,
    /// The longest a read waits for its box, whatever it asked.
    pub max_wait_us: Micros,
    /// Most reads parked at once; past that, a waiting read is answered
    /// at once.
    pub max_waiting_reads: usize,
}

impl ReplicaConfig {
    /// The runtime's tuning for boxes that live `box_lifetime_s`.
    pub fn new(own_id: NodeId, sizes: Sizes, holders_per_box: usize, box_lifetime_s: u64) -> Self {
        ReplicaConfig {
            own_id,
            sizes,
            holders_per_box: holders_per_box.max(1),
            holder_timeout_us: 3_000_000,
            repair_window_us: 10_000_000,
            resend_copy_us: 2_000_000,
            copies_per_tick: 256,
            copy_after_ms: 1_000,
            expiry_every_us: box_lifetime_s
                .saturating_mul(100_000)
                .clamp(1_000_000, 60_000_000),
            max_wait_us: 30_000_000,
            max_waiting_reads: 4_096,
        }
    }
}

/// What the replica asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaEffect {
    /// Send an encoded [`StorageMessage`] to a courier or replica.
    Send {
        /// The peer.
        to: NodeId,
        /// The message's bytes.
        bytes: Vec<u8>,
    },
    /// Carry this out against the store and hand back the answer.
    Storage(StorageEffect),
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

/// What to do with a local read.
#[derive(Clone, Copy)]
enum AfterRead {
    /// Answer the holder read `request` from `to`.
    Answer { to: NodeId, request: u64 },
    /// Feed it to an intermediate operation.
    Op(u64),
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
    deadline: Micros,
    keep_until: Micros,
}

/// One Pigeonhole replica; see the module documentation.
pub struct Replica<K: Kem> {
    config: ReplicaConfig,
    replicas: Vec<NodeId>,
    keys: BTreeMap<u64, K::SecretKey>,
    current_epoch: u64,
    next_request: u64,
    next_op: u64,
    next_token: u64,
    ops: HashMap<u64, Op>,
    waiting: HashMap<u64, Waiter>,
    copies_in_flight: HashMap<(BoxId, NodeId), Micros>,
    pending_writes: Vec<(WriteOp, AfterWrite)>,
    writes_in_flight: HashMap<u64, Vec<(AfterWrite, BoxId)>>,
    /// Local reads at the store: what to do with the answer, the box, and
    /// until when a miss may wait (0: no wait).
    reads_in_flight: HashMap<u64, (AfterRead, BoxId, Micros)>,
    /// Reads parked until their box is written, with when they give up.
    waiting_reads: HashMap<BoxId, Vec<(AfterRead, Micros)>>,
    waiting_count: usize,
    backlog_loading: bool,
    /// Whether the replication queue may hold anything (so an idle replica
    /// does not read it every tick).
    may_owe: bool,
    copies_owed: Option<u64>,
    next_expiry: Micros,
    effects: Vec<ReplicaEffect>,
    counters: BTreeMap<&'static str, u64>,
}

impl<K: Kem> Replica<K> {
    /// A replica with no keys and no peers yet.
    pub fn new(config: ReplicaConfig) -> Self {
        Replica {
            config,
            replicas: Vec::new(),
            keys: BTreeMap::new(),
            current_epoch: 0,
            next_request: 0,
            next_op: 0,
            next_token: 0,
            ops: HashMap::new(),
            waiting: HashMap::new(),
            copies_in_flight: HashMap::new(),
            pending_writes: Vec::new(),
            writes_in_flight: HashMap::new(),
            reads_in_flight: HashMap::new(),
            waiting_reads: HashMap::new(),
            waiting_count: 0,
            backlog_loading: false,
            may_owe: true,
            copies_owed: None,
            next_expiry: 0,
            effects: Vec::new(),
            counters: BTreeMap::new(),
        }
    }

    /// The replicas of the network, as the current document lists them.
    pub fn set_replicas(&mut self, replicas: Vec<NodeId>) {
        self.replicas = replicas;
    }

    /// Adds the envelope key of `epoch`.
    pub fn add_epoch_key(&mut self, epoch: u64, key: K::SecretKey) {
        self.keys.insert(epoch, key);
    }

    /// Makes `epoch` current (its key is tried first) and forgets keys
    /// older than the one before it.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.current_epoch = epoch;
        self.keys.retain(|&e, _| e + 1 >= epoch);
    }

    /// Counters by name (envelopes, writes, repairs, copies, refusals).
    pub fn counters(&self) -> &BTreeMap<&'static str, u64> {
        &self.counters
    }

    /// Copies owed to other holders, as the store last said.
    pub fn copies_owed(&self) -> Option<u64> {
        self.copies_owed
    }

    /// Effects so far, oldest first; writes handled since the last call
    /// leave as one batch.
    pub fn take_effects(&mut self) -> Vec<ReplicaEffect> {
        if !self.pending_writes.is_empty() {
            let (ops, afters): (Vec<WriteOp>, Vec<(AfterWrite, BoxId)>) =
                std::mem::take(&mut self.pending_writes)
                    .into_iter()
                    .map(|(op, after)| {
                        let id = op.item.id;
                        (op, (after, id))
                    })
                    .unzip();
            self.next_token += 1;
            self.writes_in_flight.insert(self.next_token, afters);
            self.effects
                .push(ReplicaEffect::Storage(StorageEffect::Write {
                    token: self.next_token,
                    ops,
                }));
        }
        std::mem::take(&mut self.effects)
    }

    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_default() += 1;
    }

    fn send(&mut self, to: NodeId, message: StorageMessage) {
        self.effects.push(ReplicaEffect::Send {
            to,
            bytes: message.encode(),
        });
    }

    fn storage(&mut self, effect: StorageEffect) {
        self.effects.push(ReplicaEffect::Storage(effect));
    }

    /// Reads `box_id` from the store; with `wait_until` in the future, a
    /// miss parks the read until then.
    fn read(&mut self, box_id: BoxId, after: AfterRead, wait_until: Micros) {
        self.next_token += 1;
        self.reads_in_flight
            .insert(self.next_token, (after, box_id, wait_until));
        self.storage(StorageEffect::Read {
            token: self.next_token,
            box_id,
        });
    }

    /// Until when a read asking to wait `wait_ms` may wait (0: not at all).
    fn wait_until(&self, now: Micros, wait_ms: u32) -> Micros {
        match wait_ms {
            0 => 0,
            ms => now + (u64::from(ms) * 1_000).min(self.config.max_wait_us),
        }
    }

    /// The box was written here: the reads parked for it read it again.
    fn wake_waiting(&mut self, box_id: BoxId) {
        if let Some(parked) = self.waiting_reads.remove(&box_id) {
            self.waiting_count -= parked.len();
            for (after, until) in parked {
                self.read(box_id, after, until);
            }
        }
    }

    /// Answers a read with no box: the holder's reply, or the
    /// intermediate's own holder answer.
    fn answer_missing(&mut self, now: Micros, after: AfterRead) {
        match after {
            AfterRead::Answer { to, request } => {
                let reply = StorageMessage::ReadReply {
                    request,
                    code: ErrorCode::NotFound,
                    item: None,
                };
                self.send(to, reply);
            }
            AfterRead::Op(op) => {
                let own = self.config.own_id;
                self.holder_answered(now, op, own, ErrorCode::NotFound, None);
            }
        }
    }

    fn request_number(&mut self, waiter: Waiter) -> u64 {
        self.next_request += 1;
        self.waiting.insert(self.next_request, waiter);
        self.next_request
    }

    fn other_holders(&self, box_id: &BoxId) -> Vec<NodeId> {
        shard::holders(box_id, &self.replicas, self.config.holders_per_box)
            .into_iter()
            .filter(|h| *h != self.config.own_id)
            .collect()
    }

    /// A message from the courier or replica `from`. Bytes that do not
    /// parse are counted and dropped.
    pub fn handle(&mut self, now: Micros, from: NodeId, bytes: &[u8]) {
        match StorageMessage::decode(bytes) {
            Ok(message) => self.handle_message(now, from, message),
            Err(_) => self.count("malformed"),
        }
    }

    fn handle_message(&mut self, now: Micros, from: NodeId, message: StorageMessage) {
        let from_replica = self.replicas.contains(&from);
        match message {
            StorageMessage::Envelope(envelope) => self.envelope(now, from, envelope),
            StorageMessage::EnvelopeReply { .. } => self.count("unexpected_message"),
            // Holder traffic comes from replicas only: a courier or any
            // other peer with a link cannot write, read or confirm here.
            _ if !from_replica => self.count("not_from_a_replica"),
            StorageMessage::Write {
                request,
                item,
                replicate,
            } => {
                self.count("holder_writes");
                let Ok(item) = item.to_sealed() else {
                    let code = ErrorCode::Malformed;
                    self.send(from, StorageMessage::WriteReply { request, code });
                    return;
                };
                let replicate_to = if replicate {
                    self.other_holders(&item.id)
                } else {
                    Vec::new()
                };
                let op = WriteOp { item, replicate_to };
                self.pending_writes
                    .push((op, AfterWrite::Answer { to: from, request }));
            }
            StorageMessage::Read {
                request,
                box_id,
                wait_ms,
            } => {
                self.count("holder_reads");
                let wait_until = self.wait_until(now, wait_ms);
                let after = AfterRead::Answer { to: from, request };
                self.read(BoxId(box_id), after, wait_until);
            }
            StorageMessage::WriteReply { request, code } => match self.take_waiter(request, from) {
                Some(Waiter::Op { op, holder }) if holder == from => {
                    self.holder_answered(now, op, from, code, None)
                }
                Some(Waiter::Copy { box_id, holder }) if holder == from => {
                    self.copies_in_flight.remove(&(box_id, holder));
                    if matches!(code, ErrorCode::Ok | ErrorCode::Conflict) {
                        if code == ErrorCode::Conflict {
                            self.count("copies_conflicting");
                        }
                        self.count("copies_confirmed");
                        self.storage(StorageEffect::Replicated(vec![(box_id, holder)]));
                    }
                }
                _ => self.count("stray_replies"),
            },
            StorageMessage::ReadReply {
                request,
                code,
                item,
            } => match self.take_waiter(request, from) {
                Some(Waiter::Op { op, holder }) if holder == from => {
                    let item = item.and_then(|i| i.to_sealed().ok());
                    self.holder_answered(now, op, from, code, item)
                }
                _ => self.count("stray_replies"),
            },
            StorageMessage::Stored { box_id, holders } => {
                // Only about this box's holders, and only to one of them.
                let box_id = BoxId(box_id);
                let real = shard::holders(&box_id, &self.replicas, self.config.holders_per_box);
                if !real.contains(&self.config.own_id) {
                    self.count("stored_not_a_holder");
                    return;
                }
                let done: Vec<(BoxId, NodeId)> = holders
                    .into_iter()
                    .map(NodeId)
                    .filter(|h| real.contains(h))
                    .map(|h| (box_id, h))
                    .collect();
                if !done.is_empty() {
                    self.storage(StorageEffect::Replicated(done));
                }
            }
        }
    }

    /// The waiter for `request` if `from` is the peer it waits on; a reply
    /// from anyone else leaves it waiting (and is counted as stray).
    fn take_waiter(&mut self, request: u64, from: NodeId) -> Option<Waiter> {
        let holder = match self.waiting.get(&request)? {
            Waiter::Op { holder, .. } | Waiter::Copy { holder, .. } => *holder,
        };
        if holder != from {
            return None;
        }
        self.waiting.remove(&request)
    }

    /// The store's answer to one of this replica's storage effects.
    pub fn answer(&mut self, now: Micros, answer: StorageAnswer) {
        if answer.error().is_some() {
            self.count("storage_errors");
        }
        match answer {
            StorageAnswer::Written { token, outcomes } => {
                let Some(afters) = self.writes_in_flight.remove(&token) else {
                    return;
                };
                let outcomes = outcomes.unwrap_or_else(|_| {
                    vec![Written::Refused(ErrorCode::StorageFailure); afters.len()]
                });
                for ((after, box_id), written) in afters.into_iter().zip(outcomes) {
                    self.may_owe |= written == Written::Stored;
                    if matches!(written, Written::Stored | Written::Unchanged) {
                        self.wake_waiting(box_id);
                    }
                    self.count(match written {
                        Written::Stored => "writes_stored",
                        Written::Unchanged => "writes_unchanged",
                        Written::Refused(_) => "writes_refused",
                    });
                    let code = written.code();
                    match after {
                        AfterWrite::Answer { to, request } => {
                            self.send(to, StorageMessage::WriteReply { request, code })
                        }
                        AfterWrite::Op(op) => {
                            let own = self.config.own_id;
                            self.holder_answered(now, op, own, code, None);
                        }
                        AfterWrite::Nothing => {}
                    }
                }
            }
            StorageAnswer::Read { token, result } => {
                let Some((after, read_box_id, wait_until)) = self.reads_in_flight.remove(&token)
                else {
                    return;
                };
                if matches!(result, Ok(None))
                    && wait_until > now
                    && self.waiting_count < self.config.max_waiting_reads
                {
                    self.count("reads_parked");
                    self.waiting_count += 1;
                    self.waiting_reads
                        .entry(read_box_id)
                        .or_default()
                        .push((after, wait_until));
                    return;
                }
                let (code, item) = match result {
                    Ok(Some(item)) => (ErrorCode::Ok, Some(item)),
                    Ok(None) => (ErrorCode::NotFound, None),
                    Err(_) => (ErrorCode::StorageFailure, None),
                };
                match after {
                    AfterRead::Answer { to, request } => {
                        let item = item.as_ref().map(WireBox::from);
                        let reply = StorageMessage::ReadReply {
                            request,
                            code,
                            item,
                        };
                        self.send(to, reply);
                    }
                    AfterRead::Op(op) => {
                        let own = self.config.own_id;
                        self.holder_answered(now, op, own, code, item);
                    }
                }
            }
            StorageAnswer::Backlog(result) => {
                self.backlog_loading = false;
                if let Ok((backlog, owed)) = result {
                    self.copies_owed = Some(owed);
                    self.may_owe = owed > 0;
                    self.send_copies(now, backlog);
                }
            }
            StorageAnswer::Expired(Ok(n)) => {
                *self.counters.entry("boxes_expired").or_default() += n as u64
            }
            StorageAnswer::Replicated(_) | StorageAnswer::Expired(_) => {}
        }
    }

    fn send_copies(&mut self, now: Micros, backlog: Vec<(SealedBox, NodeId)>) {
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
            let message = StorageMessage::Write {
                request,
                item: WireBox::from(&item),
                replicate: false,
            };
            self.send(holder, message);
        }
    }

    /// A client's envelope slot, from a courier.
    fn envelope(&mut self, now: Micros, courier: NodeId, envelope: ReplicaEnvelope) {
        self.count("envelopes");
        let current = self.current_epoch;
        let mut keys: Vec<(&u64, &K::SecretKey)> = self.keys.iter().collect();
        keys.sort_by_key(|(e, _)| (**e != current, std::cmp::Reverse(**e)));
        let keys: Vec<&K::SecretKey> = keys.into_iter().map(|(_, k)| k).collect();
        let (hash, slot) = (envelope.hash, envelope.slot);
        let opened = envelope.open::<K>(&self.config.sizes, &self.config.own_id, &keys);
        let (request, reply_key) = match opened {
            Ok(opened) => opened,
            Err(code) => {
                self.count("envelopes_refused");
                let reply = StorageMessage::EnvelopeReply {
                    hash,
                    slot,
                    code,
                    sealed: Vec::new(),
                };
                self.send(courier, reply);
                return;
            }
        };
        let (box_id, write, wait_ms) = match request {
            Request::Read(id) => (id, None, 0),
            Request::Await { id, wait_ms } => (id, None, wait_ms),
            Request::Write(item) => (item.id, Some(item), 0),
        };
        // A waiting read's holders may answer as late as the wait.
        let wait_until = self.wait_until(now, wait_ms);
        let waited = wait_until.saturating_sub(now);
        let holders = shard::holders(&box_id, &self.replicas, self.config.holders_per_box);
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
            deadline: now + self.config.holder_timeout_us + waited,
            keep_until: now + self.config.repair_window_us + waited,
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
                let message = self.sealed_reply(&op, &reply);
                self.send(courier, message);
                return;
            }
        }
        self.ops.insert(op_id, op);
        for holder in holders {
            if holder == self.config.own_id {
                match &write {
                    Some(item) => {
                        let replicate_to = self.other_holders(&item.id);
                        let op = WriteOp {
                            item: item.clone(),
                            replicate_to,
                        };
                        self.pending_writes.push((op, AfterWrite::Op(op_id)));
                    }
                    None => self.read(box_id, AfterRead::Op(op_id), wait_until),
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
                    wait_ms,
                },
            };
            self.send(holder, message);
        }
    }

    fn sealed_reply(&self, op: &Op, reply: &ReplicaReply) -> StorageMessage {
        StorageMessage::EnvelopeReply {
            hash: op.hash,
            slot: op.slot,
            code: ErrorCode::Ok,
            sealed: op.reply_key.seal(&self.config.sizes, reply),
        }
    }

    fn reply(&mut self, op: &Op, reply: &ReplicaReply) {
        let message = self.sealed_reply(op, reply);
        self.send(op.courier, message);
    }

    /// One holder's answer to an intermediate operation.
    fn holder_answered(
        &mut self,
        _now: Micros,
        op_id: u64,
        holder: NodeId,
        code: ErrorCode,
        item: Option<SealedBox>,
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
                            self.repair(lacking, &found);
                        }
                        if !op.replied {
                            op.replied = true;
                            let reply = ReplicaReply {
                                code: ErrorCode::Ok,
                                found: Some(found.clone()),
                            };
                            self.reply(&op, &reply);
                        }
                        op.found = Some(found);
                    }
                    (ErrorCode::NotFound, _) => match &op.found {
                        Some(found) => {
                            let found = found.clone();
                            self.repair(holder, &found);
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
                            self.reply(&op, &ReplicaReply { code, found: None });
                        }
                    }
                    code => op.failures.push(code),
                }
                if op.stored.len() == op.holders.len() {
                    // Every holder has it: the copies they owe each other
                    // are not needed.
                    self.all_stored(&op);
                }
            }
        }
        if op.answered.len() < op.holders.len() {
            self.ops.insert(op_id, op);
        } else {
            self.finish(&mut op);
        }
    }

    /// Tells every holder of a box that all of them have it, so none owes
    /// the others a copy.
    fn all_stored(&mut self, op: &Op) {
        let Some(box_id) = op.write else {
            return;
        };
        let holders: Vec<[u8; 32]> = op.stored.iter().map(|h| h.0).collect();
        for holder in &op.stored {
            if *holder == self.config.own_id {
                let done = op.stored.iter().map(|h| (box_id, *h)).collect();
                self.storage(StorageEffect::Replicated(done));
            } else {
                let message = StorageMessage::Stored {
                    box_id: box_id.0,
                    holders: holders.clone(),
                };
                self.send(*holder, message);
            }
        }
    }

    /// Answers an operation whose holders all answered or timed out.
    fn finish(&mut self, op: &mut Op) {
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
        self.reply(op, &ReplicaReply { code, found: None });
    }

    /// Sends `item` to a holder that lacks it (read-repair).
    fn repair(&mut self, holder: NodeId, item: &SealedBox) {
        self.count("read_repairs");
        if holder == self.config.own_id {
            let op = WriteOp {
                item: item.clone(),
                replicate_to: Vec::new(),
            };
            self.pending_writes.push((op, AfterWrite::Nothing));
            return;
        }
        // Nobody waits for the answer: a failed repair is retried by the
        // next read.
        self.next_request += 1;
        let message = StorageMessage::Write {
            request: self.next_request,
            item: WireBox::from(item),
            replicate: false,
        };
        self.send(holder, message);
    }

    /// Timeouts, the replication queue, the expiry sweep. Call it every few
    /// tens of milliseconds.
    pub fn tick(&mut self, now: Micros) {
        if self.waiting_count > 0 {
            let mut over = Vec::new();
            self.waiting_reads.retain(|box_id, parked| {
                let mut position = 0;
                parked.retain(|&(after, until)| {
                    position += 1;
                    let keep = until > now;
                    if !keep {
                        over.push((until, box_id.0, position, after));
                    }
                    keep
                });
                !parked.is_empty()
            });
            // In the order they gave up, not the map's.
            over.sort_by_key(|&(until, box_id, position, _)| (until, box_id, position));
            self.waiting_count -= over.len();
            for (_, _, _, after) in over {
                self.count("waits_over");
                self.answer_missing(now, after);
            }
        }
        let expired: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| op.deadline <= now && !op.replied || op.keep_until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(mut op) = self.ops.remove(&id) {
                self.finish(&mut op);
                // A read that found its box stays a while to repair late
                // answers.
                if op.found.is_some() && op.keep_until > now {
                    self.ops.insert(id, op);
                }
            }
        }
        let resend = self.config.resend_copy_us;
        let in_flight = &self.copies_in_flight;
        let ops = &self.ops;
        self.waiting.retain(|_, w| match w {
            Waiter::Op { op, .. } => ops.contains_key(op),
            Waiter::Copy { box_id, holder } => in_flight
                .get(&(*box_id, *holder))
                .is_some_and(|sent| now.saturating_sub(*sent) < resend),
        });
        self.copies_in_flight
            .retain(|_, sent| now.saturating_sub(*sent) < resend);
        if self.may_owe && !self.backlog_loading {
            self.backlog_loading = true;
            self.storage(StorageEffect::LoadBacklog {
                limit: self.config.copies_per_tick,
                min_age_ms: self.config.copy_after_ms,
            });
        }
        if now >= self.next_expiry {
            self.next_expiry = now + self.config.expiry_every_us;
            self.storage(StorageEffect::Expire);
        }
    }
}
