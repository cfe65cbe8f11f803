//! Experiment 7, seed 000's attack: a provider's compute couriers cluster
//! the anonymous jobs they take by what a dispatch shows (model, classes,
//! sampling parameters, which courier) and when it came. The mixnet hides
//! who sent a job; this asks whether a person's habits name them anyway.
//!
//! People's habits are a model, drawn from a seeded stream: each has a
//! usual prompt length, a usual `max_tokens`, usual sampling parameters, a
//! preferred model and a compute courier for the run (as the job client
//! kept before it picked one per job); each job keeps a habit with a fixed
//! probability and
//! otherwise picks afresh. What the courier sees of a job follows from the
//! real rules: [`class_for`] over the public classes, and
//! [`funion_compute::Sampling::on_the_wire`] for the presets. Ticket roots
//! and periods are the same for every job proved in one period (one
//! published root), and the bucket follows from the classes, so neither is
//! modelled as a feature.
//!
//! The adversary is naive Bayes over pairs, fit on half the people and
//! scored on the other half: for each feature the likelihood ratio of
//! "same person" given whether the two jobs agree (or, for exact lengths
//! and times, how far apart they are). It clusters by joining each job to
//! the cluster of its best-scoring earlier job above a threshold chosen on
//! the training half.

use std::collections::HashMap;

use funion_compute::{class_for, Sampling, INPUT_CLASSES, OUTPUT_CLASSES};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::privacy::{block_auc, shuffled_scored, Row, Scored};
use crate::stats::{adjusted_rand_index, mean_interval};

/// What the wire shows of a job's lengths and sampling parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Refund-style billing: the exact prompt length and a free
    /// `max_tokens` and sampling parameters (the positive control).
    Exact,
    /// Today's dispatch before the presets: public classes, but the
    /// person's own `max_tokens`, temperature and top_p.
    Classes,
    /// Classes, the public sampling presets and `max_tokens` as a power
    /// of two ([`Sampling::on_the_wire`]).
    Presets,
    /// What any bill must show and nothing else: the model and the
    /// classes (one preset for everyone, `max_tokens` the output class).
    /// The floor no choice of wire format goes below.
    Floor,
}

/// The `max_tokens` values people pick (a model of habit).
const MAX_TOKENS: [u32; 14] = [
    64, 100, 128, 150, 200, 256, 300, 400, 500, 512, 1000, 1024, 1500, 2048,
];
const TEMPERATURES: [f32; 12] = [0.0, 0.2, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0, 1.1, 1.2];
const TOP_PS: [Option<f32>; 6] = [
    None,
    Some(0.8),
    Some(0.9),
    Some(0.95),
    Some(0.98),
    Some(1.0),
];
/// Models' shares of people's preference.
const MODEL_SHARES: [f64; 3] = [0.6, 0.3, 0.1];
/// How often a job keeps each habit.
const KEEP_HABIT: f64 = 0.85;
/// Features the adversary compares.
const FEATURES: usize = 7;
/// Bins of a distance feature (log-spaced).
const DISTANCE_BINS: usize = 8;

/// One person's habits.
struct Habits {
    median_tokens: f64,
    max_tokens: u32,
    temperature: f32,
    top_p: Option<f32>,
    model: usize,
    courier: usize,
}

/// What a courier sees of one job.
#[derive(Clone, Copy, Debug)]
struct Seen {
    person: u64,
    at_s: f64,
    /// model, courier, input (class or exact), output class, max_tokens,
    /// temperature, top_p (as integers to compare).
    categorical: [u64; 5],
    input: u32,
}

