//! Share repair: the coordinator side (refuse a target that still holds a
//! live share, one of the key's current epoch; pick t helpers, then rotate) and the participant side as
//! helper (work from its own record; ask the target itself whether it still
//! holds a share) or as target (assemble, check against the record, store
//! as "repairing" until the following refresh activates).

use sha2::{Digest, Sha256};

use super::rotate::RotateSummary;
use super::OpKind;
use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::node::admin::admin_nonce;
use crate::node::admin_request::{AdminOp, SignedAdmin};
use crate::node::committee::status_eid;
use crate::node::shares::share_bytes;
use crate::node::{committee_of, names, Node, NodeError, Operation, Outcome, Proposal};
use crate::protocol::scheme;
use crate::protocol::PartyIdx;
use crate::storage::{KeyRecord, KeyState};

/// The request digest a repair eid binds: the target and every field of the
/// key's public record that the repair depends on.
pub fn repair_binding(target: &NodeName, rec: &KeyRecord) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update((target.as_str().len() as u64).to_be_bytes());
    h.update(target.as_str());
    h.update(record_digest(rec));
    h.finalize().to_vec()
}

/// SHA-256 over every field of a key's public record that a repair or a
/// reshare depends on (not its state, rotation proof or creation time). The
/// lifecycle sequence is one: a node that repairs or joins takes it from the
/// proposal, and only members at that same sequence take part.
pub(super) fn record_digest(rec: &KeyRecord) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(rec.key_id.as_str().as_bytes());
    field(&rec.epoch.to_be_bytes());
    field(&[rec.threshold]);
    for c in &rec.committee {
        field(c.as_bytes());
    }
    field(&rec.public_key);
    field(&rec.chain_code);
    field(&rec.package_hash);
    field(rec.package.as_bytes());
    field(rec.key_type.as_str().as_bytes());
    field(&rec.lifecycle_seq.to_be_bytes());
    h.finalize().into()
}

/// The execution id of repairing `target`'s share of `rec`'s key with
/// `members` (the helpers, then the target).
pub fn eid(rec: &KeyRecord, target: &NodeName, members: &[NodeName], nonce: &[u8]) -> ExecutionId {
    OpKind::Repair.eid(
        &rec.key_id,
        rec.epoch,
        members,
        &repair_binding(target, rec),
        nonce,
    )
}

/// What a finished repair reports.
#[derive(Debug, Clone)]
pub struct RepairSummary {
    pub target: NodeName,
    pub helpers: Vec<NodeName>,
    /// The complete refresh that followed the repair.
    pub rotation: RotateSummary,
}

