//! The client's envelope to two intermediate replicas, and the replies.
//!
//! A fresh 32-byte data key (DEK) encrypts the request once
//! (AES-256-GCM-SIV); for each of the two intermediates the client
//! encapsulates to the replica's KEM key (X-Wing by default) and wraps the
//! DEK under a key derived from that shared secret. The courier forwards
//! each replica its own slot and the common body; it learns which replicas,
//! nothing else. Reads, writes and tombstones are padded to one size, and so
//! are the replies, which each replica seals back to the client under a key
//! derived from the DEK and its slot.
//!
//! Request layout (`Sizes::request_len` bytes; the courier gets it behind
//! its length, u32 LE, since a Sphinx payload is always padded to full size):
//! `version ‖ reply index ‖ intermediate 0 ‖ intermediate 1 ‖
//!  (KEM ciphertext ‖ wrapped DEK) × 2 ‖ AEAD(request key, inner)`;
//! inner: `kind ‖ box ID ‖ signature ‖ length (u32 LE) ‖ ciphertext, padded`;
//! a waiting read puts its wait (milliseconds, u32 LE) after the box ID.
//! Reply layout (`Sizes::reply_len` bytes, inside the SURB reply):
//! `version ‖ kind ‖ slot ‖ code ‖ envelope hash ‖ AEAD(reply key, inner)`;
//! inner: `code ‖ has box ‖ box ID ‖ signature ‖ length ‖ ciphertext, padded`.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use funion_bacap::primitives::{gcm_siv_open, gcm_siv_seal, hkdf_blake2b};
use funion_bacap::{BoxId, BoxSignature, SealedBox, BOX_ID_SIZE, SIGNATURE_SIZE};
use funion_sphinx::kem::Kem;
use funion_sphinx::NodeId;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::wire::ReplicaEnvelope;
use crate::ErrorCode;

/// The envelope format version.
pub const VERSION: u8 = 1;
/// Intermediate replicas per envelope.
pub const SLOTS: usize = 2;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const WRAPPED_KEY_LEN: usize = KEY_LEN + TAG_LEN;
/// Version, reply index, two replica IDs.
const REQUEST_HEADER_LEN: usize = 2 + SLOTS * 32;
const INNER_REQUEST_HEADER_LEN: usize = 1 + BOX_ID_SIZE + SIGNATURE_SIZE + 4;
/// The envelope's length in front of it.
const LENGTH_LEN: usize = 4;
const INNER_REPLY_HEADER_LEN: usize = 2 + BOX_ID_SIZE + SIGNATURE_SIZE + 4;
/// Version, kind, slot, code, envelope hash.
const REPLY_HEADER_LEN: usize = 4 + 32;
/// Each key is used for one message only, so a fixed nonce is safe (and
/// GCM-SIV tolerates reuse anyway: a resent envelope is byte-identical).
const ZERO_NONCE: [u8; 12] = [0; 12];
const KDF_SALT: &[u8] = b"funion pigeonhole v1";

const KIND_READ: u8 = 1;
const KIND_WRITE: u8 = 2;
const KIND_AWAIT: u8 = 3;
const REPLY_KIND_ANSWER: u8 = 1;
const REPLY_KIND_PENDING: u8 = 2;
const REPLY_KIND_REFUSED: u8 = 3;

/// Why an envelope or reply could not be built or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body capacity leaves no room for a box.
    #[error("an envelope does not fit in {0} bytes")]
    TooSmall(usize),
    /// A box larger than the envelope carries.
    #[error("box ciphertext of {len} bytes; at most {max} fit")]
    BoxTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A reply that is not for this envelope, or does not open.
    #[error("reply does not open: {0}")]
    BadReply(&'static str),
}

/// Every length, from the KEM and the bytes one request may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    kem_ciphertext: usize,
    max_box: usize,
}

impl Sizes {
    /// The largest boxes whose envelopes fit in `body_capacity` bytes with
    /// KEM ciphertexts of `kem_ciphertext_len` bytes.
    pub fn fit(kem_ciphertext_len: usize, body_capacity: usize) -> Result<Self, EnvelopeError> {
        let fixed = LENGTH_LEN
            + REQUEST_HEADER_LEN
            + SLOTS * (kem_ciphertext_len + WRAPPED_KEY_LEN)
            + INNER_REQUEST_HEADER_LEN
            + TAG_LEN;
        let max_box = body_capacity
            .checked_sub(fixed)
            .filter(|&m| m > TAG_LEN)
            .ok_or(EnvelopeError::TooSmall(body_capacity))?;
        Ok(Sizes {
            kem_ciphertext: kem_ciphertext_len,
            max_box,
        })
    }

