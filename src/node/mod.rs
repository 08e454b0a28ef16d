//! Orchestration: sessions, the coordinator and participant roles, the
//! checks every participant makes for itself, and the ledger rule. Talks to
//! other nodes only through the `PeerNet` trait (implemented in
//! `transport/`), so nothing here knows gRPC.

mod coordinator;
pub mod participant;
pub mod policy;
mod repair;
pub mod request;
mod reshare;
mod rotation;
mod router;
mod session;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use coordinator::SignOutcome;
pub use repair::{repair_binding, RepairSummary};
pub use reshare::{reshare_binding, reshare_parties, ReshareSummary};
pub use rotation::RotateSummary;
pub use router::{Inbound, RouteError, Router};

use crate::domain::{DerivationPath, ExecutionId, KeyId, NodeName};
use crate::protocol::sign::Signature;
use crate::protocol::ProtocolError;
use crate::storage::{StorageError, Store};

/// Wire version of the peer protocol; peers with another version are refused.
pub const WIRE_VERSION: u32 = 1;

/// What a coordinator asks a participant to do.
#[derive(Debug, Clone)]
pub enum Operation {
    Keygen {
        key_id: KeyId,
        threshold: u32,
        committee: Vec<NodeName>,
    },
    /// Sign the client's `request`, which `auth` signs, with `participants`.
    Sign {
        epoch: u64,
        request: Box<request::SignRequest>,
        auth: Box<request::ClientAuth>,
        participants: Vec<NodeName>,
    },
    /// Proactive refresh of every share of a key at `epoch` (all of the committee).
    Refresh {
        key_id: KeyId,
        epoch: u64,
        committee: Vec<NodeName>,
    },
    /// Does this node hold a live share of the key, and (with `request_id`)
    /// what did it record for that signing request?
    ShareStatus {
        key_id: KeyId,
        request_id: Option<String>,
    },
    /// Rebuild the share of `target` from `helpers` (all committee members).
    Repair {
        key_id: KeyId,
        target: NodeName,
        helpers: Vec<NodeName>,
        record: Box<crate::storage::KeyRecord>,
    },
    /// Move the key at `epoch` to `committee` with `threshold`: `dealers`
    /// (t members of the current committee) deal their shares to the new
    /// committee, which then refreshes. The key's current public record
    /// travels with it because new members do not have it.
    Reshare {
        key_id: KeyId,
        epoch: u64,
        dealers: Vec<NodeName>,
        committee: Vec<NodeName>,
        threshold: u8,
        record: Box<crate::storage::KeyRecord>,
    },
    /// Gossip before a slot-carrying signature: raise this node's watermark
    /// for the client's signed request (checked like a sign proposal), or
    /// refuse if it conflicts.
    Watermark {
        request: Box<request::SignRequest>,
        auth: Box<request::ClientAuth>,
    },
    /// Asked of a member the reshare (the proposal's eid and nonce) removed
    /// from the key, once every new member has activated: delete its share.
    /// The fields are those of the reshare, so the node can recompute its eid.
    Retire {
        key_id: KeyId,
        epoch: u64,
        dealers: Vec<NodeName>,
        committee: Vec<NodeName>,
        threshold: u8,
    },
    /// Switch to the staged `epoch`, which every participant confirmed with `confirmation`.
    Activate {
        key_id: KeyId,
        epoch: u64,
        confirmation: [u8; 32],
    },
}

/// A proposal: the operation, its execution id and the coordinator's nonce.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub eid: ExecutionId,
    pub nonce: Vec<u8>,
    pub op: Operation,
}

/// A participant's answer to a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Keygen {
        public_key: Vec<u8>,
        chain_code: [u8; 32],
        package_hash: [u8; 32],
    },
    Sign(Signature),
    /// The refreshed share is staged; every party computed `confirmation`.
    Refresh {
        confirmation: [u8; 32],
    },
    /// The staged epoch is now active here.
    Activated,
    /// The epoch of the share this node holds, if any, and whether it may
    /// sign with it (false while a repaired share awaits its refresh, or a
    /// joining node's share awaits activation; such a node reports the epoch
    /// it joins after). `rotation` is the execution id of the rotation or
    /// reshare that activated that epoch.
    ShareStatus {
        epoch: Option<u64>,
        signing: bool,
        rotation: Option<[u8; 32]>,
        /// This node's ledger entry for the request id asked about, if any.
        ledger: Option<Box<crate::storage::LedgerEntry>>,
    },
    /// A new member of a reshare staged its share; every new member computed
    /// `confirmation`, and `public_key` is the key its new share belongs to.
    Reshared {
        confirmation: [u8; 32],
        public_key: Vec<u8>,
    },
    /// A dealer leaving the committee sent its dealings.
    Dealt,
    /// This node's share of the key is deleted (it left the committee).
    Retired,
    /// The slot watermark is raised (or already there for this digest).
    Watermarked,
    /// This node's part of a repair is done.
    Repaired,
}

