//! What a client needs of a GGUF chat model to talk to it without the
//! weights: its tokenizer, rebuilt from the file's metadata, and its chat
//! template, rendered locally with minijinja.
//!
//! The tokenizer is built the way llama.cpp reads the same metadata: a
//! byte-level BPE over `tokenizer.ggml.tokens` and `tokenizer.ggml.merges`,
//! the pre-tokenizer that `tokenizer.ggml.pre` names, and every control
//! token as a special token matched whole, with nothing added around it
//! (no prefix space after a special token).

use std::path::Path;

use candle_core::quantized::gguf_file;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::TextTokenizer;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` (or whatever the template knows).
    pub role: String,
    /// The text.
    pub content: String,
}

/// Tokens that end an assistant's turn in the chat formats funion knows.
const END_OF_TURN: [&str; 4] = ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"];

fn strings(content: &gguf_file::Content, key: &str) -> anyhow::Result<Vec<String>> {
    let values = content
        .metadata
        .get(key)
        .ok_or_else(|| anyhow::anyhow!("the GGUF metadata has no {key}"))?
        .to_vec()
        .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    values
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| anyhow::anyhow!("{key}: {e}"))
        })
        .collect()
}

fn string(content: &gguf_file::Content, key: &str) -> Option<String> {
    content
        .metadata
        .get(key)
        .and_then(|v| v.to_string().ok().cloned())
}

/// The IDs of the end-of-turn tokens the vocabulary holds.
pub(crate) fn end_of_turn_tokens(content: &gguf_file::Content) -> Vec<u32> {
    let Ok(tokens) = strings(content, "tokenizer.ggml.tokens") else {
        return Vec::new();
    };
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| END_OF_TURN.contains(&t.as_str()))
        .map(|(i, _)| i as u32)
        .collect()
}

/// The pre-tokenizer `tokenizer.ggml.pre` names, as tokenizers' JSON.
fn pre_tokenizer(pre: &str) -> anyhow::Result<serde_json::Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    Ok(match pre {
        // SmolLM's: every digit alone, then GPT-2's split.
        "smollm" | "starcoder" | "refact" => json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ],
        }),
        "gpt2" | "default" => byte_level(true),
        // Llama 3's split: digits in threes, letters, punctuation runs.
        "llama-bpe" | "llama3" => json!({
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
                    "behavior": "Isolated",
                    "invert": false,
                },
                byte_level(false),
            ],
        }),
        other => {
            anyhow::bail!("pre-tokenizer {other:?} is not supported (smollm, gpt2, llama-bpe)")
        }
    })
}

/// The tokenizer of a GGUF file's metadata.
pub(crate) fn tokenizer_from_gguf(
    content: &gguf_file::Content,
) -> anyhow::Result<tokenizers::Tokenizer> {
    let model = string(content, "tokenizer.ggml.model").unwrap_or_default();
    anyhow::ensure!(
        model == "gpt2",
        "tokenizer model {model:?} is not supported (byte-level BPE, \"gpt2\", only)"
    );
    let tokens = strings(content, "tokenizer.ggml.tokens")?;
    let merges = strings(content, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| anyhow::anyhow!("token_type: {e}"))?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let pre = string(content, "tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    // Type 3 is a control token, 4 a user-defined one: both are matched
    // whole; only control tokens are special (left out when decoding
    // output).
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &t))| t == 3 || t == 4)
        .map(|(i, (token, &t))| {
            json!({
                "id": i, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": t == 3,
            })
        })
        .collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(&pre)?,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    spec.to_string()
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| anyhow::anyhow!("building the tokenizer from the GGUF metadata: {e}"))
}

/// A model's chat template, rendered locally.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// The template `source` (Jinja, as Hugging Face writes them), with the
    /// model's BOS and EOS token texts.
    pub fn new(source: impl Into<String>, bos: impl Into<String>, eos: impl Into<String>) -> Self {
        ChatTemplate {
            source: source.into(),
            bos: bos.into(),
            eos: eos.into(),
        }
    }

    /// The template a GGUF file carries in `tokenizer.chat_template`.
    pub fn from_gguf(path: &Path) -> anyhow::Result<Self> {
        let (content, _) = crate::gguf::read_content(path)?;
        let source = string(&content, "tokenizer.chat_template").ok_or_else(|| {
            anyhow::anyhow!("{}: the file carries no chat template", path.display())
        })?;
        let tokens = strings(&content, "tokenizer.ggml.tokens")?;
        let token = |key: &str| {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_u32().ok())
                .and_then(|i| tokens.get(i as usize).cloned())
                .unwrap_or_default()
        };
        Ok(ChatTemplate::new(
            source,
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
        ))
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// SHA-256 of the template's text (what a network document names).
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.source.as_bytes()).into()
    }

    /// The prompt text for `messages`, ending with the assistant's turn
    /// opened when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> anyhow::Result<String> {
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template("chat", &self.source)
            .map_err(|e| anyhow::anyhow!("the chat template does not parse: {e}"))?;
        let template = env.get_template("chat").expect("just added");
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos,
                eos_token => &self.eos,
            })
            .map_err(|e| anyhow::anyhow!("rendering the chat template: {e}"))
    }
}

impl TextTokenizer {
    /// The tokenizer a GGUF file's metadata describes (the weights are not
    /// read).
    pub fn from_gguf(path: &Path) -> anyhow::Result<Self> {
        let (content, _) = crate::gguf::read_content(path)?;
        Ok(TextTokenizer::wrap(tokenizer_from_gguf(&content)?))
    }
}
