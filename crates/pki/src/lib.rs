//! The network document: for each epoch, the nodes of the network (role,
//! mix layer, identity and link keys, addresses, Sphinx keys for this epoch
//! and the next) and the parameters everyone must agree on (delays, send
//! rate, packet geometry, bucket spacing, replica count).
//!
//! Nodes send each directory authority signed [`NodeDescriptor`]s; the
//! authorities exchange signed [`Vote`]s, each computes the same
//! [`consensus`] and endorses it, and the document is served with every
//! endorsement collected. Everyone else accepts a document only with a
//! threshold of valid endorsements from the authorities it trusts
//! ([`Trust`]). The encoding is canonical (postcard, in field order, nodes
//! sorted by ID), so the same document always has the same bytes.
//! [`Voting`] is the authority's side of one epoch, as a machine that
//! never awaits. Sans-I/O: time comes in as numbers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use funion_sphinx::kem::{Kem, XWing, X25519};
use funion_sphinx::{Geometry, NodeId};
use serde::{Deserialize, Serialize};

const DOCUMENT_LABEL: &[u8] = b"funion network document v1";
const DESCRIPTOR_LABEL: &[u8] = b"funion node descriptor v1";

mod voting;
pub use voting::{consensus, Vote, Voting};

/// Most endorsements a served document may carry.
pub const MAX_AUTHORITIES: usize = 32;

/// The directory authorities a node or client trusts, and how many of
/// them must endorse a document before it is believed: always a majority
/// or more, so two different documents for one epoch cannot both pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    keys: Vec<[u8; 32]>,
    threshold: usize,
}

impl Trust {
    /// Trusts `keys` (distinct Ed25519 public keys), needing `threshold`
    /// of them, or a bare majority when `None`.
    pub fn new(mut keys: Vec<[u8; 32]>, threshold: Option<usize>) -> Result<Self, Error> {
        let n = keys.len();
        if n == 0 || n > MAX_AUTHORITIES {
            return Err(Error::Invalid(format!(
                "{n} authorities: between 1 and {MAX_AUTHORITIES} are needed"
            )));
        }
        keys.sort();
        keys.dedup();
        if keys.len() != n {
            return Err(Error::Invalid("an authority key listed twice".into()));
        }
        if keys.iter().any(|k| VerifyingKey::from_bytes(k).is_err()) {
            return Err(Error::Invalid(
                "an authority key is not a curve point".into(),
            ));
        }
        let majority = n / 2 + 1;
        let threshold = threshold.unwrap_or(majority);
        if threshold < majority || threshold > n {
            return Err(Error::Invalid(format!(
                "a threshold of {threshold} of {n} authorities: it must be a majority ({majority}..={n})"
            )));
        }
        Ok(Trust { keys, threshold })
    }

    /// One authority, alone.
    pub fn single(key: [u8; 32]) -> Result<Self, Error> {
        Trust::new(vec![key], None)
    }

    /// The trusted keys, sorted.
    pub fn keys(&self) -> &[[u8; 32]] {
        &self.keys
    }

    /// How many endorsements a document needs.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Whether `key` is one of the trusted authorities.
    pub fn trusts(&self, key: &[u8; 32]) -> bool {
        self.keys.binary_search(key).is_ok()
    }
}

/// One authority's signature on a document's canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// The authority's Ed25519 public key.
    pub authority: [u8; 32],
    /// Its signature over the labelled document bytes.
    pub signature: Vec<u8>,
}

impl Endorsement {
    /// Encodes it for the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        encode(self)
    }

    /// Decodes one from the wire (not yet checked against a document).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        decode(bytes)
    }
}
/// What a node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Where clients enter: the first Sphinx hop and their reply queues.
    Gateway,
    /// One of the mix layers.
    Mix,
    /// Ends echoes and hands them to named services (the echo service and
    /// the Pigeonhole courier).
    Service,
    /// A Pigeonhole storage replica; its per-epoch KEM keys (listed as its
    /// Sphinx keys) open the envelopes clients address to it.
    Replica,
}

/// The KEM a network's Sphinx packets use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KemKind {
    /// ML-KEM-768 + X25519 (post-quantum hybrid).
    XWing,
    /// X25519 alone.
    X25519,
}

