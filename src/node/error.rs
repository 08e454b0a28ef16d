//! Errors of the node layer: each variant says what happened and, by its
//! `Reason`, whose fault it is and whether retrying can help. `api/` maps
//! each reason to one gRPC status; the transport carries a peer's refusal
//! back as its reason code and message (never as text to be parsed), and it
//! arrives here as `At`, naming that node once.

use std::time::Duration;

use super::NetError;
use crate::domain::NodeName;
use crate::protocol::ProtocolError;
use crate::storage::StorageError;

/// Errors of the node layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The request or proposal is malformed (the caller's fault).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// A key of that name exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request id was used for another digest, path or slot.
    #[error("{0}")]
    RequestIdReused(String),
    /// The request is signed already; a repeat gets the recorded signature.
    #[error("{0}")]
    AlreadySigned(String),
    /// Policy, identity, signature or execution-id checks refused it.
    #[error("{0}")]
    PermissionDenied(String),
    /// This node (or a named one) is not a member where it would need to be.
    #[error("{0}")]
    NotInCommittee(String),
    /// Double-sign protection: the slot was signed for another digest.
    #[error("{0}")]
    SlotConflict(String),
    /// Double-sign protection: the slot is below the watermark.
    #[error("{0}")]
    BelowWatermark(String),
    /// A rolling-window limit of the policy would be passed.
    #[error("{0}")]
    WindowExceeded(String),
    /// A node holds the key at another epoch than the proposal.
    #[error("{0}")]
    EpochMismatch(String),
    /// The key is frozen, retired, repairing or joining here.
    #[error("{0}")]
    KeyNotActive(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Over a rate limit; retry after `retry_after`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// Key maintenance holds the key; retry after `retry_after`.
    #[error("{message}")]
    Paused {
        message: String,
        retry_after: Duration,
    },
    /// Not enough healthy nodes for now.
    #[error("{0}")]
    Unavailable(String),
    /// A call to another node failed in transit.
    #[error("{0}")]
    Net(#[from] NetError),
    /// A participant's own call or round failed in transit (its account);
    /// `timed_out` if a round deadline passed.
    #[error("{message}")]
    Transit { message: String, timed_out: bool },
    /// A participant's stored data failed its integrity check (its account).
    #[error("{0}")]
    DataLoss(String),
    #[error(
        "round {round} timed out after {after:?} waiting for {}",
        names(missing)
    )]
    Timeout {
        round: u32,
        after: Duration,
        missing: Vec<NodeName>,
    },
    /// The engine aborted this node's session, blaming a party if it could.
    #[error("protocol aborted{}: {error}", blames(blamed.as_ref()))]
    Protocol {
        blamed: Option<NodeName>,
        #[source]
        error: ProtocolError,
    },
    /// Another node's session aborted and blamed `node`; `reason` is its account.
    #[error("{reason}")]
    Blamed { node: NodeName, reason: String },
    /// The session aborted without naming anyone (or the parties disagreed).
    #[error("{0}")]
    Aborted(String),
    /// What went wrong at `node` (a participant's refusal, in its own words).
    #[error("node {node}: {error}")]
    At {
        node: NodeName,
        error: Box<NodeError>,
    },
    #[error("store: {0}")]
    Storage(StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a request failed, as a code: what peers send each other and what
/// clients can branch on. Stable: new reasons are added, none renumbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    RequestIdReused,
    AlreadySigned,
    PermissionDenied,
    NotInCommittee,
    SlotConflict,
    BelowWatermark,
    WindowExceeded,
    EpochMismatch,
    KeyNotActive,
    FailedPrecondition,
    RateLimited,
    Paused,
    Unavailable,
    Unreachable,
    Timeout,
    Blamed,
    Aborted,
    DataLoss,
    Internal,
}

impl Reason {
    /// Every reason, for tables and tests.
    pub const ALL: [Reason; 22] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::AlreadyExists,
        Self::RequestIdReused,
        Self::AlreadySigned,
        Self::PermissionDenied,
        Self::NotInCommittee,
        Self::SlotConflict,
        Self::BelowWatermark,
        Self::WindowExceeded,
        Self::EpochMismatch,
        Self::KeyNotActive,
        Self::FailedPrecondition,
        Self::RateLimited,
        Self::Paused,
        Self::Unavailable,
        Self::Unreachable,
        Self::Timeout,
        Self::Blamed,
        Self::Aborted,
        Self::DataLoss,
        Self::Internal,
    ];

    /// The reason's name on the wire and in logs (`thresig-reason`).
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid-argument",
            Self::NotFound => "not-found",
            Self::AlreadyExists => "already-exists",
            Self::RequestIdReused => "request-id-reused",
            Self::AlreadySigned => "already-signed",
            Self::PermissionDenied => "permission-denied",
            Self::NotInCommittee => "not-in-committee",
            Self::SlotConflict => "slot-conflict",
            Self::BelowWatermark => "below-watermark",
            Self::WindowExceeded => "window-exceeded",
            Self::EpochMismatch => "epoch-mismatch",
            Self::KeyNotActive => "key-not-active",
            Self::FailedPrecondition => "failed-precondition",
            Self::RateLimited => "rate-limited",
            Self::Paused => "paused",
            Self::Unavailable => "unavailable",
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::Blamed => "blamed",
            Self::Aborted => "aborted",
            Self::DataLoss => "data-loss",
            Self::Internal => "internal",
        }
    }

    /// A refusal because of what was already signed or the key's state: the
    /// same request meets it again on any path.
    pub fn is_precondition(self) -> bool {
        matches!(
            self,
            Self::AlreadyExists
                | Self::RequestIdReused
                | Self::AlreadySigned
                | Self::NotInCommittee
                | Self::SlotConflict
                | Self::BelowWatermark
                | Self::EpochMismatch
                | Self::KeyNotActive
                | Self::FailedPrecondition
        )
    }

    /// A failure in transit (a message or call that did not arrive in time).
    pub fn is_transit(self) -> bool {
        matches!(self, Self::Unreachable | Self::Timeout)
    }
}

