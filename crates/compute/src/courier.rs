//! The compute courier ("Charlie"): takes a dispatch, fetches the input,
//! runs the model with the other jobs of its bucket, and stores the output
//! at the bucket edge `t_j = taken + j·Δ` (paper Algorithm 2): the result
//! if it is ready, else OVERFLOW. Nothing leaves before its edge, and what
//! leaves depends only on the output class.
//!
//! Admission is an effect: [`ComputeCourier::receive`] checks what it can
//! itself, then asks for the payment check ([`Action::Admit`]) and goes on
//! releasing outputs; the verdict comes back through
//! [`ComputeCourier::admitted`], and the client's answer leaves as
//! [`Action::Reply`]. No check ever holds up a bucket edge.
//!
//! Durable jobs: before a new job's "accepted" leaves, the courier asks
//! the driver to keep it ([`Action::Persist`], an [`AcceptedJob`]), and
//! once its output is out it says the record may go ([`Action::Forget`]).
//! A courier that restarts gives each kept record to
//! [`ComputeCourier::restore`]: the job runs again (its input read again
//! if it came by boxes) and leaves at its old edge, or as OVERFLOW at once
//! if that edge has passed. A job paid for is never silently dropped.
//!
//! Sans-I/O: the driver calls [`ComputeCourier::receive`], reports fetches,
//! finished batches and stores, and carries out what [`ComputeCourier::poll`]
//! returns at the times [`ComputeCourier::next_deadline`] names.

use std::collections::{BTreeMap, VecDeque};

use crate::job::{Dispatch, DispatchReply, Sampling, Task};
use crate::payload::{Input, Outcome};
use crate::Micros;

/// A job's number at this courier.
pub type JobId = u64;

/// How a compute courier works.
#[derive(Clone, Debug)]
pub struct CourierConfig {
    /// Bucket spacing Δ, microseconds (from the network document).
    pub delta_us: u64,
    /// Largest bucket index accepted.
    pub max_bucket: u32,
    /// Most jobs in one batch.
    pub max_batch: usize,
    /// Longest a fetched job waits for others of its bucket before its
    /// batch runs anyway.
    pub batch_window_us: u64,
    /// Most jobs held at once; more are refused.
    pub max_jobs: usize,
    /// Most batches running at once (a courier with several model
    /// workers; one for a single worker).
    pub max_running: usize,
    /// The (model, task) pairs this courier serves.
    pub served: Vec<(String, Task)>,
    /// How long after an input was not found (its upload, sent beside the
    /// dispatch, had not landed yet) the courier reads it again, as long as
    /// the bucket edge is further away than that.
    pub refetch_after_us: u64,
    /// A job whose bucket counts from its input (`bucket_from_input`) and
    /// whose input has not come this long after it was taken is released
    /// as OVERFLOW at `taken + j·Δ + max_fetch_us`.
    pub max_fetch_us: u64,
    /// Release each output as soon as it is computed instead of at its
    /// bucket edge. Never for a deployment: it is the positive control of
    /// the computation-time experiment, the leak the buckets close.
    pub release_at_finish: bool,
}

impl Default for CourierConfig {
    fn default() -> Self {
        CourierConfig {
            delta_us: 200_000,
            max_bucket: 3_000,
            max_batch: 32,
            batch_window_us: 50_000,
            max_jobs: 1_024,
            max_running: 1,
            served: Vec::new(),
            refetch_after_us: 200_000,
            max_fetch_us: 30_000_000,
            release_at_finish: false,
        }
    }
}

/// One job's part of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkItem {
    /// The job.
    pub job: JobId,
    /// Model name.
    pub model: String,
    /// Generation or embedding.
    pub task: Task,
    /// The prompt, unpadded.
    pub tokens: Vec<u32>,
    /// Sampling parameters.
    pub sampling: Sampling,
    /// Output class: the most items the outcome may hold.
    pub output_class: u32,
}

