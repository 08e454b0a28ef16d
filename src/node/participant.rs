//! The participant role: validate a proposal independently (membership,
//! key state, execution id binding and freshness), then run the session.
//! Nothing the coordinator says is taken on trust.

use sha2::{Digest, Sha256};

use super::committee_of;
use super::session::Session;
use super::{now_unix, Node, NodeError, Operation, Outcome, Proposal};
use crate::domain::{DerivationPath, Digest32, ExecutionId, KeyId, NodeName, Threshold};
use crate::protocol::keygen::Keygen;
use crate::protocol::refresh::Refresh;
use crate::protocol::repair::{RepairHelper, RepairTarget};
use crate::protocol::sign::Sign;
use crate::protocol::{PartyIdx, ProtocolError};
use crate::storage::{KeyRecord, KeyState, LedgerEntry, RotationProof};

/// The request digest a keygen eid binds: threshold and committee order.
pub fn keygen_binding(threshold: u32, committee: &[NodeName]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(threshold.to_be_bytes());
    for c in committee {
        h.update((c.as_str().len() as u32).to_be_bytes());
        h.update(c.as_str());
    }
    h.finalize().to_vec()
}

/// The request digest a repair eid binds: the target and every field of the
/// key's public record that the repair depends on.
pub fn repair_binding(target: &NodeName, rec: &KeyRecord) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(target.as_str().as_bytes());
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
    h.finalize().to_vec()
}

/// The request digest a signing eid binds: digest, path and request id.
pub fn sign_binding(digest: &Digest32, path: &DerivationPath, request_id: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(digest.0);
    let p = path.to_string();
    h.update((p.len() as u32).to_be_bytes());
    h.update(p);
    h.update((request_id.len() as u32).to_be_bytes());
    h.update(request_id);
    h.finalize().to_vec()
}

