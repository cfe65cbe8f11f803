//! The job from the client's side (paper §3.3), as a state machine. Every
//! step is an echo of the storage client it drives
//! ([`funion_pigeonhole::client::StorageClient`]), which the caller passes
//! in with each call, so jobs and other storage traffic share one session.
//!
//! A job takes one of three paths ([`JobPath`]):
//!
//! - **fast**: the dispatch carries the padded input and a second SURB; the
//!   courier sends the padded output through that SURB at the bucket edge.
//!   One echo and a held SURB; if nothing came back a while after the
//!   edge, the client reads the output boxes (the courier stores there when
//!   the SURB is no longer usable).
//! - **store**: the input goes into boxes, uploaded beside the dispatch
//!   (the courier reads again if its fetch comes first); the read is timed
//!   to find the output on its first try. The client may go away between
//!   dispatch and read.
//! - **serial**: upload, then dispatch once the upload is stored, then the
//!   read at `accepted + j·Δ` (the older flow, kept to measure against).

use std::collections::{BTreeMap, HashMap};

use funion_bacap::{BoxId, ReadCap, WriteCap, Writer};
use funion_pigeonhole::client::{
    await_requests, box_id, open_stream, read_requests, write_requests, BatchId, BoxResult,
    ClientError, StorageClient,
};
use funion_pigeonhole::stream;
use funion_sphinx::kem::Kem;
use rand_core::{CryptoRng, RngCore};

use crate::INPUT_CLASSES;
use crate::{class_for, Dispatch, DispatchReply, Input, Micros, Outcome, Sampling, Task};

/// The service name compute couriers run under on service nodes.
pub const COMPUTE_SERVICE: &str = "compute";
/// The service name of fast-path dispatches: the body is a held SURB for
/// the output, then the dispatch.
pub const COMPUTE_FAST_SERVICE: &str = "compute-fast";

/// How a job's input reaches the courier and its output the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum JobPath {
    /// Input inside the dispatch, output through a held SURB.
    #[default]
    Fast,
    /// Input and output in boxes; upload and dispatch leave together.
    Store,
    /// Input and output in boxes, one step after the other.
    Serial,
}

impl JobPath {
    /// Its name on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            JobPath::Fast => "fast",
            JobPath::Store => "store",
            JobPath::Serial => "serial",
        }
    }

    /// Parses a name of [`JobPath::name`].
    pub fn parse(name: &str) -> Option<Self> {
        [JobPath::Fast, JobPath::Store, JobPath::Serial]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// How likely the store path's first read is to find the output, for
/// reads that do not wait ([`ReadPlan::reading_at`]).
pub const STORE_READ_QUANTILE: f64 = 0.9;

/// How likely the store path's waiting read is to reach the replicas before
/// the output ([`ReadPlan::from_timing`]): it then comes back the moment the
/// output is written.
pub const STORE_AWAIT_QUANTILE: f64 = 0.98;

/// A waiting read waits this much beyond the spread it must cover.
const AWAIT_MARGIN_US: i64 = 2_000_000;

/// When a client reads outputs, from the delay model
/// ([`crate::timing::MixTiming`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    /// Store path: the read leaves this long after `accepted + j·Δ`
    /// (negative: before).
    pub store_read_offset_us: i64,
    /// Store path: how long the read waits at the replicas for an output
    /// not written yet, milliseconds (0: a plain read).
    pub store_wait_ms: u32,
    /// Fast path: with no output through the held SURB this long after
    /// `accepted + j·Δ`, the client reads the boxes instead.
    pub fast_fallback_after_us: Micros,
    /// A read that found no output yet is sent again after this long ...
    pub retry_after_us: Micros,
    /// ... at most this many times.
    pub retries: u32,
    /// How long the client keeps a fast-path job's held SURB keys: past
    /// this, a late output through it is no longer recognised.
    pub held_life_us: Micros,
}

