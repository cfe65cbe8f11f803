//! Llama-family GGUF models (SmolLM2-135M-Instruct and its kin) on the CPU,
//! with continuous batching.
//!
//! The forward pass is written here over candle's quantized matmuls rather
//! than taken from `candle_transformers::models::quantized_llama`, whose
//! single KV cache per model cannot hold several sequences. A step takes
//! any number of rows, each with its own KV cache, position and input (a
//! whole prompt when it joins, one token per step after): their tokens are
//! laid end to end in one matrix, so every weight matmul is shared by the
//! batch, and attention runs per row against that row's own cache, with a
//! causal mask over the row's new tokens. Rows are ragged, never padded,
//! so no padding mask is needed and no row sees another's keys. A row's
//! arithmetic does not depend on the rows beside it (activations are
//! quantized per row, attention is per row), so a batched row's tokens are
//! the same job's tokens alone, bit for bit; the tests check it.

use std::collections::VecDeque;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_transformers::generation::LogitsProcessor;

use crate::{guarded, Backend, Outcome, Task, WorkItem};

/// How a GGUF file's matrices are held in memory.
///
/// Measured on SmolLM2-135M-Instruct (Q4_1 in the file): candle's quantized
/// matmuls quantize the activations too, and with weights as stored or
/// re-quantized to Q8_0 the model's greedy answer to "What is the capital
/// of France?" turns into French word salad (candle's own quantized llama
/// gives the same), while f32 answers "The capital of France is Paris."
/// [`WeightFormat::F32`] is therefore the default; the speed of each is in
/// the `gguf` benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightFormat {
    /// As the file stores them.
    AsStored,
    /// Matrices in a type candle 0.11 has no AVX2 dot product for (Q4_1,
    /// Q5_0, Q5_1) re-quantized to Q8_0 at load; the others as stored.
    Q8ForSlowTypes,
    /// Every matrix dequantized to f32 (dense matmuls).
    #[default]
    F32,
}

/// The shape of a llama-family model, from the GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufConfig {
    /// Transformer blocks.
    pub layers: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest sequence (prompt and output) the model was trained for.
    pub context: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub eps: f32,
}

struct Block {
    attn_norm: Tensor,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

/// A llama-family GGUF model, loaded for batched generation.
pub struct GgufLlama {
    config: GgufConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    eos: Vec<u32>,
    device: Device,
}

/// One sequence between steps: its KV cache per layer and the positions
/// it holds.
pub struct Sequence {
    kv: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl Sequence {
    /// Positions held (prompt and output so far).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn metadata<'a>(
    content: &'a gguf_file::Content,
    key: &str,
) -> anyhow::Result<&'a gguf_file::Value> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| anyhow::anyhow!("the GGUF metadata has no {key}"))
}

fn metadata_u32(content: &gguf_file::Content, key: &str) -> anyhow::Result<usize> {
    Ok(metadata(content, key)?
        .to_u32()
        .map_err(|e| anyhow::anyhow!("{key}: {e}"))? as usize)
}

/// The context length a llama-family GGUF file declares.
pub fn context_of(path: &Path) -> anyhow::Result<u32> {
    let (content, _) = read_content(path)?;
    Ok(metadata_u32(&content, "llama.context_length")? as u32)
}

/// Reads the GGUF header of `path` (metadata and tensor directory).
pub(crate) fn read_content(path: &Path) -> anyhow::Result<(gguf_file::Content, std::fs::File)> {
    let mut file =
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow::anyhow!("{}: not a GGUF file: {e}", path.display()))?;
    Ok((content, file))
}