/// When each step of a job happened (microseconds, the driver's clock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobTimes {
    /// The dispatch was taken.
    pub taken: Micros,
    /// The input arrived.
    pub fetched: Option<Micros>,
    /// Its batch started.
    pub started: Option<Micros>,
    /// Its batch finished.
    pub finished: Option<Micros>,
    /// The bucket edge `t_j`.
    pub edge: Micros,
    /// Jobs in its batch.
    pub batch_size: usize,
}

/// What a driver keeps on disk about a job it took, so that a restart can
/// finish it ([`ComputeCourier::restore`]). Times are on the driver's clock
/// of the run that wrote it; a driver that restarts moves them to its new
/// clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedJob {
    /// Names the job among those kept: its output write cap (secret: the
    /// record must be kept where only the courier can read it).
    pub key: Vec<u8>,
    /// The dispatch, encoded as it came.
    pub dispatch: Vec<u8>,
    /// When it was taken.
    pub taken: Micros,
    /// Its bucket edge, or, while its edge waits for the input in hand
    /// (`edge_fixed` false), the deadline by which the input must come.
    pub edge: Micros,
    /// Whether `edge` is the edge itself.
    pub edge_fixed: bool,
    /// The reply SURB the dispatch carried, held for the output.
    pub reply: Option<HeldSurb>,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Keep this record of a job durably, and only then carry out the
    /// actions after it (the client's "accepted" among them). A record
    /// with a key already kept replaces it.
    Persist(Box<AcceptedJob>),
    /// The job kept under `key` is over (its output is out, or the storage
    /// network gave up on it): its record may go.
    Forget {
        /// The record's key ([`AcceptedJob::key`]).
        key: Vec<u8>,
    },
    /// Check that `dispatch` is paid for (its tickets), then call
    /// [`ComputeCourier::admitted`] with `admission` and the verdict.
    Admit {
        /// Names the check in the verdict.
        admission: u64,
        /// The job.
        dispatch: Box<Dispatch>,
    },
    /// Answer the client whose dispatch came in under `token`.
    Reply {
        /// The driver's name for the dispatch's way back (its SURB).
        token: u64,
        /// The answer.
        reply: DispatchReply,
    },
    /// Read the input stream with this read cap and context.
    Fetch {
        /// The job.
        job: JobId,
        /// Read cap of the input stream.
        read_cap: Vec<u8>,
        /// Its BACAP context.
        ctx: Vec<u8>,
        /// Its input class (the stream's length is fixed by it).
        input_class: u32,
    },
    /// Run these jobs together, then call [`ComputeCourier::finished`].
    Run {
        /// The batch's number.
        batch: u64,
        /// The jobs.
        items: Vec<WorkItem>,
    },
    /// Send `payload` (the padded output) through the reply SURB the
    /// dispatch carried, named `surb` by the driver, now: the job's bucket
    /// edge has come. Then call [`ComputeCourier::delivered`].
    Deliver {
        /// The job.
        job: JobId,
        /// The driver's name for the held SURB.
        surb: u64,
        /// The output, padded to the output class.
        payload: Vec<u8>,
        /// Whether this is the OVERFLOW marker.
        overflow: bool,
        /// The job's timeline.
        times: JobTimes,
    },
    /// Store `payload` (the padded output) with this write cap now: the
    /// job's bucket edge has come (or its reply SURB could not carry it).
    Store {
        /// The job.
        job: JobId,
        /// Write cap of the output stream.
        write_cap: Vec<u8>,
        /// Its BACAP context.
        ctx: Vec<u8>,
        /// The output, padded to the output class.
        payload: Vec<u8>,
        /// Whether this is the OVERFLOW marker.
        overflow: bool,
        /// The job's timeline.
        times: JobTimes,
    },
}

