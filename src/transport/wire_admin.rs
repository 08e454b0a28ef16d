//! The signed admin request on the peer wire: every field parsed into the
//! node's types (or refused with the field named). No I/O.

use tonic::Status;

use super::wire::bad;
use crate::domain::{NodeName, MAX_ROSTER};
use crate::node::admin_request::{AdminRequest, SignedAdmin, MAX_APPROVALS};
use crate::proto::peer as pb;

pub(super) fn admin_from_pb(a: pb::AdminAuthorization) -> Result<SignedAdmin, Status> {
    // Bounded before anything is parsed or compared.
    for (field, list) in [
        ("admin.committee", &a.committee),
        ("admin.exclude", &a.exclude),
    ] {
        if list.len() > MAX_ROSTER {
            return Err(bad(
                field,
                format!(
                    "{} names; a cluster has at most {MAX_ROSTER} nodes",
                    list.len()
                ),
            ));
        }
    }
    if a.approvals.len() > MAX_APPROVALS {
        return Err(bad(
            "admin.approvals",
            format!("{} approvals; at most {MAX_APPROVALS}", a.approvals.len()),
        ));
    }
    let request = AdminRequest::from_fields(
        &a.operation,
        &a.key_id,
        &a.key_type,
        &a.committee,
        a.threshold,
        &a.target,
        &a.exclude,
        crate::node::admin_request::Stamp {
            cluster: a.cluster,
            lifecycle_seq: a.lifecycle_seq,
            request_id: a.request_id,
            issued_unix: a.issued_unix,
            expiry_unix: a.expiry_unix,
        },
    )
    .map_err(|(field, e)| bad(&format!("admin.{field}"), e))?;
    let approvals = a
        .approvals
        .into_iter()
        .map(|x| {
            super::wire_auth::signed_by(x.chain, x.signature_scheme, x.signature, "admin.approvals")
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
        cluster: r.cluster,
        lifecycle_seq: r.lifecycle_seq,
        issued_unix: r.issued_unix,
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
