//! Orchestration: one signer node, its sessions and the checks it makes
//! for itself. Talks to other nodes only through the `PeerNet` trait
//! (implemented in `transport/`), so nothing here knows gRPC, and names no
//! engine type (shares and packages are opaque, see `protocol/`).
//!
//! A table of contents:
//! - `ops/`: one room per operation (keygen, sign, rotate, repair,
//!   reshare), each with its coordinator and participant side and its
//!   execution id; `ops/mod.rs` routes proposals (`on_propose`).
//! - `propose.rs`: fan-out of a proposal to the parties, and the one way a
//!   participant claims and runs a session (`claim_session`, `run_session`).
//! - `committee.rs`: liveness probes, suspects, epochs and catch-up, share
//!   status, membership checks.
//! - `authz.rs`: policy, rate limits, verification of client requests, audit.
//! - `admin_request.rs`, `admin.rs`, `quorum.rs`: the signed admin request
//!   behind every key change, the check every node makes of it before it
//!   takes part, and the approvals its policy requires.
//! - `proposal.rs`: `Proposal`, `Operation`, `Outcome`, the `PeerNet` trait.
//! - `error.rs`: `NodeError`, what went wrong and whose fault it is.
//! - `request.rs`: the client's signed request and its canonical bytes.
//! - `policy.rs`: the policy file and rate limiter.
//! - `router.rs`, `session.rs`: message routing with bounds; one protocol
//!   run over the network with round deadlines.
//! - `shares.rs`: this node's shares opened from the store, and the cache
//!   of those opened for signing.
//! - `probe.rs`: status probes of a key's committee, and the catch-up of a missed activation.
//! - `status.rs`: the cluster as this node sees it (`thresig status`).
//! - `pause.rs`: the maintenance lock a rotation or reshare session holds (signing never waits for it).
//! - `drain.rs`: graceful shutdown (no new work, in-flight work finishes).
//! - `restored.rs`: keys restored from a backup wait for their committee's
//!   epoch and slot watermarks before they sign here.
//! - `faults.rs`: crash points for tests (compiled out without the
//!   `fault-injection` feature).
//!
//! `Node` itself keeps its fields and a few accessors.
// Numbers from peers are never trusted for arithmetic: every operation here is
// checked, saturating, or allowed with its reason.
#![deny(clippy::arithmetic_side_effects)]

pub mod activation;
mod admin;
pub mod admin_file;
pub mod admin_ops;
pub mod admin_request;
mod authz;
mod bans;
pub(crate) mod committee;
pub mod content_policy;
mod drain;
mod error;
pub mod faults;
mod lifecycle_sync;
pub use lifecycle_sync::{
    RECHECK as LIFECYCLE_RECHECK, UNHEARD_RECHECK as LIFECYCLE_UNHEARD_RECHECK,
};
pub mod limiter;
pub mod ops;
mod pause;
pub mod policy;
mod probe;
mod proposal;
mod propose;
mod quorum;
pub mod refusals;
pub mod request;
mod restored;
mod router;
mod session;
mod shares;
pub mod signed_evidence;
mod status;
mod windows;

use std::sync::Arc;
use std::time::Duration;

pub use admin::VerifiedAdmin;
pub use authz::VerifiedRequest;
pub(crate) use error::names;
pub use error::{NodeError, Reason};
pub use ops::repair::{repair_binding, RepairSummary};
pub use ops::reshare::{reshare_binding, reshare_parties, ReshareSummary};
pub use ops::rotate::RotateSummary;
pub use ops::sign::SignOutcome;
pub use ops::OpKind;
pub use proposal::{
    Maintenance, NetError, NetErrorKind, Operation, Outcome, PeerNet, PeerVersion, Proposal,
    StagedEpoch, WindowStep,
};
pub use router::{Inbound, RouteError, Router};
pub use status::{ClusterStatus, Health, KeyHealth, KeyView, NodeView};

use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::storage::Store;

/// Wire version of the peer protocol; peers with another version are refused.
/// 2: a participant's refusal travels as an answer with a reason code.
/// 3: key changes carry the signed admin request and its approvals.
/// 4: admin requests name their cluster, issue time and (freeze, unfreeze,
///    delete) the key's lifecycle sequence; signing proposals carry the
///    coordinator's lifecycle sequence; key records in repair and reshare
///    proposals carry it too.
/// 5: signing proposals carry typed payloads (and the slot each node
///    derives from one); a dry run (`Evaluate`) asks a node's verdict.
pub const WIRE_VERSION: u32 = 5;
/// The oldest wire version a node still accepts (N-1, for rolling upgrades).
/// A version-4 node reads no payload in a signing proposal: it checks the
/// client's signature over the v1 bytes, which a typed-payload request does
/// not have, and refuses it; raw-digest signing works across the upgrade.
pub const MIN_WIRE_VERSION: u32 = 4;

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
        self.round.saturating_mul(6)
    }

    /// How long a signing round waits: the round timeout, but at most
    /// `SIGN_ROUND` (or the probe timeout, if longer). A signing round is
    /// one message trip, so a participant that stalls is excluded, and the
    /// request retried without it, well within a client's deadline.
    pub fn sign_round(&self) -> Duration {
        self.round.min(SIGN_ROUND.max(self.ping))
    }

    /// How long after staging a rotation's share this node still lets the
    /// rotation's coordinator release it (`Store::discard_staged`): long
    /// enough for a coordinator's release right after a failed refresh, and
    /// after it the next rotation may finish the staged one (see
    /// `rotate::finish_abandoned`).
    pub fn release_window(&self) -> Duration {
        SIGN_ROUND.max(self.ping)
    }
}

