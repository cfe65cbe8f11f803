//! The deterministic simulator: the same [`funion_mixnet`] state machines the
//! runtime drives, here driven in virtual time from one seeded RNG, so any
//! run replays exactly. Real Sphinx packets, real keys; only sockets and
//! clocks are replaced, by an event queue and a fixed link latency.
//!
//! [`run`] builds a network (gateways, mixes per layer, service nodes) and
//! S clients that keep one echo request outstanding each (and send cover
//! loops in their other slots), runs it for T virtual seconds and reports
//! round-trip times and per-link packet counts.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clustering;
mod credits;
pub mod jobs;
pub mod privacy;
pub mod stats;

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::SigningKey;
use funion_mixnet::{
    Client, ClientConfig, ClientEvent, Micros, Node, NodeConfig, Output, Source, TimerQueue,
    Topology,
};
use funion_pki::{EpochKey, NetworkDocument, NodeEntry, Parameters, Role};
use funion_sphinx::kem::Kem;
use funion_sphinx::NodeId;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of the one RNG everything draws from.
    pub seed: u64,
    /// Clients.
    pub clients: usize,
    /// Virtual duration, microseconds.
    pub duration_us: Micros,
    /// Network parameters (μ, λ_s, geometry).
    pub parameters: Parameters,
    /// Gateways.
    pub gateways: usize,
    /// Mixes in each layer.
    pub mixes_per_layer: usize,
    /// Service nodes.
    pub services: usize,
    /// One-way latency of every link, microseconds.
    pub link_latency_us: Micros,
    /// Whether clients fill empty slots with loop (cover) packets.
    pub cover: bool,
}

impl SimConfig {
    /// The paper's parameters with `clients` clients for `seconds`.
    pub fn paper(clients: usize, seconds: u64) -> Self {
        SimConfig {
            seed: 1,
            clients,
            duration_us: seconds * 1_000_000,
            parameters: Parameters::paper(),
            gateways: 1,
            mixes_per_layer: 2,
            services: 2,
            link_latency_us: 0,
            cover: true,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Echo round trips, microseconds, in the order they completed.
    pub echo_rtts: Vec<Micros>,
    /// Loop round trips, microseconds.
    pub loop_rtts: Vec<Micros>,
    /// Packets carried per link, by (from, to) name.
    pub links: BTreeMap<(String, String), u64>,
    /// Packets dropped anywhere, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Echo requests sent again after a timeout.
    pub retransmissions: u64,
    /// Virtual microseconds simulated.
    pub duration_us: Micros,
    /// Hops per echo (forward plus reply), for the delay model.
    pub echo_hops: u32,
    /// Mean per-hop delay μ, microseconds.
    pub mean_delay_us: f64,
}

enum Event {
    AtNode {
        node: usize,
        from: Source,
        packet: Vec<u8>,
    },
    WakeNode(usize),
    WakeClient(usize),
    Reply {
        client: usize,
        surb_id: [u8; 16],
        payload: Vec<u8>,
    },
}

struct World<K: Kem> {
    nodes: Vec<Node<K>>,
    names: Vec<String>,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    clients: Vec<Client<K>>,
    client_gateway: Vec<usize>,
    recipients: HashMap<[u8; 32], usize>,
    queue: TimerQueue<Event>,
    node_wake: Vec<Option<Micros>>,
    client_wake: Vec<Option<Micros>>,
    report: SimReport,
    latency: Micros,
    next_request: Vec<u64>,
}

impl<K: Kem> World<K> {
    fn push(&mut self, at: Micros, event: Event) {
        self.queue.push(at, event);
    }

    fn count(&mut self, from: &str, to: &str) {
        *self
            .report
            .links
            .entry((from.to_string(), to.to_string()))
            .or_default() += 1;
    }

    fn node_outputs(&mut self, now: Micros, node: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                // The simulator runs no external services.
                Output::PersistReplayTag { .. } | Output::Deliver { .. } => {}
                Output::Send { to, packet } => {
                    let Some(&target) = self.index.get(&to) else {
                        *self
                            .report
                            .dropped
                            .entry("unknown_next_hop".into())
                            .or_default() += 1;
                        continue;
                    };
                    let (from, to_name) = (self.names[node].clone(), self.names[target].clone());
                    self.count(&from, &to_name);
                    let id = self.ids[node];
                    self.push(
                        now + self.latency,
                        Event::AtNode {
                            node: target,
                            from: Source::Peer(id),
                            packet,
                        },
                    );
                }
                Output::ReplyQueued { recipient } => {
                    let Some(&client) = self.recipients.get(&recipient) else {
                        continue;
                    };
                    for reply in self.nodes[node].take_replies(&recipient) {
                        let from = self.names[node].clone();
                        self.count(&from, &format!("client{client}"));
                        self.push(
                            now + self.latency,
                            Event::Reply {
                                client,
                                surb_id: reply.surb_id,
                                payload: reply.payload,
                            },
                        );
                    }
                }
            }
        }
        self.rearm_node(node);
    }

