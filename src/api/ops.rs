//! The ops plane: HTTP/1.1 `GET /healthz`, `/readyz` and `/metrics`
//! (Prometheus text), served by hyper, meant for a private network or the
//! kubelet and Prometheus only. Connections are capped in number and time;
//! nothing here touches keys.
//!
//! A watcher probes the roster every `PROBE_EVERY` and checks the audit chain
//! every `AUDIT_EVERY`; `/metrics` and `/readyz` answer from its last
//! findings at once, so a scrape or a probe never waits on a peer.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::node::{Health, Node};
use crate::telemetry::{Metrics, METRICS_CONTENT_TYPE};
use crate::transport::tls::TlsState;

/// Liveness: the process serves.
pub const HEALTHZ: &str = "/healthz";
/// Readiness: this node can take part in signing (see `readiness`).
pub const READYZ: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";

/// Keys in trouble `/readyz` lists at most (`key_counts` counts all).
const LISTED_KEYS: usize = 100;
/// Keys its "no key has t ..." reason names at most.
const LISTED_KEYS_IN_REASON: usize = 10;

const MAX_CONNECTIONS: usize = 64;
/// How long one connection may take, request and answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the roster is pinged for the peer and key series.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How often the audit chain is checked end to end.
const AUDIT_EVERY: Duration = Duration::from_secs(600);

/// What the ops plane answers from.
pub struct OpsState {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    tls: Option<Arc<TlsState>>,
    last: RwLock<Option<(Instant, Arc<Health>)>>,
}

impl OpsState {
    pub fn new(node: Arc<Node>, metrics: Arc<Metrics>, tls: Option<Arc<TlsState>>) -> Arc<Self> {
        Arc::new(Self {
            node,
            metrics,
            tls,
            last: RwLock::new(None),
        })
    }