/// What the courier has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Dispatches taken.
    pub taken: u64,
    /// Dispatches refused.
    pub refused: u64,
    /// Batches run.
    pub batches: u64,
    /// Jobs run, over all batches.
    pub batched_jobs: u64,
    /// Largest batch so far.
    pub largest_batch: u64,
    /// Outputs released as OVERFLOW.
    pub overflows: u64,
    /// Jobs whose input or model failed (released as a failure).
    pub failures: u64,
    /// Outputs stored.
    pub stored: u64,
    /// Outputs sent through a held reply SURB (the fast path).
    pub delivered: u64,
    /// Inputs read again because they were not there yet.
    pub refetches: u64,
    /// Outputs the storage network did not take.
    pub store_failures: u64,
    /// Jobs taken again from their records after a restart.
    pub restored: u64,
}

/// A job whose input came inside its dispatch, at `now`: ready, or failed
/// if the input does not decode.
fn inline_input(inline: &[u8], class: u32, now: Micros) -> State {
    match Input::decode(inline, class) {
        Ok(input) => State::Ready {
            tokens: input.tokens,
            since: now,
        },
        Err(e) => State::Done(Outcome::Failed(format!("input: {e}"))),
    }
}

/// The read of `job`'s input stream.
fn fetch(job: JobId, dispatch: &Dispatch) -> Action {
    Action::Fetch {
        job,
        read_cap: dispatch.read_cap_in.clone(),
        ctx: dispatch.ctx_in.clone(),
        input_class: dispatch.input_class,
    }
}

impl Job {
    /// What a driver keeps of this job.
    fn record(&self) -> AcceptedJob {
        AcceptedJob {
            key: self.dispatch.write_cap_out.clone(),
            dispatch: self.bytes.clone(),
            taken: self.times.taken,
            edge: self.times.edge,
            edge_fixed: self.edge_fixed,
            reply: self.reply,
        }
    }
}

enum State {
    Fetching,
    Ready { tokens: Vec<u32>, since: Micros },
    Running,
    Done(Outcome),
    Released,
}

/// A reply SURB a dispatch carried, held for the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldSurb {
    /// The driver's name for it.
    pub surb: u64,
    /// The last moment the SURB still works (its mixes' keys are those of
    /// the epoch it was made for, kept through the grace period).
    pub usable_until: Micros,
}

struct Job {
    dispatch: Dispatch,
    /// The dispatch's encoding, for its record.
    bytes: Vec<u8>,
    state: State,
    times: JobTimes,
    /// Whether `times.edge` is the edge (not the fetch deadline of a job
    /// whose bucket counts from its input).
    edge_fixed: bool,
    reply: Option<HeldSurb>,
    /// The output, kept while its delivery through the SURB is under way,
    /// so a failed delivery can still be stored.
    released: Option<(Vec<u8>, bool)>,
}

/// The compute courier's state machine.
pub struct ComputeCourier {
    config: CourierConfig,
    jobs: BTreeMap<JobId, Job>,
    pending: VecDeque<Action>,
    next_job: JobId,
    next_batch: u64,
    running: std::collections::BTreeSet<u64>,
    refetch: BTreeMap<(Micros, JobId), ()>,
    by_write_cap: BTreeMap<Vec<u8>, JobId>,
    admissions: BTreeMap<u64, Admission>,
    next_admission: u64,
    counters: Counters,
}

/// A dispatch whose payment is being checked, and every copy of it that
/// arrived meanwhile.
struct Admission {
    dispatch: Dispatch,
    bytes: Vec<u8>,
    tokens: Vec<u64>,
    reply: Option<HeldSurb>,
}

impl ComputeCourier {
    /// A courier with no jobs.
    pub fn new(config: CourierConfig) -> Self {
        ComputeCourier {
            config,
            jobs: BTreeMap::new(),
            pending: VecDeque::new(),
            next_job: 1,
            next_batch: 1,
            running: std::collections::BTreeSet::new(),
            refetch: BTreeMap::new(),
            by_write_cap: BTreeMap::new(),
            admissions: BTreeMap::new(),
            next_admission: 1,
            counters: Counters::default(),
        }
    }

