//! Write and read capabilities: what they hold, their wire forms, and the
//! per-index box operations.

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::index::MessageBoxIndex;
use crate::primitives::{
    blind_point, decode_point, gcm_siv_seal, hex32, seed_scalar, BlindedSigningKey,
};
use crate::{
    BoxContent, BoxId, BoxSignature, Error, SealedBox, MESSAGE_BOX_INDEX_SIZE, READ_CAP_SIZE,
    WRITE_CAP_SIZE,
};

/// The right to write a stream of boxes: the Ed25519 root key and the first
/// index the holder may write.
///
/// Wire form (168 bytes): seed ‖ public key ‖ [`MessageBoxIndex`]. The public
/// key must be the one the seed derives.
#[derive(Clone)]
pub struct WriteCap {
    seed: Zeroizing<[u8; 32]>,
    secret: Zeroizing<Scalar>,
    public: [u8; 32],
    public_point: EdwardsPoint,
    index: MessageBoxIndex,
}

impl WriteCap {
    /// A new random write cap, drawing randomness in hpqc's order: the 32-byte
    /// Ed25519 seed, then the index's HKDF state and start.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let index = MessageBoxIndex::generate(rng);
        Self::from_parts(seed, index)
    }

    fn from_parts(seed: Zeroizing<[u8; 32]>, index: MessageBoxIndex) -> Self {
        let secret = Zeroizing::new(seed_scalar(&seed));
        let public_point = EdwardsPoint::mul_base(&secret);
        WriteCap {
            public: public_point.compress().to_bytes(),
            seed,
            secret,
            public_point,
            index,
        }
    }

    /// Parses the 168-byte wire form, rejecting a public key that is not a
    /// curve point or is not the seed's.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let malformed = |why| Error::Malformed {
            what: "write cap",
            why,
        };
        if bytes.len() != WRITE_CAP_SIZE {
            return Err(malformed("not 168 bytes"));
        }
        let stored: [u8; 32] = bytes[32..64].try_into().expect("32 bytes");
        if decode_point(&stored).is_none() {
            return Err(malformed("public key is not a curve point"));
        }
        let seed = Zeroizing::new(bytes[..32].try_into().expect("32 bytes"));
        let index = MessageBoxIndex::from_bytes(&bytes[64..])?;
        let cap = Self::from_parts(seed, index);
        if !bool::from(cap.public.ct_eq(&stored)) {
            return Err(malformed("public key is not the seed's"));
        }
        Ok(cap)
    }

    /// The 168-byte wire form. It holds the root secret: keep it zeroized.
    pub fn to_bytes(&self) -> Zeroizing<[u8; WRITE_CAP_SIZE]> {
        let mut out = Zeroizing::new([0u8; WRITE_CAP_SIZE]);
        out[..32].copy_from_slice(self.seed.as_ref());
        out[32..64].copy_from_slice(&self.public);
        out[64..].copy_from_slice(self.index.to_bytes().as_ref());
        out
    }

    /// The root public key.
    pub fn root_public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The first index this cap writes.
    pub fn index(&self) -> &MessageBoxIndex {
        &self.index
    }

    /// The read cap for the same stream, from the same first index.
    pub fn read_cap(&self) -> ReadCap {
        ReadCap {
            public: self.public,
            public_point: self.public_point,
            index: self.index.clone(),
        }
    }

    /// This cap re-based to another index, so that whoever receives it learns
    /// nothing of the boxes before. The index should lie on this cap's stream
    /// (see [`WriteCap::contains`]).
    pub fn with_index(&self, index: MessageBoxIndex) -> Self {
        WriteCap {
            index,
            ..self.clone()
        }
    }

    /// This cap with its ratchet re-seeded by `salt` (see
    /// [`MessageBoxIndex::mutate_kdf_state`]); the root key is kept.
    pub fn mutate_kdf_state(&self, salt: &[u8]) -> Self {
        self.with_index(self.index.mutate_kdf_state(salt))
    }

    /// Checks that `index` lies on this cap's stream, at or after its own.
    pub fn contains(&self, index: &MessageBoxIndex) -> Result<(), Error> {
        self.index.contains(index)
    }

    /// The signing key for the box at `index` in context `ctx`. Its public
    /// half is the box ID: `(f · a) · B`, which equals `f · A` because the
    /// root public key `A` is `a · B`, and costs a fixed-base multiplication
    /// instead of a variable-base one.
    fn box_key(&self, index: &MessageBoxIndex, ctx: &[u8]) -> BlindedSigningKey {
        BlindedSigningKey::from_scalar(&self.secret, &index.blinding_factor_for(ctx))
    }

    /// The box ID at `index` in context `ctx`.
    pub fn box_id(&self, index: &MessageBoxIndex, ctx: &[u8]) -> BoxId {
        BoxId(self.box_key(index, ctx).public_key())
    }

    /// Encrypts and signs `plaintext` as the box at `index` in context `ctx`:
    /// AES-256-GCM-SIV under `HKDF(E_i, ctx)` with the first 12 bytes of the
    /// box ID as nonce and the whole box ID as associated data, then a blinded
    /// Ed25519 signature over the ciphertext.
    pub fn seal(&self, index: &MessageBoxIndex, ctx: &[u8], plaintext: &[u8]) -> SealedBox {
        let key = self.box_key(index, ctx);
        let id = BoxId(key.public_key());
        let nonce: [u8; 12] = id.0[..12].try_into().expect("12 bytes");
        let ciphertext = gcm_siv_seal(&index.encryption_key_for(ctx), &nonce, &id.0, plaintext);
        let signature = BoxSignature(key.sign(&ciphertext));
        SealedBox {
            id,
            ciphertext,
            signature,
        }
    }

    /// Signs arbitrary bytes as the box at `index` (hpqc's `SignBox`), for
    /// callers that encrypt some other way.
    pub fn sign(&self, index: &MessageBoxIndex, ctx: &[u8], ciphertext: &[u8]) -> SealedBox {
        let key = self.box_key(index, ctx);
        SealedBox {
            id: BoxId(key.public_key()),
            ciphertext: ciphertext.to_vec(),
            signature: BoxSignature(key.sign(ciphertext)),
        }
    }

    /// The tombstone for the box at `index`: a signature over the empty string.
    pub fn tombstone(&self, index: &MessageBoxIndex, ctx: &[u8]) -> SealedBox {
        self.sign(index, ctx, &[])
    }
}

