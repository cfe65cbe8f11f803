//! What cover traffic costs on this machine, measured now (under whatever
//! else the machine is doing), so a demo or an operator can pick a send rate
//! the CPU can carry instead of one that saturates it.
//!
//! One loop packet costs its client the packet (a SURB over every hop: one
//! KEM encapsulation per hop), and then, at each of its hops, one Sphinx
//! unwrap (a decapsulation, a MAC, the payload SPRP) and one trip over a
//! Noise link (encrypt, loopback TCP, decrypt). [`measure`] times each with
//! the very code the network runs: the mixnet client and node state machines
//! and a real Noise link on loopback. Times are wall-clock per operation on
//! one thread, so a machine whose cores are shared with other work measures
//! slower, which is the point.

use std::time::{Duration, Instant};

use funion_mixnet::{Client, ClientConfig, Hop, Node, NodeConfig, Output, Source, Topology};
use funion_pki::{KemKind, Parameters, Role};
use funion_sphinx::kem::{Kem, XWing, X25519};
use funion_sphinx::NodeId;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use funion_net::link::{self, Frame, FrameReceiver, FrameSender};

/// CPU time a running node spends per packet beyond the cryptography and
/// the link measured here (task wake-ups, channels, copying 37 kB frames
/// between tasks, the timer wheel, the replay log): measured once as an idle
/// `--fast` devnet's process CPU over the cover it carried, divided by
/// [`CoverCost::per_loop_us`] (see docs/overload.md).
pub const RUNTIME_OVERHEAD: f64 = 1.4;

/// The measured cost of cover traffic, per packet.
#[derive(Clone, Debug, PartialEq)]
pub struct CoverCost {
    /// Building one loop packet at a client, microseconds.
    pub build_us: f64,
    /// One Sphinx unwrap at a node, microseconds.
    pub unwrap_us: f64,
    /// One frame over a Noise link on loopback, both ends, microseconds.
    pub link_us: f64,
    /// Hops a loop takes (gateway, mixes, gateway).
    pub hops: usize,
    /// Cores this process may use.
    pub cores: usize,
}

impl CoverCost {
    /// CPU microseconds one loop costs the whole network, the runtime's
    /// overhead ([`RUNTIME_OVERHEAD`]) included.
    pub fn per_loop_us(&self) -> f64 {
        let crypto = self.build_us + self.hops as f64 * (self.unwrap_us + self.link_us);
        crypto * RUNTIME_OVERHEAD
    }

    /// Cores' worth of CPU that `clients` clients sending `rate` slots a
    /// second cost the network (every slot is a loop when nobody works).
    pub fn cores_for(&self, clients: usize, rate: f64) -> f64 {
        clients as f64 * rate * self.per_loop_us() / 1e6
    }

    /// The highest send rate at which `clients` clients' cover takes at
    /// most `share` of this process's cores.
    pub fn rate_within(&self, clients: usize, share: f64) -> f64 {
        share * self.cores as f64 * 1e6 / (clients.max(1) as f64 * self.per_loop_us())
    }
}

