//! What a model's files say about it that a client must agree on: the
//! tokenizer (by digest), the chat template (by digest), the context
//! limit. Compute couriers publish these in the network document; clients
//! check their own copies against them before they tokenize a prompt.

use std::path::Path;

use crate::chat::ChatTemplate;
use crate::TextTokenizer;

/// The facts of one model's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFacts {
    /// [`TextTokenizer::digest`] of its tokenizer.
    pub tokenizer_digest: [u8; 32],
    /// [`ChatTemplate::digest`] of its chat template, if it has one.
    pub template_digest: Option<[u8; 32]>,
    /// Longest prompt plus output, in tokens.
    pub context: u32,
}

/// A model's tokenizer and chat template as a client holds them.
pub struct LocalModel {
    /// The tokenizer.
    pub tokenizer: TextTokenizer,
    /// The chat template, if the model has one.
    pub template: Option<ChatTemplate>,
    /// The facts, for checking against the network document.
    pub facts: ModelFacts,
}

impl LocalModel {
    /// Reads the tokenizer and template of the model at `path` (a GGUF
    /// file or a Hugging Face–style folder); no weights are read.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let tokenizer = TextTokenizer::for_model(path)?;
        let template = if crate::is_gguf(path) {
            ChatTemplate::from_gguf(path).ok()
        } else {
            None
        };
        let context = if crate::is_gguf(path) {
            crate::gguf::context_of(path)?
        } else {
            let config = crate::read_config(path)?;
            config
                .get("max_position_embeddings")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: config.json has no max_position_embeddings",
                        path.display()
                    )
                })? as u32
        };
        let facts = ModelFacts {
            tokenizer_digest: tokenizer.digest(),
            template_digest: template.as_ref().map(ChatTemplate::digest),
            context,
        };
        Ok(LocalModel {
            tokenizer,
            template,
            facts,
        })
    }
}
