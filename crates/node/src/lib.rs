//! One node (gateway, mix or service) for real: Noise links in and out, the
//! [`funion_mixnet::Node`] state machine on the wall clock, replay tags made
//! durable before any packet leaves, replies pushed to subscribed clients,
//! Prometheus metrics.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use funion_mixnet::{service_recipient, Node, NodeConfig, Output, Source};
use funion_pigeonhole::courier::{Courier, CourierConfig, CourierOutput};
use funion_pki::{KemKind, Parameters, Role};
use funion_sphinx::kem::{Kem, XWing, X25519};
use funion_sphinx::{NodeId, ReplayTag, Surb};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use funion_net::config::{NodeFile, NodeKeys};
use funion_net::directory::{publish, publish_at_start};
use funion_net::link::Frame;
use funion_net::metrics::Metrics;
use funion_net::peers::{sleep_until, start_tasks, AbortOnDrop, Inbound, NodeTasks, Peers};
use funion_net::{fetch_parameters, unix_ms};

/// Most packets held for the replay log's sync at once; past it, new
/// packets are dropped (counted as `replay_log_stalled`) until the log syncs.
const MAX_HELD: usize = 2048;
/// Most inbound messages handled before the replay log is synced and the
/// resulting packets sent.
const INBOUND_BATCH: usize = 256;

/// Runs a node on an already bound listener (and metrics listener) until
/// the task is dropped or fails.
pub async fn run(
    config: NodeFile,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let http = funion_net::http_client()?;
    let authorities =
        funion_net::Authorities::new(&config.authorities, config.authority_threshold)?;
    let parameters = fetch_parameters(&http, &authorities).await?;
    let context = Running {
        config,
        parameters,
        listener,
        metrics_listener,
        metrics,
        http,
    };
    match context.parameters.kem {
        KemKind::XWing => run_kem::<XWing>(context).await,
        KemKind::X25519 => run_kem::<X25519>(context).await,
    }
}

struct Running {
    config: NodeFile,
    parameters: Parameters,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
}

/// Replay tags on disk: one append-only file of 32-byte records per key
/// epoch. Tags are written as packets are accepted; a background task syncs
/// them in groups (every [`SYNC_WINDOW`] while any are unsynced), and a
/// packet leaves only once the tags written before it are durable, so a
/// restarted node refuses everything it forwarded. Packets wait out their
/// mixing delay anyway; only a packet due sooner than a sync waits at all.
///
/// A sync that fails is logged with its cause and tried again after a
/// backoff (10 ms doubling to a second); meanwhile packets wait, at most
/// [`MAX_HELD`] of them, and the node drops the rest rather than grow.
struct ReplayLog {
    dir: PathBuf,
    files: Arc<std::sync::Mutex<HashMap<u64, Arc<File>>>>,
    written: Arc<AtomicU64>,
    durable: Arc<AtomicU64>,
    wake_syncer: Arc<tokio::sync::Notify>,
}

/// Syncs every open replay file; the first error names the file.
fn sync_all(open: &[(u64, Arc<File>)]) -> std::io::Result<()> {
    for (epoch, file) in open {
        file.sync_data().map_err(|error| {
            std::io::Error::new(error.kind(), format!("replay-{epoch}.tags: {error}"))
        })?;
    }
    Ok(())
}

/// How long tags gather before one sync covers them all.
const SYNC_WINDOW: Duration = Duration::from_millis(2);