    /// Counts so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Jobs held (not yet stored).
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Takes a dispatch envelope at `now`. Returns the job's number (when
    /// taken) and the reply for the client.
    ///
    /// A dispatch sent again (its echo was late) is the same job: the
    /// answer names the time left to the same edge, and nothing runs twice.
    pub fn take(&mut self, now: Micros, bytes: &[u8]) -> (Option<JobId>, DispatchReply) {
        self.take_with(now, bytes, None)
    }

    fn take_with(
        &mut self,
        now: Micros,
        bytes: &[u8],
        reply: Option<HeldSurb>,
    ) -> (Option<JobId>, DispatchReply) {
        if let Ok(dispatch) = Dispatch::decode(bytes) {
            if let Some(&id) = self.by_write_cap.get(&dispatch.write_cap_out) {
                if let Some(job) = self.jobs.get(&id).filter(|j| j.dispatch == dispatch) {
                    let edge_after_us = match job.state {
                        // The edge is set once the input is in hand.
                        State::Fetching if dispatch.bucket_from_input => {
                            u64::from(dispatch.bucket) * self.config.delta_us
                        }
                        _ => job.times.edge.saturating_sub(now),
                    };
                    return (Some(id), DispatchReply::Accepted { edge_after_us });
                }
            }
        }
        match self.admit(bytes) {
            Ok(dispatch) => {
                let id = self.next_job;
                self.next_job += 1;
                let edge_after_us = u64::from(dispatch.bucket) * self.config.delta_us;
                let mut times = JobTimes {
                    taken: now,
                    edge: now + edge_after_us,
                    ..JobTimes::default()
                };
                let edge_fixed = dispatch.input.is_some() || !dispatch.bucket_from_input;
                let state = match &dispatch.input {
                    // The fast path: the input came with the dispatch.
                    Some(inline) => {
                        times.fetched = Some(now);
                        let state = inline_input(inline, dispatch.input_class, now);
                        if matches!(state, State::Done(_)) {
                            self.counters.failures += 1;
                        }
                        state
                    }
                    None => {
                        if dispatch.bucket_from_input {
                            // A deadline for the fetch; the edge itself is
                            // set when the input comes.
                            times.edge += self.config.max_fetch_us;
                        }
                        self.pending.push_back(fetch(id, &dispatch));
                        State::Fetching
                    }
                };
                self.by_write_cap.insert(dispatch.write_cap_out.clone(), id);
                let job = Job {
                    dispatch,
                    bytes: bytes.to_vec(),
                    state,
                    times,
                    edge_fixed,
                    reply,
                    released: None,
                };
                // Kept before the client hears "accepted" (pushed after this).
                self.pending
                    .push_back(Action::Persist(Box::new(job.record())));
                self.jobs.insert(id, job);
                self.counters.taken += 1;
                (Some(id), DispatchReply::Accepted { edge_after_us })
            }
            Err(reason) => {
                self.counters.refused += 1;
                (None, DispatchReply::Refused { reason })
            }
        }
    }

    /// A dispatch from the client whose way back the driver calls `token`.
    /// A job held already is answered at once (a resend); a new one is
    /// checked ([`ComputeCourier::check`]) and then handed to the payment
    /// check as [`Action::Admit`]; a copy arriving while that check runs
    /// waits for the same verdict.
    pub fn receive(&mut self, now: Micros, token: u64, bytes: &[u8]) {
        self.receive_with(now, token, None, bytes)
    }

    /// A dispatch that carried a reply SURB (`reply`) for its output: at
    /// the edge the output leaves through it ([`Action::Deliver`]) while the
    /// SURB is usable, and is stored otherwise. A copy sent again keeps the
    /// first SURB.
    pub fn receive_fast(&mut self, now: Micros, token: u64, reply: HeldSurb, bytes: &[u8]) {
        self.receive_with(now, token, Some(reply), bytes)
    }

