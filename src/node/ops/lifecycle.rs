//! A key's lifecycle: freeze (an emergency stop), unfreeze, delete and
//! unban (clear the nodes' bans, `node/bans.rs`), each
//! on an approved admin request that every committee node checks itself
//! (`admin.rs`) before it applies it. No engine session runs: the
//! coordinator sends the request to every committee node, retrying the
//! unreachable ones for a while, and reports where it is not yet applied.

use super::OpKind;
use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::node::admin::admin_nonce;
use crate::node::admin_file::LifecycleProof;
use crate::node::admin_request::{AdminOp, SignedAdmin};
use crate::node::committee::reasons;
use crate::node::{committee_of, names, now_unix, Node, NodeError, Operation, Outcome, Proposal};
use crate::storage::{KeyRecord, KeyState};

/// The execution id of a freeze, unfreeze or delete of `key_id`.
pub fn eid(key_id: &KeyId, action: AdminOp, nonce: &[u8]) -> ExecutionId {
    OpKind::Lifecycle.eid(key_id, 0, &[], action.label().as_bytes(), nonce)
}

/// What a freeze, unfreeze or delete reports.
#[derive(Debug, Clone)]
pub struct LifecycleSummary {
    /// The key as this node holds it afterwards.
    pub key: KeyRecord,
    pub applied: Vec<NodeName>,
    /// Committee nodes that did not apply it yet, with why.
    pub not_applied: Vec<(NodeName, String)>,
}

impl Node {
    /// Freezes, unfreezes or deletes the key the signed admin request names
    /// on every node of its committee.
    pub async fn change_key_state(
        &self,
        signed: &SignedAdmin,
    ) -> Result<LifecycleSummary, NodeError> {
        let action = signed.request.operation;
        if !matches!(
            action,
            AdminOp::Freeze | AdminOp::Unfreeze | AdminOp::Delete | AdminOp::Unban
        ) {
            return Err(NodeError::InvalidArgument(format!(
                "admin request {} asks to {action}, not to freeze, unfreeze, delete or unban",
                signed.request.request_id
            )));
        }
        let verified = self.admit_admin_request(signed, action)?;
        let key_id = &signed.request.key_id;
        let rec = self.key(key_id)?;
        if matches!(rec.state, KeyState::Retired) {
            return Err(NodeError::NotInCommittee(format!(
                "key {key_id} is retired here; send the request to a node of its committee"
            )));
        }
        if action.takes_lifecycle_seq() && signed.request.lifecycle_seq != rec.lifecycle_seq {
            return Err(NodeError::FailedPrecondition(format!(
                "admin request {} applies to lifecycle sequence {} of key {key_id}, which is at \
                 {} on node {} (`thresig keys show {key_id}`); propose it again with --sequence {}",
                signed.request.request_id,
                signed.request.lifecycle_seq,
                rec.lifecycle_seq,
                self.name,
                rec.lifecycle_seq
            )));
        }
        let committee = committee_of(&rec)?;
        let nonce = admin_nonce(signed)?;
        let eid = eid(key_id, action, &nonce);
        crate::node::note_eid(&eid);
        let proposal = Proposal {
            eid,
            nonce,
            admin: Some(Box::new(signed.clone())),
            op: Operation::Lifecycle {
                key_id: key_id.clone(),
                action,
            },
        };
        tracing::info!(
            key = %key_id,
            %action,
            approvers = %names(&verified.approvers),
            committee = %names(&committee),
            "applying on every committee node",
        );
        let not_applied = self.call_with_retries(&committee, &proposal).await;
        let applied: Vec<NodeName> = committee
            .iter()
            .filter(|n| !not_applied.iter().any(|(f, _)| f == *n))
            .cloned()
            .collect();
        if applied.is_empty() {
            return Err(NodeError::Unavailable(format!(
                "{action} of key {key_id} was applied on no node: {}",
                reasons(&not_applied)
            )));
        }
        Ok(LifecycleSummary {
            key: self.key(key_id)?,
            applied,
            not_applied,
        })
    }

