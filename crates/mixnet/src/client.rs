//! The client core: a Poisson stream of send slots, each carrying a queued
//! message or, when there is none, a loop (cover) packet, so an observer of
//! the client sees the same stream whether or not its user is working.
//!
//! A queued request is an echo: a packet to the `echo` service carrying a
//! SURB back to the client. Every hop's delay is drawn from Exp(μ); one mix
//! per layer is chosen uniformly. Replies arrive as SURB payloads through the
//! gateway; a request unanswered after a timeout is sent again with a fresh
//! SURB.

use std::collections::{HashMap, VecDeque};

use funion_sphinx::kem::Kem;
use funion_sphinx::{
    create_packet, Delivery, Geometry, PathHop, Surb, SurbKeys, RECIPIENT_LEN, SURB_ID_LEN,
};
use rand_core::{CryptoRng, RngCore};

use crate::topology::{service_recipient, Hop, Topology};
use crate::{exponential_us, Micros};

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The client's reply queue at its gateway.
    pub recipient: [u8; RECIPIENT_LEN],
    /// Mean per-hop delay μ, microseconds.
    pub mean_delay_us: f64,
    /// Send slots per second, λ_s.
    pub send_rate: f64,
    /// Send a request again when no reply came within this long.
    pub retransmit_after_us: Micros,
    /// Give a request up after this many sends.
    pub max_attempts: u32,
    /// Fill slots that carry no request with loop (cover) packets. Only
    /// studies of latency without cover turn this off: without it, an
    /// observer sees when the client is working.
    pub cover: bool,
}

/// What the client learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// An echo came back.
    Pong {
        /// The request's number.
        seq: u64,
        /// From the send of the answered attempt to the reply.
        rtt_us: Micros,
        /// How many sends it took.
        attempts: u32,
        /// The service's answer (an echo's body comes back followed by
        /// padding).
        body: Vec<u8>,
    },
    /// A cover loop came back.
    LoopReturned {
        /// Its round trip.
        rtt_us: Micros,
    },
    /// A request was given up after its last attempt timed out.
    GaveUp {
        /// The request's number.
        seq: u64,
    },
}

/// Counts, for reports and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Slots that carried a request.
    pub requests_sent: u64,
    /// Slots that carried a loop.
    pub loops_sent: u64,
    /// Requests sent again after a timeout.
    pub retransmissions: u64,
    /// Replies that opened.
    pub replies: u64,
    /// Replies that did not open or answered nothing pending.
    pub bad_replies: u64,
}

/// A request to a service: which service, at which service node (index
/// into the topology's services, kept across resends), and its body.
struct Outgoing {
    seq: u64,
    service: [u8; RECIPIENT_LEN],
    node: usize,
    body: Vec<u8>,
    attempt: u32,
}

enum Purpose {
    Request(Outgoing),
    Loop,
}

struct Pending {
    keys: SurbKeys,
    sent_at: Micros,
    purpose: Purpose,
}

/// A client's mix network state.
pub struct Client<K: Kem> {
    config: ClientConfig,
    geometry: Geometry,
    topology: Topology<K>,
    gateway: usize,
    next_slot: Option<Micros>,
    outbox: VecDeque<Outgoing>,
    pending: HashMap<[u8; SURB_ID_LEN], Pending>,
    stats: ClientStats,
}

impl<K: Kem> Client<K> {
    /// A client entering through a uniformly chosen gateway.
    pub fn new<R: RngCore + CryptoRng>(
        config: ClientConfig,
        geometry: Geometry,
        topology: Topology<K>,
        rng: &mut R,
    ) -> Self {
        let gateway = pick(rng, topology.gateways.len());
        Client {
            config,
            geometry,
            topology,
            gateway,
            next_slot: None,
            outbox: VecDeque::new(),
            pending: HashMap::new(),
            stats: ClientStats::default(),
        }
    }

    /// The gateway this client sends to.
    pub fn gateway(&self) -> &Hop<K> {
        &self.topology.gateways[self.gateway]
    }

