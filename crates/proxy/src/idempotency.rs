//! Idempotency keys: a request retried with the same `Idempotency-Key`
//! (and the same body) is the same job, answered with the same reply and
//! never paid twice. The official SDKs send no key of their own but number
//! their automatic retries (`x-stainless-retry-count`); a numbered retry
//! is matched to the first try with the same body. Each job runs in a task of its own, so a client that
//! hangs up does not cancel work already paid for; its retry finds it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::api::ApiError;
use crate::Reply;

/// Keys remembered at most (the oldest are forgotten first).
const MAX_KEYS: usize = 4_096;

type Slot = watch::Receiver<Option<Arc<Reply>>>;

#[derive(Default)]
struct Keys {
    by_key: HashMap<String, ([u8; 32], Slot)>,
    order: VecDeque<String>,
}

/// The keys seen, with their jobs' replies (in memory: a restarted proxy
/// forgets them).
#[derive(Clone, Default)]
pub struct Idempotency {
    keys: Arc<Mutex<Keys>>,
}

impl Idempotency {
    /// Runs `work` in a task of its own and returns its reply; with a key,
    /// a second call with the same key waits for (or finds) the first
    /// one's reply instead of running again. A reply that is an error from
    /// before any payment is forgotten, so that a retry runs anew.
    pub async fn run(
        &self,
        key: Option<Key>,
        body: &[u8],
        work: impl std::future::Future<Output = Reply> + Send + 'static,
    ) -> Reply {
        let Some(key) = key else {
            return tokio::spawn(work).await.unwrap_or_else(|_| lost());
        };
        let digest: [u8; 32] = Sha256::digest(body).into();
        let (key, fresh) = match key {
            Key::Given(key) => (key, false),
            Key::FirstTry => (format!("body:{}", hex(&digest)), true),
            Key::Retry => (format!("body:{}", hex(&digest)), false),
        };
        let mut slot = {
            let mut keys = self.keys.lock().expect("idempotency lock");
            if fresh {
                keys.by_key.remove(&key);
                keys.order.retain(|k| *k != key);
            }
            match keys.by_key.get(&key) {
                Some((seen, _)) if *seen != digest => {
                    return Reply::error(&ApiError {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        message: "this Idempotency-Key was used with a different request body"
                            .into(),
                        kind: "invalid_request_error",
                        param: None,
                        code: Some("idempotency_key_reused"),
                        paid: false,
                    })
                }
                Some((_, slot)) => slot.clone(),
                None => {
                    let (sender, slot) = watch::channel(None);
                    keys.by_key.insert(key.clone(), (digest, slot.clone()));
                    keys.order.push_back(key.clone());
                    while keys.order.len() > MAX_KEYS {
                        if let Some(old) = keys.order.pop_front() {
                            keys.by_key.remove(&old);
                        }
                    }
                    let all = self.keys.clone();
                    tokio::spawn(async move {
                        let reply = work.await;
                        if !reply.paid() {
                            let mut keys = all.lock().expect("idempotency lock");
                            keys.by_key.remove(&key);
                            keys.order.retain(|k| *k != key);
                        }
                        let _ = sender.send(Some(Arc::new(reply)));
                    });
                    slot
                }
            }
        };
        let reply = match slot.wait_for(Option::is_some).await {
            Ok(reply) => reply.as_deref().cloned(),
            Err(_) => None,
        };
        reply.unwrap_or_else(lost)
    }
}

/// How a request names itself.
#[derive(Clone, Debug)]
pub enum Key {
    /// An `Idempotency-Key` header.
    Given(String),
    /// A first try from an SDK that numbers its retries
    /// (`x-stainless-retry-count: 0`): always a new job, remembered by its
    /// body.
    FirstTry,
    /// A retry from such an SDK: the same job as the last first try with
    /// the same body, if that one is remembered.
    Retry,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lost() -> Reply {
    Reply::error(&ApiError::server(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request's task ended without a reply",
    ))
}
