//! Tracing setup. Log lines never carry secret material: secret types have
//! redacted `Debug`, and nothing formats shares or passphrases.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr; the level comes from RUST_LOG, else `default` (e.g. "info").
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},h2=warn,tower=warn,hyper=warn")));
    // Colour only on a terminal: a log file, a pipe or a journal gets plain
    // text (NO_COLOR turns it off on a terminal too).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        // One flat object per line: the event's fields at the top level, the
        // request's (op, request_id, key, client, eid) under "span".
        LogFormat::Json => b
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// The node's metrics, in the Prometheus text format on the ops plane
/// (`/metrics`), rendered by the Prometheus project's client library. Labels
/// carry no key material and no client input beyond key ids and node names.
/// The series and their meaning are listed in the README ("Metrics, readiness
/// and logs").
pub struct Metrics {
    registry: Registry,
    requests: Family<OpLabels, Counter>,
    latency: Family<OpLabels, Histogram, fn() -> Histogram>,
    sessions: Gauge,
    key_reachable: Family<KeyLabel, Gauge>,
    key_threshold: Family<KeyLabel, Gauge>,
    key_state: Family<KeyStateLabels, Gauge>,
    keys: Family<CertLabel, Gauge>,
    keys_quorum: Family<CertLabel, Gauge>,
    peer_up: Family<PeerLabel, Gauge>,
    peer_rtt: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    cert_expiry: Family<CertLabel, Gauge>,
    audit_valid: Gauge,
    audit_entries: Gauge,
    health_age: Gauge<f64, AtomicU64>,
    handshakes_cut: Family<CertLabel, Counter>,
    connections_refused: Family<CertLabel, Counter>,
    limits: Family<CertLabel, Gauge>,
    peer_refusals: Counter,
    peer_refusals_coalesced: Counter,
    /// Serialises the catch-up of the counters above (two scrapes at once
    /// must not both add the same difference).
    refusals_sync: std::sync::Mutex<()>,
}

