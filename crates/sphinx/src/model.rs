//! Modelled packets: what a Sphinx packet decides (route, per-hop delays,
//! delivery, message) written in the clear, with no cryptography, for the
//! simulator's abstract-packet mode ([`Geometry::modelled`]).
//!
//! A modelled packet behaves like a Sphinx packet of the same geometry at
//! every node: the same next hop, delay, delivery and replay refusal, the
//! same message padded to the same capacity. It is not constant length
//! (the simulator records the geometry's length for it) and hides nothing.
//!
//! Layout: mark ‖ KEM id ‖ nonce (16) ‖ next hop index ‖ hop count ‖
//! per hop (node id ‖ delay, u32 LE) ‖ recipient ‖ SURB flag ‖ SURB id ‖
//! message. A SURB's header is the same without the message.

use rand_core::{CryptoRng, RngCore};

use crate::geometry::{Geometry, NODE_ID_LEN, RECIPIENT_LEN, SURB_ID_LEN};
use crate::kem::Kem;
use crate::{Action, Delivery, Error, NodeId, PathHop, ReplayTag, Unwrapped};

/// First byte of a modelled packet; never a real format version.
const MARK: u8 = 0xA0;
const NONCE_LEN: usize = 16;
const FIXED_LEN: usize = 2 + NONCE_LEN + 2;
const HOP_LEN: usize = NODE_ID_LEN + 4;
const DELIVERY_LEN: usize = RECIPIENT_LEN + 1 + SURB_ID_LEN;

/// Bytes of a header along `hops` hops.
fn header_len(hops: usize) -> usize {
    FIXED_LEN + hops * HOP_LEN + DELIVERY_LEN
}

/// A modelled header along `path`: the route in the clear.
pub(crate) fn header<K: Kem, R: RngCore + CryptoRng>(
    geometry: &Geometry,
    path: &[PathHop<'_, K>],
    delivery: &Delivery,
    rng: &mut R,
) -> Result<Vec<u8>, Error> {
    let hops = path.len();
    if hops == 0 || hops > geometry.max_hops() {
        return Err(Error::PathLength {
            hops,
            max_hops: geometry.max_hops(),
        });
    }
    let mut out = Vec::with_capacity(header_len(hops));
    out.extend_from_slice(&[MARK, geometry.kem_id()]);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&[0, hops as u8]);
    for hop in path {
        out.extend_from_slice(&hop.node.0);
        out.extend_from_slice(&hop.delay_us.to_le_bytes());
    }
    out.extend_from_slice(&delivery.recipient);
    out.push(u8::from(delivery.surb_id.is_some()));
    out.extend_from_slice(&delivery.surb_id.unwrap_or_default());
    Ok(out)
}

/// A modelled forward packet carrying `message` along `path`.
pub(crate) fn create_packet<K: Kem, R: RngCore + CryptoRng>(
    geometry: &Geometry,
    path: &[PathHop<'_, K>],
    delivery: &Delivery,
    message: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, Error> {
    check_capacity(geometry, message)?;
    let mut packet = header(geometry, path, delivery, rng)?;
    packet.extend_from_slice(message);
    Ok(packet)
}

/// The reply packet a modelled SURB header makes around `message`.
pub(crate) fn reply(
    geometry: &Geometry,
    header: Vec<u8>,
    message: &[u8],
) -> Result<Vec<u8>, Error> {
    check_capacity(geometry, message)?;
    let mut packet = header;
    packet.extend_from_slice(message);
    Ok(packet)
}

/// The length of the modelled header at the start of `bytes`.
pub(crate) fn header_len_of(geometry: &Geometry, bytes: &[u8]) -> Result<usize, Error> {
    if bytes.len() < FIXED_LEN || bytes[0] != MARK || bytes[1] != geometry.kem_id() {
        return Err(Error::UnknownVersion);
    }
    let hops = usize::from(bytes[FIXED_LEN - 1]);
    let len = header_len(hops);
    if hops == 0 || hops > geometry.max_hops() || bytes.len() < len {
        return Err(Error::InvalidCommand);
    }
    Ok(len)
}

/// A message padded to the geometry's capacity, as a Sphinx payload
/// yields it once its tag is stripped.
pub(crate) fn padded(geometry: &Geometry, message: &[u8]) -> Result<Vec<u8>, Error> {
    check_capacity(geometry, message)?;
    let mut out = vec![0u8; geometry.message_capacity()];
    out[..message.len()].copy_from_slice(message);
    Ok(out)
}

fn check_capacity(geometry: &Geometry, message: &[u8]) -> Result<(), Error> {
    if message.len() > geometry.message_capacity() {
        return Err(Error::MessageTooLong {
            len: message.len(),
            capacity: geometry.message_capacity(),
        });
    }
    Ok(())
}

/// One node's step on a modelled packet: the same decisions a Sphinx node
/// makes, read in the clear. The replay tag is the packet's nonce and the
/// hop's index.
pub(crate) fn unwrap(
    geometry: &Geometry,
    packet: &mut [u8],
    seen: impl FnOnce(&ReplayTag) -> bool,
) -> Result<Unwrapped, Error> {
    let len = header_len_of(geometry, packet)?;
    let hops = usize::from(packet[FIXED_LEN - 1]);
    let index = usize::from(packet[FIXED_LEN - 2]);
    if index >= hops {
        return Err(Error::InvalidCommand);
    }
    let mut tag = [0u8; 32];
    tag[..NONCE_LEN].copy_from_slice(&packet[2..2 + NONCE_LEN]);
    tag[NONCE_LEN] = index as u8;
    // The hop's index is folded into the first 8 bytes too, so tags stay
    // uniform there as a Sphinx tag is (a node keeps tags by that prefix),
    // even for a loop that passes its gateway twice.
    let spread = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for (byte, mask) in tag.iter_mut().zip(spread.to_le_bytes()) {
        *byte ^= mask;
    }
    let replay_tag = ReplayTag(tag);
    if seen(&replay_tag) {
        return Err(Error::Replay);
    }
    let hop = |i: usize| &packet[FIXED_LEN + i * HOP_LEN..FIXED_LEN + (i + 1) * HOP_LEN];
    let delay_us = u32::from_le_bytes(hop(index)[NODE_ID_LEN..].try_into().expect("4 bytes"));
    let action = if index + 1 < hops {
        let next_hop = NodeId(hop(index + 1)[..NODE_ID_LEN].try_into().expect("32 bytes"));
        packet[FIXED_LEN - 2] += 1;
        Action::Forward { next_hop, delay_us }
    } else {
        let delivery = &packet[FIXED_LEN + hops * HOP_LEN..len];
        let recipient: [u8; RECIPIENT_LEN] =
            delivery[..RECIPIENT_LEN].try_into().expect("32 bytes");
        let message = &packet[len..];
        match delivery[RECIPIENT_LEN] {
            0 => Action::Deliver {
                recipient,
                delay_us,
                message: padded(geometry, message)?,
            },
            1 => Action::SurbReply {
                recipient,
                surb_id: delivery[RECIPIENT_LEN + 1..].try_into().expect("16 bytes"),
                delay_us,
                payload: message.to_vec(),
            },
            _ => return Err(Error::InvalidCommand),
        }
    };
    Ok(Unwrapped { replay_tag, action })
}
