//! The operations, one room each: every file holds the coordinator and the
//! participant side of one operation, and the execution id that binds it.
//!
//! | operation | file | eid label |
//! |---|---|---|
//! | keygen (`keys create`) | `keygen.rs` | `keygen` |
//! | sign | `sign/` (coordinator `mod.rs`, participant, committee checks) | `sign`, `watermark` |
//! | rotate (refresh, activate, release) | `rotate.rs` | `refresh` |
//! | repair | `repair.rs` | `repair` |
//! | reshare (deal, stage, retire) | `reshare/` | `reshare` |
//! | freeze, unfreeze, delete | `lifecycle.rs` | `lifecycle` |
//!
//! A new admin operation runs through the generic envelope: its row in the
//! table of `admin_ops.rs` (with `generic` set), its arms in `run_admin` and
//! `participate_admin` there, and its own file here, which encodes its
//! parameters (`AdminRequest::params`) and its steps (`Operation::Admin`,
//! execution ids labelled `OpKind::Admin`). The admin API's `Submit`, the
//! wire, the request file and the approval checks need no change.
//! `on_propose` below is the participant's single entry point: it routes a
//! proposal to its operation and audits key-changing sessions.

mod abandoned;
pub mod import;
pub mod keygen;
pub mod lifecycle;
pub mod repair;
pub mod reshare;
pub mod rotate;
pub mod sign;

use super::{Node, NodeError, Operation, Outcome, Proposal};
use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::storage::AuditEvent;
use reshare::participant::Reshared;

/// What a session (or a message that travels under an execution id) does.
/// Its label is part of every execution id, so two operations never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Keygen,
    Sign,
    Refresh,
    Repair,
    Reshare,
    /// Slot gossip before a signature (no session).
    Watermark,
    /// A share status query (no session).
    Status,
    /// Freeze, unfreeze or delete (no session).
    Lifecycle,
    /// A dry run of a sign request (no session, nothing recorded).
    Evaluate,
    /// A step of an admin operation that runs through the generic proposal
    /// (`OpSpec::generic`), labelled `OpSpec::step_label`.
    Admin(crate::node::admin_request::AdminOp),
}

impl OpKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Keygen => "keygen",
            Self::Sign => "sign",
            Self::Refresh => "refresh",
            Self::Repair => "repair",
            Self::Reshare => "reshare",
            Self::Watermark => "watermark",
            Self::Status => "status",
            Self::Lifecycle => "lifecycle",
            Self::Evaluate => "evaluate",
            Self::Admin(op) => op.spec().step_label,
        }
    }

    /// The one place an execution id is derived: see `ExecutionId::derive`.
    pub fn eid(
        self,
        key: &KeyId,
        epoch: u64,
        participants: &[NodeName],
        binding: &[u8],
        nonce: &[u8],
    ) -> ExecutionId {
        ExecutionId::derive(self.label(), key, epoch, participants, binding, nonce)
    }
}

impl Node {
    /// Handles a proposal from authenticated node `from` (possibly
    /// ourselves). A refusal or failure says it happened at this node
    /// (`NodeError::At`), so whoever reports it names this node once.
    pub async fn on_propose(&self, from: &NodeName, p: Proposal) -> Result<Outcome, NodeError> {
        self.participate(from, p)
            .await
            .map_err(|e| e.at(&self.name))
    }

    async fn participate(&self, from: &NodeName, p: Proposal) -> Result<Outcome, NodeError> {
        crate::node::faults::check_alive(&self.name)?;
        // A draining node still finishes what is decided (activation,
        // retirement, freeze/unfreeze/delete) but starts nothing new.
        let _busy = match &p.op {
            Operation::Activate { .. } | Operation::Retire { .. } | Operation::Lifecycle { .. } => {
                None
            }
            _ => Some(self.start_work(*from == self.name)?),
        };
        if !self.roster.contains(from) {
            return Err(NodeError::PermissionDenied(format!(
                "node {from} is not in this cluster's roster"
            )));
        }
        // Sessions that change keys are audited here with their outcome;
        // signing audits its own decision, status queries are not recorded.
        let session = match &p.op {
            Operation::Keygen { key_id, .. } => Some(("keygen", key_id.clone())),
            Operation::Refresh { key_id, .. } => Some(("refresh", key_id.clone())),
            Operation::Reshare { key_id, .. } => Some(("reshare", key_id.clone())),
            Operation::Repair { key_id, .. } => Some(("repair", key_id.clone())),
            Operation::Activate { key_id, .. } => Some(("activate", key_id.clone())),
            Operation::Retire { key_id, .. } => Some(("retire", key_id.clone())),
            Operation::Lifecycle { key_id, action } | Operation::Admin { key_id, action, .. } => {
                Some((action.label(), key_id.clone()))
            }
            Operation::Sign { .. }
            | Operation::ShareStatus { .. }
            | Operation::Watermark { .. }
            | Operation::Evaluate { .. } => None,
        };
        // A peer over its refusal budget gets no approval verified.
        if session.is_some() {
            self.check_refusal_budget(from)?;
        }
        let eid = p.eid;
        let result = match self.check_admin_proposal(&p).await {
            Ok(()) => self.dispatch(from, p).await,
            Err(e) => Err(e),
        };
        if let Some((kind, key)) = session {
            let event = AuditEvent {
                kind: format!("session.{kind}"),
                actor: format!("node/{from}"),
                key: key.to_string(),
                decision: if result.is_ok() { "ok" } else { "failed" }.into(),
                rule: "proposal checks".into(),
                eid: eid.to_string(),
                detail: result
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                ..Default::default()
            };
            if result.is_ok() {
                let _ = self.audit(event);
            } else {
                self.audit_refusal(from, event, true);
            }
        }
        result
    }