/// Measures the cost of cover for the network `parameters` describe, for
/// about `budget` in all (at least 16 loops and 64 link frames).
pub async fn measure(parameters: &Parameters, budget: Duration) -> anyhow::Result<CoverCost> {
    let (build_us, unwrap_us) = match parameters.kem {
        KemKind::XWing => sphinx_costs::<XWing>(parameters, budget / 2)?,
        KemKind::X25519 => sphinx_costs::<X25519>(parameters, budget / 2)?,
    };
    let packet_len = parameters.geometry()?.packet_len();
    let link_us = link_cost(packet_len, budget / 2).await?;
    Ok(CoverCost {
        build_us,
        unwrap_us,
        link_us,
        hops: usize::from(parameters.hops),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// Builds loops with the client core and unwraps them through a gateway
/// and one mix per layer, timing each side.
fn sphinx_costs<K: Kem>(parameters: &Parameters, budget: Duration) -> anyhow::Result<(f64, f64)> {
    let geometry = parameters.geometry()?;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut nodes = Vec::new();
    let mut hops = Vec::new();
    let layers = usize::from(parameters.layers);
    for i in 0..=layers {
        let mut seed = [0u8; 32];
        seed[0] = i as u8 + 1;
        let secret = K::secret_from_seed(&seed);
        let id = NodeId([i as u8 + 1; 32]);
        hops.push(Hop::<K> {
            id,
            name: format!("node{i}"),
            public_key: K::public_key(&secret),
        });
        let role = if i == 0 { Role::Gateway } else { Role::Mix };
        let mut config = NodeConfig::for_role(role, parameters.send_rate());
        config.client_rate = f64::MAX;
        config.client_burst = f64::MAX;
        let mut node = Node::<K>::new(config, geometry);
        node.add_epoch_key(0, secret, Vec::new())?;
        node.set_current_epoch(0);
        nodes.push((id, node));
    }
    let topology = Topology {
        epoch: 0,
        gateways: vec![hops[0].clone()],
        layers: hops[1..].iter().map(|h| vec![h.clone()]).collect(),
        services: Vec::new(),
        replicas: Vec::new(),
    };
    let config = ClientConfig {
        recipient: [7; 32],
        mean_delay_us: parameters.mean_delay_us as f64,
        send_rate: 1.0,
        retransmit_after_us: u64::MAX / 4,
        max_lag_us: u64::MAX,
        max_attempts: 1,
        cover: true,
        loops_through_service: true,
    };
    let mut client = Client::new(config, geometry, topology, &mut rng);
    let (mut built, mut build_time) = (0u32, Duration::ZERO);
    let (mut unwrapped, mut unwrap_time) = (0u32, Duration::ZERO);
    let mut now: u64 = 0;
    let started = Instant::now();
    while built < 16 || started.elapsed() < budget {
        now += 10_000_000;
        let clock = Instant::now();
        let (packets, _) = client.poll(now, &mut rng);
        build_time += clock.elapsed();
        built += packets.len() as u32;
        for packet in packets {
            let (mut at, mut source, mut packet) = (0usize, Source::Client(1), packet);
            loop {
                let clock = Instant::now();
                let outputs = nodes[at].1.handle_packet(now, source, packet);
                unwrap_time += clock.elapsed();
                unwrapped += 1;
                let later = nodes[at].1.poll(u64::MAX / 2);
                let next = outputs.into_iter().chain(later).find_map(|o| match o {
                    Output::Send { to, packet } => Some((to, packet)),
                    _ => None,
                });
                let Some((to, next_packet)) = next else { break };
                let Some(index) = nodes.iter().position(|(id, _)| *id == to) else {
                    break;
                };
                source = Source::Peer(nodes[at].0);
                (at, packet) = (index, next_packet);
            }
            for (_, node) in nodes.iter_mut() {
                node.take_replies(&[7; 32]);
            }
        }
    }
    anyhow::ensure!(
        unwrapped >= built,
        "calibration loops did not travel their path"
    );
    let per = |total: Duration, n: u32| total.as_secs_f64() * 1e6 / f64::from(n.max(1));
    Ok((per(build_time, built), per(unwrap_time, unwrapped)))
}

/// Sends packet-sized frames over a Noise link on loopback, one at a time
/// (each sent, then received), so the time is the whole cost of one frame.
async fn link_cost(packet_len: usize, budget: Duration) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let accept = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        link::respond(stream, &[2; 32], packet_len).await
    });
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut near = link::initiate(stream, &[1; 32], packet_len).await?;
    let mut far = accept.await??;
    let frame = Frame::Packet(vec![0x5a; packet_len]);
    let mut frames = 0u32;
    let started = Instant::now();
    let mut spent = Duration::ZERO;
    while frames < 64 || started.elapsed() < budget {
        let clock = Instant::now();
        near.sender.send(&frame).await?;
        far.receiver.recv().await?;
        spent += clock.elapsed();
        frames += 1;
    }
    Ok(spent.as_secs_f64() * 1e6 / f64::from(frames))
}

/// The most resident memory this process has had (`VmHWM`), in bytes;
/// `None` where `/proc/self/status` does not say.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