impl NodeError {
    /// The error itself, looking through where it happened (`At`).
    pub fn cause(&self) -> &NodeError {
        match self {
            Self::At { error, .. } => error.cause(),
            other => other,
        }
    }

    /// Why it failed.
    pub fn reason(&self) -> Reason {
        match self.cause() {
            Self::InvalidArgument(_) => Reason::InvalidArgument,
            Self::NotFound(_) => Reason::NotFound,
            Self::AlreadyExists(_) => Reason::AlreadyExists,
            Self::RequestIdReused(_) => Reason::RequestIdReused,
            Self::AlreadySigned(_) => Reason::AlreadySigned,
            Self::PermissionDenied(_) => Reason::PermissionDenied,
            Self::NotInCommittee(_) => Reason::NotInCommittee,
            Self::SlotConflict(_) => Reason::SlotConflict,
            Self::BelowWatermark(_) => Reason::BelowWatermark,
            Self::WindowExceeded(_) => Reason::WindowExceeded,
            Self::EpochMismatch(_) => Reason::EpochMismatch,
            Self::KeyNotActive(_) => Reason::KeyNotActive,
            Self::FailedPrecondition(_) => Reason::FailedPrecondition,
            Self::RateLimited { .. } => Reason::RateLimited,
            Self::Paused { .. } => Reason::Paused,
            Self::Unavailable(_) => Reason::Unavailable,
            Self::Net(_)
            | Self::Transit {
                timed_out: false, ..
            } => Reason::Unreachable,
            Self::Transit {
                timed_out: true, ..
            } => Reason::Timeout,
            Self::DataLoss(_) => Reason::DataLoss,
            Self::Timeout { .. } => Reason::Timeout,
            Self::Protocol {
                blamed: Some(_), ..
            }
            | Self::Blamed { .. } => Reason::Blamed,
            Self::Protocol { blamed: None, .. } | Self::Aborted(_) => Reason::Aborted,
            Self::Storage(StorageError::Corrupt { .. }) => Reason::DataLoss,
            Self::Storage(StorageError::NotFound(_)) => Reason::NotFound,
            Self::Storage(StorageError::Conflict(_)) => Reason::AlreadyExists,
            Self::Storage(_) | Self::Internal(_) | Self::At { .. } => Reason::Internal,
        }
    }