    /// The sizes for one geometry: an envelope fills what one echo request
    /// carries beside its SURB.
    pub fn for_geometry(geometry: &funion_sphinx::Geometry) -> Result<Self, EnvelopeError> {
        let capacity = geometry
            .message_capacity()
            .checked_sub(geometry.surb_len())
            .ok_or(EnvelopeError::TooSmall(0))?;
        Self::fit(geometry.kem_ciphertext_len(), capacity)
    }

    /// The largest box ciphertext an envelope carries.
    pub fn max_box_ciphertext(&self) -> usize {
        self.max_box
    }

    /// The largest BACAP plaintext per box (the box adds a 16-byte tag).
    pub fn max_plaintext(&self) -> usize {
        self.max_box - TAG_LEN
    }

    fn slot_len(&self) -> usize {
        self.kem_ciphertext + WRAPPED_KEY_LEN
    }

    fn inner_request_len(&self) -> usize {
        INNER_REQUEST_HEADER_LEN + self.max_box
    }

    /// Bytes of every envelope, whatever it asks.
    pub fn request_len(&self) -> usize {
        REQUEST_HEADER_LEN + SLOTS * self.slot_len() + self.inner_request_len() + TAG_LEN
    }

    /// Bytes of a request to a courier: the envelope behind its length.
    pub fn body_len(&self) -> usize {
        LENGTH_LEN + self.request_len()
    }

    /// Bytes of a replica's sealed reply.
    pub fn sealed_reply_len(&self) -> usize {
        INNER_REPLY_HEADER_LEN + self.max_box + TAG_LEN
    }

    /// Bytes of every courier reply, whatever it says.
    pub fn reply_len(&self) -> usize {
        REPLY_HEADER_LEN + self.sealed_reply_len()
    }
}

/// What a client asks of a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read the box with this ID.
    Read(BoxId),
    /// Store this box (an empty ciphertext is a tombstone).
    Write(SealedBox),
    /// Read the box with this ID, and if it is not there yet, wait up to
    /// `wait_ms` for it to be written (the holders answer the moment it
    /// is; replicas cap the wait).
    Await {
        /// The box ID.
        id: BoxId,
        /// The longest wait, milliseconds.
        wait_ms: u32,
    },
}

impl Request {
    /// The box the request is about.
    pub fn box_id(&self) -> BoxId {
        match self {
            Request::Read(id) | Request::Await { id, .. } => *id,
            Request::Write(item) => item.id,
        }
    }
}

/// What a replica answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReply {
    /// The outcome.
    pub code: ErrorCode,
    /// The box read, for a successful read.
    pub found: Option<SealedBox>,
}

/// One intermediate replica as the client addresses it.
pub struct Recipient<'a, K: Kem> {
    /// Its node ID.
    pub id: NodeId,
    /// Its KEM public key for the current epoch.
    pub public_key: &'a K::PublicKey,
}

/// What a client keeps to open the replies to one envelope.
pub struct ReplyKeys {
    hash: [u8; 32],
    keys: [Zeroizing<[u8; 32]>; SLOTS],
}

/// What the courier says to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CourierAnswer {
    /// A replica's reply.
    Reply {
        /// Which intermediate answered.
        slot: u8,
        /// Its reply.
        reply: ReplicaReply,
    },
    /// Forwarded, no reply yet: ask again later with the same envelope.
    Pending,
    /// The courier or the replica refused the envelope before it could be
    /// answered privately.
    Refused(ErrorCode),
}

fn kdf(secret: &[u8], info: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    hkdf_blake2b(secret, KDF_SALT, info, out.as_mut()).expect("32 bytes is a valid HKDF length");
    out
}

fn reply_key(dek: &[u8], slot: u8) -> Zeroizing<[u8; KEY_LEN]> {
    kdf(dek, &[b"reply".as_slice(), &[slot]].concat())
}

fn wrap_key(shared: &[u8], slot: u8, ciphertext: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    kdf(
        shared,
        &[b"dek wrap".as_slice(), &[slot], ciphertext].concat(),
    )
}

/// BLAKE2b-256 of an envelope without its reply index: what the courier
/// de-duplicates on, so a client may ask for the other reply of the same
/// envelope.
fn envelope_hash(bytes: &[u8]) -> [u8; 32] {
    let mut hash = Blake2b::<U32>::new();
    hash.update(&bytes[..1]);
    hash.update(&bytes[2..]);
    hash.finalize().into()
}

