//! `funion proxy`: a local server that speaks the OpenAI API and turns
//! every request into an anonymous, paid job over the mix network.
//!
//! The proxy is the client: it tokenizes here, with the model's own
//! tokenizer and chat template checked against the digests its compute
//! couriers publish in the network document; maps `max_tokens` to an
//! output class, the prompt to an input class and sampling to a public
//! preset, refusing anything out of range with a 400; picks the latency
//! bucket from the model's published speed; pays with tickets proved
//! ahead of time in the background; and runs concurrent requests as
//! concurrent jobs over one mixnet session. An answer is released at its
//! bucket edge, so a streamed answer arrives whole and its chunks follow
//! at once.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod book;
mod idempotency;
mod plan;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use funion_client::jobs::{JobReport, JobRunner, JobSpec};
use funion_client::wallet::Wallet;
use funion_compute::{JobPath, Outcome, Sampling, Task, SAMPLING_PRESETS};
use funion_inference::card::LocalModel;
use funion_inference::chat::Message;
use funion_net::config::ClientFile;
use funion_pki::{ModelEntry, ModelTask};
use serde_json::{json, Value};

use crate::api::{json_body, ApiError, ChatRequest, CompletionRequest, EmbeddingRequest, Knobs};
use crate::book::{Book, BookPolicy};
use crate::idempotency::{Idempotency, Key};

pub use crate::plan::{bucket_for, BucketPlan};

/// The path the proxy's jobs take: fast where the job fits one packet each
/// way and the courier offers it, the store path otherwise (the client
/// decides per job).
const JOB_PATH: JobPath = JobPath::Fast;

/// How a proxy starts.
pub struct ProxyOptions {
    /// The network.
    pub client: ClientFile,
    /// The wallet that pays (its deposit must be made).
    pub wallet: PathBuf,
    /// Where this machine has each model's tokenizer (and chat template):
    /// a GGUF file or a Hugging Face–style folder, by model name.
    pub models: Vec<(String, PathBuf)>,
    /// How the ticket book is kept.
    pub book: BookPolicy,
}

/// A running proxy's shared state.
pub struct Proxy {
    runner: JobRunner,
    book: Arc<Book>,
    wait: std::time::Duration,
    local: BTreeMap<String, Arc<LocalModel>>,
    idempotency: Idempotency,
    started: u64,
}

impl Proxy {
    /// Connects to the network, opens the wallet (which must hold a
    /// deposit), reads the local tokenizers and starts the ticket top-up.
    pub async fn start(options: ProxyOptions) -> anyhow::Result<Arc<Self>> {
        let wallet = Arc::new(Wallet::open_from_env(&options.wallet)?);
        anyhow::ensure!(
            wallet.deposit_info()?.is_some(),
            "the wallet {} holds no deposit: run `funion credits deposit` first",
            options.wallet.display()
        );
        let mut local = BTreeMap::new();
        for (name, path) in &options.models {
            let model = LocalModel::open(path)
                .map_err(|e| anyhow::anyhow!("model {name} ({}): {e:#}", path.display()))?;
            local.insert(name.clone(), Arc::new(model));
        }
        let runner = JobRunner::start(&options.client).await?;
        let book = Book::start(wallet, runner.parameters().credits.clone(), options.book);
        Ok(Arc::new(Proxy {
            runner,
            book,
            wait: options.book.wait,
            local,
            idempotency: Idempotency::default(),
            started: unix_s(),
        }))
    }

    /// Usable tickets in the book now.
    pub fn tickets(&self) -> usize {
        self.book.usable()
    }

    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/models", get(list_models))
            .route("/v1/models/{model}", get(one_model))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .fallback(not_found)
            .with_state(self.clone())
    }
}

/// Serves `proxy` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, proxy: Arc<Proxy>) -> anyhow::Result<()> {
    axum::serve(listener, proxy.router()).await?;
    Ok(())
}

fn unix_s() -> u64 {
    funion_net::unix_ms() / 1000
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint: funion serves /v1/models, /v1/chat/completions, /v1/completions and /v1/embeddings".into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
        paid: false,
    }
}

