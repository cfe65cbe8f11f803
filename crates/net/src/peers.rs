//! Links between nodes for real: the accept loop (peers must be in the
//! document; a gateway also takes clients), one reconnecting outgoing link
//! per peer (packets over several connections, Pigeonhole's messages over
//! one, in order), the readers that hand frames to a node's loop, and the
//! document refresh, started together by [`start_tasks`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use funion_mixnet::Source;
use funion_pki::{epoch_at, NetworkDocument, Role};
use funion_sphinx::NodeId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::config::{NodeFile, NodeKeys};
use crate::link::{self, Frame, FrameReceiver, FrameSender, Link};
use crate::metrics::{self, Metrics};
use crate::{fetch_document, unix_ms};

/// Frames waiting for one outgoing link (or for one client at a gateway):
/// about 9.5 MB of 37 kB packets, a tenth of a second at the fast rates.
const PEER_QUEUE: usize = 256;
/// TCP connections each outgoing link keeps to its peer. A frame goes to
/// one that is ready (its last frame has left), taking turns: on a lossy
/// path a connection that is recovering a lost segment, or whose window
/// shrank after one, holds up only what it already carries, not every
/// frame behind it. A connection looks ready again before the peer has
/// acknowledged its last frame, so the frames it takes in that round trip
/// wait behind any loss in it; the more connections, the fewer such frames
/// (over 1 % loss, `scripts/multihost`: a median round trip of 1.1–1.2 s
/// with 16, 1.45–1.6 s with 4). Each costs a socket at both ends. Sphinx
/// packets need no order (the mixnet reorders them anyway); Pigeonhole
/// messages between couriers and replicas keep theirs on a link of one
/// connection (see [`Peers::send`]).
const LINK_CONNECTIONS: usize = 16;
/// Frames read off all links and not yet handled by the node's loop: about
/// 38 MB at 37 kB; the links' readers wait (TCP pushes back) when it is full.
const INBOUND_QUEUE: usize = 1024;
/// How often a node fetches the current document again (nodes that join
/// after it started appear in it).
const DOCUMENT_REFRESH: Duration = Duration::from_secs(1);
/// The first wait after a failed accept; it doubles up to the most.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// The longest wait after failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a node's loop receives from its links and tasks.
pub enum Inbound {
    /// A frame from a peer or a client.
    Frame {
        /// Who sent it.
        source: Source,
        /// The frame.
        frame: Frame,
        /// When its link's reader handed it over.
        received: Instant,
    },
    /// A newer network document.
    Document(Box<NetworkDocument>),
    /// A client connected to this gateway.
    ClientConnected {
        /// Its connection number.
        conn: u64,
        /// Frames for it.
        sender: mpsc::Sender<Frame>,
    },
    /// A client's connection closed.
    ClientGone(u64),
}

/// One reconnecting outgoing link per peer, each with a bounded queue that
/// its [`LINK_CONNECTIONS`] connections take frames from.
pub struct Peers {
    /// By peer and whether the link keeps its frames in order.
    senders: HashMap<(NodeId, bool), mpsc::Sender<Frame>>,
    link_secret: [u8; 32],
    packet_len: usize,
    metrics: Arc<Metrics>,
}

impl Peers {
    /// The queue of the link to `to`, opening it if needed.
    pub fn new(link_secret: [u8; 32], packet_len: usize, metrics: Arc<Metrics>) -> Self {
        Peers {
            senders: HashMap::new(),
            link_secret,
            packet_len,
            metrics,
        }
    }

    /// Queues a frame for `to`; counts a drop when its link is full or the
    /// document does not list it. Sphinx packets go over a link of
    /// [`LINK_CONNECTIONS`] connections, in any order; every other frame
    /// (Pigeonhole's messages) over a link of one, in the order sent.
    pub fn send(&mut self, to: NodeId, document: &NetworkDocument, frame: Frame) {
        let metrics = self.metrics.clone();
        let ordered = !matches!(frame, Frame::Packet(_));
        match self.sender((to, ordered), document) {
            Some(sender) => {
                if sender.try_send(frame).is_err() {
                    metrics.count_send_drop();
                }
            }
            None => metrics.count_send_drop(),
        }
    }

    fn sender(
        &mut self,
        to: (NodeId, bool),
        document: &NetworkDocument,
    ) -> Option<&mpsc::Sender<Frame>> {
        if self.senders.get(&to).is_some_and(|s| s.is_closed()) {
            self.senders.remove(&to);
        }
        if !self.senders.contains_key(&to) {
            let (id, ordered) = to;
            let peer = document.node(&id)?;
            let address = peer.addresses.first()?;
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let queue = Arc::new(tokio::sync::Mutex::new(rx));
            let connections = if ordered { 1 } else { LINK_CONNECTIONS };
            for _ in 0..connections {
                tokio::spawn(outgoing(
                    address.clone(),
                    peer.link_key,
                    self.link_secret,
                    self.packet_len,
                    queue.clone(),
                    self.metrics.clone(),
                ));
            }
            self.senders.insert(to, tx);
        }
        self.senders.get(&to)
    }
}

