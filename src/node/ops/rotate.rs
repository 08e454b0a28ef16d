//! Share rotation (proactive refresh with epochs): the coordinator side
//! (check every node is on the key's epoch, refresh, activate with proof,
//! release an abandoned rotation) and the participant side (stage the
//! refreshed share, activate only with the rotation's proof). Signing goes on
//! at the old epoch throughout; a second rotation waits for a running one.

use std::time::Instant;

use super::keygen::keygen_binding;
use super::OpKind;
use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::node::activation::{Certificate, Statement};
use crate::node::admin::admin_nonce;
use crate::node::admin_request::{AdminOp, SignedAdmin};
use crate::node::committee::reasons;
use crate::node::faults;
use crate::node::shares::share_bytes;
use crate::node::{committee_of, names, Node, NodeError, Operation, Outcome, Proposal};
use crate::protocol::scheme;
use crate::storage::{KeyRecord, KeyState, RotationProof};

/// The execution id of a refresh of `rec`'s key at its epoch by its whole committee.
pub fn eid(rec: &KeyRecord, committee: &[NodeName], nonce: &[u8]) -> ExecutionId {
    OpKind::Refresh.eid(
        &rec.key_id,
        rec.epoch,
        committee,
        &keygen_binding(rec.threshold.into(), committee),
        nonce,
    )
}

/// What a finished rotation reports.
#[derive(Debug, Clone)]
pub struct RotateSummary {
    pub key: KeyRecord,
    pub old_epoch: u64,
    pub new_epoch: u64,
    pub public_key_unchanged: bool,
    pub committee: Vec<NodeName>,
    pub elapsed: std::time::Duration,
}

impl Node {
    /// Proactive refresh of every share of the key the signed admin request
    /// names, across its whole committee, then activation of the new epoch
    /// on every node. Signing goes on at the old epoch until activation.
    pub async fn rotate(&self, signed: &SignedAdmin) -> Result<RotateSummary, NodeError> {
        self.admit_admin_request(signed, AdminOp::Rotate)?;
        let nonce = admin_nonce(signed)?;
        self.rotate_under(signed, nonce).await
    }

    /// The rotation of `signed`'s key under the coordinator nonce `nonce`
    /// (a repair runs its closing refresh under its own nonce).
    pub(crate) async fn rotate_under(
        &self,
        signed: &SignedAdmin,
        nonce: Vec<u8>,
    ) -> Result<RotateSummary, NodeError> {
        let key_id = &signed.request.key_id;
        let started = Instant::now();
        let mut rec = self.key(key_id)?;
        if rec.state != KeyState::Active {
            return Err(NodeError::KeyNotActive(format!(
                "key {key_id} is {}",
                rec.state.label()
            )));
        }
        // An earlier rotation that a crash or a cancelled call left behind
        // is finished or replaced now, with no wait for a timeout; and a
        // half-done activation is completed by the probe (whichever side is
        // behind catches up), after which the probe runs at the new epoch.
        if self.finish_abandoned(&rec).await? {
            rec = self.key(key_id)?;
        }
        let mut committee = committee_of(&rec)?;
        let mut down = self.not_ready(&rec, &committee, false).await;
        let now = self.key(key_id)?;
        if now.epoch != rec.epoch {
            rec = now;
            committee = committee_of(&rec)?;
            down = self.not_ready(&rec, &committee, false).await;
        }
        if !down.is_empty() {
            let list = reasons(&down);
            return Err(NodeError::Unavailable(format!(
                "rotation needs every committee node at epoch {}; not available: {list}; retry \
                 when they are back",
                rec.epoch
            )));
        }
        let old_epoch = rec.epoch;
        let new_epoch = crate::node::committee::next_epoch(&rec)?;
        let eid = eid(&rec, &committee, &nonce);
        crate::node::note_eid(&eid);
        tracing::info!(
            key = %key_id,
            old_epoch,
            new_epoch,
            committee = %names(&committee),
            eid = %eid,
            "rotation: refreshing shares",
        );
        let proposal = Proposal {
            eid,
            nonce,
            admin: Some(Box::new(signed.clone())),
            op: Operation::Refresh {
                key_id: key_id.clone(),
                epoch: old_epoch,
                committee: committee.clone(),
            },
        };
        // A failure from here on activates nothing anywhere: the staged
        // shares stay, unable to sign without every member's receipt, until
        // the next rotation replaces them.
        let refreshed = self.propose_all(&committee, proposal).await?;
        let mut confirmation: Option<[u8; 32]> = None;
        let mut receipts = Vec::with_capacity(committee.len());
        for (n, o) in refreshed {
            let Outcome::Refresh {
                confirmation: c,
                receipt,
            } = o
            else {
                return Err(NodeError::Internal(format!(
                    "node {n} answered a refresh with another outcome"
                )));
            };
            if confirmation.is_some_and(|x| x != c) {
                return Err(NodeError::Aborted(format!(
                    "node {n} confirmed a different refresh; epoch {new_epoch} is not activated \
                     anywhere"
                )));
            }
            confirmation = Some(c);
            receipts.push(*receipt);
        }
        let confirmation =
            confirmation.ok_or_else(|| NodeError::Internal("empty committee".into()))?;

        crate::node::faults::check(
            &self.name,
            crate::node::faults::points::COORDINATOR_BEFORE_ACTIVATE,
        )?;
        tracing::info!(key = %key_id, new_epoch, "rotation: every node confirmed; activating");
        let activate = Proposal {
            eid,
            nonce: Vec::new(),
            admin: None,
            op: Operation::Activate {
                key_id: key_id.clone(),
                epoch: new_epoch,
                confirmation,
                certificate: Certificate(receipts),
            },
        };
        let failed = self.call_with_retries(&committee, &activate).await;
        if !failed.is_empty() {
            let list = reasons(&failed);
            return Err(NodeError::Unavailable(format!(
                "epoch {new_epoch} of key {key_id} is confirmed but not yet active on: {list}; \
                 those nodes switch when they next take part in a session at epoch {new_epoch}"
            )));
        }
        let after = self.key(key_id).unwrap_or_else(|_| rec.clone());
        Ok(RotateSummary {
            public_key_unchanged: package_key(&after).is_some_and(|pk| pk == rec.public_key)
                && after.public_key == rec.public_key,
            key: after,
            old_epoch,
            new_epoch,
            committee,
            elapsed: started.elapsed(),
        })
    }

