//! A participant's refusal on the wire: its reason code, its own message
//! (naming it is the receiver's job), a retry hint and whom it blamed. The
//! coordinator rebuilds the same `NodeError`, said to have happened at that
//! node; no text is parsed.

use std::time::Duration;

use super::wire::outcome_from_pb;
use crate::domain::NodeName;
use crate::node::{NodeError, Outcome, Reason};
use crate::proto::peer as pb;

/// The longest retry hint taken from a peer, in milliseconds.
const MAX_PEER_RETRY_MS: u64 = 60_000;

/// `node`'s answer to a proposal: its outcome, or its refusal as the error it
/// reported, said to have happened at `node`.
pub(super) fn answer_from_pb(
    node: &NodeName,
    r: pb::ProposeResponse,
) -> Result<Outcome, NodeError> {
    if let Some(pb::propose_response::Result::Refusal(f)) = &r.result {
        let reason = reason_from_pb(f.reason());
        let blamed = NodeName::parse(&f.blamed).ok();
        // A peer's hint is its word: kept within a minute.
        let retry = (f.retry_after_ms > 0)
            .then(|| Duration::from_millis(f.retry_after_ms.min(MAX_PEER_RETRY_MS)));
        return Err(NodeError::from_reason(reason, f.message.clone(), retry, blamed).at(node));
    }
    outcome_from_pb(r)
        .map_err(|e| NodeError::Aborted(format!("sent a malformed answer: {e}")).at(node))
}

/// What this node (`me`) answers a proposal it refused or failed.
pub(super) fn refusal_to_pb(me: &NodeName, e: &NodeError) -> pb::ProposeResponse {
    pb::ProposeResponse {
        result: Some(pb::propose_response::Result::Refusal(pb::Refusal {
            reason: reason_to_pb(e.reason()).into(),
            message: e.message_at(me),
            retry_after_ms: e
                .retry_after()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            blamed: e.blamed().map(ToString::to_string).unwrap_or_default(),
        })),
    }
}

fn reason_to_pb(r: Reason) -> pb::Reason {
    use pb::Reason as P;
    match r {
        Reason::InvalidArgument => P::InvalidArgument,
        Reason::NotFound => P::NotFound,
        Reason::AlreadyExists => P::AlreadyExists,
        Reason::RequestIdReused => P::RequestIdReused,
        Reason::AlreadySigned => P::AlreadySigned,
        Reason::PermissionDenied => P::PermissionDenied,
        Reason::NotInCommittee => P::NotInCommittee,
        Reason::SlotConflict => P::SlotConflict,
        Reason::BelowWatermark => P::BelowWatermark,
        Reason::WindowExceeded => P::WindowExceeded,
        Reason::EpochMismatch => P::EpochMismatch,
        Reason::KeyNotActive => P::KeyNotActive,
        Reason::FailedPrecondition => P::FailedPrecondition,
        Reason::RateLimited => P::RateLimited,
        Reason::Paused => P::Paused,
        Reason::Unavailable => P::Unavailable,
        Reason::Unreachable => P::Unreachable,
        Reason::Timeout => P::Timeout,
        Reason::Blamed => P::Blamed,
        Reason::Aborted => P::Aborted,
        Reason::DataLoss => P::DataLoss,
        Reason::Internal => P::Internal,
    }
}

fn reason_from_pb(r: pb::Reason) -> Reason {
    use pb::Reason as P;
    match r {
        P::InvalidArgument => Reason::InvalidArgument,
        P::NotFound => Reason::NotFound,
        P::AlreadyExists => Reason::AlreadyExists,
        P::RequestIdReused => Reason::RequestIdReused,
        P::AlreadySigned => Reason::AlreadySigned,
        P::PermissionDenied => Reason::PermissionDenied,
        P::NotInCommittee => Reason::NotInCommittee,
        P::SlotConflict => Reason::SlotConflict,
        P::BelowWatermark => Reason::BelowWatermark,
        P::WindowExceeded => Reason::WindowExceeded,
        P::EpochMismatch => Reason::EpochMismatch,
        P::KeyNotActive => Reason::KeyNotActive,
        P::FailedPrecondition => Reason::FailedPrecondition,
        P::RateLimited => Reason::RateLimited,
        P::Paused => Reason::Paused,
        P::Unavailable => Reason::Unavailable,
        P::Unreachable => Reason::Unreachable,
        P::Timeout => Reason::Timeout,
        P::Blamed => Reason::Blamed,
        P::Aborted => Reason::Aborted,
        P::DataLoss => Reason::DataLoss,
        P::Internal | P::Unspecified => Reason::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_the_peer_proto() {
        for r in Reason::ALL {
            assert_eq!(reason_from_pb(reason_to_pb(r)), r, "{r:?}");
        }
    }

    #[test]
    fn a_refusal_arrives_as_the_same_error_naming_its_node_once() {
        let b = NodeName::parse("b").unwrap();
        let at_b =
            NodeError::BelowWatermark("slot s 1/0/0 of key k is below its watermark 2/0/0".into())
                .at(&b);
        let e = answer_from_pb(&b, refusal_to_pb(&b, &at_b)).unwrap_err();
        assert!(matches!(e.cause(), NodeError::BelowWatermark(_)), "{e:?}");
        assert_eq!(e.to_string(), at_b.to_string());
        assert_eq!(e.to_string().matches("node b").count(), 1, "{e}");
        let limited = NodeError::RateLimited {
            message: "over".into(),
            retry_after: Duration::from_millis(250),
        }
        .at(&b);
        let e = answer_from_pb(&b, refusal_to_pb(&b, &limited)).unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_millis(250)));
    }
}