fn model_object(proxy: &Proxy, model: &ModelEntry, couriers: usize) -> Value {
    json!({
        "id": model.name,
        "object": "model",
        "created": proxy.started,
        "owned_by": "funion",
        "task": match model.task { ModelTask::Generate => "generate", ModelTask::Embed => "embed" },
        "context_length": model.context,
        "compute_couriers": couriers,
        "local_tokenizer": proxy.local.contains_key(&model.name),
        // What the couriers measured and published, which the buckets are
        // planned from.
        "batch_wait_ms": model.batch_wait_ms,
        "timings": model.timings.iter().map(|t| json!({
            "input_class": t.input_class,
            "prefill_ms": t.prefill_us as f64 / 1e3,
            "per_token_ms": t.per_token_us as f64 / 1e3,
        })).collect::<Vec<_>>(),
    })
}

async fn list_models(State(proxy): State<Arc<Proxy>>) -> Response {
    let data: Vec<Value> = proxy
        .runner
        .models()
        .iter()
        .map(|(m, n)| model_object(&proxy, m, *n))
        .collect();
    json_body(&json!({"object": "list", "data": data}))
}

async fn one_model(State(proxy): State<Arc<Proxy>>, UrlPath(name): UrlPath<String>) -> Response {
    match proxy.runner.models().iter().find(|(m, _)| m.name == name) {
        Some((m, n)) => json_body(&model_object(&proxy, m, *n)),
        None => ApiError::unknown_model(&name).into_response(),
    }
}

/// A model as a request may use it: the network's listing and the local
/// tokenizer, checked to agree.
struct Resolved {
    entry: ModelEntry,
    local: Arc<LocalModel>,
}

impl Proxy {
    fn resolve(&self, name: &str, task: ModelTask) -> Result<Resolved, ApiError> {
        let entry = self
            .runner
            .models()
            .into_iter()
            .map(|(m, _)| m)
            .find(|m| m.name == name)
            .ok_or_else(|| ApiError::unknown_model(name))?;
        if entry.task != task {
            let what = match entry.task {
                ModelTask::Generate => {
                    "generates text; use /v1/chat/completions or /v1/completions"
                }
                ModelTask::Embed => "embeds text; use /v1/embeddings",
            };
            return Err(
                ApiError::invalid("model", format!("the model `{name}` {what}"))
                    .with_code("wrong_task"),
            );
        }
        let local = self.local.get(name).cloned().ok_or_else(|| {
            ApiError::server(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_local_tokenizer",
                format!("this proxy has no tokenizer for `{name}`: start it with --model {name}=PATH (prompts are tokenized here, never by the network)"),
            )
        })?;
        if entry
            .tokenizer_digest
            .is_some_and(|d| d != local.facts.tokenizer_digest)
        {
            return Err(ApiError::server(
                StatusCode::SERVICE_UNAVAILABLE,
                "tokenizer_mismatch",
                format!(
                    "the local tokenizer of `{name}` is not the one its compute couriers publish"
                ),
            ));
        }
        if entry.template_digest.is_some() && entry.template_digest != local.facts.template_digest {
            return Err(ApiError::server(
                StatusCode::SERVICE_UNAVAILABLE,
                "template_mismatch",
                format!("the local chat template of `{name}` is not the one its compute couriers publish"),
            ));
        }
        Ok(Resolved { entry, local })
    }
}

/// A validated generation: the tokens, the classes, the sampling and the
/// bucket, ready to be paid for and run.
struct Prepared {
    spec: JobSpec,
    prompt_tokens: usize,
    max_tokens: u32,
    plan: BucketPlan,
}

/// Output tokens when a request names no `max_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 256;

