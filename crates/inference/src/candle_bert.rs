//! Sentence embeddings with candle's BERT: a batch is one forward pass over
//! prompts padded to the batch's longest, with an attention mask; mean
//! pooling over real tokens, then L2 normalisation.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_transformers::models::bert::{BertModel, Config};

use crate::{guarded, load_weights, read_config, Backend, Outcome, Task, WorkItem};

/// Most tokens (batch × longest prompt) in one forward pass. Measured on
/// this CPU (`cargo bench -p funion-inference --bench batching`): 32 short
/// prompts run 1.8× faster as one pass than one by one, but 32 prompts of
/// 221 tokens run 0.74× as fast as one pass (candle's batched attention
/// loses to the single-prompt path once sequences are long); a budget keeps
/// the first and avoids the second.
pub const TOKENS_PER_PASS: usize = 256;

/// A BERT encoder on the CPU.
pub struct BertEmbedder {
    model: BertModel,
    config: Config,
    device: Device,
}

impl BertEmbedder {
    /// Loads `dir` (config.json, model.safetensors).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let config: Config = serde_json::from_value(read_config(dir)?)
            .map_err(|e| anyhow::anyhow!("{}: not a BERT config: {e}", dir.display()))?;
        let device = Device::Cpu;
        let model = load_weights(dir, "loading BERT", |vb| BertModel::load(vb, &config))?;
        Ok(BertEmbedder {
            model,
            config,
            device,
        })
    }

    /// Embedding width.
    pub fn dimensions(&self) -> usize {
        self.config.hidden_size
    }

    /// Embeds every prompt of `batch` in one forward pass.
    pub fn embed(&self, batch: &[&[u32]]) -> anyhow::Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let longest = batch.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        anyhow::ensure!(
            longest <= self.config.max_position_embeddings,
            "{longest} tokens exceed the model's {} positions",
            self.config.max_position_embeddings
        );
        let pad = self.config.pad_token_id as u32;
        let mut ids = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for tokens in batch {
            if let Some(bad) = tokens
                .iter()
                .find(|&&t| t as usize >= self.config.vocab_size)
            {
                anyhow::bail!("token {bad} is outside the vocabulary");
            }
            ids.extend_from_slice(tokens);
            ids.resize(ids.len() + longest - tokens.len(), pad);
            mask.extend(std::iter::repeat_n(1u32, tokens.len()));
            mask.resize(mask.len() + longest - tokens.len(), 0);
        }
        let shape = (batch.len(), longest);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

impl Backend for BertEmbedder {
    fn task(&self) -> Task {
        Task::Embed
    }

    fn run(&self, items: &[WorkItem]) -> Vec<Result<Outcome, String>> {
        let mut out: Vec<Result<Outcome, String>> = Vec::with_capacity(items.len());
        let mut good = Vec::new();
        for item in items {
            if item.task != Task::Embed {
                out.push(Err("this model embeds; it does not generate".into()));
            } else if (item.output_class as usize) < self.dimensions() {
                out.push(Err(format!(
                    "output class {} is smaller than the {} dimensions",
                    item.output_class,
                    self.dimensions()
                )));
            } else {
                good.push(out.len());
                out.push(Err(String::new()));
            }
        }
        // Consecutive jobs share a forward pass while the pass stays within
        // the token budget.
        let mut start = 0;
        while start < good.len() {
            let mut end = start + 1;
            let mut longest = items[good[start]].tokens.len();
            while end < good.len() {
                let next = longest.max(items[good[end]].tokens.len());
                if next * (end - start + 1) > TOKENS_PER_PASS {
                    break;
                }
                longest = next;
                end += 1;
            }
            let chunk = &good[start..end];
            let prompts: Vec<&[u32]> = chunk.iter().map(|&i| items[i].tokens.as_slice()).collect();
            match guarded("embedding", || self.embed(&prompts)) {
                Ok(vectors) => {
                    for (&i, v) in chunk.iter().zip(vectors) {
                        out[i] = Ok(Outcome::Embedding(v));
                    }
                }
                Err(e) => {
                    for &i in chunk {
                        out[i] = Err(e.to_string());
                    }
                }
            }
            start = end;
        }
        out
    }
}
