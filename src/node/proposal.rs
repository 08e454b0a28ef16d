//! What nodes ask of each other, in the node's own types: a `Proposal`
//! (an `Operation` under an execution id), a participant's `Outcome`, and
//! the `PeerNet` trait through which a node calls the others. The transport
//! implements `PeerNet` and converts these to and from the peer proto;
//! nothing here knows gRPC.

use std::time::Duration;

use futures::future::BoxFuture;

use super::activation::Certificate;
use super::admin_request::SignedAdmin;
use super::request;
use super::request::ClientAuth;
use super::NodeError;
use crate::domain::{ExecutionId, KeyId, KeyType, NodeName};
use crate::protocol::sign::Signature;

/// What a `Watermark` proposal does with the request's rolling-window
/// spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStep {
    /// The slot gossip: raise the watermark and count the spends.
    Gossip,
    /// Reserve the spends for the sender's attempt (the proposal's nonce),
    /// the slot untouched.
    Reserve,
    /// Release what that attempt reserved.
    Release,
}

/// What a coordinator asks a participant to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Keygen {
        key_id: KeyId,
        key_type: KeyType,
        threshold: u32,
        committee: Vec<NodeName>,
    },
    /// Sign the client's `request`, which `auth` signs, with `participants`.
    Sign {
        epoch: u64,
        /// The key's lifecycle sequence at the coordinator.
        lifecycle_seq: u64,
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
        /// Also every slot watermark of the key (for a restored node).
        watermarks: bool,
        /// Also the active epoch's activation certificate and this node's
        /// receipt for what it staged or generated and did not activate.
        evidence: bool,
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
    /// for the client's signed request (checked like a sign proposal) and
    /// count its rolling-window spends, or refuse if either conflicts. Or a
    /// window step alone (`WindowStep`).
    Watermark {
        request: Box<request::SignRequest>,
        auth: Box<request::ClientAuth>,
        window: WindowStep,
    },
    /// A dry run: check the client's signed request and this node's policy
    /// on it as a signer would, and sign nothing.
    Evaluate {
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
        /// The reshare's confirmation and the new committee's activation
        /// certificate: a member deletes its share only once every new
        /// member staged its share.
        confirmation: [u8; 32],
        certificate: Certificate,
    },
    /// Freeze, unfreeze or delete the key (the admin request says which).
    Lifecycle {
        key_id: KeyId,
        action: super::admin_request::AdminOp,
    },
    /// A step of an admin operation that runs through the generic proposal
    /// (`OpSpec::generic`): its own file under `ops/` encodes and reads
    /// `body`. The signed admin request travels with it, as with every key
    /// change, and names the same operation and key.
    Admin {
        key_id: KeyId,
        action: super::admin_request::AdminOp,
        body: Vec<u8>,
    },
    /// Switch to the staged `epoch`, which every participant confirmed with
    /// `confirmation`, on the strength of `certificate` (every member's
    /// staging receipt). Without a certificate: a release (the coordinator
    /// gave up), which deletes nothing.
    Activate {
        key_id: KeyId,
        epoch: u64,
        confirmation: [u8; 32],
        certificate: Certificate,
    },
}

/// A proposal: the operation, its execution id, the coordinator's nonce and,
/// for a key change, the admin request behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub eid: ExecutionId,
    pub nonce: Vec<u8>,
    /// The signed admin request (and its approvals) behind a key change:
    /// keygen, refresh, repair, reshare and retire carry it, and every node
    /// checks it (`Node::check_admin_proposal`). The nonce binds it.
    pub admin: Option<Box<SignedAdmin>>,
    pub op: Operation,
}

