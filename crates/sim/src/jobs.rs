//! Whole jobs in virtual time: the same state machines the runtime drives
//! (mix nodes, the storage courier, replicas over an in-memory store, the
//! compute courier, the job and storage clients), over links with latency,
//! jitter and loss, with seeded faults, and a compute-time model in place
//! of the model.
//!
//! Random streams are split by purpose: `crypto` (keys, envelopes, and the
//! seed of each client's route stream: send slots, mixes, delays), `sphinx`
//! (the packets' key material, and nothing else), `links` (jitter and loss)
//! and `work` (when clients start jobs), each a ChaCha20 stream seeded from
//! the run's seed, so a change to one leaves the others as they were.
//!
//! The abstract-packet mode ([`JobsConfig::abstract_packets`]) moves
//! modelled packets ([`funion_sphinx::Geometry::modelled`]: route, delays
//! and message in the clear, no cryptography) through the same nodes and
//! clients. Only the `sphinx` stream is drawn differently, so the trace is
//! the Sphinx mode's, event for event.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::SigningKey;
use funion_bacap::{BoxId, ReadCap, WriteCap, Writer};
use funion_compute::client::{input_class_of, ClientJobId, JobClient, JobSpec};
use funion_compute::{
    Action, ComputeCourier, CourierConfig as ComputeConfig, HeldSurb, Input, JobId, JobPath,
    MixTiming, Outcome, ReadPlan, Sampling, Task, WorkItem, COMPUTE_FAST_SERVICE, COMPUTE_SERVICE,
};
use funion_mixnet::{
    service_recipient, Client, ClientConfig, ClientEvent, Micros, Node, NodeConfig, Output, Source,
    TimerQueue, Topology,
};
use funion_pigeonhole::client::{
    self as storage, open_stream, read_requests, write_requests, BatchId, StorageClient,
    COURIER_SERVICE, COURIER_WAIT_SERVICE,
};
use funion_pigeonhole::courier::{Courier, CourierConfig, CourierOutput};
use funion_pigeonhole::envelope::{Request, Sizes};
use funion_pigeonhole::replica::storage::{execute, BoxStorage, MemoryStore};
use funion_pigeonhole::replica::{Replica, ReplicaConfig, ReplicaEffect};
use funion_pigeonhole::shard;
use funion_pigeonhole::wire::StorageMessage;
use funion_pki::{EpochKey, NetworkDocument, NodeEntry, Parameters, Role};
use funion_sphinx::kem::Kem;
use funion_sphinx::{NodeId, Surb};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

/// Compute time of one batch: `ttft + n_out × itl` for its longest job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ComputeModel {
    /// Time to first token, microseconds.
    pub ttft_us: Micros,
    /// Inter-token latency, microseconds.
    pub itl_us: Micros,
}

impl ComputeModel {
    /// Seed 002's Table 3, "Balanced" (Llama-3.3-70B on 4×H100, 200 in /
    /// 200 out): TTFT 32.78 ms, ITL 19.11 ms, t_LLM = 3.85 s.
    pub const PAPER_BALANCED: ComputeModel = ComputeModel {
        ttft_us: 32_780,
        itl_us: 19_110,
    };

    /// The compute time of `n_out` tokens.
    pub fn time_us(&self, n_out: u32) -> Micros {
        self.ttft_us + u64::from(n_out) * self.itl_us
    }
}

/// Link behaviour, for every link alike.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkModel {
    /// One-way latency, microseconds.
    pub latency_us: Micros,
    /// Extra latency drawn uniformly from `0..=jitter_us`.
    pub jitter_us: Micros,
    /// Probability that a packet or storage message is lost.
    pub loss: f64,
}

/// A seeded fault at a virtual time.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Replica `replica` stops answering at `at_us` and comes back at
    /// `until_us` with its store intact and its memory lost (a crash and
    /// restart).
    ReplicaDown {
        /// Which replica.
        replica: usize,
        /// When it stops.
        at_us: Micros,
        /// When it restarts.
        until_us: Micros,
    },
    /// Mix node `node` (gateways, then mixes layer by layer, then service
    /// nodes) crashes at `at_us`, losing its queue, and restarts at
    /// `until_us`.
    NodeDown {
        /// Which node.
        node: usize,
        /// When it stops.
        at_us: Micros,
        /// When it restarts.
        until_us: Micros,
    },
    /// Compute takes `factor` times as long between the two times.
    SlowCompute {
        /// The slowdown.
        factor: f64,
        /// From.
        at_us: Micros,
        /// Until.
        until_us: Micros,
    },
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// Seed of every random stream.
    pub seed: u64,
    /// Clients running jobs.
    pub clients: usize,
    /// Virtual duration, microseconds; jobs start only in its first part
    /// and every job in flight at the end is counted as unfinished.
    pub duration_us: Micros,
    /// Network parameters (μ, λ_s, geometry, Δ, K).
    pub parameters: Parameters,
    /// Gateways (each client enters through one, chosen uniformly).
    pub gateways: usize,
    /// Mixes in each layer.
    pub mixes_per_layer: usize,
    /// Service nodes (each a storage courier and a compute courier).
    pub services: usize,
    /// Storage replicas.
    pub replicas: usize,
    /// Links.
    pub links: LinkModel,
    /// Compute time.
    pub compute: ComputeModel,
    /// Prompt tokens per job.
    pub input_tokens: usize,
    /// Tokens generated per job (the output class is the smallest that holds them).
    pub output_tokens: u32,
    /// Latency bucket `j`; `None` picks the smallest that leaves room for
    /// the compute and four echoes.
    pub bucket: Option<u32>,
    /// Mean pause between a client's jobs (exponential), microseconds.
    pub think_us: Micros,
    /// Most jobs a client runs; `None` for as many as fit.
    pub jobs_per_client: Option<usize>,
    /// The last this many clients run no jobs at all: they only send cover
    /// (the idle side of the active-against-idle experiment).
    pub idle_clients: usize,
    /// How long a storage courier holds a SURB before it ACKs.
    pub courier_hold_us: Micros,
    /// Whether clients send cover loops in empty slots.
    pub cover: bool,
    /// Seeded faults.
    pub faults: Vec<Fault>,
    /// Whether to record what a network observer sees ([`Trace`]).
    pub trace: bool,
    /// Send slots per second of each compute courier's own mix client
    /// (it fetches inputs and stores outputs through it); `None` for the
    /// network's λ_s, as the runtime's couriers send. A courier needs about
    /// two slots per job, so at λ_s it carries about λ_s / 2 jobs a second.
    pub courier_send_rate: Option<f64>,
    /// With `Some(q)`, the store path reads the output with plain reads
    /// that find it with probability `q` (`None`: the client's default, a
    /// read that waits for the output at the replicas).
    pub read_quantile: Option<f64>,
    /// Whether jobs pay: clients hold deposits and spend RLN tickets (real
    /// nullifiers and shares, the proof modelled), and compute couriers run
    /// the gate's rules against one nullifier set.
    pub tickets: bool,
    /// Tickets each deposit may spend in a credit period.
    pub ticket_limit: u32,
    /// The first this many clients double-spend (reuse their first message
    /// ids): the control the gate must catch.
    pub double_spenders: usize,
    /// What verifying one ticket costs the gate, microseconds (the real
    /// verifier: about 2 ms).
    pub ticket_verify_us: Micros,
    /// Move modelled packets instead of Sphinx packets: the same routes,
    /// delays, sizes and trace, without the cryptography.
    pub abstract_packets: bool,
    /// Each batch's compute time is the model's times a factor drawn
    /// uniformly from [1 − spread, 1 + spread] (prompts of one class take
    /// different times); 0 for the model's time exactly.
    pub compute_spread: f64,
    /// Each client keeps one compute courier for the whole run, as before
    /// experiment 7; the default picks one per job.
    pub courier_per_run: bool,
    /// Cover loops skip the service nodes (gateway, mixes, gateway), as
    /// before experiment 4 found what that shows; the default sends them
    /// through a service node as requests go.
    pub loops_skip_service: bool,
    /// Compute couriers release outputs when computed, not at the bucket
    /// edge (the computation-time experiment's positive control).
    pub release_at_finish: bool,
    /// The path every job takes.
    pub path: JobPath,
    /// Batches a compute courier runs at once: 1 for one model worker; the
    /// paper's server batches continuously, so its parameters set many.
    pub compute_workers: usize,
}

