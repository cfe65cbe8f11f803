//! The courier: the service on service nodes that stands between clients
//! and replicas. It takes a client's envelope (with the SURB to answer
//! through), forwards each intermediate its slot once however often the
//! client resends (de-duplication by envelope hash), and answers through
//! the SURB as soon as a replica replies, or with an ACK once it has held
//! the SURB for `hold_us`; the client then polls with the same envelope and
//! gets the cached reply. A request to the waiting service
//! ([`crate::client::COURIER_WAIT_SERVICE`], for reads that wait for their
//! box) has its SURB held for `wait_hold_us` instead.

use std::collections::{BTreeSet, HashMap};

use funion_sphinx::NodeId;

use crate::envelope::{courier_reply, CourierEnvelope, Sizes, SLOTS};
use crate::wire::{ReplicaEnvelope, StorageMessage};
use crate::{ErrorCode, Micros};

/// How a courier behaves.
#[derive(Clone, Debug)]
pub struct CourierConfig {
    /// Longest a SURB is held waiting for a replica before an ACK goes back.
    pub hold_us: Micros,
    /// The same, for requests to the waiting service: the replicas' longest
    /// wait for a box and their time to answer.
    pub wait_hold_us: Micros,
    /// Forward an envelope again when no replica answered within this long.
    pub forward_again_us: Micros,
    /// How long an envelope and its replies are remembered after last use.
    pub cache_us: Micros,
    /// Most envelopes remembered at once; more are refused as unavailable.
    pub max_entries: usize,
}

