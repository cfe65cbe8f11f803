//! The directory authority: collects signed node descriptors and serves one
//! signed network document per epoch over HTTP.
//!
//! - `POST /descriptor`: a signed descriptor (postcard bytes); 200, or 400
//!   with the reason.
//! - `GET /document/{epoch}`: the signed document; 503 while it is not
//!   complete (a layer still empty), with the reason.
//! - `GET /parameters`: the network's parameters as TOML.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use ed25519_dalek::SigningKey;
use funion_pki::{epoch_at, NetworkDocument, NodeDescriptor, NodeEntry, Parameters};
use tokio::net::TcpListener;

use funion_net::config::{hex32, AuthorityFile};
use funion_net::unix_ms;

struct Inner {
    parameters: Parameters,
    key: SigningKey,
    descriptors: BTreeMap<u64, BTreeMap<[u8; 32], NodeEntry>>,
    signed: HashMap<u64, Vec<u8>>,
}

type Shared = Arc<Mutex<Inner>>;

/// Serves the authority on an already bound listener until the task is
/// dropped.
pub async fn serve(config: AuthorityFile, listener: TcpListener) -> anyhow::Result<()> {
    let key = SigningKey::from_bytes(&config.secret_seed.bytes()?);
    let state: Shared = Arc::new(Mutex::new(Inner {
        parameters: config.parameters,
        key,
        descriptors: BTreeMap::new(),
        signed: HashMap::new(),
    }));
    let app = Router::new()
        .route("/descriptor", post(post_descriptor))
        .route("/document/{epoch}", get(get_document))
        .route("/parameters", get(get_parameters))
        .with_state(state);
    axum::serve(listener, app).await?;
    Ok(())
}

/// The authority's public key for a seed (hex), for configs.
pub fn public_key_hex(seed_hex: &str) -> anyhow::Result<String> {
    Ok(hex::encode(
        SigningKey::from_bytes(&hex32(seed_hex)?)
            .verifying_key()
            .to_bytes(),
    ))
}

async fn post_descriptor(State(state): State<Shared>, body: Bytes) -> (StatusCode, String) {
    let descriptor = match NodeDescriptor::verify(&body) {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("descriptor refused: {e}")),
    };
    let mut inner = state.lock().expect("authority state");
    let current = epoch_at(unix_ms(), inner.parameters.epoch_ms);
    if descriptor.epoch < current || descriptor.epoch > current + 1 {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "descriptor for epoch {}, current is {current}",
                descriptor.epoch
            ),
        );
    }
    if descriptor.node.sphinx_key(descriptor.epoch).is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "no Sphinx key for the descriptor's epoch".into(),
        );
    }
    let epoch = descriptor.epoch;
    inner
        .descriptors
        .entry(epoch)
        .or_default()
        .insert(descriptor.node.identity_key, descriptor.node);
    inner.signed.remove(&epoch);
    // Forget epochs long past.
    inner.descriptors.retain(|&e, _| e + 2 >= current);
    (StatusCode::OK, "accepted".into())
}

async fn get_document(
    State(state): State<Shared>,
    Path(epoch): Path<u64>,
) -> (StatusCode, Vec<u8>) {
    let mut inner = state.lock().expect("authority state");
    if let Some(bytes) = inner.signed.get(&epoch) {
        return (StatusCode::OK, bytes.clone());
    }
    let nodes: Vec<NodeEntry> = inner
        .descriptors
        .get(&epoch)
        .map(|d| d.values().cloned().collect())
        .unwrap_or_default();
    let document = match NetworkDocument::new(epoch, inner.parameters.clone(), nodes) {
        Ok(d) => d,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {e}").into_bytes(),
            )
        }
    };
    match document.sign(&inner.key) {
        Ok(bytes) => {
            inner.signed.insert(epoch, bytes.clone());
            (StatusCode::OK, bytes)
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string().into_bytes(),
        ),
    }
}

async fn get_parameters(State(state): State<Shared>) -> (StatusCode, String) {
    let inner = state.lock().expect("authority state");
    match toml::to_string(&inner.parameters) {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
