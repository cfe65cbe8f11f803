//! One check per hpqc section. Each takes a vector and says what, if
//! anything, differs from what funion computes.

use blake2::digest::consts::U32;
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2b, Blake2b512, Blake2bMac};
use funion_bacap::primitives::{
    blind_public_key, ed25519_public_key, gcm_siv_open, gcm_siv_seal, hkdf_blake2b, verify_ed25519,
    BlindedSigningKey,
};
use funion_bacap::{
    verify_box, BoxContent, BoxId, BoxSignature, Error, MessageBoxIndex, ReadCap, WriteCap,
};
use serde_json::Value;
use sha2::{Digest, Sha512, Sha512_256};

/// A check: `Ok` if the vector holds, else what differs.
pub(crate) type Check = fn(&Vector) -> Result<(), String>;

/// The sections known, in the order hpqc's bundle lists them.
pub(crate) const KNOWN: &[&str] = &[
    "sha512",
    "sha512_256",
    "blake2b_256",
    "blake2b_512",
    "hkdf_blake2b",
    "aes_gcm_siv",
    "ed25519",
    "blinded_ed25519",
    "bacap_message_box_index",
    "bacap_box_id",
    "bacap_encrypt",
    "bacap_mutate_kdf_state",
    "bacap_layout",
    "bacap_tombstone",
    "bacap_position",
    "bacap_negative",
];

pub(crate) fn for_section(primitive: &str) -> Option<Check> {
    Some(match primitive {
        "sha512" => |v| digest(v, |m| Sha512::digest(m).to_vec()),
        "sha512_256" => |v| digest(v, |m| Sha512_256::digest(m).to_vec()),
        "blake2b_512" => |v| digest(v, |m| Blake2b512::digest(m).to_vec()),
        "blake2b_256" => blake2b_256,
        "hkdf_blake2b" => hkdf,
        "aes_gcm_siv" => aes_gcm_siv,
        "ed25519" => ed25519,
        "blinded_ed25519" => blinded_ed25519,
        "bacap_message_box_index" => message_box_index,
        "bacap_box_id" => box_id,
        "bacap_encrypt" => encrypt,
        "bacap_mutate_kdf_state" => mutate_kdf_state,
        "bacap_layout" => layout,
        "bacap_tombstone" => tombstone,
        "bacap_position" => position,
        "bacap_negative" => negative,
        _ => return None,
    })
}

/// One vector object, with typed field access.
pub(crate) struct Vector<'a>(pub(crate) &'a Value);

impl Vector<'_> {
    fn field(&self, key: &str) -> Result<&Value, String> {
        self.0
            .get(key)
            .ok_or_else(|| format!("malformed vector: no field `{key}`"))
    }

    /// A hex field; a missing one reads as empty (hpqc leaves empty blobs out).
    fn hex_or_empty(&self, key: &str) -> Result<Vec<u8>, String> {
        match self.0.get(key) {
            None => Ok(Vec::new()),
            Some(_) => self.hex(key),
        }
    }

    fn hex(&self, key: &str) -> Result<Vec<u8>, String> {
        let text = self
            .field(key)?
            .as_str()
            .ok_or_else(|| format!("malformed vector: `{key}` is not a string"))?;
        hex::decode(text).map_err(|e| format!("malformed vector: `{key}` is not hex: {e}"))
    }

    fn hex_array<const N: usize>(&self, key: &str) -> Result<[u8; N], String> {
        self.hex(key)?
            .try_into()
            .map_err(|_| format!("malformed vector: `{key}` is not {N} bytes"))
    }

    fn u64(&self, key: &str) -> Result<u64, String> {
        self.field(key)?
            .as_u64()
            .ok_or_else(|| format!("malformed vector: `{key}` is not an unsigned integer"))
    }

    fn u64_or_zero(&self, key: &str) -> Result<u64, String> {
        match self.0.get(key) {
            None => Ok(0),
            Some(_) => self.u64(key),
        }
    }

    fn bool(&self, key: &str) -> Result<bool, String> {
        self.field(key)?
            .as_bool()
            .ok_or_else(|| format!("malformed vector: `{key}` is not a boolean"))
    }

    fn str(&self, key: &str) -> Result<&str, String> {
        self.field(key)?
            .as_str()
            .ok_or_else(|| format!("malformed vector: `{key}` is not a string"))
    }

    /// The write cap in `writecap_hex`, its index advanced by `advance_by`.
    fn cap_at(&self) -> Result<(WriteCap, MessageBoxIndex), String> {
        let cap = WriteCap::from_bytes(&self.hex("writecap_hex")?)
            .map_err(|e| format!("write cap rejected: {e}"))?;
        let index = advance_by(cap.index(), self.u64_or_zero("advance_by")?)?;
        Ok((cap, index))
    }
}

