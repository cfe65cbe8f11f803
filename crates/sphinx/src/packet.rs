//! Building headers and packets (the sender's side) and unwrapping one layer
//! (a node's side).

use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::commands::HopCommands;
use crate::crypto::{xor_into, HopKeys};
use crate::geometry::{Geometry, COMMANDS_LEN, MAC_LEN, PAYLOAD_TAG_LEN, VERSION_LEN};
use crate::hctr2::Hctr2;
use crate::kem::Kem;
use crate::{Action, Delivery, Error, NodeId, PathHop, ReplayTag, Unwrapped};

/// A header and the payload keys of its hops, in hop order.
pub(crate) struct BuiltHeader {
    pub header: Vec<u8>,
    pub payload_keys: Vec<Zeroizing<[u8; 32]>>,
}

/// Builds a header along `path` (KEM Sphinx: one KEM ciphertext per hop,
/// each hop's carried in the routing slot of the hop before).
pub(crate) fn build_header<K: Kem, R: RngCore + CryptoRng>(
    geometry: &Geometry,
    path: &[PathHop<'_, K>],
    delivery: &Delivery,
    rng: &mut R,
) -> Result<BuiltHeader, Error> {
    check_geometry::<K>(geometry)?;
    let hops = path.len();
    let max = geometry.max_hops();
    if hops == 0 || hops > max {
        return Err(Error::PathLength {
            hops,
            max_hops: max,
        });
    }
    let slot = geometry.per_hop_len();
    let ct_len = geometry.kem_ciphertext_len();
    let routing_len = geometry.routing_info_len();
    let version = geometry.version();

    let mut ciphertexts = vec![0u8; hops * ct_len];
    let keys: Vec<HopKeys> = path
        .iter()
        .zip(ciphertexts.chunks_mut(ct_len))
        .map(|(hop, ct)| HopKeys::derive(&K::encapsulate(hop.public_key, rng, ct)))
        .collect();
    let ciphertext = |i: usize| &ciphertexts[i * ct_len..(i + 1) * ct_len];

    // The filler: what the routing info's tail has become by the time the
    // last hop sees it, after every earlier hop appended its keystream.
    let stream_len = routing_len + slot;
    let mut filler: Vec<u8> = Vec::with_capacity((hops - 1) * slot);
    for key in &keys[..hops - 1] {
        filler.extend(std::iter::repeat_n(0u8, slot));
        let keystream = key.keystream(stream_len);
        let len = filler.len();
        xor_into(&mut filler, &keystream[stream_len - len..]);
    }

    // The last hop: its commands, random padding, then the filler.
    let last = hops - 1;
    let mut routing = vec![0u8; routing_len];
    HopCommands {
        next: None,
        delay_us: path[last].delay_us,
        recipient: Some(delivery.recipient),
        surb_id: delivery.surb_id,
    }
    .encode(&mut routing[..COMMANDS_LEN]);
    let open_len = routing_len - filler.len();
    rng.fill_bytes(&mut routing[slot..open_len]);
    let mut keystream = keys[last].keystream(open_len);
    xor_into(&mut routing[..open_len], &keystream);
    routing[open_len..].copy_from_slice(&filler);
    let mut mac = keys[last].header_mac(&version, ciphertext(last), &routing);

    // Every earlier hop, backwards: its slot (commands with the next hop's
    // MAC, the next hop's ciphertext) in front of the shifted routing info.
    for i in (0..last).rev() {
        let mut wrapped = vec![0u8; routing_len];
        HopCommands {
            next: Some((path[i + 1].node, mac)),
            delay_us: path[i].delay_us,
            recipient: None,
            surb_id: None,
        }
        .encode(&mut wrapped[..COMMANDS_LEN]);
        wrapped[COMMANDS_LEN..slot].copy_from_slice(ciphertext(i + 1));
        wrapped[slot..].copy_from_slice(&routing[..routing_len - slot]);
        keystream = keys[i].keystream(routing_len);
        xor_into(&mut wrapped, &keystream);
        routing = wrapped;
        mac = keys[i].header_mac(&version, ciphertext(i), &routing);
    }

    let mut header = Vec::with_capacity(geometry.header_len());
    header.extend_from_slice(&version);
    header.extend_from_slice(ciphertext(0));
    header.extend_from_slice(&routing);
    header.extend_from_slice(&mac);
    Ok(BuiltHeader {
        header,
        payload_keys: keys.iter().map(|k| Zeroizing::new(k.payload)).collect(),
    })
}

/// Lays out a payload: 16 zero bytes of tag, the message, zero padding.
pub(crate) fn plain_payload(geometry: &Geometry, message: &[u8]) -> Result<Vec<u8>, Error> {
    if message.len() > geometry.message_capacity() {
        return Err(Error::MessageTooLong {
            len: message.len(),
            capacity: geometry.message_capacity(),
        });
    }
    let mut payload = vec![0u8; geometry.payload_len()];
    payload[PAYLOAD_TAG_LEN..PAYLOAD_TAG_LEN + message.len()].copy_from_slice(message);
    Ok(payload)
}

/// Checks and strips the zero tag of a fully decrypted payload.
pub(crate) fn check_payload_tag(mut payload: Vec<u8>) -> Result<Vec<u8>, Error> {
    if !bool::from(payload[..PAYLOAD_TAG_LEN].ct_eq(&[0u8; PAYLOAD_TAG_LEN])) {
        return Err(Error::PayloadTampered);
    }
    payload.drain(..PAYLOAD_TAG_LEN);
    Ok(payload)
}

pub(crate) fn check_geometry<K: Kem>(geometry: &Geometry) -> Result<(), Error> {
    if geometry.kem_id() == K::ID {
        Ok(())
    } else {
        Err(Error::Geometry("geometry was made for another KEM"))
    }
}

/// Creates a forward packet carrying `message` along `path`.
pub fn create_packet<K: Kem, R: RngCore + CryptoRng>(
    geometry: &Geometry,
    path: &[PathHop<'_, K>],
    delivery: &Delivery,
    message: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, Error> {
    if geometry.is_modelled() {
        check_geometry::<K>(geometry)?;
        return crate::model::create_packet(geometry, path, delivery, message, rng);
    }
    let mut payload = plain_payload(geometry, message)?;
    let built = build_header(geometry, path, delivery, rng)?;
    for key in built.payload_keys.iter().rev() {
        Hctr2::new(key).encrypt(&[], &mut payload);
    }
    let mut packet = built.header;
    packet.extend_from_slice(&payload);
    Ok(packet)
}

/// A mix node's Sphinx state: the geometry it accepts and its KEM secret.
pub struct SphinxNode<K: Kem> {
    geometry: Geometry,
    secret: K::SecretKey,
}

impl<K: Kem> SphinxNode<K> {
    /// A node with this secret key, accepting packets of `geometry`.
    pub fn new(geometry: Geometry, secret: K::SecretKey) -> Result<Self, Error> {
        check_geometry::<K>(&geometry)?;
        Ok(SphinxNode { geometry, secret })
    }

    /// The geometry this node accepts.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Unwraps one layer of `packet` in place.
    ///
    /// In order: the length and version are checked (before any
    /// cryptography), the KEM ciphertext decapsulated, the header MAC
    /// verified, then `seen` is asked whether the replay tag was seen before
    /// (a replay is refused before the payload is touched). Only then is the
    /// payload decrypted and, for a forward hop, the header rewritten so that
    /// `packet` is the packet for the next hop. On error `packet` may be
    /// partly processed and must be dropped.
    pub fn unwrap(
        &self,
        packet: &mut [u8],
        seen: impl FnOnce(&ReplayTag) -> bool,
    ) -> Result<Unwrapped, Error> {
        let g = &self.geometry;
        if g.is_modelled() {
            return crate::model::unwrap(g, packet, seen);
        }
        if packet.len() != g.packet_len() {
            return Err(Error::WrongLength {
                expected: g.packet_len(),
                got: packet.len(),
            });
        }
        if packet[..VERSION_LEN] != g.version() {
            return Err(Error::UnknownVersion);
        }
        let ct_len = g.kem_ciphertext_len();
        let slot = g.per_hop_len();
        let routing_len = g.routing_info_len();
        let (header, payload) = packet.split_at_mut(g.header_len());
        let (version, rest) = header.split_at_mut(VERSION_LEN);
        let (ciphertext, rest) = rest.split_at_mut(ct_len);
        let (routing, mac) = rest.split_at_mut(routing_len);

        let shared = K::decapsulate(&self.secret, ciphertext)?;
        let keys = HopKeys::derive(&shared);
        let expected = keys.header_mac(version, ciphertext, routing);
        if !bool::from(expected.ct_eq(mac)) {
            return Err(Error::HeaderMac);
        }
        let replay_tag = ReplayTag(keys.replay_tag);
        if seen(&replay_tag) {
            return Err(Error::Replay);
        }

        let mut opened = vec![0u8; routing_len + slot];
        opened[..routing_len].copy_from_slice(routing);
        keys.apply_keystream(&mut opened);
        let commands = HopCommands::decode(&opened[..COMMANDS_LEN])?;
        Hctr2::new(&keys.payload).decrypt(&[], payload);

        let action = match commands {
            HopCommands {
                next: Some((next_hop, next_mac)),
                delay_us,
                ..
            } => {
                ciphertext.copy_from_slice(&opened[COMMANDS_LEN..slot]);
                routing.copy_from_slice(&opened[slot..]);
                mac.copy_from_slice(&next_mac[..MAC_LEN]);
                Action::Forward { next_hop, delay_us }
            }
            HopCommands {
                recipient: Some(recipient),
                surb_id: Some(surb_id),
                delay_us,
                ..
            } => Action::SurbReply {
                recipient,
                surb_id,
                delay_us,
                payload: payload.to_vec(),
            },
            HopCommands {
                recipient: Some(recipient),
                delay_us,
                ..
            } => Action::Deliver {
                recipient,
                delay_us,
                message: check_payload_tag(payload.to_vec())?,
            },
            HopCommands { .. } => return Err(Error::InvalidCommand),
        };
        Ok(Unwrapped { replay_tag, action })
    }
}

impl NodeId {
    /// The node ID in a packet's next-hop command, for tests and tools.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}