fn uniform(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn pick<T: Copy>(rng: &mut ChaCha20Rng, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

fn pick_model(rng: &mut ChaCha20Rng) -> usize {
    let mut draw = uniform(rng);
    for (i, share) in MODEL_SHARES.iter().enumerate() {
        if draw < *share {
            return i;
        }
        draw -= share;
    }
    MODEL_SHARES.len() - 1
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha20Rng) -> f64 {
    let (u, v) = (uniform(rng).max(1e-300), uniform(rng));
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// The jobs `people` people send in `seconds`, `jobs_each` each on
/// average, as a provider with `couriers` couriers sees them under `wire`.
fn jobs(
    people: usize,
    jobs_each: usize,
    seconds: f64,
    couriers: usize,
    (wire, courier_per_job): (Wire, bool),
    seed: u64,
) -> Vec<Seen> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut seen = Vec::new();
    for person in 0..people {
        let habits = Habits {
            median_tokens: (16f64.ln() + uniform(&mut rng) * (3000f64 / 16.0).ln()).exp(),
            max_tokens: pick(&mut rng, &MAX_TOKENS),
            temperature: pick(&mut rng, &TEMPERATURES),
            top_p: pick(&mut rng, &TOP_PS),
            model: pick_model(&mut rng),
            courier: (rng.next_u64() % couriers.max(1) as u64) as usize,
        };
        for _ in 0..jobs_each {
            let keep = |rng: &mut ChaCha20Rng| uniform(rng) < KEEP_HABIT;
            let tokens =
                (habits.median_tokens * (0.6 * normal(&mut rng)).exp()).clamp(1.0, 4096.0) as u32;
            let max_tokens = if keep(&mut rng) {
                habits.max_tokens
            } else {
                pick(&mut rng, &MAX_TOKENS)
            };
            let (temperature, top_p) = if keep(&mut rng) {
                (habits.temperature, habits.top_p)
            } else {
                (pick(&mut rng, &TEMPERATURES), pick(&mut rng, &TOP_PS))
            };
            let model = if keep(&mut rng) {
                habits.model
            } else {
                pick_model(&mut rng)
            };
            let courier = if courier_per_job {
                (rng.next_u64() % couriers.max(1) as u64) as usize
            } else {
                habits.courier
            };
            let input_class = class_for(&INPUT_CLASSES, tokens as usize).unwrap_or(0);
            let output_class = class_for(&OUTPUT_CLASSES, max_tokens as usize).unwrap_or(0);
            let person_sampling = Sampling {
                seed: 0,
                temperature,
                top_p,
                max_tokens,
            };
            let (input, sampling) = match wire {
                Wire::Exact => (tokens, person_sampling),
                Wire::Classes => (input_class, person_sampling),
                Wire::Presets => (input_class, person_sampling.on_the_wire(output_class)),
                Wire::Floor => (
                    input_class,
                    Sampling {
                        max_tokens: output_class,
                        ..Sampling::default()
                    },
                ),
            };
            let milli = |x: f32| (x * 1000.0).round() as u64;
            seen.push(Seen {
                person: person as u64,
                at_s: uniform(&mut rng) * seconds,
                categorical: [
                    model as u64,
                    courier as u64,
                    u64::from(output_class),
                    u64::from(sampling.max_tokens),
                    milli(sampling.temperature) * 10_000 + sampling.top_p.map_or(9_999, milli),
                ],
                input,
            });
        }
    }
    seen.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    seen
}

/// The bin of a non-negative distance, log-spaced from `unit`.
fn distance_bin(distance: f64, unit: f64) -> usize {
    if distance < unit {
        0
    } else {
        (((distance / unit).log2().floor() as usize) + 1).min(DISTANCE_BINS - 1)
    }
}

/// A pair's feature values: agreement of each categorical feature (0/1),
/// then the binned distances of input lengths and of times.
fn pair_features(a: &Seen, b: &Seen) -> [usize; FEATURES] {
    let mut f = [0; FEATURES];
    for (slot, (x, y)) in f.iter_mut().zip(a.categorical.iter().zip(&b.categorical)) {
        *slot = usize::from(x == y);
    }
    let ratio = (f64::from(a.input.max(1)) / f64::from(b.input.max(1)))
        .ln()
        .abs();
    f[5] = distance_bin(ratio, 0.05);
    f[6] = distance_bin((a.at_s - b.at_s).abs(), 30.0);
    f
}

/// Naive Bayes over pair features: log likelihood ratios per feature value.
struct PairModel {
    log_ratio: [[f64; DISTANCE_BINS]; FEATURES],
}

impl PairModel {
    /// Fits on every same-person pair of `jobs` and as many pairs of two
    /// people drawn from `rng`.
    fn fit(jobs: &[Seen], rng: &mut ChaCha20Rng) -> PairModel {
        let mut counts = [[[1.0f64; DISTANCE_BINS]; FEATURES]; 2];
        let (same, other) = pairs(jobs, rng);
        for (label, set) in [(1, &same), (0, &other)] {
            for &(i, j) in set.iter() {
                for (f, v) in pair_features(&jobs[i], &jobs[j]).into_iter().enumerate() {
                    counts[label][f][v] += 1.0;
                }
            }
        }
        let mut log_ratio = [[0.0; DISTANCE_BINS]; FEATURES];
        for f in 0..FEATURES {
            let totals = [
                counts[0][f].iter().sum::<f64>(),
                counts[1][f].iter().sum::<f64>(),
            ];
            for v in 0..DISTANCE_BINS {
                log_ratio[f][v] =
                    (counts[1][f][v] / totals[1]).ln() - (counts[0][f][v] / totals[0]).ln();
            }
        }
        PairModel { log_ratio }
    }

    fn score(&self, a: &Seen, b: &Seen) -> f64 {
        pair_features(a, b)
            .into_iter()
            .enumerate()
            .map(|(f, v)| self.log_ratio[f][v])
            .sum()
    }
}

/// Two jobs, by index.
type Pair = (usize, usize);

/// Every same-person pair of `jobs` (indices), and as many pairs of two
/// people, drawn uniformly.
fn pairs(jobs: &[Seen], rng: &mut ChaCha20Rng) -> (Vec<Pair>, Vec<Pair>) {
    let mut by_person: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, j) in jobs.iter().enumerate() {
        by_person.entry(j.person).or_default().push(i);
    }
    let mut same = Vec::new();
    let mut people: Vec<&Vec<usize>> = by_person.values().collect();
    people.sort();
    for list in people {
        for (x, &i) in list.iter().enumerate() {
            for &j in &list[x + 1..] {
                same.push((i, j));
            }
        }
    }
    let mut other = Vec::with_capacity(same.len());
    while other.len() < same.len() && by_person.len() > 1 {
        let i = (rng.next_u64() % jobs.len() as u64) as usize;
        let j = (rng.next_u64() % jobs.len() as u64) as usize;
        if jobs[i].person != jobs[j].person {
            other.push((i, j));
        }
    }
    (same, other)
}

/// Joins each job (in time order) to the cluster of its best-scoring
/// earlier job when that score exceeds `threshold`; returns each job's
/// cluster.
fn cluster(jobs: &[Seen], model: &PairModel, threshold: f64) -> Vec<u64> {
    let mut labels: Vec<u64> = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let best = (0..i)
            .map(|j| (model.score(job, &jobs[j]), j))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        labels.push(match best {
            Some((score, j)) if score > threshold => labels[j],
            _ => i as u64,
        });
    }
    labels
}