fn sampling_of(knobs: &Knobs, max_tokens: u32) -> Result<Sampling, ApiError> {
    let presets = || {
        SAMPLING_PRESETS
            .iter()
            .map(|(t, p)| match p {
                Some(p) => format!("(temperature {t}, top_p {p})"),
                None => format!("(temperature {t})"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    // OpenAI's default temperature is 1.
    let temperature = knobs.temperature.unwrap_or(1.0);
    let Some((t, preset_p)) = SAMPLING_PRESETS
        .iter()
        .copied()
        .find(|(t, _)| (t - temperature).abs() < 1e-6)
    else {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature {temperature} is not one of the public sampling presets {}: every job on the network uses one of them, so that sampling does not single anyone out", presets()),
        ));
    };
    let top_p = match (knobs.top_p, preset_p) {
        (None, p) => p,
        (Some(asked), Some(p)) if (asked - p).abs() < 1e-6 => Some(p),
        (Some(asked), None) if (asked - 1.0).abs() < 1e-6 => None,
        (Some(asked), _) => {
            return Err(ApiError::invalid(
                "top_p",
                format!(
                "top_p {asked} does not go with temperature {t} in the public sampling presets {}",
                presets()
            ),
            ))
        }
    };
    Ok(Sampling {
        seed: match knobs.seed {
            Some(seed) => seed as u64,
            None => {
                use rand_core::RngCore;
                rand_core::OsRng.next_u64()
            }
        },
        temperature: t,
        top_p,
        max_tokens,
    })
}

impl Proxy {
    fn prepare_generation(
        &self,
        model: &Resolved,
        tokens: Vec<u32>,
        knobs: &Knobs,
        default_max: u32,
    ) -> Result<Prepared, ApiError> {
        knobs.refuse_unsupported()?;
        let max_tokens = knobs
            .max_completion_tokens
            .or(knobs.max_tokens)
            .unwrap_or(default_max);
        let largest = *funion_compute::OUTPUT_CLASSES.last().expect("classes");
        if max_tokens == 0 || max_tokens > largest {
            return Err(ApiError::invalid(
                "max_tokens",
                format!("max_tokens must be between 1 and {largest}, the largest output class"),
            ));
        }
        let output_class =
            funion_compute::class_for(&funion_compute::OUTPUT_CLASSES, max_tokens as usize)
                .expect("checked against the largest class");
        let prompt_tokens = tokens.len();
        let input_class = funion_compute::client::input_class_of(prompt_tokens).map_err(|_| {
            ApiError::invalid(
                "messages",
                format!(
                    "the prompt is {prompt_tokens} tokens; the largest input class is {}",
                    funion_compute::INPUT_CLASSES.last().expect("classes")
                ),
            )
            .with_code("context_length_exceeded")
        })?;
        if prompt_tokens + max_tokens as usize > model.entry.context as usize {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "the prompt ({prompt_tokens} tokens) and max_tokens ({max_tokens}) exceed the model's context of {} tokens",
                    model.entry.context
                ),
            )
            .with_code("context_length_exceeded"));
        }
        let sampling = sampling_of(knobs, max_tokens)?;
        let computed = sampling.on_the_wire(output_class).max_tokens;
        let plan = self.plan(&model.entry, input_class, output_class, computed)?;
        Ok(Prepared {
            spec: JobSpec {
                model: model.entry.name.clone(),
                task: Task::Generate,
                tokens,
                output_class,
                sampling,
                bucket: plan.bucket,
                tickets: Vec::new(),
                courier: None,
                path: JOB_PATH,
            },
            prompt_tokens,
            max_tokens,
            plan,
        })
    }

    fn plan(
        &self,
        entry: &ModelEntry,
        input_class: u32,
        output_class: u32,
        computed_tokens: u32,
    ) -> Result<BucketPlan, ApiError> {
        let parameters = self.runner.parameters();
        if parameters
            .credits
            .tickets_for(input_class, output_class)
            .is_none()
        {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "the cell ({input_class}, {output_class}) has no price in the network document"
                ),
            ));
        }
        bucket_for(parameters, JOB_PATH, entry, input_class, computed_tokens)
            .map_err(|e| ApiError::invalid("max_tokens", e).with_code("bucket_out_of_range"))
    }

    /// Pays for `spec` and runs it; on OVERFLOW, once more in a bucket
    /// twice as long (paid again). Returns the report and what it cost.
    async fn run_paid(&self, mut spec: JobSpec) -> Result<(JobReport, Cost), ApiError> {
        let mut cost = Cost {
            bucket: spec.bucket,
            ..Cost::default()
        };
        for attempt in 0..2 {
            spec.tickets.clear();
            self.book.pay(&mut spec, self.wait).await.map_err(|e| {
                if cost.tickets > 0 {
                    e.after_payment()
                } else {
                    e
                }
            })?;
            cost.tickets += spec.tickets.len();
            cost.bucket = spec.bucket;
            let report = self.runner.run(spec.clone()).await.map_err(|e| {
                ApiError::server(
                    StatusCode::BAD_GATEWAY,
                    "job_failed",
                    format!("the job failed: {e:#}"),
                )
                .after_payment()
            })?;
            match report.outcome {
                Outcome::Overflow if attempt == 0 => {
                    cost.overflow_retries += 1;
                    let max = plan::max_bucket(self.runner.parameters());
                    if spec.bucket >= max {
                        break;
                    }
                    spec.bucket = (spec.bucket.saturating_mul(2)).min(max);
                }
                Outcome::Overflow => break,
                Outcome::Failed(why) => {
                    return Err(ApiError::server(
                        StatusCode::BAD_GATEWAY,
                        "compute_failed",
                        format!("the compute courier could not run the job: {why}"),
                    )
                    .after_payment())
                }
                _ => return Ok((report, cost)),
            }
        }
        Err(ApiError::server(
            StatusCode::GATEWAY_TIMEOUT,
            "bucket_overflow",
            format!(
                "the work overran its latency bucket twice (last j = {}, {} tickets spent); ask for fewer tokens",
                cost.bucket, cost.tickets
            ),
        )
        .after_payment())
    }
}

