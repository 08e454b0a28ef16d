//! The check every node makes before it takes part in a key change: the
//! proposal must carry a signed admin request (`admin_request.rs`) that asks
//! for exactly this operation, whose approvals check out against this node's
//! CA and policy, whose request id was not used for another operation, and
//! which the proposal's nonce (so its execution id) binds. A node that
//! refuses stages nothing, pauses nothing, deals nothing and deletes nothing.

use super::admin_request::{AdminOp, AdminRequest, SignedAdmin, MAX_APPROVALS, NONCE_RANDOM};
use super::{names, now_unix, Node, NodeError, Operation, Proposal};
use crate::domain::{KeyId, NodeName};
use crate::storage::AuditEvent;

/// What a request's cluster and issue time are checked against: this
/// node's cluster, its policy's `max_approval_age` and its clock.
struct Stamped {
    cluster: String,
    max_age_secs: u64,
    now: u64,
}

/// An admin request whose approvals checked out on this node.
#[derive(Debug, Clone)]
pub struct VerifiedAdmin {
    /// The distinct admins who approved it, in the order they signed.
    pub approvers: Vec<NodeName>,
}

/// A coordinator's nonce for an admin operation: 32 random bytes, then the
/// digest of the signed request and its approvals.
pub(crate) fn admin_nonce(signed: &SignedAdmin) -> Result<Vec<u8>, NodeError> {
    let mut n = vec![0u8; NONCE_RANDOM];
    getrandom::fill(&mut n).map_err(|e| NodeError::Internal(format!("rng: {e}")))?;
    n.extend_from_slice(&signed.digest());
    Ok(n)
}

fn denied(r: &AdminRequest, why: impl std::fmt::Display) -> NodeError {
    NodeError::PermissionDenied(format!(
        "{} of key {} (admin request {}) refused: {why}",
        r.operation, r.key_id, r.request_id
    ))
}

impl Node {
    /// Checks a signed admin request as this node: its fields and expiry;
    /// each approval's certificate chain (pinned CA, validity, CRL), its
    /// `admin/<name>` identity and its signature over the request; that no
    /// admin approved twice; and this node's policy (quorum, limits). The
    /// request id is not consumed here (see `check_admin_proposal`).
    pub(crate) fn verify_admin_request(
        &self,
        signed: &SignedAdmin,
    ) -> Result<VerifiedAdmin, NodeError> {
        self.verify_admin_request_at(signed, now_unix())
    }

    /// `verify_admin_request` as of Unix time `now` (a missed change is
    /// checked as of its own expiry, see `catch_up_lifecycle`).
    fn verify_admin_request_at(
        &self,
        signed: &SignedAdmin,
        now: u64,
    ) -> Result<VerifiedAdmin, NodeError> {
        let approvers = approvers_of(self.verifier.as_ref(), signed, now, &self.stamped())?;
        self.admit_approvers(signed, approvers, true)
    }

    fn stamped(&self) -> Stamped {
        Stamped {
            cluster: self.verifier.cluster(),
            max_age_secs: self.policy().max_approval_age_secs(),
            now: now_unix(),
        }
    }

    /// This node's policy on the (verified) approvers of `signed`; a denial
    /// is audited here with `audit` (a peer's proposal is audited, within
    /// that peer's budget, by the session that refuses it).
    fn admit_approvers(
        &self,
        signed: &SignedAdmin,
        approvers: Vec<NodeName>,
        audit: bool,
    ) -> Result<VerifiedAdmin, NodeError> {
        let r = &signed.request;
        let d = self.policy().check_approvals(r, &approvers);
        if !d.allowed && audit {
            let _ = self.audit(AuditEvent {
                kind: format!("admin.{}", r.operation),
                actor: format!("admins/{}", names(&approvers)),
                key: r.key_id.to_string(),
                request_id: r.request_id.clone(),
                decision: "denied".into(),
                rule: d.rule.clone(),
                detail: d.reason.clone(),
                ..Default::default()
            });
        }
        if !d.allowed {
            return Err(denied(r, d));
        }
        Ok(VerifiedAdmin { approvers })
    }

    /// A coordinator's own check of a request before it proposes anything:
    /// the operation is the one asked of it, and the request is approved here.
    pub(crate) fn admit_admin_request(
        &self,
        signed: &SignedAdmin,
        op: AdminOp,
    ) -> Result<VerifiedAdmin, NodeError> {
        let r = &signed.request;
        if r.operation != op {
            return Err(NodeError::InvalidArgument(format!(
                "admin request {} asks to {}, not to {op}",
                r.request_id, r.operation
            )));
        }
        // What the operation takes (the table in admin_ops.rs): a malformed
        // request, not a matter of approvals.
        super::admin_ops::check_takes(r).map_err(|e| {
            NodeError::InvalidArgument(format!("admin request {}: {e}", r.request_id))
        })?;
        self.verify_admin_request(signed)
    }