fn advance_by(index: &MessageBoxIndex, steps: u64) -> Result<MessageBoxIndex, String> {
    let to = index
        .idx64()
        .checked_add(steps)
        .ok_or("malformed vector: advance_by passes 2^64")?;
    index
        .advance_to(to)
        .map_err(|e| format!("advancing failed: {e}"))
}

fn expect_eq(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what} differs: got {}, want {}",
            hex::encode(got),
            hex::encode(want)
        ))
    }
}

fn digest(v: &Vector, hash: fn(&[u8]) -> Vec<u8>) -> Result<(), String> {
    expect_eq("digest", &hash(&v.hex("input_hex")?), &v.hex("output_hex")?)
}

fn blake2b_256(v: &Vector) -> Result<(), String> {
    let key = v.hex("key_hex")?;
    let message = v.hex("msg_hex")?;
    let got = if key.is_empty() {
        Blake2b::<U32>::digest(&message).to_vec()
    } else {
        let mut mac = <Blake2bMac<U32> as KeyInit>::new_from_slice(&key)
            .map_err(|_| "malformed vector: BLAKE2b key longer than 64 bytes")?;
        Update::update(&mut mac, &message);
        mac.finalize_fixed().to_vec()
    };
    expect_eq("digest", &got, &v.hex("digest_hex")?)
}

fn hkdf(v: &Vector) -> Result<(), String> {
    let length = usize::try_from(v.u64("length")?).map_err(|_| "malformed vector: length")?;
    let mut okm = vec![0u8; length];
    hkdf_blake2b(
        &v.hex("secret_hex")?,
        &v.hex("salt_hex")?,
        &v.hex("info_hex")?,
        &mut okm,
    )
    .map_err(|e| e.to_string())?;
    expect_eq("okm", &okm, &v.hex("okm_hex")?)
}

fn aes_gcm_siv(v: &Vector) -> Result<(), String> {
    let key = v.hex_array::<32>("key_hex")?;
    let nonce = v.hex_array::<12>("nonce_hex")?;
    let aad = v.hex("aad_hex")?;
    let plaintext = v.hex("plaintext_hex")?;
    let ciphertext = v.hex("ciphertext_hex")?;
    expect_eq(
        "ciphertext",
        &gcm_siv_seal(&key, &nonce, &aad, &plaintext),
        &ciphertext,
    )?;
    let opened = gcm_siv_open(&key, &nonce, &aad, &ciphertext)
        .map_err(|e| format!("decryption failed: {e}"))?;
    expect_eq("decrypted plaintext", &opened, &plaintext)
}

fn ed25519(v: &Vector) -> Result<(), String> {
    let public = v.hex_array::<32>("public_key_hex")?;
    let signature = v.hex_array::<64>("signature_hex")?;
    let mut message = v.hex("message_hex")?;
    verify_ed25519(&public, &message, &signature).map_err(|e| format!("valid signature: {e}"))?;
    message.push(0);
    match verify_ed25519(&public, &message, &signature) {
        Err(Error::SignatureInvalid) => Ok(()),
        other => Err(format!("signature over a longer message: {other:?}")),
    }
}