    pub(crate) async fn participate_refresh(
        &self,
        p: &Proposal,
        key_id: &KeyId,
        epoch: u64,
        committee: &[NodeName],
    ) -> Result<Outcome, NodeError> {
        let rec = self.key(key_id)?;
        if !matches!(rec.state, KeyState::Active | KeyState::Repairing) {
            return Err(NodeError::KeyNotActive(format!(
                "key {key_id} is {}",
                rec.state.label()
            )));
        }
        if rec.epoch != epoch {
            return Err(NodeError::EpochMismatch(format!(
                "key {key_id} is at epoch {} here, proposal says {epoch}",
                rec.epoch
            )));
        }
        if committee
            .iter()
            .map(NodeName::as_str)
            .ne(rec.committee.iter().map(String::as_str))
        {
            return Err(NodeError::InvalidArgument(format!(
                "a refresh must include the whole committee of key {key_id} in order"
            )));
        }
        self.check_members(committee)?;
        let expected = eid(&rec, committee, &p.nonce);
        let next = crate::node::committee::next_epoch(&rec)?;
        let session = self.claim_session(&p.eid, expected, committee)?;
        // A second rotation is refused while this session runs; signing goes
        // on at the old epoch.
        let _lock = self.hold_maintenance(key_id, p.eid, self.timeouts.session())?;
        async {
            let share = self.open_share(&rec, epoch)?;
            let package = hex::decode(&rec.package).map_err(|_| {
                NodeError::Internal(format!(
                    "key {key_id}: stored public key package is not hex"
                ))
            })?;
            let out = session
                .run_session(scheme::refresh(share, &package, p.eid.as_bytes()))
                .await?;
            faults::wait_if_held(&self.name, faults::points::BEFORE_STAGE).await;
            faults::check(&self.name, faults::points::BEFORE_STAGE)?;
            let proof = RotationProof {
                eid: *p.eid.as_bytes(),
                confirmation: out.confirmation,
            };
            let bytes = share_bytes(&out.share)?;
            self.store
                .stage_epoch(key_id, next, &bytes, proof, &out.package)?;
            faults::check(&self.name, faults::points::AFTER_STAGE)?;
            tracing::info!(key = %key_id, epoch = next, eid = %p.eid, "refreshed share staged");
            let receipt = self.receipt(&Statement {
                key_id,
                key_type: rec.key_type,
                eid: p.eid.as_bytes(),
                epoch: next,
                confirmation: &out.confirmation,
                public_key: &rec.public_key,
            })?;
            Ok(Outcome::Refresh {
                confirmation: out.confirmation,
                receipt: Box::new(receipt),
            })
        }
        .await
    }