    fn rearm_node(&mut self, node: usize) {
        if let Some(at) = self.nodes[node].next_deadline() {
            if self.node_wake[node].is_none_or(|w| at < w) {
                self.node_wake[node] = Some(at);
                self.push(at, Event::WakeNode(node));
            }
        }
    }

    fn rearm_client(&mut self, client: usize) {
        if let Some(at) = self.clients[client].next_deadline() {
            if self.client_wake[client].is_none_or(|w| at < w) {
                self.client_wake[client] = Some(at);
                self.push(at, Event::WakeClient(client));
            }
        }
    }

    fn client_events(&mut self, client: usize, events: Vec<ClientEvent>) {
        for event in events {
            match event {
                ClientEvent::Pong { rtt_us, .. } => self.report.echo_rtts.push(rtt_us),
                ClientEvent::LoopReturned { rtt_us } => self.report.loop_rtts.push(rtt_us),
                // Plain echoes carry no held SURB.
                ClientEvent::HeldReply { .. } => {}
                ClientEvent::GaveUp { .. } => {
                    *self
                        .report
                        .dropped
                        .entry("echo_given_up".into())
                        .or_default() += 1
                }
            }
        }
        if self.clients[client].outstanding() == 0 {
            self.next_request[client] += 1;
            let seq = self.next_request[client];
            self.clients[client].request_echo(seq, seq.to_le_bytes().to_vec());
        }
    }
}