impl KemKind {
    /// The Sphinx geometry for this KEM.
    pub fn geometry(self, payload_len: usize, hops: usize) -> Result<Geometry, Error> {
        match self {
            KemKind::XWing => Geometry::new::<XWing>(payload_len, hops),
            KemKind::X25519 => Geometry::new::<X25519>(payload_len, hops),
        }
        .map_err(|e| Error::Invalid(format!("geometry: {e}")))
    }

    fn public_key_len(self) -> usize {
        match self {
            KemKind::XWing => XWing::PUBLIC_KEY_LEN,
            KemKind::X25519 => X25519::PUBLIC_KEY_LEN,
        }
    }
}

/// The parameters every participant must share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameters {
    /// Epoch length, milliseconds.
    pub epoch_ms: u64,
    /// How long after an epoch ends its Sphinx keys are still accepted, ms.
    pub grace_ms: u64,
    /// Mean per-hop mixing delay μ, microseconds.
    pub mean_delay_us: u64,
    /// Client send rate λ_s, packets per second, in thousandths.
    pub send_rate_millihertz: u64,
    /// Sphinx payload length, bytes.
    pub payload_len: u32,
    /// Sphinx hops (gateway, mix layers, service).
    pub hops: u8,
    /// Mix layers.
    pub layers: u8,
    /// The Sphinx KEM.
    pub kem: KemKind,
    /// Latency-bucket spacing Δ, microseconds.
    pub bucket_spacing_us: u64,
    /// Replicas holding each box.
    pub replicas: u8,
    /// The ledger, the provider and the price table.
    #[serde(default)]
    pub credits: Credits,
}

/// Most tickets one job can carry.
pub const MAX_PRICE: u32 = 64;

/// What jobs cost and where credits are kept (DESIGN "Credits").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credits {
    /// The ledger's base URL (`http://host:port`).
    pub ledger_url: String,
    /// A JSON-RPC URL of the chain the registry is on (clients may use
    /// their own node instead); empty when deposits are not on a chain.
    #[serde(default)]
    pub chain_rpc_url: String,
    /// The registry contract's address (`0x…`); empty when deposits are
    /// not on a chain.
    #[serde(default)]
    pub registry: String,
    /// The compute provider whose couriers this document lists; tickets
    /// are scoped to it.
    pub provider: String,
    /// Length of one credit period, seconds: a deposit's message limit is
    /// per period.
    pub period_s: u64,
    /// Tickets per (input class, output class) cell; a job carries exactly
    /// that many.
    pub prices: Vec<PriceCell>,
}

/// One cell of the price table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceCell {
    /// Input class, tokens.
    pub input_class: u32,
    /// Output class, items.
    pub output_class: u32,
    /// Tickets a job of this cell carries.
    pub tickets: u32,
}

impl Default for Credits {
    fn default() -> Self {
        Credits {
            ledger_url: String::new(),
            chain_rpc_url: String::new(),
            registry: String::new(),
            provider: "funion".into(),
            period_s: 24 * 3600,
            prices: Credits::standard_prices(),
        }
    }
}

impl Credits {
    /// Seed 000's grid priced additively: input classes 256…4096 cost
    /// 1, 2, 4, 8, 16 tickets, output classes 256…2048 cost 1, 2, 4, 8.
    pub fn standard_prices() -> Vec<PriceCell> {
        let inputs = [(256, 1), (512, 2), (1024, 4), (2048, 8), (4096, 16)];
        let outputs = [(256, 1), (512, 2), (1024, 4), (2048, 8)];
        inputs
            .iter()
            .flat_map(|&(input_class, a)| {
                outputs.iter().map(move |&(output_class, b)| PriceCell {
                    input_class,
                    output_class,
                    tickets: a + b,
                })
            })
            .collect()
    }

    /// Every cell at the same price (tests, small networks).
    pub fn flat_prices(tickets: u32) -> Vec<PriceCell> {
        Credits::standard_prices()
            .into_iter()
            .map(|cell| PriceCell { tickets, ..cell })
            .collect()
    }

    /// Tickets a job of this cell carries, if the cell is priced.
    pub fn tickets_for(&self, input_class: u32, output_class: u32) -> Option<u32> {
        self.prices
            .iter()
            .find(|c| c.input_class == input_class && c.output_class == output_class)
            .map(|c| c.tickets)
    }

    /// The credit period at `unix_s` seconds.
    pub fn period_at(&self, unix_s: u64) -> u64 {
        unix_s / self.period_s.max(1)
    }