impl ReadPlan {
    /// Reads timed from `timing`: the store path's read waits for the
    /// output at the replicas, and reaches them before it 49 times in 50,
    /// waiting long enough to cover all but 1 in 1000 outputs; the fast
    /// path falls back to the boxes once the held SURB's output is later
    /// than 999 in 1000 would be.
    pub fn from_timing(timing: &crate::timing::MixTiming) -> Self {
        let early = timing.read_offset_us(1.0 - STORE_AWAIT_QUANTILE);
        let late = timing.read_offset_us(0.999);
        let wait_us = (late - early + AWAIT_MARGIN_US).max(0);
        ReadPlan {
            store_read_offset_us: early,
            store_wait_ms: u32::try_from(wait_us / 1_000).unwrap_or(u32::MAX),
            ..Self::reading_at(timing, STORE_READ_QUANTILE)
        }
    }

    /// The store path's read as a plain read, timed to find the output
    /// with probability `q`, and the fast path as in
    /// [`ReadPlan::from_timing`].
    pub fn reading_at(timing: &crate::timing::MixTiming, q: f64) -> Self {
        ReadPlan {
            store_read_offset_us: timing.read_offset_us(q),
            store_wait_ms: 0,
            fast_fallback_after_us: timing.held_reply_after_us(0.999)
                + timing.echo_mean_us() as Micros,
            retry_after_us: (timing.echo_mean_us() / 4.0) as Micros,
            retries: 3,
            ..ReadPlan::default()
        }
    }
}

impl Default for ReadPlan {
    /// The serial flow's timing: read at `accepted + j·Δ`.
    fn default() -> Self {
        ReadPlan {
            store_read_offset_us: 0,
            store_wait_ms: 0,
            fast_fallback_after_us: 0,
            retry_after_us: 0,
            retries: 0,
            held_life_us: 600_000_000,
        }
    }
}

/// One job to run.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Model name.
    pub model: String,
    /// Generation or embedding.
    pub task: Task,
    /// The prompt's token IDs (tokenized locally).
    pub tokens: Vec<u32>,
    /// Output class.
    pub output_class: u32,
    /// Sampling parameters.
    pub sampling: Sampling,
    /// Latency bucket index `j`.
    pub bucket: u32,
    /// The credit tickets that pay for the job's cell.
    pub tickets: Vec<Vec<u8>>,
    /// Which service node's compute courier to use (an index into the
    /// document's service nodes); `None` uses the client's default one.
    pub courier: Option<usize>,
    /// Which path the job takes.
    pub path: JobPath,
}

/// When each step of a job happened, on the driver's clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Upload started.
    pub started: Micros,
    /// Every input box stored.
    pub uploaded: Micros,
    /// Dispatch handed to the mixnet.
    pub dispatched: Micros,
    /// The compute courier's answer arrived.
    pub accepted: Micros,
    /// `j·Δ`, as the courier confirmed.
    pub edge_after_us: Micros,
    /// The read of the output was handed to the mixnet.
    pub fetch_sent: Micros,
    /// The output was read.
    pub done: Micros,
}

/// What one job gave.
#[derive(Clone, Debug, PartialEq)]
pub struct JobResult {
    /// The outcome (tokens, an embedding, OVERFLOW, or the courier's error).
    pub outcome: Outcome,
    /// The input class the prompt was padded to.
    pub input_class: u32,
    /// The first output box (to find the compute courier's record in tests).
    pub output_box: BoxId,
    /// Output boxes read.
    pub output_boxes: usize,
    /// Echoes the job's own steps took (upload, dispatch, fetch; polls
    /// and fresh envelopes included, the mixnet's resends not).
    pub echoes: u64,
    /// Whether the output came through the held SURB (the fast path), one
    /// trip home rather than an echo.
    pub held_reply: bool,
    /// The path the job took.
    pub path: JobPath,
    /// Steps.
    pub timeline: Timeline,
}

