//! The upstream backend against a local HTTP server that speaks the
//! OpenAI completions and embeddings API (a stand-in written here: no
//! independent OpenAI-compatible server can be installed on this machine).
//! It records what it was sent: token-ID prompts, a fresh `cache_salt` per
//! job, `cache_prompt: false`; its answers and its failures reach the job.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use funion_compute::{Outcome, Sampling, Task, WorkItem};
use funion_inference::upstream::Upstream;
use funion_inference::Backend;
use serde_json::{json, Value};

type Seen = Arc<Mutex<Vec<Value>>>;

type Reply = (
    axum::http::StatusCode,
    [(&'static str, &'static str); 1],
    String,
);

fn reply(status: axum::http::StatusCode, body: Value) -> Reply {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
}

async fn completions(State(seen): State<Seen>, body: String) -> Reply {
    let body: Value = serde_json::from_str(&body).unwrap();
    seen.lock().unwrap().push(body.clone());
    let prompt: Vec<u64> = body["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    if prompt.first() == Some(&666) {
        return reply(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "boom"}),
        );
    }
    if prompt.first() == Some(&777) {
        return reply(
            axum::http::StatusCode::OK,
            json!({"choices": [{"text": "no ids"}]}),
        );
    }
    // Echo the prompt reversed, as many tokens as asked for.
    let n = body["max_tokens"].as_u64().unwrap() as usize;
    let ids: Vec<u64> = prompt.iter().rev().cycle().take(n).copied().collect();
    reply(
        axum::http::StatusCode::OK,
        json!({"choices": [{"text": "…", "token_ids": ids}]}),
    )
}

async fn embeddings(State(seen): State<Seen>, body: String) -> Reply {
    let body: Value = serde_json::from_str(&body).unwrap();
    seen.lock().unwrap().push(body.clone());
    let n = body["input"][0].as_array().unwrap().len();
    reply(
        axum::http::StatusCode::OK,
        json!({"data": [{"embedding": vec![0.5; n]}]}),
    )
}

fn item(job: u64, tokens: Vec<u32>, task: Task) -> WorkItem {
    WorkItem {
        job,
        model: "m".into(),
        task,
        tokens,
        sampling: Sampling {
            seed: 9,
            temperature: 0.5,
            top_p: Some(0.9),
            max_tokens: 5,
        },
        output_class: 256,
    }
}

#[test]
fn upstream_jobs_go_as_token_ids_with_a_fresh_cache_salt_each() {
    let seen: Seen = Arc::default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .with_state(seen.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });

    let generate = Upstream::new(&url, "served-name", Task::Generate, None).unwrap();
    let outcomes = generate.run(&[
        item(1, vec![1, 2, 3], Task::Generate),
        item(2, vec![1, 2, 3], Task::Generate),
        item(3, vec![666], Task::Generate),
        item(4, vec![777], Task::Generate),
        item(5, vec![1], Task::Embed),
    ]);
    assert_eq!(outcomes[0], Ok(Outcome::Tokens(vec![3, 2, 1, 3, 2])));
    assert_eq!(outcomes[1], outcomes[0]);
    assert!(
        outcomes[2].as_ref().unwrap_err().contains("500"),
        "{:?}",
        outcomes[2]
    );
    assert!(
        outcomes[3].as_ref().unwrap_err().contains("token IDs"),
        "{:?}",
        outcomes[3]
    );
    assert!(outcomes[4].is_err(), "a generation model does not embed");

    let embed = Upstream::new(&url, "e", Task::Embed, None).unwrap();
    assert_eq!(
        embed.run(&[item(6, vec![4, 5], Task::Embed)])[0],
        Ok(Outcome::Embedding(vec![0.5, 0.5]))
    );

    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        5,
        "four generations and one embedding reached the server"
    );
    let salts: std::collections::HashSet<&str> = seen
        .iter()
        .map(|b| b["cache_salt"].as_str().unwrap())
        .collect();
    assert_eq!(salts.len(), 5, "a fresh cache salt per job");
    let first = seen
        .iter()
        .find(|b| b["prompt"] == json!([1, 2, 3]))
        .unwrap();
    assert_eq!(first["model"], "served-name");
    assert_eq!(first["cache_prompt"], false);
    assert_eq!(first["seed"], 9);
    assert_eq!(first["max_tokens"], 5);
    // Unreachable server: an error, not a hang or a panic.
    let gone = Upstream::new("http://127.0.0.1:9", "m", Task::Generate, None).unwrap();
    assert!(gone.run(&[item(7, vec![1], Task::Generate)])[0].is_err());
}

/// The tiny llama served by a real, independent llama.cpp server (built by
/// `scripts/llamacpp/check`, which sets `FUNION_LLAMA_SERVER`): greedy
/// generations through the upstream backend equal candle's on the same
/// weights. Not part of the default suite: building llama.cpp takes longer
/// than the rest of CI.
#[test]
#[ignore = "needs a llama.cpp server binary: scripts/llamacpp/check"]
fn the_tiny_llama_on_llama_cpp_matches_candle() {
    use std::process::{Command, Stdio};
    let server =
        std::env::var("FUNION_LLAMA_SERVER").expect("FUNION_LLAMA_SERVER names llama-server");
    let dir = std::env::temp_dir().join(format!("funion-llamacpp-{}", std::process::id()));
    funion_inference::tiny::write_tiny_llama(
        &dir,
        funion_inference::tiny::SEED,
        Default::default(),
    )
    .unwrap();
    let gguf = dir.join("tiny.gguf");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/llamacpp/tiny_to_gguf.py"
    );
    let status = Command::new("python3")
        .arg(script)
        .arg(&dir)
        .arg(&gguf)
        .status()
        .unwrap();
    assert!(status.success(), "GGUF conversion failed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(server)
        .args([
            "-m",
            gguf.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "-c",
            "4096",
            "-np",
            "4",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    let up = (0..600).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        http.get(format!("{url}/health"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    assert!(up, "llama-server did not come up");
    let tokenizer = funion_inference::TextTokenizer::load(&dir).unwrap();
    let candle = funion_inference::load_folder(&dir).unwrap();
    let upstream = Upstream::new(&url, "tiny", Task::Generate, None)
        .unwrap()
        .with_flavor(funion_inference::upstream::Flavor::LlamaCpp);
    let prompts = [
        "Who asked what?",
        "The compute courier reads the boxes.",
        "Mixes hold every packet",
    ];
    let items: Vec<WorkItem> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| WorkItem {
            job: i as u64,
            model: "tiny".into(),
            task: Task::Generate,
            tokens: tokenizer.encode(p).unwrap(),
            sampling: Sampling {
                seed: 1,
                temperature: 0.0,
                top_p: None,
                max_tokens: 16,
            },
            output_class: 256,
        })
        .collect();
    let theirs = upstream.run(&items);
    let ours = candle.run(&items);
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).ok();
    for ((p, a), b) in prompts.iter().zip(&theirs).zip(&ours) {
        eprintln!("{p:?}\n  llama.cpp {a:?}\n  candle    {b:?}");
    }
    assert_eq!(
        theirs, ours,
        "llama.cpp and candle disagree on greedy tokens"
    );
}
