//! The compute job, sans-I/O: what a client hands a compute courier, the
//! fixed-size payloads that cross the storage network, the latency-bucket
//! release rule and the compute courier's state machine.
//!
//! A job is store → compute → store: the client writes its padded tokens
//! into a BACAP stream, dispatches a [`Dispatch`] (read cap of the input,
//! write cap for the output, model, classes, sampling, bucket `j`) to a
//! compute courier, and later reads the output stream. The courier
//! ([`ComputeCourier`]) fetches the input, runs the model (jobs of one
//! bucket together), waits for the bucket edge `t_j = taken + j·Δ` and
//! stores the output padded to its class, or an OVERFLOW marker at `t_j`
//! when the work overran. Nothing here touches a socket, a clock or a
//! thread: callers pass the time in microseconds. [`JobClient`] is the
//! client's side of a job, over the storage client.

pub mod classes;
pub mod client;
pub mod courier;
pub mod job;
pub mod payload;
pub mod timing;

pub use classes::{class_for, INPUT_CLASSES, OUTPUT_CLASSES};
pub use client::{
    JobClient, JobFailure, JobPath, JobResult, JobSpec, ReadPlan, Timeline, COMPUTE_FAST_SERVICE,
    COMPUTE_SERVICE,
};
pub use courier::{
    AcceptedJob, Action, ComputeCourier, Counters, CourierConfig, HeldSurb, JobId, WorkItem,
};
pub use job::{Dispatch, DispatchReply, Sampling, Task, SAMPLING_PRESETS};
pub use payload::{Input, Outcome};
pub use timing::MixTiming;

/// Time in microseconds, from whatever origin the caller chose.
pub type Micros = u64;

/// Why a payload or an envelope was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The bytes do not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A class that is not in the public table.
    #[error("{0} is not a public class")]
    UnknownClass(u32),
    /// More tokens than the class holds.
    #[error("{len} items do not fit class {class}")]
    TooLong {
        /// Items given.
        len: usize,
        /// The class.
        class: u32,
    },
    /// A version this code does not speak.
    #[error("unsupported version {0}")]
    Version(u8),
}
