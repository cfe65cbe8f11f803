//! Unit tests of the proxy's pieces that need no network: sampling onto the
//! public presets, the bucket plan, the error shape, idempotent replies and
//! the pieces a streamed answer is cut into.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use funion_compute::JobPath;
use funion_pki::{ClassTiming, ModelEntry, ModelTask, Parameters};

use crate::api::{ApiError, Knobs};
use crate::idempotency::{Idempotency, Key};
use crate::plan::{bucket_for, max_bucket};
use crate::{sampling_of, Cost, Reply};

fn knobs(temperature: Option<f32>, top_p: Option<f32>) -> Knobs {
    Knobs {
        temperature,
        top_p,
        seed: Some(9),
        ..Knobs::default()
    }
}

#[test]
fn sampling_maps_onto_the_public_presets_or_is_refused() {
    let s = sampling_of(&knobs(None, None), 16).unwrap();
    assert_eq!(
        (s.temperature, s.top_p),
        (1.0, Some(0.95)),
        "OpenAI's default"
    );
    assert_eq!((s.seed, s.max_tokens), (9, 16));
    let s = sampling_of(&knobs(Some(0.0), None), 16).unwrap();
    assert_eq!((s.temperature, s.top_p), (0.0, None));
    let s = sampling_of(&knobs(Some(0.0), Some(1.0)), 16).unwrap();
    assert_eq!(s.top_p, None, "top_p 1 is no top_p");
    let s = sampling_of(&knobs(Some(0.7), Some(0.9)), 16).unwrap();
    assert_eq!((s.temperature, s.top_p), (0.7, Some(0.9)));
    for (t, p, param) in [
        (Some(0.5), None, "temperature"),
        (Some(2.0), None, "temperature"),
        (Some(0.7), Some(0.5), "top_p"),
        (Some(0.0), Some(0.9), "top_p"),
    ] {
        let error = sampling_of(&knobs(t, p), 16).unwrap_err();
        assert_eq!(
            (error.status, error.param),
            (StatusCode::BAD_REQUEST, Some(param))
        );
    }
    let unseeded = |_| sampling_of(&Knobs::default(), 16).unwrap().seed;
    assert_ne!(unseeded(0), unseeded(1), "a fresh seed per job");
}

#[test]
fn unsupported_knobs_are_refused_not_ignored() {
    assert!(Knobs::default().refuse_unsupported().is_ok());
    let text = Knobs {
        response_format: Some(serde_json::json!({"type": "text"})),
        n: Some(1),
        ..Knobs::default()
    };
    assert!(text.refuse_unsupported().is_ok());
    for (knobs, param) in [
        (
            Knobs {
                n: Some(2),
                ..Knobs::default()
            },
            "n",
        ),
        (
            Knobs {
                stop: Some(serde_json::json!(["\n"])),
                ..Knobs::default()
            },
            "stop",
        ),
        (
            Knobs {
                presence_penalty: Some(0.5),
                ..Knobs::default()
            },
            "presence_penalty",
        ),
        (
            Knobs {
                tools: Some(serde_json::json!([{}])),
                ..Knobs::default()
            },
            "tools",
        ),
        (
            Knobs {
                response_format: Some(serde_json::json!({"type": "json_object"})),
                ..Knobs::default()
            },
            "response_format",
        ),
        (
            Knobs {
                logprobs: Some(serde_json::json!(true)),
                ..Knobs::default()
            },
            "logprobs",
        ),
        (
            Knobs {
                echo: Some(true),
                ..Knobs::default()
            },
            "echo",
        ),
        (
            Knobs {
                best_of: Some(3),
                ..Knobs::default()
            },
            "best_of",
        ),
    ] {
        assert_eq!(knobs.refuse_unsupported().unwrap_err().param, Some(param));
    }
}

fn entry(prefill_us: u64, per_token_us: u64) -> ModelEntry {
    ModelEntry {
        name: "m".into(),
        task: ModelTask::Generate,
        tokenizer_digest: None,
        template_digest: None,
        context: 8_192,
        dimensions: 0,
        timings: [256u32, 512, 1024]
            .iter()
            .map(|&c| ClassTiming {
                input_class: c,
                prefill_us: prefill_us * u64::from(c) / 256,
                per_token_us,
            })
            .collect(),
        batch_wait_ms: 100,
    }
}