/// A link's queue, shared by its connections.
type SharedQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<Frame>>>;

/// What a connection takes from its link's queue next.
enum Next {
    /// A frame to send.
    Frame(Frame),
    /// The queue is closed: the node no longer sends to this peer.
    QueueClosed,
    /// The connection's socket failed.
    SocketFailed,
}

/// The next frame for a connection: once its socket is ready, it waits its
/// turn for the queue (tokio's mutex is fair, so ready connections take
/// frames in turn).
async fn next_frame(sender: &link::NoiseSender, frames: &SharedQueue) -> Next {
    if sender.ready().await.is_err() {
        return Next::SocketFailed;
    }
    match frames.lock().await.recv().await {
        Some(frame) => Next::Frame(frame),
        None => Next::QueueClosed,
    }
}

/// Keeps one connection to a peer up: connects, checks the peer's static
/// key, sends frames from the link's queue, and reconnects with
/// exponential backoff.
async fn outgoing(
    address: String,
    expected_key: [u8; 32],
    link_secret: [u8; 32],
    packet_len: usize,
    frames: SharedQueue,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut pending: Option<Frame> = None;
    loop {
        let link = async {
            let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&address))
                .await??;
            let link = link::initiate(stream, &link_secret, packet_len).await?;
            if link.peer_key != expected_key {
                return Err(std::io::Error::other(
                    "peer's link key is not the document's",
                ));
            }
            Ok::<Link, std::io::Error>(link)
        }
        .await;
        let Link {
            mut sender,
            mut receiver,
            ..
        } = match link {
            Ok(link) => link,
            Err(error) => {
                tracing::debug!(%address, %error, "link failed; retrying");
                metrics.count_link_failure();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        // The peer sends nothing back on this link: its end closing (the
        // peer stopped or died) is how we learn the link is gone before a
        // frame is written into a dead connection and lost.
        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(async move {
            while receiver.recv().await.is_ok() {}
            let _ = closed_tx.send(());
        });
        loop {
            let frame = match pending.take() {
                Some(frame) => frame,
                None => tokio::select! {
                    next = next_frame(&sender, &frames) => match next {
                        Next::Frame(frame) => frame,
                        Next::QueueClosed => {
                            watcher.abort();
                            return;
                        }
                        Next::SocketFailed => {
                            tracing::debug!(%address, "link's socket failed; reconnecting");
                            break;
                        }
                    },
                    _ = &mut closed => {
                        tracing::debug!(%address, "peer closed the link; reconnecting");
                        break;
                    }
                },
            };
            if let Err(error) = sender.send(&frame).await {
                tracing::debug!(%address, %error, "link broke; reconnecting");
                pending = Some(frame);
                break;
            }
        }
        watcher.abort();
    }
}

