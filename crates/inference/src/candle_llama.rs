//! Generation with candle's llama, one fresh KV cache per job.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use candle_transformers::models::llama::{Cache, Config, Llama, LlamaConfig, LlamaEosToks};

use crate::{guarded, load_weights, read_config, Backend, Outcome, Task, WorkItem};

/// A llama-family model on the CPU.
pub struct LlamaGenerator {
    model: Llama,
    config: Config,
    device: Device,
    eos: Vec<u32>,
}

impl LlamaGenerator {
    /// Loads `dir` (config.json and model.safetensors, or several
    /// `model-*.safetensors` shards).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let raw: LlamaConfig = serde_json::from_value(read_config(dir)?)
            .map_err(|e| anyhow::anyhow!("{}: not a llama config: {e}", dir.display()))?;
        let config = raw.into_config(false);
        let device = Device::Cpu;
        let model = load_weights(dir, "loading llama", |vb| Llama::load(vb, &config))?;
        let eos = match &config.eos_token_id {
            Some(LlamaEosToks::Single(t)) => vec![*t],
            Some(LlamaEosToks::Multiple(ts)) => ts.clone(),
            None => Vec::new(),
        };
        Ok(LlamaGenerator {
            model,
            config,
            device,
            eos,
        })
    }

    /// Generates for one job: greedy at temperature 0, else sampled with
    /// the job's seed.
    pub fn generate(&self, item: &WorkItem) -> anyhow::Result<Vec<u32>> {
        let max_new = item.sampling.max_tokens.min(item.output_class) as usize;
        let mut tokens = item.tokens.clone();
        if tokens.is_empty() {
            tokens.push(self.config.bos_token_id.unwrap_or(0));
        }
        if tokens.len() + max_new > self.config.max_position_embeddings {
            anyhow::bail!(
                "prompt and output ({} tokens) exceed the model's {} positions",
                tokens.len() + max_new,
                self.config.max_position_embeddings
            );
        }
        if let Some(bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            anyhow::bail!("token {bad} is outside the vocabulary");
        }
        let mut cache = Cache::new(true, DType::F32, &self.config, &self.device)?;
        let temperature = f64::from(item.sampling.temperature);
        let mut sampler = LogitsProcessor::new(
            item.sampling.seed,
            (temperature > 0.0).then_some(temperature),
            item.sampling.top_p.map(f64::from),
        );
        let mut out = Vec::with_capacity(max_new);
        let mut position = 0;
        let mut next_input: Vec<u32> = tokens;
        while out.len() < max_new {
            let input = Tensor::new(next_input.as_slice(), &self.device)?.unsqueeze(0)?;
            let logits = self
                .model
                .forward(&input, position, &mut cache)?
                .squeeze(0)?;
            position += next_input.len();
            let next = sampler.sample(&logits)?;
            out.push(next);
            if self.eos.contains(&next) {
                break;
            }
            next_input = vec![next];
        }
        Ok(out)
    }
}

impl Backend for LlamaGenerator {
    fn task(&self) -> Task {
        Task::Generate
    }

    /// Jobs of a batch run one after another, each with its own cache:
    /// candle's llama takes no attention mask, so prompts of different
    /// lengths cannot share a forward pass without changing the result.
    fn run(&self, items: &[WorkItem]) -> Vec<Result<Outcome, String>> {
        items
            .iter()
            .map(|item| {
                if item.task != Task::Generate {
                    return Err("this model generates; it does not embed".into());
                }
                guarded("generation", || self.generate(item))
                    .map(Outcome::Tokens)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }
}

/// `model.safetensors`, or every `*.safetensors` shard in `dir`, sorted.
pub(crate) fn safetensor_files(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "{}: no safetensors file", dir.display());
    Ok(files)
}