/// What a request paid.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    tickets: usize,
    bucket: u32,
    overflow_retries: u32,
}

impl Cost {
    fn json(&self, proxy: &Proxy) -> Value {
        let spacing = proxy.runner.parameters().bucket_spacing_us as f64 / 1e6;
        json!({
            "tickets": self.tickets,
            "bucket": self.bucket,
            "bucket_s": f64::from(self.bucket) * spacing,
            "overflow_retries": self.overflow_retries,
        })
    }
}

/// Where a job's time went, in seconds: storing the input, the courier's
/// acceptance, waiting for the bucket edge, reading the output.
fn phases(t: &funion_client::jobs::Timeline) -> Value {
    let s = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e6;
    json!({
        "upload_s": s(t.started, t.uploaded),
        "dispatch_s": s(t.uploaded, t.accepted),
        "until_edge_s": s(t.accepted, t.fetch_sent),
        "fetch_s": s(t.fetch_sent, t.done),
    })
}

fn new_id(prefix: &str) -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 12];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// The pieces a streamed answer is cut into: one per token, each the text
/// that token adds (a token that ends inside a character waits for the
/// next), so the pieces join into exactly the decoded text.
fn pieces(local: &LocalModel, tokens: &[u32]) -> Vec<String> {
    let mut out = Vec::new();
    let mut said = String::new();
    for end in 1..=tokens.len() {
        let text = local.tokenizer.decode(&tokens[..end]).unwrap_or_default();
        if text.ends_with('\u{fffd}') && end < tokens.len() {
            continue;
        }
        if let Some(rest) = text.strip_prefix(said.as_str()) {
            if !rest.is_empty() {
                out.push(rest.to_string());
            }
            said = text;
        }
    }
    let whole = local.tokenizer.decode(tokens).unwrap_or_default();
    if out.concat() != whole {
        // A tokenizer whose prefixes do not decode as prefixes: one piece.
        return vec![whole];
    }
    out
}

fn finish_reason(tokens: &[u32], max_tokens: u32) -> &'static str {
    if tokens.len() >= max_tokens as usize {
        "length"
    } else {
        "stop"
    }
}

fn sse(events: &[Value]) -> String {
    let mut body = String::new();
    for event in events {
        body.push_str("data: ");
        body.push_str(&event.to_string());
        body.push_str("\n\n");
    }
    body.push_str("data: [DONE]\n\n");
    body
}

/// Which endpoint a generation answers.
#[derive(Clone, Copy)]
enum Endpoint {
    Chat,
    Completion,
}

