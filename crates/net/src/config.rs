//! Config files (TOML) and the keys a node derives from its one secret seed.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use funion_pki::{Parameters, Role};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// One node's config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// Name in the network document.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Mix layer (1..) for mixes, 0 otherwise.
    pub layer: u8,
    /// Address to listen on for links, `host:port`.
    pub listen: String,
    /// Address to serve Prometheus metrics on, if any.
    pub metrics_listen: Option<String>,
    /// The node's secret seed (hex, 32 bytes): identity, link and Sphinx keys
    /// all derive from it.
    pub secret_seed: SecretSeed,
    /// Where durable state (replay tags) lives.
    pub data_dir: PathBuf,
    /// The directory authorities the node trusts.
    pub authorities: Vec<AuthorityRef>,
    /// How many of them must endorse a document (a majority when unset).
    #[serde(default)]
    pub authority_threshold: Option<usize>,
    /// Replicas: how long a stored box lives, seconds.
    #[serde(default = "default_box_lifetime_s")]
    pub box_lifetime_s: u64,
    /// Couriers (service nodes): longest a client's SURB is held waiting
    /// for a replica before an ACK goes back, milliseconds.
    #[serde(default = "default_courier_hold_ms")]
    pub courier_hold_ms: u64,
    /// Service nodes: the compute courier beside the storage courier, if
    /// this node computes.
    #[serde(default)]
    pub compute: Option<ComputeFile>,
}

/// A compute courier's part of a service node's config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeFile {
    /// The models served.
    pub models: Vec<ModelFile>,
    /// Longest a fetched job waits for the rest of its bucket, ms.
    #[serde(default = "default_batch_window_ms")]
    pub batch_window_ms: u64,
    /// Most jobs in one batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Where the provider's nullifier set lives.
    #[serde(default)]
    pub nullifiers: NullifierFile,
}

/// Where a compute courier records the nullifiers of the tickets it takes.
/// One courier of a provider keeps the set (no `url`; `listen` to serve
/// it), the provider's others name it by `url`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullifierFile {
    /// Serve this courier's set to the provider's others, `host:port`. The
    /// keeper trusts whoever reaches it: bind it to an address only the
    /// provider's own couriers can reach.
    #[serde(default)]
    pub listen: Option<String>,
    /// Record through the keeper at this base URL instead.
    #[serde(default)]
    pub url: Option<String>,
}

/// One served model: a local folder, or an OpenAI-compatible upstream.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// The name clients ask for.
    pub name: String,
    /// A Hugging Face–style folder (config.json, safetensors, tokenizer.json)
    /// or a llama-family GGUF file (`*.gguf`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Base URL of an OpenAI-compatible server, instead of a folder.
    #[serde(default)]
    pub upstream: Option<String>,
    /// The upstream's name for the model (defaults to `name`).
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// For an upstream: `generate` or `embed`.
    #[serde(default)]
    pub task: Option<String>,
    /// For an upstream: `openai` (default) or `llama.cpp` (its own
    /// `/completion` route, which returns token IDs).
    #[serde(default)]
    pub flavor: Option<String>,
}

impl ModelFile {
    /// A model loaded from a local folder.
    pub fn folder(name: &str, path: PathBuf) -> Self {
        ModelFile {
            name: name.into(),
            path: Some(path),
            upstream: None,
            upstream_model: None,
            task: None,
            flavor: None,
        }
    }
}

impl Default for ComputeFile {
    fn default() -> Self {
        ComputeFile {
            models: Vec::new(),
            batch_window_ms: default_batch_window_ms(),
            max_batch: default_max_batch(),
            nullifiers: NullifierFile::default(),
        }
    }
}

fn default_batch_window_ms() -> u64 {
    200
}

fn default_max_batch() -> usize {
    32
}

fn default_box_lifetime_s() -> u64 {
    7 * 24 * 3600
}

fn default_courier_hold_ms() -> u64 {
    2_000
}