/// How a call to another node failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("node {node}: {kind}")]
pub struct NetError {
    pub node: NodeName,
    pub kind: NetErrorKind,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum NetErrorKind {
    #[error("unreachable ({0})")]
    Unreachable(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Calls to other nodes. Implemented by the transport over mTLS gRPC.
pub trait PeerNet: Send + Sync + 'static {
    fn ping(&self, to: &NodeName) -> BoxFuture<'static, Result<(), NetError>>;
    /// Runs a proposal at `to`. A refusal there comes back as the matching
    /// `NodeError` variant, its message prefixed with the node's name.
    fn propose(
        &self,
        to: &NodeName,
        proposal: Proposal,
    ) -> BoxFuture<'static, Result<Outcome, NodeError>>;
    fn deliver(
        &self,
        to: &NodeName,
        eid: ExecutionId,
        round: u32,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), NetError>>;
}

/// Errors of the node layer. `api/` maps each variant to one gRPC status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    /// Over a rate limit; the message says when to retry.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Net(#[from] NetError),
    #[error(
        "round {round} timed out after {after:?} waiting for {}",
        names(missing)
    )]
    Timeout {
        round: u32,
        after: Duration,
        missing: Vec<NodeName>,
    },
    #[error("protocol aborted{}: {error}", blamed.as_ref().map(|n| format!(" (blames node {n})")).unwrap_or_default())]
    Protocol {
        blamed: Option<NodeName>,
        #[source]
        error: ProtocolError,
    },
    /// Another node aborted the session (its message says why).
    #[error("{0}")]
    Aborted(String),
    #[error("store: {0}")]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

fn names(v: &[NodeName]) -> String {
    v.iter()
        .map(NodeName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Timeouts of a node.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a session waits for one round from every peer.
    pub round: Duration,
    /// How long a liveness probe may take.
    pub ping: Duration,
}

impl Timeouts {
    /// Upper bound on one whole session (setup plus four rounds, with slack).
    pub fn session(&self) -> Duration {
        self.round * 6
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            round: Duration::from_secs(10),
            ping: Duration::from_secs(2),
        }
    }
}

/// One signer node.
pub struct Node {
    name: NodeName,
    roster: Vec<NodeName>,
    store: Store,
    net: Arc<dyn PeerNet>,
    router: Router,
    timeouts: Timeouts,
    /// Keys whose signing is paused by a rotation (its eid), until the given instant.
    paused: std::sync::Mutex<std::collections::HashMap<KeyId, (std::time::Instant, ExecutionId)>>,
    /// Checks clients' request signatures.
    verifier: Arc<dyn request::RequestVerifier>,
    /// The policy file (if configured) and the policy read from it.
    policy_file: Option<std::path::PathBuf>,
    policy: std::sync::RwLock<Arc<policy::Policy>>,
    limiter: policy::Limiter,
    /// Nodes that recently failed a probe (see `coordinator`).
    suspects: std::sync::Mutex<std::collections::HashMap<NodeName, std::time::Instant>>,
    /// Gates of the signing sessions this node coordinates.
    gates: coordinator::Gates,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("roster", &self.roster)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// `policy_file` is read now (and again on `reload_policy`); without
    /// one, every client and admin request is denied.
    pub fn new(
        name: NodeName,
        roster: Vec<NodeName>,
        store: Store,
        net: Arc<dyn PeerNet>,
        timeouts: Timeouts,
        verifier: Arc<dyn request::RequestVerifier>,
        policy_file: Option<std::path::PathBuf>,
    ) -> Result<Self, NodeError> {
        let policy = match &policy_file {
            Some(path) => policy::Policy::load(path).map_err(NodeError::InvalidArgument)?,
            None => policy::Policy::default(),
        };
        Ok(Self {
            name,
            roster,
            store,
            net,
            router: Router::default(),
            timeouts,
            paused: Default::default(),
            verifier: Arc::new(request::CachedVerifier::new(verifier)),
            policy_file,
            policy: std::sync::RwLock::new(Arc::new(policy)),
            limiter: policy::Limiter::default(),
            suspects: Default::default(),
            gates: Default::default(),
        })
    }