impl Proxy {
    fn answer(
        &self,
        endpoint: Endpoint,
        model: &Resolved,
        prepared: &Prepared,
        knobs: &Knobs,
        report: &JobReport,
        cost: Cost,
    ) -> Reply {
        let Outcome::Tokens(tokens) = &report.outcome else {
            return Reply::error(
                &ApiError::server(
                    StatusCode::BAD_GATEWAY,
                    "bad_outcome",
                    "the compute courier answered a generation with something else",
                )
                .after_payment(),
            );
        };
        let text = model.local.tokenizer.decode(tokens).unwrap_or_default();
        let created = unix_s();
        let finish = finish_reason(tokens, prepared.max_tokens);
        let usage = json!({
            "prompt_tokens": prepared.prompt_tokens,
            "completion_tokens": tokens.len(),
            "total_tokens": prepared.prompt_tokens + tokens.len(),
        });
        let funion = {
            let mut c = cost.json(self);
            c["input_class"] = json!(report.input_class);
            c["output_class"] = json!(prepared.spec.output_class);
            c["seconds"] =
                json!(report.timeline.done.saturating_sub(report.timeline.started) as f64 / 1e6);
            c["planned_compute_s"] = json!(prepared.plan.compute_s);
            c["phases"] = phases(&report.timeline);
            c
        };
        let name = &model.entry.name;
        let (body, content_type) = match (endpoint, knobs.streams()) {
            (Endpoint::Chat, false) => (
                json!({
                    "id": new_id("chatcmpl"),
                    "object": "chat.completion",
                    "created": created,
                    "model": name,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": null},
                        "logprobs": null,
                        "finish_reason": finish,
                    }],
                    "usage": usage,
                    "system_fingerprint": null,
                    "funion": funion,
                })
                .to_string(),
                "application/json",
            ),
            (Endpoint::Completion, false) => (
                json!({
                    "id": new_id("cmpl"),
                    "object": "text_completion",
                    "created": created,
                    "model": name,
                    "choices": [{
                        "index": 0,
                        "text": text,
                        "logprobs": null,
                        "finish_reason": finish,
                    }],
                    "usage": usage,
                    "funion": funion,
                })
                .to_string(),
                "application/json",
            ),
            (endpoint, true) => {
                let id = new_id(match endpoint {
                    Endpoint::Chat => "chatcmpl",
                    Endpoint::Completion => "cmpl",
                });
                let chunk = |delta: Value, finish: Option<&str>| match endpoint {
                    Endpoint::Chat => json!({
                        "id": id, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                    }),
                    Endpoint::Completion => json!({
                        "id": id, "object": "text_completion", "created": created, "model": name,
                        "choices": [{"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")), "logprobs": null, "finish_reason": finish}],
                    }),
                };
                let mut events = Vec::new();
                if let Endpoint::Chat = endpoint {
                    events.push(chunk(json!({"role": "assistant", "content": ""}), None));
                }
                for piece in pieces(&model.local, tokens) {
                    events.push(chunk(json!({"content": piece}), None));
                }
                let mut last = chunk(json!({}), Some(finish));
                last["funion"] = funion;
                events.push(last);
                if knobs.stream_usage() {
                    let mut usage_chunk = chunk(json!({}), None);
                    usage_chunk["choices"] = json!([]);
                    usage_chunk["usage"] = usage;
                    events.push(usage_chunk);
                }
                (sse(&events), "text/event-stream")
            }
        };
        Reply {
            status: StatusCode::OK,
            content_type,
            body,
            cost_header: Some(cost),
        }
    }
}

fn text_of(message: &api::ChatMessage) -> Result<String, ApiError> {
    match &message.content {
        None => Ok(String::new()),
        Some(api::Content::Text(t)) => Ok(t.clone()),
        Some(api::Content::Parts(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.kind.as_str(), &part.text) {
                    ("text", Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            "messages",
                            format!("content parts of type {kind:?} are not supported (text only)"),
                        ))
                    }
                }
            }
            Ok(text)
        }
    }
}

async fn chat(State(proxy): State<Arc<Proxy>>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = async {
        let request: ChatRequest = api::parse(&body)?;
        let model = proxy.resolve(&request.model, ModelTask::Generate)?;
        if request.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages must not be empty"));
        }
        let mut messages = Vec::new();
        for m in &request.messages {
            let role = match m.role.as_str() {
                "developer" => "system",
                r @ ("system" | "user" | "assistant") => r,
                other => {
                    return Err(ApiError::invalid(
                        "messages",
                        format!("messages of role {other:?} are not supported"),
                    ))
                }
            };
            messages.push(Message {
                role: role.into(),
                content: text_of(m)?,
            });
        }
        let template = model.local.template.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "model",
                format!(
                    "the model `{}` has no chat template; use /v1/completions",
                    request.model
                ),
            )
        })?;
        let text = template
            .render(&messages, true)
            .map_err(|e| ApiError::invalid("messages", format!("{e:#}")))?;
        let tokens = model
            .local
            .tokenizer
            .encode(&text)
            .map_err(|e| ApiError::invalid("messages", format!("{e:#}")))?;
        let prepared =
            proxy.prepare_generation(&model, tokens, &request.knobs, DEFAULT_MAX_TOKENS)?;
        Ok((model, prepared, request.knobs))
    }
    .await;
    generation(proxy, &headers, &body, Endpoint::Chat, outcome).await
}

