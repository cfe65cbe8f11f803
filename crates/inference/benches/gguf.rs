//! SmolLM2-135M-Instruct from its GGUF file (`scripts/setup-models`): decode
//! tokens/s at batch 1, 4 and 16 (rows prefilled untimed, then 16 decode
//! steps timed), prefill tokens/s of a 128-token prompt, and load time, for
//! f32 weights (the default) and Q8_0 re-quantized weights. Criterion's
//! "thrpt" is tokens/s. The llama.cpp anchor: `scripts/llamacpp/bench`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use funion_inference::gguf::{GgufLlama, WeightFormat};
use funion_inference::smollm2_gguf;

const STEPS: usize = 16;
const FORMATS: [(&str, WeightFormat); 2] = [
    ("f32", WeightFormat::F32),
    ("q8_0", WeightFormat::Q8ForSlowTypes),
];

/// A prompt of `n` ordinary tokens (IDs past the special ones).
fn prompt(n: usize, row: usize) -> Vec<u32> {
    (0..n)
        .map(|i| 200 + ((i * 31 + row * 7) % 20_000) as u32)
        .collect()
}

fn greedy(logits: &candle_core::Tensor) -> Vec<u32> {
    logits
        .argmax(candle_core::D::Minus1)
        .and_then(|t| t.to_vec1::<u32>())
        .expect("argmax")
}

fn decode(c: &mut Criterion) {
    let path = smollm2_gguf().expect("scripts/setup-models installs SmolLM2");
    for (label, format) in FORMATS {
        let model = GgufLlama::load(&path, format).expect("loads");
        let mut group = c.benchmark_group(format!("smollm2_decode_{label}"));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(8));
        for batch in [1usize, 4, 16] {
            group.throughput(Throughput::Elements((batch * STEPS) as u64));
            group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let mut rows: Vec<_> = (0..batch).map(|_| model.sequence()).collect();
                        let prompts: Vec<Vec<u32>> =
                            (0..batch).map(|r| prompt(32 + r, r)).collect();
                        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
                        let mut seqs: Vec<_> = rows.iter_mut().collect();
                        let mut next = greedy(&model.step(&mut seqs, &refs).expect("prefill"));
                        let started = Instant::now();
                        for _ in 0..STEPS {
                            let inputs: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
                            let refs: Vec<&[u32]> = inputs.iter().map(|t| t.as_slice()).collect();
                            next = greedy(&model.step(&mut seqs, &refs).expect("decode"));
                        }
                        spent += started.elapsed();
                    }
                    spent
                })
            });
        }
        group.finish();
        let mut group = c.benchmark_group(format!("smollm2_prefill_{label}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements(128));
        let long = prompt(128, 0);
        group.bench_function("128_tokens", |b| {
            b.iter(|| {
                let mut row = model.sequence();
                model.step(&mut [&mut row], &[&long]).expect("prefill")
            })
        });
        group.finish();
    }
    let mut group = c.benchmark_group("smollm2_load");
    group.sample_size(10);
    for (label, format) in FORMATS {
        group.bench_function(label, |b| {
            b.iter(|| GgufLlama::load(&path, format).expect("loads"))
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
