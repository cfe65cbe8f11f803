//! A Pigeonhole storage replica for real: the state machine
//! ([`funion_pigeonhole::replica::Replica`]: intermediate, holder,
//! replicator) over Noise links from couriers and other replicas, its
//! storage effects carried out against redb ([`BoxStore`]) on blocking
//! threads, and the epoch clock.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod store;

use std::sync::Arc;
use std::time::Duration;

use funion_pigeonhole::replica::storage::{execute, StorageAnswer, StorageEffect};
use funion_pigeonhole::replica::{Replica, ReplicaConfig, ReplicaEffect};
use funion_pki::{NetworkDocument, Parameters, Role};
use funion_sphinx::kem::Kem;
use funion_sphinx::NodeId;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::store::BoxStore;
use funion_net::config::{NodeFile, NodeKeys};
use funion_net::directory::{publish, publish_at_start};
use funion_net::link::Frame;
use funion_net::metrics::Metrics;
use funion_net::peers::{start_tasks, AbortOnDrop, Inbound, NodeTasks, Peers};
use funion_net::unix_ms;

/// How often the loop looks at timeouts and the replication queue.
const TICK: Duration = Duration::from_millis(50);
/// Inbound messages handled per durable batch.
const BATCH: usize = 256;

/// Runs a replica until the task is dropped or fails (the node's `run`
/// starts it for a storage node).
pub async fn run<K: Kem>(
    config: NodeFile,
    parameters: Parameters,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
) -> anyhow::Result<()> {
    let keys =
        Arc::new(NodeKeys::from_config(&config.secret_seed)?.with_epoch_store(&config.data_dir));
    let authorities =
        funion_net::Authorities::new(&config.authorities, config.authority_threshold)?;
    let geometry = parameters.geometry()?;
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Arc::new(BoxStore::open(
        &config.data_dir.join("boxes.redb"),
        config.box_lifetime_s.saturating_mul(1000),
    )?);

    let mut epoch = publish_at_start::<K>(&http, &config, &keys, parameters.epoch_ms, &[]).await?;
    let document =
        funion_net::wait_for_document(&http, &authorities, epoch, parameters.epoch_ms).await?;
    epoch = epoch.max(document.epoch);

    let mut tasks = AbortOnDrop(Vec::new());
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
            authorities,
            epoch_ms: parameters.epoch_ms,
        },
        &mut tasks,
    );

    let own_id = NodeId(keys.identity.verifying_key().to_bytes());
    let sizes = funion_pigeonhole::envelope::Sizes::for_geometry(&geometry)?;
    let holders = usize::from(parameters.replicas.max(1));
    let replica = Replica::<K>::new(ReplicaConfig::new(
        own_id,
        sizes,
        holders,
        config.box_lifetime_s,
    ));
    let mut shell = Shell {
        replica,
        store,
        document,
        peers: Peers::new(keys.link_secret, geometry.packet_len(), metrics.clone()),
        metrics: metrics.clone(),
        clock: Instant::now(),
        unexpected_frames: 0,
    };
    let previous = match keys.epoch_store() {
        Some(store) if epoch > 0 => store.existing(epoch - 1)?.map(|_| epoch - 1),
        _ => None,
    };
    for e in previous.into_iter().chain([epoch, epoch + 1]) {
        shell
            .replica
            .add_epoch_key(e, K::secret_from_seed(&keys.sphinx_seed(e)?));
    }
    shell.replica.set_epoch(epoch);
    shell.set_document(None);
    tracing::info!(name = %config.name, epoch, "replica running");

    let epoch_start =
        |e: u64| Duration::from_millis((e * parameters.epoch_ms).saturating_sub(unix_ms()));
    let mut next_epoch = Instant::now() + epoch_start(epoch + 1);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = inbound.recv() => {
                let Some(first) = message else { break };
                shell.inbound(first);
                for _ in 1..BATCH {
                    match inbound.try_recv() {
                        Ok(message) => shell.inbound(message),
                        Err(_) => break,
                    }
                }
            }
            _ = tick.tick() => {
                let now = shell.now();
                shell.replica.tick(now);
                for (name, value) in shell.replica.counters() {
                    shell.metrics.set_storage(name, *value);
                }
                if let Some(owed) = shell.replica.copies_owed() {
                    shell.metrics.set_storage("copies_owed", owed);
                }
            }
            _ = tokio::time::sleep_until(next_epoch) => {
                epoch += 1;
                shell.replica.add_epoch_key(epoch + 1, K::secret_from_seed(&keys.sphinx_seed(epoch + 1)?));
                // The epoch before the previous one is over, grace and all.
                if let Some(store) = keys.epoch_store() {
                    if let Err(error) = store.erase_before(epoch.saturating_sub(1)) {
                        tracing::error!(%error, "cannot erase an old Sphinx key");
                    }
                }
                shell.replica.set_epoch(epoch);
                // Off the loop, as the document's refresh is: writes keep
                // being answered while the authority answers (or not).
                let (http, config, keys, next) = (http.clone(), config.clone(), keys.clone(), epoch + 1);
                tokio::spawn(async move {
                    if let Err(error) = publish::<K>(&http, &config, &keys, next, &[]).await {
                        tracing::warn!(%error, "could not publish the next epoch's descriptor");
                    }
                });
                next_epoch = Instant::now() + epoch_start(epoch + 1);
            }
        }
        shell.drive().await;
    }
    Ok(())
}