/// OpenAI's default `max_tokens` for completions.
const COMPLETION_MAX_TOKENS: u32 = 16;

async fn completions(State(proxy): State<Arc<Proxy>>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = async {
        let request: CompletionRequest = api::parse(&body)?;
        let model = proxy.resolve(&request.model, ModelTask::Generate)?;
        let prompt = match &request.prompt {
            Value::String(s) => s.clone(),
            Value::Array(items) if items.len() == 1 && items[0].is_string() => {
                items[0].as_str().unwrap_or_default().to_string()
            }
            _ => {
                return Err(ApiError::invalid(
                    "prompt",
                    "prompt must be a string (or a list of one string): one request is one job",
                ))
            }
        };
        let tokens = model
            .local
            .tokenizer
            .encode(&prompt)
            .map_err(|e| ApiError::invalid("prompt", format!("{e:#}")))?;
        let prepared =
            proxy.prepare_generation(&model, tokens, &request.knobs, COMPLETION_MAX_TOKENS)?;
        Ok((model, prepared, request.knobs))
    }
    .await;
    generation(proxy, &headers, &body, Endpoint::Completion, outcome).await
}

async fn generation(
    proxy: Arc<Proxy>,
    headers: &HeaderMap,
    body: &[u8],
    endpoint: Endpoint,
    prepared: Result<(Resolved, Prepared, Knobs), ApiError>,
) -> Response {
    let (model, prepared, knobs) = match prepared {
        Ok(p) => p,
        Err(error) => return error.into_response(),
    };
    let key = idempotency_key(headers);
    let work = {
        let proxy = proxy.clone();
        async move {
            match proxy.run_paid(prepared.spec.clone()).await {
                Ok((report, cost)) => {
                    proxy.answer(endpoint, &model, &prepared, &knobs, &report, cost)
                }
                Err(error) => Reply::error(&error),
            }
        }
    };
    proxy.idempotency.run(key, body, work).await.into_response()
}