    /// Applies a checked freeze, unfreeze or delete here. Live (from the
    /// coordinator), the request must name the key's lifecycle sequence
    /// here; `catching_up` (a change t members applied and this node
    /// missed), it may name a later one. The key is at the request's
    /// sequence + 1 afterwards.
    pub(crate) fn participate_lifecycle(
        &self,
        p: &Proposal,
        key_id: &KeyId,
        action: AdminOp,
        catching_up: bool,
    ) -> Result<Outcome, NodeError> {
        if p.eid != eid(key_id, action, &p.nonce) {
            return Err(NodeError::PermissionDenied(
                "the execution id does not match the proposal".into(),
            ));
        }
        let rec = self.key(key_id)?;
        // Each change applies once: the same proposal again (a retry, or a
        // replay of an old unfreeze after a newer freeze) changes nothing.
        if self.store.eid_used(&p.eid)? {
            return Ok(Outcome::Lifecycle {
                state: rec.state.label().to_owned(),
            });
        }
        let seq = p.admin.as_deref().map_or(0, |a| a.request.lifecycle_seq);
        if action.takes_lifecycle_seq()
            && !matches!(rec.state, KeyState::Deleted(_))
            && (seq < rec.lifecycle_seq || (seq > rec.lifecycle_seq && !catching_up))
        {
            return Err(NodeError::FailedPrecondition(format!(
                "the {action} applies to lifecycle sequence {seq} of key {key_id}, which is at {} \
                 on node {}{}",
                rec.lifecycle_seq,
                self.name,
                if seq < rec.lifecycle_seq {
                    ": a later change was applied since"
                } else {
                    ": this node missed a change and catches up from its committee first"
                }
            )));
        }
        // A state the change cannot apply to is refused before the eid is
        // claimed, so the change can still be taken once the key is back.
        if matches!(action, AdminOp::Freeze | AdminOp::Unfreeze)
            && !matches!(
                rec.state,
                KeyState::Active | KeyState::Frozen(_) | KeyState::Deleted(_)
            )
        {
            return Err(NodeError::KeyNotActive(format!(
                "key {key_id} is {} here; {action} applies to an active or frozen key",
                rec.state.label()
            )));
        }
        if !self.store.claim_eid(&p.eid, now_unix())? {
            return Ok(Outcome::Lifecycle {
                state: rec.state.label().to_owned(),
            });
        }
        let next = seq.saturating_add(1);
        if action == AdminOp::Unban {
            // Not a state change: not kept as the key's last lifecycle
            // proof (a node that missed it keeps its bans until asked).
            let cleared = self.store.clear_bans(key_id)?;
            self.forget_key_suspects(key_id);
            tracing::warn!(key = %key_id, cleared, "bans cleared by an approved admin request");
            return Ok(Outcome::Lifecycle {
                state: rec.state.label().to_owned(),
            });
        }
        let by = p
            .admin
            .as_deref()
            .map(|a| format!("admin request {}", a.request.request_id))
            .unwrap_or_default();
        let why = format!("{action} by {by} at Unix {}", now_unix());
        let proof = LifecycleProof::of(p)
            .and_then(|x| serde_json::to_vec(&x).ok())
            .unwrap_or_default();
        let state = match (action, &rec.state) {
            (_, KeyState::Deleted(_)) => rec.state.clone(),
            (AdminOp::Delete, _) => {
                self.store.delete_key(key_id, why.clone(), next, &proof)?;
                self.forget_opened(key_id);
                KeyState::Deleted(why)
            }
            (AdminOp::Freeze, KeyState::Active) => {
                let frozen = KeyState::Frozen(why);
                self.store
                    .set_state_with_proof(key_id, frozen.clone(), next, &proof)?;
                frozen
            }
            (AdminOp::Freeze, KeyState::Frozen(_)) => {
                self.store
                    .set_state_with_proof(key_id, rec.state.clone(), next, &proof)?;
                rec.state.clone()
            }
            (AdminOp::Unfreeze, KeyState::Frozen(_) | KeyState::Active) => {
                self.store
                    .set_state_with_proof(key_id, KeyState::Active, next, &proof)?;
                KeyState::Active
            }
            (_, other) => {
                return Err(NodeError::KeyNotActive(format!(
                    "key {key_id} is {} here; {action} applies to an active or frozen key",
                    other.label()
                )))
            }
        };
        if action == AdminOp::Delete && !matches!(rec.state, KeyState::Deleted(_)) {
            tracing::warn!(key = %key_id, eid = %p.eid, "key deleted: every share of it here is destroyed");
        } else {
            tracing::info!(key = %key_id, %action, state = state.label(), "key state changed");
        }
        if let (AdminOp::Freeze | AdminOp::Unfreeze, KeyState::Deleted(_)) = (action, &state) {
            return Err(NodeError::KeyNotActive(format!(
                "key {key_id} is deleted here"
            )));
        }
        Ok(Outcome::Lifecycle {
            state: state.label().to_owned(),
        })
    }

