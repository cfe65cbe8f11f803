//! The message box index: a position in BACAP's one-way HKDF ratchet.

use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::primitives::{gcm_siv_open, hkdf_32, hkdf_blake2b};
use crate::{BoxContent, BoxId, BoxSignature, Error, MAX_CONTAINS_WALK, MESSAGE_BOX_INDEX_SIZE};

/// HKDF info that separates a re-seeded ratchet from ordinary advancement.
const MUTATE_KDF_STATE_LABEL: &[u8] = b"bacap-mutate-kdf-state-v1";

/// A position `i` in the ratchet: the index itself, the blinding factor `K_i`,
/// the encryption key `E_i`, and the HKDF state `H_{i+1}` the next step reads.
///
/// Wire form (104 bytes): `Idx64` little-endian ‖ `K_i` ‖ `E_i` ‖ `H_{i+1}`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MessageBoxIndex {
    idx64: u64,
    pub(crate) blinding_factor: [u8; 32],
    encryption_key: [u8; 32],
    hkdf_state: [u8; 32],
}

impl MessageBoxIndex {
    /// A fresh index with hpqc's starting rule: a random HKDF state, a start
    /// drawn as the sum of two random 62-bit integers (so at least 2^63
    /// indices remain and the start says little about how many came before),
    /// then one ratchet step.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut seed = MessageBoxIndex {
            idx64: 0,
            blinding_factor: [0; 32],
            encryption_key: [0; 32],
            hkdf_state: [0; 32],
        };
        rng.fill_bytes(&mut seed.hkdf_state);
        let mut start = [0u8; 16];
        rng.fill_bytes(&mut start);
        // Each half is a little-endian u64; clear the top two bits of its
        // most significant byte.
        start[7] &= 0x3f;
        start[15] &= 0x3f;
        let low = u64::from_le_bytes(start[..8].try_into().expect("8 bytes"));
        let high = u64::from_le_bytes(start[8..].try_into().expect("8 bytes"));
        seed.idx64 = low + high;
        start.zeroize();
        seed.next().expect("a start below 2^63 has a successor")
    }

    /// Parses the 104-byte wire form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != MESSAGE_BOX_INDEX_SIZE {
            return Err(Error::Malformed {
                what: "message box index",
                why: "not 104 bytes",
            });
        }
        let field = |at: usize| -> [u8; 32] { bytes[at..at + 32].try_into().expect("32 bytes") };
        Ok(MessageBoxIndex {
            idx64: u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            blinding_factor: field(8),
            encryption_key: field(40),
            hkdf_state: field(72),
        })
    }

    /// The 104-byte wire form. It holds secrets: keep it zeroized.
    pub fn to_bytes(&self) -> Zeroizing<[u8; MESSAGE_BOX_INDEX_SIZE]> {
        let mut out = Zeroizing::new([0u8; MESSAGE_BOX_INDEX_SIZE]);
        out[..8].copy_from_slice(&self.idx64.to_le_bytes());
        out[8..40].copy_from_slice(&self.blinding_factor);
        out[40..72].copy_from_slice(&self.encryption_key);
        out[72..].copy_from_slice(&self.hkdf_state);
        out
    }

    /// The position in the stream.
    pub fn idx64(&self) -> u64 {
        self.idx64
    }

    /// The index `to`, reached by ratchet steps from this one.
    ///
    /// Each step reads 96 bytes from `HKDF(secret = H, salt = "", info =
    /// LE64(i))` as `H_{i+1} ‖ E_{i+1} ‖ K_{i+1}`. Moving backwards is an
    /// error; `to == idx64` returns a copy.
    pub fn advance_to(&self, to: u64) -> Result<Self, Error> {
        if to < self.idx64 {
            return Err(Error::CannotRewind {
                from: self.idx64,
                to,
            });
        }
        let mut next = self.clone();
        let mut okm = Zeroizing::new([0u8; 96]);
        while next.idx64 < to {
            hkdf_blake2b(
                &next.hkdf_state,
                &[],
                &next.idx64.to_le_bytes(),
                okm.as_mut(),
            )
            .expect("96 bytes is a valid HKDF length");
            next.hkdf_state.copy_from_slice(&okm[..32]);
            next.encryption_key.copy_from_slice(&okm[32..64]);
            next.blinding_factor.copy_from_slice(&okm[64..]);
            next.idx64 += 1;
        }
        Ok(next)
    }

    /// The next index. After 2^64 - 1 there is none.
    pub fn next(&self) -> Result<Self, Error> {
        let to = self.idx64.checked_add(1).ok_or(Error::IndexExhausted)?;
        self.advance_to(to)
    }

    /// Re-seeds the ratchet with a salt, keeping `Idx64`: hpqc's
    /// `MutateKDFState`, the primitive behind contact vouchers. The result
    /// starts a fresh stream of boxes that cannot be found without the salt.
    pub fn mutate_kdf_state(&self, salt: &[u8]) -> Self {
        let mut okm = Zeroizing::new([0u8; 96]);
        hkdf_blake2b(&self.hkdf_state, salt, MUTATE_KDF_STATE_LABEL, okm.as_mut())
            .expect("96 bytes is a valid HKDF length");
        MessageBoxIndex {
            idx64: self.idx64,
            hkdf_state: okm[..32].try_into().expect("32 bytes"),
            encryption_key: okm[32..64].try_into().expect("32 bytes"),
            blinding_factor: okm[64..].try_into().expect("32 bytes"),
        }
    }

    /// The blinding factor for a context: `HKDF(K_i, salt = ctx)`.
    pub(crate) fn blinding_factor_for(&self, ctx: &[u8]) -> Zeroizing<[u8; 32]> {
        hkdf_32(&self.blinding_factor, ctx)
    }

    /// The AES-256-GCM-SIV key for a context: `HKDF(E_i, salt = ctx)`.
    pub(crate) fn encryption_key_for(&self, ctx: &[u8]) -> Zeroizing<[u8; 32]> {
        hkdf_32(&self.encryption_key, ctx)
    }

    /// Verifies and decrypts a box at this index (hpqc's `DecryptForContext`).
    ///
    /// This trusts `id`: it checks the signature under `id`, not that `id` is
    /// the box this index derives. Readers use [`crate::ReadCap::open`], which
    /// does check; without that, a tombstone signed for any box would pass.
    pub fn decrypt(
        &self,
        ctx: &[u8],
        id: &BoxId,
        ciphertext: &[u8],
        signature: &BoxSignature,
    ) -> Result<BoxContent, Error> {
        crate::verify_box(id, ciphertext, signature)?;
        if ciphertext.is_empty() {
            return Ok(BoxContent::Tombstone);
        }
        let key = self.encryption_key_for(ctx);
        let nonce: [u8; 12] = id.0[..12].try_into().expect("12 bytes");
        gcm_siv_open(&key, &nonce, &id.0, ciphertext).map(BoxContent::Message)
    }

    /// Checks that `other` lies on the stream that starts at this index: that
    /// stepping this index forward to `other.idx64()` gives the same 104
    /// bytes. Walks at most [`MAX_CONTAINS_WALK`] steps.
    pub(crate) fn contains(&self, other: &MessageBoxIndex) -> Result<(), Error> {
        if other.idx64 < self.idx64 {
            return Err(Error::NotOnStream);
        }
        if other.idx64 - self.idx64 > MAX_CONTAINS_WALK {
            return Err(Error::TooFarAhead);
        }
        if self.advance_to(other.idx64)? == *other {
            Ok(())
        } else {
            Err(Error::NotOnStream)
        }
    }
}

impl PartialEq for MessageBoxIndex {
    /// Constant-time comparison of the whole 104-byte state.
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes().ct_eq(other.to_bytes().as_ref()).into()
    }
}

impl Eq for MessageBoxIndex {}

impl std::fmt::Debug for MessageBoxIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageBoxIndex")
            .field("idx64", &self.idx64)
            .finish_non_exhaustive()
    }
}