impl Node {
    /// Rebuilds the share of `target` (which lost its data) from t helpers,
    /// then runs a complete refresh across the committee so the rebuilt share
    /// can sign and every share is re-randomized.
    pub async fn repair(&self, signed: &SignedAdmin) -> Result<RepairSummary, NodeError> {
        self.admit_admin_request(signed, AdminOp::Repair)?;
        let key_id = &signed.request.key_id;
        let target = signed.request.target.as_ref().ok_or_else(|| {
            NodeError::InvalidArgument("a repair request names its target".into())
        })?;
        let rec = self.key(key_id)?;
        if *target == self.name {
            return Err(NodeError::InvalidArgument(format!(
                "node {target} cannot coordinate its own repair; send the request to another \
                 committee node"
            )));
        }
        if rec.state != KeyState::Active {
            return Err(NodeError::KeyNotActive(format!(
                "key {key_id} is {}",
                rec.state.label()
            )));
        }
        if !rec.committee.iter().any(|c| c == target.as_str()) {
            return Err(NodeError::InvalidArgument(format!(
                "node {target} is not in the committee of key {key_id}"
            )));
        }
        let status = Proposal {
            eid: status_eid(key_id, rec.epoch),
            nonce: Vec::new(),
            admin: None,
            op: Operation::ShareStatus {
                key_id: key_id.clone(),
                request_id: None,
                watermarks: false,
                evidence: false,
            },
        };
        // A share of an earlier epoch is not live: the target missed a
        // rotation it cannot catch up with, or was restored from an old backup.
        if let Outcome::ShareStatus {
            epoch: Some(e),
            signing: true,
            ..
        } = self.net.propose(target, status).await?
        {
            if e >= rec.epoch {
                return Err(NodeError::FailedPrecondition(format!(
                    "node {target} still holds a live share of key {key_id} (epoch {e}); repair \
                     refused"
                )));
            }
        }
        let committee = committee_of(&rec)?;
        let mut candidates: Vec<NodeName> = vec![self.name.clone()];
        candidates.extend(
            committee
                .iter()
                .filter(|c| **c != self.name && *c != target)
                .cloned(),
        );
        let down = self.unreachable(&candidates).await;
        let helpers: Vec<NodeName> = candidates
            .into_iter()
            .filter(|c| !down.iter().any(|(d, _)| d == c))
            .take(rec.threshold.into())
            .collect();
        if helpers.len() < usize::from(rec.threshold) {
            return Err(NodeError::Unavailable(format!(
                "repair needs {} live helpers besides {target}; only {} answered",
                rec.threshold,
                helpers.len()
            )));
        }
        let mut members = helpers.clone();
        members.push(target.clone());
        let nonce = admin_nonce(signed)?;
        let eid = eid(&rec, target, &members, &nonce);
        crate::node::note_eid(&eid);
        tracing::info!(
            key = %key_id,
            %target,
            helpers = %names(&helpers),
            eid = %eid,
            "repair: rebuilding share",
        );
        let proposal = Proposal {
            eid,
            nonce: nonce.clone(),
            admin: Some(Box::new(signed.clone())),
            op: Operation::Repair {
                key_id: key_id.clone(),
                target: target.clone(),
                helpers: helpers.clone(),
                record: Box::new(rec),
            },
        };
        self.propose_all(&members, proposal).await?;
        tracing::info!(key = %key_id, %target, "repair: share rebuilt; running a complete refresh");
        let rotation = self.rotate_under(signed, nonce).await?;
        Ok(RepairSummary {
            target: target.clone(),
            helpers,
            rotation,
        })
    }

