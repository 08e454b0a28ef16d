//! Admin messages to and from the signed admin request they carry: each
//! moves its fields into the request's one text form
//! (`admin_request::RequestFields`), which alone parses them. The node
//! checks the approvals; this only parses.

use tonic::Status;

use super::services::arg;
use crate::node::admin_request::{AdminOp, RequestFields, SignedAdmin, Stamp};
use crate::node::request::ClientAuth;
use crate::proto::admin as apb;

/// The request fields of a fixed-operation admin message other than its
/// stamp and approvals.
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) key_id: &'a str,
    pub(super) key_type: &'a str,
    pub(super) committee: &'a [String],
    pub(super) threshold: u32,
    pub(super) target: &'a str,
    pub(super) exclude: &'a [String],
}

/// The signed admin request a fixed-operation admin message (CreateKey ..
/// UnbanKey) carries.
pub(super) fn signed_admin(
    op: AdminOp,
    f: Fields<'_>,
    stamp: Stamp,
    approvals: Vec<apb::AdminApproval>,
) -> Result<SignedAdmin, Status> {
    parsed(
        RequestFields {
            operation: op.label().into(),
            key_id: f.key_id.into(),
            key_type: f.key_type.into(),
            committee: f.committee.to_vec(),
            threshold: f.threshold,
            target: f.target.into(),
            exclude: f.exclude.to_vec(),
            cluster: stamp.cluster,
            lifecycle_seq: stamp.lifecycle_seq,
            request_id: stamp.request_id,
            issued_unix: stamp.issued_unix,
            expiry_unix: stamp.expiry_unix,
            params: Vec::new(),
        },
        approvals,
    )
}

/// The signed admin request of a `Submit` call.
pub(super) fn signed_from_pb(m: apb::SignedAdminRequest) -> Result<SignedAdmin, Status> {
    parsed(
        RequestFields {
            operation: m.operation,
            key_id: m.key_id,
            key_type: m.key_type,
            committee: m.committee,
            threshold: m.threshold,
            target: m.target,
            exclude: m.exclude,
            cluster: m.cluster,
            lifecycle_seq: m.lifecycle_seq,
            request_id: m.request_id,
            issued_unix: m.issued_unix,
            expiry_unix: m.expiry_unix,
            params: m.params,
        },
        m.approvals,
    )
}

/// The `Submit` message for a signed admin request.
pub fn signed_to_pb(s: &SignedAdmin) -> apb::SignedAdminRequest {
    let f = RequestFields::of(&s.request);
    apb::SignedAdminRequest {
        operation: f.operation,
        key_id: f.key_id,
        key_type: f.key_type,
        committee: f.committee,
        threshold: f.threshold,
        target: f.target,
        exclude: f.exclude,
        request_id: f.request_id,
        expiry_unix: f.expiry_unix,
        approvals: s
            .approvals
            .iter()
            .map(|a| apb::AdminApproval {
                chain: a.chain.clone(),
                signature_scheme: a.scheme.into(),
                signature: a.signature.clone(),
            })
            .collect(),
        cluster: f.cluster,
        lifecycle_seq: f.lifecycle_seq,
        issued_unix: f.issued_unix,
        params: f.params,
    }
}

fn parsed(f: RequestFields, approvals: Vec<apb::AdminApproval>) -> Result<SignedAdmin, Status> {
    let request = f.parse().map_err(|(field, e)| arg(field, e))?;
    let approvals = approvals
        .into_iter()
        .map(|a| {
            Ok(ClientAuth {
                chain: a.chain,
                scheme: u16::try_from(a.signature_scheme)
                    .map_err(|_| arg("approvals.signature_scheme", "out of range"))?,
                signature: a.signature,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(SignedAdmin { request, approvals })
}
