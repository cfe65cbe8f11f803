//! SmolLM2-135M-Instruct from its GGUF file (`scripts/setup-models`): the
//! tokenizer rebuilt from the metadata round-trips text, the chat template
//! renders, the model answers a factual question, and a batched row's
//! tokens equal the same job run alone.

use std::sync::OnceLock;

use funion_compute::{Sampling, Task, WorkItem};
use funion_inference::chat::{ChatTemplate, Message};
use funion_inference::gguf::{GgufLlama, WeightFormat};
use funion_inference::{smollm2_gguf, TextTokenizer};

fn model() -> &'static GgufLlama {
    static MODEL: OnceLock<GgufLlama> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = smollm2_gguf().expect("scripts/setup-models installs SmolLM2");
        GgufLlama::load(&path, WeightFormat::F32).expect("loads")
    })
}

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_gguf(&smollm2_gguf().unwrap()).expect("tokenizer from the metadata")
}

fn chat(question: &str) -> String {
    let template = ChatTemplate::from_gguf(&smollm2_gguf().unwrap()).expect("template");
    template
        .render(
            &[Message {
                role: "user".into(),
                content: question.into(),
            }],
            true,
        )
        .expect("renders")
}

fn job(tokens: Vec<u32>, seed: u64, temperature: f32, max_tokens: u32) -> WorkItem {
    WorkItem {
        job: seed,
        model: "smollm2".into(),
        task: Task::Generate,
        tokens,
        sampling: Sampling {
            seed,
            temperature,
            top_p: (temperature > 0.0).then_some(0.9),
            max_tokens,
        },
        output_class: 256,
    }
}

#[test]
fn tokenizer_round_trips_and_adds_nothing_after_special_tokens() {
    let tokenizer = tokenizer();
    let prompt = chat("How many legs do 12 spiders have?  Answer   in digits:\n\t1234");
    assert!(prompt.starts_with("<|im_start|>system\n"), "{prompt:?}");
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    let ids = tokenizer.encode(&prompt).unwrap();
    assert_eq!(tokenizer.decode_with_special(&ids).unwrap(), prompt);
    // <|im_start|> is token 1, matched whole; "user" follows it with no
    // space in front (a prefix space there is the known trap).
    let user = tokenizer.encode("<|im_start|>user").unwrap();
    assert_eq!(user[0], 1, "{user:?}");
    assert_eq!(tokenizer.decode(&user[1..]).unwrap(), "user");
    // SmolLM's pre-tokenizer splits digits one by one.
    let digits = tokenizer.encode("1234").unwrap();
    assert_eq!(digits.len(), 4, "{digits:?}");
    for text in [
        "naïve café — 東京",
        "fn main() {\n    println!(\"hi\");\n}",
        "  two  spaces ",
    ] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(tokenizer.decode(&ids).unwrap(), text);
    }
}

#[test]
fn answers_a_factual_question() {
    let tokenizer = tokenizer();
    let prompt = tokenizer
        .encode(&chat("What is the capital of France?"))
        .unwrap();
    let out = model().generate(&[job(prompt, 1, 0.0, 24)], 1);
    let tokens = out[0].as_ref().expect("generates");
    let answer = tokenizer.decode(tokens).unwrap();
    assert!(answer.contains("Paris"), "{answer:?}");
    assert!(
        model().eos().contains(tokens.last().unwrap()) || tokens.len() == 24,
        "ends at its end-of-turn token or the limit"
    );
}

#[test]
fn a_batched_row_equals_the_job_alone() {
    let tokenizer = tokenizer();
    let questions = [
        "Name a colour.",
        "Write one sentence about the sea, please, and keep it short.",
        "2+2=?",
        "What do bees make?",
        "Say hello in French.",
    ];
    let jobs: Vec<WorkItem> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let tokens = tokenizer.encode(&chat(q)).unwrap();
            // Greedy and sampled rows side by side, of different lengths.
            let temperature = if i % 2 == 0 { 0.0 } else { 0.8 };
            job(tokens, 100 + i as u64, temperature, 12 + 3 * i as u32)
        })
        .collect();
    let alone: Vec<Vec<u32>> = jobs
        .iter()
        .map(|j| {
            model()
                .generate(std::slice::from_ref(j), 1)
                .remove(0)
                .unwrap()
        })
        .collect();
    // Four rows at once: the fifth job joins when the first row leaves.
    let batched: Vec<Vec<u32>> = model()
        .generate(&jobs, 4)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(batched, alone);
    // And the sampled rows did sample: another seed, another answer.
    let mut reseeded = jobs[1].clone();
    reseeded.sampling.seed += 1;
    reseeded.sampling.max_tokens = 24;
    let mut longer = jobs[1].clone();
    longer.sampling.max_tokens = 24;
    let outs = model().generate(&[longer, reseeded], 2);
    assert_ne!(outs[0], outs[1]);
}

#[test]
fn refuses_bad_prompts_and_keeps_the_others() {
    let vocab = model().config().vocab as u32;
    let good = tokenizer().encode(&chat("Hi")).unwrap();
    let context = model().config().context;
    let jobs = [
        job(vec![vocab + 5], 1, 0.0, 4),
        job(vec![1; context], 2, 0.0, 4),
        job(Vec::new(), 3, 0.0, 4),
        job(good, 4, 0.0, 4),
    ];
    let out = model().generate(&jobs, 4);
    assert!(
        out[0].as_ref().unwrap_err().contains("vocabulary"),
        "{out:?}"
    );
    assert!(
        out[1].as_ref().unwrap_err().contains("positions"),
        "{out:?}"
    );
    assert!(out[2].is_err());
    assert_eq!(out[3].as_ref().unwrap().len(), 4);
}

/// The forward pass against candle's own quantized llama on the same file,
/// weights as stored: the same greedy tokens (a wrong RoPE layout, head
/// grouping or mask would change them).
#[test]
fn matches_candles_quantized_llama() {
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_llama::ModelWeights;
    let path = smollm2_gguf().unwrap();
    let prompt = tokenizer()
        .encode(&chat("Write a haiku about rain."))
        .unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let (mut input, mut position, mut expected) = (prompt.clone(), 0, Vec::new());
    for _ in 0..10 {
        let x = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = reference.forward(&x, position).unwrap().squeeze(0).unwrap();
        position += input.len();
        let next = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        expected.push(next);
        input = vec![next];
    }
    let stored = GgufLlama::load(&path, WeightFormat::AsStored).unwrap();
    let mut greedy = job(prompt, 1, 0.0, 10);
    greedy.output_class = 256;
    let mine = stored.generate(&[greedy], 1).remove(0).unwrap();
    assert_eq!(mine, expected[..mine.len()]);
}
