//! The single mapping from node errors to gRPC status. Clients get a stable
//! code, the reason as metadata (`thresig-reason`, and `retry-after-ms` when
//! the node knows when to retry), and a message that names the failing
//! field, node or key. Internal details (store and bug errors) go to the
//! node's log only; the client is told where to look.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::domain::NodeName;
use crate::node::{NodeError, Reason};

/// The gRPC code a client gets for `reason`.
pub fn code(reason: Reason) -> Code {
    match reason {
        Reason::InvalidArgument => Code::InvalidArgument,
        Reason::NotFound => Code::NotFound,
        Reason::AlreadyExists | Reason::RequestIdReused | Reason::AlreadySigned => {
            Code::AlreadyExists
        }
        // A rolling-window limit is the policy refusing.
        Reason::PermissionDenied | Reason::WindowExceeded => Code::PermissionDenied,
        Reason::NotInCommittee
        | Reason::SlotConflict
        | Reason::BelowWatermark
        | Reason::EpochMismatch
        | Reason::KeyNotActive
        | Reason::FailedPrecondition => Code::FailedPrecondition,
        Reason::RateLimited => Code::ResourceExhausted,
        Reason::Paused | Reason::Unavailable | Reason::Unreachable => Code::Unavailable,
        Reason::Timeout => Code::DeadlineExceeded,
        Reason::Blamed | Reason::Aborted => Code::Aborted,
        Reason::DataLoss => Code::DataLoss,
        Reason::Internal => Code::Internal,
    }
}

/// The status a client of node `here` gets for `e`. The message names the
/// node where it happened once: a participant's refusal names that
/// participant, anything else names `here`.
pub fn status(here: &NodeName, e: &NodeError) -> Status {
    let reason = e.reason();
    let (node, inner) = match e {
        NodeError::At { node, error } => (node, error.as_ref()),
        other => (here, other),
    };
    let message = match reason {
        Reason::Internal => {
            tracing::error!(error = %e, "internal error");
            format!("node {node}: internal error; the details are in that node's log")
        }
        Reason::DataLoss => {
            tracing::error!(error = %e, "stored data failed its integrity check");
            format!("node {node}: {inner}")
        }
        _ => format!("node {node}: {inner}"),
    };
    let mut s = Status::new(code(reason), message);
    if let Ok(v) = MetadataValue::try_from(reason.label()) {
        s.metadata_mut().insert("thresig-reason", v);
    }
    if let Some(wait) = e.retry_after() {
        if let Ok(v) = MetadataValue::try_from(wait.as_millis().to_string()) {
            s.metadata_mut().insert("retry-after-ms", v);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_text_never_reaches_the_client() {
        let e = NodeError::At {
            node: NodeName::parse("b").unwrap(),
            error: Box::new(NodeError::Internal("secret path /var/lib/x: eio".into())),
        };
        let s = status(&NodeName::parse("a").unwrap(), &e);
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/var/lib"), "{}", s.message());
        assert!(s.message().contains("node b"), "{}", s.message());
        assert_eq!(s.metadata().get("thresig-reason").unwrap(), "internal");
    }

    #[test]
    fn a_rate_limit_says_when_to_retry() {
        let e = NodeError::RateLimited {
            message: "client validator is over its rate limit".into(),
            retry_after: std::time::Duration::from_millis(1500),
        };
        let s = status(&NodeName::parse("a").unwrap(), &e);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().starts_with("node a: "), "{}", s.message());
        assert_eq!(s.metadata().get("retry-after-ms").unwrap(), "1500");
        assert_eq!(s.metadata().get("thresig-reason").unwrap(), "rate-limited");
    }

    #[test]
    fn every_reason_has_a_code() {
        for r in Reason::ALL {
            assert_ne!(code(r), Code::Unknown, "{r:?}");
            assert_ne!(code(r), Code::Ok, "{r:?}");
        }
    }
}