    /// When a retry may succeed, if the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.cause() {
            Self::RateLimited { retry_after, .. } | Self::Paused { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The node the error blames, if any.
    pub fn blamed(&self) -> Option<&NodeName> {
        match self.cause() {
            Self::Protocol { blamed, .. } => blamed.as_ref(),
            Self::Blamed { node, .. } => Some(node),
            _ => None,
        }
    }

    /// The participants a failed session can be pinned on: those a round
    /// timed out waiting for, the one a call to failed in transit, the one
    /// blamed. Empty for a refusal or an abort that names nobody.
    pub fn culprits(&self) -> Vec<NodeName> {
        match self {
            // What happened at `node` names the culprit itself (a round that
            // timed out waiting for someone, a delivery to someone that
            // failed, a blame); only a transit failure that names nobody is
            // pinned on `node`.
            Self::At { node, error } => {
                let inner = error.culprits();
                if !inner.is_empty() {
                    inner
                } else if error.reason().is_transit() {
                    vec![node.clone()]
                } else {
                    Vec::new()
                }
            }
            Self::Timeout { missing, .. } => missing.clone(),
            Self::Net(e) => vec![e.node.clone()],
            other => other.blamed().cloned().into_iter().collect(),
        }
    }

    /// This error as seen from `node`: without the prefix naming `node`
    /// itself (what `node` sends a peer, which names it once).
    pub fn message_at(&self, node: &NodeName) -> String {
        match self {
            Self::At { node: at, error } if at == node => error.to_string(),
            other => other.to_string(),
        }
    }

    /// Says that this error happened at `node`, unless it already says
    /// where it happened (a refusal relayed from another node stays that
    /// node's).
    pub fn at(self, node: &NodeName) -> Self {
        match self {
            Self::At { .. } => self,
            error => Self::At {
                node: node.clone(),
                error: Box::new(error),
            },
        }
    }

    /// Rebuilds a peer's refusal from its wire form: `reason`, its message,
    /// a retry hint and the node it blamed.
    pub fn from_reason(
        reason: Reason,
        message: String,
        retry_after: Option<Duration>,
        blamed: Option<NodeName>,
    ) -> Self {
        let retry_after = retry_after.unwrap_or_default();
        match reason {
            Reason::InvalidArgument => Self::InvalidArgument(message),
            Reason::NotFound => Self::NotFound(message),
            Reason::AlreadyExists => Self::AlreadyExists(message),
            Reason::RequestIdReused => Self::RequestIdReused(message),
            Reason::AlreadySigned => Self::AlreadySigned(message),
            Reason::PermissionDenied => Self::PermissionDenied(message),
            Reason::NotInCommittee => Self::NotInCommittee(message),
            Reason::SlotConflict => Self::SlotConflict(message),
            Reason::BelowWatermark => Self::BelowWatermark(message),
            Reason::WindowExceeded => Self::WindowExceeded(message),
            Reason::EpochMismatch => Self::EpochMismatch(message),
            Reason::KeyNotActive => Self::KeyNotActive(message),
            Reason::FailedPrecondition => Self::FailedPrecondition(message),
            Reason::RateLimited => Self::RateLimited {
                message,
                retry_after,
            },
            Reason::Paused => Self::Paused {
                message,
                retry_after,
            },
            Reason::Unavailable => Self::Unavailable(message),
            // A participant whose own messages could not be delivered, or
            // that timed out a round: a failure in transit, as if ours.
            Reason::Unreachable => Self::Transit {
                message,
                timed_out: false,
            },
            Reason::Timeout => Self::Transit {
                message,
                timed_out: true,
            },
            Reason::Blamed => match blamed {
                Some(node) => Self::Blamed {
                    node,
                    reason: message,
                },
                None => Self::Aborted(message),
            },
            Reason::Aborted => Self::Aborted(message),
            Reason::DataLoss => Self::DataLoss(message),
            Reason::Internal => Self::Internal(message),
        }
    }
}

/// Storage errors keep their meaning: the double-sign refusals become the
/// matching node errors, everything else is a store failure.
impl From<StorageError> for NodeError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::SlotOtherDigest(m) => Self::SlotConflict(m),
            StorageError::SlotBelowWatermark(m) => Self::BelowWatermark(m),
            StorageError::WindowExceeded(m) => Self::WindowExceeded(m),
            other => Self::Storage(other),
        }
    }
}

fn blames(n: Option<&NodeName>) -> String {
    n.map(|n| format!(" (blames node {n})")).unwrap_or_default()
}

pub(crate) fn names(v: &[NodeName]) -> String {
    v.iter()
        .map(NodeName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_session_is_pinned_on_the_node_that_caused_it() {
        let n = |s: &str| NodeName::parse(s).unwrap();
        let at = |node: &str, error: NodeError| NodeError::At {
            node: n(node),
            error: Box::new(error),
        };
        let slow = NodeError::Net(NetError {
            node: n("x"),
            kind: crate::node::NetErrorKind::Timeout(Duration::from_secs(2)),
        });
        let timeout = NodeError::Timeout {
            round: 1,
            after: Duration::from_secs(2),
            missing: vec![n("b")],
        };
        let transit = NodeError::Transit {
            message: "call ended".into(),
            timed_out: false,
        };
        let blamed = NodeError::Blamed {
            node: n("c"),
            reason: "bad share".into(),
        };
        assert_eq!(at("a", slow).culprits(), vec![n("x")]);
        assert_eq!(at("a", timeout).culprits(), vec![n("b")]);
        assert_eq!(at("b", transit).culprits(), vec![n("b")]);
        assert_eq!(at("b", blamed).culprits(), vec![n("c")]);
        assert!(at("a", NodeError::PermissionDenied("no".into()))
            .culprits()
            .is_empty());
        assert!(NodeError::Aborted("nobody named".into())
            .culprits()
            .is_empty());
    }

    #[test]
    fn every_reason_survives_the_wire_form() {
        let node = NodeName::parse("b").unwrap();
        for r in Reason::ALL {
            let e = NodeError::from_reason(r, "why".into(), None, Some(node.clone()));
            assert_eq!(e.reason(), r, "{r:?}");
        }
    }

    #[test]
    fn a_refusal_at_a_node_names_it_once() {
        let e = NodeError::At {
            node: NodeName::parse("c").unwrap(),
            error: Box::new(NodeError::BelowWatermark(
                "slot s 1/0/0 of key k is below its watermark 2/0/0".into(),
            )),
        };
        let text = e.to_string();
        assert_eq!(text.matches("node c").count(), 1, "{text}");
        assert_eq!(e.reason(), Reason::BelowWatermark);
    }
}
