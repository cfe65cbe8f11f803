//! The client core: a Poisson stream of send slots, each carrying a queued
//! message or, when there is none, a loop (cover) packet, so an observer of
//! the client sees the same stream whether or not its user is working. A
//! loop is an empty echo to a service node, over the hops a request takes.
//!
//! A queued request is an echo: a packet to the `echo` service carrying a
//! SURB back to the client. Every hop's delay is drawn from Exp(μ); one mix
//! per layer is chosen uniformly. Replies arrive as SURB payloads through the
//! gateway; a request unanswered after a timeout is sent again with a fresh
//! SURB.
//!
//! Overload: a send slot that comes more than [`ClientConfig::max_lag_us`]
//! late (the driver fell behind) carries a queued request if there is one and
//! is otherwise shed, not caught up, so a client that falls behind sends less
//! cover, never a burst of it. The retransmission timeout follows the measured
//! round trip (RFC 6298's estimator, Karn's rule), doubles with every attempt,
//! and a reply through an earlier attempt's SURB still answers the request, so
//! resending never multiplies the load of a slow network.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use funion_sphinx::kem::Kem;
use funion_sphinx::{
    create_packet, Delivery, Geometry, PathHop, Surb, SurbKeys, RECIPIENT_LEN, SURB_ID_LEN,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
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
    /// Send a request again when no reply came within this long: the
    /// least timeout; the measured round trip raises it, and it doubles with
    /// each attempt.
    pub retransmit_after_us: Micros,
    /// A send slot later than this (the driver fell behind) is missed: it
    /// carries a queued request if there is one, and its loop is shed.
    pub max_lag_us: Micros,
    /// Give a request up after this many sends.
    pub max_attempts: u32,
    /// Fill slots that carry no request with loop (cover) packets. Only
    /// studies of latency without cover turn this off: without it, an
    /// observer sees when the client is working.
    pub cover: bool,
    /// Whether loops pass a service node, as an empty echo, like requests;
    /// otherwise they go from the gateway through the mixes and back (the
    /// older design, kept so the simulator can measure against it).
    pub loops_through_service: bool,
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
    /// The output a service sent later through the held SURB of a
    /// [`Client::request_held`] request.
    HeldReply {
        /// The request's number.
        seq: u64,
        /// What the service sent.
        body: Vec<u8>,
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
    /// Loops not sent because their slot came too late (the client was
    /// behind): cover is the first thing shed.
    pub loops_shed: u64,
    /// Requests answered through the SURB of an attempt already sent again.
    pub late_replies: u64,
    /// Replies through held SURBs ([`Client::request_held`]).
    pub held_replies: u64,
}

/// A request to a service: which service, at which service node (index
/// into the topology's services, kept across resends), and its body.
struct Outgoing {
    seq: u64,
    service: [u8; RECIPIENT_LEN],
    node: usize,
    body: Vec<u8>,
    attempt: u32,
    /// With `Some(life)`, the request carries a second SURB home, which
    /// the service holds and may use once, up to `life` after the send.
    held_for_us: Option<Micros>,
    /// How long the service may take to answer: added to the timeout, and
    /// its round trips are not samples of the network's.
    service_wait_us: Micros,
}

/// The keys of a held SURB a request carried.
struct Held {
    keys: SurbKeys,
    seq: u64,
    forget_at: Micros,
}

enum Purpose {
    Request(Outgoing),
    Loop,
}

struct Pending {
    keys: SurbKeys,
    sent_at: Micros,
    /// When a request is sent again (unused for loops).
    timeout_at: Micros,
    purpose: Purpose,
}

/// The SURB of an attempt that was sent again: a reply through it still
/// answers the request.
struct Superseded {
    keys: SurbKeys,
    seq: u64,
    sent_at: Micros,
    forget_at: Micros,
}

/// The retransmission timeout estimator (RFC 6298): smoothed round trip and
/// its variation, from first attempts only (Karn's rule).
#[derive(Clone, Copy, Debug, Default)]
struct RttEstimate {
    srtt_us: f64,
    rttvar_us: f64,
    samples: u64,
}

impl RttEstimate {
    fn sample(&mut self, rtt_us: Micros) {
        let r = rtt_us as f64;
        if self.samples == 0 {
            self.srtt_us = r;
            self.rttvar_us = r / 2.0;
        } else {
            self.rttvar_us = 0.75 * self.rttvar_us + 0.25 * (self.srtt_us - r).abs();
            self.srtt_us = 0.875 * self.srtt_us + 0.125 * r;
        }
        self.samples += 1;
    }

    /// The timeout for a first attempt, never below `floor`.
    fn timeout(&self, floor: Micros) -> Micros {
        if self.samples == 0 {
            return floor;
        }
        ((self.srtt_us + 4.0 * self.rttvar_us) as Micros).max(floor)
    }
}

/// Longest a retransmission timeout grows to, as a multiple of the least.
const MAX_BACKOFF: Micros = 16;

/// A client's mix network state.
pub struct Client<K: Kem> {
    config: ClientConfig,
    geometry: Geometry,
    topology: Arc<Topology<K>>,
    gateway: usize,
    next_slot: Option<Micros>,
    outbox: VecDeque<Outgoing>,
    pending: HashMap<[u8; SURB_ID_LEN], Pending>,
    superseded: HashMap<[u8; SURB_ID_LEN], Superseded>,
    held: HashMap<[u8; SURB_ID_LEN], Held>,
    rtt: RttEstimate,
    stats: ClientStats,
    /// Where every choice an observer could see comes from (send slots,
    /// mixes, delays, SURB ids), apart from the packets' key material, so
    /// the same seed makes the same traffic whether packets are Sphinx or
    /// modelled ([`Geometry::modelled`]).
    routes: ChaCha20Rng,
}

impl<K: Kem> Client<K> {
    /// A client entering through a uniformly chosen gateway. Many clients
    /// may share one topology (an `Arc`).
    pub fn new<R: RngCore + CryptoRng>(
        config: ClientConfig,
        geometry: Geometry,
        topology: impl Into<Arc<Topology<K>>>,
        rng: &mut R,
    ) -> Self {
        let topology = topology.into();
        let gateway = pick(rng, topology.gateways.len());
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Client {
            routes: ChaCha20Rng::from_seed(seed),
            config,
            geometry,
            topology,
            gateway,
            next_slot: None,
            outbox: VecDeque::new(),
            pending: HashMap::new(),
            superseded: HashMap::new(),
            held: HashMap::new(),
            rtt: RttEstimate::default(),
            stats: ClientStats::default(),
        }
    }

    /// The gateway this client sends to.
    pub fn gateway(&self) -> &Hop<K> {
        &self.topology.gateways[self.gateway]
    }

    /// Switches to a new epoch's keys (the gateway is kept if still listed).
    pub fn set_topology(&mut self, topology: impl Into<Arc<Topology<K>>>) {
        let topology = topology.into();
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

    /// The largest message a SURB brings back.
    pub fn max_reply(&self) -> usize {
        self.geometry.message_capacity()
    }

    /// The largest body a [`Client::request_held`] request can carry.
    pub fn max_held_body(&self) -> usize {
        self.max_body().saturating_sub(self.geometry.surb_len())
    }

    /// Queues an echo request to a random service node; it leaves in the
    /// next free send slot.
    pub fn request_echo(&mut self, seq: u64, body: Vec<u8>) {
        let node = pick(&mut self.routes, self.topology.services.len());
        self.request(seq, service_recipient("echo"), node, body);
    }

    /// Queues a request to `service` at the service node with index `node`
    /// in the topology (every resend goes to the same node). The reply is the
    /// service's whole answer, as the SURB carried it.
    pub fn request(&mut self, seq: u64, service: [u8; RECIPIENT_LEN], node: usize, body: Vec<u8>) {
        self.queue(seq, service, node, body, None, 0);
    }

    /// Queues a request like [`Client::request`] whose service may take up
    /// to `service_wait_us` before it answers (a read that waits for its
    /// box): the echo is sent again only after that much longer.
    pub fn request_waiting(
        &mut self,
        seq: u64,
        service: [u8; RECIPIENT_LEN],
        node: usize,
        body: Vec<u8>,
        service_wait_us: Micros,
    ) {
        self.queue(seq, service, node, body, None, service_wait_us);
    }

    /// Queues a request like [`Client::request`] that also carries a
    /// second SURB home, after the echo's: the service answers the echo as
    /// usual and may later send one more message through the held SURB
    /// ([`ClientEvent::HeldReply`]), for up to `life_us` after the send.
    /// Every resend carries a fresh held SURB; the first to bring a reply
    /// answers, the others are forgotten.
    pub fn request_held(
        &mut self,
        seq: u64,
        service: [u8; RECIPIENT_LEN],
        node: usize,
        body: Vec<u8>,
        life_us: Micros,
    ) {
        self.queue(seq, service, node, body, Some(life_us), 0);
    }

    fn queue(
        &mut self,
        seq: u64,
        service: [u8; RECIPIENT_LEN],
        node: usize,
        mut body: Vec<u8>,
        held_for_us: Option<Micros>,
        service_wait_us: Micros,
    ) {
        let room = match held_for_us {
            Some(_) => self.max_held_body(),
            None => self.max_body(),
        };
        body.truncate(room);
        self.outbox.push_back(Outgoing {
            seq,
            service,
            node: node % self.topology.services.len().max(1),
            body,
            attempt: 1,
            held_for_us,
            service_wait_us,
        });
    }

    /// The service nodes requests can go to.
    pub fn topology(&self) -> &Topology<K> {
        &self.topology
    }

    /// The timeout a first attempt gets now: the measured round trip's
    /// (smoothed, plus four deviations), never below the configured least.
    pub fn retransmit_timeout(&self) -> Micros {
        self.rtt.timeout(self.config.retransmit_after_us)
    }

    /// When [`Client::poll`] next has something to do.
    pub fn next_deadline(&self) -> Option<Micros> {
        let timeouts = self
            .pending
            .values()
            .filter(|p| matches!(p.purpose, Purpose::Request(_)))
            .map(|p| p.timeout_at)
            .min();
        match (self.next_slot, timeouts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the send slots and timeouts due by `now`; returns the packets to
    /// hand to the gateway, in order, and what happened. `rng` gives the
    /// packets' key material only.
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
            None => now + exponential_us(&mut self.routes, mean_gap),
        };
        while slot <= now {
            let missed = now - slot > self.config.max_lag_us;
            if missed && self.outbox.is_empty() {
                // Behind: a loop for a slot long gone would only add load.
                if self.config.cover {
                    self.stats.loops_shed += 1;
                }
            } else if let Some(packet) = self.fill_slot(now, rng) {
                packets.push(packet);
            }
            slot += exponential_us(&mut self.routes, mean_gap).max(1);
        }
        self.next_slot = Some(slot);
        (packets, events)
    }

    fn expire(&mut self, now: Micros, events: &mut Vec<ClientEvent>) {
        let mut expired: Vec<(Micros, u64, [u8; SURB_ID_LEN])> = self
            .pending
            .iter()
            .filter_map(|(id, p)| match &p.purpose {
                Purpose::Request(r) if p.timeout_at <= now => Some((p.timeout_at, r.seq, *id)),
                _ => None,
            })
            .collect();
        // In the order they timed out, not the map's: the same seed must
        // resend in the same order.
        expired.sort_unstable();
        for (_, _, id) in expired {
            let Some(Pending {
                keys,
                sent_at,
                timeout_at,
                purpose: Purpose::Request(mut request),
            }) = self.pending.remove(&id)
            else {
                continue;
            };
            if request.attempt >= self.config.max_attempts {
                self.superseded.retain(|_, s| s.seq != request.seq);
                events.push(ClientEvent::GaveUp { seq: request.seq });
            } else {
                self.stats.retransmissions += 1;
                request.attempt += 1;
                // The old SURB stays good for as long again: a slow reply
                // through it answers the request.
                let waited = timeout_at.saturating_sub(sent_at);
                self.superseded.insert(
                    id,
                    Superseded {
                        keys,
                        seq: request.seq,
                        sent_at,
                        forget_at: now + waited.saturating_mul(2),
                    },
                );
                self.outbox.push_front(request);
            }
        }
        // Loops that never came back are forgotten after the least timeout
        // and the longest backoff.
        let loop_life = self.config.retransmit_after_us.saturating_mul(MAX_BACKOFF);
        self.pending.retain(|_, p| {
            matches!(p.purpose, Purpose::Request(_)) || p.sent_at.saturating_add(loop_life) > now
        });
        self.superseded.retain(|_, s| s.forget_at > now);
        self.held.retain(|_, h| h.forget_at > now);
    }

    /// When an attempt sent at `now` times out: the estimated timeout,
    /// doubled for every earlier attempt, within [`MAX_BACKOFF`] times the
    /// least.
    fn timeout_for(&self, now: Micros, attempt: u32) -> Micros {
        let floor = self.config.retransmit_after_us;
        let base = self.rtt.timeout(floor);
        let backoff = 1u64 << attempt.saturating_sub(1).min(16);
        let timeout = base
            .saturating_mul(backoff)
            .min(floor.saturating_mul(MAX_BACKOFF).max(base));
        now.saturating_add(timeout)
    }

    /// One mix per layer, drawn from the route stream.
    /// One mix of each layer, drawn from the route stream, appended to
    /// `hops`.
    fn mixes<'t>(&mut self, topology: &'t Topology<K>, hops: &mut Vec<&'t Hop<K>>) {
        for layer in &topology.layers {
            hops.push(&layer[pick(&mut self.routes, layer.len())]);
        }
    }

    /// A delay for each hop, drawn from the route stream.
    fn delays(&mut self, hops: usize) -> Vec<u32> {
        let mean = self.config.mean_delay_us;
        (0..hops)
            .map(|_| exponential_us(&mut self.routes, mean) as u32)
            .collect()
    }

    /// A SURB along `hops` (delays already drawn) ending in this client's
    /// own queue.
    fn surb_to_self<R: RngCore + CryptoRng>(
        &self,
        surb_id: [u8; SURB_ID_LEN],
        hops: &[&Hop<K>],
        delays: &[u32],
        rng: &mut R,
    ) -> (Surb, SurbKeys) {
        let delivery = Delivery {
            recipient: self.config.recipient,
            surb_id: Some(surb_id),
        };
        Surb::create(&self.geometry, &path(hops, delays), &delivery, rng)
            .expect("a path of the geometry's length always builds")
    }

    fn surb_id(&mut self) -> [u8; SURB_ID_LEN] {
        let mut surb_id = [0u8; SURB_ID_LEN];
        self.routes.fill_bytes(&mut surb_id);
        surb_id
    }

    fn fill_slot<R: RngCore + CryptoRng>(&mut self, at: Micros, rng: &mut R) -> Option<Vec<u8>> {
        // Hops are borrowed from the shared topology, never copied.
        let topology = Arc::clone(&self.topology);
        let gateway = &topology.gateways[self.gateway];
        let route_len = topology.layers.len() + 2;
        let services = topology.services.len();
        Some(match self.outbox.pop_front() {
            Some(request) => {
                let node = request.node.min(services.saturating_sub(1));
                let (surb_id, keys, packet) = match request.held_for_us {
                    None => self.echo_packet(&topology, node, request.service, &request.body, rng),
                    Some(life) => {
                        // The held SURB, then the body: the service sees
                        // both after the echo's own SURB.
                        let (held_id, surb, keys) = self.surb_home(&topology, rng);
                        self.held.insert(
                            held_id,
                            Held {
                                keys,
                                seq: request.seq,
                                forget_at: at.saturating_add(life),
                            },
                        );
                        let mut body = surb.to_bytes().to_vec();
                        body.extend_from_slice(&request.body);
                        self.echo_packet(&topology, node, request.service, &body, rng)
                    }
                };
                self.stats.requests_sent += 1;
                let timeout_at = self
                    .timeout_for(at, request.attempt)
                    .saturating_add(request.service_wait_us);
                self.pending.insert(
                    surb_id,
                    Pending {
                        keys,
                        sent_at: at,
                        timeout_at,
                        purpose: Purpose::Request(request),
                    },
                );
                packet
            }
            None if !self.config.cover => return None,
            None => {
                // A loop: an empty echo to a service node chosen uniformly,
                // over the same hops and delays as a request, so that
                // neither its path nor its reply's timing tells it apart.
                let (surb_id, keys, packet) = if services > 0 && self.config.loops_through_service {
                    let node = pick(&mut self.routes, services);
                    self.echo_packet(&topology, node, service_recipient("echo"), &[], rng)
                } else {
                    // From the gateway through the mixes and back.
                    let mut hops = Vec::with_capacity(route_len);
                    hops.push(gateway);
                    self.mixes(&topology, &mut hops);
                    hops.push(gateway);
                    let surb_id = self.surb_id();
                    let delays = self.delays(hops.len());
                    let (surb, keys) = self.surb_to_self(surb_id, &hops, &delays, rng);
                    let packet = surb.reply(&self.geometry, &[]).expect("an empty loop fits");
                    (surb_id, keys, packet)
                };
                self.stats.loops_sent += 1;
                self.pending.insert(
                    surb_id,
                    Pending {
                        keys,
                        sent_at: at,
                        timeout_at: at,
                        purpose: Purpose::Loop,
                    },
                );
                packet
            }
        })
    }

    /// A SURB from a service node home: through one mix per layer, then
    /// the gateway, every hop's delay drawn from the route stream.
    fn surb_home<R: RngCore + CryptoRng>(
        &mut self,
        topology: &Topology<K>,
        rng: &mut R,
    ) -> ([u8; SURB_ID_LEN], Surb, SurbKeys) {
        let mut home = Vec::with_capacity(topology.layers.len() + 1);
        self.mixes(topology, &mut home);
        home.push(&topology.gateways[self.gateway]);
        let surb_id = self.surb_id();
        let home_delays = self.delays(home.len());
        let (surb, keys) = self.surb_to_self(surb_id, &home, &home_delays, rng);
        (surb_id, surb, keys)
    }

    /// An echo request to `recipient` on service node `node`: a packet
    /// through the gateway and one mix per layer, carrying a SURB home
    /// through one mix per layer and the gateway, then `body`.
    fn echo_packet<R: RngCore + CryptoRng>(
        &mut self,
        topology: &Topology<K>,
        node: usize,
        recipient: [u8; RECIPIENT_LEN],
        body: &[u8],
        rng: &mut R,
    ) -> ([u8; SURB_ID_LEN], SurbKeys, Vec<u8>) {
        let gateway = &topology.gateways[self.gateway];
        let route_len = topology.layers.len() + 2;
        let (surb_id, surb, keys) = self.surb_home(topology, rng);
        let mut hops = Vec::with_capacity(route_len);
        hops.push(gateway);
        self.mixes(topology, &mut hops);
        hops.push(&topology.services[node]);
        let delays = self.delays(hops.len());
        let mut message = surb.to_bytes().to_vec();
        message.extend_from_slice(body);
        let delivery = Delivery {
            recipient,
            surb_id: None,
        };
        let packet = create_packet(
            &self.geometry,
            &path(&hops, &delays),
            &delivery,
            &message,
            rng,
        )
        .expect("an echo request always fits");
        (surb_id, keys, packet)
    }

    /// Takes a reply the gateway handed over.
    pub fn handle_reply(
        &mut self,
        now: Micros,
        surb_id: [u8; SURB_ID_LEN],
        payload: &[u8],
    ) -> Option<ClientEvent> {
        if let Some(old) = self.superseded.remove(&surb_id) {
            return self.handle_late_reply(now, old, payload);
        }
        if let Some(held) = self.held.remove(&surb_id) {
            let Ok(body) = held.keys.open_reply(payload) else {
                self.stats.bad_replies += 1;
                return None;
            };
            // One output per request: the resends' held SURBs are spent.
            self.held.retain(|_, h| h.seq != held.seq);
            self.stats.held_replies += 1;
            return Some(ClientEvent::HeldReply {
                seq: held.seq,
                body,
            });
        }
        let Some(pending) = self.pending.remove(&surb_id) else {
            self.stats.bad_replies += 1;
            return None;
        };
        let rtt_us = now.saturating_sub(pending.sent_at);
        if let Purpose::Loop = pending.purpose {
            if pending.keys.check_reply(payload).is_err() {
                self.stats.bad_replies += 1;
                return None;
            }
            self.stats.replies += 1;
            return Some(ClientEvent::LoopReturned { rtt_us });
        }
        let Ok(opened) = pending.keys.open_reply(payload) else {
            self.stats.bad_replies += 1;
            return None;
        };
        self.stats.replies += 1;
        Some(match pending.purpose {
            Purpose::Request(request) => {
                if request.attempt == 1 && request.service_wait_us == 0 {
                    self.rtt.sample(rtt_us);
                }
                self.superseded.retain(|_, s| s.seq != request.seq);
                ClientEvent::Pong {
                    seq: request.seq,
                    rtt_us,
                    attempts: request.attempt,
                    body: opened,
                }
            }
            Purpose::Loop => ClientEvent::LoopReturned { rtt_us },
        })
    }

    /// A reply through the SURB of an attempt already sent again: it answers
    /// the request if the request is still open (queued or in flight).
    fn handle_late_reply(
        &mut self,
        now: Micros,
        old: Superseded,
        payload: &[u8],
    ) -> Option<ClientEvent> {
        let Ok(opened) = old.keys.open_reply(payload) else {
            self.stats.bad_replies += 1;
            return None;
        };
        let seq = old.seq;
        let request = if let Some(at) = self.outbox.iter().position(|r| r.seq == seq) {
            self.outbox.remove(at)
        } else {
            let id = self.pending.iter().find_map(|(id, p)| match &p.purpose {
                Purpose::Request(r) if r.seq == seq => Some(*id),
                _ => None,
            });
            id.and_then(|id| self.pending.remove(&id))
                .and_then(|p| match p.purpose {
                    Purpose::Request(r) => Some(r),
                    Purpose::Loop => None,
                })
        };
        let Some(request) = request else {
            self.stats.bad_replies += 1;
            return None;
        };
        self.superseded.retain(|_, s| s.seq != seq);
        self.stats.replies += 1;
        self.stats.late_replies += 1;
        Some(ClientEvent::Pong {
            seq,
            rtt_us: now.saturating_sub(old.sent_at),
            attempts: request.attempt,
            body: opened,
        })
    }
}

/// The path through `hops` with these delays.
fn path<'a, K: Kem>(hops: &[&'a Hop<K>], delays: &[u32]) -> Vec<PathHop<'a, K>> {
    hops.iter()
        .zip(delays)
        .map(|(hop, &delay_us)| PathHop {
            node: hop.id,
            public_key: &hop.public_key,
            delay_us,
        })
        .collect()
}

fn pick<R: RngCore + ?Sized>(rng: &mut R, len: usize) -> usize {
    (rng.next_u64() % len.max(1) as u64) as usize
}
