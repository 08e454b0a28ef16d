//! The admin operations and what each one takes, in one table
//! (`AdminOp::spec`). The request's field checks (`admin_request.rs`), its
//! description for the approving admin, the coordinator's dispatch
//! (`Node::run_admin`, the one path every admin RPC takes) and the
//! participants' check of a proposal (`admin.rs`) all read it.
//!
//! Adding an operation: a variant and a row here, an arm of `run_admin`, its
//! own file under `ops/`, and its typed parameters (`AdminRequest::params`,
//! encoded by that file) and result in the proto. The request's canonical
//! bytes, the JSON request file, the wire codec and the approval checks need
//! no change.

use super::admin_request::AdminRequest;
use super::ops::lifecycle::LifecycleSummary;
use super::{Node, NodeError, RepairSummary, ReshareSummary, RotateSummary};
use crate::domain::NodeName;
use crate::storage::KeyRecord;

/// An admin operation that changes a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminOp {
    Create,
    Rotate,
    Repair,
    Reshare,
    /// Emergency stop: the key stops signing on every node that applies it.
    Freeze,
    /// A frozen key signs again.
    Unfreeze,
    /// Every committee node destroys its shares; a tombstone stays.
    Delete,
    /// Every committee node clears its bans of the key (nodes it caught
    /// misbehaving in a session and stopped signing with).
    Unban,
    /// A key that exists whole elsewhere, dealt by the admin, becomes a key
    /// of the committee (`ops/import/`).
    Import,
}

/// Whether an operation's request names a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// The field must be empty (0 for numbers).
    No,
    /// The field may be empty.
    Optional,
    /// The field must be given.
    Required,
}

/// What an operation's request takes, beside the key id and the stamp
/// (cluster, request id, issue time, expiry) every request has.
#[derive(Debug, Clone, Copy)]
pub struct OpSpec {
    pub label: &'static str,
    /// The committee and threshold (create: optional, every node when
    /// empty; reshare: the new committee).
    pub committee: Takes,
    /// The key type: required to create; when another operation gives it,
    /// it must be the key's type.
    pub key_type: Takes,
    /// The node the operation is about (repair: whose share is rebuilt).
    pub target: Takes,
    /// Nodes that take no part.
    pub exclude: Takes,
    /// The key's lifecycle sequence the change applies to.
    pub lifecycle_seq: Takes,
    /// The operation's own typed parameters (`AdminRequest::params`).
    pub params: Takes,
    /// The operation ends with a refresh of the key under its own request,
    /// which the refresh's participants accept.
    pub refreshes: bool,
    /// The request kind in request logs and metrics.
    pub log_kind: &'static str,
    /// Its participants take part through the generic proposal
    /// (`Operation::Admin`, answered by `Node::participate_admin`) rather
    /// than a proposal of its own.
    pub generic: bool,
    /// A generic operation's execution id label (`OpKind::Admin`), distinct
    /// from every other operation's; empty for the others.
    pub step_label: &'static str,
}

const KEY_CHANGE: OpSpec = OpSpec {
    label: "",
    committee: Takes::No,
    key_type: Takes::Optional,
    target: Takes::No,
    exclude: Takes::No,
    lifecycle_seq: Takes::No,
    params: Takes::No,
    refreshes: false,
    log_kind: "",
    generic: false,
    step_label: "",
};

impl AdminOp {
    pub const ALL: [AdminOp; 9] = [
        Self::Create,
        Self::Rotate,
        Self::Repair,
        Self::Reshare,
        Self::Freeze,
        Self::Unfreeze,
        Self::Delete,
        Self::Unban,
        Self::Import,
    ];