    async fn dispatch(&self, from: &NodeName, p: Proposal) -> Result<Outcome, NodeError> {
        match p.op.clone() {
            Operation::Keygen {
                key_id,
                key_type,
                threshold,
                committee,
            } => {
                self.participate_keygen(&p, &key_id, key_type, threshold, &committee)
                    .await
            }
            Operation::Sign {
                epoch,
                lifecycle_seq,
                request,
                auth,
                participants,
            } => {
                let at = sign::At {
                    epoch,
                    lifecycle_seq,
                };
                self.participate_sign(from, &p, at, &request, &auth, &participants)
                    .await
            }
            Operation::Refresh {
                key_id,
                epoch,
                committee,
            } => {
                self.participate_refresh(&p, &key_id, epoch, &committee)
                    .await
            }
            Operation::Watermark {
                request,
                auth,
                window,
            } => {
                crate::node::faults::wait_if_held(
                    &self.name,
                    crate::node::faults::points::BEFORE_GOSSIP,
                )
                .await;
                self.participate_watermark(from, &request, &auth, window, &p.nonce)
            }
            Operation::Evaluate { request, auth } => self.participate_evaluate(&request, &auth),
            Operation::ShareStatus {
                key_id,
                request_id,
                watermarks: with_watermarks,
                evidence,
            } => {
                let mut o = self.share_status_outcome(&key_id, evidence);
                if let Outcome::ShareStatus {
                    ledger,
                    watermarks,
                    lifecycle,
                    ..
                } = &mut o
                {
                    // A key's ledger, slot watermarks and lifecycle proofs are
                    // its committee's business: another roster node learns
                    // the epoch and the maintenance state only (receipts and
                    // certificates, which activate nothing without every
                    // member, and which a leaving dealer needs).
                    if !self.sees_key_detail(&key_id, from) {
                        *lifecycle = None;
                        return Ok(o);
                    }
                    if let Some(rid) = request_id {
                        *ledger = self.store.ledger_get(&key_id, &rid)?.map(Box::new);
                    }
                    if with_watermarks {
                        *watermarks = self.store.watermarks(&key_id)?;
                    }
                }
                Ok(o)
            }
            Operation::Reshare {
                key_id,
                epoch,
                dealers,
                committee,
                threshold,
                record,
            } => {
                self.participate_reshare(
                    &p, &key_id, epoch, &dealers, &committee, threshold, &record,
                )
                .await
            }
            Operation::Retire {
                key_id,
                epoch,
                dealers,
                committee,
                threshold,
                confirmation,
                certificate,
            } => {
                let reshare = Reshared {
                    dealers: &dealers,
                    committee: &committee,
                    threshold,
                    confirmation: &confirmation,
                    certificate: &certificate,
                };
                self.participate_retire(&p, &key_id, epoch, reshare).await
            }
            Operation::Repair {
                key_id,
                target,
                helpers,
                record,
            } => {
                self.participate_repair(from, &p, &key_id, &target, &helpers, &record)
                    .await
            }
            Operation::Activate {
                key_id,
                epoch,
                confirmation,
                certificate,
            } => self.participate_activate(&p.eid, &key_id, epoch, confirmation, &certificate),
            Operation::Lifecycle { key_id, action } => {
                self.participate_lifecycle(&p, &key_id, action, false)
            }
            Operation::Admin { .. } => self.participate_admin(from, &p).await,
        }
    }
}