    /// Reads the policy file again and switches to it; on error the current
    /// policy stays. Returns a one-line summary.
    pub fn reload_policy(&self) -> Result<String, NodeError> {
        let path = self.policy_file.as_ref().ok_or_else(|| {
            NodeError::FailedPrecondition(format!(
                "node {} has no policy file configured (set `policy = \"...\"` in its config)",
                self.name
            ))
        })?;
        let p = policy::Policy::load(path).map_err(NodeError::InvalidArgument)?;
        let mut g = self
            .policy
            .write()
            .map_err(|_| NodeError::Internal("policy lock poisoned; policy not reloaded".into()))?;
        let summary = format!(
            "policy {} loaded on node {}: {} client rules, {} key limits, {} admin rules",
            path.display(),
            self.name,
            p.client.len(),
            p.key.len(),
            p.admin.len()
        );
        *g = Arc::new(p);
        drop(g);
        tracing::info!("{summary}");
        Ok(summary)
    }

    /// The policy in force on this node.
    pub fn policy(&self) -> Arc<policy::Policy> {
        self.policy
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|_| Arc::new(policy::Policy::default()))
    }

    /// Policy check of a client's sign request (and, with `charge`, its rate
    /// limits). Every participant runs it; the coordinator charges the rate
    /// once, before it proposes.
    pub(crate) fn authorize_sign(
        &self,
        client: &NodeName,
        req: &request::SignRequest,
        charge: bool,
    ) -> Result<(), NodeError> {
        let policy = self.policy();
        let d = policy.check_sign(client.as_str(), &req.key_id, &req.path);
        if !d.allowed {
            tracing::warn!(%client, key = %req.key_id, path = %req.path, rule = %d.rule, "sign request denied by policy");
            return Err(NodeError::PermissionDenied(format!(
                "node {}: client {client}: {d}",
                self.name
            )));
        }
        if charge {
            self.charge_rate(client, req)?;
        }
        Ok(())
    }

    /// May `client` read the public key of `key` at `path`? The same rule as
    /// signing there (no rate limit).
    pub fn authorize_key_read(
        &self,
        client: &NodeName,
        key: &KeyId,
        path: &DerivationPath,
    ) -> Result<(), NodeError> {
        let d = self.policy().check_sign(client.as_str(), key, path);
        if d.allowed {
            Ok(())
        } else {
            Err(NodeError::PermissionDenied(format!(
                "node {}: client {client}: {d}",
                self.name
            )))
        }
    }

    /// Takes one token from the client's and the key's rate limits.
    pub(crate) fn charge_rate(
        &self,
        client: &NodeName,
        req: &request::SignRequest,
    ) -> Result<(), NodeError> {
        if let Err((which, wait)) = self
            .limiter
            .take(&self.policy(), client.as_str(), &req.key_id)
        {
            return Err(NodeError::ResourceExhausted(format!(
                "{which} is over its rate limit on node {}; retry in {:.2} s",
                self.name,
                wait.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// Appends an event to this node's audit log (durably).
    pub fn audit(&self, event: crate::storage::AuditEvent) -> Result<u64, NodeError> {
        self.store.audit_append(event, now_unix()).map_err(|e| {
            tracing::error!(error = %e, "cannot write the audit log");
            NodeError::from(e)
        })
    }

    /// Audits an admin request's outcome (best effort: the operation has
    /// already happened or failed) and passes it through.
    pub fn audit_admin<T>(
        &self,
        admin: &NodeName,
        operation: &str,
        key: &str,
        r: Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let (decision, detail) = match &r {
            Ok(_) => ("ok", String::new()),
            Err(e) => ("failed", e.to_string()),
        };
        let _ = self.audit(crate::storage::AuditEvent {
            kind: format!("admin.{operation}"),
            actor: format!("admin/{admin}"),
            key: key.to_owned(),
            decision: decision.into(),
            rule: "policy".into(),
            detail,
            ..Default::default()
        });
        r
    }

    /// Policy check of an admin operation (one of `policy::ADMIN_OPERATIONS`).
    pub fn authorize_admin(&self, admin: &NodeName, operation: &str) -> Result<(), NodeError> {
        let d = self.policy().check_admin(admin.as_str(), operation);
        if d.allowed {
            Ok(())
        } else {
            let _ = self.audit(crate::storage::AuditEvent {
                kind: format!("admin.{operation}"),
                actor: format!("admin/{admin}"),
                decision: "denied".into(),
                rule: d.rule.clone(),
                detail: d.reason.clone(),
                ..Default::default()
            });
            tracing::warn!(%admin, operation, rule = %d.rule, "admin request denied by policy");
            Err(NodeError::PermissionDenied(format!(
                "node {}: admin {admin}: {d}",
                self.name
            )))
        }
    }

    /// Pauses signing with `key` on this node for rotation `eid`, for at most
    /// `for_at_most`. Refuses while another rotation holds the key.
    pub(crate) fn pause(
        &self,
        key: &KeyId,
        eid: ExecutionId,
        for_at_most: Duration,
    ) -> Result<(), NodeError> {
        let mut g = self
            .paused
            .lock()
            .map_err(|_| NodeError::Internal("pause table poisoned".into()))?;
        let now = std::time::Instant::now();
        if let Some((until, other)) = g.get(key) {
            if *until > now && *other != eid {
                return Err(NodeError::FailedPrecondition(format!(
                    "another rotation of key {key} ({other}) is in progress on node {}",
                    self.name
                )));
            }
        }
        g.insert(key.clone(), (now + for_at_most, eid));
        Ok(())
    }

    /// Lifts the pause of rotation `eid` (not another rotation's).
    pub(crate) fn resume(&self, key: &KeyId, eid: &ExecutionId) {
        if let Ok(mut g) = self.paused.lock() {
            if g.get(key).is_some_and(|(_, e)| e == eid) {
                g.remove(key);
            }
        }
    }

    /// Refuses (UNAVAILABLE, with a retry hint) while a rotation holds the key.
    pub(crate) fn check_not_paused(&self, key: &KeyId) -> Result<(), NodeError> {
        let until = self
            .paused
            .lock()
            .ok()
            .and_then(|g| g.get(key).map(|(t, _)| *t));
        match until {
            Some(t) if t > std::time::Instant::now() => Err(NodeError::Unavailable(format!(
                "key {key} is being rotated on node {}; signing is paused for at most {}s more",
                self.name,
                t.saturating_duration_since(std::time::Instant::now())
                    .as_secs()
                    + 1
            ))),
            _ => Ok(()),
        }
    }

    pub fn name(&self) -> &NodeName {
        &self.name
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A protocol message from authenticated node `from`.
    pub fn deliver(
        &self,
        from: NodeName,
        eid: ExecutionId,
        round: u32,
        payload: Vec<u8>,
    ) -> Result<(), RouteError> {
        if !self.roster.contains(&from) {
            return Err(RouteError::UnknownSender(from));
        }
        self.router.deliver(
            eid,
            Inbound {
                from,
                round,
                payload,
            },
        )
    }

    pub fn key(&self, id: &KeyId) -> Result<crate::storage::KeyRecord, NodeError> {
        self.store
            .key(id)?
            .ok_or_else(|| NodeError::NotFound(format!("key {id} not found on node {}", self.name)))
    }

    pub fn keys(&self) -> Result<Vec<crate::storage::KeyRecord>, NodeError> {
        Ok(self.store.keys()?)
    }
}

/// A key's committee as node names, in party order.
pub(crate) fn committee_of(rec: &crate::storage::KeyRecord) -> Result<Vec<NodeName>, NodeError> {
    rec.committee
        .iter()
        .map(|c| {
            NodeName::parse(c)
                .map_err(|e| NodeError::Internal(format!("key {}: committee: {e}", rec.key_id)))
        })
        .collect()
}

/// "a (why), b (why)" for nodes that could not take part.
pub(crate) fn reasons(down: &[(NodeName, String)]) -> String {
    down.iter()
        .map(|(n, why)| format!("{n} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
