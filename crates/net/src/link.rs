//! Links between nodes (and from clients to gateways): Noise XX over TCP
//! (`Noise_XX_25519_AESGCM_SHA256`, Nagle off), both ends' static keys
//! checked by the caller against the network document, then fixed-size
//! encrypted frames in both directions.
//!
//! Every frame has the same plaintext length (a type byte and the largest
//! body, zero padded), so a link carries a stream of identical-looking
//! records. A frame of the wrong length or that fails to decrypt closes the
//! link. The [`FrameSender`] / [`FrameReceiver`] traits are the seam where a
//! QUIC or post-quantum link can be slotted in later.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use snow::{Builder, StatelessTransportState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const PATTERN: &str = "Noise_XX_25519_AESGCM_SHA256";
const TAG_LEN: usize = 16;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Unsent bytes past which a link's socket stops reporting itself writable
/// (`TCP_NOTSENT_LOWAT`; the kernel wakes writers again below half of it).
/// Less than one 37 kB frame: a connection whose last frame is still
/// waiting for congestion window or pacing does not look ready for the
/// next one, so [`NoiseSender::ready`] tells a backed-up connection from a
/// free one.
const NOTSENT_LOWAT: u32 = 16 * 1024;

/// What a link carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Nothing (keeps the stream uniform).
    Padding,
    /// A Sphinx packet.
    Packet(Vec<u8>),
    /// A client announces the reply queue it reads (client to gateway).
    Subscribe([u8; 32]),
    /// A SURB reply for the client (gateway to client).
    Reply {
        /// Which SURB it answers.
        surb_id: [u8; 16],
        /// The payload.
        payload: Vec<u8>,
    },
    /// A Pigeonhole message between a courier and a replica or between
    /// replicas (an encoded `funion_pigeonhole::wire::StorageMessage`).
    Storage(Vec<u8>),
}

impl Frame {
    fn encode(&self, body_len: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; 1 + body_len];
        let (kind, body): (u8, &[u8]) = match self {
            Frame::Padding => (0, &[]),
            Frame::Packet(p) => (1, p),
            Frame::Subscribe(r) => (2, r),
            Frame::Storage(m) => (4, m),
            Frame::Reply { surb_id, payload } => {
                let needed = 16 + 4 + payload.len();
                if needed > body_len {
                    return Err(invalid("reply too long for a frame"));
                }
                out[0] = 3;
                out[1..17].copy_from_slice(surb_id);
                out[17..21].copy_from_slice(&(payload.len() as u32).to_le_bytes());
                out[21..21 + payload.len()].copy_from_slice(payload);
                return Ok(out);
            }
        };
        if body.len() + 4 > body_len {
            return Err(invalid("body too long for a frame"));
        }
        out[0] = kind;
        out[1..5].copy_from_slice(&(body.len() as u32).to_le_bytes());
        out[5..5 + body.len()].copy_from_slice(body);
        Ok(out)
    }

    fn decode(plain: &[u8]) -> io::Result<Frame> {
        let read_len = |at: usize| -> io::Result<usize> {
            let bytes = plain
                .get(at..at + 4)
                .ok_or_else(|| invalid("short frame"))?;
            Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
        };
        let body = |at: usize| -> io::Result<&[u8]> {
            let len = read_len(at)?;
            plain
                .get(at + 4..at + 4 + len)
                .ok_or_else(|| invalid("frame length field overruns"))
        };
        match plain.first() {
            Some(0) => Ok(Frame::Padding),
            Some(1) => Ok(Frame::Packet(body(1)?.to_vec())),
            Some(2) => Ok(Frame::Subscribe(
                body(1)?
                    .try_into()
                    .map_err(|_| invalid("subscribe needs 32 bytes"))?,
            )),
            Some(3) => {
                let surb_id = plain
                    .get(1..17)
                    .ok_or_else(|| invalid("short reply"))?
                    .try_into()
                    .expect("16 bytes");
                Ok(Frame::Reply {
                    surb_id,
                    payload: body(17)?.to_vec(),
                })
            }
            Some(4) => Ok(Frame::Storage(body(1)?.to_vec())),
            _ => Err(invalid("unknown frame type")),
        }
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

fn noise(error: snow::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("noise: {error}"))
}

/// Sends frames on a link.
pub trait FrameSender: Send {
    /// Sends one frame.
    fn send(&mut self, frame: &Frame) -> impl Future<Output = io::Result<()>> + Send;
}

/// Receives frames from a link.
pub trait FrameReceiver: Send {
    /// Waits for the next frame; an error means the link is closed.
    fn recv(&mut self) -> impl Future<Output = io::Result<Frame>> + Send;
}

/// The sending half of a Noise link.
pub struct NoiseSender {
    stream: OwnedWriteHalf,
    state: Arc<StatelessTransportState>,
    nonce: u64,
    body_len: usize,
}

/// The receiving half of a Noise link.
pub struct NoiseReceiver {
    stream: OwnedReadHalf,
    state: Arc<StatelessTransportState>,
    nonce: u64,
    body_len: usize,
    wire: Vec<u8>,
    plain: Vec<u8>,
}

