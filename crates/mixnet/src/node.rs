//! One node of the mix network: unwraps a Sphinx layer, refuses replays,
//! holds each packet until its sender-chosen delay is due, then forwards it,
//! delivers it to a service, or queues a reply for a client.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use funion_pki::Role;
use funion_sphinx::kem::Kem;
use funion_sphinx::{
    Action, Error as SphinxError, Geometry, NodeId, ReplayTag, SphinxNode, Surb, RECIPIENT_LEN,
    SURB_ID_LEN,
};

use crate::timers::TimerQueue;
use crate::topology::service_recipient;
use crate::Micros;

/// Where a packet came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Another node, over an authenticated link.
    Peer(NodeId),
    /// A client connection to this gateway (the runtime's connection number).
    Client(u64),
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Make this replay tag durable (it survives a restart) before sending
    /// any packet handed out later.
    PersistReplayTag {
        /// The key epoch the tag belongs to.
        epoch: u64,
        /// The tag.
        tag: ReplayTag,
    },
    /// Send `packet` to node `to` now.
    Send {
        /// The next node.
        to: NodeId,
        /// The packet.
        packet: Vec<u8>,
    },
    /// A message for a service the driver runs (see
    /// [`NodeConfig::external_services`]): the SURB to answer through and
    /// the body.
    Deliver {
        /// The service.
        recipient: [u8; RECIPIENT_LEN],
        /// The SURB the answer goes back through.
        surb: Vec<u8>,
        /// The request.
        body: Vec<u8>,
    },
    /// A reply is waiting in this client's queue ([`Node::take_replies`]).
    ReplyQueued {
        /// The client's queue.
        recipient: [u8; RECIPIENT_LEN],
    },
}

/// A SURB reply waiting at a gateway for its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Which SURB it answers.
    pub surb_id: [u8; SURB_ID_LEN],
    /// The payload, still under the SURB's layers.
    pub payload: Vec<u8>,
}

/// Why a packet was dropped, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Not one packet long.
    WrongLength,
    /// Unknown version field.
    Version,
    /// KEM ciphertext refused, or no key of this node opens it.
    Decapsulation,
    /// Header MAC failed under every active key.
    HeaderMac,
    /// Seen before in this key epoch.
    Replay,
    /// Routing commands that make no sense here.
    InvalidCommand,
    /// The end-to-end payload tag failed.
    PayloadTampered,
    /// The delay queue is full.
    QueueFull,
    /// A client sent faster than its rate limit.
    RateLimited,
    /// Delivery to a service this node does not run.
    NoSuchService,
    /// A service message that does not parse.
    BadServiceMessage,
    /// A command this role does not carry out.
    WrongRole,
    /// A client's reply queue is full.
    ReplyQueueFull,
    /// Waited longer than [`NodeConfig::max_wait_us`] before the node could
    /// open it: the node is behind, and shedding the oldest work, cheaply,
    /// before any cryptography, is how it catches up.
    Overloaded,
    /// A reply waited in a client's queue longer than
    /// [`NodeConfig::reply_ttl_us`]: nobody came for it.
    ReplyExpired,
}

impl DropReason {
    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::WrongLength => "wrong_length",
            DropReason::Version => "version",
            DropReason::Decapsulation => "decapsulation",
            DropReason::HeaderMac => "header_mac",
            DropReason::Replay => "replay",
            DropReason::InvalidCommand => "invalid_command",
            DropReason::PayloadTampered => "payload_tampered",
            DropReason::QueueFull => "queue_full",
            DropReason::RateLimited => "rate_limited",
            DropReason::NoSuchService => "no_such_service",
            DropReason::BadServiceMessage => "bad_service_message",
            DropReason::WrongRole => "wrong_role",
            DropReason::ReplyQueueFull => "reply_queue_full",
            DropReason::Overloaded => "overloaded",
            DropReason::ReplyExpired => "reply_expired",
        }
    }

    fn from_sphinx(error: &SphinxError) -> Self {
        match error {
            SphinxError::WrongLength { .. } => DropReason::WrongLength,
            SphinxError::UnknownVersion => DropReason::Version,
            SphinxError::Decapsulation => DropReason::Decapsulation,
            SphinxError::HeaderMac => DropReason::HeaderMac,
            SphinxError::Replay => DropReason::Replay,
            SphinxError::PayloadTampered => DropReason::PayloadTampered,
            _ => DropReason::InvalidCommand,
        }
    }
}

/// Packet counts, for the metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets received.
    pub received: u64,
    /// Packets sent on to another node.
    pub sent: u64,
    /// Messages handed to services.
    pub delivered: u64,
    /// Replies queued for clients.
    pub replies_queued: u64,
    /// Packets dropped, by reason.
    pub dropped: BTreeMap<DropReason, u64>,
}