    /// Before taking part in a key change (keygen, refresh, repair, reshare,
    /// retire): the proposal must carry a signed admin request for exactly
    /// this operation, approved per this node's policy, bound by the
    /// proposal's nonce, and not used before for another operation (the use
    /// is recorded durably). Other proposals pass.
    pub(crate) async fn check_admin_proposal(&self, p: &Proposal) -> Result<(), NodeError> {
        self.check_admin_proposal_as(p, false).await
    }

    /// `check_admin_proposal`; with `missed`, for a freeze or delete that
    /// the other nodes applied while this one was down: its approvals are
    /// checked as they stood when it was made (it may have expired since).
    ///
    /// Cheapest checks first: the operation and key, the nonce binding, then
    /// the approvals' chains and signatures (off the async workers), and only
    /// then the proposal's parameters (linear in the bounded lists).
    pub(crate) async fn check_admin_proposal_as(
        &self,
        p: &Proposal,
        missed: bool,
    ) -> Result<(), NodeError> {
        let (ops, key_id, step): (Vec<AdminOp>, &KeyId, &str) = match &p.op {
            Operation::Keygen { key_id, .. } => (vec![AdminOp::Create], key_id, "keygen"),
            // A repair ends with a refresh under the repair's request.
            Operation::Refresh { key_id, .. } => (AdminOp::refreshing(), key_id, "refresh"),
            Operation::Repair { key_id, .. } => (vec![AdminOp::Repair], key_id, "repair"),
            Operation::Reshare { key_id, .. } => (vec![AdminOp::Reshare], key_id, "reshare"),
            Operation::Retire { key_id, .. } => (vec![AdminOp::Reshare], key_id, "retire"),
            Operation::Lifecycle { key_id, action } | Operation::Admin { key_id, action, .. } => {
                (vec![*action], key_id, action.label())
            }
            Operation::Sign { .. }
            | Operation::ShareStatus { .. }
            | Operation::Watermark { .. }
            | Operation::Evaluate { .. }
            | Operation::Activate { .. } => return Ok(()),
        };
        let Some(signed) = p.admin.as_deref() else {
            return Err(NodeError::PermissionDenied(format!(
                "{step} of key {key_id} refused: the proposal carries no signed admin request, \
                 so none of the approvals this node's policy requires"
            )));
        };
        let r = &signed.request;
        if !ops.contains(&r.operation) || r.key_id != *key_id {
            return Err(denied(
                r,
                format!(
                    "the proposal is a {step} of key {key_id}, which the request does not ask for"
                ),
            ));
        }
        if signed.approvals.len() > MAX_APPROVALS {
            return Err(denied(r, format!("more than {MAX_APPROVALS} approvals")));
        }
        if !signed.binds(&p.nonce) {
            return Err(denied(
                r,
                "the proposal's nonce does not bind this request and its approvals",
            ));
        }
        let now = if missed {
            now_unix().min(r.expiry_unix)
        } else {
            now_unix()
        };
        let verifier = std::sync::Arc::clone(&self.verifier);
        let owned = signed.clone();
        let stamped = self.stamped();
        let approvers = tokio::task::spawn_blocking(move || {
            approvers_of(verifier.as_ref(), &owned, now, &stamped)
        })
        .await
        .map_err(|e| NodeError::Internal(format!("approval check: {e}")))??;
        let verified = self.admit_approvers(signed, approvers, false)?;
        self.check_parameters(r, &p.op)?;
        if let Operation::Admin { action, .. } = &p.op {
            // Refused before the request id is spent: a generic operation's
            // own checks (an import member opens and checks its point here).
            self.check_step(r, *action, p)?;
        }
        if !self
            .store
            .use_admin_request(&r.request_id, &p.nonce, step, &p.eid)?
        {
            return Err(denied(
                r,
                "its request id was already used for another operation; a request runs once",
            ));
        }
        tracing::info!(
            key = %key_id,
            operation = %r.operation,
            request_id = %r.request_id,
            approvers = %names(&verified.approvers),
            "admin request approved here",
        );
        Ok(())
    }

