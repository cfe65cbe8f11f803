//! The backends on real weights: the tiny seeded llama and all-MiniLM-L6-v2.

use funion_compute::{Outcome, Sampling, Task, WorkItem};
use funion_inference::{
    candle_bert::BertEmbedder, load_folder, minilm_dir, tiny, Backend, TextTokenizer,
};

fn item(task: Task, tokens: Vec<u32>, seed: u64, temperature: f32) -> WorkItem {
    WorkItem {
        job: 1,
        model: "m".into(),
        task,
        tokens,
        sampling: Sampling {
            seed,
            temperature,
            top_p: None,
            max_tokens: 24,
        },
        output_class: 256,
    }
}

#[test]
fn tiny_llama_is_reproducible_and_seeded() {
    let dir = std::env::temp_dir().join(format!("funion-tiny-{}", std::process::id()));
    tiny::write_tiny_llama(&dir, tiny::SEED, tiny::TinyShape::default()).unwrap();
    let first = std::fs::read(dir.join("model.safetensors")).unwrap();
    tiny::write_tiny_llama(&dir, tiny::SEED, tiny::TinyShape::default()).unwrap();
    assert_eq!(
        first,
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        "same seed, same weights"
    );

    let tokenizer = TextTokenizer::load(&dir).unwrap();
    let text = "The compute courier reads the boxes.";
    let ids = tokenizer.encode(text).unwrap();
    assert!(ids.len() < text.len(), "BPE merged something: {ids:?}");
    assert_eq!(tokenizer.decode(&ids).unwrap(), text);

    let model = load_folder(&dir).unwrap();
    assert_eq!(model.task(), Task::Generate);
    let sampled = |seed| match model
        .run(&[item(Task::Generate, ids.clone(), seed, 1.0)])
        .remove(0)
    {
        Ok(Outcome::Tokens(t)) => t,
        other => panic!("{other:?}"),
    };
    let a = sampled(7);
    assert!(!a.is_empty() && a.len() <= 24);
    assert_eq!(a, sampled(7), "same seed, same tokens");
    assert_ne!(a, sampled(8), "another seed, other tokens");
    // Greedy ignores the seed.
    let greedy = |seed| {
        model
            .run(&[item(Task::Generate, ids.clone(), seed, 0.0)])
            .remove(0)
    };
    assert_eq!(greedy(1), greedy(2));
    // Bad input is an error, not a panic.
    let bad = model
        .run(&[item(Task::Generate, vec![1_000_000], 1, 0.0)])
        .remove(0);
    assert!(bad.unwrap_err().contains("vocabulary"));
    let wrong = model.run(&[item(Task::Embed, ids, 1, 0.0)]).remove(0);
    assert!(wrong.is_err());
    std::fs::remove_dir_all(&dir).ok();
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn minilm_gives_the_published_similarities_batched_or_not() {
    let dir = minilm_dir().expect("scripts/setup-models installs the MiniLM package");
    let model = BertEmbedder::load(&dir).unwrap();
    assert_eq!(model.dimensions(), 384);
    let tokenizer = TextTokenizer::load(&dir).unwrap();
    // sentence-transformers' quick start, with this model:
    // [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], ...].
    let sentences = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ];
    let ids: Vec<Vec<u32>> = sentences
        .iter()
        .map(|s| tokenizer.encode(s).unwrap())
        .collect();
    let refs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let batched = model.embed(&refs).unwrap();
    for v in &batched {
        assert!((cosine(v, v) - 1.0).abs() < 1e-4, "normalised");
    }
    assert!((cosine(&batched[0], &batched[1]) - 0.6660).abs() < 0.005);
    assert!((cosine(&batched[0], &batched[2]) - 0.1046).abs() < 0.005);
    assert!((cosine(&batched[1], &batched[2]) - 0.1411).abs() < 0.005);
    // Padding inside a batch does not change a row.
    for (one, row) in refs.iter().zip(&batched) {
        let alone = model.embed(&[one]).unwrap().remove(0);
        let diff = alone
            .iter()
            .zip(row)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "batched and alone differ by {diff}");
    }
    // Through the trait: a class too small for 384 dimensions is an error.
    let mut small = item(Task::Embed, ids[0].clone(), 0, 0.0);
    small.output_class = 256;
    assert!(model.run(&[small]).remove(0).is_err());
}
