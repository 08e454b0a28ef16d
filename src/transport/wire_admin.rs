//! The signed admin request on the peer wire: every field parsed into the
//! node's types (or refused with the field named). No I/O.

use tonic::Status;

use super::wire::bad;
use crate::domain::NodeName;
use crate::node::admin_request::{AdminRequest, SignedAdmin};
use crate::node::request::ClientAuth;
use crate::proto::peer as pb;

pub(super) fn admin_from_pb(a: pb::AdminAuthorization) -> Result<SignedAdmin, Status> {
    let request = AdminRequest::from_fields(
        &a.operation,
        &a.key_id,
        &a.key_type,
        &a.committee,
        a.threshold,
        &a.target,
        &a.exclude,
        a.request_id,
        a.expiry_unix,
    )
    .map_err(|(field, e)| bad(&format!("admin.{field}"), e))?;
    let approvals = a
        .approvals
        .into_iter()
        .map(|x| {
            Ok(ClientAuth {
                chain: x.chain,
                scheme: u16::try_from(x.signature_scheme)
                    .map_err(|_| bad("admin.approvals.signature_scheme", "out of range"))?,
                signature: x.signature,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(SignedAdmin { request, approvals })
}

pub(super) fn admin_to_pb(a: SignedAdmin) -> pb::AdminAuthorization {
    let r = a.request;
    let names = |v: Vec<NodeName>| v.into_iter().map(|n| n.to_string()).collect();
    pb::AdminAuthorization {
        operation: r.operation.label().into(),
        key_id: r.key_id.to_string(),
        key_type: r.key_type.map(|t| t.to_string()).unwrap_or_default(),
        committee: names(r.committee),
        threshold: r.threshold,
        target: r.target.map(|t| t.to_string()).unwrap_or_default(),
        exclude: names(r.exclude),
        request_id: r.request_id,
        expiry_unix: r.expiry_unix,
        approvals: a
            .approvals
            .into_iter()
            .map(|x| pb::AdminApproval {
                chain: x.chain,
                signature_scheme: x.scheme.into(),
                signature: x.signature,
            })
            .collect(),
    }
}
