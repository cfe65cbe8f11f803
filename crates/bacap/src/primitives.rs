//! The primitives BACAP is built from, exactly as hpqc uses them: HKDF over
//! HMAC-BLAKE2b-512, AES-256-GCM-SIV, Ed25519 verification, and hpqc's blinded
//! Ed25519 (Tor-style key blinding with hpqc's own factor hash and nonce rule).
//!
//! They are public so the test-vector checker can test each one on its own;
//! the rest of funion should use the caps and streams instead.

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::Aes256GcmSiv;
use blake2::Blake2b512;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::{clamp_integer, Scalar};
use sha2::{Digest, Sha512, Sha512_256};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// HKDF (RFC 5869) over HMAC-BLAKE2b-512, in Go's argument order
/// `hkdf.New(hash, secret, salt, info)`. An empty salt means the all-zero
/// salt, as the RFC says. Fails only if `okm` is longer than 255 × 64 bytes.
pub fn hkdf_blake2b(secret: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<(), Error> {
    let salt = (!salt.is_empty()).then_some(salt);
    hkdf::SimpleHkdf::<Blake2b512>::new(salt, secret)
        .expand(info, okm)
        .map_err(|_| Error::Malformed {
            what: "HKDF output length",
            why: "longer than 255 blocks",
        })
}

/// Derives 32 bytes from a 32-byte secret with the salt as HKDF salt and an
/// empty info: how BACAP binds a context to a per-index key.
pub(crate) fn hkdf_32(secret: &[u8; 32], salt: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    hkdf_blake2b(secret, salt, &[], out.as_mut()).expect("32 bytes is a valid HKDF length");
    out
}

/// AES-256-GCM-SIV (RFC 8452) encryption; returns ciphertext ‖ 16-byte tag.
pub fn gcm_siv_seal(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    Aes256GcmSiv::new(key.into())
        .encrypt(
            nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM-SIV encryption of an in-memory buffer cannot fail")
}

/// AES-256-GCM-SIV (RFC 8452) decryption of ciphertext ‖ tag.
pub fn gcm_siv_open(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    Aes256GcmSiv::new(key.into())
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| Error::DecryptFailed)
}

/// Ed25519 verification as Go's `crypto/ed25519.Verify` does it: cofactorless,
/// canonical `S` required, the public key hashed as given.
pub fn verify_ed25519(
    public: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), Error> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(public).map_err(|_| Error::Malformed {
        what: "Ed25519 public key",
        why: "not a curve point",
    })?;
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    ed25519_dalek::Verifier::verify(&key, message, &signature).map_err(|_| Error::SignatureInvalid)
}

/// Decodes a 32-byte Edwards point, accepting exactly what Go's
/// `edwards25519.Point.SetBytes` accepts.
pub(crate) fn decode_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    CompressedEdwardsY(*bytes).decompress()
}

/// The scalar a blinding factor multiplies by: `clamp(SHA-512/256(factor)) mod L`.
pub(crate) fn blinding_scalar(factor: &[u8; 32]) -> Scalar {
    let mut digest: [u8; 32] = Sha512_256::digest(factor).into();
    let scalar = Scalar::from_bytes_mod_order(clamp_integer(digest));
    digest.zeroize();
    scalar
}

/// The Ed25519 secret scalar of a seed: `clamp(SHA-512(seed)[..32]) mod L`.
pub(crate) fn seed_scalar(seed: &[u8; 32]) -> Scalar {
    let mut digest: [u8; 64] = Sha512::digest(seed).into();
    let mut low = [0u8; 32];
    low.copy_from_slice(&digest[..32]);
    let scalar = Scalar::from_bytes_mod_order(clamp_integer(low));
    digest.zeroize();
    low.zeroize();
    scalar
}

/// The Ed25519 public key of a seed.
pub fn ed25519_public_key(seed: &[u8; 32]) -> [u8; 32] {
    let mut scalar = seed_scalar(seed);
    let public = EdwardsPoint::mul_base(&scalar).compress().to_bytes();
    scalar.zeroize();
    public
}

/// Blinds a public key: `blinding_scalar(factor) · P`. The result is the public
/// half of [`BlindedSigningKey::blind`] applied to `P`'s secret.
pub fn blind_public_key(public: &[u8; 32], factor: &[u8; 32]) -> Result<[u8; 32], Error> {
    let point = decode_point(public).ok_or(Error::Malformed {
        what: "Ed25519 public key",
        why: "not a curve point",
    })?;
    Ok(blind_point(&point, factor).compress().to_bytes())
}

pub(crate) fn blind_point(point: &EdwardsPoint, factor: &[u8; 32]) -> EdwardsPoint {
    let mut scalar = blinding_scalar(factor);
    let blinded = point * scalar;
    scalar.zeroize();
    blinded
}

/// A blinded Ed25519 signing key: a bare secret scalar (no seed), as hpqc's
/// `BlindedPrivateKey`.
pub struct BlindedSigningKey {
    scalar: Scalar,
    public: [u8; 32],
}

impl BlindedSigningKey {
    /// Blinds the key of an Ed25519 seed, as hpqc's `PrivateKey.Blind`.
    pub fn from_seed(seed: &[u8; 32], factor: &[u8; 32]) -> Self {
        let mut root = seed_scalar(seed);
        let key = Self::from_scalar(&root, factor);
        root.zeroize();
        key
    }

    /// Blinds again, as hpqc's `BlindedPrivateKey.Blind`.
    pub fn blind(&self, factor: &[u8; 32]) -> Self {
        Self::from_scalar(&self.scalar, factor)
    }

    pub(crate) fn from_scalar(secret: &Scalar, factor: &[u8; 32]) -> Self {
        let mut blind = blinding_scalar(factor);
        let scalar = blind * secret;
        blind.zeroize();
        let public = EdwardsPoint::mul_base(&scalar).compress().to_bytes();
        BlindedSigningKey { scalar, public }
    }

    /// The blinded public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Signs with hpqc's nonce rule: with `d = SHA-512(s)`, the nonce is
    /// `SHA-512(d[32..64] ‖ M ‖ d[33..64]) mod L`, so signatures match hpqc's
    /// byte for byte. The signature itself is plain Ed25519.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut secret = self.scalar.to_bytes();
        let mut salt: [u8; 64] = Sha512::digest(secret).into();
        let mut nonce_hash: [u8; 64] = Sha512::new()
            .chain_update(&salt[32..])
            .chain_update(message)
            .chain_update(&salt[33..])
            .finalize()
            .into();
        let mut nonce = Scalar::from_bytes_mod_order_wide(&nonce_hash);
        let r = EdwardsPoint::mul_base(&nonce).compress();
        let challenge = Scalar::from_hash(
            Sha512::new()
                .chain_update(r.as_bytes())
                .chain_update(self.public)
                .chain_update(message),
        );
        let s = challenge * self.scalar + nonce;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(r.as_bytes());
        signature[32..].copy_from_slice(s.as_bytes());
        secret.zeroize();
        salt.zeroize();
        nonce_hash.zeroize();
        nonce.zeroize();
        signature
    }
}

impl Drop for BlindedSigningKey {
    fn drop(&mut self) {
        self.scalar.zeroize();
    }
}

impl std::fmt::Debug for BlindedSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlindedSigningKey")
            .field("public", &hex32(&self.public))
            .finish_non_exhaustive()
    }
}

pub(crate) fn hex32(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
