//! The mix network as state machines: gateway, mix and service nodes
//! ([`Node`]) and the client core ([`Client`]), which takes packets, time
//! and randomness and returns packets to send and timers, never touching a
//! socket or a clock. The runtime crate drives them for real; the simulator
//! drives the very same code in virtual time.
//!
//! Time is a count of microseconds ([`Micros`]) on whatever clock the driver
//! uses.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod node;
mod timers;
mod topology;

pub use client::{Client, ClientConfig, ClientEvent, ClientStats};
pub use node::{Counters, DropReason, Node, NodeConfig, Output, Reply, Source};
pub use timers::TimerQueue;
pub use topology::{service_recipient, Hop, Topology, TopologyError};

use rand_core::RngCore;

/// Microseconds on the driver's clock.
pub type Micros = u64;

/// A draw from the exponential distribution with the given mean, in
/// microseconds, from 53 uniform bits of `rng`.
pub fn exponential_us<R: RngCore + ?Sized>(rng: &mut R, mean_us: f64) -> Micros {
    let uniform = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let draw = -(1.0 - uniform).ln() * mean_us;
    draw.min(u32::MAX as f64) as Micros
}
