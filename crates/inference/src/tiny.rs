//! A tiny llama and its tokenizer, made here from a fixed seed: real
//! weights in a real safetensors file and a byte-level BPE trained offline
//! on a fixed text, so tests run a real model without downloading one. Its
//! answers are fluent only by accident.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder};

/// The seed every tiny model is made from.
pub const SEED: u64 = 0x6675_6e69_6f6e;
/// Vocabulary size of the tiny tokenizer.
pub const VOCAB: usize = 512;
/// Beginning- and end-of-sequence tokens.
pub const BOS: &str = "<s>";
/// End of sequence.
pub const EOS: &str = "</s>";

/// The tokenizer's training text.
const CORPUS: &str = "A person asks a model for help with something private. \
The prompt is split into tokens, padded to its class and written into boxes \
that only the holder of the read capability can open. A courier carries each \
box to two replicas; the replicas store it and answer. The compute courier \
reads the boxes, runs the model, waits for the edge of the latency bucket and \
writes the answer into new boxes. The person reads the answer later. Nobody \
on the way learns who asked what, or when the answer was ready. \
Mixes hold every packet for a random delay, drawn from an exponential \
distribution, so packets leave in a different order than they came. \
Cover traffic keeps the stream of packets the same whether or not anyone is \
working. Tickets pay for the work without saying who pays; a ticket used \
twice reveals the key of whoever cheated, and anyone can slash the deposit.";

/// Shape of the tiny llama.
#[derive(Clone, Copy, Debug)]
pub struct TinyShape {
    /// Width.
    pub hidden: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Positions.
    pub positions: usize,
}

impl Default for TinyShape {
    fn default() -> Self {
        TinyShape {
            hidden: 64,
            intermediate: 172,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            positions: 8192,
        }
    }
}

/// Writes `config.json`, `model.safetensors` and `tokenizer.json` of the
/// tiny llama into `dir` (created if needed). The same seed and shape give
/// the same files.
pub fn write_tiny_llama(dir: &Path, seed: u64, shape: TinyShape) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (bos, eos) = write_tokenizer(dir)?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "vocab_size": VOCAB,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "max_position_embeddings": shape.positions,
        "tie_word_embeddings": true,
        "torch_dtype": "float32",
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let device = Device::Cpu;
    let head = shape.hidden / shape.heads;
    let kv = head * shape.kv_heads;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut normal = |rows: usize, cols: usize, scale: f32| -> anyhow::Result<Tensor> {
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| gaussian(&mut rng) * scale)
            .collect();
        Ok(Tensor::from_vec(values, (rows, cols), &device)?)
    };
    tensors.insert(
        "model.embed_tokens.weight".into(),
        normal(VOCAB, shape.hidden, 0.05)?,
    );
    let w = 1.0 / (shape.hidden as f32).sqrt();
    for l in 0..shape.layers {
        let p = format!("model.layers.{l}");
        let h = shape.hidden;
        let i = shape.intermediate;
        for (name, rows, cols, scale) in [
            ("self_attn.q_proj", h, h, w),
            ("self_attn.k_proj", kv, h, w),
            ("self_attn.v_proj", kv, h, w),
            ("self_attn.o_proj", h, h, w),
            ("mlp.gate_proj", i, h, w),
            ("mlp.up_proj", i, h, w),
            ("mlp.down_proj", h, i, 1.0 / (i as f32).sqrt()),
        ] {
            tensors.insert(format!("{p}.{name}.weight"), normal(rows, cols, scale)?);
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            tensors.insert(
                format!("{p}.{norm}.weight"),
                Tensor::ones(shape.hidden, candle_core::DType::F32, &device)?,
            );
        }
    }
    tensors.insert(
        "model.norm.weight".into(),
        Tensor::ones(shape.hidden, candle_core::DType::F32, &device)?,
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}

/// Trains the byte-level BPE on the fixed text and writes
/// `tokenizer.json`; returns the IDs of BOS and EOS.
fn write_tokenizer(dir: &Path) -> anyhow::Result<(u32, u32)> {
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(VOCAB)
        .min_frequency(1)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![
            AddedToken::from(BOS, true),
            AddedToken::from(EOS, true),
        ])
        .build();
    let mut tokenizer =
        TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
            .with_post_processor(Some(ByteLevel::default()))
            .with_decoder(Some(ByteLevel::default()))
            .build()
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    let lines: Vec<&str> = CORPUS.split(". ").collect();
    tokenizer
        .train(&mut trainer, lines.into_iter())
        .map_err(|e| anyhow::anyhow!("training the tokenizer: {e}"))?;
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| anyhow::anyhow!("{t} missing"))
    };
    let (bos, eos) = (id(BOS)?, id(EOS)?);
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("saving the tokenizer: {e}"))?;
    Ok((bos, eos))
}

/// A standard normal draw (Box–Muller) from the seeded stream.
fn gaussian(rng: &mut ChaCha20Rng) -> f32 {
    let u = |rng: &mut ChaCha20Rng| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (a, b) = (u(rng), u(rng));
    ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
}
