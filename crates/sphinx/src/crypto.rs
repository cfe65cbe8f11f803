//! The per-hop key schedule and the header primitives: HKDF-SHA256 from the
//! KEM shared secret, HMAC-SHA256-128 over the header, AES-128-CTR over the
//! routing information.

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::geometry::{MAC_LEN, SPRP_KEY_LEN};

const KDF_INFO: &[u8] = b"funion sphinx v1 hop keys";

type Ctr = ctr::Ctr128BE<Aes128>;

/// Everything one hop derives from its shared secret.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct HopKeys {
    pub mac: [u8; 32],
    pub stream_key: [u8; 16],
    pub stream_iv: [u8; 16],
    pub payload: [u8; SPRP_KEY_LEN],
    pub replay_tag: [u8; 32],
}

impl HopKeys {
    /// `HKDF-SHA256(ikm = shared secret, info = label)`, 128 bytes split into
    /// the MAC key, the header stream key and IV, the payload key and the
    /// replay tag.
    pub fn derive(shared_secret: &[u8; 32]) -> Self {
        let mut okm = [0u8; 128];
        hkdf::Hkdf::<Sha256>::new(None, shared_secret)
            .expand(KDF_INFO, &mut okm)
            .expect("128 bytes is a valid HKDF-SHA256 length");
        let keys = HopKeys {
            mac: okm[..32].try_into().expect("32 bytes"),
            stream_key: okm[32..48].try_into().expect("16 bytes"),
            stream_iv: okm[48..64].try_into().expect("16 bytes"),
            payload: okm[64..96].try_into().expect("32 bytes"),
            replay_tag: okm[96..].try_into().expect("32 bytes"),
        };
        okm.zeroize();
        keys
    }

    /// The header MAC over `version ‖ KEM ciphertext ‖ routing info`.
    pub fn header_mac(
        &self,
        version: &[u8],
        kem_ciphertext: &[u8],
        routing: &[u8],
    ) -> [u8; MAC_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac).expect("any key length");
        mac.update(version);
        mac.update(kem_ciphertext);
        mac.update(routing);
        let full = mac.finalize().into_bytes();
        full[..MAC_LEN].try_into().expect("16 bytes")
    }

    /// XORs this hop's routing keystream into `buffer`, from its start.
    pub fn apply_keystream(&self, buffer: &mut [u8]) {
        Ctr::new(&self.stream_key.into(), &self.stream_iv.into()).apply_keystream(buffer);
    }

    /// This hop's routing keystream, `len` bytes of it.
    pub fn keystream(&self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.apply_keystream(&mut out);
        out
    }
}

pub(crate) fn xor_into(target: &mut [u8], source: &[u8]) {
    for (t, s) in target.iter_mut().zip(source) {
        *t ^= s;
    }
}
