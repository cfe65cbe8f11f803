//! Packet geometry: every length in a packet follows from the KEM, the
//! payload length and the number of hops.

use crate::kem::Kem;
use crate::Error;

/// Bytes of the visible, MACed version field: format version, KEM id.
pub const VERSION_LEN: usize = 2;
/// Format version written in the first version byte.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of a header MAC (HMAC-SHA256 truncated).
pub const MAC_LEN: usize = 16;
/// Bytes of a node identifier.
pub const NODE_ID_LEN: usize = 32;
/// Bytes of a recipient identifier (a queue at the terminal hop).
pub const RECIPIENT_LEN: usize = 32;
/// Bytes of a SURB identifier.
pub const SURB_ID_LEN: usize = 16;
/// Bytes each hop's routing commands occupy (zero padded).
pub const COMMANDS_LEN: usize = 64;
/// Bytes of zeros prepended to a payload to authenticate it at the end.
pub const PAYLOAD_TAG_LEN: usize = 16;
/// Bytes of an HCTR2 payload key.
pub const SPRP_KEY_LEN: usize = 32;
/// Largest number of hops a geometry may have.
pub const MAX_HOPS_LIMIT: usize = 16;

/// The sizes of one packet format. Built for a KEM, a payload length and a
/// hop count; a packet of any other length is rejected before any
/// cryptography runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    kem_id: u8,
    kem_name: &'static str,
    kem_ciphertext_len: usize,
    payload_len: usize,
    max_hops: usize,
    modelled: bool,
}

impl Geometry {
    /// A geometry for KEM `K`, a payload of `payload_len` bytes (the whole
    /// SPRP block, tag included) and up to `max_hops` hops.
    pub fn new<K: Kem>(payload_len: usize, max_hops: usize) -> Result<Self, Error> {
        if !(1..=MAX_HOPS_LIMIT).contains(&max_hops) {
            return Err(Error::Geometry("hops must be between 1 and 16"));
        }
        if payload_len < PAYLOAD_TAG_LEN + 16 {
            return Err(Error::Geometry("payload must be at least 32 bytes"));
        }
        if payload_len > 1 << 24 {
            return Err(Error::Geometry("payload must be at most 16 MiB"));
        }
        Ok(Geometry {
            kem_id: K::ID,
            kem_name: K::NAME,
            kem_ciphertext_len: K::CIPHERTEXT_LEN,
            payload_len,
            max_hops,
            modelled: false,
        })
    }

    /// The same sizes, for packets that only model Sphinx: they carry their
    /// route, delays and message in the clear and no layer of cryptography,
    /// so a simulator can move millions of them. For the simulator's
    /// abstract-packet mode only; no node of a real network accepts them
    /// (their version byte is not [`FORMAT_VERSION`]).
    pub fn modelled(self) -> Self {
        Geometry {
            modelled: true,
            ..self
        }
    }

    /// Whether packets of this geometry only model Sphinx
    /// ([`Geometry::modelled`]).
    pub fn is_modelled(&self) -> bool {
        self.modelled
    }

    /// The KEM's name.
    pub fn kem_name(&self) -> &'static str {
        self.kem_name
    }

    /// The KEM's id, as carried in the version field.
    pub fn kem_id(&self) -> u8 {
        self.kem_id
    }

    /// Bytes of one KEM ciphertext.
    pub fn kem_ciphertext_len(&self) -> usize {
        self.kem_ciphertext_len
    }

    /// The most hops a packet can take.
    pub fn max_hops(&self) -> usize {
        self.max_hops
    }

    /// Bytes of one hop's routing slot: its commands, then the next hop's
    /// KEM ciphertext.
    pub fn per_hop_len(&self) -> usize {
        COMMANDS_LEN + self.kem_ciphertext_len
    }

    /// Bytes of the encrypted routing information.
    pub fn routing_info_len(&self) -> usize {
        self.per_hop_len() * self.max_hops
    }

    /// Bytes of a header: version ‖ KEM ciphertext ‖ routing info ‖ MAC.
    pub fn header_len(&self) -> usize {
        VERSION_LEN + self.kem_ciphertext_len + self.routing_info_len() + MAC_LEN
    }

    /// Bytes of the payload (SPRP block).
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// Bytes of a whole packet.
    pub fn packet_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Bytes of a SURB: header ‖ first hop ‖ payload key.
    pub fn surb_len(&self) -> usize {
        self.header_len() + NODE_ID_LEN + SPRP_KEY_LEN
    }

    /// Bytes of message a packet carries.
    pub fn message_capacity(&self) -> usize {
        self.payload_len - PAYLOAD_TAG_LEN
    }

    /// The version field packets of this geometry carry.
    pub(crate) fn version(&self) -> [u8; VERSION_LEN] {
        [FORMAT_VERSION, self.kem_id]
    }
}
