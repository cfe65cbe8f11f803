//! HCTR2 (Crowley, Huckleberry, Biggers 2021) over AES-256: the wide-block
//! tweakable SPRP that protects Sphinx payloads.
//!
//! Built from RustCrypto's `aes` (AES-NI, eight blocks at a time) and
//! `polyval` (CLMUL). A change to any bit of the input changes every bit of
//! the output unpredictably, which is what Sphinx's tag-then-encrypt payload
//! authentication needs. Checked against the published HCTR2 vectors.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes256, Block};
use polyval::universal_hash::UniversalHash;
use polyval::Polyval;
use zeroize::Zeroize;

const BLOCK: usize = 16;
/// Blocks of XCTR keystream made per AES call.
const BATCH: usize = 64;

/// HCTR2-AES256 under one key.
pub struct Hctr2 {
    aes: Aes256,
    hash_key: [u8; BLOCK],
    l: [u8; BLOCK],
}

impl Hctr2 {
    /// Key setup: the AES key schedule, `h = E(0)` and `L = E(1)`.
    pub fn new(key: &[u8; 32]) -> Self {
        let aes = Aes256::new(key.into());
        let mut hash_key = Block::default();
        aes.encrypt_block(&mut hash_key);
        let mut l = Block::default();
        l[0] = 1;
        aes.encrypt_block(&mut l);
        Hctr2 {
            aes,
            hash_key: hash_key.into(),
            l: l.into(),
        }
    }

    /// Encrypts `data` in place. `data` must hold at least 16 bytes.
    pub fn encrypt(&self, tweak: &[u8], data: &mut [u8]) {
        assert!(data.len() >= BLOCK, "HCTR2 needs at least one block");
        let (m, n) = data.split_at_mut(BLOCK);
        let mut mm = xor(m, &self.hash(tweak, n));
        let mut uu = Block::from(mm);
        self.aes.encrypt_block(&mut uu);
        let seed = xor(&xor(&mm, &uu), &self.l);
        self.xctr(&seed, n);
        let u = xor(&uu, &self.hash(tweak, n));
        m.copy_from_slice(&u);
        mm.zeroize();
    }

    /// Decrypts `data` in place. `data` must hold at least 16 bytes.
    pub fn decrypt(&self, tweak: &[u8], data: &mut [u8]) {
        assert!(data.len() >= BLOCK, "HCTR2 needs at least one block");
        let (u, v) = data.split_at_mut(BLOCK);
        let uu = xor(u, &self.hash(tweak, v));
        let mut mm = Block::from(uu);
        self.aes.decrypt_block(&mut mm);
        let seed = xor(&xor(&mm, &uu), &self.l);
        self.xctr(&seed, v);
        let m = xor(&mm, &self.hash(tweak, v));
        u.copy_from_slice(&m);
    }

    /// `H(T, M)`: POLYVAL over a length block, the padded tweak, and the
    /// message (padded with a 1 byte then zeros when it is not whole blocks).
    fn hash(&self, tweak: &[u8], message: &[u8]) -> [u8; BLOCK] {
        let mut polyval = Polyval::new(&self.hash_key.into());
        let partial = message.len() % BLOCK;
        let length = (tweak.len() as u128) * 8 * 2 + 2 + u128::from(partial != 0);
        polyval.update(&[Block::from(length.to_le_bytes())]);
        polyval.update_padded(tweak);
        let whole = message.len() - partial;
        polyval.update_padded(&message[..whole]);
        if partial != 0 {
            let mut last = Block::default();
            last[..partial].copy_from_slice(&message[whole..]);
            last[partial] = 1;
            polyval.update(&[last]);
        }
        polyval.finalize().into()
    }

    /// XCTR: XORs `E(S ⊕ LE128(i))` for i = 1, 2, … into `data`, a batch of
    /// blocks per AES call so the AES-NI/VAES pipelines stay full.
    fn xctr(&self, seed: &[u8; BLOCK], data: &mut [u8]) {
        let seed_low = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
        let seed_high: [u8; 8] = seed[8..].try_into().expect("8 bytes");
        let mut counter: u64 = 1;
        let mut keystream = [Block::default(); BATCH];
        for chunk in data.chunks_mut(BATCH * BLOCK) {
            let blocks = chunk.len().div_ceil(BLOCK);
            for block in &mut keystream[..blocks] {
                block[..8].copy_from_slice(&(seed_low ^ counter).to_le_bytes());
                block[8..].copy_from_slice(&seed_high);
                counter += 1;
            }
            self.aes.encrypt_blocks(&mut keystream[..blocks]);
            let mut whole = chunk.chunks_exact_mut(BLOCK);
            for (bytes, key) in (&mut whole).zip(&keystream) {
                let mixed = u128::from_ne_bytes(bytes.try_into().expect("16 bytes"))
                    ^ u128::from_ne_bytes(key.0);
                bytes.copy_from_slice(&mixed.to_ne_bytes());
            }
            let tail = whole.into_remainder();
            if !tail.is_empty() {
                for (byte, key) in tail.iter_mut().zip(keystream[blocks - 1].iter()) {
                    *byte ^= key;
                }
            }
        }
        for block in &mut keystream {
            block.zeroize();
        }
    }
}

impl Drop for Hctr2 {
    fn drop(&mut self) {
        self.hash_key.zeroize();
        self.l.zeroize();
    }
}

fn xor(a: &[u8], b: &[u8]) -> [u8; BLOCK] {
    let mut out = [0u8; BLOCK];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}