    /// The proposal's parameters are those the request signs.
    fn check_parameters(&self, r: &AdminRequest, op: &Operation) -> Result<(), NodeError> {
        let mismatch =
            |what: &str| denied(r, format!("the proposal's {what} is not the request's"));
        if !r.exclude.is_empty()
            && !matches!(op, Operation::Reshare { .. } | Operation::Retire { .. })
        {
            return Err(denied(r, "only a reshare can exclude nodes"));
        }
        if let Operation::Lifecycle { action, .. } = op {
            if !matches!(
                action,
                AdminOp::Freeze | AdminOp::Unfreeze | AdminOp::Delete | AdminOp::Unban
            ) {
                return Err(denied(
                    r,
                    format!("{action} is not a change of a key's state"),
                ));
            }
        }
        match op {
            Operation::Keygen {
                key_type,
                threshold,
                committee,
                ..
            } => {
                let asked = if r.committee.is_empty() {
                    &self.roster
                } else {
                    &r.committee
                };
                if r.key_type != Some(*key_type) {
                    return Err(mismatch("key type"));
                }
                if r.threshold != *threshold {
                    return Err(mismatch("threshold"));
                }
                if asked != committee {
                    return Err(mismatch("committee"));
                }
            }
            Operation::Repair { target, record, .. } => {
                if r.target.as_ref() != Some(target) {
                    return Err(mismatch("target node"));
                }
                if r.key_type.is_some_and(|t| t != record.key_type) {
                    return Err(mismatch("key type"));
                }
            }
            Operation::Reshare {
                committee,
                threshold,
                record,
                dealers,
                ..
            } => {
                let excluded: std::collections::HashSet<&NodeName> = r.exclude.iter().collect();
                if let Some(x) = dealers
                    .iter()
                    .chain(committee)
                    .find(|n| excluded.contains(n))
                {
                    return Err(denied(
                        r,
                        format!("node {x} takes part, but the request excludes it"),
                    ));
                }
                if r.committee != *committee {
                    return Err(mismatch("committee"));
                }
                if r.threshold != u32::from(*threshold) {
                    return Err(mismatch("threshold"));
                }
                if r.key_type.is_some_and(|t| t != record.key_type) {
                    return Err(mismatch("key type"));
                }
            }
            Operation::Retire {
                committee,
                threshold,
                ..
            } => {
                if r.committee != *committee {
                    return Err(mismatch("committee"));
                }
                if r.threshold != u32::from(*threshold) {
                    return Err(mismatch("threshold"));
                }
            }
            Operation::Refresh { key_id, .. }
            | Operation::Lifecycle { key_id, .. }
            | Operation::Admin { key_id, .. } => {
                if let (Some(t), Some(rec)) = (r.key_type, self.store.key(key_id)?) {
                    if t != rec.key_type {
                        return Err(mismatch("key type"));
                    }
                }
            }
            Operation::Sign { .. }
            | Operation::ShareStatus { .. }
            | Operation::Watermark { .. }
            | Operation::Evaluate { .. }
            | Operation::Activate { .. } => {}
        }
        Ok(())
    }
}

/// Checks what needs no policy: the request's fields and expiry as of `now`,
/// the number of approvals, and each approval's certificate chain, `admin`
/// identity and signature; no admin may approve twice. Returns the
/// approvers in order. CPU-bound (one chain and signature check per
/// approval, at most `MAX_APPROVALS`).
fn approvers_of(
    verifier: &dyn crate::node::request::RequestVerifier,
    signed: &SignedAdmin,
    now: u64,
    stamped: &Stamped,
) -> Result<Vec<NodeName>, NodeError> {
    let r = &signed.request;
    r.check_fields(now).map_err(|e| denied(r, e))?;
    if r.cluster != stamped.cluster {
        return Err(denied(
            r,
            format!(
                "it is for cluster {:?}; this node is in cluster {:?} (its trust domain and the \
                 cluster id of its CA)",
                r.cluster, stamped.cluster
            ),
        ));
    }
    let age = stamped.now.saturating_sub(r.issued_unix);
    if age > stamped.max_age_secs {
        return Err(denied(
            r,
            format!(
                "it was issued {} ago (Unix {}); this node takes approvals up to {} old \
                 (policy limits.max_approval_age): collect new approvals",
                crate::node::policy::human_age(age),
                r.issued_unix,
                crate::node::policy::human_age(stamped.max_age_secs)
            ),
        ));
    }
    if signed.approvals.len() > MAX_APPROVALS {
        return Err(denied(r, format!("more than {MAX_APPROVALS} approvals")));
    }
    let bytes = r.canonical_bytes();
    let mut approvers: Vec<NodeName> = Vec::with_capacity(signed.approvals.len());
    for (i, a) in signed.approvals.iter().enumerate() {
        let who = verifier
            .verify_admin(a, &bytes)
            .map_err(|e| denied(r, format!("approval {}: {e}", i.saturating_add(1))))?;
        if approvers.contains(&who) {
            return Err(denied(
                r,
                format!("admin {who} approved twice; approvals must come from distinct admins"),
            ));
        }
        approvers.push(who);
    }
    Ok(approvers)
}