    /// What the operation's request takes.
    pub const fn spec(self) -> OpSpec {
        match self {
            Self::Create => OpSpec {
                label: "create",
                committee: Takes::Optional,
                key_type: Takes::Required,
                log_kind: "keygen",
                ..KEY_CHANGE
            },
            Self::Rotate => OpSpec {
                label: "rotate",
                refreshes: true,
                log_kind: "rotate",
                ..KEY_CHANGE
            },
            Self::Repair => OpSpec {
                label: "repair",
                target: Takes::Required,
                refreshes: true,
                log_kind: "repair",
                ..KEY_CHANGE
            },
            Self::Reshare => OpSpec {
                label: "reshare",
                committee: Takes::Required,
                exclude: Takes::Optional,
                log_kind: "reshare",
                ..KEY_CHANGE
            },
            Self::Freeze => OpSpec {
                label: "freeze",
                lifecycle_seq: Takes::Optional,
                log_kind: "freeze",
                ..KEY_CHANGE
            },
            Self::Unfreeze => OpSpec {
                label: "unfreeze",
                lifecycle_seq: Takes::Optional,
                log_kind: "unfreeze",
                ..KEY_CHANGE
            },
            Self::Delete => OpSpec {
                label: "delete",
                lifecycle_seq: Takes::Optional,
                log_kind: "delete",
                ..KEY_CHANGE
            },
            Self::Unban => OpSpec {
                label: "unban",
                log_kind: "unban",
                ..KEY_CHANGE
            },
            Self::Import => OpSpec {
                label: "import",
                committee: Takes::Required,
                key_type: Takes::Required,
                params: Takes::Required,
                log_kind: "import",
                generic: true,
                step_label: "import",
                ..KEY_CHANGE
            },
        }
    }

    /// The operation's name in requests, policies and audit entries.
    pub fn label(self) -> &'static str {
        self.spec().label
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|o| o.label() == s)
            .ok_or_else(|| {
                format!(
                    "unknown admin operation {s:?}; known: {}",
                    Self::named(|_| true)
                )
            })
    }

    /// "a rotate request", "an unfreeze request": for messages.
    pub fn a_request(self) -> String {
        let label = self.label();
        let article = if label.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {label} request")
    }

    /// Does a request for this operation name the key's lifecycle sequence?
    pub fn takes_lifecycle_seq(self) -> bool {
        self.spec().lifecycle_seq != Takes::No
    }

    /// The operations a refresh of a key may run under (see `OpSpec::refreshes`).
    pub fn refreshing() -> Vec<AdminOp> {
        Self::ALL
            .into_iter()
            .filter(|o| o.spec().refreshes)
            .collect()
    }

    /// The labels of the operations whose spec passes `keep`, for messages.
    pub fn named(keep: impl Fn(&OpSpec) -> bool) -> String {
        let labels: Vec<&str> = Self::ALL
            .into_iter()
            .map(Self::spec)
            .filter(|s| keep(s))
            .map(|s| s.label)
            .collect();
        match labels.as_slice() {
            [] => "none".to_owned(),
            [one] => (*one).to_owned(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        }
    }
}

impl std::fmt::Display for AdminOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The checks of `AdminRequest::check_fields` that the table decides: each
/// field the operation takes, and no other.
pub(super) fn check_takes(r: &AdminRequest) -> Result<(), String> {
    let op = r.operation;
    let spec = op.spec();
    let a = op.a_request();
    if spec.committee == Takes::No && (!r.committee.is_empty() || r.threshold != 0) {
        return Err(format!("{a} takes no committee or threshold"));
    }
    if spec.committee == Takes::Required && r.committee.is_empty() {
        return Err(format!("{a} names the new committee"));
    }
    if (spec.target == Takes::No && r.target.is_some())
        || (spec.target == Takes::Required && r.target.is_none())
    {
        return Err(format!(
            "{a} {} (only {} requests do)",
            if r.target.is_some() {
                "names no target node"
            } else {
                "names a target node"
            },
            AdminOp::named(|s| s.target != Takes::No)
        ));
    }
    if spec.key_type == Takes::Required && r.key_type.is_none() {
        return Err(format!("{a} names the key type"));
    }
    if spec.lifecycle_seq == Takes::No && r.lifecycle_seq != 0 {
        return Err(format!(
            "{a} names no lifecycle sequence (only {} requests do)",
            AdminOp::named(|s| s.lifecycle_seq != Takes::No)
        ));
    }
    if spec.exclude == Takes::No && !r.exclude.is_empty() {
        return Err(format!(
            "{a} excludes no nodes (only {} requests can)",
            AdminOp::named(|s| s.exclude != Takes::No)
        ));
    }
    match (spec.params, r.params.is_empty()) {
        (Takes::No, false) => Err(format!(
            "{a} takes no parameters beside its fields ({} bytes given)",
            r.params.len()
        )),
        (Takes::Required, true) => Err(format!("{a} names its parameters")),
        _ => Ok(()),
    }
}