/// Why a job failed; each names the step.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobFailure {
    /// The spec cannot be a job (too many tokens, a bad class).
    #[error("bad job: {0}")]
    Spec(String),
    /// The storage client could not start a step.
    #[error("storage: {0}")]
    Storage(#[from] ClientError),
    /// An input box was not stored.
    #[error("input box {position}: {code}")]
    Upload {
        /// Its position.
        position: usize,
        /// The replicas' or courier's code.
        code: funion_pigeonhole::ErrorCode,
    },
    /// The mixnet gave up on the dispatch.
    #[error("no compute courier answered the dispatch")]
    NoCourierAnswer,
    /// The compute courier's answer does not parse.
    #[error("the compute courier's answer: {0}")]
    BadAnswer(String),
    /// The compute courier refused the job.
    #[error("the compute courier refused: {0}")]
    Refused(String),
    /// The output could not be read or does not decode.
    #[error("output: {0}")]
    Output(String),
}

impl JobFailure {
    /// A short name for counting failures by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            JobFailure::Spec(_) => "bad_spec",
            JobFailure::Storage(_) => "storage",
            JobFailure::Upload { .. } => "upload",
            JobFailure::NoCourierAnswer => "no_courier_answer",
            JobFailure::BadAnswer(_) => "bad_answer",
            JobFailure::Refused(_) => "refused",
            JobFailure::Output(_) => "output",
        }
    }
}

/// A job's number in one [`JobClient`].
pub type ClientJobId = u64;

enum Phase {
    Uploading(BatchId),
    Dispatching,
    Waiting(Micros),
    Fetching,
}

/// The dispatch of a job: `input` is (read cap, context, inline input).
fn wire_dispatch(
    spec: &JobSpec,
    input_class: u32,
    input: (Vec<u8>, Vec<u8>, Option<Vec<u8>>),
    write_cap_out: &WriteCap,
    ctx_out: &[u8],
) -> Dispatch {
    let (read_cap_in, ctx_in, input) = input;
    Dispatch {
        read_cap_in,
        ctx_in,
        input,
        write_cap_out: write_cap_out.to_bytes().to_vec(),
        ctx_out: ctx_out.to_vec(),
        model: spec.model.clone(),
        task: spec.task,
        input_class,
        output_class: spec.output_class,
        sampling: spec.sampling,
        bucket: spec.bucket,
        bucket_from_input: spec.path != JobPath::Serial,
        tickets: spec.tickets.clone(),
    }
}

/// Whether a read found some box not written yet (an output before its
/// edge, or an input whose upload has not landed).
pub fn not_there_yet(results: &[BoxResult]) -> bool {
    results.contains(&Err(funion_pigeonhole::ErrorCode::NotFound))
}

struct Job {
    spec: JobSpec,
    input_class: u32,
    read_cap_in: Option<ReadCap>,
    /// The fast path's padded input, carried in the dispatch.
    inline: Option<Vec<u8>>,
    ctx_in: Vec<u8>,
    write_cap_out: WriteCap,
    ctx_out: Vec<u8>,
    output_box: BoxId,
    output_boxes: usize,
    phase: Phase,
    /// The store path's upload, while it runs beside the dispatch.
    upload: Option<BatchId>,
    /// The store path's upload before it starts: it leaves right after the
    /// dispatch, which is on the job's critical path while it is not.
    upload_requests: Vec<funion_pigeonhole::envelope::Request>,
    reads_left: u32,
    echoes: u64,
    timeline: Timeline,
}

/// The input class a prompt of `tokens` tokens is padded to.
pub fn input_class_of(tokens: usize) -> Result<u32, JobFailure> {
    class_for(&INPUT_CLASSES, tokens)
        .ok_or_else(|| JobFailure::Spec(format!("{tokens} tokens exceed the largest input class")))
}

/// Number of boxes a payload of `len` bytes takes as a stream of boxes
/// holding `box_len` bytes each: fixed by the class, whatever the content.
pub fn boxes_for(len: usize, box_len: usize) -> usize {
    (stream::HEADER_LEN + len).div_ceil(box_len.max(1))
}