    fn receive_with(&mut self, now: Micros, token: u64, reply: Option<HeldSurb>, bytes: &[u8]) {
        let dispatch = match Dispatch::decode(bytes) {
            Ok(dispatch) => dispatch,
            Err(e) => {
                self.counters.refused += 1;
                let reply = DispatchReply::Refused {
                    reason: e.to_string(),
                };
                self.pending.push_back(Action::Reply { token, reply });
                return;
            }
        };
        if self.holds(&dispatch) {
            let (_, reply) = self.take(now, bytes);
            self.pending.push_back(Action::Reply { token, reply });
            return;
        }
        if let Some(waiting) = self
            .admissions
            .values_mut()
            .find(|a| a.dispatch.write_cap_out == dispatch.write_cap_out)
        {
            if waiting.dispatch == dispatch {
                waiting.tokens.push(token);
            } else {
                let reply = DispatchReply::Refused {
                    reason: "the output write cap belongs to another job".into(),
                };
                self.pending.push_back(Action::Reply { token, reply });
            }
            return;
        }
        let busy = self.jobs.len() + self.admissions.len() >= self.config.max_jobs;
        if let Err(reason) = self.check(&dispatch).and_then(|()| {
            if busy {
                Err("busy: too many jobs held".to_string())
            } else {
                Ok(())
            }
        }) {
            self.counters.refused += 1;
            let reply = DispatchReply::Refused { reason };
            self.pending.push_back(Action::Reply { token, reply });
            return;
        }
        let admission = self.next_admission;
        self.next_admission += 1;
        self.pending.push_back(Action::Admit {
            admission,
            dispatch: Box::new(dispatch.clone()),
        });
        self.admissions.insert(
            admission,
            Admission {
                dispatch,
                bytes: bytes.to_vec(),
                tokens: vec![token],
                reply,
            },
        );
    }

    /// The payment check's verdict on `admission`: taken at `now` (its
    /// edge counts from here) or refused, and every copy answered.
    pub fn admitted(&mut self, now: Micros, admission: u64, verdict: Result<(), String>) {
        let Some(waiting) = self.admissions.remove(&admission) else {
            return;
        };
        let reply = match verdict {
            Ok(()) => self.take_with(now, &waiting.bytes, waiting.reply).1,
            Err(reason) => {
                self.counters.refused += 1;
                DispatchReply::Refused { reason }
            }
        };
        for token in waiting.tokens {
            let reply = reply.clone();
            self.pending.push_back(Action::Reply { token, reply });
        }
    }

    /// Payment checks under way.
    pub fn admitting(&self) -> usize {
        self.admissions.len()
    }

    /// Whether `dispatch` is a job this courier already holds (sent again).
    pub fn holds(&self, dispatch: &Dispatch) -> bool {
        self.by_write_cap
            .get(&dispatch.write_cap_out)
            .and_then(|id| self.jobs.get(id))
            .is_some_and(|j| j.dispatch == *dispatch)
    }

    fn admit(&self, bytes: &[u8]) -> Result<Dispatch, String> {
        let dispatch = Dispatch::decode(bytes).map_err(|e| e.to_string())?;
        self.check(&dispatch)?;
        Ok(dispatch)
    }

    /// Whether this courier would take `dispatch` now (model, bucket, cap,
    /// room), before its tickets are spent on it.
    pub fn check(&self, dispatch: &Dispatch) -> Result<(), String> {
        if !self
            .config
            .served
            .iter()
            .any(|(m, t)| *m == dispatch.model && *t == dispatch.task)
        {
            return Err(format!(
                "model {:?} is not served for {:?}",
                dispatch.model, dispatch.task
            ));
        }
        if dispatch.bucket == 0 || dispatch.bucket > self.config.max_bucket {
            return Err(format!(
                "bucket {} is outside 1..={}",
                dispatch.bucket, self.config.max_bucket
            ));
        }
        if self.by_write_cap.contains_key(&dispatch.write_cap_out) {
            return Err("the output write cap belongs to another job".into());
        }
        if self.jobs.len() >= self.config.max_jobs {
            return Err("busy: too many jobs held".into());
        }
        Ok(())
    }