    /// Repair, as a helper (send one term to the target) or as the target
    /// (collect the terms, store the hollow share). A helper first asks the
    /// target itself, over its authenticated connection, whether it still
    /// holds a live share, and refuses if it does.
    pub(crate) async fn participate_repair(
        &self,
        from: &NodeName,
        p: &Proposal,
        key_id: &KeyId,
        target: &NodeName,
        helpers: &[NodeName],
        proposed: &KeyRecord,
    ) -> Result<Outcome, NodeError> {
        let is_target = *target == self.name;
        // A helper works only from its own record: committee order, threshold,
        // epoch and package never come from the coordinator. The execution id
        // binds the whole record, so the target stores exactly the record the
        // helpers vouched for.
        let record = if is_target {
            proposed.clone()
        } else {
            self.key(key_id)?
        };
        if record.key_id != *key_id
            || (!is_target && repair_binding(target, &record) != repair_binding(target, proposed))
        {
            return Err(NodeError::FailedPrecondition(format!(
                "the repair proposal's record of key {key_id} differs from this node's (epoch {})",
                record.epoch
            )));
        }
        let committee = committee_of(&record)?;
        let index = |n: &NodeName| -> Result<PartyIdx, NodeError> {
            committee
                .iter()
                .position(|c| c == n)
                .and_then(crate::node::party_at)
                .ok_or_else(|| {
                    NodeError::InvalidArgument(format!(
                        "node {n} is not in the committee of key {key_id}"
                    ))
                })
        };
        let target_idx = index(target)?;
        let helper_idx: Vec<PartyIdx> = helpers.iter().map(index).collect::<Result<_, _>>()?;
        if helpers.len() != usize::from(record.threshold) || helpers.contains(target) {
            return Err(NodeError::InvalidArgument(format!(
                "a repair needs exactly {} helpers other than the target",
                record.threshold
            )));
        }
        let mut members = helpers.to_vec();
        members.push(target.clone());
        self.check_members(&members)?;
        let expected = eid(&record, target, &members, &p.nonce);
        let package = hex::decode(&record.package)
            .map_err(|_| NodeError::InvalidArgument("repair record: package is not hex".into()))?;

        if is_target {
            if let Some(epoch) = self.live_share_epoch(key_id).filter(|e| *e >= record.epoch) {
                return Err(NodeError::FailedPrecondition(format!(
                    "this node holds a live share of key {key_id} (epoch {epoch}); nothing to repair"
                )));
            }
            match self.store.key(key_id)? {
                // An earlier repair whose refresh did not complete: start over.
                Some(old) if old.state == KeyState::Repairing => {
                    self.store.remove_key(key_id)?;
                    self.forget_opened(key_id);
                }
                // A share of an epoch the committee has moved past (this node
                // was restored from an old backup, or missed a rotation it
                // cannot catch up with) can never sign again: the rebuilt
                // share replaces it. Ledger, watermarks and audit stay.
                Some(old) if old.epoch < record.epoch => {
                    tracing::warn!(
                        key = %key_id,
                        old_epoch = old.epoch,
                        epoch = record.epoch,
                        "replacing a share of a past epoch with a repaired one",
                    );
                    self.store.remove_key(key_id)?;
                    self.forget_opened(key_id);
                }
                Some(_) => {
                    return Err(NodeError::FailedPrecondition(format!(
                        "this node has a record of key {key_id} but no usable share; remove the \
                         key's data before repairing"
                    )))
                }
                None => {}
            }
            let hollow = self
                .claim_session(&p.eid, expected, &committee)?
                .run_session(scheme::repair_target(
                    record.key_type,
                    &package,
                    target_idx,
                    &helper_idx,
                ))
                .await?;
            // The terms were checked against the package; check the package and
            // the assembled share against the record that will be stored.
            let (threshold, share_count) = hollow.parameters();
            let params_match =
                threshold == record.threshold && usize::from(share_count) == record.committee.len();
            let pk = hollow
                .public_key()
                .map_err(|e| NodeError::Internal(e.to_string()))?;
            if !params_match
                || pk.as_slice() != record.public_key.as_slice()
                || hollow.chain_code() != record.chain_code
            {
                return Err(NodeError::Aborted(format!(
                    "the rebuilt share of key {key_id} does not match its record (public key, \
                     chain code or parameters)"
                )));
            }
            let mut rec = record.clone();
            rec.state = KeyState::Repairing;
            rec.schema = crate::storage::records_schema();
            self.store.insert_key(&rec, &share_bytes(&hollow)?)?;
            tracing::warn!(
                key = %key_id,
                epoch = rec.epoch,
                coordinator = %from,
                "share rebuilt by repair; a complete refresh must follow before it can sign",
            );
            return Ok(Outcome::Repaired);
        }

        // Helper.
        if record.state != KeyState::Active {
            return Err(NodeError::KeyNotActive(format!(
                "key {key_id} is {}",
                record.state.label()
            )));
        }
        if !helpers.contains(&self.name) {
            return Err(NodeError::InvalidArgument(
                "this node is not among the helpers".into(),
            ));
        }
        let status = Proposal {
            eid: p.eid,
            nonce: Vec::new(),
            admin: None,
            op: Operation::ShareStatus {
                key_id: key_id.clone(),
                request_id: None,
                watermarks: false,
                evidence: false,
            },
        };
        match self.net.propose(target, status).await? {
            Outcome::ShareStatus { signing: false, .. } => {}
            // A share of an epoch before the record's is not live (see the
            // coordinator's check).
            Outcome::ShareStatus {
                epoch: Some(e),
                signing: true,
                ..
            } if e < record.epoch => {}
            Outcome::ShareStatus {
                epoch: Some(e),
                signing: true,
                ..
            } => {
                return Err(NodeError::PermissionDenied(format!(
                    "node {target} still reports a live share of key {key_id} (epoch {e}); repair \
                     refused"
                )))
            }
            _ => {
                return Err(NodeError::Aborted(format!(
                    "node {target} answered the share status query with another outcome"
                )))
            }
        }
        let session = self.claim_session(&p.eid, expected, &committee)?;
        let share = self.open_share(&record, record.epoch)?;
        session
            .run_session(scheme::repair_helper(
                share,
                &helper_idx,
                target_idx,
                p.eid.as_bytes(),
            ))
            .await?;
        tracing::info!(key = %key_id, %target, "sent repair term");
        Ok(Outcome::Repaired)
    }
}
