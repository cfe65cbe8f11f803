//! The two payloads that cross the storage network, each padded to a
//! length that depends only on its class.
//!
//! Input: `count u32 ‖ count token IDs (u32) ‖ zeros` to `4 + 4·class`
//! bytes. Output: `tag u8 ‖ 3 zero bytes ‖ count u32 ‖ count items (u32
//! token IDs, f32 embedding values or UTF-8 error bytes) ‖ zeros` to
//! `8 + 4·class` bytes. All integers little-endian.

use crate::classes::{is_class, INPUT_CLASSES, OUTPUT_CLASSES};
use crate::JobError;

/// A job's input: the prompt's token IDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Token IDs, unpadded.
    pub tokens: Vec<u32>,
}

/// What a job produced, as the client reads it back.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Generated token IDs.
    Tokens(Vec<u32>),
    /// An embedding vector.
    Embedding(Vec<f32>),
    /// The work overran the bucket edge; resubmit with a later bucket.
    Overflow,
    /// The job failed (a bad input, a model error); the text says why.
    Failed(String),
}

const TAG_TOKENS: u8 = 1;
const TAG_EMBEDDING: u8 = 2;
const TAG_OVERFLOW: u8 = 3;
const TAG_FAILED: u8 = 4;

impl Input {
    /// Bytes of an input padded to `class`.
    pub fn padded_len(class: u32) -> usize {
        4 + 4 * class as usize
    }

    /// The input padded to `class`.
    pub fn encode(&self, class: u32) -> Result<Vec<u8>, JobError> {
        if !is_class(&INPUT_CLASSES, class) {
            return Err(JobError::UnknownClass(class));
        }
        if self.tokens.len() > class as usize {
            return Err(JobError::TooLong {
                len: self.tokens.len(),
                class,
            });
        }
        let mut out = Vec::with_capacity(Self::padded_len(class));
        out.extend_from_slice(&(self.tokens.len() as u32).to_le_bytes());
        for t in &self.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.resize(Self::padded_len(class), 0);
        Ok(out)
    }

    /// Parses an input that must be padded to exactly `class`.
    pub fn decode(bytes: &[u8], class: u32) -> Result<Self, JobError> {
        if !is_class(&INPUT_CLASSES, class) {
            return Err(JobError::UnknownClass(class));
        }
        if bytes.len() != Self::padded_len(class) {
            return Err(JobError::Malformed("input length"));
        }
        let count = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        if count > class as usize {
            return Err(JobError::TooLong { len: count, class });
        }
        let tokens = bytes[4..4 + 4 * count]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        if bytes[4 + 4 * count..].iter().any(|&b| b != 0) {
            return Err(JobError::Malformed("input padding"));
        }
        Ok(Input { tokens })
    }
}

impl Outcome {
    /// Bytes of an output padded to `class`.
    pub fn padded_len(class: u32) -> usize {
        8 + 4 * class as usize
    }

    /// The outcome padded to `class`. An outcome longer than the class is
    /// cut to it (a failure's text first), so the length never varies.
    pub fn encode(&self, class: u32) -> Result<Vec<u8>, JobError> {
        if !is_class(&OUTPUT_CLASSES, class) {
            return Err(JobError::UnknownClass(class));
        }
        let room = 4 * class as usize;
        let (tag, count, body): (u8, usize, Vec<u8>) = match self {
            Outcome::Tokens(t) => (
                TAG_TOKENS,
                t.len(),
                t.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            Outcome::Embedding(v) => (
                TAG_EMBEDDING,
                v.len(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Outcome::Overflow => (TAG_OVERFLOW, 0, Vec::new()),
            Outcome::Failed(text) => {
                let mut end = text.len().min(room);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                (TAG_FAILED, end, text.as_bytes()[..end].to_vec())
            }
        };
        if body.len() > room {
            return Err(JobError::TooLong { len: count, class });
        }
        let mut out = Vec::with_capacity(Self::padded_len(class));
        out.extend_from_slice(&[tag, 0, 0, 0]);
        out.extend_from_slice(&(count as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out.resize(Self::padded_len(class), 0);
        Ok(out)
    }

    /// Parses an output padded to exactly `class`.
    pub fn decode(bytes: &[u8], class: u32) -> Result<Self, JobError> {
        if !is_class(&OUTPUT_CLASSES, class) {
            return Err(JobError::UnknownClass(class));
        }
        if bytes.len() != Self::padded_len(class) {
            return Err(JobError::Malformed("output length"));
        }
        let count = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
        let room = 4 * class as usize;
        let body = &bytes[8..];
        let used = match bytes[0] {
            TAG_TOKENS | TAG_EMBEDDING => count.checked_mul(4),
            TAG_FAILED => Some(count),
            TAG_OVERFLOW => Some(0),
            _ => return Err(JobError::Malformed("output tag")),
        }
        .filter(|&n| n <= room)
        .ok_or(JobError::Malformed("output count"))?;
        if bytes[1..4] != [0, 0, 0] || body[used..].iter().any(|&b| b != 0) {
            return Err(JobError::Malformed("output padding"));
        }
        let words = || {
            body[..used]
                .chunks_exact(4)
                .map(|c| <[u8; 4]>::try_from(c).expect("4"))
        };
        Ok(match bytes[0] {
            TAG_TOKENS => Outcome::Tokens(words().map(u32::from_le_bytes).collect()),
            TAG_EMBEDDING => Outcome::Embedding(words().map(f32::from_le_bytes).collect()),
            TAG_OVERFLOW => Outcome::Overflow,
            _ => Outcome::Failed(String::from_utf8_lossy(&body[..used]).into_owned()),
        })
    }
}