impl GgufConfig {
    fn read(content: &gguf_file::Content) -> anyhow::Result<Self> {
        let arch = metadata(content, "general.architecture")?
            .to_string()
            .map_err(|e| anyhow::anyhow!("general.architecture: {e}"))?;
        anyhow::ensure!(
            arch == "llama",
            "architecture {arch:?} is not supported (llama only)"
        );
        let hidden = metadata_u32(content, "llama.embedding_length")?;
        let heads = metadata_u32(content, "llama.attention.head_count")?;
        let kv_heads = metadata_u32(content, "llama.attention.head_count_kv")?;
        anyhow::ensure!(
            heads > 0 && kv_heads > 0 && heads % kv_heads == 0 && hidden % heads == 0,
            "inconsistent heads: {heads} query, {kv_heads} key/value, width {hidden}"
        );
        let vocab = match content.metadata.get("llama.vocab_size") {
            Some(v) => v.to_u32().map_err(|e| anyhow::anyhow!("vocab_size: {e}"))? as usize,
            None => metadata(content, "tokenizer.ggml.tokens")?
                .to_vec()
                .map_err(|e| anyhow::anyhow!("tokenizer.ggml.tokens: {e}"))?
                .len(),
        };
        let f32_or = |key: &str, default: f32| {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(default)
        };
        Ok(GgufConfig {
            layers: metadata_u32(content, "llama.block_count")?,
            hidden,
            heads,
            kv_heads,
            head_dim: hidden / heads,
            vocab,
            context: metadata_u32(content, "llama.context_length")?,
            rope_base: f32_or("llama.rope.freq_base", 10_000.0),
            eps: f32_or("llama.attention.layer_norm_rms_epsilon", 1e-5),
        })
    }
}

fn load_matrix(
    content: &gguf_file::Content,
    file: &mut std::fs::File,
    name: &str,
    format: WeightFormat,
    device: &Device,
) -> anyhow::Result<QMatMul> {
    let tensor = content
        .tensor(file, name, device)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let slow = matches!(
        tensor.dtype(),
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
    );
    let matrix = match format {
        WeightFormat::F32 => QMatMul::Tensor(tensor.dequantize(device)?),
        WeightFormat::Q8ForSlowTypes if slow => QMatMul::from_qtensor(QTensor::quantize(
            &tensor.dequantize(device)?,
            GgmlDType::Q8_0,
        )?)?,
        _ => QMatMul::from_qtensor(tensor)?,
    };
    Ok(matrix)
}

fn load_vector(
    content: &gguf_file::Content,
    file: &mut std::fs::File,
    name: &str,
    device: &Device,
) -> anyhow::Result<Tensor> {
    let tensor = content
        .tensor(file, name, device)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    Ok(tensor.dequantize(device)?)
}