/// One setting's scores pooled over seeds.
#[derive(Default)]
struct Scores {
    pairs: Vec<Scored>,
    ari: Vec<f64>,
}

impl Scores {
    /// Fits the adversary on the even-numbered people of one run and scores
    /// it on the odd-numbered ones: same-person AUC over pairs, and the
    /// ARI of its clusters (threshold chosen on the training half).
    fn add(&mut self, jobs: &[Seen], run: u64) {
        let (train, test): (Vec<Seen>, Vec<Seen>) = jobs.iter().partition(|j| j.person % 2 == 0);
        let mut rng = ChaCha20Rng::seed_from_u64(run ^ 0x7a11);
        let model = PairModel::fit(&train, &mut rng);
        let (same, other) = pairs(&test, &mut rng);
        for (positive, set) in [(true, &same), (false, &other)] {
            for &(i, j) in set.iter() {
                self.pairs.push(Scored {
                    block: run * 1_000_000 + test[i].person,
                    positive,
                    score: model.score(&test[i], &test[j]),
                });
            }
        }
        let truth = |set: &[Seen]| set.iter().map(|j| j.person).collect::<Vec<u64>>();
        let threshold = [-2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
            .into_iter()
            .max_by(|&a, &b| {
                let ari = |t| adjusted_rand_index(&truth(&train), &cluster(&train, &model, t));
                ari(a).total_cmp(&ari(b))
            })
            .expect("thresholds");
        self.ari.push(adjusted_rand_index(
            &truth(&test),
            &cluster(&test, &model, threshold),
        ));
    }
}

/// Experiment 7 for `people` people (at most 1,000: the clustering is
/// quadratic) over `seeds`, `jobs_each` jobs each in `seconds`, a provider
/// of `couriers` couriers: classes with free sampling and one courier per
/// run (before), and classes, presets and a courier per job (the job
/// client now), and the floor (only the model and the classes), beside
/// exact lengths and free parameters (positive control) and shuffled
/// people (negative control).
pub fn clustering_rows(
    people: usize,
    jobs_each: usize,
    seconds: u64,
    couriers: usize,
    seeds: &[u64],
) -> Vec<Row> {
    let people = people.min(1_000);
    let run = |wire: (Wire, bool)| {
        let mut scores = Scores::default();
        for &seed in seeds {
            let seen = jobs(people, jobs_each, seconds as f64, couriers, wire, seed);
            scores.add(&seen, seed);
        }
        scores
    };
    let control = run((Wire::Exact, false));
    let control_auc = block_auc(&control.pairs, 0, 31).value;
    let mut rows = Vec::new();
    for (wire, label) in [
        (
            (Wire::Classes, false),
            "classes, free sampling, courier per run (before)",
        ),
        ((Wire::Presets, true), "classes, presets, courier per job"),
        (
            (Wire::Floor, true),
            "model and classes only (the floor any bill shows)",
        ),
    ] {
        let scores = run(wire);
        let auc = block_auc(&scores.pairs, 200, 31);
        let null = block_auc(&shuffled_scored(&scores.pairs, 37), 0, 31).value;
        let name = format!("7 billing clustering, N = {people}");
        let adversary = format!("{couriers} couriers, {label}");
        rows.push(Row {
            name: name.clone(),
            adversary: adversary.clone(),
            metric: format!("same-person AUC ({jobs_each} jobs each)"),
            value: auc,
            target: "≤ 0.55".into(),
            meets: Some(auc.value <= 0.55),
            control_value: control_auc,
            null_value: null,
            plot: None,
        });
        let ari = mean_interval(&scores.ari);
        rows.push(Row {
            name,
            adversary,
            metric: "adjusted Rand index of its clusters".into(),
            value: ari,
            target: "none set".into(),
            meets: None,
            control_value: mean_interval(&control.ari).value,
            null_value: f64::NAN,
            plot: None,
        });
    }
    rows
}
