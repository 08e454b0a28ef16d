//! Errors of the node layer. `api/` maps each variant to one gRPC status;
//! the transport carries a peer's refusal back in the same variant.

use std::time::Duration;

use super::NetError;
use crate::domain::NodeName;
use crate::protocol::ProtocolError;
use crate::storage::StorageError;

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

pub(crate) fn names(v: &[NodeName]) -> String {
    v.iter()
        .map(NodeName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