type OpLabels = [(&'static str, &'static str); 2];
type KeyLabel = [(&'static str, String); 1];
type KeyStateLabels = [(&'static str, String); 2];
type PeerLabel = [(&'static str, String); 1];
type CertLabel = [(&'static str, &'static str); 1];

/// Buckets of the latency histograms: 5 ms to about 20 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// "healthy" (more than t committee nodes answer), "at_risk" (exactly t)
/// or "lost" (fewer).
fn quorum_of(k: &crate::node::KeyHealth) -> &'static str {
    match k.reachable.cmp(&usize::from(k.threshold)) {
        std::cmp::Ordering::Greater => "healthy",
        std::cmp::Ordering::Equal => "at_risk",
        std::cmp::Ordering::Less => "lost",
    }
}

/// The states a key gauge reports (one series each, 1 for the current one).
const KEY_STATES: [&str; 5] = ["active", "frozen", "repairing", "joining", "generated"];

impl Metrics {
    /// `version` and `wire_version` go into `thresig_build_info`.
    pub fn new(version: &str, wire_version: u32) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<OpLabels, Counter>::default();
        registry.register(
            "thresig_requests",
            "Client and admin requests this node answered, by operation and outcome (ok or a gRPC \
             status name)",
            requests.clone(),
        );
        let latency = Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "thresig_request_duration_seconds",
            "Time to answer a client or admin request, by operation and outcome",
            latency.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "thresig_sessions_in_flight",
            "Protocol sessions (sign, keygen, rotate, ...) running on this node",
            sessions.clone(),
        );
        let key_reachable = Family::<KeyLabel, Gauge>::default();
        registry.register(
            "thresig_key_reachable_nodes",
            "Committee nodes of the key that answered the last probe (this node included when the \
             key is active here)",
            key_reachable.clone(),
        );
        let key_threshold = Family::<KeyLabel, Gauge>::default();
        registry.register(
            "thresig_key_threshold",
            "Nodes a signature of the key needs (t)",
            key_threshold.clone(),
        );
        let key_state = Family::<KeyStateLabels, Gauge>::default();
        registry.register(
            "thresig_key_state",
            "The key's state on this node: 1 for the current state, 0 for the others",
            key_state.clone(),
        );
        let keys = Family::<CertLabel, Gauge>::default();
        registry.register(
            "thresig_keys",
            "Keys this node holds, by state (a fixed set of series, whatever the number of keys)",
            keys.clone(),
        );
        let keys_quorum = Family::<CertLabel, Gauge>::default();
        registry.register(
            "thresig_keys_quorum",
            "Keys this node holds, by how many committee nodes answered the last probe: \
             healthy (more than t), at_risk (exactly t), lost (fewer than t)",
            keys_quorum.clone(),
        );
        let peer_up = Family::<PeerLabel, Gauge>::default();
        registry.register(
            "thresig_peer_up",
            "Whether the roster node answered the last ping on the peer plane",
            peer_up.clone(),
        );
        let peer_rtt = Family::<PeerLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "thresig_peer_rtt_seconds",
            "Round trip of the last ping to the roster node (absent while it does not answer)",
            peer_rtt.clone(),
        );
        let cert_expiry = Family::<CertLabel, Gauge>::default();
        registry.register(
            "thresig_certificate_expiry_seconds",
            "Seconds until this node's certificate (certificate=\"node\") or the CA that issued \
             it (certificate=\"ca\") expires; negative once expired",
            cert_expiry.clone(),
        );
        let audit_valid = Gauge::default();
        registry.register(
            "thresig_audit_chain_valid",
            "1 if the last check of this node's audit chain found every entry intact, else 0",
            audit_valid.clone(),
        );
        let audit_entries = Gauge::default();
        registry.register(
            "thresig_audit_entries",
            "Entries in this node's audit chain at the last check",
            audit_entries.clone(),
        );
        let health_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "thresig_probe_age_seconds",
            "Age of the peer probe behind the key and peer series",
            health_age.clone(),
        );
        let build = Family::<[(&'static str, String); 2], Gauge>::default();
        build
            .get_or_create(&[
                ("version", version.to_owned()),
                ("wire_version", wire_version.to_string()),
            ])
            .set(1);
        registry.register(
            "thresig_build_info",
            "Always 1; the labels say which thresig version and wire version this node runs",
            build,
        );
        let handshakes_cut = Family::<CertLabel, Counter>::default();
        for plane in PLANES {
            let _ = handshakes_cut.get_or_create(&[("plane", plane)]);
        }
        registry.register(
            "thresig_handshakes_cut",
            "Pending TLS handshakes cut to make room for newer connections, by plane: stalled \
             ones (no bytes for 2 s), or when every pending one is live and the bound is reached, \
             the oldest of the busiest source (counted per process)",
            handshakes_cut.clone(),
        );
        let connections_refused = Family::<CertLabel, Counter>::default();
        for plane in PLANES {
            let _ = connections_refused.get_or_create(&[("plane", plane)]);
        }
        registry.register(
            "thresig_connections_refused",
            "Authenticated connections refused because their identity already held its most \
             ([limits] connections_per_node on the peer plane, default 64; connections_per_client \
             on the client plane, default 1024), by plane (counted per process)",
            connections_refused.clone(),
        );
        let limits = Family::<CertLabel, Gauge>::default();
        registry.register(
            "thresig_limit",
            "The configured budgets ([limits] in the node config), by limit: \
             connections_per_node, connections_per_client, refusal_window_seconds, \
             refusals_audited, refusals_per_window",
            limits.clone(),
        );
        let peer_refusals = Counter::default();
        registry.register(
            "thresig_peer_refusals",
            "Proposals of other nodes this node refused (every reason; counted per process)",
            peer_refusals.clone(),
        );
        let peer_refusals_coalesced = Counter::default();
        registry.register(
            "thresig_peer_refusals_coalesced",
            "Refused proposals of other nodes not audited one by one (past refusals_audited in a \
             window, or refused at once by the budget); counted per process",
            peer_refusals_coalesced.clone(),
        );
        Self {
            handshakes_cut,
            connections_refused,
            limits,
            peer_refusals,
            peer_refusals_coalesced,
            refusals_sync: std::sync::Mutex::new(()),
            registry,
            requests,
            latency,
            sessions,
            key_reachable,
            key_threshold,
            key_state,
            keys,
            keys_quorum,
            peer_up,
            peer_rtt,
            cert_expiry,
            audit_valid,
            audit_entries,
            health_age,
        }
    }

    /// Counts one request of `op` ("sign", "keygen", "rotate", ...) that
    /// ended with `outcome` ("ok" or a status code name) after `took`.
    pub fn observe(&self, op: &'static str, outcome: &'static str, took: std::time::Duration) {
        let labels = [("op", op), ("outcome", outcome)];
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Replaces the peer, key and session series with `h`, just taken: the
    /// key counts by state and quorum, and the own series of each key in
    /// trouble.
    pub fn set_health(&self, h: &crate::node::Health) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.sessions.set(count(h.sessions_in_flight));
        self.health_age.set(0.0);
        self.peer_up.clear();
        self.peer_rtt.clear();
        for n in h.nodes.iter().filter(|n| !n.this_node) {
            let label = [("peer", n.name.to_string())];
            self.peer_up
                .get_or_create(&label)
                .set(i64::from(n.answer.is_ok()));
            if n.answer.is_ok() {
                self.peer_rtt.get_or_create(&label).set(n.rtt.as_secs_f64());
            }
        }
        self.key_reachable.clear();
        self.key_threshold.clear();
        self.key_state.clear();
        for state in KEY_STATES {
            let n = h.keys.iter().filter(|k| k.state == state).count();
            self.keys.get_or_create(&[("state", state)]).set(count(n));
        }
        for quorum in ["healthy", "at_risk", "lost"] {
            let n = h.keys.iter().filter(|k| quorum_of(k) == quorum).count();
            self.keys_quorum
                .get_or_create(&[("quorum", quorum)])
                .set(count(n));
        }
        // One key's own series only while it is in trouble (not active
        // here, or one node failure from losing its quorum): the series
        // count stays bounded whatever the number of healthy keys, and the
        // alerts on a key's series fire as before.
        for k in h.keys.iter().filter(|k| k.in_trouble()) {
            let key = [("key", k.key_id.to_string())];
            self.key_reachable
                .get_or_create(&key)
                .set(count(k.reachable));
            self.key_threshold
                .get_or_create(&key)
                .set(i64::from(k.threshold));
            for state in KEY_STATES {
                self.key_state
                    .get_or_create(&[("key", k.key_id.to_string()), ("state", state.to_owned())])
                    .set(i64::from(k.state == state));
            }
        }
    }

    /// How long ago the series of `set_health` were taken.
    pub fn set_probe_age(&self, age: std::time::Duration) {
        self.health_age.set(age.as_secs_f64());
    }

    /// Seconds until the node certificate and its CA expire.
    pub fn set_cert_expiry(&self, node_left: i64, ca_left: i64) {
        self.cert_expiry
            .get_or_create(&[("certificate", "node")])
            .set(node_left);
        self.cert_expiry
            .get_or_create(&[("certificate", "ca")])
            .set(ca_left);
    }

    /// The configured connection caps and refusal budget (`thresig_limit`).
    pub fn set_limits(
        &self,
        caps: crate::transport::ConnectionCaps,
        budget: crate::node::refusals::RefusalBudget,
    ) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let size = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        for (name, v) in [
            ("connections_per_node", size(caps.per_node)),
            ("connections_per_client", size(caps.per_client)),
            ("refusal_window_seconds", n(budget.window.as_secs())),
            ("refusals_audited", n(budget.audited)),
            ("refusals_per_window", n(budget.limit)),
        ] {
            self.limits.get_or_create(&[("limit", name)]).set(v);
        }
    }

    /// The node's refusal counts since start (`thresig_peer_refusals_total`
    /// and `thresig_peer_refusals_coalesced_total`).
    pub fn set_refusals(&self, total: u64, coalesced: u64) {
        let _one = self
            .refusals_sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (counter, now) in [
            (&self.peer_refusals, total),
            (&self.peer_refusals_coalesced, coalesced),
        ] {
            counter.inc_by(now.saturating_sub(counter.get()));
        }
    }

    /// The result of the last audit chain check.
    pub fn set_audit(&self, valid: bool, entries: u64) {
        self.audit_valid.set(i64::from(valid));
        self.audit_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// The Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        for (family, totals) in [
            (&self.handshakes_cut, &HANDSHAKES_CUT),
            (&self.connections_refused, &CONNECTIONS_REFUSED),
        ] {
            for (plane, total) in PLANES.iter().zip(totals) {
                let counter = family.get_or_create(&[("plane", *plane)]);
                let total = total.load(std::sync::atomic::Ordering::Relaxed);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics could not be rendered");
        }
        out
    }
}

/// Pending TLS handshakes cut to make room for newer connections, in this
/// process, per plane (peer, client); exported as
/// `thresig_handshakes_cut_total`.
static HANDSHAKES_CUT: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];
const PLANES: [&str; 2] = ["peer", "client"];

/// Counts `n` handshakes cut on `plane` ("peer" or "client").
pub fn note_handshakes_cut(plane: &str, n: usize) {
    if let Some(i) = PLANES.iter().position(|p| *p == plane) {
        if let Some(c) = HANDSHAKES_CUT.get(i) {
            c.fetch_add(
                u64::try_from(n).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }
}

/// Authenticated connections refused because their identity held its most
/// connections, per plane; exported as `thresig_connections_refused_total`.
static CONNECTIONS_REFUSED: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

/// Counts one connection refused on `plane` ("peer" or "client").
pub fn note_connection_refused(plane: &str) {
    if let Some(c) = PLANES
        .iter()
        .position(|p| *p == plane)
        .and_then(|i| CONNECTIONS_REFUSED.get(i))
    {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The content type of `Metrics::render`.
pub const METRICS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[cfg(test)]
#[path = "telemetry_tests.rs"]
mod tests;
