//! The dispatch envelope (client → compute courier) and its reply.
//!
//! On the wire: `version u8 ‖ length u32 LE ‖ postcard body`, then whatever
//! padding fills the Sphinx payload (ignored).

use serde::{Deserialize, Serialize};

use crate::classes::{is_class, INPUT_CLASSES, OUTPUT_CLASSES};
use crate::JobError;

const VERSION: u8 = 2;
/// Length of a BACAP read cap.
pub const READ_CAP_LEN: usize = 136;
/// Length of a BACAP write cap.
pub const WRITE_CAP_LEN: usize = 168;
/// Longest BACAP context a dispatch may name.
pub const MAX_CONTEXT: usize = 64;
/// Longest model name.
pub const MAX_MODEL_NAME: usize = 128;
/// Most credit tickets one dispatch may carry.
pub const MAX_TICKETS: usize = 64;

/// What the model is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Task {
    /// Generate tokens after the prompt.
    Generate,
    /// Embed the input.
    Embed,
}

/// Sampling parameters; the seed makes a generation reproducible.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Seed of the sampler.
    pub seed: u64,
    /// Temperature; 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass, if any.
    pub top_p: Option<f32>,
    /// Most tokens to generate (at most the output class).
    pub max_tokens: u32,
}

/// The public sampling presets, (temperature, top_p): a dispatch names
/// one of these, so the parameters a person picks do not single them out
/// among a courier's jobs.
pub const SAMPLING_PRESETS: [(f32, Option<f32>); 4] = [
    (0.0, None),
    (0.3, Some(0.9)),
    (0.7, Some(0.9)),
    (1.0, Some(0.95)),
];

impl Sampling {
    /// What a client puts on the wire for these parameters: the nearest
    /// preset (by temperature, then top_p; 1 stands for no top_p), and
    /// `max_tokens` raised to a power of two (at least 16, at most the
    /// output class), so a few public values stand for every choice; the
    /// client cuts the output to its own `max_tokens`, at the cost of at
    /// most twice the tokens computed. The seed stays: it is fresh per job.
    pub fn on_the_wire(&self, output_class: u32) -> Sampling {
        let distance = |(t, p): (f32, Option<f32>)| {
            let top = |p: Option<f32>| p.unwrap_or(1.0);
            (
                (t - self.temperature).abs(),
                (top(p) - top(self.top_p)).abs(),
            )
        };
        let (temperature, top_p) = SAMPLING_PRESETS
            .into_iter()
            .min_by(|a, b| {
                distance(*a)
                    .partial_cmp(&distance(*b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .expect("the presets are not empty");
        Sampling {
            seed: self.seed,
            temperature,
            top_p,
            max_tokens: self
                .max_tokens
                .max(1)
                .next_power_of_two()
                .clamp(16, output_class.max(16)),
        }
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            seed: 0,
            temperature: 0.0,
            top_p: None,
            max_tokens: 32,
        }
    }
}

/// Everything a compute courier needs for one job.
///
/// The input comes one of two ways: from boxes (`read_cap_in`, `ctx_in`,
/// the store path) or inside the dispatch itself (`input`, the fast path:
/// the padded [`crate::Input`], whose length only the class sets; the caps
/// are then empty). The Sphinx payload is readable only by the service node
/// it is addressed to, so an inline input is sealed to that node's compute
/// courier as the caps are.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    /// Read cap of the input stream (136 bytes), empty with `input`.
    pub read_cap_in: Vec<u8>,
    /// BACAP context of the input stream, empty with `input`.
    pub ctx_in: Vec<u8>,
    /// The padded input itself (the fast path), or `None` to read it from
    /// the boxes.
    pub input: Option<Vec<u8>>,
    /// Write cap for the output stream (168 bytes).
    pub write_cap_out: Vec<u8>,
    /// BACAP context of the output stream.
    pub ctx_out: Vec<u8>,
    /// Model name, as the network document lists it.
    pub model: String,
    /// Generation or embedding.
    pub task: Task,
    /// Input class (tokens).
    pub input_class: u32,
    /// Output class (items).
    pub output_class: u32,
    /// Sampling parameters.
    pub sampling: Sampling,
    /// Latency bucket index `j`: the output is released at `taken + j·Δ`,
    /// or with `bucket_from_input` at `in_hand + j·Δ`.
    pub bucket: u32,
    /// Count the bucket from the moment the input is in the courier's
    /// hands (read from its boxes) rather than from the moment the job was
    /// taken, so the bucket covers the compute alone and not the fetch. The
    /// same for an inline input, which is in hand when taken.
    pub bucket_from_input: bool,
    /// Credit tickets paying for the (input class, output class) cell.
    pub tickets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Dispatch {
    // The caps are secrets: show only what a courier may log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch")
            .field("model", &self.model)
            .field("task", &self.task)
            .field("input_class", &self.input_class)
            .field("output_class", &self.output_class)
            .field("bucket", &self.bucket)
            .field("bucket_from_input", &self.bucket_from_input)
            .field("inline_input", &self.input.is_some())
            .field("tickets", &self.tickets.len())
            .finish_non_exhaustive()
    }
}

/// The compute courier's answer to a dispatch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DispatchReply {
    /// Taken: the output will be stored at the bucket edge, this many
    /// microseconds after the courier took the job.
    Accepted {
        /// `j·Δ` in microseconds.
        edge_after_us: u64,
    },
    /// Refused, and why.
    Refused {
        /// A reason a person can read.
        reason: String,
    },
}

fn frame<T: Serialize>(value: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(value).expect("serializing to memory cannot fail");
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(VERSION);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn unframe<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &'static str) -> Result<T, JobError> {
    let (&version, rest) = bytes.split_first().ok_or(JobError::Malformed(what))?;
    if version != VERSION {
        return Err(JobError::Version(version));
    }
    let len = rest
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or(JobError::Malformed(what))?;
    let body = rest
        .get(4..)
        .and_then(|r| r.get(..len))
        .ok_or(JobError::Malformed(what))?;
    let (value, trailing) =
        postcard::take_from_bytes(body).map_err(|_| JobError::Malformed(what))?;
    if !trailing.is_empty() {
        return Err(JobError::Malformed(what));
    }
    Ok(value)
}

impl Dispatch {
    /// The envelope's bytes (unpadded; the Sphinx payload pads it).
    pub fn encode(&self) -> Vec<u8> {
        frame(self)
    }