/// The authority's config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityFile {
    /// Address to serve HTTP on.
    pub listen: String,
    /// Secret seed of the signing key (hex, 32 bytes).
    pub secret_seed: SecretSeed,
    /// The identity keys (hex) of the nodes the operator admits; a
    /// descriptor from any other is refused.
    pub allowed_nodes: Vec<String>,
    /// How long after it starts (ms) the authority waits for every admitted
    /// node before it freezes a document whose cutoff is already past, at
    /// most a quarter of an epoch. A network that boots on a busy machine
    /// needs longer than the default; a document freezes as soon as every
    /// admitted node is in, so a long grace costs nothing then.
    #[serde(default = "default_boot_grace_ms")]
    pub boot_grace_ms: u64,
    /// Every directory authority of the network, this one included, whose
    /// votes and endorsements it collects; empty when it is alone.
    #[serde(default)]
    pub authorities: Vec<AuthorityRef>,
    /// How many endorsements a document needs (a majority when unset).
    #[serde(default)]
    pub authority_threshold: Option<usize>,
    /// How long after it freezes its vote (ms) an authority waits for
    /// every other authority's vote and endorsement before it goes on
    /// with a threshold of them, at most an eighth of an epoch.
    #[serde(default = "default_vote_window_ms")]
    pub vote_window_ms: u64,
    /// The network's parameters.
    pub parameters: Parameters,
}

/// The authority's boot grace when its config names none (ms).
pub const DEFAULT_BOOT_GRACE_MS: u64 = 10_000;

fn default_boot_grace_ms() -> u64 {
    DEFAULT_BOOT_GRACE_MS
}

/// The vote window when an authority's config names none (ms).
pub const DEFAULT_VOTE_WINDOW_MS: u64 = 10_000;

fn default_vote_window_ms() -> u64 {
    DEFAULT_VOTE_WINDOW_MS
}

/// A directory authority as a config names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityRef {
    /// Its base URL (`http://host:port`).
    pub url: String,
    /// Its Ed25519 public key (hex).
    pub key: String,
}

/// A client's config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// The directory authorities the client trusts.
    pub authorities: Vec<AuthorityRef>,
    /// How many of them must endorse a document (a majority when unset).
    #[serde(default)]
    pub authority_threshold: Option<usize>,
    /// Where this machine has the tokenizers (and chat templates) of the
    /// models it asks for: prompts are tokenized here, never by the
    /// network. `funion proxy` checks each against the digests the compute
    /// couriers publish.
    #[serde(default)]
    pub models: Vec<LocalModelFile>,
}

/// One model's tokenizer on the client's machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModelFile {
    /// The model's name in the network document.
    pub name: String,
    /// A GGUF file or a Hugging Face–style folder with `tokenizer.json`.
    pub path: PathBuf,
}

/// Reads and parses a TOML config.
pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("bad config {}: {e}", path.display()))
}

/// Writes a TOML config, readable by its owner only: configs hold seeds.
pub fn write<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_owner_only(path, toml::to_string_pretty(value)?.as_bytes())
}

/// Writes `bytes` to `path` (replacing what was there) with mode 0600:
/// into a new file beside it, synced, then renamed over it, so a reader
/// sees the old file or the whole new one, never a part.
pub fn write_owner_only(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let fail = |e: std::io::Error| anyhow::anyhow!("cannot write {}: {e}", path.display());
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary).map_err(fail)?;
    // The mode above applies to a new file only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
    }
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

/// A secret seed as a config holds it (hex): never shown by `Debug`, wiped
/// from memory when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretSeed(String);

impl SecretSeed {
    /// The seed's 32 bytes.
    pub fn bytes(&self) -> anyhow::Result<[u8; 32]> {
        hex32(&self.0).map_err(|_| anyhow::anyhow!("a secret seed must be 64 hex digits"))
    }

    /// The hex text, for writing it into a config.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretSeed {
    fn from(hex: String) -> Self {
        SecretSeed(hex)
    }
}

impl std::fmt::Debug for SecretSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSeed(<redacted>)")
    }
}

impl Drop for SecretSeed {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Parses 32 bytes of hex.
pub fn hex32(text: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("expected 64 hex digits"))
}

/// Derives a labelled 32-byte key from a seed (HKDF-SHA256).
pub fn derive(seed: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(b"funion node keys v1"), seed)
        .expand(label, &mut out)
        .expect("32 bytes is a valid HKDF length");
    out
}

/// A node's keys; the seed and link secret are wiped when dropped (the
/// identity key wipes itself). The identity and link keys derive from the
/// config's seed; the Sphinx keys are random per epoch, kept in an
/// [`EpochKeyStore`] (see [`NodeKeys::with_epoch_store`]) and erased after
/// their epoch, so a node seized later cannot unwrap what it mixed before.
pub struct NodeKeys {
    seed: [u8; 32],
    epochs: Option<EpochKeyStore>,
    /// Ed25519 identity (signs descriptors; its public key is the node ID).
    pub identity: SigningKey,
    /// Noise static secret.
    pub link_secret: [u8; 32],
}