impl Node {
    /// Handles a proposal from authenticated node `from` (possibly ourselves).
    pub async fn on_propose(&self, from: &NodeName, p: Proposal) -> Result<Outcome, NodeError> {
        crate::faults::check_alive(&self.name)?;
        if !self.roster.contains(from) {
            return Err(NodeError::PermissionDenied(format!(
                "node {from} is not in this cluster's roster"
            )));
        }
        match p.op.clone() {
            Operation::Keygen {
                key_id,
                threshold,
                committee,
            } => {
                self.participate_keygen(&p, &key_id, threshold, &committee)
                    .await
            }
            Operation::Sign {
                key_id,
                epoch,
                digest,
                path,
                request_id,
                participants,
            } => {
                self.participate_sign(
                    &p,
                    &key_id,
                    epoch,
                    digest,
                    &path,
                    &request_id,
                    &participants,
                )
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
            Operation::ShareStatus { key_id } => {
                let (epoch, signing) = self.share_status(&key_id);
                Ok(Outcome::ShareStatus { epoch, signing })
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
            } => self.participate_activate(&p.eid, &key_id, epoch, confirmation),
        }
    }

    /// The epoch whose share this node stores for `key_id`, and whether that
    /// share may sign (the key is active, not awaiting a post-repair refresh).
    pub fn share_status(&self, key_id: &KeyId) -> (Option<u64>, bool) {
        let Ok(Some(rec)) = self.store.key(key_id) else {
            return (None, false);
        };
        match self.store.has_share(key_id, rec.epoch) {
            Ok(true) => (Some(rec.epoch), rec.state == KeyState::Active),
            _ => (None, false),
        }
    }

    /// The epoch of a share this node can sign with, if any.
    pub fn live_share_epoch(&self, key_id: &KeyId) -> Option<u64> {
        match self.share_status(key_id) {
            (Some(e), true) => Some(e),
            _ => None,
        }
    }

    /// Repair, as a helper (send one term to the target) or as the target
    /// (collect the terms, store the hollow share). A helper first asks the
    /// target itself, over its authenticated connection, whether it still
    /// holds a live share, and refuses if it does.
    async fn participate_repair(
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
                "the repair proposal's record of key {key_id} differs from node {}'s (epoch {})",
                self.name, record.epoch
            )));
        }
        let committee = committee_of(&record)?;
        let index = |n: &NodeName| -> Result<PartyIdx, NodeError> {
            committee
                .iter()
                .position(|c| c == n)
                .map(|i| (i + 1) as PartyIdx)
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
        let expected = ExecutionId::derive(
            "repair",
            key_id,
            record.epoch,
            &members,
            &repair_binding(target, &record),
            &p.nonce,
        );
        let package = hex::decode(&record.package)
            .map_err(|_| NodeError::InvalidArgument("repair record: package is not hex".into()))?;

        if is_target {
            if let Some(epoch) = self.live_share_epoch(key_id) {
                return Err(NodeError::FailedPrecondition(format!(
                    "node {} holds a live share of key {key_id} (epoch {epoch}); nothing to repair",
                    self.name
                )));
            }
            match self.store.key(key_id)? {
                // An earlier repair whose refresh did not complete: start over.
                Some(old) if old.state == KeyState::Repairing => self.store.remove_key(key_id)?,
                Some(_) => {
                    return Err(NodeError::FailedPrecondition(format!(
                        "node {} has a record of key {key_id} but no usable share; remove the key's data before repairing",
                        self.name
                    )))
                }
                None => {}
            }
            self.claim(&p.eid, expected)?;
            let mut mailbox = self
                .router
                .open(p.eid)
                .map_err(|e| NodeError::PermissionDenied(e.to_string()))?;
            let session = Session {
                eid: p.eid,
                parties: &committee,
                net: self.net.clone(),
                round_timeout: self.timeouts.round,
            };
            let proto = RepairTarget::new(&package, target_idx, &helper_idx)
                .map_err(|e| session.protocol_error(e))?;
            let hollow = session.run(proto, &mut mailbox, || Ok(())).await?;
            // The terms were checked against the package; check the package and
            // the assembled share against the record that will be stored.
            let party = hollow.expose();
            let params_match = party.parameters.threshold == record.threshold
                && usize::from(party.parameters.share_count) == record.committee.len();
            let pk = crate::protocol::compress(&party.pk)
                .map_err(|e| NodeError::Internal(e.to_string()))?;
            if !params_match
                || pk.as_slice() != record.public_key.as_slice()
                || party.derivation_data.chain_code != record.chain_code
            {
                return Err(NodeError::Aborted(format!(
                    "the rebuilt share of key {key_id} does not match its record (public key, chain code or parameters)"
                )));
            }
            let mut rec = record.clone();
            rec.state = KeyState::Repairing;
            rec.schema = crate::storage::records_schema();
            self.store.insert_key(&rec, &hollow)?;
            tracing::warn!(key = %key_id, epoch = rec.epoch, coordinator = %from, "share rebuilt by repair; a complete refresh must follow before it can sign");
            return Ok(Outcome::Repaired);
        }

        // Helper.
        if record.state != KeyState::Active {
            return Err(NodeError::FailedPrecondition(format!(
                "key {key_id} is {}",
                record.state.label()
            )));
        }
        if !helpers.contains(&self.name) {
            return Err(NodeError::InvalidArgument(format!(
                "node {} is not among the helpers",
                self.name
            )));
        }
        let status = Proposal {
            eid: p.eid,
            nonce: Vec::new(),
            op: Operation::ShareStatus {
                key_id: key_id.clone(),
            },
        };
        match self.net.propose(target, status).await? {
            Outcome::ShareStatus { signing: false, .. } => {}
            Outcome::ShareStatus { epoch: Some(e), signing: true } => {
                return Err(NodeError::PermissionDenied(format!(
                    "node {target} still reports a live share of key {key_id} (epoch {e}); repair refused"
                )))
            }
            _ => {
                return Err(NodeError::Aborted(format!(
                    "node {target} answered the share status query with another outcome"
                )))
            }
        }
        self.claim(&p.eid, expected)?;
        let mut mailbox = self
            .router
            .open(p.eid)
            .map_err(|e| NodeError::PermissionDenied(e.to_string()))?;
        let share = self.store.share(key_id, record.epoch)?;
        let session = Session {
            eid: p.eid,
            parties: &committee,
            net: self.net.clone(),
            round_timeout: self.timeouts.round,
        };
        let proto = RepairHelper::new(share, &helper_idx, target_idx, p.eid.as_bytes());
        session.run(proto, &mut mailbox, || Ok(())).await?;
        tracing::info!(key = %key_id, %target, "sent repair term");
        Ok(Outcome::Repaired)
    }

    async fn participate_refresh(
        &self,
        p: &Proposal,
        key_id: &KeyId,
        epoch: u64,
        committee: &[NodeName],
    ) -> Result<Outcome, NodeError> {
        let rec = self.key(key_id)?;
        if !matches!(rec.state, KeyState::Active | KeyState::Repairing) {
            return Err(NodeError::FailedPrecondition(format!(
                "key {key_id} is {}",
                rec.state.label()
            )));
        }
        if rec.epoch != epoch {
            return Err(NodeError::FailedPrecondition(format!(
                "key {key_id} is at epoch {} on node {}, proposal says {epoch}",
                rec.epoch, self.name
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
        let expected = ExecutionId::derive(
            "refresh",
            key_id,
            epoch,
            committee,
            &keygen_binding(rec.threshold.into(), committee),
            &p.nonce,
        );
        self.claim(&p.eid, expected)?;
        let mut mailbox = self
            .router
            .open(p.eid)
            .map_err(|e| NodeError::PermissionDenied(e.to_string()))?;
        // Signing waits until the new epoch is active here, or the rotation is given up.
        self.pause(key_id, p.eid, self.timeouts.session() * 2)?;
        let result = async {
            let share = self.store.share(key_id, epoch)?;
            let session = Session { eid: p.eid, parties: committee, net: self.net.clone(), round_timeout: self.timeouts.round };
            let package = hex::decode(&rec.package)
                .map_err(|_| NodeError::Internal(format!("key {key_id}: stored public key package is not hex")))?;
            let proto = Refresh::new(share, &package, p.eid.as_bytes()).map_err(|e| session.protocol_error(e))?;
            let out = session.run(proto, &mut mailbox, || Ok(())).await?;
            crate::faults::check(&self.name, crate::faults::points::BEFORE_STAGE)?;
            let proof = RotationProof { eid: *p.eid.as_bytes(), confirmation: out.confirmation };
            self.store.stage_epoch(key_id, epoch + 1, &out.share, proof, &out.package)?;
            crate::faults::check(&self.name, crate::faults::points::AFTER_STAGE)?;
            tracing::info!(key = %key_id, epoch = epoch + 1, eid = %p.eid, "refreshed share staged");
            Ok(Outcome::Refresh { confirmation: out.confirmation })
        }
        .await;
        if result.is_err() {
            self.resume(key_id, &p.eid);
        }
        result
    }

    /// Activates the epoch staged by rotation `eid` (idempotent). Naming the
    /// epoch that is already active, under another rotation's proof, means the
    /// coordinator abandoned rotation `eid`: its staged share is discarded and
    /// its pause lifted.
    fn participate_activate(
        &self,
        eid: &ExecutionId,
        key_id: &KeyId,
        epoch: u64,
        confirmation: [u8; 32],
    ) -> Result<Outcome, NodeError> {
        let proof = RotationProof {
            eid: *eid.as_bytes(),
            confirmation,
        };
        let rec = self.key(key_id)?;
        if rec.epoch == epoch && rec.rotation != Some(proof) {
            if self.store.discard_staged(key_id, eid.as_bytes())? {
                tracing::info!(key = %key_id, %eid, "abandoned rotation: staged share discarded");
            }
            self.resume(key_id, eid);
            return Ok(Outcome::Activated);
        }
        crate::faults::check(&self.name, crate::faults::points::BEFORE_ACTIVATE)?;
        let changed = self.store.activate_epoch(key_id, epoch, proof)?;
        self.resume(key_id, eid);
        if changed {
            tracing::info!(key = %key_id, epoch, "epoch activated; old share deleted");
        }
        crate::faults::check(&self.name, crate::faults::points::AFTER_ACTIVATE)?;
        Ok(Outcome::Activated)
    }

    fn check_members(&self, members: &[NodeName]) -> Result<PartyIdx, NodeError> {
        for (i, m) in members.iter().enumerate() {
            if !self.roster.contains(m) {
                return Err(NodeError::InvalidArgument(format!(
                    "node {m} is not in the cluster roster"
                )));
            }
            if members[..i].contains(m) {
                return Err(NodeError::InvalidArgument(format!(
                    "node {m} is listed twice"
                )));
            }
        }
        members
            .iter()
            .position(|m| *m == self.name)
            .map(|i| (i + 1) as PartyIdx)
            .ok_or_else(|| {
                NodeError::InvalidArgument(format!(
                    "node {} is not among the proposed parties",
                    self.name
                ))
            })
    }

    fn claim(&self, proposed: &ExecutionId, expected: ExecutionId) -> Result<(), NodeError> {
        if *proposed != expected {
            return Err(NodeError::PermissionDenied(
                "execution id does not match the proposal".into(),
            ));
        }
        if !self.store.claim_eid(proposed, now_unix())? {
            return Err(NodeError::PermissionDenied(format!(
                "execution id {proposed} was used before; refusing to reuse it"
            )));
        }
        Ok(())
    }

    async fn participate_keygen(
        &self,
        p: &Proposal,
        key_id: &KeyId,
        threshold: u32,
        committee: &[NodeName],
    ) -> Result<Outcome, NodeError> {
        let me = self.check_members(committee)?;
        let t = Threshold::new(threshold, committee.len())
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        if self.store.key(key_id)?.is_some() {
            return Err(NodeError::AlreadyExists(format!(
                "key {key_id} already exists on node {}",
                self.name
            )));
        }
        let expected = ExecutionId::derive(
            "keygen",
            key_id,
            0,
            committee,
            &keygen_binding(threshold, committee),
            &p.nonce,
        );
        // Claim first: a duplicate proposal is refused before it can touch
        // the mailbox of the session already running under this id.
        self.claim(&p.eid, expected)?;
        let mut mailbox = self
            .router
            .open(p.eid)
            .map_err(|e| NodeError::PermissionDenied(e.to_string()))?;
        let session = Session {
            eid: p.eid,
            parties: committee,
            net: self.net.clone(),
            round_timeout: self.timeouts.round,
        };
        let proto = Keygen::new(t.t(), t.n(), me, p.eid.as_bytes())
            .map_err(|e| session.protocol_error(e))?;
        let out = session.run(proto, &mut mailbox, || Ok(())).await?;
        let rec = KeyRecord {
            schema: crate::storage::records_schema(),
            key_id: key_id.clone(),
            public_key: out.public_key.to_vec(),
            chain_code: out.chain_code,
            committee: committee.iter().map(|c| c.as_str().to_owned()).collect(),
            threshold: t.t(),
            epoch: 0,
            state: KeyState::Active,
            package_hash: out.package_hash,
            package: hex::encode(&out.package),
            rotation: None,
            created_unix: now_unix(),
        };
        self.store.insert_key(&rec, &out.share)?;
        tracing::info!(key = %key_id, eid = %p.eid, "key generated and stored");
        Ok(Outcome::Keygen {
            public_key: rec.public_key,
            chain_code: out.chain_code,
            package_hash: out.package_hash,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn participate_sign(
        &self,
        p: &Proposal,
        key_id: &KeyId,
        epoch: u64,
        digest: Digest32,
        path: &DerivationPath,
        request_id: &str,
        participants: &[NodeName],
    ) -> Result<Outcome, NodeError> {
        self.check_not_paused(key_id)?;
        let rec = self.key(key_id)?;
        if let KeyState::Frozen(why) = &rec.state {
            return Err(NodeError::FailedPrecondition(format!(
                "key {key_id} is frozen: {why}"
            )));
        }
        if rec.state != KeyState::Active {
            return Err(NodeError::FailedPrecondition(format!(
                "key {key_id} is {}",
                rec.state.label()
            )));
        }
        if rec.epoch != epoch {
            return Err(NodeError::FailedPrecondition(format!(
                "key {key_id} is at epoch {}, proposal says {epoch}",
                rec.epoch
            )));
        }
        self.check_members(participants)?;
        if participants.len() != rec.threshold as usize {
            return Err(NodeError::InvalidArgument(format!(
                "signing needs exactly {} parties, got {}",
                rec.threshold,
                participants.len()
            )));
        }
        // Party indices come from the stored committee order, never from the proposal.
        let mut signers = Vec::with_capacity(participants.len());
        for n in participants {
            let idx = rec
                .committee
                .iter()
                .position(|c| c == n.as_str())
                .ok_or_else(|| {
                    NodeError::InvalidArgument(format!(
                        "node {n} is not in the committee of key {key_id}"
                    ))
                })?;
            signers.push((idx + 1) as PartyIdx);
        }
        let committee = committee_of(&rec)?;
        let expected = ExecutionId::derive(
            "sign",
            key_id,
            epoch,
            participants,
            &sign_binding(&digest, path, request_id),
            &p.nonce,
        );
        // Claim first: a duplicate proposal is refused before it can touch
        // the mailbox of the session already running under this id.
        self.claim(&p.eid, expected)?;
        let mut mailbox = self
            .router
            .open(p.eid)
            .map_err(|e| NodeError::PermissionDenied(e.to_string()))?;
        let share = self.store.share(key_id, epoch)?;
        let share_pk = crate::protocol::compress(&share.expose().pk)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        if share_pk.as_slice() != rec.public_key.as_slice() {
            return Err(NodeError::Storage(crate::storage::StorageError::Corrupt {
                what: format!("key {key_id}"),
                reason: "the record's public key differs from the sealed share's; refusing to sign"
                    .into(),
            }));
        }
        let session = Session {
            eid: p.eid,
            parties: &committee,
            net: self.net.clone(),
            round_timeout: self.timeouts.round,
        };
        let proto = Sign::new(&share, path, &signers, digest, p.eid.as_bytes())
            .map_err(|e| session.protocol_error(e))?;
        drop(share);
        let entry = LedgerEntry {
            schema: 1,
            request_id: request_id.to_owned(),
            digest: digest.0,
            path: path.to_string(),
            eid: *p.eid.as_bytes(),
            unix: now_unix(),
        };
        let result = session
            .run(proto, &mut mailbox, || {
                Ok(self.store.ledger_commit(key_id, &entry)?)
            })
            .await;
        match result {
            Ok(sig) => Ok(Outcome::Sign(sig)),
            Err(NodeError::Protocol {
                error: ProtocolError::InvalidSignature,
                blamed,
            }) => {
                let why = format!("final signature of session {} failed verification", p.eid);
                self.store
                    .set_state(key_id, KeyState::Frozen(why.clone()))?;
                tracing::error!(key = %key_id, eid = %p.eid, "key frozen: {why}");
                Err(NodeError::Protocol {
                    error: ProtocolError::InvalidSignature,
                    blamed,
                })
            }
            Err(e) => Err(e),
        }
    }
}