/// How a node behaves.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Its role.
    pub role: Role,
    /// Most packets held in the delay queue at once.
    pub max_queue: usize,
    /// Most bytes of packets held in the delay queue at once (with
    /// `max_queue`, whichever binds first).
    pub max_queue_bytes: usize,
    /// Most replies kept for one client.
    pub max_replies_per_client: usize,
    /// Most replies kept for all clients together.
    pub max_replies: usize,
    /// How long a reply waits in a client's queue for the client to come
    /// back before it is dropped ([`DropReason::ReplyExpired`]).
    pub reply_ttl_us: Micros,
    /// A packet that waited longer than this between arriving and being
    /// handed to the node is dropped unopened ([`DropReason::Overloaded`]).
    pub max_wait_us: Micros,
    /// Packets per second each client may send (gateway).
    pub client_rate: f64,
    /// Burst a client may send at once (gateway).
    pub client_burst: f64,
    /// Services (by recipient field) the driver runs itself, beside the
    /// built-in echo: their messages come out as [`Output::Deliver`].
    pub external_services: Vec<[u8; RECIPIENT_LEN]>,
}

impl NodeConfig {
    /// Sensible limits for a role, given the network's client send rate.
    pub fn for_role(role: Role, send_rate: f64) -> Self {
        NodeConfig {
            role,
            max_queue: 100_000,
            max_queue_bytes: 256 << 20,
            max_replies_per_client: 1_024,
            max_replies: 8_192,
            reply_ttl_us: 600_000_000,
            max_wait_us: Micros::MAX,
            client_rate: send_rate * 2.0,
            client_burst: (send_rate * 2.0).max(20.0),
            external_services: Vec::new(),
        }
    }
}

enum Due {
    Send {
        to: NodeId,
        packet: Vec<u8>,
    },
    Deliver {
        recipient: [u8; RECIPIENT_LEN],
        message: Vec<u8>,
    },
    Reply {
        recipient: [u8; RECIPIENT_LEN],
        reply: Reply,
    },
}

struct EpochKeys<K: Kem> {
    sphinx: SphinxNode<K>,
    seen: SeenTags,
}

/// The replay tags seen under one key, each kept by its first 8 bytes. A
/// tag is a hash of the packet's shared secret, so its prefix is uniform
/// and no sender can aim one at another sender's (which it cannot know):
/// a fresh packet is refused as a replay with probability n / 2^64 after
/// n packets. The prefix is its own hash, so a lookup costs one probe and
/// no hashing, and the set holds 8 bytes a tag instead of 32.
type SeenTags = HashSet<u64, BuildHasherDefault<PrefixHasher>>;

/// Hashes a tag prefix to itself.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The key a tag is kept under in [`SeenTags`].
fn tag_prefix(tag: &ReplayTag) -> u64 {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&tag.0[..8]);
    u64::from_le_bytes(prefix)
}

struct Bucket {
    tokens: f64,
    at: Micros,
}

/// A gateway, mix or service node.
pub struct Node<K: Kem> {
    config: NodeConfig,
    geometry: Geometry,
    keys: BTreeMap<u64, EpochKeys<K>>,
    current_epoch: u64,
    queue: TimerQueue<Due>,
    /// Replies waiting for their clients, each with when it was queued.
    replies: HashMap<[u8; RECIPIENT_LEN], VecDeque<(Micros, Reply)>>,
    replies_held: usize,
    /// When the reply queues are next swept for expired replies.
    next_reply_sweep: Micros,
    queue_limit: usize,
    buckets: HashMap<u64, Bucket>,
    counters: Counters,
}

