//! The OpenAI wire format as far as funion speaks it: the requests it
//! takes, the objects it answers with and the error shape, with every
//! field the official SDKs' strict validation expects.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

/// An error in OpenAI's shape: `{"error": {message, type, param, code}}`.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, `server_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<&'static str>,
    /// A short machine-readable code.
    pub code: Option<&'static str>,
    /// Whether the client must not retry (the request was paid for).
    pub paid: bool,
}

impl ApiError {
    /// A 400: the request asks for something funion cannot do as asked.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param),
            code: None,
            paid: false,
        }
    }

    /// A 404 for a model no compute courier serves.
    pub fn unknown_model(model: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The model `{model}` does not exist: no compute courier in the network document serves it"
            ),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
            paid: false,
        }
    }

    /// A server-side failure with `status` and `code`.
    pub fn server(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some(code),
            paid: false,
        }
    }

    /// This error with a code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// Marks the error as coming after payment: a retry would pay again.
    pub fn after_payment(mut self) -> Self {
        self.paid = true;
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, json_body(&self.body())).into_response();
        if self.paid {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

/// `value` as a JSON response body with its content type.
pub fn json_body(value: &Value) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// Parses a request body, refusing bad JSON with a 400 in OpenAI's shape.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the request body is not valid JSON for this endpoint: {e}"),
        )
    })
}

/// A chat message: text content, as a string or as text parts.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` (or `developer`, read as `system`).
    pub role: String,
    /// The text.
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content as OpenAI allows it.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts; only `text` parts are understood.
    Parts(Vec<Part>),
}

/// One content part.
#[derive(Clone, Debug, Deserialize)]
pub struct Part {
    /// `text`, `image_url`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// The knobs every generating endpoint shares.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Knobs {
    /// Most tokens to generate.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The newer name for `max_tokens` in chat.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Sampler seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `{"include_usage": true}` adds a usage chunk to a stream.
    #[serde(default)]
    pub stream_options: Option<Value>,
    /// Choices wanted (only 1).
    #[serde(default)]
    pub n: Option<u32>,
    /// Stop sequences (not supported).
    #[serde(default)]
    pub stop: Option<Value>,
    /// Penalties (only 0).
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Penalties (only 0).
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Log probabilities (not supported).
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Tools (not supported).
    #[serde(default)]
    pub tools: Option<Value>,
    /// A response format other than text (not supported).
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Echo the prompt (completions; not supported).
    #[serde(default)]
    pub echo: Option<bool>,
    /// Text after the completion (completions; not supported).
    #[serde(default)]
    pub suffix: Option<Value>,
    /// Best-of sampling (completions; not supported).
    #[serde(default)]
    pub best_of: Option<u32>,
}

impl Knobs {
    /// Refuses what funion does not do rather than ignoring it.
    pub fn refuse_unsupported(&self) -> Result<(), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(
                "n",
                "only n = 1 is supported: one job gives one choice",
            ));
        }
        if self.stop.as_ref().is_some_and(|s| !s.is_null()) {
            return Err(ApiError::invalid(
                "stop",
                "stop sequences are not supported",
            ));
        }
        for (param, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid(
                    param,
                    format!("{param} is not supported (only 0)"),
                ));
            }
        }
        let set = |v: &Option<Value>| {
            v.as_ref()
                .is_some_and(|v| !v.is_null() && *v != json!(false))
        };
        if set(&self.logprobs) {
            return Err(ApiError::invalid(
                "logprobs",
                "log probabilities are not returned",
            ));
        }
        if set(&self.tools) {
            return Err(ApiError::invalid("tools", "tools are not supported"));
        }
        if self
            .response_format
            .as_ref()
            .is_some_and(|f| !f.is_null() && f.get("type") != Some(&json!("text")))
        {
            return Err(ApiError::invalid(
                "response_format",
                "only the text response format is supported",
            ));
        }
        if self.echo == Some(true) {
            return Err(ApiError::invalid("echo", "echo is not supported"));
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_null()) {
            return Err(ApiError::invalid("suffix", "suffix is not supported"));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(ApiError::invalid(
                "best_of",
                "only best_of = 1 is supported",
            ));
        }
        Ok(())
    }

    /// Whether the answer is streamed.
    pub fn streams(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether a stream ends with a usage chunk.
    pub fn stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling and output.
    #[serde(flatten)]
    pub knobs: Knobs,
}

/// `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    /// The model.
    pub model: String,
    /// The prompt: a string, or a list of one string.
    pub prompt: Value,
    /// Sampling and output.
    #[serde(flatten)]
    pub knobs: Knobs,
}

/// `POST /v1/embeddings`.
#[derive(Clone, Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// The model.
    pub model: String,
    /// A string, a list of strings, a list of token IDs or a list of such
    /// lists.
    pub input: Value,
    /// `float` (default) or `base64` (little-endian f32).
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Dimensions wanted (only the model's own).
    #[serde(default)]
    pub dimensions: Option<u32>,
}

/// What an embedding request's `input` holds.
pub enum EmbeddingInput {
    /// Texts, tokenized here.
    Texts(Vec<String>),
    /// Token IDs already.
    Tokens(Vec<Vec<u32>>),
}

impl EmbeddingRequest {
    /// The inputs, refusing anything OpenAI would refuse.
    pub fn inputs(&self) -> Result<EmbeddingInput, ApiError> {
        let bad = || {
            ApiError::invalid(
                "input",
                "input must be a string, a list of strings, a list of token IDs or a list of lists of token IDs",
            )
        };
        let token = |v: &Value| v.as_u64().and_then(|t| u32::try_from(t).ok());
        let inputs = match &self.input {
            Value::String(s) => EmbeddingInput::Texts(vec![s.clone()]),
            Value::Array(items) if items.is_empty() => return Err(bad()),
            Value::Array(items) if items.iter().all(Value::is_string) => EmbeddingInput::Texts(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
            ),
            Value::Array(items) if items.iter().all(Value::is_number) => {
                EmbeddingInput::Tokens(vec![items
                    .iter()
                    .map(token)
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(bad)?])
            }
            Value::Array(items) if items.iter().all(Value::is_array) => EmbeddingInput::Tokens(
                items
                    .iter()
                    .map(|list| {
                        list.as_array()
                            .and_then(|l| l.iter().map(token).collect::<Option<Vec<u32>>>())
                            .filter(|l| !l.is_empty())
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(bad)?,
            ),
            _ => return Err(bad()),
        };
        let count = match &inputs {
            EmbeddingInput::Texts(t) => t.len(),
            EmbeddingInput::Tokens(t) => t.len(),
        };
        if count > MAX_EMBEDDING_INPUTS {
            return Err(ApiError::invalid(
                "input",
                format!("at most {MAX_EMBEDDING_INPUTS} inputs per request (each is a paid job)"),
            ));
        }
        Ok(inputs)
    }
}

/// Most inputs one embeddings request may hold: each is a job of its own.
pub const MAX_EMBEDDING_INPUTS: usize = 64;