impl GgufLlama {
    /// Loads the llama-family model of GGUF file `path`, its matrices held
    /// as `format` says.
    pub fn load(path: &Path, format: WeightFormat) -> anyhow::Result<Self> {
        let (content, mut file) = read_content(path)?;
        let config = GgufConfig::read(&content)?;
        let device = Device::Cpu;
        guarded("loading the GGUF model", || {
            let embed_q = content
                .tensor(&mut file, "token_embd.weight", &device)
                .map_err(|e| anyhow::anyhow!("token_embd.weight: {e}"))?;
            let embed = embed_q.dequantize(&device)?;
            anyhow::ensure!(
                embed.dims() == [config.vocab, config.hidden],
                "token_embd.weight is {:?}, not {} × {}",
                embed.dims(),
                config.vocab,
                config.hidden
            );
            let output = if content.tensor_infos.contains_key("output.weight") {
                load_matrix(&content, &mut file, "output.weight", format, &device)?
            } else if format == WeightFormat::F32 {
                QMatMul::Tensor(embed.clone())
            } else {
                QMatMul::from_qtensor(embed_q)?
            };
            let mut blocks = Vec::with_capacity(config.layers);
            for layer in 0..config.layers {
                let name = |part: &str| format!("blk.{layer}.{part}.weight");
                let mut matrix =
                    |part: &str| load_matrix(&content, &mut file, &name(part), format, &device);
                let (q, k, v, o) = (
                    matrix("attn_q")?,
                    matrix("attn_k")?,
                    matrix("attn_v")?,
                    matrix("attn_output")?,
                );
                let (gate, up, down) =
                    (matrix("ffn_gate")?, matrix("ffn_up")?, matrix("ffn_down")?);
                blocks.push(Block {
                    attn_norm: load_vector(&content, &mut file, &name("attn_norm"), &device)?,
                    ffn_norm: load_vector(&content, &mut file, &name("ffn_norm"), &device)?,
                    q,
                    k,
                    v,
                    o,
                    gate,
                    up,
                    down,
                });
            }
            let norm = load_vector(&content, &mut file, "output_norm.weight", &device)?;
            let (cos, sin) = rope_tables(&config, &device)?;
            let mut eos = Vec::new();
            if let Some(v) = content.metadata.get("tokenizer.ggml.eos_token_id") {
                eos.push(v.to_u32()?);
            }
            // Chat models end a turn with their end-of-turn token, which the
            // file does not always name as its EOS.
            for token in crate::chat::end_of_turn_tokens(&content) {
                if !eos.contains(&token) {
                    eos.push(token);
                }
            }
            Ok(GgufLlama {
                config: config.clone(),
                embed,
                blocks,
                norm,
                output,
                cos,
                sin,
                eos,
                device: device.clone(),
            })
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &GgufConfig {
        &self.config
    }

    /// Tokens that end an answer.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// A sequence with nothing in it yet.
    pub fn sequence(&self) -> Sequence {
        Sequence {
            kv: vec![None; self.config.layers],
            len: 0,
        }
    }

    /// One forward step over `rows`, each fed its `inputs` (non-empty):
    /// appends them to the rows' caches and returns the logits after each
    /// row's last input, `[rows, vocab]`.
    pub fn step(&self, rows: &mut [&mut Sequence], inputs: &[&[u32]]) -> anyhow::Result<Tensor> {
        anyhow::ensure!(
            rows.len() == inputs.len() && !rows.is_empty(),
            "a step needs one input per row"
        );
        let c = &self.config;
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut spans = Vec::with_capacity(rows.len());
        for (row, input) in rows.iter().zip(inputs) {
            anyhow::ensure!(!input.is_empty(), "a row was fed nothing");
            anyhow::ensure!(
                row.len + input.len() <= c.context,
                "{} positions exceed the model's {}",
                row.len + input.len(),
                c.context
            );
            if let Some(bad) = input.iter().find(|&&t| t as usize >= c.vocab) {
                anyhow::bail!("token {bad} is outside the vocabulary of {}", c.vocab);
            }
            spans.push((ids.len(), input.len()));
            ids.extend_from_slice(input);
            positions.extend((row.len..row.len + input.len()).map(|p| p as u32));
        }
        let total = ids.len();
        let ids = Tensor::new(ids.as_slice(), &self.device)?;
        let positions = Tensor::new(positions.as_slice(), &self.device)?;
        let cos = self.cos.index_select(&positions, 0)?;
        let sin = self.sin.index_select(&positions, 0)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let heads = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
            t.reshape((1, total, n, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, c.eps)?;
            let q = heads(block.q.forward(&h)?, c.heads)?;
            let k = heads(block.k.forward(&h)?, c.kv_heads)?;
            let v = heads(block.v.forward(&h)?, c.kv_heads)?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let mut outs = Vec::with_capacity(rows.len());
            for (row, &(start, n)) in rows.iter_mut().zip(&spans) {
                outs.push(self.attend(
                    &mut row.kv[layer],
                    &q.narrow(2, start, n)?,
                    &k.narrow(2, start, n)?,
                    &v.narrow(2, start, n)?,
                )?);
            }
            let y = Tensor::cat(&outs, 0)?;
            x = (x + block.o.forward(&y)?)?;
            let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, c.eps)?;
            let gated =
                (candle_nn::ops::silu(&block.gate.forward(&h)?)? * block.up.forward(&h)?)?;
            x = (x + block.down.forward(&gated)?)?;
        }
        for (row, &(_, n)) in rows.iter_mut().zip(&spans) {
            row.len += n;
        }
        let last: Vec<u32> = spans.iter().map(|&(s, n)| (s + n - 1) as u32).collect();
        let x = x.index_select(&Tensor::new(last.as_slice(), &self.device)?, 0)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, c.eps)?;
        Ok(self.output.forward(&x)?)
    }

    /// Attention of one row's new queries `(1, H, n, d)` over its cache and
    /// its new keys and values `(1, KV, n, d)`, which join the cache;
    /// returns `(n, H·d)`.
    fn attend(
        &self,
        cache: &mut Option<(Tensor, Tensor)>,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let n = q.dim(2)?;
        let (k, v) = match cache.take() {
            Some((kc, vc)) => (Tensor::cat(&[&kc, k], 2)?, Tensor::cat(&[&vc, v], 2)?),
            None => (k.contiguous()?, v.contiguous()?),
        };
        *cache = Some((k.clone(), v.clone()));
        let keys = k.dim(2)?;
        let past = keys - n;
        let group = c.heads / c.kv_heads;
        // Query head h reads key/value head h / group: the group's queries
        // stack into one matrix per key/value head.
        let q = q
            .contiguous()?
            .reshape((c.kv_heads, group * n, c.head_dim))?;
        let k = k.reshape((c.kv_heads, keys, c.head_dim))?;
        let v = v.reshape((c.kv_heads, keys, c.head_dim))?;
        let scores = (q.matmul(&k.t()?)? / (c.head_dim as f64).sqrt())?;
        let scores = if n > 1 {
            // Query i of the new tokens (in every head of the group) sees
            // keys up to position past + i.
            let mask: Vec<f32> = (0..group * n)
                .flat_map(|r| {
                    let i = r % n;
                    (0..keys).map(move |j| {
                        if j <= past + i {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (group * n, keys), &self.device)?;
            scores.broadcast_add(&mask)?
        } else {
            scores
        };
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        weights
            .matmul(&v)?
            .reshape((c.heads, n, c.head_dim))?
            .transpose(0, 1)?
            .reshape((n, c.heads * c.head_dim))
    }
}

fn rope_tables(c: &GgufConfig, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let half = c.head_dim / 2;
    let inverse: Vec<f32> = (0..half)
        .map(|i| 1.0 / c.rope_base.powf(2.0 * i as f32 / c.head_dim as f32))
        .collect();
    let inverse = Tensor::from_vec(inverse, (1, half), device)?;
    let positions = Tensor::arange(0u32, c.context as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((c.context, 1))?;
    let angles = positions.broadcast_mul(&inverse)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Rows one batch runs at once, at most.
pub const MAX_ROWS: usize = 16;

/// One job in a [`Generation`]: its sequence, what it is fed next, its
/// sampler and what it has produced.
struct Row {
    id: usize,
    sequence: Sequence,
    next: Vec<u32>,
    sampler: LogitsProcessor,
    out: Vec<u32>,
    max_new: usize,
}

/// Continuous batching over one model: jobs join between steps, each step
/// advances every row by one token (a joining row's prompt is its first
/// input), and a row leaves when it ends.
pub struct Generation<'m> {
    model: &'m GgufLlama,
    rows: Vec<Row>,
}

impl<'m> Generation<'m> {
    /// An empty batch over `model`.
    pub fn new(model: &'m GgufLlama) -> Self {
        Generation {
            model,
            rows: Vec::new(),
        }
    }

    /// Rows running.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is running.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds job `item` as row `id`; it joins the next step. A prompt that
    /// cannot run (too long, a token outside the vocabulary) is refused.
    pub fn join(&mut self, id: usize, item: &WorkItem) -> anyhow::Result<()> {
        anyhow::ensure!(
            item.task == Task::Generate,
            "this model generates; it does not embed"
        );
        let c = self.model.config();
        let max_new = item.sampling.max_tokens.min(item.output_class) as usize;
        anyhow::ensure!(!item.tokens.is_empty(), "the prompt is empty");
        anyhow::ensure!(
            item.tokens.len() + max_new <= c.context,
            "prompt and output ({} tokens) exceed the model's {} positions",
            item.tokens.len() + max_new,
            c.context
        );
        if let Some(bad) = item.tokens.iter().find(|&&t| t as usize >= c.vocab) {
            anyhow::bail!("token {bad} is outside the vocabulary");
        }
        let temperature = f64::from(item.sampling.temperature);
        self.rows.push(Row {
            id,
            sequence: self.model.sequence(),
            next: item.tokens.clone(),
            sampler: LogitsProcessor::new(
                item.sampling.seed,
                (temperature > 0.0).then_some(temperature),
                item.sampling.top_p.map(f64::from),
            ),
            out: Vec::with_capacity(max_new),
            max_new,
        });
        Ok(())
    }

    /// One step over every row; returns the rows that ended, with their
    /// tokens (the end-of-turn token included when one ended it).
    pub fn step(&mut self) -> anyhow::Result<Vec<(usize, Vec<u32>)>> {
        if self.rows.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<Vec<u32>> = self
            .rows
            .iter_mut()
            .map(|r| std::mem::take(&mut r.next))
            .collect();
        let input_refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
        let mut sequences: Vec<&mut Sequence> =
            self.rows.iter_mut().map(|r| &mut r.sequence).collect();
        let logits = self.model.step(&mut sequences, &input_refs)?;
        let mut ended = Vec::new();
        let mut kept = Vec::with_capacity(self.rows.len());
        for (i, mut row) in std::mem::take(&mut self.rows).into_iter().enumerate() {
            let token = row.sampler.sample(&logits.get(i)?)?;
            row.out.push(token);
            if self.model.eos.contains(&token) || row.out.len() >= row.max_new {
                ended.push((row.id, row.out));
            } else {
                row.next = vec![token];
                kept.push(row);
            }
        }
        self.rows = kept;
        Ok(ended)
    }
}

impl GgufLlama {
    /// Generates for `items` with continuous batching, at most `max_rows`
    /// at once: a row leaves when it ends and the next job takes its place
    /// at the following step.
    pub fn generate(&self, items: &[WorkItem], max_rows: usize) -> Vec<Result<Vec<u32>, String>> {
        let mut results: Vec<Option<Result<Vec<u32>, String>>> = vec![None; items.len()];
        let mut waiting: VecDeque<usize> = (0..items.len()).collect();
        let mut batch = Generation::new(self);
        while !waiting.is_empty() || !batch.is_empty() {
            while batch.len() < max_rows.max(1) {
                let Some(i) = waiting.pop_front() else { break };
                if let Err(e) = batch.join(i, &items[i]) {
                    results[i] = Some(Err(e.to_string()));
                }
            }
            if batch.is_empty() {
                continue;
            }
            match guarded("generation", || batch.step()) {
                Ok(ended) => {
                    for (i, tokens) in ended {
                        results[i] = Some(Ok(tokens));
                    }
                }
                Err(e) => {
                    // A failed step fails the rows in it; the others go on.
                    for row in std::mem::take(&mut batch.rows) {
                        results[row.id] = Some(Err(e.to_string()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("the batch gave no outcome".into())))
            .collect()
    }
}

impl Backend for GgufLlama {
    fn task(&self) -> Task {
        Task::Generate
    }

    fn run(&self, items: &[WorkItem]) -> Vec<Result<Outcome, String>> {
        self.generate(items, MAX_ROWS)
            .into_iter()
            .map(|r| r.map(Outcome::Tokens))
            .collect()
    }
}
