//! `linkem`: netem's delay, jitter and loss for a kernel without sch_netem.
//!
//! An iptables rule sends a namespace's outgoing packets to a netfilter queue
//! (`-j NFQUEUE --queue-num N`); this program binds that queue and gives each
//! packet its verdict later: dropped with probability `loss`, or accepted once
//! `delay` plus a normal jitter (standard deviation `jitter`) has passed since
//! it arrived. As with netem, each packet's delay is its own: a packet that
//! drew less jitter than the one ahead of it overtakes it. (Kept in order,
//! every packet would wait for the largest jitter among those just ahead,
//! and the mean delay would grow with the packet rate.) The kernel holds
//! the packets meanwhile; only their ids cross into user space.
//!
//! Usage: `linkem QUEUE DELAY_MS JITTER_MS LOSS SEED` (LOSS a fraction, 0.01
//! for 1 %). It runs until killed and prints its counts (passed, lost, held)
//! to stderr every 5 s.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nfq::{Queue, Verdict};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The longest the loop sleeps when nothing is queued or due: the
/// granularity of the emulated delay.
const TICK: Duration = Duration::from_micros(500);

/// Packets the kernel may hold for this queue before it drops new ones.
const QUEUE_MAX_LEN: u32 = 65_536;

/// A packet the kernel holds for us, released at `due`.
struct Held {
    due: Instant,
    arrived: Instant,
    /// Arrival order, so that equal due times leave first come first.
    seq: u64,
    message: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Reversed, so that the heap's top is the earliest due.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// What one link does to a packet.
struct Link {
    delay: Duration,
    jitter_ms: f64,
    loss: f64,
    rng: SmallRng,
}

impl Link {
    /// How long a packet arriving now is held, or `None` if it is lost.
    fn hold(&mut self) -> Option<Duration> {
        if self.rng.gen::<f64>() < self.loss {
            return None;
        }
        // Box–Muller: one standard normal from two uniforms.
        let u1: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = self.rng.gen();
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let ms = self.delay.as_secs_f64() * 1e3 + normal * self.jitter_ms;
        Some(Duration::from_secs_f64(ms.max(0.0) / 1e3))
    }
}

fn parse<T: std::str::FromStr>(args: &[String], index: usize, name: &str) -> Result<T, String> {
    args.get(index)
        .ok_or_else(|| format!("missing {name}"))?
        .parse()
        .map_err(|_| format!("{name} must be a number, not {:?}", args[index]))
}

fn run(args: &[String]) -> Result<(), String> {
    let queue_num: u16 = parse(args, 1, "QUEUE")?;
    let delay_ms: f64 = parse(args, 2, "DELAY_MS")?;
    let jitter_ms: f64 = parse(args, 3, "JITTER_MS")?;
    let loss: f64 = parse(args, 4, "LOSS")?;
    let seed: u64 = parse(args, 5, "SEED")?;
    if !(0.0..=1.0).contains(&loss) || delay_ms < 0.0 || jitter_ms < 0.0 {
        return Err("LOSS must lie in [0, 1], DELAY_MS and JITTER_MS not below 0".into());
    }
    let mut link = Link {
        delay: Duration::from_secs_f64(delay_ms / 1e3),
        jitter_ms,
        loss,
        rng: SmallRng::seed_from_u64(seed),
    };
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let mut queue = Queue::open().map_err(|e| io("open the netfilter queue socket", e))?;
    queue.bind(queue_num).map_err(|e| io("bind the queue", e))?;
    // Metadata only: the verdict needs the packet's id, not its bytes.
    queue
        .set_copy_range(queue_num, 0)
        .map_err(|e| io("set the copy range", e))?;
    queue
        .set_queue_max_len(queue_num, QUEUE_MAX_LEN)
        .map_err(|e| io("set the queue length", e))?;
    queue.set_nonblocking(true);
    eprintln!("linkem queue {queue_num}: bound ({delay_ms} ms ± {jitter_ms} ms, loss {loss})");

    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut seq = 0u64;
    let (mut held_total, mut held_max) = (Duration::ZERO, Duration::ZERO);
    let (mut passed, mut lost) = (0u64, 0u64);
    let mut last_report = Instant::now();
    loop {
        loop {
            match queue.recv() {
                Ok(mut message) => match link.hold() {
                    None => {
                        message.set_verdict(Verdict::Drop);
                        queue.verdict(message).map_err(|e| io("drop", e))?;
                        lost += 1;
                    }
                    Some(hold) => {
                        let arrived = Instant::now();
                        seq += 1;
                        held.push(Held {
                            due: arrived + hold,
                            arrived,
                            seq,
                            message,
                        });
                    }
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // ENOBUFS: the kernel dropped messages for a full socket
                // buffer; those packets are lost, the queue goes on.
                Err(e) if e.raw_os_error() == Some(105) => lost += 1,
                Err(e) => return Err(io("receive", e)),
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.due <= now) {
            let Held {
                arrived,
                mut message,
                ..
            } = held.pop().expect("peeked above");
            let took = now.duration_since(arrived);
            held_total += took;
            held_max = held_max.max(took);
            message.set_verdict(Verdict::Accept);
            queue.verdict(message).map_err(|e| io("accept", e))?;
            passed += 1;
        }
        if now.duration_since(last_report) >= Duration::from_secs(5) {
            let mean_ms = held_total.as_secs_f64() * 1e3 / passed.max(1) as f64;
            eprintln!(
                "linkem queue {queue_num}: {passed} passed, {lost} lost, {} held; held {mean_ms:.2} ms on average, {:.1} ms at most",
                held.len(),
                held_max.as_secs_f64() * 1e3
            );
            last_report = now;
        }
        let sleep = held
            .peek()
            .map_or(TICK, |h| h.due.saturating_duration_since(now).min(TICK));
        std::thread::sleep(sleep);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linkem: {e}\nusage: linkem QUEUE DELAY_MS JITTER_MS LOSS SEED");
            ExitCode::FAILURE
        }
    }
}