    fn check(&self) -> Result<(), Error> {
        if self.period_s == 0 {
            return Err(Error::Invalid("the credit period must be positive".into()));
        }
        if self
            .prices
            .iter()
            .any(|c| c.tickets == 0 || c.tickets > MAX_PRICE)
        {
            return Err(Error::Invalid(format!(
                "every price must be 1..={MAX_PRICE} tickets"
            )));
        }
        Ok(())
    }
}

impl Parameters {
    /// The paper's defaults: μ = 0.2 s, λ_s = 2.5/s, 30,000-byte payloads,
    /// 5 hops over 3 layers, X-Wing, Δ = 0.2 s, K = 2, 20-minute epochs.
    pub fn paper() -> Self {
        Parameters {
            epoch_ms: 20 * 60 * 1000,
            grace_ms: 2 * 60 * 1000,
            mean_delay_us: 200_000,
            send_rate_millihertz: 2_500,
            payload_len: 30_000,
            hops: 5,
            layers: 3,
            kem: KemKind::XWing,
            bucket_spacing_us: 200_000,
            replicas: 2,
            credits: Credits::default(),
        }
    }

    /// Millisecond-scale delays for tests and `--fast` networks.
    pub fn fast() -> Self {
        Parameters {
            mean_delay_us: 2_000,
            send_rate_millihertz: 200_000,
            bucket_spacing_us: 5_000,
            ..Parameters::paper()
        }
    }

    /// The packet geometry these parameters define.
    pub fn geometry(&self) -> Result<Geometry, Error> {
        self.kem
            .geometry(self.payload_len as usize, self.hops as usize)
    }

    /// λ_s in packets per second.
    pub fn send_rate(&self) -> f64 {
        self.send_rate_millihertz as f64 / 1000.0
    }

    fn check(&self) -> Result<(), Error> {
        self.geometry()?;
        self.credits.check()?;
        if self.epoch_ms == 0 || self.grace_ms > self.epoch_ms {
            return Err(Error::Invalid(
                "epoch must be positive and longer than the grace period".into(),
            ));
        }
        if self.layers == 0 || self.hops != self.layers + 2 {
            return Err(Error::Invalid(
                "hops must be the mix layers plus gateway and service".into(),
            ));
        }
        if self.send_rate_millihertz == 0 || self.mean_delay_us == 0 {
            return Err(Error::Invalid(
                "send rate and mean delay must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// A Sphinx public key for one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochKey {
    /// The epoch the key is for.
    pub epoch: u64,
    /// The KEM public key.
    pub public_key: Vec<u8>,
}

/// One node as the document lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Human-readable name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Mix layer (1..=layers) for mixes, 0 otherwise.
    pub layer: u8,
    /// Ed25519 identity key; also the node's ID in Sphinx commands.
    pub identity_key: [u8; 32],
    /// Noise static key (X25519) its links authenticate with.
    pub link_key: [u8; 32],
    /// Where it listens (`host:port`).
    pub addresses: Vec<String>,
    /// Sphinx public keys, for this epoch and the next.
    pub sphinx_keys: Vec<EpochKey>,
    /// The models its compute courier serves (service nodes only; empty
    /// elsewhere).
    pub models: Vec<ModelEntry>,
    /// Whether its compute courier takes fast-path jobs (the input inside
    /// the dispatch, the output home through a SURB it holds) besides the
    /// store and serial paths every compute courier takes.
    pub fast_path: bool,
}

/// What a model does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModelTask {
    /// Generates tokens (chat, completions).
    Generate,
    /// Embeds text as a vector.
    Embed,
}

/// One model a compute courier serves, as it publishes it: enough for a
/// client to tokenize locally with the very same tokenizer and template,
/// to keep within the context, and to choose a latency bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// The name clients ask for.
    pub name: String,
    /// What it does.
    pub task: ModelTask,
    /// SHA-256 of the tokenizer's canonical JSON (see
    /// `funion_inference::TextTokenizer::digest`); `None` where the courier
    /// has no local tokenizer (an upstream server).
    pub tokenizer_digest: Option<[u8; 32]>,
    /// SHA-256 of the chat template's source, where the model has one.
    pub template_digest: Option<[u8; 32]>,
    /// Longest prompt plus output, in tokens.
    pub context: u32,
    /// Embedding dimensions (embedding models), else 0.
    pub dimensions: u32,
    /// Compute time measured by the courier when it loaded the model, per
    /// input class.
    pub timings: Vec<ClassTiming>,
    /// Longest a fetched job waits for the rest of its batch, in ms.
    pub batch_wait_ms: u32,
}

/// A model's measured speed for one input class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassTiming {
    /// The input class (tokens).
    pub input_class: u32,
    /// Time to take in a prompt of the whole class, in µs.
    pub prefill_us: u64,
    /// Time per generated token after it, in µs (0 for embeddings).
    pub per_token_us: u64,
}