impl ReplayLog {
    /// Opens the log and starts its syncer; `synced` is notified after each
    /// sync.
    fn start(
        dir: PathBuf,
        synced: Arc<tokio::sync::Notify>,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let log = ReplayLog {
            dir,
            files: Arc::new(std::sync::Mutex::new(HashMap::new())),
            written: Arc::new(AtomicU64::new(0)),
            durable: Arc::new(AtomicU64::new(0)),
            wake_syncer: Arc::new(tokio::sync::Notify::new()),
        };
        let (files, written, durable, wake) = (
            log.files.clone(),
            log.written.clone(),
            log.durable.clone(),
            log.wake_syncer.clone(),
        );
        let syncer = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(10);
            let mut failing_since: Option<Instant> = None;
            loop {
                wake.notified().await;
                tokio::time::sleep(SYNC_WINDOW).await;
                let target = written.load(Ordering::Acquire);
                let open: Vec<(u64, Arc<File>)> = files
                    .lock()
                    .expect("replay files")
                    .iter()
                    .map(|(e, f)| (*e, f.clone()))
                    .collect();
                let result = match tokio::task::spawn_blocking(move || sync_all(&open)).await {
                    Ok(result) => result,
                    // The runtime is shutting down: nothing is left to send.
                    Err(error) if error.is_cancelled() => return,
                    Err(error) => Err(std::io::Error::other(error.to_string())),
                };
                match result {
                    Ok(()) => {
                        if let Some(since) = failing_since.take() {
                            tracing::warn!(
                                after_s = since.elapsed().as_secs_f64(),
                                "the replay log syncs again; held packets go out"
                            );
                        }
                        backoff = Duration::from_millis(10);
                        durable.fetch_max(target, Ordering::AcqRel);
                        synced.notify_one();
                    }
                    Err(error) => {
                        metrics.count_replay_sync_failure();
                        if failing_since.is_none() {
                            failing_since = Some(Instant::now());
                        }
                        tracing::error!(
                            %error,
                            retry_ms = backoff.as_millis() as u64,
                            "cannot sync the replay log; packets wait (at most {MAX_HELD}, the rest are dropped)"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        wake.notify_one();
                    }
                }
            }
        });
        (log, syncer)
    }

    fn path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("replay-{epoch}.tags"))
    }

    /// The tags seen in `epoch`, the log repaired first if a crash tore
    /// its last record.
    fn load(&self, epoch: u64) -> std::io::Result<Vec<ReplayTag>> {
        let path = self.path(epoch);
        let (tags, torn) = read_tags(&path)?;
        if torn > 0 {
            tracing::warn!(
                path = %path.display(),
                torn_bytes = torn,
                kept = tags.len(),
                "the replay log's last record was torn (a crash mid-write); cut it off"
            );
        }
        Ok(tags)
    }

    /// Writes a tag; returns the count it must be durable up to.
    fn append(&mut self, epoch: u64, tag: &ReplayTag) -> std::io::Result<u64> {
        let path = self.path(epoch);
        let mut files = self.files.lock().expect("replay files");
        let file = match files.entry(epoch) {
            std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => slot.insert(Arc::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        };
        (&**file).write_all(&tag.0)?;
        drop(files);
        self.wake_syncer.notify_one();
        Ok(self.written.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// How many tags are on disk.
    fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// How many tags were written.
    fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    fn forget_before(&mut self, epoch: u64) {
        self.files
            .lock()
            .expect("replay files")
            .retain(|&e, _| e >= epoch);
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let old = name
                    .strip_prefix("replay-")
                    .and_then(|n| n.strip_suffix(".tags"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|e| e < epoch);
                if old {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// Reads a replay log of 32-byte tags. A file whose length is not a whole
/// number of tags was torn by a crash in the middle of a write: it is cut
/// back to its last whole tag (and synced) before anything is appended,
/// so later tags stay aligned. Returns the tags and how many bytes were
/// cut; a missing file is an empty log.
fn read_tags(path: &std::path::Path) -> std::io::Result<(Vec<ReplayTag>, u64)> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(error) => return Err(error),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let whole = bytes.len() - bytes.len() % 32;
    let torn = (bytes.len() - whole) as u64;
    if torn > 0 {
        file.set_len(whole as u64)?;
        file.sync_all()?;
    }
    let tags = bytes[..whole]
        .chunks_exact(32)
        .filter_map(|c| c.try_into().ok().map(ReplayTag))
        .collect();
    Ok((tags, torn))
}

async fn run_kem<K: Kem>(context: Running) -> anyhow::Result<()> {
    let Running {
        config,
        parameters,
        listener,
        metrics_listener,
        metrics,
        http,
    } = context;
    if config.role == Role::Replica {
        return funion_replica::run::<K>(
            config,
            parameters,
            listener,
            metrics_listener,
            metrics,
            http,
        )
        .await;
    }
    let keys =
        Arc::new(NodeKeys::from_config(&config.secret_seed)?.with_epoch_store(&config.data_dir));
    let authorities =
        funion_net::Authorities::new(&config.authorities, config.authority_threshold)?;
    let geometry = parameters.geometry()?;
    std::fs::create_dir_all(&config.data_dir)?;
    // Service nodes run the Pigeonhole courier beside the echo service.
    let sizes = funion_pigeonhole::envelope::Sizes::for_geometry(&geometry)?;
    let mut courier = (config.role == Role::Service).then(|| {
        Courier::new(
            sizes,
            CourierConfig {
                hold_us: config.courier_hold_ms * 1000,
                ..CourierConfig::default()
            },
        )
    });

    // Service nodes with models run a compute courier too: a task of its
    // own that is also a mixnet client. Its models are loaded and measured
    // first: the descriptor lists them.
    let compute_models = match (&config.compute, config.role) {
        (Some(compute), Role::Service) => Some(funion_compute_node::load_models(compute)?),
        _ => None,
    };
    let model_entries = match (&compute_models, &config.compute) {
        (Some(models), Some(compute)) => funion_compute_node::describe_models(compute, models)?,
        _ => Vec::new(),
    };
    let mut epoch =
        publish_at_start::<K>(&http, &config, &keys, parameters.epoch_ms, &model_entries).await?;
    let mut document =
        funion_net::wait_for_document(&http, &authorities, epoch, parameters.epoch_ms).await?;
    // Came up too late for that epoch's document: go on from the current.
    epoch = epoch.max(document.epoch);

    let synced = Arc::new(tokio::sync::Notify::new());
    let (mut log, syncer) =
        ReplayLog::start(config.data_dir.clone(), synced.clone(), metrics.clone());
    // Packets whose replay tags are not on disk yet: (tags needed, next hop, packet).
    let mut held: std::collections::VecDeque<(u64, NodeId, Vec<u8>)> =
        std::collections::VecDeque::new();
    let mut node_config = NodeConfig::for_role(config.role, parameters.send_rate());
    node_config.max_wait_us = max_wait_us(&parameters);
    if courier.is_some() {
        node_config.external_services.push(service_recipient(
            funion_pigeonhole::client::COURIER_SERVICE,
        ));
        node_config.external_services.push(service_recipient(
            funion_pigeonhole::client::COURIER_WAIT_SERVICE,
        ));
    }
    let courier_wait_recipient = service_recipient(funion_pigeonhole::client::COURIER_WAIT_SERVICE);
    let compute_wake = Arc::new(tokio::sync::Notify::new());
    let (compute_tx, compute_rx) = mpsc::channel::<funion_compute_node::Incoming>(1024);
    let (compute_reply_tx, mut compute_replies) =
        mpsc::channel::<funion_compute_node::Delivery>(1024);
    let mut compute_rx = Some(compute_rx);
    if compute_models.is_some() {
        node_config
            .external_services
            .push(service_recipient(funion_compute::client::COMPUTE_SERVICE));
        node_config.external_services.push(service_recipient(
            funion_compute::client::COMPUTE_FAST_SERVICE,
        ));
    }
    let compute_recipient = service_recipient(funion_compute::client::COMPUTE_SERVICE);
    let compute_fast_recipient = service_recipient(funion_compute::client::COMPUTE_FAST_SERVICE);
    let mut node = Node::<K>::new(node_config, geometry);
    // The courier's counters as last exported.
    let mut courier_counters = None;
    // The previous epoch's key only if this node had one (a restart
    // within the grace period); the current and next are drawn if new.
    let previous = match keys.epoch_store() {
        Some(store) if epoch > 0 => store.existing(epoch - 1)?.map(|_| epoch - 1),
        _ => None,
    };
    for e in previous.into_iter().chain([epoch, epoch + 1]) {
        let secret = K::secret_from_seed(&keys.sphinx_seed(e)?);
        node.add_epoch_key(e, secret, log.load(e)?)?;
    }
    node.set_current_epoch(epoch);
    // The previous epoch's key stays accepted for the grace period only.
    let grace_left = |e: u64| {
        Duration::from_millis(
            (e * parameters.epoch_ms + parameters.grace_ms).saturating_sub(unix_ms()),
        )
    };
    let mut retire_previous = Some((
        epoch.saturating_sub(1),
        tokio::time::Instant::now() + grace_left(epoch),
    ));

    let mut tasks = AbortOnDrop(vec![syncer]);
    let (mut inbound, _) = start_tasks(
        NodeTasks {
            config: &config,
            keys: &keys,
            packet_len: geometry.packet_len(),
            document: &document,
            listener,
            metrics_listener,
            metrics: &metrics,
            http: &http,
            authorities: authorities.clone(),
            epoch_ms: parameters.epoch_ms,
        },
        &mut tasks,
    );
    if let (Some(models), Some(compute)) = (compute_models, config.compute.as_ref()) {
        let gate = funion_compute_node::gate::TicketGate::new(
            parameters.credits.clone(),
            &compute.nullifiers,
            &config.data_dir,
        )
        .await
        .map_err(|e| anyhow::anyhow!("compute courier's ticket check: {e}"))?;
        let options = funion_compute_node::ComputeOptions {
            models,
            batch_window: Duration::from_millis(compute.batch_window_ms),
            max_batch: compute.max_batch.max(1),
            gate: Arc::new(gate),
            jobs: Arc::new(funion_compute_node::jobs::JobStore::open(&config.data_dir).await?),
        };
        let client = funion_net::config::ClientFile {
            authorities: config.authorities.clone(),
            authority_threshold: config.authority_threshold,
            models: Vec::new(),
        };
        let task = funion_compute_node::run(
            client,
            parameters.clone(),
            options,
            compute_rx.take().expect("taken once"),
            compute_reply_tx.clone(),
            compute_wake.clone(),
            metrics.clone(),
        );
        tasks.0.push(tokio::spawn(async move {
            if let Err(error) = task.await {
                tracing::error!(%error, "compute courier stopped");
            }
        }));
    }
    metrics.set_document_nodes(document.nodes.len());
    let mut peers = Peers::new(keys.link_secret, geometry.packet_len(), metrics.clone());
    let mut clients: HashMap<u64, mpsc::Sender<Frame>> = HashMap::new();
    let mut subscriptions: HashMap<[u8; 32], u64> = HashMap::new();
    tracing::info!(name = %config.name, role = ?config.role, epoch, "node running");

    let start = Instant::now();
    let now = move || start.elapsed().as_micros() as u64;
    let epoch_start =
        |e: u64| Duration::from_millis((e * parameters.epoch_ms).saturating_sub(unix_ms()));
    let mut next_epoch = tokio::time::Instant::now() + epoch_start(epoch + 1);
    loop {
        let courier_deadline = courier.as_ref().and_then(Courier::next_deadline);
        let deadline = match (node.next_deadline(), courier_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|d| tokio::time::Instant::from_std(start + Duration::from_micros(d)));
        enum Step {
            Inbound(Vec<Inbound>),
            Due,
            Synced,
            NewEpoch,
            GraceOver,
            ComputeReply(funion_compute_node::Delivery),
        }
        let step = tokio::select! {
            message = inbound.recv() => {
                let Some(first) = message else { break };
                // Take everything already waiting (up to a bound), so one
                // sync of the replay log covers the whole batch.
                let mut batch = vec![first];
                while batch.len() < INBOUND_BATCH {
                    match inbound.try_recv() {
                        Ok(message) => batch.push(message),
                        Err(_) => break,
                    }
                }
                Step::Inbound(batch)
            }
            _ = sleep_until(deadline) => Step::Due,
            _ = synced.notified(), if !held.is_empty() => Step::Synced,
            _ = tokio::time::sleep_until(next_epoch) => Step::NewEpoch,
            _ = sleep_until(retire_previous.map(|(_, at)| at)) => Step::GraceOver,
            Some(reply) = compute_replies.recv() => Step::ComputeReply(reply),
        };
        let mut outputs = Vec::new();
        let mut courier_outputs = Vec::new();
        match step {
            Step::Inbound(batch) => {
                for message in batch {
                    match message {
                        Inbound::Frame {
                            source,
                            frame: Frame::Packet(packet),
                            received,
                        } => {
                            let received = received.saturating_duration_since(start).as_micros();
                            outputs.extend(node.handle_packet_received(
                                now(),
                                received as u64,
                                source,
                                packet,
                            ))
                        }
                        Inbound::Frame {
                            source: Source::Client(conn),
                            frame: Frame::Subscribe(recipient),
                            ..
                        } => {
                            subscriptions.insert(recipient, conn);
                            outputs.push(Output::ReplyQueued { recipient });
                        }
                        Inbound::Frame {
                            source: Source::Peer(from),
                            frame: Frame::Storage(message),
                            ..
                        } => {
                            if let Some(courier) = courier.as_mut() {
                                courier_outputs.extend(courier.handle_replica_message(
                                    now(),
                                    from,
                                    &message,
                                ));
                            }
                        }
                        Inbound::Frame { .. } => {}
                        Inbound::Document(new) => {
                            if new.epoch >= document.epoch {
                                document = *new;
                                metrics.set_document_nodes(document.nodes.len());
                            }
                        }
                        Inbound::ClientConnected { conn, sender } => {
                            clients.insert(conn, sender);
                        }
                        Inbound::ClientGone(conn) => {
                            clients.remove(&conn);
                            subscriptions.retain(|_, c| *c != conn);
                            node.client_gone(conn);
                        }
                    }
                }
            }
            Step::Due => {
                outputs = node.poll(now());
                if let Some(courier) = courier.as_mut() {
                    courier_outputs.extend(courier.poll(now()));
                }
            }
            Step::Synced => {}
            Step::ComputeReply((surb, message)) => {
                courier_outputs.push(CourierOutput::Reply { surb, message });
            }
            Step::GraceOver => {
                if let Some((old, _)) = retire_previous.take() {
                    node.retire_epoch(old);
                    log.forget_before(old + 1);
                    if let Some(store) = keys.epoch_store() {
                        match store.erase_before(old + 1) {
                            Ok(erased) => tracing::info!(?erased, "old epochs' Sphinx keys erased"),
                            Err(error) => tracing::error!(%error, "cannot erase an old Sphinx key"),
                        }
                    }
                    tracing::info!(epoch = old, "grace period over; key retired");
                }
            }
            Step::NewEpoch => {
                epoch += 1;
                let secret = K::secret_from_seed(&keys.sphinx_seed(epoch + 1)?);
                // The next epoch's log is new unless the node ran in it
                // before a restart; one that cannot be read is reported.
                let seen = log.load(epoch + 1).unwrap_or_else(|error| {
                    tracing::error!(%error, epoch = epoch + 1, "cannot read the replay log");
                    Vec::new()
                });
                node.add_epoch_key(epoch + 1, secret, seen)?;
                node.retire_epoch(epoch.saturating_sub(2));
                node.set_current_epoch(epoch);
                retire_previous =
                    Some((epoch - 1, tokio::time::Instant::now() + grace_left(epoch)));
                // Off the loop: packets keep going out while the authority
                // answers (or does not). The new epoch's document comes
                // from the refresher within a second.
                let (http, config, keys, models) = (
                    http.clone(),
                    config.clone(),
                    keys.clone(),
                    model_entries.clone(),
                );
                let next = epoch + 1;
                tokio::spawn(async move {
                    if let Err(error) = publish::<K>(&http, &config, &keys, next, &models).await {
                        tracing::warn!(%error, "could not publish the next epoch's descriptor");
                    }
                });
                next_epoch = tokio::time::Instant::now() + epoch_start(epoch + 1);
            }
        }
        // Requests for the courier, and what it answers.
        let mut index = 0;
        while index < outputs.len() {
            if let Output::Deliver { .. } = outputs[index] {
                let Output::Deliver {
                    surb,
                    body,
                    recipient,
                } = outputs.remove(index)
                else {
                    unreachable!("checked above")
                };
                if recipient == compute_recipient || recipient == compute_fast_recipient {
                    // A fast-path dispatch: a held SURB for the output first.
                    let surb_len = geometry.surb_len();
                    let incoming = if recipient == compute_recipient {
                        Some(funion_compute_node::Incoming {
                            surb,
                            body,
                            held: None,
                        })
                    } else if body.len() >= surb_len {
                        Some(funion_compute_node::Incoming {
                            surb,
                            body: body[surb_len..].to_vec(),
                            held: Some(body[..surb_len].to_vec()),
                        })
                    } else {
                        tracing::debug!(len = body.len(), "fast dispatch shorter than a SURB");
                        None
                    };
                    let Some(incoming) = incoming else {
                        continue;
                    };
                    match compute_tx.try_send(incoming) {
                        Ok(()) => compute_wake.notify_one(),
                        Err(error) => {
                            let surb = error.into_inner().surb;
                            let busy = funion_compute::DispatchReply::Refused {
                                reason: "busy: the compute courier's queue is full".into(),
                            };
                            courier_outputs.push(CourierOutput::Reply {
                                surb,
                                message: busy.encode(),
                            });
                        }
                    }
                } else if let Some(courier) = courier.as_mut() {
                    let is_replica =
                        |id: &NodeId| document.node(id).is_some_and(|n| n.role == Role::Replica);
                    courier_outputs.extend(if recipient == courier_wait_recipient {
                        courier.handle_waiting_request(now(), surb, &body, is_replica)
                    } else {
                        courier.handle_request(now(), surb, &body, is_replica)
                    });
                }
                continue;
            }
            index += 1;
        }
        for output in courier_outputs {
            match output {
                CourierOutput::ToReplica { replica, message } => {
                    peers.send(replica, &document, Frame::Storage(message));
                }
                CourierOutput::Reply { surb, message } => {
                    let reply = Surb::from_bytes::<K>(&geometry, &surb).and_then(|surb| {
                        let to = surb.first_hop();
                        surb.reply(&geometry, &message).map(|packet| (to, packet))
                    });
                    match reply {
                        Ok((to, packet)) => outputs.push(Output::Send { to, packet }),
                        Err(error) => tracing::debug!(%error, "unusable SURB from a client"),
                    }
                }
            }
        }
        if let Some(courier) = courier.as_ref() {
            if courier_counters.as_ref() != Some(courier.counters()) {
                courier_counters = Some(courier.counters().clone());
                metrics.update_courier(courier.counters(), courier.entries());
            }
        }
        // Tags are written first; a packet leaves once every tag written
        // before it is durable.
        for output in &outputs {
            if let Output::PersistReplayTag { epoch, tag } = output {
                log.append(*epoch, tag)?;
            }
        }
        let durable = log.durable();
        let mut ready = Vec::new();
        while held
            .front()
            .is_some_and(|(needed, _, _)| *needed <= durable)
        {
            let (_, to, packet) = held.pop_front().expect("checked");
            ready.push((to, packet));
        }
        let needed = log.written();
        for output in outputs {
            match output {
                Output::PersistReplayTag { .. } | Output::Deliver { .. } => {}
                Output::Send { to, packet } => {
                    if needed > durable || !held.is_empty() {
                        if held.len() >= MAX_HELD {
                            metrics.count_shed("replay_log_stalled");
                            continue;
                        }
                        held.push_back((needed, to, packet));
                        continue;
                    }
                    ready.push((to, packet));
                }
                Output::ReplyQueued { recipient } => {
                    let Some(sender) = subscriptions.get(&recipient).and_then(|c| clients.get(c))
                    else {
                        // Its client went away: nobody will ever take these.
                        node.drop_replies(&recipient);
                        continue;
                    };
                    for reply in node.take_replies(&recipient) {
                        let frame = Frame::Reply {
                            surb_id: reply.surb_id,
                            payload: reply.payload,
                        };
                        if sender.try_send(frame).is_err() {
                            metrics.count_send_drop();
                        }
                    }
                }
            }
        }
        for (to, packet) in ready {
            peers.send(to, &document, Frame::Packet(packet));
        }
        metrics.update(node.counters(), node.queue_depth() + held.len());
    }
    Ok(())
}

/// How long a packet may wait in a node's own queues (after its link's
/// reader, before the node opens it): 100 ms, or five mean hop delays if
/// that is longer. Past it the node is behind and drops it unopened.
pub(crate) fn max_wait_us(parameters: &Parameters) -> u64 {
    (parameters.mean_delay_us * 5).max(100_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_replay_log_is_cut_back_to_whole_tags_and_stays_aligned() {
        let dir = std::env::temp_dir().join(format!("funion-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("replay-7.tags");
        let tags: Vec<[u8; 32]> = (1..=3u8).map(|i| [i; 32]).collect();
        let mut bytes: Vec<u8> = tags.concat();
        // A crash wrote 5 bytes of a fourth tag.
        bytes.extend_from_slice(&[9; 5]);
        std::fs::write(&path, &bytes).unwrap();

        let (read, torn) = read_tags(&path).unwrap();
        assert_eq!(torn, 5);
        assert_eq!(read.iter().map(|t| t.0).collect::<Vec<_>>(), tags);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 96);

        // A tag appended after the repair reads back whole, in its place.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[4; 32]).unwrap();
        let (read, torn) = read_tags(&path).unwrap();
        assert_eq!(torn, 0);
        assert_eq!(read.len(), 4);
        assert_eq!(read[3].0, [4; 32]);

        // No file is an empty log, not an error.
        let (read, torn) = read_tags(&dir.join("replay-8.tags")).unwrap();
        assert!(read.is_empty() && torn == 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