impl Default for CourierConfig {
    fn default() -> Self {
        CourierConfig {
            hold_us: 2_000_000,
            wait_hold_us: 34_000_000,
            forward_again_us: 10_000_000,
            cache_us: 300_000_000,
            // An entry holds up to two envelope slots and two sealed
            // replies, each about a box long (≈ 23 kB at the defaults).
            max_entries: 4_096,
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CourierOutput {
    /// Send this encoded [`StorageMessage`] to a replica.
    ToReplica {
        /// The replica.
        replica: NodeId,
        /// The message.
        message: Vec<u8>,
    },
    /// Answer through this SURB with this message.
    Reply {
        /// The client's SURB.
        surb: Vec<u8>,
        /// The reply ([`Sizes::reply_len`] bytes).
        message: Vec<u8>,
    },
}

/// Counts, for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CourierCounters {
    /// Envelopes received (resends included).
    pub envelopes: u64,
    /// Resends answered from the cache or joined to a pending envelope.
    pub duplicates: u64,
    /// Envelope slots forwarded to replicas.
    pub forwarded: u64,
    /// Replies from replicas.
    pub replica_replies: u64,
    /// Answers sent with a replica's reply.
    pub answered: u64,
    /// ACKs sent because no reply came within the hold time.
    pub acks: u64,
    /// Envelopes refused (wrong size, unknown replica, full).
    pub refused: u64,
    /// Messages from replicas that matched nothing.
    pub stray: u64,
}

struct Held {
    surb: Vec<u8>,
    until: Micros,
}

struct Entry {
    intermediates: [NodeId; SLOTS],
    envelopes: [ReplicaEnvelope; SLOTS],
    replies: [Option<(ErrorCode, Vec<u8>)>; SLOTS],
    held: Vec<Held>,
    forwarded_at: Micros,
    used_at: Micros,
}

/// The courier's state.
pub struct Courier {
    sizes: Sizes,
    config: CourierConfig,
    entries: HashMap<[u8; 32], Entry>,
    deadlines: BTreeSet<(Micros, [u8; 32])>,
    next_sweep: Micros,
    counters: CourierCounters,
}

impl Courier {
    /// A courier for envelopes of `sizes`.
    pub fn new(sizes: Sizes, config: CourierConfig) -> Self {
        Courier {
            sizes,
            config,
            entries: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_sweep: 0,
            counters: CourierCounters::default(),
        }
    }

    /// Counters for the metrics.
    pub fn counters(&self) -> &CourierCounters {
        &self.counters
    }

    /// Envelopes remembered now.
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// The earliest time [`Courier::poll`] has something to do.
    pub fn next_deadline(&self) -> Option<Micros> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    fn refuse(&mut self, surb: Vec<u8>, hash: [u8; 32], code: ErrorCode) -> Vec<CourierOutput> {
        self.counters.refused += 1;
        let message = courier_reply(&self.sizes, &hash, 0, code, None);
        vec![CourierOutput::Reply { surb, message }]
    }

    /// Takes a client's envelope and the SURB to answer through.
    /// `is_replica` says whether a node ID is a replica of the network.
    pub fn handle_request(
        &mut self,
        now: Micros,
        surb: Vec<u8>,
        body: &[u8],
        is_replica: impl Fn(&NodeId) -> bool,
    ) -> Vec<CourierOutput> {
        let hold = self.config.hold_us;
        self.take_envelope(now, surb, body, hold, is_replica)
    }

    /// Like [`Courier::handle_request`], for the waiting service: the SURB
    /// is held for `wait_hold_us`, long enough for a read that waits.
    pub fn handle_waiting_request(
        &mut self,
        now: Micros,
        surb: Vec<u8>,
        body: &[u8],
        is_replica: impl Fn(&NodeId) -> bool,
    ) -> Vec<CourierOutput> {
        let hold = self.config.wait_hold_us;
        self.take_envelope(now, surb, body, hold, is_replica)
    }

    fn take_envelope(
        &mut self,
        now: Micros,
        surb: Vec<u8>,
        body: &[u8],
        hold_us: Micros,
        is_replica: impl Fn(&NodeId) -> bool,
    ) -> Vec<CourierOutput> {
        self.counters.envelopes += 1;
        let envelope = match CourierEnvelope::parse(&self.sizes, body) {
            Ok(envelope) => envelope,
            Err(code) => return self.refuse(surb, [0; 32], code),
        };
        let hash = envelope.hash();
        let reply_index = envelope.reply_index();
        let sizes = self.sizes;
        if let Some(entry) = self.entries.get_mut(&hash) {
            self.counters.duplicates += 1;
            entry.used_at = now;
            let preferred = usize::from(reply_index);
            let answer = [preferred, 1 - preferred]
                .into_iter()
                .find_map(|slot| entry.replies[slot].as_ref().map(|r| (slot, r)));
            if let Some((slot, (code, sealed))) = answer {
                self.counters.answered += 1;
                let message = answer_message(&sizes, &hash, slot as u8, *code, sealed);
                return vec![CourierOutput::Reply { surb, message }];
            }
            let until = now + hold_us;
            entry.held.push(Held { surb, until });
            self.deadlines.insert((until, hash));
            if now >= entry.forwarded_at + self.config.forward_again_us {
                entry.forwarded_at = now;
                self.counters.forwarded += SLOTS as u64;
                return forward(entry);
            }
            return Vec::new();
        }
        let intermediates = envelope.intermediates();
        if !intermediates.iter().all(&is_replica) || intermediates[0] == intermediates[1] {
            return self.refuse(surb, hash, ErrorCode::UnknownReplica);
        }
        if self.entries.len() >= self.config.max_entries {
            self.sweep(now);
            if self.entries.len() >= self.config.max_entries {
                return self.refuse(surb, hash, ErrorCode::Unavailable);
            }
        }
        let until = now + hold_us;
        let entry = Entry {
            intermediates,
            envelopes: [envelope.for_replica(0), envelope.for_replica(1)],
            replies: [None, None],
            held: vec![Held { surb, until }],
            forwarded_at: now,
            used_at: now,
        };
        self.deadlines.insert((until, hash));
        self.counters.forwarded += SLOTS as u64;
        let outputs = forward(&entry);
        self.entries.insert(hash, entry);
        outputs
    }

    /// Takes a message from replica `from`.
    pub fn handle_replica_message(
        &mut self,
        now: Micros,
        from: NodeId,
        bytes: &[u8],
    ) -> Vec<CourierOutput> {
        let Ok(StorageMessage::EnvelopeReply {
            hash,
            slot,
            code,
            sealed,
        }) = StorageMessage::decode(bytes)
        else {
            self.counters.stray += 1;
            return Vec::new();
        };
        let sizes = self.sizes;
        let Some(entry) = self.entries.get_mut(&hash) else {
            self.counters.stray += 1;
            return Vec::new();
        };
        let index = usize::from(slot);
        let well_formed = match code {
            ErrorCode::Ok => sealed.len() == sizes.sealed_reply_len(),
            _ => sealed.is_empty(),
        };
        if index >= SLOTS || entry.intermediates[index] != from || !well_formed {
            self.counters.stray += 1;
            return Vec::new();
        }
        self.counters.replica_replies += 1;
        entry.used_at = now;
        let message = answer_message(&sizes, &hash, slot, code, &sealed);
        entry.replies[index] = Some((code, sealed));
        let mut outputs = Vec::new();
        for held in entry.held.drain(..) {
            self.deadlines.remove(&(held.until, hash));
            self.counters.answered += 1;
            outputs.push(CourierOutput::Reply {
                surb: held.surb,
                message: message.clone(),
            });
        }
        outputs
    }

    /// ACKs every SURB held past its time, and forgets old envelopes.
    pub fn poll(&mut self, now: Micros) -> Vec<CourierOutput> {
        let mut outputs = Vec::new();
        while let Some(&(until, hash)) = self.deadlines.first() {
            if until > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(entry) = self.entries.get_mut(&hash) else {
                continue;
            };
            let (due, keep): (Vec<Held>, Vec<Held>) =
                entry.held.drain(..).partition(|h| h.until <= now);
            entry.held = keep;
            for held in due {
                self.counters.acks += 1;
                outputs.push(CourierOutput::Reply {
                    surb: held.surb,
                    message: courier_reply(&self.sizes, &hash, 0, ErrorCode::Ok, None),
                });
            }
        }
        if now >= self.next_sweep {
            self.sweep(now);
        }
        outputs
    }

    fn sweep(&mut self, now: Micros) {
        let cache = self.config.cache_us;
        self.entries
            .retain(|_, e| !e.held.is_empty() || e.used_at + cache > now);
        self.next_sweep = now + 1_000_000;
    }
}

fn forward(entry: &Entry) -> Vec<CourierOutput> {
    entry
        .envelopes
        .iter()
        .zip(entry.intermediates)
        .map(|(envelope, replica)| CourierOutput::ToReplica {
            replica,
            message: StorageMessage::Envelope(envelope.clone()).encode(),
        })
        .collect()
}

fn answer_message(
    sizes: &Sizes,
    hash: &[u8; 32],
    slot: u8,
    code: ErrorCode,
    sealed: &[u8],
) -> Vec<u8> {
    match code {
        ErrorCode::Ok => courier_reply(sizes, hash, slot, code, Some(sealed)),
        refused => courier_reply(sizes, hash, slot, refused, None),
    }
}
