//! The directory authority: collects signed node descriptors and serves one
//! signed network document per epoch over HTTP.
//!
//! Only nodes on the operator's allowlist (`allowed_nodes`) are admitted.
//! The document of an epoch is frozen once every admitted node has sent a
//! descriptor for it, or at its cutoff ([`funion_pki::document_cutoff_ms`],
//! or a short grace after the authority starts, whichever is later);
//! from then on it never changes, and every node and client that fetches
//! it gets the same bytes.
//!
//! - `POST /descriptor`: a signed descriptor (postcard bytes); 200, or 400
//!   (does not verify, wrong epoch), 403 (not on the allowlist) or 409
//!   (its epoch's document is frozen and lists it otherwise), each with
//!   the reason.
//! - `GET /document/{epoch}`: the signed document; 503 with the reason
//!   while it is not complete (a layer still empty) or not frozen yet.
//! - `GET /parameters`: the network's parameters as TOML.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use ed25519_dalek::SigningKey;
use funion_pki::{
    document_cutoff_ms, epoch_at, NetworkDocument, NodeDescriptor, NodeEntry, Parameters,
};
use tokio::net::TcpListener;

use funion_net::config::{hex32, AuthorityFile};
use funion_net::unix_ms;

struct Inner {
    parameters: Parameters,
    key: SigningKey,
    /// The identity keys the operator admits.
    allowed: BTreeSet<[u8; 32]>,
    /// When this authority started (Unix ms): it takes descriptors for a
    /// while after that even past an epoch's cutoff, so a network can boot.
    started_ms: u64,
    /// How long that while is (ms), before the cap of a quarter epoch.
    boot_grace_ms: u64,
    descriptors: BTreeMap<u64, BTreeMap<[u8; 32], NodeEntry>>,
    /// Frozen documents, signed, by epoch: never changed once here.
    frozen: HashMap<u64, Frozen>,
}

struct Frozen {
    nodes: BTreeMap<[u8; 32], NodeEntry>,
    signed: Vec<u8>,
}

impl Inner {
    /// When the document of `epoch` freezes whether or not every admitted
    /// node has sent its descriptor.
    fn freeze_at(&self, epoch: u64) -> u64 {
        let grace = self.boot_grace_ms.min(self.parameters.epoch_ms / 4);
        document_cutoff_ms(epoch, self.parameters.epoch_ms).max(self.started_ms + grace)
    }

    /// The frozen document of `epoch`, freezing it now if it may be:
    /// complete, and either every admitted node is in or the time is up.
    /// Otherwise why it is not ready.
    fn frozen(&mut self, epoch: u64, now_ms: u64) -> Result<&Frozen, String> {
        if !self.frozen.contains_key(&epoch) {
            let nodes = self.descriptors.get(&epoch).cloned().unwrap_or_default();
            let missing = self
                .allowed
                .iter()
                .filter(|k| !nodes.contains_key(*k))
                .count();
            let freeze_at = self.freeze_at(epoch);
            if missing > 0 && now_ms < freeze_at {
                return Err(format!(
                    "not ready: waiting for {missing} of {} admitted nodes until {freeze_at} (Unix ms)",
                    self.allowed.len()
                ));
            }
            let document = NetworkDocument::new(
                epoch,
                self.parameters.clone(),
                nodes.values().cloned().collect(),
            )
            .map_err(|e| format!("not ready: {e}"))?;
            let signed = document.sign(&self.key).map_err(|e| e.to_string())?;
            tracing::info!(epoch, nodes = nodes.len(), missing, "document frozen");
            self.frozen.insert(epoch, Frozen { nodes, signed });
        }
        Ok(&self.frozen[&epoch])
    }
}

type Shared = Arc<Mutex<Inner>>;

/// Serves the authority on an already bound listener until the task is
/// dropped.
pub async fn serve(config: AuthorityFile, listener: TcpListener) -> anyhow::Result<()> {
    let key = SigningKey::from_bytes(&config.secret_seed.bytes()?);
    let mut allowed = BTreeSet::new();
    for (i, text) in config.allowed_nodes.iter().enumerate() {
        let key = hex32(text)
            .map_err(|e| anyhow::anyhow!("allowed_nodes[{i}] is not an identity key: {e}"))?;
        allowed.insert(key);
    }
    anyhow::ensure!(
        !allowed.is_empty(),
        "allowed_nodes is empty: no node could join"
    );
    let state: Shared = Arc::new(Mutex::new(Inner {
        parameters: config.parameters,
        key,
        allowed,
        started_ms: unix_ms(),
        boot_grace_ms: config.boot_grace_ms,
        descriptors: BTreeMap::new(),
        frozen: HashMap::new(),
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
    let identity = descriptor.node.identity_key;
    if !inner.allowed.contains(&identity) {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "descriptor refused: node {} is not on the operator's allowlist",
                hex::encode(identity)
            ),
        );
    }
    let now = unix_ms();
    let current = epoch_at(now, inner.parameters.epoch_ms);
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
    // Past its time the document freezes (if it can) before this one
    // would change it.
    if now >= inner.freeze_at(epoch) {
        let _ = inner.frozen(epoch, now);
    }
    if let Some(frozen) = inner.frozen.get(&epoch) {
        if matches!(frozen.nodes.get(&identity), Some(listed) if *listed == descriptor.node) {
            return (StatusCode::OK, "already in the frozen document".into());
        }
        // The first epoch whose document may still take it.
        let mut open = epoch + 1;
        while inner.frozen.contains_key(&open) || now >= inner.freeze_at(open) {
            open += 1;
        }
        return (
            StatusCode::CONFLICT,
            format!(
                "descriptor refused: the document of epoch {epoch} is frozen; the first still open is epoch {open}"
            ),
        );
    }
    inner
        .descriptors
        .entry(epoch)
        .or_default()
        .insert(identity, descriptor.node);
    // Forget epochs long past.
    inner.descriptors.retain(|&e, _| e + 2 >= current);
    inner.frozen.retain(|&e, _| e + 2 >= current);
    (StatusCode::OK, "accepted".into())
}

async fn get_document(
    State(state): State<Shared>,
    Path(epoch): Path<u64>,
) -> (StatusCode, Vec<u8>) {
    let mut inner = state.lock().expect("authority state");
    match inner.frozen(epoch, unix_ms()) {
        Ok(frozen) => (StatusCode::OK, frozen.signed.clone()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.into_bytes()),
    }
}

async fn get_parameters(State(state): State<Shared>) -> (StatusCode, String) {
    let inner = state.lock().expect("authority state");
    match toml::to_string(&inner.parameters) {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
