//! Parsing an admin message into the signed admin request it carries (the
//! node checks the approvals; this only parses).

use tonic::Status;

use super::services::arg;
use crate::node::admin_request::{AdminOp, AdminRequest, SignedAdmin, Stamp};
use crate::node::request::ClientAuth;
use crate::proto::admin as apb;

/// The request fields of an admin message other than its id, expiry and approvals.
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) key_id: &'a str,
    pub(super) key_type: &'a str,
    pub(super) committee: &'a [String],
    pub(super) threshold: u32,
    pub(super) target: &'a str,
    pub(super) exclude: &'a [String],
}

/// The signed admin request an admin message carries. The node checks the
/// approvals; this only parses.
pub(super) fn signed_admin(
    op: AdminOp,
    f: Fields<'_>,
    stamp: Stamp,
    approvals: Vec<apb::AdminApproval>,
) -> Result<SignedAdmin, Status> {
    let request = AdminRequest::from_fields(
        op.label(),
        f.key_id,
        f.key_type,
        f.committee,
        f.threshold,
        f.target,
        f.exclude,
        stamp,
    )
    .map_err(|(field, e)| arg(field, e))?;
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