/// Most models one node may list.
pub const MAX_MODELS: usize = 64;
/// Longest model name.
pub const MAX_MODEL_NAME: usize = 128;

impl ModelEntry {
    /// The compute time this model needs for a job of `input_class` that
    /// generates `output_tokens` tokens, by its published timings (the
    /// smallest listed class at least as large, else the largest), in µs.
    pub fn compute_us(&self, input_class: u32, output_tokens: u32) -> Option<u64> {
        let timing = self
            .timings
            .iter()
            .filter(|t| t.input_class >= input_class)
            .min_by_key(|t| t.input_class)
            .or_else(|| self.timings.iter().max_by_key(|t| t.input_class))?;
        Some(
            timing
                .prefill_us
                .saturating_add(timing.per_token_us.saturating_mul(u64::from(output_tokens))),
        )
    }

    fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > MAX_MODEL_NAME {
            return Err(format!("model name of {} bytes", self.name.len()));
        }
        if self.name.chars().any(|c| c.is_control()) {
            return Err("model name with a control character".into());
        }
        if self.timings.len() > 16 {
            return Err(format!(
                "model {}: {} timings",
                self.name,
                self.timings.len()
            ));
        }
        if self.context == 0 {
            return Err(format!("model {}: no context", self.name));
        }
        Ok(())
    }
}

impl NodeEntry {
    /// The node's ID as Sphinx commands name it.
    pub fn id(&self) -> NodeId {
        NodeId(self.identity_key)
    }

    /// The Sphinx public key for `epoch`, if listed.
    pub fn sphinx_key(&self, epoch: u64) -> Option<&[u8]> {
        self.sphinx_keys
            .iter()
            .find(|k| k.epoch == epoch)
            .map(|k| k.public_key.as_slice())
    }
}

/// A node's own statement of itself for an epoch, signed by its identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescriptor {
    /// The epoch this descriptor is for.
    pub epoch: u64,
    /// The node.
    pub node: NodeEntry,
}

/// A descriptor with its signature, as sent to the authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDescriptor {
    /// The canonical encoding of the descriptor.
    pub body: Vec<u8>,
    /// Ed25519 signature by the node's identity key.
    pub signature: Vec<u8>,
}

impl NodeDescriptor {
    /// Signs with the node's identity key, which must be the one listed.
    pub fn sign(&self, identity: &SigningKey) -> Result<Vec<u8>, Error> {
        if identity.verifying_key().to_bytes() != self.node.identity_key {
            return Err(Error::Invalid("descriptor signed by another key".into()));
        }
        let body = encode(self)?;
        let signature = identity
            .sign(&labelled(DESCRIPTOR_LABEL, &body))
            .to_bytes()
            .to_vec();
        encode(&SignedDescriptor { body, signature })
    }

    /// Decodes and checks a signed descriptor against the key it names.
    pub fn verify(bytes: &[u8]) -> Result<NodeDescriptor, Error> {
        let signed: SignedDescriptor = decode(bytes)?;
        let descriptor: NodeDescriptor = decode(&signed.body)?;
        check_signature(
            &descriptor.node.identity_key,
            DESCRIPTOR_LABEL,
            &signed.body,
            &signed.signature,
        )?;
        Ok(descriptor)
    }
}

/// The network for one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkDocument {
    /// The epoch.
    pub epoch: u64,
    /// Shared parameters.
    pub parameters: Parameters,
    /// Every node, sorted by identity key.
    pub nodes: Vec<NodeEntry>,
}

/// A document with its endorsements, as served over HTTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SignedDocument {
    body: Vec<u8>,
    endorsements: Vec<Endorsement>,
}