    /// Switches to a new epoch's keys (the gateway is kept if still listed).
    pub fn set_topology(&mut self, topology: Topology<K>) {
        let current = self.gateway().id;
        self.gateway = topology
            .gateways
            .iter()
            .position(|g| g.id == current)
            .unwrap_or(0);
        self.topology = topology;
    }

    /// Counts so far.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Requests queued or waiting for a reply.
    pub fn outstanding(&self) -> usize {
        self.outbox.len()
            + self
                .pending
                .values()
                .filter(|p| matches!(p.purpose, Purpose::Request(_)))
                .count()
    }

    /// The largest body an echo request can carry.
    pub fn max_body(&self) -> usize {
        self.geometry.message_capacity() - self.geometry.surb_len()
    }

    /// Queues an echo request to a random service node; it leaves in the
    /// next free send slot.
    pub fn request_echo<R: RngCore>(&mut self, seq: u64, body: Vec<u8>, rng: &mut R) {
        let node = pick(rng, self.topology.services.len());
        self.request(seq, service_recipient("echo"), node, body);
    }

    /// Queues a request to `service` at the service node with index `node`
    /// in the topology (every resend goes to the same node). The reply is the
    /// service's whole answer, as the SURB carried it.
    pub fn request(&mut self, seq: u64, service: [u8; RECIPIENT_LEN], node: usize, body: Vec<u8>) {
        let mut body = body;
        body.truncate(self.max_body());
        self.outbox.push_back(Outgoing {
            seq,
            service,
            node: node % self.topology.services.len().max(1),
            body,
            attempt: 1,
        });
    }

    /// The service nodes requests can go to.
    pub fn topology(&self) -> &Topology<K> {
        &self.topology
    }

    /// When [`Client::poll`] next has something to do.
    pub fn next_deadline(&self) -> Option<Micros> {
        let timeouts = self
            .pending
            .values()
            .filter(|p| matches!(p.purpose, Purpose::Request(_)))
            .map(|p| p.sent_at + self.config.retransmit_after_us)
            .min();
        match (self.next_slot, timeouts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the send slots and timeouts due by `now`; returns the packets to
    /// hand to the gateway, in order, and what happened.
    pub fn poll<R: RngCore + CryptoRng>(
        &mut self,
        now: Micros,
        rng: &mut R,
    ) -> (Vec<Vec<u8>>, Vec<ClientEvent>) {
        let mut events = Vec::new();
        self.expire(now, &mut events);
        let mut packets = Vec::new();
        let mean_gap = 1e6 / self.config.send_rate;
        let mut slot = match self.next_slot {
            Some(slot) => slot,
            None => now + exponential_us(rng, mean_gap),
        };
        while slot <= now {
            if let Some(packet) = self.fill_slot(slot, rng) {
                packets.push(packet);
            }
            slot += exponential_us(rng, mean_gap).max(1);
        }
        self.next_slot = Some(slot);
        (packets, events)
    }

    fn expire(&mut self, now: Micros, events: &mut Vec<ClientEvent>) {
        let timeout = self.config.retransmit_after_us;
        let expired: Vec<[u8; SURB_ID_LEN]> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p.purpose, Purpose::Request(_)) && p.sent_at + timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(Pending {
                purpose: Purpose::Request(mut request),
                ..
            }) = self.pending.remove(&id)
            else {
                continue;
            };
            if request.attempt >= self.config.max_attempts {
                events.push(ClientEvent::GaveUp { seq: request.seq });
            } else {
                self.stats.retransmissions += 1;
                request.attempt += 1;
                self.outbox.push_front(request);
            }
        }
        // Loops that never came back are forgotten after the same timeout.
        self.pending
            .retain(|_, p| matches!(p.purpose, Purpose::Request(_)) || p.sent_at + timeout > now);
    }

    fn delay<R: RngCore>(&self, rng: &mut R) -> u32 {
        exponential_us(rng, self.config.mean_delay_us) as u32
    }

    fn mixes<R: RngCore>(&self, rng: &mut R) -> Vec<Hop<K>> {
        self.topology
            .layers
            .iter()
            .map(|layer| layer[pick(rng, layer.len())].clone())
            .collect()
    }