/// A participant's answer to a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Keygen {
        public_key: Vec<u8>,
        chain_code: [u8; 32],
        package_hash: [u8; 32],
        /// The node's signed receipt: it stored its share.
        receipt: Box<ClientAuth>,
    },
    Sign(Signature),
    /// The refreshed share is staged; every party computed `confirmation`.
    Refresh {
        confirmation: [u8; 32],
        /// The node's signed staging receipt.
        receipt: Box<ClientAuth>,
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
        /// The last freeze, unfreeze or delete this node applied to the key,
        /// for a node that missed it.
        lifecycle: Option<Box<Proposal>>,
        /// The key's maintenance here: the active epoch's activation proof,
        /// an epoch staged and not yet active, a session running.
        maintenance: Maintenance,
        /// Every slot watermark of the key here (scope, watermark), when
        /// asked for.
        watermarks: Vec<(String, crate::storage::Watermark)>,
    },
    /// A new member of a reshare staged its share; every new member computed
    /// `confirmation`, and `public_key` is the key its new share belongs to.
    Reshared {
        confirmation: [u8; 32],
        public_key: Vec<u8>,
        /// The node's signed staging receipt.
        receipt: Box<ClientAuth>,
    },
    /// A dealer leaving the committee sent its dealings.
    Dealt,
    /// This node's share of the key is deleted (it left the committee).
    Retired,
    /// The slot watermark is raised (or already there for this digest).
    Watermarked,
    /// A dry run's verdict: this node would sign it (what it decoded, and
    /// the rule that allows it).
    Evaluated {
        summary: String,
        allowed_by: String,
    },
    /// A watermark gossip refused: this node's watermark of the scope
    /// conflicts (`reason`), set by the client's signed request `evidence`
    /// (none if this node does not hold it, e.g. a watermark handed over at
    /// a restore). The coordinator refuses the request only on valid
    /// evidence.
    SlotConflict {
        reason: String,
        evidence: Option<Box<(crate::node::request::SignRequest, ClientAuth)>>,
    },
    /// This node's part of a repair is done.
    Repaired,
    /// A freeze, unfreeze or delete is applied here; the key's state now.
    Lifecycle {
        state: String,
    },
    /// A participant's answer to an `Operation::Admin` step, in the
    /// operation's own encoding.
    Admin {
        body: Vec<u8>,
    },
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
    /// Checks that `to` answers; returns the versions it announces.
    fn ping(&self, to: &NodeName) -> BoxFuture<'static, Result<PeerVersion, NetError>>;
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

/// What a node reports of a key's maintenance in a status answer. A node one
/// epoch behind activates its staged share with `activated` (it checks the
/// proof against what it staged itself); a rotation coordinator finishes a
/// rotation that every node staged and nobody activated (`staged`), and
/// waits for one still running (`running`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// The proof that activated the reported epoch (none for a keygen epoch
    /// before any rotation, or from a node of the previous wire version).
    pub activated: Option<crate::storage::RotationProof>,
    /// When evidence was asked for: the certificate that activated the
    /// reported epoch (empty if none was kept).
    pub certificate: Certificate,
    /// When evidence was asked for: the node's receipt for its generated,
    /// not yet active key.
    pub generated: Option<Box<ClientAuth>>,
    /// The epoch staged here and not yet activated, the proof it awaits, and
    /// whether a reshare (rather than a rotation) staged it.
    pub staged: Option<StagedEpoch>,
    /// A rotation or reshare session of the key is running here.
    pub running: bool,
}

/// An epoch staged at a node, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedEpoch {
    pub epoch: u64,
    pub proof: crate::storage::RotationProof,
    /// Staged by a reshare rather than a rotation.
    pub reshare: bool,
    /// How much longer the node lets the staging rotation's coordinator
    /// release it, by its own clock (zero: closed, or a node of the previous
    /// wire version).
    pub release_open_for: std::time::Duration,
    /// When evidence was asked for: the node's signed staging receipt.
    pub receipt: Option<Box<ClientAuth>>,
}

/// The versions a node announces in answer to a ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerVersion {
    pub wire: u32,
    pub software: String,
    /// When its certificate expires (unix seconds), if it said.
    pub cert_not_after: Option<i64>,
}