fn write_box(out: &mut [u8], item: &SealedBox) {
    out[..BOX_ID_SIZE].copy_from_slice(&item.id.0);
    out[BOX_ID_SIZE..BOX_ID_SIZE + SIGNATURE_SIZE].copy_from_slice(&item.signature.0);
    let at = BOX_ID_SIZE + SIGNATURE_SIZE;
    out[at..at + 4].copy_from_slice(&(item.ciphertext.len() as u32).to_le_bytes());
    out[at + 4..at + 4 + item.ciphertext.len()].copy_from_slice(&item.ciphertext);
}

fn read_box(bytes: &[u8], max_box: usize) -> Result<SealedBox, ErrorCode> {
    let at = BOX_ID_SIZE + SIGNATURE_SIZE;
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    if len > max_box {
        return Err(ErrorCode::Malformed);
    }
    Ok(SealedBox {
        id: BoxId(bytes[..BOX_ID_SIZE].try_into().expect("32 bytes")),
        signature: BoxSignature(bytes[BOX_ID_SIZE..at].try_into().expect("64 bytes")),
        ciphertext: bytes[at + 4..at + 4 + len].to_vec(),
    })
}

/// Seals `request` to two intermediate replicas. `reply_index` says which
/// replica's reply the client would rather have. Returns the body of a
/// request to a courier (the envelope behind its length) and the keys its
/// replies open with.
pub fn seal<K: Kem, R: RngCore + CryptoRng>(
    sizes: &Sizes,
    recipients: [Recipient<'_, K>; SLOTS],
    reply_index: u8,
    request: &Request,
    rng: &mut R,
) -> Result<(Vec<u8>, ReplyKeys), EnvelopeError> {
    assert_eq!(
        K::CIPHERTEXT_LEN,
        sizes.kem_ciphertext,
        "sizes for another KEM"
    );
    let mut inner = Zeroizing::new(vec![0u8; sizes.inner_request_len()]);
    match request {
        Request::Read(id) => {
            inner[0] = KIND_READ;
            inner[1..1 + BOX_ID_SIZE].copy_from_slice(&id.0);
        }
        Request::Await { id, wait_ms } => {
            inner[0] = KIND_AWAIT;
            inner[1..1 + BOX_ID_SIZE].copy_from_slice(&id.0);
            inner[1 + BOX_ID_SIZE..5 + BOX_ID_SIZE].copy_from_slice(&wait_ms.to_le_bytes());
        }
        Request::Write(item) => {
            if item.ciphertext.len() > sizes.max_box {
                return Err(EnvelopeError::BoxTooLarge {
                    len: item.ciphertext.len(),
                    max: sizes.max_box,
                });
            }
            inner[0] = KIND_WRITE;
            write_box(&mut inner[1..], item);
        }
    }
    let mut dek = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill_bytes(dek.as_mut());
    let mut out = Vec::with_capacity(sizes.body_len());
    out.extend_from_slice(&(sizes.request_len() as u32).to_le_bytes());
    out.push(VERSION);
    out.push(reply_index % SLOTS as u8);
    for recipient in &recipients {
        out.extend_from_slice(&recipient.id.0);
    }
    for (slot, recipient) in recipients.iter().enumerate() {
        let mut ciphertext = vec![0u8; K::CIPHERTEXT_LEN];
        let shared = K::encapsulate(recipient.public_key, rng, &mut ciphertext);
        let key = wrap_key(shared.as_ref(), slot as u8, &ciphertext);
        out.extend_from_slice(&ciphertext);
        out.extend_from_slice(&gcm_siv_seal(&key, &ZERO_NONCE, &[], dek.as_ref()));
    }
    let aad = request_aad(&out[LENGTH_LEN..LENGTH_LEN + REQUEST_HEADER_LEN]);
    let request_key = kdf(dek.as_ref(), b"request");
    out.extend_from_slice(&gcm_siv_seal(&request_key, &ZERO_NONCE, &aad, &inner));
    debug_assert_eq!(out.len(), sizes.body_len());
    let keys = ReplyKeys {
        hash: envelope_hash(&out[LENGTH_LEN..]),
        keys: [reply_key(dek.as_ref(), 0), reply_key(dek.as_ref(), 1)],
    };
    Ok((out, keys))
}

/// The request's AAD: the header without the reply index, so the courier
/// cannot redirect the envelope to other replicas.
fn request_aad(header: &[u8]) -> Vec<u8> {
    let mut aad = vec![header[0]];
    aad.extend_from_slice(&header[2..REQUEST_HEADER_LEN]);
    aad
}

/// An envelope as the courier sees it.
#[derive(Debug)]
pub struct CourierEnvelope<'a> {
    bytes: &'a [u8],
    sizes: Sizes,
}

