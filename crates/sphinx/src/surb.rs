//! Single-use reply blocks: a prebuilt header back to the sender, the first
//! hop to send it to, and the key for the reply's outermost layer.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::geometry::{Geometry, NODE_ID_LEN, PAYLOAD_TAG_LEN, SPRP_KEY_LEN, VERSION_LEN};
use crate::hctr2::Hctr2;
use crate::kem::Kem;
use crate::packet::{build_header, check_geometry, check_payload_tag, plain_payload};
use crate::{Delivery, Error, NodeId, PathHop};

/// A SURB as the responder holds it.
#[derive(Clone)]
pub struct Surb {
    header: Vec<u8>,
    first_hop: NodeId,
    key: Zeroizing<[u8; SPRP_KEY_LEN]>,
    /// For a modelled SURB ([`Geometry::modelled`]): the header length its
    /// wire form pads to.
    modelled: Option<usize>,
}

/// What the SURB's creator keeps to read the reply: the outer key and each
/// hop's payload key. Zeroized on drop. Used once; only fuzz builds may
/// copy it, to try many replies against one SURB.
#[cfg_attr(fuzzing, derive(Clone))]
pub struct SurbKeys {
    key: Zeroizing<[u8; SPRP_KEY_LEN]>,
    hop_keys: Vec<Zeroizing<[u8; 32]>>,
    /// For a modelled SURB: the message capacity a reply pads to.
    modelled: Option<usize>,
}

impl Surb {
    /// Builds a SURB along `path` (ending at the sender's gateway), and the
    /// keys its creator keeps aside. `delivery.surb_id` should be set so the
    /// creator can find the keys when the reply arrives.
    pub fn create<K: Kem, R: RngCore + CryptoRng>(
        geometry: &Geometry,
        path: &[PathHop<'_, K>],
        delivery: &Delivery,
        rng: &mut R,
    ) -> Result<(Surb, SurbKeys), Error> {
        if geometry.is_modelled() {
            check_geometry::<K>(geometry)?;
            let surb = Surb {
                header: crate::model::header(geometry, path, delivery, rng)?,
                first_hop: path[0].node,
                key: Zeroizing::new([0u8; SPRP_KEY_LEN]),
                modelled: Some(geometry.header_len()),
            };
            let keys = SurbKeys {
                key: Zeroizing::new([0u8; SPRP_KEY_LEN]),
                hop_keys: Vec::new(),
                modelled: Some(geometry.message_capacity()),
            };
            return Ok((surb, keys));
        }
        let built = build_header(geometry, path, delivery, rng)?;
        let mut key = Zeroizing::new([0u8; SPRP_KEY_LEN]);
        rng.fill_bytes(key.as_mut());
        let surb = Surb {
            header: built.header,
            first_hop: path[0].node,
            key: key.clone(),
            modelled: None,
        };
        Ok((
            surb,
            SurbKeys {
                key,
                hop_keys: built.payload_keys,
                modelled: None,
            },
        ))
    }

    /// Reads a SURB from its wire form, checking its length and version
    /// before anything else.
    pub fn from_bytes<K: Kem>(geometry: &Geometry, bytes: &[u8]) -> Result<Surb, Error> {
        check_geometry::<K>(geometry)?;
        if bytes.len() != geometry.surb_len() {
            return Err(Error::WrongLength {
                expected: geometry.surb_len(),
                got: bytes.len(),
            });
        }
        let header_len = geometry.header_len();
        let first_hop = NodeId(
            bytes[header_len..header_len + NODE_ID_LEN]
                .try_into()
                .expect("32 bytes"),
        );
        if geometry.is_modelled() {
            let len = crate::model::header_len_of(geometry, &bytes[..header_len])?;
            return Ok(Surb {
                header: bytes[..len].to_vec(),
                first_hop,
                key: Zeroizing::new([0u8; SPRP_KEY_LEN]),
                modelled: Some(header_len),
            });
        }
        if bytes[..VERSION_LEN] != geometry.version() {
            return Err(Error::UnknownVersion);
        }
        Ok(Surb {
            header: bytes[..header_len].to_vec(),
            first_hop,
            key: Zeroizing::new(
                bytes[header_len + NODE_ID_LEN..]
                    .try_into()
                    .expect("32 bytes"),
            ),
            modelled: None,
        })
    }

    /// The wire form: header ‖ first hop ‖ key.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let header_len = self.modelled.unwrap_or(self.header.len());
        let mut out = Vec::with_capacity(header_len + NODE_ID_LEN + SPRP_KEY_LEN);
        out.extend_from_slice(&self.header);
        out.resize(header_len, 0);
        out.extend_from_slice(&self.first_hop.0);
        out.extend_from_slice(self.key.as_ref());
        Zeroizing::new(out)
    }

    /// The node the reply must be sent to.
    pub fn first_hop(&self) -> NodeId {
        self.first_hop
    }

    /// Wraps `message` in the SURB: the reply packet, to send to
    /// [`Surb::first_hop`]. Consumes the SURB: it must be used once.
    pub fn reply(self, geometry: &Geometry, message: &[u8]) -> Result<Vec<u8>, Error> {
        if self.modelled.is_some() && geometry.is_modelled() {
            return crate::model::reply(geometry, self.header, message);
        }
        if self.header.len() != geometry.header_len() {
            return Err(Error::WrongLength {
                expected: geometry.header_len(),
                got: self.header.len(),
            });
        }
        let mut payload = plain_payload(geometry, message)?;
        Hctr2::new(&self.key).encrypt(&[], &mut payload);
        let mut packet = self.header;
        packet.extend_from_slice(&payload);
        Ok(packet)
    }
}

impl SurbKeys {
    /// Checks a reply without keeping its message (a cover loop's): the same
    /// verdict as [`SurbKeys::open_reply`].
    pub fn check_reply(self, payload: &[u8]) -> Result<(), Error> {
        match self.modelled {
            Some(capacity) if payload.len() <= capacity => Ok(()),
            Some(_) => Err(Error::PayloadTampered),
            None => self.open_reply(payload).map(drop),
        }
    }

    /// Recovers the reply from the payload the last hop handed over: undoes
    /// each hop's decryption, then removes the outer layer and checks the
    /// tag. A payload changed anywhere on the way fails here.
    pub fn open_reply(self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        if let Some(capacity) = self.modelled {
            if payload.len() > capacity {
                return Err(Error::PayloadTampered);
            }
            let mut message = payload.to_vec();
            message.resize(capacity, 0);
            return Ok(message);
        }
        if payload.len() < PAYLOAD_TAG_LEN + 16 {
            return Err(Error::PayloadTampered);
        }
        let mut payload = payload.to_vec();
        for key in self.hop_keys.iter().rev() {
            Hctr2::new(key).encrypt(&[], &mut payload);
        }
        Hctr2::new(&self.key).decrypt(&[], &mut payload);
        check_payload_tag(payload)
    }
}
