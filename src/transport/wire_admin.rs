//! The signed admin request on the peer wire, and the proposals named by an
//! admin operation (lifecycle, and the generic admin step): every field
//! parsed into the node's types (or refused with the field named). No I/O.

use tonic::Status;

use super::wire::bad;
use crate::domain::KeyId;
use crate::node::admin_request::{AdminOp, RequestFields, SignedAdmin, MAX_APPROVALS};
use crate::node::{Operation, Outcome};
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

/// The largest body of a generic admin step or its answer.
pub const MAX_STEP_BODY: usize = 64 * 1024;

pub(super) fn lifecycle_from_pb(l: pb::LifecycleProposal) -> Result<Operation, Status> {
    Ok(Operation::Lifecycle {
        key_id: KeyId::parse(&l.key_id).map_err(|e| bad("key_id", e))?,
        action: AdminOp::parse(&l.action).map_err(|e| bad("action", e))?,
    })
}

pub(super) fn lifecycle_to_pb(key_id: KeyId, action: AdminOp) -> pb::propose_request::Op {
    pb::propose_request::Op::Lifecycle(pb::LifecycleProposal {
        key_id: key_id.to_string(),
        action: action.label().into(),
    })
}

pub(super) fn step_from_pb(a: pb::AdminStepProposal) -> Result<Operation, Status> {
    if a.body.len() > MAX_STEP_BODY {
        return Err(bad(
            "admin_step.body",
            format!("{} bytes; at most {MAX_STEP_BODY}", a.body.len()),
        ));
    }
    Ok(Operation::Admin {
        key_id: KeyId::parse(&a.key_id).map_err(|e| bad("admin_step.key_id", e))?,
        action: AdminOp::parse(&a.action).map_err(|e| bad("admin_step.action", e))?,
        body: a.body,
    })
}

pub(super) fn step_to_pb(key_id: KeyId, action: AdminOp, body: Vec<u8>) -> pb::propose_request::Op {
    pb::propose_request::Op::AdminStep(pb::AdminStepProposal {
        key_id: key_id.to_string(),
        action: action.label().into(),
        body,
    })
}

pub(super) fn step_result_from_pb(a: pb::AdminStepResult) -> Result<Outcome, String> {
    if a.body.len() > MAX_STEP_BODY {
        return Err(format!(
            "admin step answer of {} bytes; at most {MAX_STEP_BODY}",
            a.body.len()
        ));
    }
    Ok(Outcome::Admin { body: a.body })
}