impl<'a> CourierEnvelope<'a> {
    /// Takes the envelope from a courier request's body (trailing padding
    /// is ignored) and checks its length and version: nothing else is
    /// visible to a courier.
    pub fn parse(sizes: &Sizes, body: &'a [u8]) -> Result<Self, ErrorCode> {
        let len = body
            .get(..LENGTH_LEN)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or(ErrorCode::WrongSize)?;
        if len != sizes.request_len() {
            return Err(ErrorCode::WrongSize);
        }
        let bytes = body
            .get(LENGTH_LEN..LENGTH_LEN + len)
            .ok_or(ErrorCode::WrongSize)?;
        if bytes[0] != VERSION || usize::from(bytes[1]) >= SLOTS {
            return Err(ErrorCode::Malformed);
        }
        Ok(CourierEnvelope {
            bytes,
            sizes: *sizes,
        })
    }

    /// What the courier de-duplicates on.
    pub fn hash(&self) -> [u8; 32] {
        envelope_hash(self.bytes)
    }

    /// Which replica's reply the client prefers.
    pub fn reply_index(&self) -> u8 {
        self.bytes[1]
    }

    /// The two intermediate replicas.
    pub fn intermediates(&self) -> [NodeId; SLOTS] {
        let id = |i: usize| NodeId(self.bytes[2 + 32 * i..34 + 32 * i].try_into().expect("32"));
        [id(0), id(1)]
    }

    /// What the courier forwards to the intermediate in `slot` (0 or 1;
    /// larger numbers wrap).
    pub fn for_replica(&self, slot: u8) -> ReplicaEnvelope {
        let slot = slot % SLOTS as u8;
        let slot_len = self.sizes.slot_len();
        let at = REQUEST_HEADER_LEN + usize::from(slot) * slot_len;
        let kem = self.sizes.kem_ciphertext;
        ReplicaEnvelope {
            hash: self.hash(),
            slot,
            header: request_aad(self.bytes),
            kem_ciphertext: self.bytes[at..at + kem].to_vec(),
            wrapped_key: self.bytes[at + kem..at + slot_len].to_vec(),
            body: self.bytes[REQUEST_HEADER_LEN + SLOTS * slot_len..].to_vec(),
        }
    }
}