fn idempotency_key(headers: &HeaderMap) -> Option<Key> {
    let given = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .map(|k| Key::Given(k.to_string()));
    let retry = headers
        .get("x-stainless-retry-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .map(|n| if n == 0 { Key::FirstTry } else { Key::Retry });
    given.or(retry)
}

async fn embeddings(State(proxy): State<Arc<Proxy>>, headers: HeaderMap, body: Bytes) -> Response {
    let prepared = (|| {
        let request: EmbeddingRequest = api::parse(&body)?;
        let model = proxy.resolve(&request.model, ModelTask::Embed)?;
        let base64 = match request.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::invalid(
                    "encoding_format",
                    format!("encoding_format {other:?} is not float or base64"),
                ))
            }
        };
        if let Some(d) = request.dimensions {
            if d != model.entry.dimensions {
                return Err(ApiError::invalid(
                    "dimensions",
                    format!(
                        "the model `{}` gives {} dimensions only",
                        request.model, model.entry.dimensions
                    ),
                ));
            }
        }
        let inputs = match request.inputs()? {
            api::EmbeddingInput::Tokens(t) => t,
            api::EmbeddingInput::Texts(texts) => texts
                .iter()
                .map(|t| model.local.tokenizer.encode(t))
                .collect::<anyhow::Result<Vec<_>>>()
                .map_err(|e| ApiError::invalid("input", format!("{e:#}")))?,
        };
        let output_class = funion_compute::class_for(
            &funion_compute::OUTPUT_CLASSES,
            model.entry.dimensions as usize,
        )
        .ok_or_else(|| {
            ApiError::server(
                StatusCode::SERVICE_UNAVAILABLE,
                "bad_model",
                "the model's dimensions fit no output class",
            )
        })?;
        let mut specs = Vec::new();
        for tokens in inputs {
            if tokens.len() > model.entry.context as usize {
                return Err(ApiError::invalid(
                    "input",
                    format!(
                        "an input of {} tokens exceeds the model's context of {}",
                        tokens.len(),
                        model.entry.context
                    ),
                )
                .with_code("context_length_exceeded"));
            }
            let input_class = funion_compute::client::input_class_of(tokens.len())
                .map_err(|e| ApiError::invalid("input", e.to_string()))?;
            let plan = proxy.plan(&model.entry, input_class, output_class, 0)?;
            specs.push(JobSpec {
                model: model.entry.name.clone(),
                task: Task::Embed,
                tokens,
                output_class,
                sampling: Sampling::default(),
                bucket: plan.bucket,
                tickets: Vec::new(),
                courier: None,
                path: JOB_PATH,
            });
        }
        Ok((model, specs, base64))
    })();
    let (model, specs, base64) = match prepared {
        Ok(p) => p,
        Err(error) => return error.into_response(),
    };
    let key = idempotency_key(&headers);
    let work = {
        let proxy = proxy.clone();
        async move {
            // Every input is a job of its own, all at once.
            let handles: Vec<_> = specs
                .iter()
                .cloned()
                .map(|spec| {
                    let proxy = proxy.clone();
                    tokio::spawn(async move { proxy.run_paid(spec).await })
                })
                .collect();
            let mut results = Vec::with_capacity(handles.len());
            for handle in handles {
                results.push(handle.await.unwrap_or_else(|_| {
                    Err(ApiError::server(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "an embedding job's task ended",
                    ))
                }));
            }
            let mut data = Vec::new();
            let mut total = Cost::default();
            let mut prompt_tokens = 0;
            let mut slowest = 0;
            for (index, (spec, result)) in specs.iter().zip(results).enumerate() {
                let (report, cost) = match result {
                    Ok(r) => r,
                    Err(error) => return Reply::error(&error.after_payment()),
                };
                total.tickets += cost.tickets;
                total.bucket = total.bucket.max(cost.bucket);
                total.overflow_retries += cost.overflow_retries;
                prompt_tokens += spec.tokens.len();
                slowest = slowest.max(report.timeline.done.saturating_sub(report.timeline.started));
                let Outcome::Embedding(vector) = report.outcome else {
                    return Reply::error(
                        &ApiError::server(
                            StatusCode::BAD_GATEWAY,
                            "bad_outcome",
                            "the compute courier answered an embedding with something else",
                        )
                        .after_payment(),
                    );
                };
                let embedding = if base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(vector)
                };
                data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
            }
            let mut funion = total.json(&proxy);
            funion["seconds"] = json!(slowest as f64 / 1e6);
            Reply {
                status: StatusCode::OK,
                content_type: "application/json",
                body: json!({
                    "object": "list",
                    "data": data,
                    "model": model.entry.name,
                    "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
                    "funion": funion,
                })
                .to_string(),
                cost_header: Some(total),
            }
        }
    };
    proxy
        .idempotency
        .run(key, &body, work)
        .await
        .into_response()
}

/// A reply as the proxy sends it (and keeps for a retried key).
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: String,
    /// What was paid, for the headers; `None` when nothing was.
    cost_header: Option<Cost>,
}

impl Reply {
    fn error(error: &ApiError) -> Self {
        Reply {
            status: error.status,
            content_type: "application/json",
            body: error.body().to_string(),
            cost_header: error.paid.then(Cost::default),
        }
    }

    /// Whether tickets were spent on it.
    fn paid(&self) -> bool {
        self.cost_header.is_some()
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, self.content_type)],
            self.body,
        )
            .into_response();
        if let Some(cost) = self.cost_header {
            let headers = response.headers_mut();
            // Paid: a retry would pay again.
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
            if cost.tickets > 0 {
                headers.insert("x-funion-tickets", HeaderValue::from(cost.tickets as u64));
                headers.insert("x-funion-bucket", HeaderValue::from(cost.bucket));
                headers.insert(
                    "x-funion-overflow-retries",
                    HeaderValue::from(cost.overflow_retries),
                );
            }
        }
        response
    }
}