impl NetworkDocument {
    /// Builds a document, sorting nodes and checking it makes sense.
    pub fn new(
        epoch: u64,
        parameters: Parameters,
        mut nodes: Vec<NodeEntry>,
    ) -> Result<Self, Error> {
        nodes.sort_by_key(|n| n.identity_key);
        let document = NetworkDocument {
            epoch,
            parameters,
            nodes,
        };
        document.check()?;
        Ok(document)
    }

    /// This authority's endorsement of the document.
    pub fn endorse(&self, authority: &SigningKey) -> Result<Endorsement, Error> {
        self.check()?;
        let body = encode(self)?;
        Ok(Endorsement {
            authority: authority.verifying_key().to_bytes(),
            signature: authority
                .sign(&labelled(DOCUMENT_LABEL, &body))
                .to_bytes()
                .to_vec(),
        })
    }

    /// Whether `endorsement` is a valid signature on this document.
    pub fn check_endorsement(&self, endorsement: &Endorsement) -> Result<(), Error> {
        check_signature(
            &endorsement.authority,
            DOCUMENT_LABEL,
            &encode(self)?,
            &endorsement.signature,
        )
    }

    /// The served encoding: the document with `endorsements` (each one
    /// authority's, sorted by key).
    pub fn seal(&self, endorsements: &[Endorsement]) -> Result<Vec<u8>, Error> {
        self.check()?;
        let mut endorsements = endorsements.to_vec();
        endorsements.sort_by_key(|e| e.authority);
        endorsements.dedup_by_key(|e| e.authority);
        if endorsements.len() > MAX_AUTHORITIES {
            return Err(Error::Invalid("too many endorsements".into()));
        }
        encode(&SignedDocument {
            body: encode(self)?,
            endorsements,
        })
    }

    /// The served encoding with one authority's endorsement.
    pub fn sign(&self, authority: &SigningKey) -> Result<Vec<u8>, Error> {
        self.seal(&[self.endorse(authority)?])
    }

    /// Decodes a served document, checks that at least the threshold of
    /// `trust`'s authorities endorsed it (endorsements from others, or
    /// that do not verify, count for nothing) and that it is for
    /// `current_epoch` (or the next one, published early).
    pub fn verify(bytes: &[u8], trust: &Trust, current_epoch: u64) -> Result<Self, Error> {
        let signed: SignedDocument = decode(bytes)?;
        if signed.endorsements.len() > MAX_AUTHORITIES {
            return Err(Error::Malformed("too many endorsements".into()));
        }
        let mut valid: Vec<[u8; 32]> = Vec::new();
        for endorsement in &signed.endorsements {
            if trust.trusts(&endorsement.authority)
                && !valid.contains(&endorsement.authority)
                && check_signature(
                    &endorsement.authority,
                    DOCUMENT_LABEL,
                    &signed.body,
                    &endorsement.signature,
                )
                .is_ok()
            {
                valid.push(endorsement.authority);
            }
        }
        if valid.len() < trust.threshold() {
            return Err(Error::TooFewEndorsements {
                valid: valid.len(),
                needed: trust.threshold(),
            });
        }
        let document: NetworkDocument = decode(&signed.body)?;
        if document.epoch < current_epoch {
            return Err(Error::Stale {
                document: document.epoch,
                current: current_epoch,
            });
        }
        if document.epoch > current_epoch + 1 {
            return Err(Error::FromTheFuture {
                document: document.epoch,
                current: current_epoch,
            });
        }
        document.check()?;
        Ok(document)
    }

    /// The node with this ID.
    pub fn node(&self, id: &NodeId) -> Option<&NodeEntry> {
        self.nodes
            .binary_search_by(|n| n.identity_key.cmp(&id.0))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// The nodes with this role.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.iter().filter(move |n| n.role == role)
    }

    /// The mixes of a layer.
    pub fn layer(&self, layer: u8) -> impl Iterator<Item = &NodeEntry> {
        self.nodes
            .iter()
            .filter(move |n| n.role == Role::Mix && n.layer == layer)
    }