fn fresh_context(rng: &mut impl RngCore) -> Vec<u8> {
    let mut ctx = vec![0u8; 16];
    rng.fill_bytes(&mut ctx);
    ctx
}

/// Jobs in flight over one storage client; see the module documentation.
pub struct JobClient {
    courier: usize,
    /// With `Some(n)`, each job picks one of `n` couriers uniformly.
    per_job: Option<usize>,
    jobs: BTreeMap<ClientJobId, Job>,
    by_batch: HashMap<BatchId, ClientJobId>,
    by_seq: HashMap<u64, ClientJobId>,
    next_job: ClientJobId,
    finished: Vec<(ClientJobId, Result<JobResult, JobFailure>)>,
    dispatch_echoes: u64,
    by_held: HashMap<u64, ClientJobId>,
    /// Held SURBs of jobs that ended without using them.
    stale_held: Vec<u64>,
    plan: ReadPlan,
}

impl JobClient {
    /// A job client that dispatches to the `courier`th service node unless
    /// a spec names another.
    pub fn new(courier: usize) -> Self {
        JobClient {
            courier,
            per_job: None,
            jobs: BTreeMap::new(),
            by_batch: HashMap::new(),
            by_seq: HashMap::new(),
            next_job: 1,
            finished: Vec::new(),
            dispatch_echoes: 0,
            by_held: HashMap::new(),
            stale_held: Vec::new(),
            plan: ReadPlan::default(),
        }
    }

    /// A job client that picks one of the `couriers` service nodes'
    /// compute couriers uniformly for each job a spec leaves open, so that a
    /// provider's couriers cannot tie a person's jobs together by which
    /// courier they reached (experiment 7 in `docs/privacy.md`).
    pub fn per_job(couriers: usize) -> Self {
        JobClient {
            per_job: Some(couriers.max(1)),
            ..JobClient::new(0)
        }
    }

    /// Times reads by `plan` from now on.
    pub fn set_read_plan(&mut self, plan: ReadPlan) {
        self.plan = plan;
    }

    /// Jobs not finished yet.
    pub fn in_flight(&self) -> usize {
        self.jobs.len()
    }

    /// Dispatches sent so far.
    pub fn dispatch_echoes(&self) -> u64 {
        self.dispatch_echoes
    }

    /// Jobs that ended since the last call, with their results.
    pub fn take_finished(&mut self) -> Vec<(ClientJobId, Result<JobResult, JobFailure>)> {
        std::mem::take(&mut self.finished)
    }

    /// When [`JobClient::poll`] next has work: the earliest output read due.
    pub fn next_wakeup(&self) -> Option<Micros> {
        self.jobs
            .values()
            .filter_map(|j| match j.phase {
                Phase::Waiting(at) => Some(at),
                _ => None,
            })
            .min()
    }

    /// Starts `spec` at `now`: its input is sealed and its upload begun.
    pub fn submit<K: Kem, R: RngCore + CryptoRng>(
        &mut self,
        now: Micros,
        rng: &mut R,
        storage: &mut StorageClient<K>,
        spec: JobSpec,
    ) -> ClientJobId {
        let id = self.next_job;
        self.next_job += 1;
        match self.prepare(now, rng, storage, spec) {
            Ok(job) => {
                if let Phase::Uploading(batch) = job.phase {
                    self.by_batch.insert(batch, id);
                }
                let leaves_now = job.spec.path != JobPath::Serial;
                self.jobs.insert(id, job);
                if leaves_now {
                    self.dispatch(now, storage, id);
                    self.start_upload(rng, storage, id);
                }
            }
            Err(failure) => self.finished.push((id, Err(failure))),
        }
        id
    }