fn blinded_ed25519(v: &Vector) -> Result<(), String> {
    let private = v.hex_array::<64>("private_key_hex")?;
    let seed: [u8; 32] = private[..32].try_into().expect("32 bytes");
    expect_eq(
        "root public key",
        &ed25519_public_key(&seed),
        &private[32..],
    )?;
    let factors = v
        .field("blind_factors_hex")?
        .as_array()
        .ok_or("malformed vector: `blind_factors_hex` is not an array")?
        .iter()
        .map(|f| {
            let bytes = hex::decode(f.as_str().unwrap_or("?")).map_err(|e| e.to_string())?;
            <[u8; 32]>::try_from(bytes).map_err(|_| "a blind factor is not 32 bytes".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (first, rest) = factors
        .split_first()
        .ok_or("malformed vector: no blind factors")?;
    let mut secret = BlindedSigningKey::from_seed(&seed, first);
    let mut public = blind_public_key(&private[32..].try_into().expect("32"), first)
        .map_err(|e| e.to_string())?;
    for factor in rest {
        secret = secret.blind(factor);
        public = blind_public_key(&public, factor).map_err(|e| e.to_string())?;
    }
    let want_public = v.hex("blinded_pubkey_hex")?;
    expect_eq(
        "blinded public key (from the secret)",
        &secret.public_key(),
        &want_public,
    )?;
    expect_eq(
        "blinded public key (from the public key)",
        &public,
        &want_public,
    )?;
    let message = v.hex("message_hex")?;
    let signature = secret.sign(&message);
    expect_eq("signature", &signature, &v.hex("blinded_signature_hex")?)?;
    verify_ed25519(&public, &message, &signature).map_err(|e| format!("own signature: {e}"))
}

fn message_box_index(v: &Vector) -> Result<(), String> {
    let initial =
        MessageBoxIndex::from_bytes(&v.hex("initial_index_hex")?).map_err(|e| e.to_string())?;
    let advanced = initial
        .advance_to(v.u64("advance_to")?)
        .map_err(|e| format!("advancing failed: {e}"))?;
    expect_eq(
        "advanced index",
        advanced.to_bytes().as_ref(),
        &v.hex("expected_index_hex")?,
    )
}

fn box_id(v: &Vector) -> Result<(), String> {
    let (cap, index) = v.cap_at()?;
    let want = v.hex("expected_box_id_hex")?;
    if v.bool("use_context")? {
        let ctx = v.hex("ctx_hex")?;
        expect_eq(
            "box ID (read cap)",
            &cap.read_cap().box_id(&index, &ctx).0,
            &want,
        )?;
        expect_eq("box ID (write cap)", &cap.box_id(&index, &ctx).0, &want)
    } else {
        expect_eq(
            "box ID",
            &cap.read_cap().box_id_without_context(&index).0,
            &want,
        )
    }
}

fn encrypt(v: &Vector) -> Result<(), String> {
    let (cap, index) = v.cap_at()?;
    let ctx = v.hex("ctx_hex")?;
    let plaintext = v.hex("plaintext_hex")?;
    let sealed = cap.seal(&index, &ctx, &plaintext);
    expect_eq("box ID", &sealed.id.0, &v.hex("expected_box_id_hex")?)?;
    expect_eq(
        "ciphertext",
        &sealed.ciphertext,
        &v.hex("expected_ciphertext_hex")?,
    )?;
    expect_eq(
        "signature",
        &sealed.signature.0,
        &v.hex("expected_signature_hex")?,
    )?;
    match cap.read_cap().open(
        &index,
        &ctx,
        &sealed.id,
        &sealed.ciphertext,
        &sealed.signature,
    ) {
        Ok(BoxContent::Message(opened)) if opened == plaintext => Ok(()),
        other => Err(format!("opening the sealed box gave {other:?}")),
    }
}

fn mutate_kdf_state(v: &Vector) -> Result<(), String> {
    let (cap, index) = v.cap_at()?;
    let mutated = index.mutate_kdf_state(&v.hex("salt_hex")?);
    expect_eq(
        "mutated index",
        mutated.to_bytes().as_ref(),
        &v.hex("expected_mutated_index_hex")?,
    )?;
    expect_eq(
        "box ID",
        &cap.read_cap().box_id(&mutated, &v.hex("read_ctx_hex")?).0,
        &v.hex("expected_mutated_box_id_hex")?,
    )
}

fn layout(v: &Vector) -> Result<(), String> {
    let bytes = v.hex("writecap_hex")?;
    let cap = WriteCap::from_bytes(&bytes).map_err(|e| format!("write cap rejected: {e}"))?;
    expect_eq("write cap round trip", cap.to_bytes().as_ref(), &bytes)?;
    expect_eq(
        "root public key",
        &cap.root_public_key(),
        &v.hex("expected_root_public_key_hex")?,
    )?;
    let want_read = v.hex("expected_readcap_hex")?;
    expect_eq("read cap", cap.read_cap().to_bytes().as_ref(), &want_read)?;
    let read = ReadCap::from_bytes(&want_read).map_err(|e| format!("read cap rejected: {e}"))?;
    expect_eq("read cap round trip", read.to_bytes().as_ref(), &want_read)?;
    let want_index = v.hex("expected_index_hex")?;
    expect_eq("index", cap.index().to_bytes().as_ref(), &want_index)?;
    let index = MessageBoxIndex::from_bytes(&want_index).map_err(|e| e.to_string())?;
    expect_eq("index round trip", index.to_bytes().as_ref(), &want_index)?;
    let want_idx64 = v.u64("expected_idx64")?;
    if index.idx64() != want_idx64 {
        return Err(format!("Idx64 is {}, want {want_idx64}", index.idx64()));
    }
    Ok(())
}

fn tombstone(v: &Vector) -> Result<(), String> {
    let (cap, index) = v.cap_at()?;
    let ctx = v.hex("ctx_hex")?;
    let sealed = cap.tombstone(&index, &ctx);
    expect_eq("box ID", &sealed.id.0, &v.hex("expected_box_id_hex")?)?;
    expect_eq(
        "signature",
        &sealed.signature.0,
        &v.hex("expected_signature_hex")?,
    )?;
    match cap
        .read_cap()
        .open(&index, &ctx, &sealed.id, &[], &sealed.signature)
    {
        Ok(BoxContent::Tombstone) => Ok(()),
        other => Err(format!("opening the tombstone gave {other:?}")),
    }
}

fn position(v: &Vector) -> Result<(), String> {
    let cap = ReadCap::from_bytes(&v.hex("readcap_hex")?)
        .map_err(|e| format!("read cap rejected: {e}"))?;
    let index = MessageBoxIndex::from_bytes(&v.hex("index_hex")?).map_err(|e| e.to_string())?;
    let reachable = v.bool("reachable")?;
    match (cap.contains(&index), reachable) {
        (Ok(()), true) | (Err(Error::NotOnStream), false) => Ok(()),
        (got, _) => Err(format!("reachable should be {reachable}, got {got:?}")),
    }
}

/// hpqc's name for the reason an input is rejected.
fn category(error: &Error) -> &'static str {
    match error {
        Error::Malformed { .. } => "malformed",
        Error::CannotRewind { .. } => "cannot_rewind",
        Error::IndexExhausted => "index_exhausted",
        Error::SignatureInvalid => "signature_invalid",
        Error::DecryptFailed => "decrypt_failed",
        Error::BoxMismatch => "box_mismatch",
        Error::NotOnStream => "not_on_stream",
        Error::TooFarAhead => "too_far_ahead",
    }
}

fn negative(v: &Vector) -> Result<(), String> {
    let want = v.str("category")?;
    let operation = v.str("operation")?;
    let outcome: Result<(), Error> = match operation {
        "advance_index_to" => {
            let to = v.u64("advance_to")?;
            MessageBoxIndex::from_bytes(&v.hex("index_hex")?)
                .and_then(|i| i.advance_to(to))
                .map(drop)
        }
        "next_index" => MessageBoxIndex::from_bytes(&v.hex("index_hex")?)
            .and_then(|i| i.next())
            .map(drop),
        "parse_message_box_index" => {
            MessageBoxIndex::from_bytes(&v.hex_or_empty("blob_hex")?).map(drop)
        }
        "parse_read_cap" => ReadCap::from_bytes(&v.hex_or_empty("blob_hex")?).map(drop),
        "parse_write_cap" => WriteCap::from_bytes(&v.hex_or_empty("blob_hex")?).map(drop),
        "decrypt" | "open" | "verify_box" => {
            let (cap, index) = v.cap_at()?;
            let ctx = v.hex("ctx_hex")?;
            let id = BoxId::from_slice(&v.hex("box_id_hex")?).map_err(|e| e.to_string())?;
            let ciphertext = v.hex_or_empty("ciphertext_hex")?;
            let signature =
                BoxSignature::from_slice(&v.hex("signature_hex")?).map_err(|e| e.to_string())?;
            match operation {
                "decrypt" => index.decrypt(&ctx, &id, &ciphertext, &signature).map(drop),
                "open" => cap
                    .read_cap()
                    .open(&index, &ctx, &id, &ciphertext, &signature)
                    .map(drop),
                _ => verify_box(&id, &ciphertext, &signature),
            }
        }
        other => return Err(format!("unknown negative operation `{other}`")),
    };
    match outcome {
        Err(e) if category(&e) == want => Ok(()),
        Err(e) => Err(format!("rejected as {} ({e}), want {want}", category(&e))),
        Ok(()) => Err(format!("accepted, want a rejection as {want}")),
    }
}