    /// Parses and checks an envelope: cap lengths, public classes, limits.
    pub fn decode(bytes: &[u8]) -> Result<Self, JobError> {
        let d: Dispatch = unframe(bytes, "dispatch")?;
        d.check()?;
        Ok(d)
    }

    /// Checks what can be checked without the model table.
    pub fn check(&self) -> Result<(), JobError> {
        match &self.input {
            None if self.read_cap_in.len() != READ_CAP_LEN => {
                return Err(JobError::Malformed("read cap length"));
            }
            Some(input) if input.len() != crate::Input::padded_len(self.input_class) => {
                return Err(JobError::Malformed("inline input length"));
            }
            Some(_) if !self.read_cap_in.is_empty() || !self.ctx_in.is_empty() => {
                return Err(JobError::Malformed("inline input beside a read cap"));
            }
            _ => {}
        }
        if self.write_cap_out.len() != WRITE_CAP_LEN {
            return Err(JobError::Malformed("write cap length"));
        }
        if self.ctx_in.len() > MAX_CONTEXT || self.ctx_out.len() > MAX_CONTEXT {
            return Err(JobError::Malformed("context length"));
        }
        if self.model.is_empty() || self.model.len() > MAX_MODEL_NAME {
            return Err(JobError::Malformed("model name"));
        }
        if self.tickets.len() > MAX_TICKETS {
            return Err(JobError::Malformed("ticket count"));
        }
        if !is_class(&INPUT_CLASSES, self.input_class) {
            return Err(JobError::UnknownClass(self.input_class));
        }
        if !is_class(&OUTPUT_CLASSES, self.output_class) {
            return Err(JobError::UnknownClass(self.output_class));
        }
        if self.task == Task::Generate && self.sampling.max_tokens > self.output_class {
            return Err(JobError::TooLong {
                len: self.sampling.max_tokens as usize,
                class: self.output_class,
            });
        }
        let t = self.sampling.temperature;
        if !t.is_finite() || t < 0.0 || self.sampling.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0))
        {
            return Err(JobError::Malformed("sampling parameters"));
        }
        Ok(())
    }
}

impl DispatchReply {
    /// The reply's bytes.
    pub fn encode(&self) -> Vec<u8> {
        frame(self)
    }

    /// Parses a reply (padding after it is ignored).
    pub fn decode(bytes: &[u8]) -> Result<Self, JobError> {
        unframe(bytes, "dispatch reply")
    }
}
