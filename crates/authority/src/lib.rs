//! A directory authority: collects signed node descriptors, votes with the
//! other authorities of the network, and serves one network document per
//! epoch, endorsed by a threshold of them, over HTTP.
//!
//! Only nodes on the operator's allowlist (`allowed_nodes`) are admitted.
//! An authority freezes its view of an epoch into a signed vote once every
//! admitted node has sent a descriptor for it, or at its cutoff
//! ([`funion_pki::document_cutoff_ms`], or a short grace after the
//! authority starts, whichever is later). It then fetches the other
//! authorities' votes and endorsements ([`funion_pki::Voting`] decides
//! what is next) until the document is sealed; from then on it never
//! changes, and every node and client that fetches it gets the same
//! document. A vote or endorsement that does not verify is refused and
//! the reason logged.
//!
//! - `POST /descriptor`: a signed descriptor (postcard bytes); 200, or 400
//!   (does not verify, wrong epoch), 403 (not on the allowlist) or 409
//!   (its epoch's vote is frozen and lists it otherwise), each with the
//!   reason.
//! - `GET /vote/{epoch}`: this authority's signed vote.
//! - `GET /endorsement/{epoch}`: its endorsement of the consensus.
//! - `GET /document/{epoch}`: the sealed document; 503 with the reason
//!   while it is not (a layer still empty, votes or endorsements missing).
//! - `GET /parameters`: the network's parameters as TOML.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use ed25519_dalek::SigningKey;
use funion_pki::{
    document_cutoff_ms, epoch_at, Endorsement, NetworkDocument, NodeDescriptor, NodeEntry,
    Parameters, Trust, Voting,
};
use tokio::net::TcpListener;

use funion_net::config::{hex32, AuthorityFile};
use funion_net::{read_body, unix_ms};

/// How often an authority asks the others for what it still lacks.
const COLLECT_EVERY: Duration = Duration::from_millis(200);

struct Inner {
    parameters: Parameters,
    key: SigningKey,
    /// Every authority of the network, this one included.
    trust: Trust,
    /// The identity keys the operator admits.
    allowed: BTreeSet<[u8; 32]>,
    /// When this authority started (Unix ms): it takes descriptors for a
    /// while after that even past an epoch's cutoff, so a network can boot.
    started_ms: u64,
    /// How long that while is (ms), before the cap of a quarter epoch.
    boot_grace_ms: u64,
    /// How long it waits for every vote and endorsement (ms), before the
    /// cap of an eighth of an epoch.
    vote_window_ms: u64,
    descriptors: BTreeMap<u64, BTreeMap<[u8; 32], NodeEntry>>,
    /// Frozen votes, by epoch: this authority's view never changes once here.
    epochs: HashMap<u64, Frozen>,
}

struct Frozen {
    nodes: BTreeMap<[u8; 32], NodeEntry>,
    voting: Voting,
    /// Past this (Unix ms) a threshold of votes and endorsements will do.
    deadline_ms: u64,
}

impl Inner {
    /// When this authority's vote for `epoch` freezes whether or not every
    /// admitted node has sent its descriptor.
    fn freeze_at(&self, epoch: u64) -> u64 {
        let grace = self.boot_grace_ms.min(self.parameters.epoch_ms / 4);
        document_cutoff_ms(epoch, self.parameters.epoch_ms).max(self.started_ms + grace)
    }

    /// The frozen vote of `epoch`, freezing it now if it may be: its view
    /// makes a complete document, and either every admitted node is in or
    /// the time is up. Otherwise why it is not ready.
    fn frozen(&mut self, epoch: u64, now_ms: u64) -> Result<&mut Frozen, String> {
        if !self.epochs.contains_key(&epoch) {
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
            let view: Vec<NodeEntry> = nodes.values().cloned().collect();
            NetworkDocument::new(epoch, self.parameters.clone(), view.clone())
                .map_err(|e| format!("not ready: {e}"))?;
            let voting = Voting::new(
                self.key.clone(),
                self.trust.clone(),
                epoch,
                self.parameters.clone(),
                view,
            )
            .map_err(|e| e.to_string())?;
            tracing::info!(epoch, nodes = nodes.len(), missing, "vote frozen");
            let window = self.vote_window_ms.min(self.parameters.epoch_ms / 8);
            self.epochs.insert(
                epoch,
                Frozen {
                    nodes,
                    voting,
                    deadline_ms: now_ms + window,
                },
            );
        }
        Ok(self.epochs.get_mut(&epoch).expect("inserted above"))
    }
}