/// The request in plain words, for the approving admin and for logs.
pub(super) fn describe(r: &AdminRequest) -> String {
    let names = |v: &[NodeName]| v.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
    let key = &r.key_id;
    let mut s = match r.operation {
        AdminOp::Create => format!(
            "create a {} key {key}, {}-of-n, committee: {}",
            r.key_type.map(|t| t.as_str()).unwrap_or("?"),
            r.threshold,
            if r.committee.is_empty() {
                "every node of the cluster".to_owned()
            } else {
                names(&r.committee)
            }
        ),
        AdminOp::Rotate => format!("rotate every share of key {key}"),
        AdminOp::Repair => format!(
            "rebuild node {}'s share of key {key}, then rotate the key",
            r.target.as_ref().map(|t| t.as_str()).unwrap_or("?"),
        ),
        AdminOp::Reshare => format!(
            "move key {key} to the committee {} with threshold {} (same public key)",
            names(&r.committee),
            r.threshold
        ),
        AdminOp::Freeze => format!("freeze key {key}: it stops signing on every node"),
        AdminOp::Unfreeze => format!("unfreeze key {key}: it signs again"),
        AdminOp::Unban => format!(
            "clear the bans of key {key}: every committee node signs it again with the nodes it \
             caught misbehaving"
        ),
        AdminOp::Delete => format!(
            "DELETE key {key}: every committee node destroys its shares for good (the name is \
             not reused)"
        ),
        AdminOp::Import => {
            let pk = super::ops::import::params::ImportParams::decode(&r.params)
                .map(|p| p.public_key)
                .unwrap_or_default();
            let address = match r.key_type {
                Some(crate::domain::KeyType::Secp256k1) => {
                    crate::protocol::scheme::eth_address(&pk)
                        .map(|a| format!(", address {a}"))
                        .unwrap_or_default()
                }
                _ => String::new(),
            };
            format!(
                "IMPORT a {} key that exists whole elsewhere as key {key}, {}-of-{}, committee: \
                 {} (public key {}{address}); the dealt shares are refreshed at once, but the key \
                 stays wherever it was copied from",
                r.key_type.map(|t| t.as_str()).unwrap_or("?"),
                r.threshold,
                r.committee.len(),
                names(&r.committee),
                hex::encode(&pk)
            )
        }
    };
    if !r.exclude.is_empty() {
        s.push_str(&format!(", excluding {}", names(&r.exclude)));
    }
    s
}

/// What a key change did, as the node that coordinated it saw it.
#[derive(Debug)]
pub enum AdminDone {
    Created(KeyRecord),
    Rotated(RotateSummary),
    Repaired(RepairSummary),
    Reshared(ReshareSummary),
    /// A freeze, unfreeze, delete or unban.
    StateChanged(LifecycleSummary),
    Imported(KeyRecord),
}

