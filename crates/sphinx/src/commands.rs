//! Per-hop routing commands, encoded as type-tagged records in a fixed
//! [`COMMANDS_LEN`]-byte area and ended by a zero byte (Sphinx spec §4.1).

use crate::geometry::{COMMANDS_LEN, MAC_LEN, NODE_ID_LEN, RECIPIENT_LEN, SURB_ID_LEN};
use crate::{Error, NodeId};

const NULL: u8 = 0;
const NEXT_HOP: u8 = 1;
const RECIPIENT: u8 = 2;
const SURB_REPLY: u8 = 3;
const DELAY: u8 = 4;

/// What one hop is told to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HopCommands {
    /// Forward to this node, whose header MAC is this.
    pub next: Option<(NodeId, [u8; MAC_LEN])>,
    /// Hold the packet this many microseconds first.
    pub delay_us: u32,
    /// Deliver to this recipient (terminal hop).
    pub recipient: Option<[u8; RECIPIENT_LEN]>,
    /// The payload is a SURB reply with this id (terminal hop).
    pub surb_id: Option<[u8; SURB_ID_LEN]>,
}

impl HopCommands {
    /// Writes the commands into a zeroed `COMMANDS_LEN`-byte area.
    pub fn encode(&self, out: &mut [u8]) {
        debug_assert_eq!(out.len(), COMMANDS_LEN);
        let mut at = 0;
        let mut put = |tag: u8, body: &[u8]| {
            out[at] = tag;
            out[at + 1..at + 1 + body.len()].copy_from_slice(body);
            at += 1 + body.len();
        };
        if let Some((node, mac)) = &self.next {
            let mut body = [0u8; NODE_ID_LEN + MAC_LEN];
            body[..NODE_ID_LEN].copy_from_slice(&node.0);
            body[NODE_ID_LEN..].copy_from_slice(mac);
            put(NEXT_HOP, &body);
        }
        if let Some(recipient) = &self.recipient {
            put(RECIPIENT, recipient);
        }
        if let Some(id) = &self.surb_id {
            put(SURB_REPLY, id);
        }
        put(DELAY, &self.delay_us.to_le_bytes());
    }

    /// Reads commands back, rejecting unknown or repeated ones, overruns, and
    /// a hop that neither forwards nor delivers.
    pub fn decode(area: &[u8]) -> Result<Self, Error> {
        let mut commands = HopCommands::default();
        let mut seen_delay = false;
        let mut at = 0;
        while at < area.len() {
            let tag = area[at];
            let len = match tag {
                NULL => break,
                NEXT_HOP => NODE_ID_LEN + MAC_LEN,
                RECIPIENT => RECIPIENT_LEN,
                SURB_REPLY => SURB_ID_LEN,
                DELAY => 4,
                _ => return Err(Error::InvalidCommand),
            };
            let body = area
                .get(at + 1..at + 1 + len)
                .ok_or(Error::InvalidCommand)?;
            let repeated = match tag {
                NEXT_HOP => commands
                    .next
                    .replace((
                        NodeId(body[..NODE_ID_LEN].try_into().expect("32 bytes")),
                        body[NODE_ID_LEN..].try_into().expect("16 bytes"),
                    ))
                    .is_some(),
                RECIPIENT => commands
                    .recipient
                    .replace(body.try_into().expect("32 bytes"))
                    .is_some(),
                SURB_REPLY => commands
                    .surb_id
                    .replace(body.try_into().expect("16 bytes"))
                    .is_some(),
                _ => {
                    commands.delay_us = u32::from_le_bytes(body.try_into().expect("4 bytes"));
                    std::mem::replace(&mut seen_delay, true)
                }
            };
            if repeated {
                return Err(Error::InvalidCommand);
            }
            at += 1 + len;
        }
        if commands.next.is_some() == commands.recipient.is_some() {
            return Err(Error::InvalidCommand);
        }
        Ok(commands)
    }
}
