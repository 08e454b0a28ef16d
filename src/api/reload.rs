//! Reloading a running node's files without a restart (SIGHUP, or the
//! admin RPC behind `thresig node reload`): its policy, and its certificate,
//! key, CA bundle and CRL. Each part that fails keeps what was in force and
//! says why; the other part still reloads.

use std::sync::Arc;

use crate::node::Node;
use crate::transport::tls::TlsState;

/// What can be reloaded on one node.
#[derive(Clone, Debug)]
pub struct Reloader {
    pub node: Arc<Node>,
    pub tls: Arc<TlsState>,
}

/// What a reload did: each part's summary, or why it kept the old one.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    pub policy: Result<String, String>,
    pub tls: Result<String, String>,
}

impl ReloadReport {
    /// Every part reloaded.
    pub fn ok(&self) -> bool {
        self.policy.is_ok() && self.tls.is_ok()
    }

    /// One line per part, for logs and the CLI.
    pub fn lines(&self) -> Vec<String> {
        let line = |what: &str, r: &Result<String, String>| match r {
            Ok(s) => format!("{what} reloaded: {s}"),
            Err(e) => format!("{what} not reloaded, the previous one stays in force: {e}"),
        };
        vec![
            line("policy", &self.policy),
            line("TLS material", &self.tls),
        ]
    }
}

impl Reloader {
    /// Rereads the policy and the TLS material. New handshakes and new
    /// outgoing connections use the new material; open connections finish
    /// on theirs. Client request signatures are checked anew.
    pub fn reload(&self) -> ReloadReport {
        let policy = self.node.reload_policy().map_err(|e| e.to_string());
        let tls = self.tls.reload().map_err(|e| e.to_string());
        if tls.is_ok() {
            self.node.forget_verified_requests();
        }
        let report = ReloadReport { policy, tls };
        for l in report.lines() {
            if report.ok() {
                tracing::info!(node = %self.node.name(), "{l}");
            } else {
                tracing::warn!(node = %self.node.name(), "{l}");
            }
        }
        report
    }
}