/// The replica state machine and what carries out its effects.
struct Shell<K: Kem> {
    replica: Replica<K>,
    store: Arc<BoxStore>,
    document: NetworkDocument,
    peers: Peers,
    metrics: Arc<Metrics>,
    clock: Instant,
    unexpected_frames: u64,
}

impl<K: Kem> Shell<K> {
    fn now(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64
    }

    /// Adopts a newer document (or the current one again, with `None`).
    fn set_document(&mut self, new: Option<NetworkDocument>) {
        if let Some(new) = new {
            if new.epoch < self.document.epoch {
                return;
            }
            self.document = new;
        }
        self.metrics.set_document_nodes(self.document.nodes.len());
        let replicas = self
            .document
            .with_role(Role::Replica)
            .map(|n| n.id())
            .collect();
        self.replica.set_replicas(replicas);
    }

    fn inbound(&mut self, message: Inbound) {
        match message {
            Inbound::Frame {
                source: funion_mixnet::Source::Peer(from),
                frame: Frame::Storage(bytes),
                ..
            } => {
                let now = self.now();
                self.replica.handle(now, from, &bytes);
            }
            Inbound::Frame { .. } => {
                self.unexpected_frames += 1;
                self.metrics
                    .set_storage("unexpected_frame", self.unexpected_frames);
            }
            Inbound::Document(new) => self.set_document(Some(*new)),
            Inbound::ClientConnected { .. } | Inbound::ClientGone(_) => {}
        }
    }

    /// Carries out the replica's effects until it has none: sends at once,
    /// storage on a blocking thread (a batch of writes is one durable redb
    /// transaction), each answer handed back.
    async fn drive(&mut self) {
        loop {
            let effects = self.replica.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    ReplicaEffect::Send { to, bytes } => {
                        self.peers.send(to, &self.document, Frame::Storage(bytes))
                    }
                    ReplicaEffect::Storage(effect) => {
                        let answer = self.store_effect(effect).await;
                        if let Some(error) = answer.error() {
                            tracing::error!(%error, "replica store failed");
                        }
                        if let StorageAnswer::Expired(Ok(n)) = answer {
                            if n > 0 {
                                tracing::info!(boxes = n, "expired boxes deleted");
                            }
                        }
                        let now = self.now();
                        self.replica.answer(now, answer);
                    }
                }
            }
        }
    }

    async fn store_effect(&self, effect: StorageEffect) -> StorageAnswer {
        let store = self.store.clone();
        let blocking = matches!(
            effect,
            StorageEffect::Write { .. } | StorageEffect::LoadBacklog { .. } | StorageEffect::Expire
        );
        if !blocking {
            return execute(&mut &*store, effect, unix_ms());
        }
        let fallback = StorageAnswer::failure(&effect, "the store's thread died");
        tokio::task::spawn_blocking(move || execute(&mut &*store, effect, unix_ms()))
            .await
            .unwrap_or(fallback)
    }
}
