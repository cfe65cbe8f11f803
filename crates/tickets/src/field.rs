//! Field elements on the wire, identities, scopes and the secret a double
//! spend gives away.

use ark_ff::PrimeField;
use rand_core::{CryptoRng, RngCore};
use rln::prelude::{
    compute_id_secret, hash_to_field_le, CanonicalDeserialize, CanonicalSerialize, Fr, Hasher,
    PoseidonHash, SecretFr,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::TicketError;

/// Bytes of an identity secret.
pub const SECRET_LEN: usize = 32;

/// A BN254 scalar as 32 little-endian bytes (roots, commitments,
/// nullifiers, shares); shown as hex in JSON and logs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Scalar(pub [u8; 32]);

impl Scalar {
    pub(crate) fn from_fr(value: &Fr) -> Self {
        let mut out = [0u8; 32];
        value
            .serialize_compressed(&mut out[..])
            .expect("a scalar fits in 32 bytes");
        Scalar(out)
    }

    pub(crate) fn to_fr(self, what: &'static str) -> Result<Fr, TicketError> {
        Fr::deserialize_compressed(&self.0[..]).map_err(|_| TicketError::NotCanonical(what))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, TicketError> {
        let malformed = |detail: &str| TicketError::Malformed {
            what: "scalar hex",
            detail: detail.into(),
        };
        if text.len() != 64 || !text.is_ascii() {
            return Err(malformed("want 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| malformed("not hex"))?;
        }
        Ok(Scalar(out))
    }
}

impl std::fmt::Debug for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Scalar::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// A depositor's RLN identity: the secret `k`. Zeroized on drop; shown to
/// nobody but its owner (and to everybody once it double-spends).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Identity {
    secret: [u8; SECRET_LEN],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("commitment", &self.commitment())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh identity from `rng`.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut wide = [0u8; 64];
        rng.fill_bytes(&mut wide);
        let mut secret = Fr::from_le_bytes_mod_order(&wide);
        wide.zeroize();
        let out = Identity {
            secret: Scalar::from_fr(&secret).0,
        };
        secret.zeroize();
        out
    }

    /// The secret's 32 bytes (canonical little-endian), for the wallet.
    pub fn to_bytes(&self) -> [u8; SECRET_LEN] {
        self.secret
    }

    /// An identity from its secret's bytes; rejects non-canonical ones.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TicketError> {
        let secret: [u8; SECRET_LEN] = bytes.try_into().map_err(|_| TicketError::Malformed {
            what: "identity",
            detail: format!("{} bytes, want {SECRET_LEN}", bytes.len()),
        })?;
        Scalar(secret).to_fr("identity secret")?;
        Ok(Identity { secret })
    }

    pub(crate) fn secret_fr(&self) -> SecretFr {
        let mut value = Scalar(self.secret)
            .to_fr("identity secret")
            .expect("checked when made");
        SecretFr::from(&mut value)
    }

    /// The identity commitment `Poseidon(k)`, which the ledger records.
    pub fn commitment(&self) -> Scalar {
        commitment_of_secret(&self.secret).expect("checked when made")
    }
}

/// `Poseidon(k)` for a secret `k` given as bytes (a revealed secret, at the
/// ledger).
pub fn commitment_of_secret(secret: &[u8; SECRET_LEN]) -> Result<Scalar, TicketError> {
    let k = Scalar(*secret).to_fr("secret")?;
    Ok(Scalar::from_fr(&Hasher::<PoseidonHash>::hash_single(k)))
}

/// The ledger's tree leaf for a deposit: `Poseidon(id_commitment, limit)`.
pub fn rate_commitment(id_commitment: &Scalar, limit: u32) -> Result<Scalar, TicketError> {
    let commitment = id_commitment.to_fr("identity commitment")?;
    Ok(Scalar::from_fr(&Hasher::<PoseidonHash>::hash_pair(
        commitment,
        Fr::from(limit),
    )))
}

/// Where a ticket may be spent: one credit period at one provider. Its
/// external nullifier `Poseidon(H(period), H(provider))` makes each
/// (period, provider, message id) one nullifier, so the provider's shared
/// nullifier set catches any reuse.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The credit period (Unix time / period length).
    pub period: u64,
    /// The provider's name, as the network document gives it.
    pub provider: String,
}

impl Scope {
    pub(crate) fn external_nullifier(&self) -> Fr {
        let period = hash_to_field_le(
            &[
                b"funion credit period ".as_slice(),
                &self.period.to_le_bytes(),
            ]
            .concat(),
        );
        let provider =
            hash_to_field_le(&[b"funion provider ".as_slice(), self.provider.as_bytes()].concat());
        Hasher::<PoseidonHash>::hash_pair(period, provider)
    }
}

/// The secret `k` behind two shares `(x, y)` of one nullifier with
/// different `x`: `y = k + x·a₁` is a line, two points give it away.
pub fn recover_secret(a: (Scalar, Scalar), b: (Scalar, Scalar)) -> Result<[u8; 32], TicketError> {
    let share = |s: (Scalar, Scalar)| -> Result<(Fr, Fr), TicketError> {
        Ok((s.0.to_fr("share x")?, s.1.to_fr("share y")?))
    };
    let secret = compute_id_secret(share(a)?, share(b)?).map_err(|_| TicketError::Malformed {
        what: "shares",
        detail: "the two shares have the same x".into(),
    })?;
    Ok(Scalar::from_fr(&secret).0)
}