/// What a replica keeps to seal its reply to the client.
pub struct ReplyKey {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl ReplicaEnvelope {
    /// Opens the envelope with the first of `secrets` that works (the
    /// current epoch's key, then the others). The replica must be the one
    /// the envelope names for its slot.
    pub fn open<K: Kem>(
        &self,
        sizes: &Sizes,
        own_id: &NodeId,
        secrets: &[&K::SecretKey],
    ) -> Result<(Request, ReplyKey), ErrorCode> {
        let slot = usize::from(self.slot);
        if slot >= SLOTS
            || self.header.len() != REQUEST_HEADER_LEN - 1
            || self.kem_ciphertext.len() != sizes.kem_ciphertext
            || self.wrapped_key.len() != WRAPPED_KEY_LEN
            || self.body.len() != sizes.inner_request_len() + TAG_LEN
        {
            return Err(ErrorCode::WrongSize);
        }
        if self.header[1 + 32 * slot..33 + 32 * slot] != own_id.0 {
            return Err(ErrorCode::UnknownReplica);
        }
        let dek = secrets
            .iter()
            .find_map(|secret| {
                let shared = K::decapsulate(secret, &self.kem_ciphertext).ok()?;
                let key = wrap_key(shared.as_ref(), self.slot, &self.kem_ciphertext);
                gcm_siv_open(&key, &ZERO_NONCE, &[], &self.wrapped_key)
                    .ok()
                    .map(Zeroizing::new)
            })
            .ok_or(ErrorCode::Undecryptable)?;
        let request_key = kdf(&dek, b"request");
        let inner = Zeroizing::new(
            gcm_siv_open(&request_key, &ZERO_NONCE, &self.header, &self.body)
                .map_err(|_| ErrorCode::Undecryptable)?,
        );
        let request = match inner[0] {
            KIND_READ => Request::Read(BoxId(
                inner[1..1 + BOX_ID_SIZE].try_into().expect("32 bytes"),
            )),
            KIND_AWAIT => Request::Await {
                id: BoxId(inner[1..1 + BOX_ID_SIZE].try_into().expect("32 bytes")),
                wait_ms: u32::from_le_bytes(
                    inner[1 + BOX_ID_SIZE..5 + BOX_ID_SIZE]
                        .try_into()
                        .expect("4 bytes"),
                ),
            },
            KIND_WRITE => Request::Write(read_box(&inner[1..], sizes.max_box)?),
            _ => return Err(ErrorCode::Malformed),
        };
        Ok((
            request,
            ReplyKey {
                key: reply_key(&dek, self.slot),
            },
        ))
    }
}

impl ReplyKey {
    /// Seals a reply for the client, always [`Sizes::sealed_reply_len`]
    /// bytes long.
    pub fn seal(&self, sizes: &Sizes, reply: &ReplicaReply) -> Vec<u8> {
        let mut inner = Zeroizing::new(vec![0u8; INNER_REPLY_HEADER_LEN + sizes.max_box]);
        inner[0] = reply.code as u8;
        if let Some(item) = reply
            .found
            .as_ref()
            .filter(|b| b.ciphertext.len() <= sizes.max_box)
        {
            inner[1] = 1;
            write_box(&mut inner[2..], item);
        }
        gcm_siv_seal(&self.key, &ZERO_NONCE, &[], &inner)
    }
}

/// The courier's reply to a client: a replica's sealed reply, an ACK
/// (`sealed` empty, `code` Ok), or a refusal (`sealed` empty, `code` says
/// why). Always [`Sizes::reply_len`] bytes.
pub fn courier_reply(
    sizes: &Sizes,
    hash: &[u8; 32],
    slot: u8,
    code: ErrorCode,
    sealed: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = vec![0u8; sizes.reply_len()];
    out[0] = VERSION;
    out[1] = match (sealed, code) {
        (Some(_), _) => REPLY_KIND_ANSWER,
        (None, ErrorCode::Ok) => REPLY_KIND_PENDING,
        (None, _) => REPLY_KIND_REFUSED,
    };
    out[2] = slot;
    out[3] = code as u8;
    out[4..36].copy_from_slice(hash);
    if let Some(sealed) = sealed.filter(|s| s.len() == sizes.sealed_reply_len()) {
        out[REPLY_HEADER_LEN..].copy_from_slice(sealed);
    }
    out
}

/// Changes which replica's reply a courier request prefers; the envelope
/// (and its hash) stay the same.
pub fn set_reply_index(body: &mut [u8], reply_index: u8) {
    if let Some(byte) = body.get_mut(LENGTH_LEN + 1) {
        *byte = reply_index % SLOTS as u8;
    }
}

/// The code of a courier's refusal, readable without the envelope's keys
/// (a refusal of an envelope the courier could not parse carries no hash).
pub fn refusal(bytes: &[u8]) -> Option<ErrorCode> {
    match bytes.get(..4)? {
        [VERSION, REPLY_KIND_REFUSED, _, code] => ErrorCode::from_byte(*code),
        _ => None,
    }
}

impl ReplyKeys {
    /// The envelope's hash (what the courier reports back).
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// Opens the courier's reply to this envelope. `bytes` may carry
    /// trailing padding (a SURB reply is a whole payload).
    pub fn open(&self, sizes: &Sizes, bytes: &[u8]) -> Result<CourierAnswer, EnvelopeError> {
        let bytes = bytes
            .get(..sizes.reply_len())
            .ok_or(EnvelopeError::BadReply("short"))?;
        if bytes[0] != VERSION {
            return Err(EnvelopeError::BadReply("version"));
        }
        if bytes[4..36] != self.hash {
            return Err(EnvelopeError::BadReply("for another envelope"));
        }
        let code = ErrorCode::from_byte(bytes[3]).ok_or(EnvelopeError::BadReply("code"))?;
        match bytes[1] {
            REPLY_KIND_PENDING => Ok(CourierAnswer::Pending),
            REPLY_KIND_REFUSED => Ok(CourierAnswer::Refused(code)),
            REPLY_KIND_ANSWER => {
                let slot = bytes[2];
                let key = self
                    .keys
                    .get(usize::from(slot))
                    .ok_or(EnvelopeError::BadReply("slot"))?;
                let inner = gcm_siv_open(key, &ZERO_NONCE, &[], &bytes[REPLY_HEADER_LEN..])
                    .map_err(|_| EnvelopeError::BadReply("does not decrypt"))?;
                let code = ErrorCode::from_byte(inner[0]).ok_or(EnvelopeError::BadReply("code"))?;
                let found = match inner[1] {
                    0 => None,
                    _ => Some(
                        read_box(&inner[2..], sizes.max_box)
                            .map_err(|_| EnvelopeError::BadReply("box length"))?,
                    ),
                };
                Ok(CourierAnswer::Reply {
                    slot,
                    reply: ReplicaReply { code, found },
                })
            }
            _ => Err(EnvelopeError::BadReply("kind")),
        }
    }
}