    /// The input stream of `job` was read (the joined stream's bytes), or
    /// could not be.
    pub fn fetched(&mut self, now: Micros, job: JobId, input: Result<Vec<u8>, String>) {
        let Some(entry) = self.jobs.get_mut(&job) else {
            return;
        };
        if !matches!(entry.state, State::Fetching) {
            return;
        }
        entry.times.fetched = Some(now);
        if !entry.edge_fixed {
            entry.times.edge = now + u64::from(entry.dispatch.bucket) * self.config.delta_us;
            entry.edge_fixed = true;
            // The edge is known now: a restart keeps it.
            self.pending
                .push_back(Action::Persist(Box::new(entry.record())));
        }
        let parsed = input.and_then(|bytes| {
            Input::decode(&bytes, entry.dispatch.input_class).map_err(|e| format!("input: {e}"))
        });
        entry.state = match parsed {
            Ok(input) => State::Ready {
                tokens: input.tokens,
                since: now,
            },
            Err(reason) => {
                self.counters.failures += 1;
                State::Done(Outcome::Failed(reason))
            }
        };
    }

    /// The dispatch of a job still held.
    pub fn dispatch_of(&self, job: JobId) -> Option<&Dispatch> {
        self.jobs.get(&job).map(|j| &j.dispatch)
    }

    /// The input of `job` was not found: its upload, sent beside the
    /// dispatch, may not have landed yet. It is read again after
    /// `refetch_after_us` if the edge is further away than that; otherwise
    /// the job fails (it will be released as OVERFLOW at the edge).
    pub fn input_missing(&mut self, now: Micros, job: JobId) {
        let Some(entry) = self.jobs.get(&job) else {
            return;
        };
        if !matches!(entry.state, State::Fetching) {
            return;
        }
        let at = now + self.config.refetch_after_us;
        if at < entry.times.edge {
            self.refetch.insert((at, job), ());
        }
    }

    /// The output of `job` went through its held SURB (`ok`), or the SURB
    /// could not carry it, in which case the output is stored instead.
    pub fn delivered(&mut self, job: JobId, ok: bool) {
        if ok {
            if self.remove(job) {
                self.counters.delivered += 1;
            }
            return;
        }
        let Some(entry) = self.jobs.get_mut(&job) else {
            return;
        };
        entry.reply = None;
        if let Some((payload, overflow)) = entry.released.take() {
            self.pending.push_back(Action::Store {
                job,
                write_cap: entry.dispatch.write_cap_out.clone(),
                ctx: entry.dispatch.ctx_out.clone(),
                payload,
                overflow,
                times: entry.times,
            });
        }
    }

    /// The batch `batch` finished with one outcome per job.
    pub fn finished(
        &mut self,
        now: Micros,
        batch: u64,
        outcomes: Vec<(JobId, Result<Outcome, String>)>,
    ) {
        self.running.remove(&batch);
        for (id, outcome) in outcomes {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            job.times.finished = Some(now);
            if !matches!(job.state, State::Running) {
                continue; // already released as OVERFLOW
            }
            if self.config.release_at_finish {
                job.times.edge = job.times.edge.min(now);
            }
            let outcome = outcome
                .and_then(|o| {
                    o.encode(job.dispatch.output_class)
                        .map(|_| o)
                        .map_err(|e| format!("output: {e}"))
                })
                .unwrap_or_else(|reason| {
                    self.counters.failures += 1;
                    Outcome::Failed(reason)
                });
            job.state = State::Done(outcome);
        }
    }