    /// The committee nodes of `rec`'s key (`from` included, this node
    /// excluded) that report they applied the lifecycle change `eid`.
    async fn applied_by(
        &self,
        rec: &KeyRecord,
        eid: &ExecutionId,
        from: &NodeName,
    ) -> Vec<NodeName> {
        let others: Vec<NodeName> = committee_of(rec)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| *n != self.name && n != from)
            .collect();
        let asks = others.iter().map(|n| async move {
            let ask = self.net.propose(
                n,
                crate::node::committee::status_query(&rec.key_id, rec.epoch, None),
            );
            match tokio::time::timeout(self.timeouts.ping, ask).await {
                Ok(Ok(Outcome::ShareStatus {
                    lifecycle: Some(p), ..
                })) if p.eid == *eid => Some(n.clone()),
                _ => None,
            }
        });
        let mut applied: Vec<NodeName> = vec![from.clone()];
        applied.extend(futures::future::join_all(asks).await.into_iter().flatten());
        applied
    }

    /// The last freeze, unfreeze or delete applied here, as a proposal that
    /// a node which missed it can check and apply.
    pub(crate) fn lifecycle_proposal(&self, key_id: &KeyId) -> Option<Proposal> {
        let raw = self.store.lifecycle_proof(key_id).ok().flatten()?;
        let proof: LifecycleProof = serde_json::from_slice(&raw).ok()?;
        proof.proposal().ok()
    }

    /// Applies a freeze, unfreeze or delete that peer `from` applied and
    /// this node missed (it was down), when the change names this node's
    /// lifecycle sequence or a later one, and t committee nodes (`from`
    /// among them) report that they applied that very change: one node's
    /// word, even with valid approvals, could be a change that was approved
    /// and never carried out. (A freeze at this node's own sequence is
    /// taken from one member: it cannot undo anything later.) The approvals are checked as if a coordinator
    /// had sent them, as of their request's expiry, and refused once the
    /// request was issued longer ago than the policy's `max_approval_age`.
    /// Returns what this node did, if it applied it.
    pub(crate) async fn catch_up_lifecycle(&self, from: &NodeName, p: Proposal) -> Option<String> {
        let Operation::Lifecycle { key_id, action } = &p.op else {
            return None;
        };
        let ours = self.store.key(key_id).ok().flatten()?;
        let seq = p.admin.as_deref()?.request.lifecycle_seq;
        let take = action.takes_lifecycle_seq()
            && !matches!(ours.state, KeyState::Deleted(_))
            && seq >= ours.lifecycle_seq
            && !self.store.eid_used(&p.eid).unwrap_or(true);
        if !take {
            return None;
        }
        let (key_id, action) = (key_id.clone(), *action);
        // A freeze at this node's own sequence is taken on one member's word
        // (with the approvals): it cannot undo a later change, and stopping
        // is the safe side (a freeze that reached fewer than t members still
        // spreads). Anything else needs t members that applied it.
        let lone_freeze = action == AdminOp::Freeze
            && seq == ours.lifecycle_seq
            && ours.state == KeyState::Active;
        if !lone_freeze && self.lifecycle_unconfirmed.recently(&p.eid) {
            return None;
        }
        let applied_by = if lone_freeze {
            vec![from.clone()]
        } else {
            self.applied_by(&ours, &p.eid, from).await
        };
        let needed = if lone_freeze {
            1
        } else {
            usize::from(ours.threshold)
        };
        if applied_by.len() < needed {
            // Not asked again for a minute (a peer that keeps offering it
            // costs one round of questions per minute, not one per probe).
            self.lifecycle_unconfirmed.note(p.eid);
            tracing::warn!(
                key = %key_id,
                node = %from,
                %action,
                applied_by = %names(&applied_by),
                needed,
                "a peer reports a key state change that too few committee nodes applied; not \
                 applied here",
            );
            return None;
        }
        let applied = match self.check_admin_proposal_as(&p, true).await {
            Ok(()) => self.participate_lifecycle(&p, &key_id, action, true),
            Err(e) => Err(e),
        };
        match applied {
            Ok(_) => {
                tracing::warn!(key = %key_id, %action, node = %from,
                    "applied a key state change this node had missed");
                Some(format!("{action} (learned from node {from})"))
            }
            Err(e) => {
                tracing::warn!(key = %key_id, %action, node = %from, error = %e,
                    "a peer's key state change did not check out here");
                None
            }
        }
    }
}

/// Lifecycle changes a peer offered that too few committee members
/// confirmed, and when: not asked about again for `RECHECK`.
#[derive(Debug, Default)]
pub(crate) struct Unconfirmed {
    seen: std::sync::Mutex<std::collections::HashMap<ExecutionId, std::time::Instant>>,
}

impl Unconfirmed {
    const RECHECK: std::time::Duration = std::time::Duration::from_secs(60);
    const MAX: usize = 1024;

    fn recently(&self, eid: &ExecutionId) -> bool {
        let g = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.get(eid).is_some_and(|at| at.elapsed() < Self::RECHECK)
    }

    fn note(&self, eid: ExecutionId) {
        let mut g = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.len() >= Self::MAX {
            g.retain(|_, at| at.elapsed() < Self::RECHECK);
            if g.len() >= Self::MAX {
                g.clear();
            }
        }
        g.insert(eid, std::time::Instant::now());
    }
}