impl JobsConfig {
    /// The paper's parameters (μ = 0.2 s, λ_s = 2.5/s, Δ = 0.2 s, K = 2,
    /// Table 3's balanced job), `clients` clients for `seconds`.
    pub fn paper(clients: usize, seconds: u64) -> Self {
        JobsConfig {
            seed: 1,
            clients,
            duration_us: seconds * 1_000_000,
            parameters: Parameters::paper(),
            gateways: 1,
            mixes_per_layer: 2,
            services: 2,
            replicas: 4,
            links: LinkModel {
                latency_us: 0,
                jitter_us: 0,
                loss: 0.0,
            },
            compute: ComputeModel::PAPER_BALANCED,
            input_tokens: 200,
            output_tokens: 200,
            bucket: None,
            think_us: 30_000_000,
            jobs_per_client: None,
            idle_clients: 0,
            courier_hold_us: 3_000_000,
            cover: true,
            faults: Vec::new(),
            trace: false,
            courier_send_rate: None,
            read_quantile: None,
            tickets: true,
            ticket_limit: 100_000,
            double_spenders: 0,
            ticket_verify_us: 2_000,
            abstract_packets: false,
            compute_spread: 0.0,
            release_at_finish: false,
            loops_skip_service: false,
            courier_per_run: false,
            path: JobPath::Serial,
            // Table 3's t_LLM is a request's time on a server that batches
            // continuously: jobs arriving while one runs do not wait for it.
            compute_workers: 64,
        }
    }
}

/// What crossed one link, as an observer of the link sees it: when, between
/// whom, how many bytes, and of which kind. Nothing about whose job it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// When it was sent, microseconds.
    pub at_us: Micros,
    /// The sender ([`Trace::names`] index).
    pub from: u32,
    /// The receiver ([`Trace::names`] index).
    pub to: u32,
    /// Bytes on the link.
    pub bytes: u32,
    /// Which kind of frame.
    pub kind: FrameKind,
}

/// The kind of frame an observer tells apart by its link and framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A Sphinx packet between a client or node and a node.
    Sphinx,
    /// A reply handed from a gateway to its client.
    Reply,
    /// A storage message between a courier and a replica, or two replicas.
    Storage,
}

impl FrameKind {
    /// The kind's name in trace files.
    pub fn label(self) -> &'static str {
        match self {
            FrameKind::Sphinx => "sphinx",
            FrameKind::Reply => "reply",
            FrameKind::Storage => "storage",
        }
    }
}

/// One job as it really was, kept apart from the observations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobTruth {
    /// The client ([`Trace::names`] index).
    pub client: u32,
    /// When it started.
    pub started_us: Micros,
    /// When it ended (completed or failed); `None` if still in flight.
    pub ended_us: Option<Micros>,
    /// Whether it completed.
    pub completed: bool,
}

/// What an observer of every link saw, and the ground truth beside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// Names of every client, node and replica, by index.
    pub names: Vec<String>,
    /// Every frame on every link, in the order sent.
    pub observations: Vec<Observation>,
    /// Every job started, in order.
    pub truth: Vec<JobTruth>,
    /// Ground truth beside each observation: which packet it was (the
    /// first 8 bytes of a modelled packet's nonce, kept across its hops),
    /// or 0 for a frame that is not a modelled packet. Only the abstract
    /// mode fills it; it is for scoring adversaries, never for them.
    pub packets: Vec<u64>,
    /// Each completed job's compute time beside the times it showed, for
    /// the computation-time experiment.
    pub computes: Vec<ComputeTruth>,
    /// The modelled packets that were requests, not cover loops (ground
    /// truth: loops and requests both reach a service node and look
    /// alike).
    pub requests: std::collections::HashSet<u64>,
    /// Every write and read between two replicas (intermediate to holder,
    /// holder to holder), for the box-linking experiment: which
    /// observation, its kind (an observer tells them apart by size), and
    /// its box (ground truth only).
    pub storage_ops: Vec<StorageOp>,
}

/// A box write or read between two replicas, as the trace keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOp {
    /// Its [`Trace::observations`] index.
    pub observation: u32,
    /// A write (else a read).
    pub write: bool,
    /// The first 8 bytes of the box ID (ground truth, for scoring).
    pub box_tag: u64,
}

/// One job's compute time and the times that follow from it (ground truth).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ComputeTruth {
    /// Its batch's compute time (0 for an OVERFLOW).
    pub compute_us: Micros,
    /// The bucket index `j` it ran under.
    pub bucket: u32,
    /// From the courier taking the job to its releasing the output.
    pub release_after_us: Micros,
    /// From the client's dispatch to its read of the output being sent.
    pub read_after_us: Micros,
    /// From the client's dispatch to the output in its hands.
    pub done_after_us: Micros,
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobsReport {
    /// Jobs started.
    pub jobs_started: u64,
    /// Jobs whose output was read (OVERFLOW included).
    pub jobs_completed: u64,
    /// Completed jobs whose output was OVERFLOW.
    pub jobs_overflowed: u64,
    /// Jobs that failed, by reason.
    pub jobs_failed: BTreeMap<String, u64>,
    /// Jobs still in flight when the run ended.
    pub jobs_unfinished: u64,
    /// Echoes each completed job took, the client's and its compute
    /// courier's (fetch and store) together, polls and fresh envelopes
    /// included: the figure the paper counts as five.
    pub echoes_per_job: Vec<u64>,
    /// The client's own echoes per completed job (upload, dispatch, read).
    pub client_echoes_per_job: Vec<u64>,
    /// Each completed job's latency minus its compute time, microseconds.
    pub latency_minus_compute_us: Vec<Micros>,
    /// Packets and messages carried per link class (`client→gateway`, …).
    pub links: BTreeMap<String, u64>,
    /// Drops by reason (nodes, links, faults).
    pub dropped: BTreeMap<String, u64>,
    /// Writes the replicas acknowledged.
    pub writes_acknowledged: u64,
    /// Acknowledged writes that no holder has at the end.
    pub writes_lost: u64,
    /// Tickets the gates accepted.
    pub tickets_accepted: u64,
    /// Jobs the gates refused, by reason (`replay`, `double_spend`, …).
    pub jobs_refused_unpaid: BTreeMap<String, u64>,
    /// Deposits whose secret a caught double spend gave away (the ledger
    /// would slash each once).
    pub deposits_slashed: u64,
    /// Events the simulator handled.
    pub events: u64,
    /// The bucket jobs used.
    pub bucket: u32,
    /// The path jobs took.
    pub path: JobPath,
    /// Completed jobs whose output came through a held SURB (the fast
    /// path's one trip home, not an echo).
    pub held_replies: u64,
    /// Inputs compute couriers read again because their upload had not
    /// landed yet (the store path).
    pub refetches: u64,
    /// The compute time of one job, microseconds.
    pub compute_us: Micros,
    /// The observers' view and the ground truth, when asked for.
    pub trace: Option<Trace>,
}

enum Event {
    AtNode {
        node: usize,
        from: Source,
        packet: Vec<u8>,
    },
    WakeNode(usize),
    WakeEndpoint(usize),
    Reply {
        endpoint: usize,
        surb_id: [u8; 16],
        payload: Vec<u8>,
    },
    /// A storage message to a replica or a service node's courier.
    Storage {
        to: NodeId,
        from: NodeId,
        bytes: Vec<u8>,
    },
    WakeCourier(usize),
    TickReplicas,
    WakeCompute(usize),
    ComputeDone {
        actor: usize,
        batch: u64,
        items: Vec<WorkItem>,
    },
    StartJob(usize),
    /// A payment check's verdict reaches its compute courier.
    Admitted {
        actor: usize,
        admission: u64,
        verdict: Result<(), String>,
    },
    Fault {
        index: usize,
        end: bool,
    },
    /// Key epoch `e` begins: nodes switch to its key, clients to its
    /// topology.
    NewEpoch(u64),
    /// The grace period of key epoch `e` is over.
    RetireEpoch(u64),
}

enum Pending {
    Fetch {
        job: JobId,
        cap: Box<ReadCap>,
        ctx: Vec<u8>,
    },
    Store {
        job: JobId,
        output_box: BoxId,
    },
}

struct ComputeActor {
    courier: ComputeCourier,
    endpoint: usize,
    node: usize,
    surbs: HashMap<u64, Vec<u8>>,
    /// Fast-path dispatches' held SURBs, by token.
    held: HashMap<u64, Vec<u8>>,
    next_token: u64,
    pending: HashMap<BatchId, Pending>,
    wake: Option<Micros>,
    /// Echoes each job's input fetch took.
    fetch_echoes: HashMap<JobId, u64>,
}

enum Kind {
    User {
        jobs: Box<JobClient>,
        started: BTreeMap<ClientJobId, Micros>,
        count: usize,
    },
    Compute(usize),
}

struct Endpoint<K: Kem> {
    mix: Client<K>,
    storage: StorageClient<K>,
    gateway: usize,
    kind: Kind,
    wake: Option<Micros>,
}