impl<K: Kem> Node<K> {
    /// A node with no keys yet.
    pub fn new(config: NodeConfig, geometry: Geometry) -> Self {
        let queue_limit = config
            .max_queue
            .min(config.max_queue_bytes / geometry.packet_len().max(1))
            .max(1);
        Node {
            config,
            geometry,
            keys: BTreeMap::new(),
            current_epoch: 0,
            queue: TimerQueue::default(),
            replies: HashMap::new(),
            replies_held: 0,
            next_reply_sweep: 0,
            queue_limit,
            buckets: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// Accepts packets under `secret` for `epoch`, remembering the replay
    /// tags already seen under it (restored from storage after a restart).
    pub fn add_epoch_key(
        &mut self,
        epoch: u64,
        secret: K::SecretKey,
        seen: impl IntoIterator<Item = ReplayTag>,
    ) -> Result<(), SphinxError> {
        let sphinx = SphinxNode::new(self.geometry, secret)?;
        self.keys.insert(
            epoch,
            EpochKeys {
                sphinx,
                seen: seen.into_iter().map(|tag| tag_prefix(&tag)).collect(),
            },
        );
        Ok(())
    }

    /// Says which key epoch is current: its key is tried first, the others
    /// (the previous one in its grace period, the next one early) after.
    pub fn set_current_epoch(&mut self, epoch: u64) {
        self.current_epoch = epoch;
    }

    /// Stops accepting packets for `epoch` and forgets its replay tags.
    pub fn retire_epoch(&mut self, epoch: u64) {
        self.keys.remove(&epoch);
    }

    /// The key epochs accepted now.
    pub fn epochs(&self) -> Vec<u64> {
        self.keys.keys().copied().collect()
    }

    /// The packet geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Counters for the metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Packets waiting for their delay.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Most packets the delay queue holds (from `max_queue` and
    /// `max_queue_bytes`).
    pub fn queue_limit(&self) -> usize {
        self.queue_limit
    }

    /// Replies waiting for their clients, all clients together.
    pub fn replies_held(&self) -> usize {
        self.replies_held
    }

    /// The earliest time [`Node::poll`] has something to do.
    pub fn next_deadline(&self) -> Option<Micros> {
        self.queue.next_time()
    }

    /// Removes and returns the replies waiting for a client.
    pub fn take_replies(&mut self, recipient: &[u8; RECIPIENT_LEN]) -> Vec<Reply> {
        let taken: Vec<Reply> = self
            .replies
            .remove(recipient)
            .map(|queue| queue.into_iter().map(|(_, reply)| reply).collect())
            .unwrap_or_default();
        self.replies_held -= taken.len();
        taken
    }

    /// Drops the replies older than [`NodeConfig::reply_ttl_us`]; runs
    /// from [`Node::poll`] at most once a second.
    fn expire_replies(&mut self, now: Micros) {
        self.next_reply_sweep = now.saturating_add(1_000_000);
        let Some(cutoff) = now.checked_sub(self.config.reply_ttl_us) else {
            return;
        };
        let mut expired = 0u64;
        self.replies.retain(|_, queue| {
            while queue.front().is_some_and(|(queued, _)| *queued <= cutoff) {
                queue.pop_front();
                expired += 1;
            }
            !queue.is_empty()
        });
        if expired > 0 {
            self.replies_held -= expired as usize;
            *self
                .counters
                .dropped
                .entry(DropReason::ReplyExpired)
                .or_default() += expired;
        }
    }

    /// Drops the replies waiting for a queue nobody is subscribed to (its
    /// client went away), counting each as [`DropReason::ReplyQueueFull`].
    pub fn drop_replies(&mut self, recipient: &[u8; RECIPIENT_LEN]) {
        let dropped = self.take_replies(recipient).len() as u64;
        if dropped > 0 {
            *self
                .counters
                .dropped
                .entry(DropReason::ReplyQueueFull)
                .or_default() += dropped;
        }
    }

    fn drop_packet(&mut self, reason: DropReason) {
        *self.counters.dropped.entry(reason).or_default() += 1;
    }

    fn schedule(&mut self, due: Micros, what: Due) -> bool {
        if self.queue.len() >= self.queue_limit {
            self.drop_packet(DropReason::QueueFull);
            return false;
        }
        self.queue.push(due, what);
        true
    }

    fn admit_client(&mut self, now: Micros, client: u64) -> bool {
        let (rate, burst) = (self.config.client_rate, self.config.client_burst);
        let bucket = self.buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_sub(bucket.at) as f64 / 1e6;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets a client's rate-limit state when its connection closes.
    pub fn client_gone(&mut self, client: u64) {
        self.buckets.remove(&client);
    }

    /// Takes in one packet as it arrives: checks, unwraps and schedules it.
    pub fn handle_packet(&mut self, now: Micros, source: Source, packet: Vec<u8>) -> Vec<Output> {
        self.handle_packet_received(now, now, source, packet)
    }

    /// Takes in one packet that arrived at `received` and waited until `now`
    /// to be handled (in the driver's queues). One that waited longer than
    /// [`NodeConfig::max_wait_us`] is dropped before any cryptography: under
    /// overload the node sheds its oldest work first, and its queue stays
    /// short instead of growing without bound.
    pub fn handle_packet_received(
        &mut self,
        now: Micros,
        received: Micros,
        source: Source,
        mut packet: Vec<u8>,
    ) -> Vec<Output> {
        self.counters.received += 1;
        if now.saturating_sub(received) > self.config.max_wait_us {
            self.drop_packet(DropReason::Overloaded);
            return Vec::new();
        }
        if let Source::Client(client) = source {
            if self.config.role != Role::Gateway {
                self.drop_packet(DropReason::WrongRole);
                return Vec::new();
            }
            if !self.admit_client(now, client) {
                self.drop_packet(DropReason::RateLimited);
                return Vec::new();
            }
        }
        // The current epoch's key first (almost every packet is for it),
        // then the others: the previous one in its grace period, the next.
        let current = self.current_epoch;
        let mut last_error = SphinxError::Decapsulation;
        let mut opened = None;
        let mut order: Vec<(&u64, &mut EpochKeys<K>)> = self.keys.iter_mut().collect();
        order.sort_by_key(|(&epoch, _)| (epoch != current, Reverse(epoch)));
        for (&epoch, keys) in order {
            let seen = &mut keys.seen;
            match keys
                .sphinx
                .unwrap(&mut packet, |tag| !seen.insert(tag_prefix(tag)))
            {
                Ok(unwrapped) => {
                    opened = Some((epoch, unwrapped));
                    break;
                }
                Err(e @ (SphinxError::Decapsulation | SphinxError::HeaderMac)) => last_error = e,
                Err(e) => {
                    last_error = e;
                    break;
                }
            }
        }
        let Some((epoch, unwrapped)) = opened else {
            self.drop_packet(DropReason::from_sphinx(&last_error));
            return Vec::new();
        };
        let mut outputs = vec![Output::PersistReplayTag {
            epoch,
            tag: unwrapped.replay_tag,
        }];
        let role = self.config.role;
        match unwrapped.action {
            Action::Forward { next_hop, delay_us } => {
                let due = now + Micros::from(delay_us);
                self.schedule(
                    due,
                    Due::Send {
                        to: next_hop,
                        packet,
                    },
                );
            }
            Action::Deliver {
                recipient,
                delay_us,
                message,
            } if role == Role::Service => {
                self.schedule(
                    now + Micros::from(delay_us),
                    Due::Deliver { recipient, message },
                );
            }
            Action::SurbReply {
                recipient,
                surb_id,
                delay_us,
                payload,
            } if role == Role::Gateway => {
                let reply = Reply { surb_id, payload };
                self.schedule(
                    now + Micros::from(delay_us),
                    Due::Reply { recipient, reply },
                );
            }
            _ => self.drop_packet(DropReason::WrongRole),
        }
        // A packet due now goes out in the same step.
        outputs.extend(self.poll(now));
        outputs
    }

    /// Carries out everything due by `now`.
    pub fn poll(&mut self, now: Micros) -> Vec<Output> {
        let mut outputs = Vec::new();
        if now >= self.next_reply_sweep {
            self.expire_replies(now);
        }
        while let Some((_, what)) = self.queue.pop_due(now) {
            match what {
                Due::Send { to, packet } => {
                    self.counters.sent += 1;
                    outputs.push(Output::Send { to, packet });
                }
                Due::Deliver { recipient, message } => {
                    self.deliver(recipient, message, &mut outputs)
                }
                Due::Reply { recipient, reply } => {
                    let full = self.replies_held >= self.config.max_replies;
                    let queue = self.replies.entry(recipient).or_default();
                    if full || queue.len() >= self.config.max_replies_per_client {
                        if queue.is_empty() {
                            self.replies.remove(&recipient);
                        }
                        self.drop_packet(DropReason::ReplyQueueFull);
                        continue;
                    }
                    queue.push_back((now, reply));
                    self.replies_held += 1;
                    self.counters.replies_queued += 1;
                    outputs.push(Output::ReplyQueued { recipient });
                }
            }
        }
        outputs
    }

    /// Hands a message to a service. Every service message is a SURB
    /// followed by a body; `echo` sends the body back through the SURB,
    /// external services get both as [`Output::Deliver`].
    fn deliver(
        &mut self,
        recipient: [u8; RECIPIENT_LEN],
        message: Vec<u8>,
        outputs: &mut Vec<Output>,
    ) {
        let surb_len = self.geometry.surb_len();
        if self.config.external_services.contains(&recipient) {
            if message.len() < surb_len {
                self.drop_packet(DropReason::BadServiceMessage);
                return;
            }
            self.counters.delivered += 1;
            let mut surb = message;
            let body = surb.split_off(surb_len);
            outputs.push(Output::Deliver {
                recipient,
                surb,
                body,
            });
            return;
        }
        if recipient != service_recipient("echo") {
            self.drop_packet(DropReason::NoSuchService);
            return;
        }
        let reply = message
            .get(..surb_len)
            .ok_or(SphinxError::InvalidCommand)
            .and_then(|bytes| Surb::from_bytes::<K>(&self.geometry, bytes))
            .and_then(|surb| {
                let first_hop = surb.first_hop();
                surb.reply(&self.geometry, &message[surb_len..])
                    .map(|packet| (first_hop, packet))
            });
        match reply {
            Ok((to, packet)) => {
                self.counters.delivered += 1;
                self.counters.sent += 1;
                outputs.push(Output::Send { to, packet });
            }
            Err(_) => self.drop_packet(DropReason::BadServiceMessage),
        }
    }
}
