//! The latency bucket for a job, from public figures only: the network's
//! delays and the model's published speed for the job's input class and
//! the tokens the wire says it computes. Nothing private (the prompt's
//! real length, the person's `max_tokens` below the wire's) moves it.

use funion_compute::JobPath;
use funion_pki::{ModelEntry, Parameters};

/// How much slower than published a model may run before its job
/// overflows (a busy courier, a full batch).
pub const COMPUTE_MARGIN: f64 = 3.0;
/// The longest bucket compute couriers take, in seconds (see
/// `funion-compute-node`).
pub const MAX_BUCKET_S: f64 = 600.0;

/// A bucket and the figures it was chosen from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketPlan {
    /// Bucket index `j`.
    pub bucket: u32,
    /// The courier's fetch of the input: one echo's 99th percentile, three
    /// send-slot gaps and 50 ms for the replicas, in seconds; 0 on the fast
    /// and store paths, whose buckets count from the input in hand.
    pub fetch_s: f64,
    /// The longest batch wait the courier publishes, in seconds.
    pub batch_s: f64,
    /// The published compute time with its margin, in seconds.
    pub compute_s: f64,
}

/// The largest bucket index couriers take under `parameters`.
pub fn max_bucket(parameters: &Parameters) -> u32 {
    (MAX_BUCKET_S * 1e6 / parameters.bucket_spacing_us.max(1) as f64) as u32
}

/// The bucket for a job by `path` of `entry` in `input_class` computing
/// `computed_tokens` tokens, or why none fits.
pub fn bucket_for(
    parameters: &Parameters,
    path: JobPath,
    entry: &ModelEntry,
    input_class: u32,
    computed_tokens: u32,
) -> Result<BucketPlan, String> {
    let mu_s = parameters.mean_delay_us as f64 / 1e6;
    let hops = 2 * u32::from(parameters.hops) - 1;
    let fetch_s = match path {
        JobPath::Serial => {
            funion_sim::erlang_quantile(hops, mu_s, 0.99) + 3.0 / parameters.send_rate() + 0.05
        }
        JobPath::Fast | JobPath::Store => 0.0,
    };
    let batch_s = f64::from(entry.batch_wait_ms) / 1e3;
    let compute_us = entry
        .compute_us(input_class, computed_tokens)
        .ok_or_else(|| format!("the model `{}` publishes no timings", entry.name))?;
    let compute_s = compute_us as f64 / 1e6 * COMPUTE_MARGIN + 0.05;
    let spacing = parameters.bucket_spacing_us.max(1) as f64 / 1e6;
    let edge = fetch_s + batch_s + compute_s;
    let bucket = (edge / spacing).ceil().max(1.0);
    if bucket > f64::from(max_bucket(parameters)) {
        return Err(format!(
            "this job needs a bucket of about {edge:.0} s (compute {compute_s:.0} s with a {COMPUTE_MARGIN}× margin); couriers take at most {MAX_BUCKET_S:.0} s: ask for fewer tokens"
        ));
    }
    Ok(BucketPlan {
        bucket: bucket as u32,
        fetch_s,
        batch_s,
        compute_s,
    })
}