struct ReplicaSlot<K: Kem> {
    machine: Replica<K>,
    store: MemoryStore,
    id: NodeId,
    down: bool,
    config: ReplicaConfig,
    key_seed: [u8; 32],
}

struct World<K: Kem> {
    config: JobsConfig,
    /// The current key epoch.
    epoch: u64,
    /// Each key epoch's topology, from the one document.
    topologies: Vec<std::sync::Arc<Topology<K>>>,
    geometry: funion_sphinx::Geometry,
    nodes: Vec<Node<K>>,
    node_config: Vec<NodeConfig>,
    node_keys: Vec<[u8; 32]>,
    node_down: Vec<bool>,
    link_class: Vec<&'static str>,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    node_wake: Vec<Option<Micros>>,
    couriers: Vec<Courier>,
    courier_wake: Vec<Option<Micros>>,
    service_nodes: Vec<usize>,
    replicas: Vec<ReplicaSlot<K>>,
    replica_index: HashMap<NodeId, usize>,
    endpoints: Vec<Endpoint<K>>,
    recipients: HashMap<[u8; 32], usize>,
    actors: Vec<ComputeActor>,
    queue: TimerQueue<Event>,
    crypto: ChaCha20Rng,
    sphinx: ChaCha20Rng,
    /// Each client's deposit and spends, and the provider's gate, when
    /// jobs pay.
    wallets: Vec<crate::credits::Wallet>,
    gate: Option<crate::credits::Gate>,
    /// Frames per link class (from, to), named in the report at the end.
    link_counts: BTreeMap<(&'static str, &'static str), u64>,
    links: ChaCha20Rng,
    work: ChaCha20Rng,
    slow: f64,
    spec: JobSpec,
    report: JobsReport,
    acknowledged: Vec<BoxId>,
    /// Trace name index of each node, replica and endpoint.
    node_name: Vec<u32>,
    replica_name: Vec<u32>,
    endpoint_name: Vec<u32>,
    /// Index into the trace's truth of each job in flight.
    truth_index: HashMap<(usize, ClientJobId), usize>,
    /// Echoes of each completed job by its first output box: the client's,
    /// and the compute courier's (fetch and store).
    client_echoes: BTreeMap<BoxId, u64>,
    courier_echoes: HashMap<BoxId, u64>,
    /// With a trace: each output's compute time and release time after
    /// the courier took the job, by output box.
    released: HashMap<BoxId, (Micros, Micros)>,
    /// With a trace: each client's read and done times after its
    /// dispatch, by output box (in completion order).
    read_times: BTreeMap<BoxId, (Micros, Micros)>,
}

/// The seed of a node's Sphinx key for `epoch`: the node's seed itself for
/// epoch 0, otherwise drawn from a stream of its own, so that adding epochs
/// takes nothing from the simulator's shared random streams.
fn epoch_key_seed(seed: &[u8; 32], epoch: u64) -> [u8; 32] {
    if epoch == 0 {
        return *seed;
    }
    let mut rng = ChaCha20Rng::from_seed(*seed);
    rng.set_stream(epoch);
    let mut out = [0u8; 32];
    rng.fill_bytes(&mut out);
    out
}

fn stream(seed: u64, purpose: u64) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(purpose);
    rng
}

impl<K: Kem> World<K> {
    fn observe(&mut self, at_us: Micros, from: u32, to: u32, bytes: usize, kind: FrameKind) {
        self.observe_packet(at_us, from, to, bytes, kind, &[]);
    }

    /// Observes a frame carrying `packet` (whose identity goes into the
    /// ground truth when it is a modelled packet).
    fn observe_packet(
        &mut self,
        at_us: Micros,
        from: u32,
        to: u32,
        bytes: usize,
        kind: FrameKind,
        packet: &[u8],
    ) {
        if let Some(trace) = &mut self.report.trace {
            let id = match packet.get(2..10) {
                Some(nonce) if self.config.abstract_packets => {
                    u64::from_le_bytes(nonce.try_into().expect("8 bytes"))
                }
                _ => 0,
            };
            trace.packets.push(id);
            trace.observations.push(Observation {
                at_us,
                from,
                to,
                bytes: bytes as u32,
                kind,
            });
        }
    }

    fn storage_name(&self, id: &NodeId) -> u32 {
        match self.replica_index.get(id) {
            Some(&r) => self.replica_name[r],
            None => self.index.get(id).map_or(u32::MAX, |&n| self.node_name[n]),
        }
    }

    fn count_link(&mut self, from: &'static str, to: &'static str) {
        *self.link_counts.entry((from, to)).or_default() += 1;
    }

    fn drop(&mut self, reason: &str) {
        *self.report.dropped.entry(reason.to_string()).or_default() += 1;
    }