#[test]
fn the_bucket_covers_fetch_batch_and_compute_and_grows_with_the_job() {
    let parameters = Parameters::fast();
    let spacing = parameters.bucket_spacing_us as f64 / 1e6;
    let model = entry(500_000, 20_000);
    let plan = bucket_for(&parameters, JobPath::Serial, &model, 256, 16).unwrap();
    assert!(f64::from(plan.bucket) * spacing >= plan.fetch_s + plan.batch_s + plan.compute_s);
    assert!((plan.batch_s - 0.1).abs() < 1e-9);
    assert!(plan.compute_s >= (0.5 + 16.0 * 0.02) * crate::plan::COMPUTE_MARGIN);
    let longer = bucket_for(&parameters, JobPath::Serial, &model, 256, 256).unwrap();
    let wider = bucket_for(&parameters, JobPath::Serial, &model, 1024, 16).unwrap();
    assert!(longer.bucket > plan.bucket && wider.bucket > plan.bucket);
    // The paper's delays stretch the fetch, not the compute.
    let paper = bucket_for(&Parameters::paper(), JobPath::Serial, &model, 256, 16).unwrap();
    assert!(paper.fetch_s > plan.fetch_s);
    assert_eq!(paper.compute_s, plan.compute_s);
    // The fast and store paths' buckets count from the input in hand: no
    // fetch to cover, a shorter bucket.
    let fast = bucket_for(&parameters, JobPath::Fast, &model, 256, 16).unwrap();
    assert_eq!(fast.fetch_s, 0.0);
    assert_eq!(fast.compute_s, plan.compute_s);
    assert!(fast.bucket < plan.bucket);
    // Past the couriers' longest bucket, or with no timings: refused.
    let slow = entry(500_000, 1_000_000);
    let error = bucket_for(&parameters, JobPath::Serial, &slow, 256, 2048).unwrap_err();
    assert!(error.contains("fewer tokens"), "{error}");
    assert!(
        bucket_for(&parameters, JobPath::Serial, &slow, 256, 16)
            .unwrap()
            .bucket
            <= max_bucket(&parameters)
    );
    let silent = ModelEntry {
        timings: Vec::new(),
        ..entry(1, 1)
    };
    assert!(bucket_for(&parameters, JobPath::Serial, &silent, 256, 16).is_err());
}

#[test]
fn errors_have_openai_s_shape_and_paid_ones_say_do_not_retry() {
    let error = ApiError::unknown_model("nope");
    let body = error.body();
    let inner = &body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(inner.get(field).is_some(), "{field} in {body}");
    }
    assert_eq!(inner["code"], "model_not_found");
    let response = error.clone().into_response();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().get("x-should-retry").is_none());
    let paid = ApiError::server(StatusCode::BAD_GATEWAY, "x", "y")
        .after_payment()
        .into_response();
    assert_eq!(paid.headers()["x-should-retry"], "false");
    let reply = Reply {
        status: StatusCode::OK,
        content_type: "application/json",
        body: "{}".into(),
        cost_header: Some(Cost {
            tickets: 2,
            bucket: 40,
            overflow_retries: 1,
        }),
    }
    .into_response();
    assert_eq!(reply.headers()["x-should-retry"], "false");
    assert_eq!(reply.headers()["x-funion-tickets"], "2");
    assert_eq!(reply.headers()["x-funion-overflow-retries"], "1");
}

fn reply(paid: bool, body: &str) -> Reply {
    Reply {
        status: if paid {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        content_type: "application/json",
        body: body.into(),
        cost_header: paid.then(Cost::default),
    }
}

/// Runs `key` through `keys` with a job that counts its runs.
async fn call(
    keys: &Idempotency,
    key: Option<Key>,
    body: &[u8],
    paid: bool,
    runs: &Arc<AtomicUsize>,
) -> Reply {
    let runs = runs.clone();
    keys.run(key, body, async move {
        let n = runs.fetch_add(1, Ordering::SeqCst);
        reply(paid, &format!("run {n}"))
    })
    .await
}

#[tokio::test]
async fn a_retried_request_is_the_same_job_and_never_paid_twice() {
    let keys = Idempotency::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let given = || Some(Key::Given("k1".into()));
    let first = call(&keys, given(), b"a", true, &runs).await;
    let again = call(&keys, given(), b"a", true, &runs).await;
    assert_eq!(
        (first.body.as_str(), again.body.as_str()),
        ("run 0", "run 0")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let reused = call(&keys, given(), b"other", true, &runs).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    // No key: every call is a job.
    call(&keys, None, b"a", true, &runs).await;
    call(&keys, None, b"a", true, &runs).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    // The SDK's numbered retries: a retry is the first try's job; a new
    // first try with the same body is a new job.
    let try0 = call(&keys, Some(Key::FirstTry), b"b", true, &runs).await;
    let try1 = call(&keys, Some(Key::Retry), b"b", true, &runs).await;
    assert_eq!(try0.body, try1.body);
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    call(&keys, Some(Key::FirstTry), b"b", true, &runs).await;
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    // An error before payment is forgotten: the retry runs anew.
    let unpaid = || Some(Key::Given("k2".into()));
    call(&keys, unpaid(), b"c", false, &runs).await;
    call(&keys, unpaid(), b"c", false, &runs).await;
    assert_eq!(runs.load(Ordering::SeqCst), 7);
}

#[test]
fn streamed_pieces_join_into_the_answer() {
    let path = funion_inference::smollm2_gguf()
        .expect("scripts/setup-models installs SmolLM2-135M-Instruct");
    let local = funion_inference::card::LocalModel::open(&path).unwrap();
    let text = "Café au lait — 東京 is far; naïve résumé! 🙂 done.";
    let tokens = local.tokenizer.encode(text).unwrap();
    let pieces = crate::pieces(&local, &tokens);
    assert!(pieces.len() > 8, "{pieces:?}");
    assert_eq!(pieces.concat(), local.tokenizer.decode(&tokens).unwrap());
    assert!(pieces.iter().all(|p| !p.contains('\u{fffd}')), "{pieces:?}");
}