    fn last(&self) -> Option<(Instant, Arc<Health>)> {
        self.last
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// One probe of the roster, kept for the next scrapes and probes.
    pub async fn probe(&self) {
        match self.node.health().await {
            Ok(h) => {
                self.metrics.set_health(&h);
                *self
                    .last
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((Instant::now(), Arc::new(h)));
            }
            Err(e) => tracing::warn!(error = %e, "ops plane: probing the roster failed"),
        }
    }

    fn check_audit(&self) {
        match self.node.store().audit_verify() {
            Ok(r) => {
                if let Some((at, why)) = &r.first_bad {
                    tracing::error!(entry = at, why = %why, "audit chain check failed");
                }
                self.metrics.set_audit(r.first_bad.is_none(), r.good);
            }
            Err(e) => {
                tracing::error!(error = %e, "audit chain could not be read");
                self.metrics.set_audit(false, 0);
            }
        }
    }

    /// Seconds until the node certificate and its CA expire, if known.
    fn cert_left(&self) -> Option<(i64, i64)> {
        let e = self.tls.as_ref()?.expiry()?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Some((e.cert_left(now), e.ca_left(now)))
    }

    fn metrics_text(&self) -> String {
        if let Some((node, ca)) = self.cert_left() {
            self.metrics.set_cert_expiry(node, ca);
        }
        if let Some((at, _)) = self.last() {
            self.metrics.set_probe_age(at.elapsed());
        }
        self.metrics
            .set_refusals(self.node.peer_refusals(), self.node.coalesced_refusals());
        self.metrics.render()
    }

    /// Whether this node can take part in signing now, and why not: it is
    /// not shutting down, its store opens, its certificate and CA are valid,
    /// and it holds no keys or at least one key has t committee nodes
    /// answering (from the last probe, at most a few seconds old).
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let mut why_not: Vec<String> = Vec::new();
        if self.node.is_draining() {
            why_not.push("shutting down: taking no new sessions".into());
        }
        if self.node.is_comparing_at_start() {
            why_not.push(
                "starting: comparing every key's state with its committee members first".into(),
            );
        }
        let store = match self.node.keys() {
            Ok(k) => json!({"ok": true, "keys": k.len()}),
            Err(e) => {
                why_not.push(format!("store: {e}"));
                json!({"ok": false, "error": e.to_string()})
            }
        };
        let certificate = match self.cert_left() {
            Some((node, ca)) => {
                if node <= 0 {
                    why_not.push("this node's certificate has expired".into());
                }
                if ca <= 0 {
                    why_not.push("the CA certificate has expired".into());
                }
                json!({"node_expires_in_s": node, "ca_expires_in_s": ca})
            }
            None => json!(null),
        };
        let last = self.last();
        let keys = match &last {
            None => {
                why_not.push("no probe of the roster yet".into());
                json!([])
            }
            Some((_, h)) => {
                let signable: Vec<_> = h.keys.iter().filter(|k| k.state != "frozen").collect();
                if !signable.is_empty() && !signable.iter().any(|k| k.quorum()) {
                    why_not.push(format!(
                        "no key has t committee nodes answering ({}{})",
                        signable
                            .iter()
                            .take(LISTED_KEYS_IN_REASON)
                            .map(|k| format!("{}: {} of t={}", k.key_id, k.reachable, k.threshold))
                            .collect::<Vec<_>>()
                            .join(", "),
                        match signable.len().saturating_sub(LISTED_KEYS_IN_REASON) {
                            0 => String::new(),
                            more => format!(", and {more} more"),
                        }
                    ));
                }
                // Only the keys in trouble, at most `LISTED_KEYS`: the body
                // stays small whatever the number of keys (`key_counts`
                // counts them all).
                h.keys
                    .iter()
                    .filter(|k| k.in_trouble())
                    .take(LISTED_KEYS)
                    .map(|k| {
                        json!({
                            "key": k.key_id.to_string(),
                            "state": k.state,
                            "threshold": k.threshold,
                            "reachable": k.reachable,
                            "quorum": k.quorum(),
                        })
                    })
                    .collect()
            }
        };
        let peers = last.as_ref().map_or_else(
            || json!([]),
            |(_, h)| {
                h.nodes
                    .iter()
                    .filter(|n| !n.this_node)
                    .map(|n| match &n.answer {
                        Ok(_) => json!({"node": n.name.to_string(), "up": true,
                            "rtt_ms": n.rtt.as_secs_f64() * 1000.0}),
                        Err(e) => json!({"node": n.name.to_string(), "up": false, "error": e}),
                    })
                    .collect()
            },
        );
        let key_counts = last.as_ref().map_or_else(
            || json!(null),
            |(_, h)| {
                json!({
                    "total": h.keys.len(),
                    "in_trouble": h.keys.iter().filter(|k| k.in_trouble()).count(),
                })
            },
        );
        let ready = why_not.is_empty();
        let body = json!({
            "ready": ready,
            "node": self.node.name().to_string(),
            "key_counts": key_counts,
            "why_not": why_not,
            "store": store,
            "certificate": certificate,
            "keys": keys,
            "peers": peers,
            "probe_age_s": last.map(|(at, _)| at.elapsed().as_secs_f64()),
        });
        (ready, body)
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let text = |code: StatusCode, ctype: &str, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = code;
            if let Ok(v) = http::HeaderValue::from_str(ctype) {
                r.headers_mut().insert(http::header::CONTENT_TYPE, v);
            }
            r
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match req.uri().path() {
            HEALTHZ => text(StatusCode::OK, "text/plain", "ok\n".into()),
            READYZ => {
                let (ready, body) = self.readiness();
                let code = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(code, "application/json", format!("{body}\n"))
            }
            METRICS => text(StatusCode::OK, METRICS_CONTENT_TYPE, self.metrics_text()),
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("not found; try {HEALTHZ}, {READYZ} or {METRICS}\n"),
            ),
        }
    }
}

/// Probes the roster every `PROBE_EVERY` and the audit chain every
/// `AUDIT_EVERY` until `stop` turns true.
pub async fn watch(state: Arc<OpsState>, mut stop: watch::Receiver<bool>) {
    let mut last_audit: Option<Instant> = None;
    loop {
        state.probe().await;
        if last_audit.is_none_or(|t| t.elapsed() >= AUDIT_EVERY) {
            let s = state.clone();
            // A long chain takes a while to walk: off the async threads.
            let _ = tokio::task::spawn_blocking(move || s.check_audit()).await;
            last_audit = Some(Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Serves until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<OpsState>, mut stop: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((sock, _)) = accepted else {
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = state.answer(&req);
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .keep_alive(false)
                .serve_connection(TokioIo::new(sock), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}