    /// When a message sent now arrives, or `None` if the link loses it.
    fn transit(&mut self, now: Micros) -> Option<Micros> {
        let links = self.config.links;
        if links.loss > 0.0 {
            let draw = (self.links.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if draw < links.loss {
                self.drop("link_loss");
                return None;
            }
        }
        let jitter = if links.jitter_us > 0 {
            self.links.next_u64() % (links.jitter_us + 1)
        } else {
            0
        };
        Some(now + links.latency_us + jitter)
    }

    fn send_packet(&mut self, now: Micros, from: usize, to: NodeId, packet: Vec<u8>) {
        let Some(&target) = self.index.get(&to) else {
            return self.drop("unknown_next_hop");
        };
        self.count_link(self.link_class[from], self.link_class[target]);
        let (a, b) = (self.node_name[from], self.node_name[target]);
        // Every Sphinx packet is one length; a modelled one stands for it.
        let len = self.geometry.packet_len();
        self.observe_packet(now, a, b, len, FrameKind::Sphinx, &packet);
        if let Some(at) = self.transit(now) {
            let from = Source::Peer(self.ids[from]);
            let packet_event = Event::AtNode {
                node: target,
                from,
                packet,
            };
            self.queue.push(at, packet_event);
        }
    }

    fn send_storage(&mut self, now: Micros, from: NodeId, to: NodeId, bytes: Vec<u8>) {
        let class = |w: &Self, id: &NodeId| {
            if w.replica_index.contains_key(id) {
                "replica"
            } else {
                "courier"
            }
        };
        self.count_link(class(self, &from), class(self, &to));
        let (a, b) = (self.storage_name(&from), self.storage_name(&to));
        if let Some(trace) = &mut self.report.trace {
            if self.replica_index.contains_key(&from) && self.replica_index.contains_key(&to) {
                let op = match StorageMessage::decode(&bytes) {
                    Ok(StorageMessage::Write { item, .. }) => Some((true, item.id)),
                    Ok(StorageMessage::Read { box_id, .. }) => Some((false, box_id)),
                    _ => None,
                };
                if let Some((write, id)) = op {
                    trace.storage_ops.push(StorageOp {
                        observation: trace.observations.len() as u32,
                        write,
                        box_tag: u64::from_le_bytes(id[..8].try_into().expect("8 bytes")),
                    });
                }
            }
        }
        self.observe(now, a, b, bytes.len(), FrameKind::Storage);
        if let Some(at) = self.transit(now) {
            self.queue.push(at, Event::Storage { to, from, bytes });
        }
    }

    fn node_outputs(&mut self, now: Micros, node: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::PersistReplayTag { .. } => {}
                Output::Send { to, packet } => self.send_packet(now, node, to, packet),
                Output::Deliver {
                    recipient,
                    surb,
                    body,
                } => self.deliver(now, node, recipient, surb, body),
                Output::ReplyQueued { recipient } => {
                    let Some(&endpoint) = self.recipients.get(&recipient) else {
                        continue;
                    };
                    for reply in self.nodes[node].take_replies(&recipient) {
                        self.count_link("gateway", "client");
                        let (a, b) = (self.node_name[node], self.endpoint_name[endpoint]);
                        let len = self.geometry.payload_len();
                        self.observe(now, a, b, len, FrameKind::Reply);
                        if let Some(at) = self.transit(now) {
                            let event = Event::Reply {
                                endpoint,
                                surb_id: reply.surb_id,
                                payload: reply.payload,
                            };
                            self.queue.push(at, event);
                        }
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
                self.queue.push(at, Event::WakeNode(node));
            }
        }
    }

    fn service_of(&self, node: usize) -> Option<usize> {
        self.service_nodes.iter().position(|&n| n == node)
    }

    /// A message for a service on service node `node`.
    fn deliver(
        &mut self,
        now: Micros,
        node: usize,
        recipient: [u8; 32],
        surb: Vec<u8>,
        body: Vec<u8>,
    ) {
        let Some(service) = self.service_of(node) else {
            return self.drop("no_such_service");
        };
        if recipient == service_recipient(COURIER_SERVICE)
            || recipient == service_recipient(COURIER_WAIT_SERVICE)
        {
            let replicas = &self.replica_index;
            let is_replica = |id: &NodeId| replicas.contains_key(id);
            let courier = &mut self.couriers[service];
            let outputs = if recipient == service_recipient(COURIER_WAIT_SERVICE) {
                courier.handle_waiting_request(now, surb, &body, is_replica)
            } else {
                courier.handle_request(now, surb, &body, is_replica)
            };
            self.courier_outputs(now, service, outputs);
        } else if recipient == service_recipient(COMPUTE_SERVICE) {
            let actor = &mut self.actors[service];
            actor.next_token += 1;
            let token = actor.next_token;
            actor.surbs.insert(token, surb);
            actor.courier.receive(now, token, &body);
            self.drive_compute(now, service);
        } else if recipient == service_recipient(COMPUTE_FAST_SERVICE) {
            // A held SURB for the output, then the dispatch.
            let surb_len = self.geometry.surb_len();
            if body.len() < surb_len {
                return self.drop("short_fast_dispatch");
            }
            let params = &self.config.parameters;
            let usable_until = funion_pki::surb_usable_until(
                now,
                params.epoch_ms.max(1) * 1000,
                params.grace_ms * 1000,
            );
            let actor = &mut self.actors[service];
            actor.next_token += 1;
            let token = actor.next_token;
            actor.surbs.insert(token, surb);
            actor.held.insert(token, body[..surb_len].to_vec());
            let held = HeldSurb {
                surb: token,
                usable_until,
            };
            actor
                .courier
                .receive_fast(now, token, held, &body[surb_len..]);
            self.drive_compute(now, service);
        } else {
            self.drop("no_such_service");
        }
    }

    /// Sends `message` back through `surb` from service node `node`.
    fn surb_reply(&mut self, now: Micros, node: usize, surb: &[u8], message: &[u8]) {
        let reply = Surb::from_bytes::<K>(&self.geometry, surb).and_then(|surb| {
            let to = surb.first_hop();
            surb.reply(&self.geometry, message)
                .map(|packet| (to, packet))
        });
        match reply {
            Ok((to, packet)) => self.send_packet(now, node, to, packet),
            Err(_) => self.drop("bad_surb"),
        }
    }

    fn courier_outputs(&mut self, now: Micros, service: usize, outputs: Vec<CourierOutput>) {
        let node = self.service_nodes[service];
        for output in outputs {
            match output {
                CourierOutput::ToReplica { replica, message } => {
                    self.send_storage(now, self.ids[node], replica, message)
                }
                CourierOutput::Reply { surb, message } => {
                    self.surb_reply(now, node, &surb, &message)
                }
            }
        }
        if let Some(at) = self.couriers[service].next_deadline() {
            if self.courier_wake[service].is_none_or(|w| at < w) {
                self.courier_wake[service] = Some(at);
                self.queue.push(at, Event::WakeCourier(service));
            }
        }
    }

    fn replica_effects(&mut self, now: Micros, r: usize) {
        loop {
            let effects = self.replicas[r].machine.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    ReplicaEffect::Send { to, bytes } => {
                        let from = self.replicas[r].id;
                        self.send_storage(now, from, to, bytes)
                    }
                    ReplicaEffect::Storage(effect) => {
                        let slot = &mut self.replicas[r];
                        let answer = execute(&mut slot.store, effect, now / 1000);
                        slot.machine.answer(now, answer);
                    }
                }
            }
        }
    }

    fn storage_message(&mut self, now: Micros, to: NodeId, from: NodeId, bytes: Vec<u8>) {
        if let Some(&r) = self.replica_index.get(&to) {
            if self.replicas[r].down {
                return self.drop("replica_down");
            }
            self.replicas[r].machine.handle(now, from, &bytes);
            self.replica_effects(now, r);
        } else if let Some(service) = self.index.get(&to).and_then(|&node| self.service_of(node)) {
            if self.node_down[self.service_nodes[service]] {
                return self.drop("node_down");
            }
            let outputs = self.couriers[service].handle_replica_message(now, from, &bytes);
            self.courier_outputs(now, service, outputs);
        }
    }

    /// Hands an endpoint's storage echoes to its mixnet client, lets a
    /// user's jobs move, and sets its next wake-up.
    fn settle(&mut self, now: Micros, e: usize) {
        let endpoint = &mut self.endpoints[e];
        if let Kind::User { jobs, .. } = &mut endpoint.kind {
            jobs.poll(now, &mut self.crypto, &mut endpoint.storage);
        }
        for echo in endpoint.storage.take_echoes() {
            let recipient = service_recipient(echo.service);
            match echo.held_for_us {
                Some(life) => endpoint
                    .mix
                    .request_held(echo.seq, recipient, echo.node, echo.body, life),
                None => endpoint.mix.request_waiting(
                    echo.seq,
                    recipient,
                    echo.node,
                    echo.body,
                    echo.service_wait_us,
                ),
            }
        }
        self.acknowledged
            .extend(endpoint.storage.take_acknowledged());
        match &mut endpoint.kind {
            Kind::User { jobs, started, .. } => {
                let finished = jobs.take_finished();
                let next_job = !finished.is_empty();
                for (id, result) in finished {
                    let Some(start) = started.remove(&id) else {
                        continue;
                    };
                    if let (Some(trace), Some(i)) =
                        (&mut self.report.trace, self.truth_index.remove(&(e, id)))
                    {
                        trace.truth[i].ended_us = Some(now);
                        trace.truth[i].completed = result.is_ok();
                    }
                    match result {
                        Ok(result) => {
                            self.report.jobs_completed += 1;
                            if result.outcome == Outcome::Overflow {
                                self.report.jobs_overflowed += 1;
                            }
                            self.report.client_echoes_per_job.push(result.echoes);
                            if result.held_reply {
                                self.report.held_replies += 1;
                            }
                            self.client_echoes.insert(result.output_box, result.echoes);
                            if self.report.trace.is_some() {
                                let t = &result.timeline;
                                let after = |x: Micros| x.saturating_sub(t.dispatched);
                                // Through a held SURB there is no read: the
                                // client's last step is the output's arrival.
                                let read = if result.held_reply {
                                    t.done
                                } else {
                                    t.fetch_sent
                                };
                                self.read_times
                                    .insert(result.output_box, (after(read), after(t.done)));
                            }
                            let latency = result.timeline.done.saturating_sub(start);
                            self.report
                                .latency_minus_compute_us
                                .push(latency.saturating_sub(self.report.compute_us));
                        }
                        Err(failure) => {
                            *self
                                .report
                                .jobs_failed
                                .entry(failure.reason().to_string())
                                .or_default() += 1;
                        }
                    }
                }
                if next_job {
                    self.schedule_job(now, e);
                }
            }
            Kind::Compute(actor) => {
                let actor = *actor;
                self.compute_storage(now, actor);
            }
        }
        let endpoint = &self.endpoints[e];
        let mut at = endpoint.mix.next_deadline();
        for other in [endpoint.storage.next_wakeup(), self.user_wakeup(e)] {
            at = match (at, other) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if let Some(at) = at {
            let at = at.max(now);
            if self.endpoints[e].wake.is_none_or(|w| at < w) {
                self.endpoints[e].wake = Some(at);
                self.queue.push(at, Event::WakeEndpoint(e));
            }
        }
    }

    fn user_wakeup(&self, e: usize) -> Option<Micros> {
        match &self.endpoints[e].kind {
            Kind::User { jobs, .. } => jobs.next_wakeup(),
            Kind::Compute(_) => None,
        }
    }

    fn schedule_job(&mut self, now: Micros, e: usize) {
        let Kind::User { count, .. } = &self.endpoints[e].kind else {
            return;
        };
        if self.config.jobs_per_client.is_some_and(|n| *count >= n)
            || e + self.config.idle_clients >= self.config.clients
        {
            return;
        }
        let u = ((self.work.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let pause = (-u.ln() * self.config.think_us as f64) as Micros;
        self.queue.push(now + pause, Event::StartJob(e));
    }

    fn start_job(&mut self, now: Micros, e: usize) {
        // Jobs start in the first part of the run only, so those started
        // have time to finish.
        let last_start = self
            .config
            .duration_us
            .saturating_sub(self.last_start_margin());
        if now > last_start {
            return;
        }
        let mut spec = self.spec.clone();
        spec.sampling.seed = self.work.next_u64();
        if let (Some(gate), Some(wallet)) = (&self.gate, self.wallets.get_mut(e)) {
            let cell = (
                input_class_of(spec.tokens.len()).unwrap_or(0),
                spec.output_class,
            );
            match wallet.pay(gate.credits(), cell, now / 1_000_000, &mut self.crypto) {
                Ok(tickets) => spec.tickets = tickets,
                Err(unpaid) => {
                    // The client cannot pay: it stops.
                    self.report.jobs_started += 1;
                    *self
                        .report
                        .jobs_failed
                        .entry(unpaid.reason().to_string())
                        .or_default() += 1;
                    return;
                }
            }
        }
        let endpoint = &mut self.endpoints[e];
        let Kind::User {
            jobs,
            started,
            count,
        } = &mut endpoint.kind
        else {
            return;
        };
        let id = jobs.submit(now, &mut self.crypto, &mut endpoint.storage, spec);
        started.insert(id, now);
        if let Some(trace) = &mut self.report.trace {
            self.truth_index.insert((e, id), trace.truth.len());
            trace.truth.push(JobTruth {
                client: self.endpoint_name[e],
                started_us: now,
                ended_us: None,
                completed: false,
            });
        }
        *count += 1;
        self.report.jobs_started += 1;
        self.settle(now, e);
    }

    fn last_start_margin(&self) -> Micros {
        let echo =
            self.config.parameters.mean_delay_us * u64::from(self.config.parameters.hops) * 2;
        u64::from(self.report.bucket) * self.config.parameters.bucket_spacing_us + 12 * echo
    }

    fn wake_endpoint(&mut self, now: Micros, e: usize) {
        if self.endpoints[e].wake == Some(now) {
            self.endpoints[e].wake = None;
        }
        let endpoint = &mut self.endpoints[e];
        let requests_before = endpoint.mix.stats().requests_sent;
        let (packets, events) = endpoint.mix.poll(now, &mut self.sphinx);
        // Ground truth for the trace: a poll whose every packet was a
        // request (a poll mixing requests and loops, rare, is left out).
        let all_requests =
            endpoint.mix.stats().requests_sent - requests_before == packets.len() as u64;
        self.client_events(now, e, events);
        let endpoint = &mut self.endpoints[e];
        if endpoint.storage.poll(now, &mut self.crypto).is_err() {
            self.drop("storage_client_error");
        }
        let gateway = self.endpoints[e].gateway;
        for packet in packets {
            self.count_link("client", self.link_class[gateway]);
            let (a, b) = (self.endpoint_name[e], self.node_name[gateway]);
            let len = self.geometry.packet_len();
            self.observe_packet(now, a, b, len, FrameKind::Sphinx, &packet);
            if all_requests {
                if let Some(trace) = &mut self.report.trace {
                    if let Some(&id) = trace.packets.last().filter(|&&id| id != 0) {
                        trace.requests.insert(id);
                    }
                }
            }
            if let Some(at) = self.transit(now) {
                let event = Event::AtNode {
                    node: gateway,
                    from: Source::Client(e as u64),
                    packet,
                };
                self.queue.push(at, event);
            }
        }
        self.settle(now, e);
    }

    fn client_events(&mut self, now: Micros, e: usize, events: Vec<ClientEvent>) {
        let storage = &mut self.endpoints[e].storage;
        for event in events {
            match event {
                ClientEvent::Pong { seq, body, .. } => {
                    storage.handle_reply(now, seq, &body);
                }
                ClientEvent::HeldReply { seq, body } => {
                    storage.handle_held_reply(seq, body);
                }
                ClientEvent::GaveUp { seq } => {
                    storage.handle_lost(now, seq);
                }
                ClientEvent::LoopReturned { .. } => {}
            }
        }
    }

    fn drive_compute(&mut self, now: Micros, a: usize) {
        loop {
            let actions = self.actors[a].courier.poll(now);
            if actions.is_empty() {
                break;
            }
            for action in actions {
                self.compute_action(now, a, action);
            }
        }
        let e = self.actors[a].endpoint;
        self.settle(now, e);
        if let Some(at) = self.actors[a].courier.next_deadline() {
            let at = at.max(now + 1);
            if self.actors[a].wake.is_none_or(|w| at < w) {
                self.actors[a].wake = Some(at);
                self.queue.push(at, Event::WakeCompute(a));
            }
        }
    }

    fn compute_action(&mut self, now: Micros, a: usize, action: Action) {
        let e = self.actors[a].endpoint;
        match action {
            // The simulated couriers never crash: nothing to keep.
            Action::Persist(_) | Action::Forget { .. } => {}
            Action::Admit {
                admission,
                dispatch,
            } => {
                let Some(gate) = &mut self.gate else {
                    return self.actors[a].courier.admitted(now, admission, Ok(()));
                };
                let checked = gate.check(&dispatch, now / 1_000_000);
                let at = now + gate.delay_us(dispatch.tickets.len());
                let verdict = match checked {
                    Ok(_) => Ok(()),
                    Err(refusal) => {
                        *self
                            .report
                            .jobs_refused_unpaid
                            .entry(refusal.reason().to_string())
                            .or_default() += 1;
                        Err(refusal.to_string())
                    }
                };
                let event = Event::Admitted {
                    actor: a,
                    admission,
                    verdict,
                };
                self.queue.push(at, event);
            }
            Action::Reply { token, reply } => {
                if let Some(surb) = self.actors[a].surbs.remove(&token) {
                    let node = self.actors[a].node;
                    self.surb_reply(now, node, &surb, &reply.encode());
                }
                if matches!(reply, funion_compute::DispatchReply::Refused { .. }) {
                    self.actors[a].held.remove(&token);
                }
            }
            Action::Deliver {
                job,
                surb,
                payload,
                times,
                ..
            } => {
                let Some(held) = self.actors[a].held.remove(&surb) else {
                    return self.actors[a].courier.delivered(job, false);
                };
                let compute_us = match (times.started, times.finished) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => 0,
                };
                let release_after_us = now.saturating_sub(times.taken);
                let node = self.actors[a].node;
                let ok = Surb::from_bytes::<K>(&self.geometry, &held).is_ok();
                if ok {
                    self.surb_reply(now, node, &held, &payload);
                    let output_box = self.actors[a].courier.dispatch_of(job).and_then(|d| {
                        let cap = WriteCap::from_bytes(&d.write_cap_out).ok()?;
                        storage::box_id(&cap.read_cap(), &d.ctx_out, 0).ok()
                    });
                    if let Some(output_box) = output_box {
                        // One trip home; no echo of the courier's own.
                        self.courier_echoes.insert(output_box, 0);
                        if self.report.trace.is_some() {
                            self.released
                                .insert(output_box, (compute_us, release_after_us));
                        }
                    }
                }
                self.actors[a].courier.delivered(job, ok);
            }
            Action::Fetch {
                job,
                read_cap,
                ctx,
                input_class,
            } => {
                let storage = &mut self.endpoints[e].storage;
                let count = funion_compute::client::boxes_for(
                    Input::padded_len(input_class),
                    storage.box_payload(),
                );
                let started = ReadCap::from_bytes(&read_cap)
                    .map_err(|e| e.to_string())
                    .and_then(|cap| {
                        let requests =
                            read_requests(&cap, &ctx, count).map_err(|e| e.to_string())?;
                        let batch = storage
                            .start(&mut self.crypto, requests)
                            .map_err(|e| e.to_string())?;
                        Ok((cap, batch))
                    });
                match started {
                    Ok((cap, batch)) => {
                        let pending = Pending::Fetch {
                            job,
                            cap: Box::new(cap),
                            ctx,
                        };
                        self.actors[a].pending.insert(batch, pending);
                    }
                    Err(reason) => self.actors[a].courier.fetched(now, job, Err(reason)),
                }
            }
            Action::Run { batch, items } => {
                let n_out = items
                    .iter()
                    .map(|i| i.sampling.max_tokens.min(i.output_class))
                    .max()
                    .unwrap_or(0);
                let mut time = self.config.compute.time_us(n_out) as f64 * self.slow;
                let spread = self.config.compute_spread.clamp(0.0, 1.0);
                if spread > 0.0 {
                    let u = (self.work.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    time *= 1.0 - spread + 2.0 * spread * u;
                }
                let event = Event::ComputeDone {
                    actor: a,
                    batch,
                    items,
                };
                self.queue.push(now + time as Micros, event);
            }
            Action::Store {
                job,
                write_cap,
                ctx,
                payload,
                times,
                ..
            } => {
                let compute_us = match (times.started, times.finished) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => 0,
                };
                let release_after_us = now.saturating_sub(times.taken);
                let storage = &mut self.endpoints[e].storage;
                let box_len = storage.box_payload();
                let requests = WriteCap::from_bytes(&write_cap)
                    .map_err(|e| e.to_string())
                    .and_then(|cap| {
                        write_requests(&mut Writer::new(cap, &ctx), &payload, box_len)
                            .map_err(|e| e.to_string())
                    });
                let started = requests.and_then(|r| {
                    let output_box = match r.first() {
                        Some(Request::Write(item)) => item.id,
                        _ => return Err("no output box".to_string()),
                    };
                    let batch = storage
                        .start(&mut self.crypto, r)
                        .map_err(|e| e.to_string())?;
                    Ok((batch, output_box))
                });
                match started {
                    Ok((batch, output_box)) => {
                        if self.report.trace.is_some() {
                            self.released
                                .insert(output_box, (compute_us, release_after_us));
                        }
                        let pending = Pending::Store { job, output_box };
                        self.actors[a].pending.insert(batch, pending);
                    }
                    Err(_) => self.actors[a].courier.stored(job, false),
                }
            }
        }
    }

    /// A compute courier's finished fetches and stores.
    fn compute_storage(&mut self, now: Micros, a: usize) {
        let e = self.actors[a].endpoint;
        let finished = self.endpoints[e].storage.take_finished();
        if finished.is_empty() {
            return;
        }
        for (batch, results) in finished {
            match self.actors[a].pending.remove(&batch) {
                Some(Pending::Fetch { job, cap, ctx }) => {
                    let echoes = self.endpoints[e].storage.echoes_of(batch);
                    *self.actors[a].fetch_echoes.entry(job).or_default() += echoes;
                    if funion_compute::client::not_there_yet(&results) {
                        // The upload, sent beside the dispatch, has not
                        // landed yet: read again shortly.
                        self.actors[a].courier.input_missing(now, job);
                        continue;
                    }
                    let input = open_stream(&cap, &ctx, results).map_err(|e| e.to_string());
                    self.actors[a].courier.fetched(now, job, input);
                }
                Some(Pending::Store { job, output_box }) => {
                    let fetch = self.actors[a].fetch_echoes.remove(&job).unwrap_or(0);
                    let store = self.endpoints[e].storage.echoes_of(batch);
                    self.courier_echoes.insert(output_box, fetch + store);
                    let ok = results.iter().all(|r| r.is_ok());
                    self.actors[a].courier.stored(job, ok);
                }
                None => {}
            }
        }
        self.drive_compute(now, a);
    }

    fn compute_done(&mut self, now: Micros, a: usize, batch: u64, items: Vec<WorkItem>) {
        let outcomes = items
            .into_iter()
            .map(|item| {
                let n = item.sampling.max_tokens.min(item.output_class);
                let outcome = match item.task {
                    Task::Generate => Outcome::Tokens(vec![0; n as usize]),
                    Task::Embed => Outcome::Embedding(vec![0.0; 384]),
                };
                (item.job, Ok(outcome))
            })
            .collect();
        self.actors[a].courier.finished(now, batch, outcomes);
        self.drive_compute(now, a);
    }

    fn fault(&mut self, now: Micros, index: usize, end: bool) {
        match self.config.faults[index].clone() {
            Fault::ReplicaDown { replica, .. } => {
                let Some(slot) = self.replicas.get_mut(replica) else {
                    return;
                };
                slot.down = !end;
                if end {
                    // A restart: the store is as the crash left it, the
                    // machine's memory (operations in flight, copies sent)
                    // is gone.
                    slot.machine = Replica::new(slot.config.clone());
                    let key = K::secret_from_seed(&slot.key_seed);
                    slot.machine.add_epoch_key(0, key);
                    slot.machine.set_epoch(0);
                    let replicas = self.replica_ids();
                    let slot = &mut self.replicas[replica];
                    slot.machine.set_replicas(replicas);
                    self.replica_effects(now, replica);
                }
            }
            Fault::NodeDown { node, .. } => {
                if node >= self.nodes.len() {
                    return;
                }
                self.node_down[node] = !end;
                if !end {
                    // A crash loses the delay queue.
                    // It comes back with the keys of the previous epoch
                    // (while in its grace period), the current and the next.
                    let mut fresh = Node::<K>::new(self.node_config[node].clone(), self.geometry);
                    let epoch_us = self.config.parameters.epoch_ms.max(1) * 1000;
                    let grace_us = self.config.parameters.grace_ms * 1000;
                    let in_grace = self.epoch > 0 && now < self.epoch * epoch_us + grace_us;
                    let first = if in_grace { self.epoch - 1 } else { self.epoch };
                    for e in first..=self.epoch + 1 {
                        let key = K::secret_from_seed(&epoch_key_seed(&self.node_keys[node], e));
                        fresh
                            .add_epoch_key(e, key, [])
                            .expect("geometry matches the KEM");
                    }
                    fresh.set_current_epoch(self.epoch);
                    self.nodes[node] = fresh;
                    self.node_wake[node] = None;
                }
            }
            Fault::SlowCompute { factor, .. } => {
                self.slow = if end { 1.0 } else { factor.max(0.0) };
            }
        }
    }

    /// Key epoch `e` begins: each node adds the next epoch's key, drops the
    /// one before the previous, and switches; each client takes the new
    /// topology. The previous key is retired after the grace period.
    fn new_epoch(&mut self, e: u64) {
        self.epoch = e;
        for (node, seed) in self.nodes.iter_mut().zip(&self.node_keys) {
            let key = K::secret_from_seed(&epoch_key_seed(seed, e + 1));
            node.add_epoch_key(e + 1, key, [])
                .expect("geometry matches the KEM");
            if e >= 2 {
                node.retire_epoch(e - 2);
            }
            node.set_current_epoch(e);
        }
        let topology = &self.topologies[e as usize];
        for endpoint in &mut self.endpoints {
            endpoint.mix.set_topology(topology.clone());
        }
    }

    fn replica_ids(&self) -> Vec<NodeId> {
        self.replicas.iter().map(|r| r.id).collect()
    }
}

/// The smallest bucket that leaves room for the compute and four echoes
/// (the compute courier's fetch, its store, and margin for polls).
pub fn default_bucket(parameters: &Parameters, compute_us: Micros) -> u32 {
    let echo = parameters.mean_delay_us * (u64::from(parameters.hops) * 2 - 1);
    let delta = parameters.bucket_spacing_us.max(1);
    (compute_us + 4 * echo).div_ceil(delta) as u32
}

/// The smallest bucket for `path` at these parameters: the serial path's
/// [`default_bucket`]; on the others the bucket counts from the input in
/// hand, so it covers the batch window and the compute alone.
pub fn bucket_for(
    path: JobPath,
    parameters: &Parameters,
    compute_us: Micros,
    batch_window_us: Micros,
) -> u32 {
    match path {
        JobPath::Serial => default_bucket(parameters, compute_us),
        JobPath::Fast | JobPath::Store => {
            let delta = parameters.bucket_spacing_us.max(1);
            (compute_us + batch_window_us).div_ceil(delta).max(1) as u32
        }
    }
}

/// Runs whole jobs with KEM `K`.
pub fn run_jobs<K: Kem>(config: &JobsConfig) -> JobsReport {
    let parameters = config.parameters.clone();
    let geometry = parameters.geometry().expect("valid parameters");
    let geometry = if config.abstract_packets {
        geometry.modelled()
    } else {
        geometry
    };
    let mut crypto = stream(config.seed, 1);
    let epoch = 0;
    // Mix keys rotate every `epoch_ms` as in the runtime; the document lists
    // every epoch the run reaches, and one more.
    let epoch_us = parameters.epoch_ms.max(1) * 1000;
    let last_epoch = config.duration_us / epoch_us;

    let mut layout: Vec<(Role, u8, String, &'static str)> = (0..config.gateways.max(1))
        .map(|i| (Role::Gateway, 0, format!("gateway{i}"), "gateway"))
        .collect();
    const LAYER_CLASS: [&str; 4] = ["mix1", "mix2", "mix3", "mix"];
    for layer in 1..=parameters.layers {
        let class = LAYER_CLASS[usize::from(layer - 1).min(3)];
        layout.extend(
            (0..config.mixes_per_layer)
                .map(|i| (Role::Mix, layer, format!("mix{layer}.{i}"), class)),
        );
    }
    layout
        .extend((0..config.services).map(|i| (Role::Service, 0, format!("service{i}"), "service")));
    let mut entries = Vec::new();
    let mut nodes = Vec::new();
    let mut node_config = Vec::new();
    let mut node_keys = Vec::new();
    let mut link_class = Vec::new();
    let mut index = HashMap::new();
    let mut ids = Vec::new();
    let mut service_nodes = Vec::new();
    let mut trace_names: Vec<String> = Vec::new();
    for (role, layer, name, class) in layout {
        trace_names.push(name.clone());
        let mut seed = [0u8; 32];
        crypto.fill_bytes(&mut seed);
        let identity = SigningKey::from_bytes(&seed);
        let mut key_seed = [0u8; 32];
        crypto.fill_bytes(&mut key_seed);
        let secret = K::secret_from_seed(&key_seed);
        let sphinx_keys = (0..=last_epoch + 1)
            .map(|e| {
                let public = if e == 0 {
                    K::public_key(&secret)
                } else {
                    K::public_key(&K::secret_from_seed(&epoch_key_seed(&key_seed, e)))
                };
                EpochKey {
                    epoch: e,
                    public_key: K::public_key_bytes(&public),
                }
            })
            .collect();
        let entry = NodeEntry {
            name: name.clone(),
            role,
            layer,
            identity_key: identity.verifying_key().to_bytes(),
            link_key: [0; 32],
            addresses: vec![format!("sim:{name}")],
            sphinx_keys,
            models: Vec::new(),
            // Every service node runs a compute courier in the simulator.
            fast_path: role == Role::Service,
        };
        // The gateway lets each client send at twice its rate: the couriers'
        // clients, when they send faster, too.
        let fastest = parameters
            .send_rate()
            .max(config.courier_send_rate.unwrap_or(0.0));
        let mut nc = NodeConfig::for_role(role, fastest);
        if role == Role::Service {
            nc.external_services
                .push(service_recipient(COURIER_SERVICE));
            nc.external_services
                .push(service_recipient(COURIER_WAIT_SERVICE));
            nc.external_services
                .push(service_recipient(COMPUTE_SERVICE));
            nc.external_services
                .push(service_recipient(COMPUTE_FAST_SERVICE));
            service_nodes.push(nodes.len());
        }
        let mut node = Node::<K>::new(nc.clone(), geometry);
        node.add_epoch_key(epoch, secret, [])
            .expect("geometry matches the KEM");
        node.add_epoch_key(
            epoch + 1,
            K::secret_from_seed(&epoch_key_seed(&key_seed, epoch + 1)),
            [],
        )
        .expect("geometry matches the KEM");
        node.set_current_epoch(epoch);
        index.insert(entry.id(), nodes.len());
        ids.push(entry.id());
        nodes.push(node);
        node_config.push(nc);
        node_keys.push(key_seed);
        link_class.push(class);
        entries.push(entry);
    }
    let sizes = Sizes::for_geometry(&geometry).expect("payload holds an envelope");
    let k = usize::from(parameters.replicas.max(1));
    let mut replicas = Vec::new();
    let mut replica_index = HashMap::new();
    for i in 0..config.replicas {
        trace_names.push(format!("replica{i}"));
        let mut seed = [0u8; 32];
        crypto.fill_bytes(&mut seed);
        let identity = SigningKey::from_bytes(&seed);
        let mut key_seed = [0u8; 32];
        crypto.fill_bytes(&mut key_seed);
        let secret = K::secret_from_seed(&key_seed);
        let public = K::public_key(&secret);
        let entry = NodeEntry {
            name: format!("replica{i}"),
            role: Role::Replica,
            layer: 0,
            identity_key: identity.verifying_key().to_bytes(),
            link_key: [0; 32],
            addresses: vec![format!("sim:replica{i}")],
            // A replica's envelope key does not rotate with the mixes' keys
            // (in the runtime neither): the same key under every epoch.
            sphinx_keys: (0..=last_epoch + 1)
                .map(|e| EpochKey {
                    epoch: e,
                    public_key: K::public_key_bytes(&public),
                })
                .collect(),
            models: Vec::new(),
            fast_path: false,
        };
        let id = entry.id();
        let rc = ReplicaConfig::new(id, sizes, k, 86_400);
        let mut machine = Replica::<K>::new(rc.clone());
        machine.add_epoch_key(epoch, secret);
        machine.set_epoch(epoch);
        replica_index.insert(id, i);
        replicas.push(ReplicaSlot {
            machine,
            store: MemoryStore::new(86_400_000),
            id,
            down: false,
            config: rc,
            key_seed,
        });
        entries.push(entry);
    }
    let replica_ids: Vec<NodeId> = replicas.iter().map(|r| r.id).collect();
    for r in &mut replicas {
        r.machine.set_replicas(replica_ids.clone());
    }
    let document = NetworkDocument::new(epoch, parameters.clone(), entries)
        .expect("simulated network is valid");
    let topologies: Vec<std::sync::Arc<Topology<K>>> = (0..=last_epoch)
        .map(|e| std::sync::Arc::new(Topology::from_document(&document, e).expect("keys decode")))
        .collect();
    let topology = topologies[0].clone();
    let replica_keys: Vec<(NodeId, K::PublicKey)> = topology
        .replicas
        .iter()
        .map(|h| (h.id, h.public_key.clone()))
        .collect();

    let output_class = funion_compute::class_for(
        &funion_compute::OUTPUT_CLASSES,
        config.output_tokens as usize,
    )
    .unwrap_or(*funion_compute::OUTPUT_CLASSES.last().expect("classes"));
    let sampling = Sampling {
        max_tokens: config.output_tokens.min(output_class),
        ..Sampling::default()
    };
    // The courier computes the tokens the wire asks for (a power of two),
    // so that is the compute the bucket must cover and the latency excludes.
    let compute_us = config
        .compute
        .time_us(sampling.on_the_wire(output_class).max_tokens);
    let courier_rate = config.courier_send_rate.unwrap_or(parameters.send_rate());
    let timing = MixTiming {
        courier_gap_us: 1e6 / courier_rate.max(1e-9),
        ..MixTiming::new(
            parameters.mean_delay_us as f64,
            u32::from(parameters.hops),
            parameters.send_rate(),
        )
    };
    let batch_window_us = ComputeConfig::default().batch_window_us;
    let bucket = config
        .bucket
        .unwrap_or_else(|| bucket_for(config.path, &parameters, compute_us, batch_window_us));
    let spec = JobSpec {
        model: "sim".into(),
        task: Task::Generate,
        tokens: vec![1; config.input_tokens],
        output_class,
        sampling,
        bucket,
        tickets: Vec::new(),
        courier: None,
        path: config.path,
    };
    let read_plan = match (config.path, config.read_quantile) {
        (JobPath::Serial, _) => ReadPlan::default(),
        (_, Some(q)) => ReadPlan::reading_at(&timing, q),
        (_, None) => ReadPlan::from_timing(&timing),
    };

    let mut endpoints = Vec::new();
    let mut recipients = HashMap::new();
    let mut actors = Vec::new();
    let send_rate = parameters.send_rate();
    let endpoint_count = config.clients + config.services;
    for e in 0..endpoint_count {
        trace_names.push(if e < config.clients {
            format!("client{e}")
        } else {
            format!("compute{}", e - config.clients)
        });
        let mut recipient = [0u8; 32];
        crypto.fill_bytes(&mut recipient);
        recipients.insert(recipient, e);
        let client_config = ClientConfig {
            recipient,
            mean_delay_us: parameters.mean_delay_us as f64,
            send_rate: match config.courier_send_rate {
                Some(rate) if e >= config.clients => rate,
                _ => send_rate,
            },
            retransmit_after_us: parameters.mean_delay_us * 60 + config.courier_hold_us * 2,
            max_lag_us: u64::MAX,
            max_attempts: 3,
            cover: config.cover,
            loops_through_service: !config.loops_skip_service,
        };
        let mix = Client::new(client_config, geometry, topology.clone(), &mut crypto);
        let gateway = index[&mix.gateway().id];
        let mut storage_config = storage::ClientConfig::new(k);
        storage_config.record_acknowledged = true;
        let mut storage =
            StorageClient::new(storage_config, sizes, replica_keys.clone(), config.services)
                .expect("at least two replicas");
        storage.set_held_limits(mix.max_held_body(), mix.max_reply());
        let kind = if e < config.clients {
            let courier = (crypto.next_u64() % config.services.max(1) as u64) as usize;
            let mut jobs = if config.courier_per_run {
                JobClient::new(courier)
            } else {
                JobClient::per_job(config.services)
            };
            jobs.set_read_plan(read_plan);
            Kind::User {
                jobs: Box::new(jobs),
                started: BTreeMap::new(),
                count: 0,
            }
        } else {
            let service = e - config.clients;
            actors.push(ComputeActor {
                courier: ComputeCourier::new(ComputeConfig {
                    delta_us: parameters.bucket_spacing_us,
                    max_bucket: bucket.max(1) * 4,
                    served: vec![("sim".into(), Task::Generate)],
                    release_at_finish: config.release_at_finish,
                    max_running: config.compute_workers.max(1),
                    ..ComputeConfig::default()
                }),
                endpoint: e,
                node: service_nodes[service],
                surbs: HashMap::new(),
                held: HashMap::new(),
                next_token: 0,
                pending: HashMap::new(),
                wake: None,
                fetch_echoes: HashMap::new(),
            });
            Kind::Compute(service)
        };
        endpoints.push(Endpoint {
            mix,
            storage,
            gateway,
            kind,
            wake: None,
        });
    }
    // The courier remembers an envelope long enough for every poll of it
    // (a dozen echoes and two holds), scaled to the network's delays: its
    // runtime default (300 s, 4,096 envelopes) would cap a millisecond
    // network at 14 envelopes a second per courier.
    let echo_us = parameters.mean_delay_us * (u64::from(parameters.hops) * 2 - 1);
    let couriers = (0..config.services)
        .map(|_| {
            Courier::new(
                sizes,
                CourierConfig {
                    hold_us: config.courier_hold_us,
                    cache_us: (12 * echo_us + 2 * config.courier_hold_us).max(1_000_000),
                    ..CourierConfig::default()
                },
            )
        })
        .collect();

    let node_count = nodes.len();
    let (wallets, gate) = if config.tickets {
        let (wallets, gate) = crate::credits::deposits(
            &parameters.credits,
            config.clients,
            config.ticket_limit,
            config.double_spenders,
            config.ticket_verify_us,
            &mut crypto,
        );
        (wallets, Some(gate))
    } else {
        (Vec::new(), None)
    };
    let mut world = World {
        epoch,
        topologies,
        wallets,
        gate,
        geometry,
        node_wake: vec![None; nodes.len()],
        node_down: vec![false; nodes.len()],
        nodes,
        node_config,
        node_keys,
        link_class,
        ids,
        index,
        couriers,
        courier_wake: vec![None; config.services],
        service_nodes,
        replicas,
        replica_index,
        endpoints,
        recipients,
        actors,
        queue: TimerQueue::default(),
        crypto,
        sphinx: stream(config.seed, 4),
        link_counts: BTreeMap::new(),
        links: stream(config.seed, 2),
        work: stream(config.seed, 3),
        slow: 1.0,
        spec,
        report: JobsReport {
            bucket,
            path: config.path,
            compute_us,
            trace: config.trace.then(|| Trace {
                names: trace_names,
                ..Trace::default()
            }),
            ..JobsReport::default()
        },
        acknowledged: Vec::new(),
        node_name: (0..node_count as u32).collect(),
        replica_name: (0..config.replicas as u32)
            .map(|r| node_count as u32 + r)
            .collect(),
        endpoint_name: (0..endpoint_count as u32)
            .map(|e| (node_count + config.replicas) as u32 + e)
            .collect(),
        truth_index: HashMap::new(),
        client_echoes: BTreeMap::new(),
        courier_echoes: HashMap::new(),
        released: HashMap::new(),
        read_times: BTreeMap::new(),
        config: config.clone(),
    };
    for e in 0..world.endpoints.len() {
        world.queue.push(0, Event::WakeEndpoint(e));
        if e < config.clients {
            world.schedule_job(0, e);
        }
    }
    world.queue.push(0, Event::TickReplicas);
    if last_epoch > 0 {
        world.queue.push(epoch_us, Event::NewEpoch(1));
    }
    for (index, fault) in config.faults.iter().enumerate() {
        let (at, until) = match fault {
            Fault::ReplicaDown {
                at_us, until_us, ..
            }
            | Fault::NodeDown {
                at_us, until_us, ..
            }
            | Fault::SlowCompute {
                at_us, until_us, ..
            } => (*at_us, *until_us),
        };
        world.queue.push(at, Event::Fault { index, end: false });
        world
            .queue
            .push(until.max(at), Event::Fault { index, end: true });
    }

    while let Some((now, event)) = world.queue.pop() {
        if now > config.duration_us {
            break;
        }
        world.report.events += 1;
        match event {
            Event::AtNode { node, from, packet } => {
                if world.node_down[node] {
                    world.drop("node_down");
                    continue;
                }
                let outputs = world.nodes[node].handle_packet(now, from, packet);
                world.node_outputs(now, node, outputs);
            }
            Event::WakeNode(node) => {
                if world.node_wake[node] == Some(now) {
                    world.node_wake[node] = None;
                }
                if !world.node_down[node] {
                    let outputs = world.nodes[node].poll(now);
                    world.node_outputs(now, node, outputs);
                }
            }
            Event::WakeEndpoint(e) => world.wake_endpoint(now, e),
            Event::Reply {
                endpoint,
                surb_id,
                payload,
            } => {
                let events: Vec<_> = world.endpoints[endpoint]
                    .mix
                    .handle_reply(now, surb_id, &payload)
                    .into_iter()
                    .collect();
                world.client_events(now, endpoint, events);
                world.settle(now, endpoint);
            }
            Event::Storage { to, from, bytes } => world.storage_message(now, to, from, bytes),
            Event::WakeCourier(service) => {
                if world.courier_wake[service] == Some(now) {
                    world.courier_wake[service] = None;
                }
                let outputs = world.couriers[service].poll(now);
                world.courier_outputs(now, service, outputs);
            }
            Event::TickReplicas => {
                for r in 0..world.replicas.len() {
                    if !world.replicas[r].down {
                        world.replicas[r].machine.tick(now);
                        world.replica_effects(now, r);
                    }
                }
                world.queue.push(now + 50_000, Event::TickReplicas);
            }
            Event::WakeCompute(a) => {
                if world.actors[a].wake == Some(now) {
                    world.actors[a].wake = None;
                }
                world.drive_compute(now, a);
            }
            Event::ComputeDone {
                actor,
                batch,
                items,
            } => world.compute_done(now, actor, batch, items),
            Event::StartJob(e) => world.start_job(now, e),
            Event::Admitted {
                actor,
                admission,
                verdict,
            } => {
                world.actors[actor]
                    .courier
                    .admitted(now, admission, verdict);
                world.drive_compute(now, actor);
            }
            Event::Fault { index, end } => world.fault(now, index, end),
            Event::NewEpoch(e) => {
                world.new_epoch(e);
                let grace_us = parameters.grace_ms * 1000;
                world.queue.push(now + grace_us, Event::RetireEpoch(e - 1));
                if e < last_epoch {
                    world.queue.push(now + epoch_us, Event::NewEpoch(e + 1));
                }
            }
            Event::RetireEpoch(e) => {
                for node in &mut world.nodes {
                    node.retire_epoch(e);
                }
            }
        }
    }

    let client_echoes = std::mem::take(&mut world.client_echoes);
    for (output_box, client) in client_echoes {
        if let Some(courier) = world.courier_echoes.get(&output_box) {
            world.report.echoes_per_job.push(client + courier);
        }
    }
    let read_times = std::mem::take(&mut world.read_times);
    if let Some(trace) = &mut world.report.trace {
        for (output_box, (read_after_us, done_after_us)) in read_times {
            if let Some(&(compute_us, release_after_us)) = world.released.get(&output_box) {
                trace.computes.push(ComputeTruth {
                    compute_us,
                    bucket: world.report.bucket,
                    release_after_us,
                    read_after_us,
                    done_after_us,
                });
            }
        }
    }
    // Every acknowledged write must be on at least one of its holders.
    let now_ms = config.duration_us / 1000;
    let ids = world.replica_ids();
    let acknowledged = std::mem::take(&mut world.acknowledged);
    world.report.links = std::mem::take(&mut world.link_counts)
        .into_iter()
        .map(|((from, to), n)| (format!("{from}→{to}"), n))
        .collect();
    world.report.writes_acknowledged = acknowledged.len() as u64;
    if let Some(gate) = &world.gate {
        world.report.tickets_accepted = gate.accepted;
        world.report.deposits_slashed = gate.slashed.len() as u64;
    }
    for box_id in acknowledged {
        let held = shard::holders(&box_id, &ids, k).iter().any(|holder| {
            let r = world.replica_index[holder];
            matches!(world.replicas[r].store.get(&box_id, now_ms), Ok(Some(_)))
        });
        if !held {
            world.report.writes_lost += 1;
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
    world.report.refetches = world
        .actors
        .iter()
        .map(|a| a.courier.counters().refetches)
        .sum();
    world.report.jobs_unfinished = world
        .endpoints
        .iter()
        .map(|e| match &e.kind {
            Kind::User { started, .. } => started.len() as u64,
            Kind::Compute(_) => 0,
        })
        .sum();
    world.report
}