/// Reads frames from an accepted link until it fails.
async fn read_link(
    mut receiver: link::NoiseReceiver,
    source: Source,
    inbound: mpsc::Sender<Inbound>,
    metrics: Arc<Metrics>,
) {
    loop {
        match receiver.recv().await {
            Ok(frame) => {
                if inbound
                    .send(Inbound::Frame {
                        source,
                        frame,
                        received: Instant::now(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                if error.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::info!(?source, %error, "closing link after a bad frame");
                    metrics.count_bad_link();
                }
                if let Source::Client(conn) = source {
                    let _ = inbound.send(Inbound::ClientGone(conn)).await;
                }
                return;
            }
        }
    }
}

struct AcceptContext {
    link_secret: [u8; 32],
    packet_len: usize,
    role: Role,
    peers_by_link_key: PeerKeys,
    inbound: mpsc::Sender<Inbound>,
    metrics: Arc<Metrics>,
}

/// Aborts the tasks it holds when dropped, so a node stopped (or restarted)
/// takes its listener, refresher and metrics server down with it.
pub struct AbortOnDrop(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, context: Arc<AcceptContext>) {
    let mut next_conn: u64 = 0;
    // Connection tasks live in this set: they end when the loop is aborted.
    let mut connections = tokio::task::JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_FIRST;
                stream
            }
            // Out of file descriptors, say: wait instead of spinning, and
            // longer each time it fails again.
            Err(error) => {
                tracing::warn!(%error, retry_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        next_conn += 1;
        let conn = next_conn;
        let context = context.clone();
        connections.spawn(async move {
            let link = match link::respond(stream, &context.link_secret, context.packet_len).await {
                Ok(link) => link,
                Err(error) => {
                    tracing::info!(%error, "handshake failed");
                    context.metrics.count_bad_link();
                    return;
                }
            };
            let known = |key: &[u8; 32]| {
                context
                    .peers_by_link_key
                    .read()
                    .expect("peer map")
                    .get(key)
                    .copied()
            };
            let mut peer = known(&link.peer_key);
            if peer.is_none() && context.role != Role::Gateway {
                // A node newer than our copy of the document: wait for the
                // next refresh before refusing it.
                tokio::time::sleep(DOCUMENT_REFRESH * 2).await;
                peer = known(&link.peer_key);
            }
            let source = match (peer, context.role) {
                (Some(id), _) => Source::Peer(id),
                (None, Role::Gateway) => {
                    let (tx, mut rx) = mpsc::channel::<Frame>(PEER_QUEUE);
                    let mut sender = link.sender;
                    tokio::spawn(async move {
                        while let Some(frame) = rx.recv().await {
                            if sender.send(&frame).await.is_err() {
                                return;
                            }
                        }
                    });
                    if context
                        .inbound
                        .send(Inbound::ClientConnected { conn, sender: tx })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    read_link(
                        link.receiver,
                        Source::Client(conn),
                        context.inbound.clone(),
                        context.metrics.clone(),
                    )
                    .await;
                    return;
                }
                (None, _) => {
                    tracing::info!("refusing a link from a key the document does not list");
                    context.metrics.count_bad_link();
                    return;
                }
            };
            // Our sending half stays open while we read: the peer learns
            // the link is gone when it closes (we stopped or died).
            let _open = link.sender;
            read_link(
                link.receiver,
                source,
                context.inbound.clone(),
                context.metrics.clone(),
            )
            .await;
        });
    }
}

/// What [`start_tasks`] needs.
pub struct NodeTasks<'a> {
    /// The node's config.
    pub config: &'a NodeFile,
    /// Its keys.
    pub keys: &'a NodeKeys,
    /// Bytes of every packet frame.
    pub packet_len: usize,
    /// The document it starts from.
    pub document: &'a NetworkDocument,
    /// Where peers and clients connect.
    pub listener: TcpListener,
    /// Where metrics are served, if anywhere.
    pub metrics_listener: Option<TcpListener>,
    /// Its metrics.
    pub metrics: &'a Arc<Metrics>,
    /// HTTP client for the authority.
    pub http: &'a reqwest::Client,
    /// The directory authorities it trusts.
    pub authorities: crate::Authorities,
    /// Epoch length.
    pub epoch_ms: u64,
}

/// Starts what every node runs beside its loop (the metrics server, the
/// accept loop, the document refresher) into `tasks`; returns the inbound
/// queue and the link keys the accept loop trusts.
pub fn start_tasks(
    setup: NodeTasks<'_>,
    tasks: &mut AbortOnDrop,
) -> (mpsc::Receiver<Inbound>, PeerKeys) {
    if let Some(listener) = setup.metrics_listener {
        tasks.0.push(tokio::spawn(metrics::serve(
            listener,
            setup.metrics.clone(),
        )));
    }
    let peers_by_link_key = Arc::new(RwLock::new(link_keys(setup.document)));
    let (inbound_tx, inbound) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    tasks.0.push(tokio::spawn(accept_loop(
        setup.listener,
        Arc::new(AcceptContext {
            link_secret: setup.keys.link_secret,
            packet_len: setup.packet_len,
            role: setup.config.role,
            peers_by_link_key: peers_by_link_key.clone(),
            inbound: inbound_tx.clone(),
            metrics: setup.metrics.clone(),
        }),
    )));
    tasks.0.push(tokio::spawn(refresh_document(
        setup.http.clone(),
        setup.authorities,
        setup.epoch_ms,
        peers_by_link_key.clone(),
        inbound_tx,
    )));
    (inbound, peers_by_link_key)
}

/// Link keys of the document's nodes, shared with the accept loop.
pub type PeerKeys = Arc<RwLock<HashMap<[u8; 32], NodeId>>>;

/// Fetches the current document every [`DOCUMENT_REFRESH`] and hands each
/// new one to the node's loop (and its link keys to the accept loop).
async fn refresh_document(
    http: reqwest::Client,
    authorities: crate::Authorities,
    epoch_ms: u64,
    peers_by_link_key: PeerKeys,
    inbound: mpsc::Sender<Inbound>,
) {
    let mut known = None;
    loop {
        tokio::time::sleep(DOCUMENT_REFRESH).await;
        let epoch = epoch_at(unix_ms(), epoch_ms);
        let Ok(document) = fetch_document(&http, &authorities, epoch, false).await else {
            continue;
        };
        if known.as_ref() != Some(&document) {
            *peers_by_link_key.write().expect("peer map") = link_keys(&document);
            known = Some(document.clone());
            if inbound
                .send(Inbound::Document(Box::new(document)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Node IDs by Noise link key, for the document's nodes.
pub fn link_keys(document: &NetworkDocument) -> HashMap<[u8; 32], NodeId> {
    document
        .nodes
        .iter()
        .map(|n| (n.link_key, n.id()))
        .collect()
}

/// Sleeps until `deadline`, or for ever without one.
pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funion_pki::{NodeEntry, Parameters};

    const PACKET_LEN: usize = 37_000;

    /// A peer on loopback with a receive buffer of a few kB. If `stall_first`,
    /// its first connection is held open and never read (it backs up at
    /// once); every other connection's frames come out of the receiver,
    /// with the number of the connection they came by.
    async fn peer(
        stall_first: bool,
    ) -> (
        NodeEntry,
        NetworkDocument,
        mpsc::UnboundedReceiver<(usize, Frame)>,
    ) {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        socket.listen(16).unwrap();
        socket.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(socket.into()).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let peer_secret = [7u8; 32];
        let (got_tx, got) = mpsc::unbounded_channel::<(usize, Frame)>();
        tokio::spawn(async move {
            let mut stalled = Vec::new();
            for conn in 0.. {
                let (stream, _) = listener.accept().await.unwrap();
                let link = link::respond(stream, &peer_secret, PACKET_LEN)
                    .await
                    .unwrap();
                if stall_first && conn == 0 {
                    stalled.push(link);
                    continue;
                }
                let got_tx = got_tx.clone();
                tokio::spawn(async move {
                    let _open = link.sender;
                    let mut receiver = link.receiver;
                    while let Ok(frame) = receiver.recv().await {
                        if got_tx.send((conn, frame)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let entry = NodeEntry {
            name: "peer".into(),
            role: Role::Mix,
            layer: 1,
            identity_key: [1; 32],
            link_key: link::public_link_key(&peer_secret),
            addresses: vec![address],
            sphinx_keys: Vec::new(),
            models: Vec::new(),
            fast_path: false,
        };
        let document = NetworkDocument {
            epoch: 1,
            parameters: Parameters::fast(),
            nodes: vec![entry.clone()],
        };
        (entry, document, got)
    }

    /// The next frame the peer got; a bound on a failing run, not a timing
    /// claim.
    async fn next(got: &mut mpsc::UnboundedReceiver<(usize, Frame)>) -> (usize, Frame) {
        tokio::time::timeout(Duration::from_secs(20), got.recv())
            .await
            .expect("the peer stopped receiving")
            .unwrap()
    }

    /// A peer that never reads one connection: the link still delivers
    /// all but at most the one frame the stuck connection took.
    #[tokio::test]
    async fn a_stuck_connection_holds_up_only_the_frame_it_took() {
        const FRAMES: usize = 40;
        let (entry, document, mut got) = peer(true).await;
        let metrics = Arc::new(Metrics::new("test".into()));
        let mut peers = Peers::new([3; 32], PACKET_LEN, metrics);
        for i in 0..FRAMES {
            peers.send(
                entry.id(),
                &document,
                Frame::Packet(vec![i as u8; PACKET_LEN - 100]),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut connections = std::collections::BTreeSet::new();
        while seen.len() < FRAMES - 1 {
            let (conn, frame) = next(&mut got).await;
            let Frame::Packet(body) = frame else {
                panic!("not a packet")
            };
            assert!(seen.insert(body[0]), "frame {} twice", body[0]);
            connections.insert(conn);
        }
        assert!(connections.len() >= 2, "frames went over {connections:?}");
    }

    /// Pigeonhole's messages to a peer arrive in the order they were sent,
    /// over one connection, while packets to it spread over several.
    #[tokio::test]
    async fn storage_messages_keep_their_order() {
        const FRAMES: usize = 40;
        let (entry, document, mut got) = peer(false).await;
        let metrics = Arc::new(Metrics::new("test".into()));
        let mut peers = Peers::new([3; 32], PACKET_LEN, metrics);
        for i in 0..FRAMES {
            peers.send(entry.id(), &document, Frame::Storage(vec![i as u8; 30_000]));
            peers.send(entry.id(), &document, Frame::Packet(vec![i as u8; 30_000]));
        }
        let (mut storage, mut packet_connections) = (Vec::new(), std::collections::BTreeSet::new());
        let mut storage_connections = std::collections::BTreeSet::new();
        while storage.len() < FRAMES || packet_connections.len() < 2 {
            match next(&mut got).await {
                (conn, Frame::Storage(body)) => {
                    storage.push(body[0] as usize);
                    storage_connections.insert(conn);
                }
                (conn, Frame::Packet(_)) => {
                    packet_connections.insert(conn);
                }
                (_, other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(storage, (0..FRAMES).collect::<Vec<_>>());
        assert_eq!(storage_connections.len(), 1);
        assert!(packet_connections.is_disjoint(&storage_connections));
    }
}
