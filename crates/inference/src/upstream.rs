//! An OpenAI-compatible upstream (vLLM, llama.cpp server, anything that
//! speaks `/v1/completions` and `/v1/embeddings`): prompts go as token IDs,
//! never as text, and every job carries a fresh random `cache_salt` (vLLM)
//! and `cache_prompt: false` (llama.cpp), so no prefix cache is shared
//! between jobs. The jobs of a batch are sent at once, so the server can
//! batch them itself.
//!
//! Generated token IDs come back in `choices[0].token_ids` (vLLM, with
//! `return_token_ids`). llama.cpp's OpenAI route returns text only, so for
//! it ([`Flavor::LlamaCpp`]) generation goes to its own `/completion` route,
//! which returns `tokens` when asked (`return_tokens`).

use std::time::Duration;

use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};

use crate::{Backend, Outcome, Task, WorkItem};

/// Which server's routes to use for generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `/v1/completions` (vLLM and other OpenAI-compatible servers).
    OpenAi,
    /// llama.cpp server's `/completion`.
    LlamaCpp,
}

/// A model served by an OpenAI-compatible server.
pub struct Upstream {
    base_url: String,
    flavor: Flavor,
    model: String,
    task: Task,
    api_key: Option<String>,
    http: reqwest::blocking::Client,
}

impl Upstream {
    /// The server at `base_url` (`http://host:port`), asking for `model`.
    pub fn new(
        base_url: &str,
        model: &str,
        task: Task,
        api_key: Option<String>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?;
        Ok(Upstream {
            base_url: base_url.trim_end_matches('/').to_string(),
            flavor: Flavor::OpenAi,
            model: model.to_string(),
            task,
            api_key,
            http,
        })
    }

    /// The same upstream, using `flavor`'s routes.
    pub fn with_flavor(mut self, flavor: Flavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// The request body for one job (public for tests of what is sent).
    pub fn request_body(&self, item: &WorkItem) -> Value {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let salt: String = salt.iter().map(|b| format!("{b:02x}")).collect();
        match item.task {
            Task::Generate => json!({
                "model": self.model,
                "prompt": item.tokens,
                "max_tokens": item.sampling.max_tokens.min(item.output_class),
                "temperature": item.sampling.temperature,
                "top_p": item.sampling.top_p.unwrap_or(1.0),
                "seed": item.sampling.seed,
                "cache_salt": salt,
                "cache_prompt": false,
                "return_token_ids": true,
                "n_predict": item.sampling.max_tokens.min(item.output_class),
                "return_tokens": true,
                "stream": false,
            }),
            Task::Embed => json!({
                "model": self.model,
                "input": [item.tokens],
                "cache_salt": salt,
                "encoding_format": "float",
            }),
        }
    }

    fn one(&self, item: &WorkItem) -> Result<Outcome, String> {
        if item.task != self.task {
            return Err(format!("this upstream model does {:?}", self.task));
        }
        let path = match (item.task, self.flavor) {
            (Task::Generate, Flavor::OpenAi) => "/v1/completions",
            (Task::Generate, Flavor::LlamaCpp) => "/completion",
            (Task::Embed, _) => "/v1/embeddings",
        };
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(&self.request_body(item));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().map_err(|e| format!("upstream: {e}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .map_err(|e| format!("upstream answered {status} with no JSON: {e}"))?;
        if !status.is_success() {
            return Err(format!("upstream answered {status}: {body}"));
        }
        parse_response(item.task, &body)
    }
}

/// Reads the outcome out of a server's JSON answer: generated token IDs
/// (`choices[0].token_ids`, or llama.cpp's `tokens`), or
/// `data[0].embedding`.
pub fn parse_response(task: Task, body: &Value) -> Result<Outcome, String> {
    match task {
        Task::Generate => {
            let choice = &body["choices"][0];
            let ids = choice
                .get("token_ids")
                .or_else(|| choice.get("tokens"))
                .or_else(|| body.get("tokens"))
                .and_then(Value::as_array)
                .ok_or("the upstream answer has no token IDs (vLLM needs return_token_ids)")?;
            ids.iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| format!("bad token ID {v}"))
                })
                .collect::<Result<Vec<u32>, String>>()
                .map(Outcome::Tokens)
        }
        Task::Embed => body["data"][0]["embedding"]
            .as_array()
            .ok_or("the upstream answer has no embedding")?
            .iter()
            .map(|v| {
                v.as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| format!("bad value {v}"))
            })
            .collect::<Result<Vec<f32>, String>>()
            .map(Outcome::Embedding),
    }
}

impl Backend for Upstream {
    fn task(&self) -> Task {
        self.task
    }

    fn run(&self, items: &[WorkItem]) -> Vec<Result<Outcome, String>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = items.iter().map(|i| s.spawn(|| self.one(i))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("upstream call panicked".into()))
                })
                .collect()
        })
    }
}