type Shared = Arc<Mutex<Inner>>;

/// Serves the authority on an already bound listener until the task is
/// dropped.
pub async fn serve(config: AuthorityFile, listener: TcpListener) -> anyhow::Result<()> {
    let key = SigningKey::from_bytes(&config.secret_seed.bytes()?);
    let own = key.verifying_key().to_bytes();
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
    let (trust, peers) = if config.authorities.is_empty() {
        (Trust::single(own)?, Vec::new())
    } else {
        let authorities =
            funion_net::Authorities::new(&config.authorities, config.authority_threshold)?;
        anyhow::ensure!(
            authorities.trust().trusts(&own),
            "authorities does not list this authority's own key {}",
            hex::encode(own)
        );
        let peers: Vec<(String, [u8; 32])> = config
            .authorities
            .iter()
            .zip(authorities.urls())
            .filter_map(|(a, url)| {
                let key = hex32(&a.key).ok()?;
                (key != own).then(|| (url.clone(), key))
            })
            .collect();
        (authorities.trust().clone(), peers)
    };
    let state: Shared = Arc::new(Mutex::new(Inner {
        parameters: config.parameters,
        key,
        trust,
        allowed,
        started_ms: unix_ms(),
        boot_grace_ms: config.boot_grace_ms,
        vote_window_ms: config.vote_window_ms,
        descriptors: BTreeMap::new(),
        epochs: HashMap::new(),
    }));
    let app = Router::new()
        .route("/descriptor", post(post_descriptor))
        .route("/vote/{epoch}", get(get_vote))
        .route("/endorsement/{epoch}", get(get_endorsement))
        .route("/document/{epoch}", get(get_document))
        .route("/parameters", get(get_parameters))
        .with_state(state.clone());
    let collector = tokio::spawn(collect(state, peers));
    let served = axum::serve(listener, app).await;
    collector.abort();
    served?;
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

/// What the collector still has to fetch.
#[derive(Clone, Copy)]
enum Wanted {
    Vote,
    Endorsement,
}

/// Freezes votes when their time comes, and fetches from the other
/// authorities the votes and endorsements still missing, until each
/// epoch's document is sealed.
async fn collect(state: Shared, peers: Vec<(String, [u8; 32])>) {
    let http = match funion_net::http_client_with(Duration::from_secs(5)) {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "authority cannot make an HTTP client; it will not vote");
            return;
        }
    };
    let mut refused: BTreeSet<(u64, [u8; 32], String)> = BTreeSet::new();
    loop {
        tokio::time::sleep(COLLECT_EVERY).await;
        let now = unix_ms();
        // What to ask whom, decided under the lock, asked without it.
        let mut asks = Vec::new();
        {
            let mut inner = state.lock().expect("authority state");
            let current = epoch_at(now, inner.parameters.epoch_ms);
            for epoch in [current, current + 1] {
                let Ok(frozen) = inner.frozen(epoch, now) else {
                    continue;
                };
                let missing = |keys: Vec<[u8; 32]>, wanted: Wanted| {
                    keys.into_iter()
                        .filter_map(|k| peers.iter().find(|(_, key)| *key == k))
                        .map(|(url, key)| (epoch, url.clone(), *key, wanted))
                        .collect::<Vec<_>>()
                };
                asks.extend(missing(frozen.voting.missing_votes(), Wanted::Vote));
                asks.extend(missing(
                    frozen.voting.missing_endorsements(),
                    Wanted::Endorsement,
                ));
            }
        }
        let mut answers = Vec::new();
        for (epoch, url, key, wanted) in asks {
            let path = match wanted {
                Wanted::Vote => "vote",
                Wanted::Endorsement => "endorsement",
            };
            let Ok(response) = http.get(format!("{url}/{path}/{epoch}")).send().await else {
                continue;
            };
            if !response.status().is_success() {
                continue;
            }
            if let Ok(bytes) = read_body(response, funion_net::MAX_HTTP_BODY).await {
                answers.push((epoch, key, wanted, bytes));
            }
        }
        let mut inner = state.lock().expect("authority state");
        for (epoch, key, wanted, bytes) in answers {
            let Some(frozen) = inner.epochs.get_mut(&epoch) else {
                continue;
            };
            let taken = match wanted {
                Wanted::Vote => frozen.voting.handle_vote(&bytes),
                Wanted::Endorsement => Endorsement::from_bytes(&bytes)
                    .and_then(|e| frozen.voting.handle_endorsement(e)),
            };
            if let Err(error) = taken {
                let reason = error.to_string();
                if refused.insert((epoch, key, reason.clone())) {
                    tracing::warn!(epoch, authority = %hex::encode(key), %reason, "refused what an authority sent");
                }
            }
        }
        for (&epoch, frozen) in inner.epochs.iter_mut() {
            let was_sealed = frozen.voting.sealed().is_some();
            if let Err(error) = frozen.voting.handle_timeout(now >= frozen.deadline_ms) {
                let reason = error.to_string();
                if refused.insert((epoch, [0; 32], reason.clone())) {
                    tracing::warn!(epoch, %reason, "no consensus from the votes in");
                }
            }
            if !was_sealed && frozen.voting.sealed().is_some() {
                tracing::info!(
                    epoch,
                    nodes = frozen.voting.consensus().map_or(0, |d| d.nodes.len()),
                    "document sealed"
                );
            }
        }
        refused.retain(|(e, _, _)| e + 2 >= epoch_at(now, inner.parameters.epoch_ms));
    }
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
    // Past its time the vote freezes (if it can) before this one would
    // change it.
    if now >= inner.freeze_at(epoch) {
        let _ = inner.frozen(epoch, now);
    }
    if let Some(frozen) = inner.epochs.get(&epoch) {
        if matches!(frozen.nodes.get(&identity), Some(listed) if *listed == descriptor.node) {
            return (StatusCode::OK, "already in the frozen vote".into());
        }
        // The first epoch whose vote may still take it.
        let mut open = epoch + 1;
        while inner.epochs.contains_key(&open) || now >= inner.freeze_at(open) {
            open += 1;
        }
        return (
            StatusCode::CONFLICT,
            format!(
                "descriptor refused: the vote of epoch {epoch} is frozen; the first still open is epoch {open}"
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
    inner.epochs.retain(|&e, _| e + 2 >= current);
    (StatusCode::OK, "accepted".into())
}

/// One epoch's piece (vote, endorsement or sealed document), freezing the
/// vote first if its time has come; 503 with the reason while it is not
/// there.
fn piece(
    state: &Shared,
    epoch: u64,
    pick: impl Fn(&Voting) -> Result<Vec<u8>, String>,
) -> (StatusCode, Vec<u8>) {
    let mut inner = state.lock().expect("authority state");
    match inner.frozen(epoch, unix_ms()).and_then(|f| pick(&f.voting)) {
        Ok(bytes) => (StatusCode::OK, bytes),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.into_bytes()),
    }
}

async fn get_vote(State(state): State<Shared>, Path(epoch): Path<u64>) -> (StatusCode, Vec<u8>) {
    piece(&state, epoch, |voting| Ok(voting.own_vote().to_vec()))
}

async fn get_endorsement(
    State(state): State<Shared>,
    Path(epoch): Path<u64>,
) -> (StatusCode, Vec<u8>) {
    piece(&state, epoch, |voting| match voting.own_endorsement() {
        Some(endorsement) => endorsement.to_bytes().map_err(|e| e.to_string()),
        None => Err(format!(
            "not ready: no consensus yet, {} votes missing",
            voting.missing_votes().len()
        )),
    })
}

async fn get_document(
    State(state): State<Shared>,
    Path(epoch): Path<u64>,
) -> (StatusCode, Vec<u8>) {
    piece(&state, epoch, |voting| match voting.sealed() {
        Some(sealed) => Ok(sealed.to_vec()),
        None if voting.consensus().is_none() => Err(format!(
            "not ready: waiting for the votes of {} authorities",
            voting.missing_votes().len()
        )),
        None => Err(format!(
            "not ready: waiting for the endorsements of {} authorities",
            voting.missing_endorsements().len()
        )),
    })
}

async fn get_parameters(State(state): State<Shared>) -> (StatusCode, String) {
    let inner = state.lock().expect("authority state");
    match toml::to_string(&inner.parameters) {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