    /// The output of `job` was stored (or the storage network gave up).
    pub fn stored(&mut self, job: JobId, ok: bool) {
        if self.remove(job) {
            if ok {
                self.counters.stored += 1;
            } else {
                self.counters.store_failures += 1;
            }
        }
    }

    /// Removes a job that is over, and lets its record go. Whether it was
    /// held.
    fn remove(&mut self, job: JobId) -> bool {
        let Some(removed) = self.jobs.remove(&job) else {
            return false;
        };
        self.by_write_cap.remove(&removed.dispatch.write_cap_out);
        self.pending.push_back(Action::Forget {
            key: removed.dispatch.write_cap_out,
        });
        true
    }

    /// Takes again, at `now`, a job a driver kept before it restarted
    /// (times already moved to this run's clock): it keeps its edge, its
    /// input is read again if it came by boxes, and a job whose edge has
    /// passed leaves as OVERFLOW at the next [`ComputeCourier::poll`]. No
    /// payment check: it was paid for when first taken. Refused (with the
    /// reason) if the record does not decode or names a job held already.
    pub fn restore(&mut self, now: Micros, record: AcceptedJob) -> Result<JobId, String> {
        let dispatch = Dispatch::decode(&record.dispatch).map_err(|e| e.to_string())?;
        if dispatch.write_cap_out != record.key {
            return Err("the record's key is not its dispatch's output write cap".into());
        }
        if self.by_write_cap.contains_key(&dispatch.write_cap_out) {
            return Err("a job with this output write cap is held already".into());
        }
        let id = self.next_job;
        self.next_job += 1;
        let mut times = JobTimes {
            taken: record.taken,
            edge: record.edge,
            ..JobTimes::default()
        };
        let past = record.edge <= now;
        let state = match &dispatch.input {
            Some(inline) => {
                times.fetched = Some(now);
                inline_input(inline, dispatch.input_class, now)
            }
            None => {
                if !past {
                    self.pending.push_back(fetch(id, &dispatch));
                }
                State::Fetching
            }
        };
        self.by_write_cap.insert(dispatch.write_cap_out.clone(), id);
        self.jobs.insert(
            id,
            Job {
                dispatch,
                bytes: record.dispatch,
                state,
                times,
                edge_fixed: record.edge_fixed,
                reply: record.reply,
                released: None,
            },
        );
        self.counters.restored += 1;
        Ok(id)
    }