    fn path<'a, R: RngCore>(&self, hops: &'a [Hop<K>], rng: &mut R) -> Vec<PathHop<'a, K>> {
        hops.iter()
            .map(|hop| PathHop {
                node: hop.id,
                public_key: &hop.public_key,
                delay_us: self.delay(rng),
            })
            .collect()
    }

    /// A SURB along `hops` ending in this client's own queue.
    fn surb_to_self<R: RngCore + CryptoRng>(
        &self,
        hops: &[Hop<K>],
        rng: &mut R,
    ) -> ([u8; SURB_ID_LEN], Surb, SurbKeys) {
        let mut surb_id = [0u8; SURB_ID_LEN];
        rng.fill_bytes(&mut surb_id);
        let delivery = Delivery {
            recipient: self.config.recipient,
            surb_id: Some(surb_id),
        };
        let path = self.path(hops, rng);
        let (surb, keys) = Surb::create(&self.geometry, &path, &delivery, rng)
            .expect("a path of the geometry's length always builds");
        (surb_id, surb, keys)
    }

    fn fill_slot<R: RngCore + CryptoRng>(&mut self, at: Micros, rng: &mut R) -> Option<Vec<u8>> {
        Some(match self.outbox.pop_front() {
            Some(request) => {
                // The way home: from layer 1 through the mixes to the gateway.
                let mut home = self.mixes(rng);
                home.push(self.gateway().clone());
                let (surb_id, surb, keys) = self.surb_to_self(&home, rng);
                let mut message = surb.to_bytes().to_vec();
                message.extend_from_slice(&request.body);
                let mut hops = vec![self.gateway().clone()];
                hops.extend(self.mixes(rng));
                let node = request
                    .node
                    .min(self.topology.services.len().saturating_sub(1));
                hops.push(self.topology.services[node].clone());
                let path = self.path(&hops, rng);
                let delivery = Delivery {
                    recipient: request.service,
                    surb_id: None,
                };
                let packet = create_packet(&self.geometry, &path, &delivery, &message, rng)
                    .expect("an echo request always fits");
                self.stats.requests_sent += 1;
                self.pending.insert(
                    surb_id,
                    Pending {
                        keys,
                        sent_at: at,
                        purpose: Purpose::Request(request),
                    },
                );
                packet
            }
            None if !self.config.cover => return None,
            None => {
                // A loop: a SURB-built packet that starts at the gateway and
                // comes back to this client's own queue.
                let mut hops = vec![self.gateway().clone()];
                hops.extend(self.mixes(rng));
                hops.push(self.gateway().clone());
                let (surb_id, surb, keys) = self.surb_to_self(&hops, rng);
                let packet = surb.reply(&self.geometry, &[]).expect("an empty loop fits");
                self.stats.loops_sent += 1;
                self.pending.insert(
                    surb_id,
                    Pending {
                        keys,
                        sent_at: at,
                        purpose: Purpose::Loop,
                    },
                );
                packet
            }
        })
    }

    /// Takes a reply the gateway handed over.
    pub fn handle_reply(
        &mut self,
        now: Micros,
        surb_id: [u8; SURB_ID_LEN],
        payload: &[u8],
    ) -> Option<ClientEvent> {
        let Some(pending) = self.pending.remove(&surb_id) else {
            self.stats.bad_replies += 1;
            return None;
        };
        let Ok(opened) = pending.keys.open_reply(payload) else {
            self.stats.bad_replies += 1;
            return None;
        };
        self.stats.replies += 1;
        let rtt_us = now.saturating_sub(pending.sent_at);
        Some(match pending.purpose {
            Purpose::Request(request) => ClientEvent::Pong {
                seq: request.seq,
                rtt_us,
                attempts: request.attempt,
                body: opened,
            },
            Purpose::Loop => ClientEvent::LoopReturned { rtt_us },
        })
    }
}

fn pick<R: RngCore + ?Sized>(rng: &mut R, len: usize) -> usize {
    (rng.next_u64() % len.max(1) as u64) as usize
}
