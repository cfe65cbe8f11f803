//! How long a job's steps take on the mix network, from the public delay
//! model alone (every hop Exp(μ), send slots Poisson at λ_s): the figures a
//! client needs to pick a bucket and to time its read.
//!
//! The distributions are sums of exponentials with different rates and
//! differences of such sums, which have no tidy closed form; they are
//! sampled (a fixed seed, so every client with the same parameters gets
//! the same figures) and read off as quantiles.

use crate::Micros;

/// Samples drawn per distribution.
const SAMPLES: usize = 20_000;

/// The delay model of one network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixTiming {
    /// Mean per-hop delay μ, microseconds.
    pub mean_delay_us: f64,
    /// Hops from a client to a service node (gateway, mixes, service).
    pub forward_hops: u32,
    /// Hops of a SURB home (mixes, gateway).
    pub home_hops: u32,
    /// Mean gap between a client's send slots, microseconds (1/λ_s).
    pub client_gap_us: f64,
    /// Mean gap between a compute courier's send slots, microseconds.
    pub courier_gap_us: f64,
}

impl MixTiming {
    /// The model for routes of `hops` hops (gateway, mixes, service), with
    /// clients and couriers sending at `send_rate` slots a second.
    pub fn new(mean_delay_us: f64, hops: u32, send_rate: f64) -> Self {
        let gap = 1e6 / send_rate.max(1e-9);
        MixTiming {
            mean_delay_us,
            forward_hops: hops.max(1),
            home_hops: hops.saturating_sub(1).max(1),
            client_gap_us: gap,
            courier_gap_us: gap,
        }
    }

    /// The `q` quantile of the compute courier's fetch: a send slot, then an
    /// echo (forward and home), the steps a store-path bucket must cover
    /// besides the compute.
    pub fn fetch_quantile_us(&self, q: f64) -> Micros {
        self.quantile(q, 1, |d| {
            d.exp(self.courier_gap_us) + d.erlang(self.forward_hops + self.home_hops)
        }) as Micros
    }

    /// When a client should send its read of the output, after
    /// `accepted + j·Δ` (the dispatch's answer arrived at `accepted`), so
    /// that the read reaches the replicas after the output with probability
    /// `q`, for a job whose bucket counts from its input: the courier takes
    /// the job one trip home before `accepted`, fetches the input (a send
    /// slot and an echo), waits `j·Δ`, and stores the output (a send slot
    /// and a forward trip); the read needs a client send slot and a forward
    /// trip. The answer may be negative (read before `accepted + j·Δ`).
    pub fn read_offset_us(&self, q: f64) -> i64 {
        self.quantile(q, 2, |d| {
            let fetch = d.exp(self.courier_gap_us) + d.erlang(self.forward_hops + self.home_hops);
            let store = d.exp(self.courier_gap_us) + d.erlang(self.forward_hops);
            let read = d.exp(self.client_gap_us) + d.erlang(self.forward_hops);
            fetch + store - read - d.erlang(self.home_hops)
        }) as i64
    }

    /// How long after `accepted + j·Δ` a fast-path output, sent through the
    /// held SURB at `taken + j·Δ`, has arrived with probability `q`: the
    /// held SURB's trip home against the dispatch answer's.
    pub fn held_reply_after_us(&self, q: f64) -> Micros {
        self.quantile(q, 3, |d| {
            d.erlang(self.home_hops) - d.erlang(self.home_hops)
        })
        .max(0.0) as Micros
    }

    /// The mean of one echo with its send slot, microseconds.
    pub fn echo_mean_us(&self) -> f64 {
        self.client_gap_us + self.mean_delay_us * f64::from(self.forward_hops + self.home_hops)
    }

    fn quantile(&self, q: f64, stream: u64, mut draw: impl FnMut(&mut Draw) -> f64) -> f64 {
        let mut d = Draw {
            state: 0x6a09_e667_f3bc_c909 ^ stream,
            mean: self.mean_delay_us,
        };
        let mut samples: Vec<f64> = (0..SAMPLES).map(|_| draw(&mut d)).collect();
        samples.sort_by(f64::total_cmp);
        let q = q.clamp(0.0, 1.0);
        let at = ((SAMPLES as f64 * q).ceil() as usize).clamp(1, SAMPLES) - 1;
        samples[at]
    }
}

/// A seeded stream of exponential draws (SplitMix64).
struct Draw {
    state: u64,
    mean: f64,
}

impl Draw {
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -self.uniform().ln() * mean
    }

    fn erlang(&mut self, hops: u32) -> f64 {
        let mean = self.mean;
        (0..hops).map(|_| self.exp(mean)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_follow_the_model() {
        // The paper's network: μ = 0.2 s, 5 hops out, 4 home, λ_s = 2.5/s.
        let t = MixTiming::new(200_000.0, 5, 2.5);
        // An echo of 9 hops has mean 1.8 s; with the slot, 2.2 s. Its 99th
        // percentile lies well above the mean and below 2.5× it.
        let p99 = t.fetch_quantile_us(0.99) as f64;
        assert!(p99 > 2.2e6 * 1.3 && p99 < 2.2e6 * 2.5, "{p99}");
        assert!(t.fetch_quantile_us(0.5) < t.fetch_quantile_us(0.99));
        // The read offset's median is about the fetch's, less the answer's
        // trip home: the store's lead and the read's trip cancel.
        let median = t.read_offset_us(0.5) as f64;
        assert!(median > 0.8e6 && median < 2.0e6, "{median}");
        assert!(t.read_offset_us(0.9) > t.read_offset_us(0.5));
        // Two equal trips home: the difference is symmetric around zero.
        assert_eq!(t.held_reply_after_us(0.4), 0);
        assert!(t.held_reply_after_us(0.99) > 0);
        // Deterministic: the same parameters give the same figures.
        assert_eq!(t.read_offset_us(0.9), t.read_offset_us(0.9));
    }
}
