//! The signed admin request on the peer wire: every field parsed into the
//! node's types (or refused with the field named). No I/O.

use tonic::Status;

use super::wire::bad;
use crate::node::admin_request::{RequestFields, SignedAdmin, MAX_APPROVALS};
use crate::proto::peer as pb;

pub(super) fn admin_from_pb(a: pb::AdminAuthorization) -> Result<SignedAdmin, Status> {
    // Bounded before anything is parsed or compared.
    if a.approvals.len() > MAX_APPROVALS {
        return Err(bad(
            "admin.approvals",
            format!("{} approvals; at most {MAX_APPROVALS}", a.approvals.len()),
        ));
    }
    let request = RequestFields {
        operation: a.operation,
        key_id: a.key_id,
        key_type: a.key_type,
        committee: a.committee,
        threshold: a.threshold,
        target: a.target,
        exclude: a.exclude,
        cluster: a.cluster,
        lifecycle_seq: a.lifecycle_seq,
        request_id: a.request_id,
        issued_unix: a.issued_unix,
        expiry_unix: a.expiry_unix,
        params: a.params,
    }
    .parse()
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
    let f = RequestFields::of(&a.request);
    pb::AdminAuthorization {
        operation: f.operation,
        key_id: f.key_id,
        key_type: f.key_type,
        committee: f.committee,
        threshold: f.threshold,
        target: f.target,
        exclude: f.exclude,
        request_id: f.request_id,
        expiry_unix: f.expiry_unix,
        cluster: f.cluster,
        lifecycle_seq: f.lifecycle_seq,
        issued_unix: f.issued_unix,
        params: f.params,
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