/// Runs a simulation with KEM `K`.
pub fn run<K: Kem>(config: &SimConfig) -> SimReport {
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
    let parameters = config.parameters.clone();
    let geometry = parameters.geometry().expect("valid parameters");
    let epoch = 0;

    // The network: keys, document, nodes.
    let mut layout: Vec<(Role, u8, String)> = Vec::new();
    layout.extend((0..config.gateways).map(|i| (Role::Gateway, 0, format!("gateway{i}"))));
    for layer in 1..=parameters.layers {
        layout.extend(
            (0..config.mixes_per_layer).map(|i| (Role::Mix, layer, format!("mix{layer}.{i}"))),
        );
    }
    layout.extend((0..config.services).map(|i| (Role::Service, 0, format!("service{i}"))));
    let mut entries = Vec::new();
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    let mut index = HashMap::new();
    let mut ids = Vec::new();
    for (role, layer, name) in layout {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let identity = SigningKey::from_bytes(&seed);
        let (secret, public) = K::generate(&mut rng);
        let entry = NodeEntry {
            name: name.clone(),
            role,
            layer,
            identity_key: identity.verifying_key().to_bytes(),
            link_key: [0; 32],
            addresses: vec![format!("sim:{name}")],
            sphinx_keys: vec![EpochKey {
                epoch,
                public_key: K::public_key_bytes(&public),
            }],
            models: Vec::new(),
            fast_path: false,
        };
        let mut node = Node::<K>::new(NodeConfig::for_role(role, parameters.send_rate()), geometry);
        node.add_epoch_key(epoch, secret, [])
            .expect("geometry matches the KEM");
        node.set_current_epoch(epoch);
        index.insert(entry.id(), nodes.len());
        ids.push(entry.id());
        nodes.push(node);
        names.push(name);
        entries.push(entry);
    }
    let document = NetworkDocument::new(epoch, parameters.clone(), entries)
        .expect("simulated network is valid");
    let topology =
        std::sync::Arc::new(Topology::<K>::from_document(&document, epoch).expect("keys decode"));

    let mut clients = Vec::new();
    let mut client_gateway = Vec::new();
    let mut recipients = HashMap::new();
    let send_rate = parameters.send_rate();
    for c in 0..config.clients {
        let mut recipient = [0u8; 32];
        rng.fill_bytes(&mut recipient);
        recipients.insert(recipient, c);
        let client_config = ClientConfig {
            recipient,
            mean_delay_us: parameters.mean_delay_us as f64,
            send_rate,
            retransmit_after_us: parameters.mean_delay_us * 60,
            // Virtual time never falls behind: every slot is on time.
            max_lag_us: u64::MAX,
            max_attempts: 3,
            cover: config.cover,
            loops_through_service: true,
        };
        let client = Client::new(client_config, geometry, topology.clone(), &mut rng);
        client_gateway.push(index[&client.gateway().id]);
        clients.push(client);
    }

    let mut world = World {
        node_wake: vec![None; nodes.len()],
        nodes,
        names,
        ids,
        index,
        client_wake: vec![None; clients.len()],
        next_request: vec![0; clients.len()],
        clients,
        client_gateway,
        recipients,
        queue: TimerQueue::default(),
        report: SimReport {
            duration_us: config.duration_us,
            echo_hops: u32::from(parameters.hops) * 2 - 1,
            mean_delay_us: parameters.mean_delay_us as f64,
            ..SimReport::default()
        },
        latency: config.link_latency_us,
    };
    for c in 0..world.clients.len() {
        world.client_events(c, Vec::new());
        world.push(0, Event::WakeClient(c));
    }

    while let Some((now, event)) = world.queue.pop() {
        if now > config.duration_us {
            break;
        }
        match event {
            Event::AtNode { node, from, packet } => {
                let outputs = world.nodes[node].handle_packet(now, from, packet);
                world.node_outputs(now, node, outputs);
            }
            Event::WakeNode(node) => {
                if world.node_wake[node] == Some(now) {
                    world.node_wake[node] = None;
                }
                let outputs = world.nodes[node].poll(now);
                world.node_outputs(now, node, outputs);
            }
            Event::WakeClient(client) => {
                if world.client_wake[client] == Some(now) {
                    world.client_wake[client] = None;
                }
                let (packets, events) = world.clients[client].poll(now, &mut rng);
                world.client_events(client, events);
                let gateway = world.client_gateway[client];
                for packet in packets {
                    let to = world.names[gateway].clone();
                    world.count(&format!("client{client}"), &to);
                    world.push(
                        now + world.latency,
                        Event::AtNode {
                            node: gateway,
                            from: Source::Client(client as u64),
                            packet,
                        },
                    );
                }
                world.rearm_client(client);
            }
            Event::Reply {
                client,
                surb_id,
                payload,
            } => {
                let events: Vec<_> = world.clients[client]
                    .handle_reply(now, surb_id, &payload)
                    .into_iter()
                    .collect();
                world.client_events(client, events);
                world.rearm_client(client);
            }
        }
    }
    for node in &world.nodes {
        for (reason, count) in &node.counters().dropped {
            *world
                .report
                .dropped
                .entry(reason.label().into())
                .or_default() += count;
        }
    }
    world.report.retransmissions = world
        .clients
        .iter()
        .map(|c| c.stats().retransmissions)
        .sum();
    world.report
}

/// Summary statistics of a sample of durations, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Summarises microsecond samples in seconds.
pub fn summarize(samples_us: &[Micros]) -> Summary {
    let mut sorted: Vec<f64> = samples_us.iter().map(|&s| s as f64 / 1e6).collect();
    sorted.sort_by(f64::total_cmp);
    let quantile = |q: f64| -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let at = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[at]
    };
    Summary {
        count: sorted.len(),
        mean: sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
        p50: quantile(0.5),
        p95: quantile(0.95),
        p99: quantile(0.99),
    }
}

/// The Erlang(k, rate) distribution function at `x`: the chance that the
/// sum of `k` exponential delays of mean `mean` is at most `x`.
pub fn erlang_cdf(k: u32, mean: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let lx = x / mean;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..k {
        term *= lx / n as f64;
        sum += term;
    }
    1.0 - (-lx).exp() * sum
}

/// The Erlang quantile, by bisection.
pub fn erlang_quantile(k: u32, mean: f64, q: f64) -> f64 {
    let (mut low, mut high) = (0.0, mean * (k as f64) * 20.0);
    for _ in 0..200 {
        let mid = (low + high) / 2.0;
        if erlang_cdf(k, mean, mid) < q {
            low = mid;
        } else {
            high = mid;
        }
    }
    (low + high) / 2.0
}

/// The Kolmogorov–Smirnov distance between a sample (µs) and Erlang(k, mean).
pub fn ks_distance(samples_us: &[Micros], k: u32, mean: f64) -> f64 {
    let mut sorted: Vec<f64> = samples_us.iter().map(|&s| s as f64 / 1e6).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = erlang_cdf(k, mean, x);
            (f - i as f64 / n).abs().max((f - (i + 1) as f64 / n).abs())
        })
        .fold(0.0, f64::max)
}