    /// Activates the epoch staged under `eid` (a rotation, a reshare or a
    /// keygen), idempotently, on the strength of `certificate`: a valid
    /// staging receipt from every member of the committee that holds the
    /// epoch. Without a certificate it is a release (the coordinator gave
    /// up): nothing is activated and nothing deleted; the staged share stays,
    /// unable to sign, until a later rotation or reshare replaces it, so a
    /// release can never leave part of the committee behind an activation.
    pub(crate) fn participate_activate(
        &self,
        eid: &ExecutionId,
        key_id: &KeyId,
        epoch: u64,
        confirmation: [u8; 32],
        certificate: &Certificate,
    ) -> Result<Outcome, NodeError> {
        let proof = RotationProof {
            eid: *eid.as_bytes(),
            confirmation,
        };
        let rec = self.key(key_id)?;
        if certificate.is_empty() {
            tracing::info!(
                key = %key_id,
                %eid,
                "release without a certificate: nothing activated, nothing deleted",
            );
            return Ok(Outcome::Activated);
        }
        if rec.state == KeyState::Generated {
            return self.activate_generated(&rec, eid, epoch, proof, certificate);
        }
        if rec.epoch == epoch {
            // Already at that epoch (activated by this proof, or a keygen
            // epoch a repaired share holds): nothing to activate or delete.
            return Ok(Outcome::Activated);
        }
        let staged = self
            .store
            .staged(key_id)?
            .filter(|s| s.epoch == epoch && s.proof == proof)
            .ok_or_else(|| {
                NodeError::NotFound(format!(
                    "key {key_id}: no epoch {epoch} staged here by {eid}; nothing activated"
                ))
            })?;
        let committee = staged.committee.unwrap_or_else(|| rec.committee.clone());
        self.check_certificate(
            &committee,
            &Statement {
                key_id,
                key_type: rec.key_type,
                eid: eid.as_bytes(),
                epoch,
                confirmation: &confirmation,
                public_key: &rec.public_key,
            },
            certificate,
        )?;
        faults::check(&self.name, faults::points::BEFORE_ACTIVATE)?;
        // A node new to the key, or whose share was rebuilt, takes the
        // key's whole state from this activation, which every member
        // vouched for with its receipt.
        let joined = matches!(rec.state, KeyState::Joining | KeyState::Repairing);
        let changed = self
            .store
            .activate_epoch(key_id, epoch, proof, &certificate.encode())?;
        if joined {
            self.note_heard(key_id, &committee);
        }
        self.forget_opened(key_id);
        if changed {
            tracing::info!(key = %key_id, epoch, "epoch activated; old share deleted");
        }
        faults::check(&self.name, faults::points::AFTER_ACTIVATE)?;
        Ok(Outcome::Activated)
    }
}

impl Node {
    /// The activation of a key generated here and not yet active: only its
    /// own keygen's proof, with every member's receipt, counts.
    fn activate_generated(
        &self,
        rec: &KeyRecord,
        eid: &ExecutionId,
        epoch: u64,
        proof: RotationProof,
        certificate: &Certificate,
    ) -> Result<Outcome, NodeError> {
        let key_id = &rec.key_id;
        if epoch != 0 || rec.rotation != Some(proof) {
            return Err(NodeError::FailedPrecondition(format!(
                "key {key_id} was generated here by another keygen"
            )));
        }
        self.check_certificate(
            &rec.committee,
            &super::keygen::generated_statement(rec, eid.as_bytes()),
            certificate,
        )?;
        faults::check(&self.name, faults::points::BEFORE_ACTIVATE)?;
        if self
            .store
            .activate_generated(key_id, &proof, &certificate.encode())?
        {
            tracing::info!(key = %key_id, %eid, "key activated: every committee node generated it");
        }
        // A key just made has no state change to miss: every member vouched
        // for it with its receipt.
        self.note_heard(key_id, &rec.committee);
        faults::check(&self.name, faults::points::AFTER_ACTIVATE)?;
        Ok(Outcome::Activated)
    }
}

/// The group key recorded in a record's public key package (compressed).
fn package_key(rec: &KeyRecord) -> Option<Vec<u8>> {
    let bytes = hex::decode(&rec.package).ok()?;
    scheme::package_key(rec.key_type, &bytes).map(|k| k.to_vec())
}