    /// The node whose name is `name`.
    pub fn by_name(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        self.parameters.check()?;
        let key_len = self.parameters.kem.public_key_len();
        for pair in self.nodes.windows(2) {
            if pair[0].identity_key >= pair[1].identity_key {
                return Err(Error::Invalid("nodes unsorted or listed twice".into()));
            }
        }
        for node in &self.nodes {
            let bad = |why: &str| Err(Error::Invalid(format!("node {}: {why}", node.name)));
            let layer_ok = match node.role {
                Role::Mix => (1..=self.parameters.layers).contains(&node.layer),
                _ => node.layer == 0,
            };
            if !layer_ok {
                return bad("layer does not fit its role");
            }
            if VerifyingKey::from_bytes(&node.identity_key).is_err() {
                return bad("identity key is not a curve point");
            }
            if node.addresses.is_empty() {
                return bad("no address");
            }
            if !node.models.is_empty() && node.role != Role::Service {
                return bad("models listed by a node that is not a service node");
            }
            if node.models.len() > MAX_MODELS {
                return bad("too many models");
            }
            for (i, model) in node.models.iter().enumerate() {
                model.check().or_else(|why| bad(&why))?;
                if node.models[..i].iter().any(|m| m.name == model.name) {
                    return bad("a model listed twice");
                }
            }
            let Some(key) = node.sphinx_key(self.epoch) else {
                return bad("no Sphinx key for this epoch");
            };
            if node
                .sphinx_keys
                .iter()
                .any(|k| k.public_key.len() != key_len)
                || key.is_empty()
            {
                return bad("Sphinx key of the wrong length for the KEM");
            }
        }
        for layer in 1..=self.parameters.layers {
            if self.layer(layer).next().is_none() {
                return Err(Error::Invalid(format!("mix layer {layer} is empty")));
            }
        }
        Ok(())
    }
}

/// The epoch a time falls in, given the network's epoch length.
pub fn epoch_at(unix_ms: u64, epoch_ms: u64) -> u64 {
    unix_ms / epoch_ms.max(1)
}

/// When the document of `epoch` is frozen at the latest (Unix ms): half an
/// epoch before it starts. An authority takes descriptors for an epoch
/// until then (or until every node it admits has sent one, if sooner), and
/// the document it signs then is the epoch's for good.
pub fn document_cutoff_ms(epoch: u64, epoch_ms: u64) -> u64 {
    epoch.saturating_mul(epoch_ms).saturating_sub(epoch_ms / 2)
}

/// Until when a SURB that reached a service at `now` still works: its hops'
/// keys are those of the epoch it was made in, kept until the grace period
/// after that epoch ends. In the first `grace` of an epoch the SURB may have
/// been made in the one before, so the answer is then that grace's end;
/// later it is the end of this epoch's successor's grace. Any unit, the
/// same for all three.
pub fn surb_usable_until(now: u64, epoch_len: u64, grace: u64) -> u64 {
    let epoch_len = epoch_len.max(1);
    let start = now - now % epoch_len;
    if now < start + grace {
        start + grace
    } else {
        start + epoch_len + grace
    }
}

pub(crate) fn labelled(label: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + body.len());
    out.extend_from_slice(label);
    out.extend_from_slice(body);
    out
}

pub(crate) fn check_signature(
    key: &[u8; 32],
    label: &[u8],
    body: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let key = VerifyingKey::from_bytes(key).map_err(|_| Error::BadSignature)?;
    let signature = Signature::from_slice(signature).map_err(|_| Error::BadSignature)?;
    key.verify(&labelled(label, body), &signature)
        .map_err(|_| Error::BadSignature)
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(value).map_err(|e| Error::Malformed(e.to_string()))
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::Malformed("trailing bytes".into()));
    }
    Ok(value)
}

/// Why a document or descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bytes that do not decode.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A signature that does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A document without enough valid endorsements from trusted authorities.
    #[error("{valid} valid endorsements from trusted authorities; {needed} are needed")]
    TooFewEndorsements {
        /// Valid endorsements from distinct trusted authorities.
        valid: usize,
        /// The threshold.
        needed: usize,
    },
    /// A document for an epoch already over.
    #[error("stale document for epoch {document}; the current epoch is {current}")]
    Stale {
        /// The document's epoch.
        document: u64,
        /// The current epoch.
        current: u64,
    },
    /// A document more than one epoch ahead.
    #[error("document for epoch {document} is too far ahead of the current epoch {current}")]
    FromTheFuture {
        /// The document's epoch.
        document: u64,
        /// The current epoch.
        current: u64,
    },
    /// Contents that make no sense.
    #[error("invalid document: {0}")]
    Invalid(String),
}