/// An established link: both halves and the peer's static key.
pub struct Link {
    /// Sends frames.
    pub sender: NoiseSender,
    /// Receives frames.
    pub receiver: NoiseReceiver,
    /// The peer's Noise static public key (check it before trusting the link).
    pub peer_key: [u8; 32],
}

/// The frame body length for packets of `packet_len` bytes: room for a
/// packet with its length field, or a reply (SURB ID, length, payload; the
/// payload is shorter than the packet).
fn body_len_for(packet_len: usize) -> usize {
    packet_len + 24
}

impl NoiseSender {
    /// Waits until the link's socket takes more bytes without queueing them
    /// behind unsent ones: its previous frames have mostly left (see
    /// [`NOTSENT_LOWAT`]). A link with several connections gives the next
    /// frame to one that is ready.
    pub async fn ready(&self) -> io::Result<()> {
        let stream: &TcpStream = self.stream.as_ref();
        stream.writable().await
    }
}

impl FrameSender for NoiseSender {
    async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        let plain = frame.encode(self.body_len)?;
        let mut wire = vec![0u8; 2 + plain.len() + TAG_LEN];
        let len = self
            .state
            .write_message(self.nonce, &plain, &mut wire[2..])
            .map_err(noise)?;
        self.nonce += 1;
        wire[..2].copy_from_slice(&(len as u16).to_be_bytes());
        self.stream.write_all(&wire[..2 + len]).await
    }
}

impl FrameReceiver for NoiseReceiver {
    async fn recv(&mut self) -> io::Result<Frame> {
        let expected = 1 + self.body_len + TAG_LEN;
        let mut len = [0u8; 2];
        self.stream.read_exact(&mut len).await?;
        if u16::from_be_bytes(len) as usize != expected {
            return Err(invalid("frame of the wrong length"));
        }
        self.wire.resize(expected, 0);
        self.plain.resize(expected, 0);
        self.stream.read_exact(&mut self.wire).await?;
        let n = self
            .state
            .read_message(self.nonce, &self.wire, &mut self.plain)
            .map_err(noise)?;
        self.nonce += 1;
        Frame::decode(&self.plain[..n])
    }
}

async fn write_handshake(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    stream
        .write_all(&(message.len() as u16).to_be_bytes())
        .await?;
    stream.write_all(message).await
}

async fn read_handshake(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// Runs the initiator's side of the handshake on a connected stream.
pub async fn initiate(
    stream: TcpStream,
    static_key: &[u8; 32],
    packet_len: usize,
) -> io::Result<Link> {
    handshake(stream, static_key, packet_len, true).await
}

/// Runs the responder's side of the handshake on an accepted stream.
pub async fn respond(
    stream: TcpStream,
    static_key: &[u8; 32],
    packet_len: usize,
) -> io::Result<Link> {
    handshake(stream, static_key, packet_len, false).await
}

/// Noise XX: `-> e`, `<- e, ee, s, es`, `-> s, se`; each side writes the
/// messages of its turns and reads the others, within a time limit.
async fn handshake(
    mut stream: TcpStream,
    static_key: &[u8; 32],
    packet_len: usize,
    initiator: bool,
) -> io::Result<Link> {
    stream.set_nodelay(true)?;
    tune_for_frames(&stream)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async move {
        let builder = Builder::new(PATTERN.parse().map_err(noise)?)
            .local_private_key(static_key)
            .map_err(noise)?;
        let mut state = if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        }
        .map_err(noise)?;
        let mut buf = vec![0u8; 1024];
        for turn in 0..3 {
            let ours = (turn % 2 == 0) == initiator;
            if ours {
                let n = state.write_message(&[], &mut buf).map_err(noise)?;
                write_handshake(&mut stream, &buf[..n]).await?;
            } else {
                let message = read_handshake(&mut stream).await?;
                state.read_message(&message, &mut buf).map_err(noise)?;
            }
        }
        finish(stream, state, packet_len)
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// Socket options for a link that carries large frames at a low rate:
/// unsent bytes bounded (`TCP_NOTSENT_LOWAT`, so readiness means "the last
/// frame has left"), and, on Linux, linear rather than exponential
/// retransmission timeouts while few segments are in flight (a thin stream
/// gets no duplicate ACKs to recover by).
fn tune_for_frames(stream: &TcpStream) -> io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        socket.set_tcp_notsent_lowat(NOTSENT_LOWAT)?;
        socket.set_tcp_thin_linear_timeouts(true)?;
    }
    let _ = socket;
    Ok(())
}

fn finish(
    stream: TcpStream,
    handshake: snow::HandshakeState,
    packet_len: usize,
) -> io::Result<Link> {
    let peer_key: [u8; 32] = handshake
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| invalid("peer sent no static key"))?;
    let state = Arc::new(handshake.into_stateless_transport_mode().map_err(noise)?);
    let body_len = body_len_for(packet_len);
    let (read, write) = stream.into_split();
    Ok(Link {
        sender: NoiseSender {
            stream: write,
            state: state.clone(),
            nonce: 0,
            body_len,
        },
        receiver: NoiseReceiver {
            stream: read,
            state,
            nonce: 0,
            body_len,
            wire: Vec::new(),
            plain: Vec::new(),
        },
        peer_key,
    })
}

/// The Noise static public key of a static secret.
pub fn public_link_key(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}