impl AdminDone {
    /// The outcome in one line, for the log.
    pub fn summary(&self) -> String {
        match self {
            Self::Created(k) => format!("key {} created (epoch {})", k.key_id, k.epoch),
            Self::Rotated(s) => format!(
                "key {} rotated: epoch {} -> {} in {} ms",
                s.key.key_id,
                s.old_epoch,
                s.new_epoch,
                s.elapsed.as_millis()
            ),
            Self::Repaired(s) => format!(
                "node {}'s share of key {} repaired (helpers {}), then rotated to epoch {}",
                s.target,
                s.rotation.key.key_id,
                super::names(&s.helpers),
                s.rotation.new_epoch
            ),
            Self::Reshared(s) => format!(
                "key {} reshared: epoch {} -> {}, committee {} ({}-of-{}), retired {}",
                s.key.key_id,
                s.old_epoch,
                s.new_epoch,
                s.key.committee.join(", "),
                s.key.threshold,
                s.key.committee.len(),
                super::names(&s.retired)
            ),
            Self::Imported(k) => format!(
                "key {} imported: {}-of-{} on {}, refreshed and active",
                k.key_id,
                k.threshold,
                k.committee.len(),
                k.committee.join(", ")
            ),
            Self::StateChanged(s) => format!(
                "key {} is {} on {} committee node(s), not yet on {}",
                s.key.key_id,
                s.key.state.label(),
                s.applied.len(),
                s.not_applied.len()
            ),
        }
    }
}

impl Node {
    /// A participant's step of an operation that runs through the generic
    /// proposal (`OpSpec::generic`), once `check_admin_proposal` has checked
    /// the signed request behind it: routed to the operation's own file,
    /// which checks the proposal's execution id and body against the
    /// request. Any other operation has a proposal of its own.
    pub(super) async fn participate_admin(
        &self,
        _from: &NodeName,
        p: &super::Proposal,
    ) -> Result<super::Outcome, NodeError> {
        let super::Operation::Admin {
            action,
            key_id,
            body,
        } = &p.op
        else {
            return Err(NodeError::Internal(
                "participate_admin called with another operation".into(),
            ));
        };
        match action {
            AdminOp::Import => self.participate_import(p, key_id, body).await,
            op => Err(NodeError::InvalidArgument(format!(
                "{op} does not run through the generic admin proposal (it has a proposal of its \
                 own); operations that do: {}",
                AdminOp::named(|s| s.generic)
            ))),
        }
    }

    /// A generic operation's own checks of its request, made by every
    /// participant before the request id is spent (`check_admin_proposal`).
    pub(super) fn check_step(
        &self,
        r: &AdminRequest,
        action: AdminOp,
        p: &super::Proposal,
    ) -> Result<(), NodeError> {
        match action {
            AdminOp::Import => self.check_import_step(r, p).map(|_| ()),
            op => Err(NodeError::PermissionDenied(format!(
                "{op} of key {} (admin request {}) refused: {op} does not run through the generic \
                 admin proposal (it has a proposal of its own)",
                r.key_id, r.request_id
            ))),
        }
    }

    /// Runs the key change a signed admin request asks for, with this node
    /// coordinating: the one path of every admin RPC. Each node that takes
    /// part checks the request and its approvals itself.
    pub async fn run_admin(
        &self,
        signed: &super::admin_request::SignedAdmin,
    ) -> Result<AdminDone, NodeError> {
        Ok(match signed.request.operation {
            AdminOp::Create => AdminDone::Created(self.create_key(signed).await?),
            AdminOp::Rotate => AdminDone::Rotated(self.rotate(signed).await?),
            AdminOp::Repair => AdminDone::Repaired(self.repair(signed).await?),
            AdminOp::Reshare => AdminDone::Reshared(self.reshare(signed).await?),
            AdminOp::Freeze | AdminOp::Unfreeze | AdminOp::Delete | AdminOp::Unban => {
                AdminDone::StateChanged(self.change_key_state(signed).await?)
            }
            AdminOp::Import => AdminDone::Imported(self.import(signed).await?),
        })
    }
}