    /// When `poll` next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<Micros> {
        if !self.pending.is_empty() {
            return Some(0);
        }
        let refetch = self.refetch.keys().next().map(|(at, _)| *at);
        let edges = self
            .jobs
            .values()
            .filter(|j| !matches!(j.state, State::Released))
            .map(|j| j.times.edge);
        let windows = self.jobs.values().filter_map(|j| match j.state {
            State::Ready { since, .. } if self.has_worker_free() => {
                Some(self.batch_due(since, j.times.edge))
            }
            _ => None,
        });
        edges.chain(windows).chain(refetch).min()
    }

    /// What is due at `now`: fetches, a batch to run, outputs whose edge
    /// has come.
    pub fn poll(&mut self, now: Micros) -> Vec<Action> {
        let mut actions: Vec<Action> = self.pending.drain(..).collect();
        while let Some(entry) = self.refetch.first_entry() {
            let (at, id) = *entry.key();
            if at > now {
                break;
            }
            entry.remove();
            if let Some(job) = self
                .jobs
                .get(&id)
                .filter(|j| matches!(j.state, State::Fetching))
            {
                self.counters.refetches += 1;
                actions.push(fetch(id, &job.dispatch));
            }
        }
        // Edges first: a job released now must not be run afterwards.
        for (&id, job) in self.jobs.iter_mut() {
            if job.times.edge > now || matches!(job.state, State::Released) {
                continue;
            }
            let state = std::mem::replace(&mut job.state, State::Released);
            let (outcome, overflow) = match state {
                State::Done(outcome) => (outcome, false),
                _ => {
                    self.counters.overflows += 1;
                    (Outcome::Overflow, true)
                }
            };
            let payload = outcome
                .encode(job.dispatch.output_class)
                .expect("outcomes are checked against the class when they finish");
            if let Some(reply) = job.reply.filter(|r| now <= r.usable_until) {
                job.released = Some((payload.clone(), overflow));
                actions.push(Action::Deliver {
                    job: id,
                    surb: reply.surb,
                    payload,
                    overflow,
                    times: job.times,
                });
                continue;
            }
            actions.push(Action::Store {
                job: id,
                write_cap: job.dispatch.write_cap_out.clone(),
                ctx: job.dispatch.ctx_out.clone(),
                payload,
                overflow,
                times: job.times,
            });
        }
        while self.has_worker_free() {
            let Some(run) = self.next_batch(now) else {
                break;
            };
            actions.push(run);
        }
        actions
    }

    fn has_worker_free(&self) -> bool {
        self.running.len() < self.config.max_running.max(1)
    }

    /// When a batch whose first job was ready at `ready`, and whose earliest
    /// edge is `edge`, runs even if not full: after the batch window, but
    /// never later than halfway from `ready` to the edge, so waiting for
    /// company leaves at least as much time for the work.
    fn batch_due(&self, ready: Micros, edge: Micros) -> Micros {
        let half_way = ready + edge.saturating_sub(ready) / 2;
        (ready + self.config.batch_window_us).min(half_way)
    }

    /// The batch to run now, if one is due: the ready jobs of the bucket
    /// (model, task, j) with the earliest edge, once the batch is full or
    /// it is due ([`ComputeCourier::batch_due`]).
    fn next_batch(&mut self, now: Micros) -> Option<Action> {
        type Key = (String, Task, u32);
        let key = |j: &Job| (j.dispatch.model.clone(), j.dispatch.task, j.dispatch.bucket);
        let mut groups: BTreeMap<Key, (Micros, Micros, Vec<JobId>)> = BTreeMap::new();
        for (&id, job) in &self.jobs {
            if let State::Ready { since, .. } = job.state {
                let g = groups
                    .entry(key(job))
                    .or_insert((Micros::MAX, Micros::MAX, Vec::new()));
                g.0 = g.0.min(job.times.edge);
                g.1 = g.1.min(since);
                g.2.push(id);
            }
        }
        let (_, (_, _, ids)) = groups
            .into_iter()
            .filter(|(_, (edge, first_ready, ids))| {
                ids.len() >= self.config.max_batch || now >= self.batch_due(*first_ready, *edge)
            })
            .min_by_key(|(_, (edge, ..))| *edge)?;
        let ids: Vec<JobId> = ids.into_iter().take(self.config.max_batch).collect();
        let batch = self.next_batch;
        self.next_batch += 1;
        let mut items = Vec::with_capacity(ids.len());
        for id in &ids {
            let job = self.jobs.get_mut(id).expect("listed above");
            let State::Ready { tokens, .. } = std::mem::replace(&mut job.state, State::Running)
            else {
                unreachable!("only ready jobs are grouped")
            };
            job.times.started = Some(now);
            job.times.batch_size = ids.len();
            items.push(WorkItem {
                job: *id,
                model: job.dispatch.model.clone(),
                task: job.dispatch.task,
                tokens,
                sampling: job.dispatch.sampling,
                output_class: job.dispatch.output_class,
            });
        }
        self.running.insert(batch);
        self.counters.batches += 1;
        self.counters.batched_jobs += items.len() as u64;
        self.counters.largest_batch = self.counters.largest_batch.max(items.len() as u64);
        Some(Action::Run { batch, items })
    }
}