    /// Starts the store path's upload, which waited for the dispatch.
    fn start_upload<K: Kem, R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        storage: &mut StorageClient<K>,
        id: ClientJobId,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let requests = std::mem::take(&mut job.upload_requests);
        if requests.is_empty() {
            return;
        }
        match storage.start(rng, requests) {
            Ok(batch) => {
                job.upload = Some(batch);
                self.by_batch.insert(batch, id);
            }
            Err(e) => self.fail(id, JobFailure::from(e)),
        }
    }

    fn prepare<K: Kem, R: RngCore + CryptoRng>(
        &mut self,
        now: Micros,
        rng: &mut R,
        storage: &mut StorageClient<K>,
        spec: JobSpec,
    ) -> Result<Job, JobFailure> {
        let mut spec = spec;
        if let (None, Some(couriers)) = (spec.courier, self.per_job) {
            spec.courier = Some((rng.next_u64() % couriers as u64) as usize);
        }
        let box_len = storage.box_payload();
        let input_class = input_class_of(spec.tokens.len())?;
        let payload = Input {
            tokens: spec.tokens.clone(),
        }
        .encode(input_class)
        .map_err(|e| JobFailure::Spec(e.to_string()))?;
        let cap_in = WriteCap::generate(rng);
        let ctx_in = fresh_context(rng);
        let write_cap_out = WriteCap::generate(rng);
        let ctx_out = fresh_context(rng);
        let read_cap_in = cap_in.read_cap();
        let output_box = box_id(&write_cap_out.read_cap(), &ctx_out, 0)?;
        if spec.path == JobPath::Fast {
            // Both ways must fit one packet: the dispatch with its input
            // beside two SURBs, the padded output through one. A job that
            // does not fit takes the store path.
            let dispatch = wire_dispatch(
                &spec,
                input_class,
                (Vec::new(), Vec::new(), Some(payload.clone())),
                &write_cap_out,
                &ctx_out,
            );
            let fits = Outcome::padded_len(spec.output_class) <= storage.max_held_reply()
                && dispatch.encode().len() <= storage.max_held_body();
            if !fits {
                spec.path = JobPath::Store;
            }
        }
        let (phase, upload_requests, inline) = match spec.path {
            JobPath::Fast => (Phase::Dispatching, Vec::new(), Some(payload)),
            path => {
                let mut writer = Writer::new(cap_in, &ctx_in);
                let requests = write_requests(&mut writer, &payload, box_len)?;
                if path == JobPath::Serial {
                    (
                        Phase::Uploading(storage.start(rng, requests)?),
                        Vec::new(),
                        None,
                    )
                } else {
                    (Phase::Dispatching, requests, None)
                }
            }
        };
        let (read_cap_in, ctx_in) = match inline {
            Some(_) => (None, Vec::new()),
            None => (Some(read_cap_in), ctx_in),
        };
        Ok(Job {
            output_boxes: boxes_for(Outcome::padded_len(spec.output_class), box_len),
            reads_left: self.plan.retries,
            spec,
            input_class,
            read_cap_in,
            inline,
            ctx_in,
            write_cap_out,
            ctx_out,
            output_box,
            phase,
            upload: None,
            upload_requests,
            echoes: 0,
            timeline: Timeline {
                started: now,
                ..Timeline::default()
            },
        })
    }

    /// Moves every job as far as the storage client's news allows: call it
    /// after handing the storage client a reply or a loss, and at
    /// [`JobClient::next_wakeup`].
    pub fn poll<K: Kem, R: RngCore + CryptoRng>(
        &mut self,
        now: Micros,
        rng: &mut R,
        storage: &mut StorageClient<K>,
    ) {
        let due: Vec<ClientJobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(j.phase, Phase::Waiting(at) if at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.fetch(now, rng, storage, id);
        }
        for (batch, results) in storage.take_finished() {
            if let Some(id) = self.by_batch.remove(&batch) {
                self.batch_done(now, storage, id, batch, results);
            }
        }
        for (seq, reply) in storage.take_service_replies() {
            if let Some(id) = self.by_seq.remove(&seq) {
                self.answered(now, id, reply);
            }
        }
        for (seq, body) in storage.take_held_replies() {
            if let Some(id) = self.by_held.remove(&seq) {
                self.held_reply(now, id, body);
            }
        }
        for seq in self.stale_held.drain(..) {
            storage.forget_held(seq);
        }
    }

    fn fail(&mut self, id: ClientJobId, failure: JobFailure) {
        self.jobs.remove(&id);
        self.forget_held_of(id);
        self.finished.push((id, Err(failure)));
    }

    fn fetch<K: Kem, R: RngCore + CryptoRng>(
        &mut self,
        now: Micros,
        rng: &mut R,
        storage: &mut StorageClient<K>,
        id: ClientJobId,
    ) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let cap = job.write_cap_out.read_cap();
        let requests = match (job.spec.path, self.plan.store_wait_ms) {
            (JobPath::Store, wait_ms) if wait_ms > 0 => {
                await_requests(&cap, &job.ctx_out, job.output_boxes, wait_ms)
            }
            _ => read_requests(&cap, &job.ctx_out, job.output_boxes),
        };
        let started = requests.and_then(|requests| storage.start(rng, requests));
        match started {
            Ok(batch) => {
                self.by_batch.insert(batch, id);
                let job = self.jobs.get_mut(&id).expect("looked up above");
                job.timeline.fetch_sent = now;
                job.phase = Phase::Fetching;
            }
            Err(e) => self.fail(id, e.into()),
        }
    }

    fn batch_done<K: Kem>(
        &mut self,
        now: Micros,
        storage: &mut StorageClient<K>,
        id: ClientJobId,
        batch: BatchId,
        results: Vec<BoxResult>,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.echoes += storage.echoes_of(batch);
        if job.upload == Some(batch) {
            // The store path's upload, which left beside the dispatch.
            job.upload = None;
            if let Some((position, Err(code))) =
                results.iter().enumerate().find(|(_, r)| r.is_err())
            {
                let code = *code;
                return self.fail(id, JobFailure::Upload { position, code });
            }
            job.timeline.uploaded = now;
            return;
        }
        match job.phase {
            Phase::Uploading(_) => {
                if let Some((position, Err(code))) =
                    results.iter().enumerate().find(|(_, r)| r.is_err())
                {
                    let code = *code;
                    return self.fail(id, JobFailure::Upload { position, code });
                }
                job.timeline.uploaded = now;
                self.dispatch(now, storage, id);
            }
            Phase::Fetching => {
                if not_there_yet(&results) && job.reads_left > 0 {
                    // Read before the output landed: try again shortly.
                    job.reads_left -= 1;
                    job.phase = Phase::Waiting(now + self.plan.retry_after_us);
                    return;
                }
                let cap = job.write_cap_out.read_cap();
                let outcome = open_stream(&cap, &job.ctx_out, results)
                    .map_err(|e| JobFailure::Output(e.to_string()))
                    .and_then(|bytes| {
                        Outcome::decode(&bytes, job.spec.output_class)
                            .map_err(|e| JobFailure::Output(e.to_string()))
                    });
                self.finish(now, id, outcome, false);
            }
            _ => {}
        }
    }

    fn forget_held_of(&mut self, id: ClientJobId) {
        let stale = &mut self.stale_held;
        self.by_held.retain(|seq, j| {
            if *j == id {
                stale.push(*seq);
            }
            *j != id
        });
    }

    /// Ends job `id` with `outcome`, cut to the person's `max_tokens`.
    fn finish(
        &mut self,
        now: Micros,
        id: ClientJobId,
        outcome: Result<Outcome, JobFailure>,
        held_reply: bool,
    ) {
        let Some(mut job) = self.jobs.remove(&id) else {
            return;
        };
        self.forget_held_of(id);
        job.timeline.done = now;
        let max_tokens = job.spec.sampling.max_tokens as usize;
        let result = outcome.map(|outcome| JobResult {
            outcome: match outcome {
                // The courier generated up to the class; the person asked
                // for at most `max_tokens`.
                Outcome::Tokens(mut tokens) => {
                    tokens.truncate(max_tokens);
                    Outcome::Tokens(tokens)
                }
                other => other,
            },
            input_class: job.input_class,
            output_box: job.output_box,
            output_boxes: job.output_boxes,
            echoes: job.echoes,
            held_reply,
            path: job.spec.path,
            timeline: job.timeline,
        });
        self.finished.push((id, result));
    }

    /// Sends job `id`'s dispatch (after its upload on the serial path, at
    /// once on the others).
    fn dispatch<K: Kem>(&mut self, now: Micros, storage: &mut StorageClient<K>, id: ClientJobId) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let input = (
            job.read_cap_in
                .as_ref()
                .map(|cap| cap.to_bytes().to_vec())
                .unwrap_or_default(),
            job.ctx_in.clone(),
            job.inline.take(),
        );
        let dispatch = wire_dispatch(
            &job.spec,
            job.input_class,
            input,
            &job.write_cap_out,
            &job.ctx_out,
        );
        if let Err(e) = dispatch.check() {
            return self.fail(id, JobFailure::Spec(e.to_string()));
        }
        // The person's parameters are checked; the wire carries their
        // public preset.
        let dispatch = Dispatch {
            sampling: dispatch.sampling.on_the_wire(dispatch.output_class),
            ..dispatch
        };
        let target = job.spec.courier.unwrap_or(self.courier);
        let seq = if job.spec.path == JobPath::Fast {
            let body = dispatch.encode();
            if body.len() > storage.max_held_body() {
                return self.fail(
                    id,
                    JobFailure::Spec(format!(
                        "a {}-byte dispatch does not fit one packet beside its SURBs; use the store path",
                        body.len()
                    )),
                );
            }
            let seq = storage.send_to_service_held(
                COMPUTE_FAST_SERVICE,
                target,
                body,
                self.plan.held_life_us,
            );
            self.by_held.insert(seq, id);
            seq
        } else {
            storage.send_to_service(COMPUTE_SERVICE, target, dispatch.encode())
        };
        job.echoes += 1;
        job.timeline.dispatched = now;
        job.phase = Phase::Dispatching;
        self.dispatch_echoes += 1;
        self.by_seq.insert(seq, id);
    }

    /// The output of a fast-path job, through its held SURB.
    fn held_reply(&mut self, now: Micros, id: ClientJobId, body: Vec<u8>) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let class = job.spec.output_class;
        let outcome = body
            .get(..Outcome::padded_len(class))
            .ok_or_else(|| JobFailure::Output("the held reply is too short".into()))
            .and_then(|bytes| {
                Outcome::decode(bytes, class).map_err(|e| JobFailure::Output(e.to_string()))
            });
        self.finish(now, id, outcome, true);
    }

    fn answered(&mut self, now: Micros, id: ClientJobId, reply: Option<Vec<u8>>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.timeline.accepted = now;
        let reply = match reply {
            None => return self.fail(id, JobFailure::NoCourierAnswer),
            Some(body) => match DispatchReply::decode(&body) {
                Ok(reply) => reply,
                Err(e) => return self.fail(id, JobFailure::BadAnswer(e.to_string())),
            },
        };
        match reply {
            DispatchReply::Accepted { edge_after_us } => {
                job.timeline.edge_after_us = edge_after_us;
                let edge = now + edge_after_us;
                // The courier took the job one trip home (this answer's
                // way back) before now, so its edge was before `edge`.
                let read_at = match job.spec.path {
                    JobPath::Serial => edge,
                    JobPath::Store => edge.saturating_add_signed(self.plan.store_read_offset_us),
                    JobPath::Fast => edge + self.plan.fast_fallback_after_us,
                };
                job.phase = Phase::Waiting(read_at.max(now));
            }
            DispatchReply::Refused { reason } => self.fail(id, JobFailure::Refused(reason)),
        }
    }
}