impl NodeKeys {
    /// The keys a seed derives.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        NodeKeys {
            identity: SigningKey::from_bytes(&derive(&seed, b"identity")),
            link_secret: derive(&seed, b"link"),
            seed,
            epochs: None,
        }
    }

    /// These keys with their Sphinx keys drawn at random per epoch and
    /// kept in `dir` (a node's data directory), instead of derived.
    pub fn with_epoch_store(mut self, dir: &Path) -> Self {
        self.epochs = Some(EpochKeyStore::new(dir));
        self
    }

    /// The epoch key store, if the Sphinx keys are random.
    pub fn epoch_store(&self) -> Option<&EpochKeyStore> {
        self.epochs.as_ref()
    }

    /// The identity (public) key, which names the node, as hex.
    pub fn identity_hex(&self) -> String {
        hex::encode(self.identity.verifying_key().to_bytes())
    }

    /// The keys a config's seed derives.
    pub fn from_config(seed: &SecretSeed) -> anyhow::Result<Self> {
        Ok(NodeKeys::from_seed(seed.bytes()?))
    }

    /// The seed of the Sphinx key for `epoch`: from the epoch key store
    /// (drawn the first time, the same after a restart), or derived from
    /// the config's seed where there is none (tools and tests).
    pub fn sphinx_seed(&self, epoch: u64) -> anyhow::Result<[u8; 32]> {
        if let Some(store) = &self.epochs {
            return store.seed(epoch);
        }
        let mut label = b"sphinx".to_vec();
        label.extend_from_slice(&epoch.to_le_bytes());
        Ok(derive(&self.seed, &label))
    }
}

impl Drop for NodeKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seed);
        zeroize::Zeroize::zeroize(&mut self.link_secret);
    }
}

/// Random Sphinx key seeds, one file per epoch (`sphinx-{epoch}.seed`, 32
/// bytes, 0600) in a node's data directory: a restarted node keeps the keys
/// the frozen document lists, and [`EpochKeyStore::erase_before`] removes
/// those whose epoch and grace period are over.
#[derive(Clone, Debug)]
pub struct EpochKeyStore {
    dir: PathBuf,
}

impl EpochKeyStore {
    /// The store in `dir`.
    pub fn new(dir: &Path) -> Self {
        EpochKeyStore {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("sphinx-{epoch}.seed"))
    }

    /// The seed for `epoch` if it was drawn already.
    pub fn existing(&self, epoch: u64) -> anyhow::Result<Option<[u8; 32]>> {
        let path = self.path(epoch);
        match std::fs::read(&path) {
            Ok(mut bytes) => {
                let seed = <[u8; 32]>::try_from(bytes.as_slice()).ok();
                zeroize::Zeroize::zeroize(&mut bytes);
                match seed {
                    Some(seed) => Ok(Some(seed)),
                    // Torn by a crash before it was ever used (a seed is
                    // used only once its file is synced): draw again.
                    None => {
                        std::fs::remove_file(&path)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                        Ok(None)
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// The seed for `epoch`, drawn from the OS and written (synced, 0600)
    /// the first time.
    pub fn seed(&self, epoch: u64) -> anyhow::Result<[u8; 32]> {
        if let Some(seed) = self.existing(epoch)? {
            return Ok(seed);
        }
        use rand_core::RngCore;
        use std::io::Write;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.dir.display()))?;
        let mut seed = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut seed);
        let path = self.path(epoch);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(&seed)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Ok(seed)
            }
            // Drawn by another task in the meantime: that one counts.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                zeroize::Zeroize::zeroize(&mut seed);
                self.existing(epoch)?
                    .ok_or_else(|| anyhow::anyhow!("{}: vanished", path.display()))
            }
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// Erases the seeds of every epoch before `epoch`: overwritten with
    /// zeros, synced and removed. Returns the epochs erased.
    pub fn erase_before(&self, epoch: u64) -> anyhow::Result<Vec<u64>> {
        let mut erased = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(erased),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", self.dir.display())),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(old) = name
                .strip_prefix("sphinx-")
                .and_then(|n| n.strip_suffix(".seed"))
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|e| *e < epoch)
            else {
                continue;
            };
            let path = entry.path();
            let wipe = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut file| {
                    use std::io::Write;
                    file.write_all(&[0; 32])?;
                    file.sync_all()
                });
            wipe.and_then(|()| std::fs::remove_file(&path))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            erased.push(old);
        }
        erased.sort_unstable();
        Ok(erased)
    }
}