/// The longest a signing round waits by default (see `Timeouts::sign_round`).
pub const SIGN_ROUND: Duration = Duration::from_secs(2);

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
    /// Keys a rotation or reshare session (its eid) is running for here, until at most the given instant.
    maintaining:
        std::sync::Mutex<std::collections::HashMap<KeyId, (std::time::Instant, ExecutionId)>>,
    /// Checks clients' request signatures (and peers' staging receipts).
    verifier: Arc<dyn request::RequestVerifier>,
    /// Signs this node's staging receipts with its node certificate key.
    signer: Arc<dyn activation::ReceiptSigner>,
    /// The policy file (if configured) and the policy read from it.
    policy_file: Option<std::path::PathBuf>,
    policy: std::sync::RwLock<Arc<policy::Policy>>,
    limiter: limiter::Limiter,
    /// Nodes that recently failed a probe (see `committee.rs`).
    /// Since when, and whether it was unreachable (not just not ready).
    suspects: std::sync::Mutex<std::collections::HashMap<NodeName, (std::time::Instant, bool)>>,
    /// Nodes that failed a signing session of a key (a round timed out
    /// waiting for them, a delivery to them failed, or they were blamed),
    /// and since when: signing with that key avoids them for a while.
    key_suspects:
        std::sync::Mutex<std::collections::HashMap<(KeyId, NodeName), std::time::Instant>>,
    /// Per key under elimination (`bans.rs`): how many requests this node
    /// coordinated since, so that each leaves out the next suspect in turn.
    elimination_turns: std::sync::Mutex<std::collections::HashMap<KeyId, usize>>,
    /// When this node last compared each key's lifecycle with a committee
    /// member other than a session's coordinator (`lifecycle_sync.rs`).
    lifecycle_heard: lifecycle_sync::Heard,
    /// Refused proposals per peer (`refusals.rs`).
    refusals: refusals::Refusals,
    /// Sign requests refused for a client's rate limit, per client
    /// (`refusals.rs`): audited one by one up to the budget, then coalesced.
    client_refusals: refusals::Refusals,
    /// Lifecycle changes offered by a peer that t members did not confirm
    /// (`ops/lifecycle.rs`), asked about again only after a while.
    lifecycle_unconfirmed: ops::lifecycle::Unconfirmed,
    /// Gates of the signing sessions this node coordinates (see `ops/sign`).
    gates: ops::sign::Gates,
    /// Typed payloads decoded moments ago (`ops/sign/payload.rs`).
    payload_cache: ops::sign::DecodeCache,
    /// Shares opened for signing (see `shares.rs`).
    opened: shares::OpenedShares,
    /// Draining and work in flight (see `drain.rs`).
    work: drain::Work,
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: NodeName,
        roster: Vec<NodeName>,
        store: Store,
        net: Arc<dyn PeerNet>,
        timeouts: Timeouts,
        verifier: Arc<dyn request::RequestVerifier>,
        signer: Arc<dyn activation::ReceiptSigner>,
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
            maintaining: Default::default(),
            verifier: Arc::new(request::CachedVerifier::new(verifier)),
            signer,
            policy_file,
            policy: std::sync::RwLock::new(Arc::new(policy)),
            limiter: limiter::Limiter::default(),
            suspects: Default::default(),
            key_suspects: Default::default(),
            elimination_turns: Default::default(),
            lifecycle_heard: Default::default(),
            refusals: Default::default(),
            client_refusals: Default::default(),
            lifecycle_unconfirmed: Default::default(),
            gates: Default::default(),
            payload_cache: Default::default(),
            opened: Default::default(),
            work: Default::default(),
        })
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

    /// Protocol messages node `from` sent for sessions (or rounds) it does
    /// not send in, refused or dropped, since start: the sender is the node
    /// whose certificate carried them.
    pub fn outsider_messages(&self, from: &NodeName) -> u64 {
        self.router.outsider_messages(from)
    }

    /// Sessions running on this node (their mailbox is open).
    pub fn live_sessions(&self) -> usize {
        self.router.live()
    }

    pub fn key(&self, id: &KeyId) -> Result<crate::storage::KeyRecord, NodeError> {
        self.store
            .key(id)?
            .ok_or_else(|| NodeError::NotFound(format!("key {id} not found here")))
    }

    pub fn keys(&self) -> Result<Vec<crate::storage::KeyRecord>, NodeError> {
        Ok(self.store.keys()?)
    }
}

/// The 1-based party index of position `i` in a party list (none past 255).
pub(crate) fn party_at(i: usize) -> Option<crate::protocol::PartyIdx> {
    i.checked_add(1).and_then(|p| u8::try_from(p).ok())
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

/// Records `eid`, the execution id of the session this node coordinates for
/// the request being served, in the request's log span (the API opens it;
/// see `api::services::RequestLog`), so the request's log line names it.
pub(crate) fn note_eid(eid: &ExecutionId) {
    tracing::Span::current().record("eid", tracing::field::display(eid));
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
