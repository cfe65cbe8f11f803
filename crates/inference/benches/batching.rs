//! Batched against one-at-a-time: all-MiniLM-L6-v2 on the CPU embedding 32
//! prompts, one forward pass each or in batches; the tiny llama for scale.
//! Needs the model package (`scripts/setup-models`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use funion_compute::{Sampling, Task, WorkItem};
use funion_inference::candle_bert::BertEmbedder;
use funion_inference::{minilm_dir, Backend, TextTokenizer};

fn prompts(tokenizer: &TextTokenizer, words: usize) -> Vec<Vec<u32>> {
    (0..32)
        .map(|i| {
            let text: Vec<String> = (0..words)
                .map(|w| format!("word{} item{}", (i * 7 + w) % 97, w))
                .collect();
            tokenizer.encode(&text.join(" ")).expect("tokenizes")
        })
        .collect()
}

fn embedding(c: &mut Criterion) {
    let dir = minilm_dir().expect("scripts/setup-models installs the MiniLM package");
    let model = BertEmbedder::load(&dir).expect("loads");
    let tokenizer = TextTokenizer::load(&dir).expect("tokenizer");
    for (label, words) in [("short", 6), ("long", 48)] {
        let prompts = prompts(&tokenizer, words);
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut group = c.benchmark_group(format!("minilm_32_{label}_{longest}_tokens"));
        group.sample_size(10);
        group.throughput(Throughput::Elements(prompts.len() as u64));
        let items: Vec<WorkItem> = prompts
            .iter()
            .enumerate()
            .map(|(i, tokens)| WorkItem {
                job: i as u64,
                model: "minilm".into(),
                task: Task::Embed,
                tokens: tokens.clone(),
                sampling: Sampling::default(),
                output_class: 512,
            })
            .collect();
        group.bench_function("backend_run_token_budget", |b| b.iter(|| model.run(&items)));
        for batch in [1usize, 4, 8, 32] {
            group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
                b.iter(|| {
                    for chunk in prompts.chunks(batch) {
                        let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
                        model.embed(&refs).expect("embeds");
                    }
                })
            });
        }
        group.finish();
    }
}

fn generation(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("funion-bench-tiny-{}", std::process::id()));
    funion_inference::tiny::write_tiny_llama(
        &dir,
        funion_inference::tiny::SEED,
        Default::default(),
    )
    .expect("writes");
    let model = funion_inference::load_folder(&dir).expect("loads");
    let tokens = TextTokenizer::load(&dir)
        .expect("tokenizer")
        .encode("The compute courier reads the boxes.")
        .expect("tokenizes");
    let items: Vec<WorkItem> = (0..8)
        .map(|i| WorkItem {
            job: i,
            model: "tiny".into(),
            task: Task::Generate,
            tokens: tokens.clone(),
            sampling: Sampling {
                seed: i,
                temperature: 0.7,
                top_p: None,
                max_tokens: 32,
            },
            output_class: 256,
        })
        .collect();
    let mut group = c.benchmark_group("tiny_llama_8_jobs_32_tokens");
    group.sample_size(10);
    group.throughput(Throughput::Elements(8));
    group.bench_function("one_batch", |b| b.iter(|| model.run(&items)));
    group.bench_function("one_at_a_time", |b| {
        b.iter(|| {
            items.iter().for_each(|i| {
                model.run(std::slice::from_ref(i));
            })
        })
    });
    group.finish();
    std::fs::remove_dir_all(&dir).ok();
}

criterion_group!(benches, embedding, generation);
criterion_main!(benches);
