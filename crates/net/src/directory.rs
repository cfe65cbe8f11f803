//! The directory from a node's side: the descriptor it publishes for an
//! epoch, and publishing it at start and before each epoch.

use funion_pki::{epoch_at, EpochKey, ModelEntry, NodeDescriptor, NodeEntry};
use funion_sphinx::kem::Kem;

use crate::config::{NodeFile, NodeKeys};
use crate::link;
use crate::unix_ms;

/// The descriptor this node publishes for `epoch`.
fn entry<K: Kem>(
    config: &NodeFile,
    keys: &NodeKeys,
    epoch: u64,
    models: &[ModelEntry],
) -> anyhow::Result<NodeEntry> {
    let sphinx_keys = [epoch, epoch + 1]
        .into_iter()
        .map(|e| {
            Ok(EpochKey {
                epoch: e,
                public_key: K::public_key_bytes(&K::public_key(&K::secret_from_seed(
                    &keys.sphinx_seed(e)?,
                ))),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(NodeEntry {
        name: config.name.clone(),
        role: config.role,
        layer: config.layer,
        identity_key: keys.identity.verifying_key().to_bytes(),
        link_key: link::public_link_key(&keys.link_secret),
        addresses: vec![config.listen.clone()],
        sphinx_keys,
        models: models.to_vec(),
        // Every compute courier serves the fast path's service too.
        fast_path: !models.is_empty(),
    })
}

/// Publishes this node's descriptor for `epoch` (its keys for `epoch` and
/// the next, and the models its compute courier serves) to every
/// authority; it is enough that a threshold of them take it.
pub async fn publish<K: Kem>(
    http: &reqwest::Client,
    config: &NodeFile,
    keys: &NodeKeys,
    epoch: u64,
    models: &[ModelEntry],
) -> anyhow::Result<()> {
    let descriptor = NodeDescriptor {
        epoch,
        node: entry::<K>(config, keys, epoch, models)?,
    };
    let body = descriptor.sign(&keys.identity)?;
    let authorities = crate::Authorities::new(&config.authorities, config.authority_threshold)?;
    let mut accepted = 0;
    let mut frozen = None;
    let mut refusals = Vec::new();
    // Authorities not reached yet (one may still be starting, as in a
    // network that boots at once): asked again for a while, and not at
    // all once a threshold took it and a few seconds went by.
    let mut unreached: Vec<&String> = authorities.urls().iter().collect();
    let started = std::time::Instant::now();
    for round in 0u64.. {
        let mut still = Vec::new();
        refusals.clear();
        for url in unreached {
            match post(http, url, body.clone()).await {
                Ok(()) => accepted += 1,
                Err(Refusal::Frozen(reason)) => frozen = Some(format!("{url}: {reason}")),
                Err(Refusal::Other(reason)) => refusals.push(format!("{url}: {reason}")),
                Err(Refusal::Unreached(reason)) => {
                    refusals.push(format!("{url}: {reason}"));
                    still.push(url);
                }
            }
        }
        unreached = still;
        let waited = started.elapsed();
        let enough = accepted >= authorities.trust().threshold();
        if unreached.is_empty()
            || waited >= UNREACHED_PATIENCE
            || (enough && waited >= UNREACHED_PATIENCE_ONCE_ENOUGH)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100 * (round + 1).min(10))).await;
    }
    // An authority that did not take it leaves the node out of its vote;
    // a threshold of the others is enough for the consensus to list it.
    if accepted >= authorities.trust().threshold() {
        if !refusals.is_empty() {
            tracing::warn!(epoch, refusals = %refusals.join("; "), "descriptor not taken by every authority");
        }
        return Ok(());
    }
    if let Some(reason) = frozen {
        return Err(Frozen { epoch, reason }.into());
    }
    anyhow::bail!(
        "the descriptor for epoch {epoch} reached {accepted} authorities, {} needed: {}",
        authorities.trust().threshold(),
        refusals.join("; ")
    )
}

/// How long a node keeps trying an authority it cannot reach.
const UNREACHED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);
/// ... once a threshold of the others took its descriptor.
const UNREACHED_PATIENCE_ONCE_ENOUGH: std::time::Duration = std::time::Duration::from_secs(3);

enum Refusal {
    Frozen(String),
    Other(String),
    /// No answer at all (not listening, timed out): worth another try.
    Unreached(String),
}

/// Sends a signed descriptor to one authority.
async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), Refusal> {
    let response = http
        .post(format!("{url}/descriptor"))
        .body(body)
        .send()
        .await
        .map_err(|e| Refusal::Unreached(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let said = crate::read_body(response, 4_096).await.unwrap_or_default();
    let reason = String::from_utf8_lossy(&said).to_string();
    Err(if status == reqwest::StatusCode::CONFLICT {
        Refusal::Frozen(reason)
    } else {
        Refusal::Other(format!("refused: {reason}"))
    })
}

/// The authority already froze the epoch's document, listing this node
/// otherwise or not at all: the node serves as that document says until
/// the next epoch's.
#[derive(Debug)]
pub struct Frozen {
    /// The epoch.
    pub epoch: u64,
    /// What the authority said.
    pub reason: String,
}

impl std::fmt::Display for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} already frozen: {}", self.epoch, self.reason)
    }
}

impl std::error::Error for Frozen {}

/// [`publish`], where a frozen document is no failure: it is logged, and
/// the node waits for an epoch it is in.
async fn publish_or_frozen<K: Kem>(
    http: &reqwest::Client,
    config: &NodeFile,
    keys: &NodeKeys,
    epoch: u64,
    models: &[ModelEntry],
) -> anyhow::Result<()> {
    match publish::<K>(http, config, keys, epoch, models).await {
        Err(error) if error.is::<Frozen>() => {
            tracing::warn!(%error, "descriptor not taken");
            Ok(())
        }
        other => other,
    }
}

/// Publishes this node's descriptors for the current epoch and the next,
/// and returns the current epoch. When an epoch ends while its descriptor
/// is on the way (the authority then refuses it as past), the node starts
/// over in the new epoch instead of stopping.
pub async fn publish_at_start<K: Kem>(
    http: &reqwest::Client,
    config: &NodeFile,
    keys: &NodeKeys,
    epoch_ms: u64,
    models: &[ModelEntry],
) -> anyhow::Result<u64> {
    let mut tries = 0;
    loop {
        let epoch = epoch_at(unix_ms(), epoch_ms);
        let published = match publish_or_frozen::<K>(http, config, keys, epoch, models).await {
            Ok(()) => publish_or_frozen::<K>(http, config, keys, epoch + 1, models).await,
            Err(error) => Err(error),
        };
        match published {
            Ok(()) => return Ok(epoch),
            Err(_) if tries < 3 && epoch_at(unix_ms(), epoch_ms) != epoch => tries += 1,
            Err(error) => return Err(error),
        }
    }
}
