//! Prometheus text-format metrics: packets in, out, delivered and dropped by
//! reason, queue depth, link failures.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use funion_mixnet::Counters;
use funion_pigeonhole::courier::CourierCounters;
use tokio::net::TcpListener;

/// A node's metrics.
pub struct Metrics {
    node: String,
    counters: Mutex<(Counters, usize)>,
    bad_links: AtomicU64,
    link_failures: AtomicU64,
    send_drops: AtomicU64,
    shed: Gauges,
    queue_peak: AtomicU64,
    replay_sync_failures: AtomicU64,
    document_nodes: AtomicU64,
    storage: Gauges,
    compute: Gauges,
}

impl Metrics {
    /// Metrics for the node named `node`.
    pub fn new(node: String) -> Self {
        Metrics {
            node,
            counters: Mutex::new((Counters::default(), 0)),
            bad_links: AtomicU64::new(0),
            link_failures: AtomicU64::new(0),
            send_drops: AtomicU64::new(0),
            shed: Mutex::new(std::collections::BTreeMap::new()),
            queue_peak: AtomicU64::new(0),
            replay_sync_failures: AtomicU64::new(0),
            document_nodes: AtomicU64::new(0),
            storage: Mutex::new(std::collections::BTreeMap::new()),
            compute: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// Copies the state machine's counters.
    pub fn update(&self, counters: &Counters, queue_depth: usize) {
        self.queue_peak
            .fetch_max(queue_depth as u64, Ordering::Relaxed);
        let mut guard = self.counters.lock().expect("metrics");
        if guard.0 != *counters || guard.1 != queue_depth {
            *guard = (counters.clone(), queue_depth);
        }
    }

    /// How many nodes the document this node works from lists.
    pub fn set_document_nodes(&self, nodes: usize) {
        self.document_nodes.store(nodes as u64, Ordering::Relaxed);
    }

    /// How many nodes this node knows of (0 before its first document).
    pub fn document_nodes(&self) -> u64 {
        self.document_nodes.load(Ordering::Relaxed)
    }

    /// Sets a storage counter (courier or replica), exported as
    /// `funion_storage_NAME`.
    pub fn set_storage(&self, name: &'static str, value: u64) {
        set_gauge(&self.storage, name, value);
    }

    /// A storage counter's value now (0 if never set).
    pub fn storage(&self, name: &str) -> u64 {
        gauge(&self.storage, name)
    }

    /// Sets a compute courier counter, exported as `funion_compute_NAME`.
    pub fn set_compute(&self, name: &'static str, value: u64) {
        set_gauge(&self.compute, name, value);
    }

    /// A compute counter's value now (0 if never set).
    pub fn compute(&self, name: &str) -> u64 {
        gauge(&self.compute, name)
    }

    /// Copies the courier's counters.
    pub fn update_courier(&self, counters: &CourierCounters, entries: usize) {
        let values = [
            ("courier_envelopes", counters.envelopes),
            ("courier_duplicates", counters.duplicates),
            ("courier_forwarded", counters.forwarded),
            ("courier_replica_replies", counters.replica_replies),
            ("courier_answered", counters.answered),
            ("courier_acks", counters.acks),
            ("courier_refused", counters.refused),
            ("courier_stray", counters.stray),
            ("courier_entries", entries as u64),
        ];
        let mut storage = self.storage.lock().expect("metrics");
        for (name, value) in values {
            storage.insert(name, value);
        }
    }

    /// A link closed for a bad frame or handshake.
    pub fn count_bad_link(&self) {
        self.bad_links.fetch_add(1, Ordering::Relaxed);
    }

    /// An outgoing connection attempt failed.
    pub fn count_link_failure(&self) {
        self.link_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A packet or reply could not be queued on its link.
    pub fn count_send_drop(&self) {
        self.send_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// A packet the runtime dropped to stay within its bounds (`reason` is
    /// exported as a label of `funion_packets_dropped_total`).
    pub fn count_shed(&self, reason: &'static str) {
        *self
            .shed
            .lock()
            .expect("metrics")
            .entry(reason)
            .or_default() += 1;
    }

    /// Packets the runtime dropped for `reason` so far.
    pub fn shed(&self, reason: &str) -> u64 {
        gauge(&self.shed, reason)
    }

    /// A sync of the replay log failed.
    pub fn count_replay_sync_failure(&self) {
        self.replay_sync_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Packets this node holds now (delay queue and replay log together).
    pub fn queue_depth(&self) -> usize {
        self.counters.lock().expect("metrics").1
    }

    /// The most packets this node has held at once (delay queue and replay
    /// log together).
    pub fn queue_peak(&self) -> u64 {
        self.queue_peak.load(Ordering::Relaxed)
    }

    /// The state machine's counters now.
    pub fn counters(&self) -> Counters {
        self.counters.lock().expect("metrics").0.clone()
    }

    /// Links closed for bad input so far.
    pub fn bad_links(&self) -> u64 {
        self.bad_links.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let (counters, depth) = self.counters.lock().expect("metrics").clone();
        let node = &self.node;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP funion_{name} {help}");
            let _ = writeln!(out, "# TYPE funion_{name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "funion_{name}{{node=\"{node}\"{labels}}} {value}");
            }
        };
        metric(
            "packets_received_total",
            "counter",
            "Sphinx packets received.",
            vec![(String::new(), counters.received)],
        );
        metric(
            "packets_sent_total",
            "counter",
            "Sphinx packets sent on.",
            vec![(String::new(), counters.sent)],
        );
        metric(
            "messages_delivered_total",
            "counter",
            "Messages handed to services.",
            vec![(String::new(), counters.delivered)],
        );
        metric(
            "replies_queued_total",
            "counter",
            "Replies queued for clients.",
            vec![(String::new(), counters.replies_queued)],
        );
        metric(
            "packets_dropped_total",
            "counter",
            "Packets dropped, by reason.",
            counters
                .dropped
                .iter()
                .map(|(reason, n)| (format!(",reason=\"{}\"", reason.label()), *n))
                .chain([(
                    ",reason=\"link_queue_full\"".to_string(),
                    self.send_drops.load(Ordering::Relaxed),
                )])
                .chain(
                    self.shed
                        .lock()
                        .expect("metrics")
                        .iter()
                        .map(|(reason, n)| (format!(",reason=\"{reason}\""), *n)),
                )
                .collect(),
        );
        metric(
            "queue_depth",
            "gauge",
            "Packets held for their delay.",
            vec![(String::new(), depth as u64)],
        );
        metric(
            "queue_peak",
            "gauge",
            "Most packets held at once since the node started.",
            vec![(String::new(), self.queue_peak.load(Ordering::Relaxed))],
        );
        metric(
            "replay_sync_failures_total",
            "counter",
            "Syncs of the replay log that failed (each retried after a backoff).",
            vec![(
                String::new(),
                self.replay_sync_failures.load(Ordering::Relaxed),
            )],
        );
        metric(
            "links_closed_bad_input_total",
            "counter",
            "Links closed after a bad frame or handshake.",
            vec![(String::new(), self.bad_links.load(Ordering::Relaxed))],
        );
        metric(
            "link_connect_failures_total",
            "counter",
            "Failed outgoing link attempts.",
            vec![(String::new(), self.link_failures.load(Ordering::Relaxed))],
        );
        metric(
            "document_nodes",
            "gauge",
            "Nodes listed in the document this node works from.",
            vec![(String::new(), self.document_nodes.load(Ordering::Relaxed))],
        );
        for (family, gauges, help) in [
            (
                "storage",
                &self.storage,
                "Pigeonhole courier or replica counter.",
            ),
            ("compute", &self.compute, "Compute courier counter."),
        ] {
            let gauges = gauges.lock().expect("metrics").clone();
            for (name, value) in gauges {
                metric(
                    &format!("{family}_{name}"),
                    "gauge",
                    help,
                    vec![(String::new(), value)],
                );
            }
        }
        out
    }
}

type Gauges = Mutex<std::collections::BTreeMap<&'static str, u64>>;

fn set_gauge(gauges: &Gauges, name: &'static str, value: u64) {
    gauges.lock().expect("metrics").insert(name, value);
}

fn gauge(gauges: &Gauges, name: &str) -> u64 {
    gauges
        .lock()
        .expect("metrics")
        .get(name)
        .copied()
        .unwrap_or(0)
}

/// Serves `GET /metrics`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.render() }),
        )
        .with_state(metrics);
    let _ = axum::serve(listener, app).await;
}
