//! The participant role: validate a proposal independently (membership,
//! key state, execution id binding and freshness), then run the session.
//! Nothing the coordinator says is taken on trust.

use sha2::{Digest, Sha256};

use super::committee_of;
use super::request::{ClientAuth, SignRequest};
use super::session::Session;
use super::{now_unix, Node, NodeError, Operation, Outcome, Proposal};
use crate::domain::{ExecutionId, KeyId, NodeName, Threshold};
use crate::protocol::keygen::Keygen;
use crate::protocol::sign::Sign;
use crate::protocol::{PartyIdx, ProtocolError};
use crate::storage::{Admission, AuditEvent, KeyRecord, KeyState, LedgerEntry, SlotClaim};

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

/// The request digest a signing eid binds: the client's whole signed request.
pub fn sign_binding(request: &SignRequest) -> Vec<u8> {
    request.binding().to_vec()
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
        // Sessions that change keys are audited here with their outcome;
        // signing audits its own decision, status queries are not recorded.
        let session = match &p.op {
            Operation::Keygen { key_id, .. } => Some(("keygen", key_id.clone())),
            Operation::Refresh { key_id, .. } => Some(("refresh", key_id.clone())),
            Operation::Reshare { key_id, .. } => Some(("reshare", key_id.clone())),
            Operation::Repair { key_id, .. } => Some(("repair", key_id.clone())),
            Operation::Activate { key_id, .. } => Some(("activate", key_id.clone())),
            Operation::Retire { key_id, .. } => Some(("retire", key_id.clone())),
            Operation::Sign { .. }
            | Operation::ShareStatus { .. }
            | Operation::Watermark { .. } => None,
        };
        let eid = p.eid;
        let result = self.dispatch(from, p).await;
        if let Some((kind, key)) = session {
            let _ = self.audit(AuditEvent {
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
            });
        }
        result
    }

    async fn dispatch(&self, from: &NodeName, p: Proposal) -> Result<Outcome, NodeError> {
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
                epoch,
                request,
                auth,
                participants,
            } => {
                self.participate_sign(from, &p, epoch, &request, &auth, &participants)
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
            Operation::Watermark { request, auth } => {
                self.participate_watermark(from, &request, &auth)
            }
            Operation::ShareStatus { key_id, request_id } => {
                let mut o = self.share_status_outcome(&key_id);
                if let (Some(rid), Outcome::ShareStatus { ledger, .. }) = (request_id, &mut o) {
                    *ledger = self.store.ledger_get(&key_id, &rid)?.map(Box::new);
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
            } => {
                self.participate_retire(&p, &key_id, epoch, &dealers, &committee, threshold)
                    .await
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

    pub(super) fn check_members(&self, members: &[NodeName]) -> Result<PartyIdx, NodeError> {
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

    pub(super) fn claim(
        &self,
        proposed: &ExecutionId,
        expected: ExecutionId,
    ) -> Result<(), NodeError> {
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
        let out = session.run(proto, &mut mailbox).await?;
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

    /// A committee node outside the signing set learns of a slot before any
    /// signature for it can exist: it checks the client's request like a
    /// signer would and raises its watermark, or refuses a conflict.
    fn participate_watermark(
        &self,
        from: &NodeName,
        request: &SignRequest,
        auth: &ClientAuth,
    ) -> Result<Outcome, NodeError> {
        let slot = request
            .slot
            .as_ref()
            .ok_or_else(|| NodeError::InvalidArgument("watermark gossip without a slot".into()))?;
        let checked: Result<NodeName, NodeError> = (|| {
            request.check_fields(now_unix()).map_err(|e| {
                NodeError::InvalidArgument(format!("watermark refused on node {}: {e}", self.name))
            })?;
            let client = self
                .verifier
                .verify(auth, &request.canonical_bytes())
                .map_err(|e| {
                    NodeError::PermissionDenied(format!(
                        "watermark refused on node {}: {e}",
                        self.name
                    ))
                })?;
            self.authorize_sign(&client, request, false)?;
            self.key(&request.key_id)?;
            Ok(client)
        })();
        let client = match checked {
            Ok(c) => c,
            Err(e) => {
                let _ = self.audit(AuditEvent {
                    kind: "watermark".into(),
                    actor: "unverified client".into(),
                    key: request.key_id.to_string(),
                    request_id: request.request_id.clone(),
                    decision: "denied".into(),
                    rule: e.to_string(),
                    detail: format!("slot {slot} via node {from}"),
                    ..Default::default()
                });
                return Err(e);
            }
        };
        let r = self
            .store
            .watermark_commit(
                &request.key_id,
                &slot.scope,
                slot.position(),
                request.digest.0,
                &request.request_id,
            )
            .map_err(|e| match e {
                crate::storage::StorageError::Conflict(m) => {
                    NodeError::FailedPrecondition(format!("node {}: {m}", self.name))
                }
                other => other.into(),
            });
        let _ = self.audit(AuditEvent {
            kind: "watermark".into(),
            actor: format!("client/{client}"),
            key: request.key_id.to_string(),
            request_id: request.request_id.clone(),
            decision: if r.is_ok() { "allowed" } else { "denied" }.into(),
            rule: "slot watermark".into(),
            detail: format!(
                "slot {slot} digest {} via node {from}",
                hex::encode(request.digest.0)
            ),
            ..Default::default()
        });
        r.map(|()| Outcome::Watermarked)
    }

    async fn participate_sign(
        &self,
        from: &NodeName,
        p: &Proposal,
        epoch: u64,
        request: &SignRequest,
        auth: &ClientAuth,
        participants: &[NodeName],
    ) -> Result<Outcome, NodeError> {
        let key_id = &request.key_id;
        let (digest, path, request_id) =
            (request.digest, &request.path, request.request_id.as_str());
        // Every check runs before anything is written: the client's own
        // signature over every field (the coordinator's word counts for
        // nothing), this node's policy, the key's state and the eid binding.
        // Every decision is audited.
        type Admitted = (NodeName, KeyRecord, Vec<PartyIdx>, Vec<NodeName>);
        let mut verified: Option<NodeName> = None;
        let checked = (|| -> Result<Admitted, NodeError> {
            request.check_fields(now_unix()).map_err(|e| {
                NodeError::InvalidArgument(format!(
                    "sign request refused on node {}: {e}",
                    self.name
                ))
            })?;
            let client = self
                .verifier
                .verify(auth, &request.canonical_bytes())
                .map_err(|e| {
                    NodeError::PermissionDenied(format!(
                        "sign request refused on node {}: {e}",
                        self.name
                    ))
                })?;
            verified = Some(client.clone());
            self.authorize_sign(&client, request, false)?;
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
                &sign_binding(request),
                &p.nonce,
            );
            if p.eid != expected {
                return Err(NodeError::PermissionDenied(
                    "execution id does not match the proposal".into(),
                ));
            }
            // Rate limits last: a replayed or refused proposal uses up nothing,
            // and the coordinator charged them already when it is us.
            if self.store.eid_used(&p.eid)? {
                return Err(NodeError::PermissionDenied(format!(
                    "execution id {} was used before; refusing to reuse it",
                    p.eid
                )));
            }
            if *from != self.name {
                self.charge_rate(&client, request)?;
            }
            Ok((client, rec, signers, committee))
        })();
        let event = |decision: &str, actor: String, rule: String| AuditEvent {
            kind: "sign".into(),
            actor,
            key: key_id.to_string(),
            request_id: request_id.to_owned(),
            decision: decision.into(),
            rule,
            eid: p.eid.to_string(),
            detail: format!(
                "digest {} path {path}{} coordinator {from}",
                hex::encode(digest.0),
                request
                    .slot
                    .as_ref()
                    .map(|s| format!(" slot {s}"))
                    .unwrap_or_default()
            ),
        };
        let (client, rec, signers, committee) = match checked {
            Ok(ok) => ok,
            Err(e) => {
                let actor = verified
                    .map(|c| format!("client/{c}"))
                    .unwrap_or_else(|| "unverified client".into());
                let _ = self.audit(event("denied", actor, e.to_string()));
                return Err(e);
            }
        };
        // Admission, in one durable transaction: the eid is claimed (a
        // duplicate proposal is refused before it can touch the mailbox of
        // the session already running under it), the slot's watermark is
        // raised (double-sign protection: durable before any message of this
        // session leaves, and refused before the session opens, so that
        // refusal is what the coordinator hears), and the decision is audited.
        let slot = request.slot.as_ref().map(|s| SlotClaim {
            key: key_id,
            scope: &s.scope,
            position: s.position(),
            digest: digest.0,
            request_id,
        });
        let allowed = event(
            "allowed",
            format!("client/{client}"),
            "client signature and policy".into(),
        );
        // The ledger entry is part of the admission, so it is durable before
        // the session opens, let alone before the partial signature leaves.
        let entry = LedgerEntry {
            schema: 1,
            request_id: request_id.to_owned(),
            digest: digest.0,
            path: path.to_string(),
            eid: *p.eid.as_bytes(),
            unix: now_unix(),
            result: None,
            slot: request.slot.as_ref().map(ToString::to_string),
        };
        // As the coordinator on the overlapped path, admit only once the
        // committee checks running alongside have passed: until then this
        // node has written nothing for the request.
        if *from == self.name {
            if let Some(gate) = self.gates.take(&p.eid) {
                if let Err(e) = gate.await {
                    // Drop what the other participants sent for it already.
                    drop(self.router.open(p.eid));
                    let _ = self.audit(event("denied", format!("client/{client}"), e.to_string()));
                    return Err(e);
                }
            }
        }
        let admitted = self
            .store
            .admit_sign(&p.eid, now_unix(), (key_id, &entry), slot, allowed);
        let refused = match admitted {
            Ok(Admission::Admitted) => None,
            Ok(Admission::EidUsed) => Some(NodeError::PermissionDenied(format!(
                "execution id {} was used before; refusing to reuse it",
                p.eid
            ))),
            Ok(Admission::RequestIdUsed(m)) => {
                Some(NodeError::AlreadyExists(format!("node {}: {m}", self.name)))
            }
            Ok(Admission::AlreadySigned) => Some(NodeError::AlreadyExists(format!(
                "node {}: request id {request_id} is already signed; a repeat of the request \
                 gets the recorded signature",
                self.name
            ))),
            Err(crate::storage::StorageError::Conflict(m)) => Some(NodeError::FailedPrecondition(
                format!("node {}: {m}", self.name),
            )),
            Err(e) => return Err(e.into()),
        };
        if let Some(e) = refused {
            let _ = self.audit(event("denied", format!("client/{client}"), e.to_string()));
            return Err(e);
        }
        if request.slot.is_some() {
            crate::faults::check(&self.name, crate::faults::points::AFTER_WATERMARK)?;
        }
        let mut mailbox = self
            .router
            .open(p.eid)
            .map_err(|e| NodeError::PermissionDenied(e.to_string()))?;
        let share = self.store.signing_share(key_id, epoch)?;
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
        // The ledger entry was made durable at admission.
        let result = session.run(proto, &mut mailbox).await;
        match result {
            Ok(sig) => {
                let result = crate::storage::LedgerResult {
                    r: sig.r,
                    s: sig.s,
                    recovery_id: sig.recovery_id,
                    public_key: sig.public_key.to_vec(),
                    participants: participants.iter().map(ToString::to_string).collect(),
                    epoch,
                };
                self.store
                    .ledger_complete_lazy(key_id, request_id, result)?;
                Ok(Outcome::Sign(sig))
            }
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