impl std::fmt::Debug for WriteCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteCap")
            .field("root_public_key", &hex32(&self.public))
            .field("idx64", &self.index.idx64())
            .finish_non_exhaustive()
    }
}

/// The right to find, verify and decrypt a stream of boxes from its index on.
///
/// Wire form (136 bytes): root public key ‖ [`MessageBoxIndex`]. The root
/// public key must be a curve point.
#[derive(Clone)]
pub struct ReadCap {
    public: [u8; 32],
    public_point: EdwardsPoint,
    index: MessageBoxIndex,
}

impl ReadCap {
    /// Parses the 136-byte wire form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let malformed = |why| Error::Malformed {
            what: "read cap",
            why,
        };
        if bytes.len() != READ_CAP_SIZE {
            return Err(malformed("not 136 bytes"));
        }
        let public: [u8; 32] = bytes[..32].try_into().expect("32 bytes");
        let public_point =
            decode_point(&public).ok_or(malformed("root public key is not a curve point"))?;
        let index = MessageBoxIndex::from_bytes(&bytes[32..32 + MESSAGE_BOX_INDEX_SIZE])?;
        Ok(ReadCap {
            public,
            public_point,
            index,
        })
    }

    /// The 136-byte wire form. It holds decryption keys: keep it zeroized.
    pub fn to_bytes(&self) -> Zeroizing<[u8; READ_CAP_SIZE]> {
        let mut out = Zeroizing::new([0u8; READ_CAP_SIZE]);
        out[..32].copy_from_slice(&self.public);
        out[32..].copy_from_slice(self.index.to_bytes().as_ref());
        out
    }

    /// The root public key.
    pub fn root_public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The first index this cap reads.
    pub fn index(&self) -> &MessageBoxIndex {
        &self.index
    }

    /// This cap re-based to another index (see [`WriteCap::with_index`]).
    pub fn with_index(&self, index: MessageBoxIndex) -> Self {
        ReadCap {
            index,
            ..self.clone()
        }
    }

    /// This cap with its ratchet re-seeded by `salt`; matches
    /// [`WriteCap::mutate_kdf_state`] with the same salt.
    pub fn mutate_kdf_state(&self, salt: &[u8]) -> Self {
        self.with_index(self.index.mutate_kdf_state(salt))
    }

    /// Checks that `index` lies on this cap's stream, at or after its own.
    pub fn contains(&self, index: &MessageBoxIndex) -> Result<(), Error> {
        self.index.contains(index)
    }

    /// The box ID at `index` in context `ctx` (hpqc's `BoxIDForContext`):
    /// the root key blinded by `HKDF(K_i, salt = ctx)`.
    pub fn box_id(&self, index: &MessageBoxIndex, ctx: &[u8]) -> BoxId {
        let factor = index.blinding_factor_for(ctx);
        BoxId(
            blind_point(&self.public_point, &factor)
                .compress()
                .to_bytes(),
        )
    }

    /// The box ID at `index` with no context: the root key blinded by `K_i`
    /// itself (hpqc's `DeriveMessageBoxID`).
    pub fn box_id_without_context(&self, index: &MessageBoxIndex) -> BoxId {
        BoxId(
            blind_point(&self.public_point, &index.blinding_factor)
                .compress()
                .to_bytes(),
        )
    }

    /// Opens the box at `index`: checks that `id` is the box this cap derives
    /// there, then the signature, then decrypts (or reports a tombstone).
    pub fn open(
        &self,
        index: &MessageBoxIndex,
        ctx: &[u8],
        id: &BoxId,
        ciphertext: &[u8],
        signature: &BoxSignature,
    ) -> Result<BoxContent, Error> {
        if !bool::from(self.box_id(index, ctx).0.ct_eq(&id.0)) {
            return Err(Error::BoxMismatch);
        }
        index.decrypt(ctx, id, ciphertext, signature)
    }
}

impl std::fmt::Debug for ReadCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCap")
            .field("root_public_key", &hex32(&self.public))
            .field("idx64", &self.index.idx64())
            .finish_non_exhaustive()
    }
}
