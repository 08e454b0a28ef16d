//! The signing participant: checks the client's signed request and its own
//! policy, the key's state and the execution id binding, admits the session
//! in one durable transaction (eid, ledger entry, slot watermark, audit),
//! and only then runs it. A committee node outside the signing set takes the
//! slot gossip here too. Nothing the coordinator says is taken on trust.

use crate::domain::NodeName;
use crate::node::faults;
use crate::node::request::{ClientAuth, SignRequest};
use crate::node::{committee_of, names, now_unix, Node, NodeError, Outcome, Proposal};
use crate::protocol::scheme;
use crate::protocol::sign::Misbehave;
use crate::protocol::{PartyIdx, ProtocolError};
use crate::storage::{Admission, AuditEvent, KeyRecord, KeyState, LedgerEntry, SlotClaim};

/// Where the coordinator says the key is: the epoch it signs at and the
/// key's lifecycle sequence there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At {
    pub epoch: u64,
    pub lifecycle_seq: u64,
}

impl Node {
    pub(crate) async fn participate_sign(
        &self,
        from: &NodeName,
        p: &Proposal,
        at: At,
        request: &SignRequest,
        auth: &ClientAuth,
        participants: &[NodeName],
    ) -> Result<Outcome, NodeError> {
        let key_id = &request.key_id;
        let (digest, path, request_id) =
            (request.digest, &request.path, request.request_id.as_str());
        // A PSBT's later inputs have ledger entries of their own.
        let ledger_id = request.ledger_id();
        // Every check runs before anything is written: the client's own
        // signature over every field (the coordinator's word counts for
        // nothing), this node's policy, the key's state and the eid binding.
        // Every decision is audited.
        // A key restored from a backup first has its epoch and watermarks
        // confirmed by the committee (`restored.rs`).
        if self.store.restored(key_id)?.is_some() {
            self.check_restored(&self.key(key_id)?).await?;
        }
        // The key's lifecycle is never the coordinator's word alone
        // (`lifecycle_sync.rs`).
        if *from != self.name {
            self.check_lifecycle_heard(key_id, from).await?;
            // Only for a request its client signed (the check below, which
            // audits a bad one, finds the verification cached).
            if self
                .verify_client_request(request, auth, "sign request")
                .is_ok()
            {
                self.check_lifecycle_seq(key_id, at.lifecycle_seq, from)
                    .await?;
            }
        }
        let epoch = at.epoch;
        type Admitted = (NodeName, KeyRecord, Vec<PartyIdx>, Vec<NodeName>);
        let mut verified: Option<NodeName> = None;
        let mut summary: Option<String> = None;
        let mut spends = Vec::new();
        let checked = (|| -> Result<Admitted, NodeError> {
            let client = self
                .verify_client_request(request, auth, "sign request")?
                .client;
            verified = Some(client.clone());
            let allowed = self.authorize_sign(&client, request, false)?;
            summary = allowed.summary;
            spends = allowed.windows;
            let rec = self.key(key_id)?;
            self.check_can_sign(&rec)?;
            if rec.epoch != epoch {
                return Err(NodeError::EpochMismatch(format!(
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
                        NodeError::NotInCommittee(format!(
                            "node {n} is not in the committee of key {key_id}"
                        ))
                    })?;
                let idx = crate::node::party_at(idx)
                    .ok_or_else(|| NodeError::InvalidArgument("too many parties".into()))?;
                signers.push(idx);
            }
            self.check_not_banned(key_id, participants)?;
            self.check_elimination(key_id, participants, from)?;
            let committee = committee_of(&rec)?;
            let expected = super::eid(request, epoch, participants, &p.nonce);
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
            // A request signed again (another signer set, the new epoch)
            // is charged once: its ledger entry is here from the first try.
            if *from != self.name && self.store.ledger_get(key_id, &ledger_id)?.is_none() {
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
                "digest {} path {path}{}{} coordinator {from}",
                hex::encode(digest.0),
                request
                    .slot
                    .as_ref()
                    .map(|s| format!(" slot {s}"))
                    .unwrap_or_default(),
                summary
                    .as_ref()
                    .map(|s| format!(" {}: {s}", request.kind_name()))
                    .unwrap_or_default()
            ),
        };
        let (client, rec, signers, committee) = match checked {
            Ok(ok) => ok,
            Err(e) => {
                let actor = verified
                    .map(|c| format!("client/{c}"))
                    .unwrap_or_else(|| "unverified client".into());
                self.audit_refusal(from, event("denied", actor, e.to_string()), false);
                return Err(e);
            }
        };
        // Admission, in one durable transaction: the eid is claimed (a
        // duplicate proposal is refused before it can touch the mailbox of
        // the session already running under it), the slot's watermark is
        // raised (double-sign protection: durable before any message of this
        // session leaves, and refused before the session opens, so that
        // refusal is what the coordinator hears), and the decision is audited.
        // The client's signed request is kept beside the watermark it
        // raises: the evidence this node shows if it ever refuses a
        // conflicting slot (no veto without evidence).
        let evidence = if request.slot.is_some() {
            crate::node::signed_evidence::encode_signed(request, auth).unwrap_or_default()
        } else {
            Vec::new()
        };
        let slot = request.slot.as_ref().map(|s| SlotClaim {
            key: key_id,
            scope: &s.scope,
            position: s.position(),
            digest: digest.0,
            request_id,
            evidence: &evidence,
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
            request_id: ledger_id.clone(),
            digest: digest.0,
            path: path.to_string(),
            eid: *p.eid.as_bytes(),
            unix: now_unix(),
            result: None,
            slot: request.slot.as_ref().map(ToString::to_string),
        };
        // As the coordinator on the overlapped path, admit only once the
        // status probe running alongside has passed: until then this node
        // has written nothing for the request. Its partial signature then
        // waits for the slot gossip to the committee nodes outside the
        // session, which runs meanwhile; if the gossip stops the request,
        // the session ends here and the refusal is audited.
        let mut hold = None;
        let held_back = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if *from == self.name {
            if let Some((admit, release)) = self.gates.take(&p.eid) {
                if let Err(e) = admit.await {
                    // Drop what the other participants sent for it already.
                    drop(self.router.open(p.eid, participants));
                    let _ = self.audit(event("denied", format!("client/{client}"), e.to_string()));
                    return Err(e);
                }
                let flag = held_back.clone();
                let release: crate::node::session::Hold = Box::pin(async move {
                    let r = release.await;
                    flag.store(r.is_err(), std::sync::atomic::Ordering::Relaxed);
                    r
                });
                hold = Some(release);
            }
        }
        // The payload's rolling-window spends are counted in the same
        // transaction: two spends that would together pass a limit are
        // never both admitted here.
        let spend_id = crate::node::windows::entry(request, &spends);
        let windows = crate::node::windows::claims(&client, &spend_id, &spends);
        let admitted = self.store.admit_sign(
            (&p.eid, request.expiry_unix),
            now_unix(),
            (key_id, &entry),
            slot,
            &windows,
            allowed,
        );
        let refused = match admitted {
            Ok(Admission::Admitted) => None,
            Ok(Admission::EidUsed) => Some(NodeError::PermissionDenied(format!(
                "execution id {} was used before; refusing to reuse it",
                p.eid
            ))),
            Ok(Admission::RequestIdUsed(m)) => Some(NodeError::RequestIdReused(m)),
            Ok(Admission::BelowHorizon) => Some(NodeError::PermissionDenied(format!(
                "the request expired at Unix {} before this node's execution id horizon",
                request.expiry_unix
            ))),
            Ok(Admission::AlreadySigned) => Some(NodeError::AlreadySigned(format!(
                "request id {request_id} is already signed; a repeat of the request \
                 gets the recorded signature"
            ))),
            Err(e) => match NodeError::from(e) {
                refusal @ (NodeError::SlotConflict(_)
                | NodeError::BelowWatermark(_)
                | NodeError::WindowExceeded(_)) => Some(refusal),
                other => return Err(other),
            },
        };
        if let Some(e) = refused {
            let _ = self.audit(event("denied", format!("client/{client}"), e.to_string()));
            return Err(e);
        }
        if request.slot.is_some() {
            faults::check(&self.name, faults::points::AFTER_WATERMARK)?;
        }
        let session = self
            .open_session(p.eid, &committee)?
            .rounds_within(self.timeouts.sign_round())
            .hold_partial_signature(hold);
        let share = self.signing_share(&rec, epoch)?;
        let share_pk = share
            .public_key()
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        if share_pk.as_slice() != rec.public_key.as_slice() {
            return Err(NodeError::Storage(crate::storage::StorageError::Corrupt {
                what: format!("key {key_id}"),
                reason: "the record's public key differs from the sealed share's; refusing to sign"
                    .into(),
            }));
        }
        #[cfg(feature = "fault-injection")]
        let corrupt = if faults::tampers(&self.name, faults::points::CORRUPT_SIGN_SHARE) {
            Misbehave::CorruptShare
        } else if faults::tampers(&self.name, faults::points::TAMPER_SIGN_OT) {
            Misbehave::TamperOt
        } else {
            Misbehave::No
        };
        #[cfg(not(feature = "fault-injection"))]
        let corrupt = Misbehave::No;
        #[cfg(feature = "fault-injection")]
        if faults::tampers(&self.name, faults::points::STALL_SIGN) {
            std::future::pending::<()>().await;
        }
        #[cfg(feature = "fault-injection")]
        if faults::tampers(&self.name, faults::points::PARTITION_COORDINATOR) {
            faults::isolate(from.as_str());
        }
        let proto = scheme::sign_as(&share, path, &signers, digest, p.eid.as_bytes(), corrupt);
        drop(share);
        // The ledger entry was made durable at admission.
        let result = session.run_session(proto).await;
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
                    .ledger_complete_lazy(key_id, &ledger_id, result)?;
                Ok(Outcome::Sign(sig))
            }
            Err(NodeError::Protocol {
                error: ProtocolError::InvalidSignature,
                blamed,
            }) => {
                let suspects = match self.eliminate(key_id, &p.eid, participants) {
                    // Found by elimination: an abort that names a node.
                    Ok((Some(node), _)) => {
                        return Err(NodeError::Protocol {
                            error: ProtocolError::InvalidSignature,
                            blamed: Some(node),
                        })
                    }
                    Ok((None, suspects)) => suspects,
                    // The freeze never depends on the elimination's bookkeeping.
                    Err(e) => vec![format!("? (the elimination could not be recorded: {e})")],
                };
                let why = format!(
                    "final signature of session {} (signers {}) failed verification at Unix {}; \
                     no party was blamed (suspects here: {}; after an unfreeze the key signs only \
                     with signer sets that leave one of them out, until a second failure names \
                     one or an admin runs `thresig keys unban`)",
                    p.eid,
                    names(participants),
                    crate::node::now_unix(),
                    suspects.join(", ")
                );
                self.store
                    .set_state(key_id, KeyState::Frozen(why.clone()))?;
                tracing::error!(key = %key_id, eid = %p.eid, "key frozen: {why}");
                Err(NodeError::Protocol {
                    error: ProtocolError::InvalidSignature,
                    blamed,
                })
            }
            Err(e) => {
                if held_back.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = self.audit(event("denied", format!("client/{client}"), e.to_string()));
                }
                self.ban_on_fault(key_id, &p.eid, &e);
                Err(e)
            }
        }
    }

    /// A committee node learns of a slot before any signature for it can
    /// exist: it checks the client's request like a signer would, raises its
    /// watermark and counts the payload's rolling-window spends, or refuses
    /// a conflict or a full window. A window step alone (`WindowStep`)
    /// reserves the spends for the sender's `attempt` without touching the
    /// slot, or releases what that attempt reserved (never a spend a signing
    /// session was admitted with).
    pub(crate) fn participate_watermark(
        &self,
        from: &NodeName,
        request: &SignRequest,
        auth: &ClientAuth,
        window: crate::node::WindowStep,
        attempt: &[u8],
    ) -> Result<Outcome, NodeError> {
        let slot = request
            .slot
            .as_ref()
            .ok_or_else(|| NodeError::InvalidArgument("watermark gossip without a slot".into()))?;
        let checked: Result<(NodeName, Vec<_>), NodeError> = (|| {
            let client = self
                .verify_client_request(request, auth, "watermark")?
                .client;
            let allowed = self.authorize_sign(&client, request, false)?;
            self.key(&request.key_id)?;
            Ok((client, allowed.windows))
        })();
        let (client, spends) = match checked {
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
        let spend_id = crate::node::windows::entry(request, &spends);
        let windows = crate::node::windows::claims(&client, &spend_id, &spends);
        // Who holds a reservation: the sender (its mTLS identity) and its
        // attempt; a release names the same pair.
        let holder = format!("{from}/{}", hex::encode(attempt));
        match window {
            crate::node::WindowStep::Release => {
                let released = self
                    .store
                    .release_windows(&request.key_id, &windows, &holder)?;
                tracing::info!(
                    key = %request.key_id,
                    request_id = %request.request_id,
                    coordinator = %from,
                    released,
                    "rolling-window reservations released: the request went no further",
                );
                return Ok(Outcome::Watermarked);
            }
            crate::node::WindowStep::Reserve => {
                self.store
                    .window_reserve(&request.key_id, &windows, now_unix(), &holder)?;
                return Ok(Outcome::Watermarked);
            }
            crate::node::WindowStep::Gossip => {}
        }
        let evidence =
            crate::node::signed_evidence::encode_signed(request, auth).unwrap_or_default();
        let audited = |r: &Result<(), NodeError>| AuditEvent {
            kind: "watermark".into(),
            actor: format!("client/{client}"),
            key: request.key_id.to_string(),
            request_id: request.request_id.clone(),
            decision: if r.is_ok() { "allowed" } else { "denied" }.into(),
            rule: match r {
                Err(e) => e.to_string(),
                Ok(()) if windows.is_empty() => "slot watermark".into(),
                Ok(()) => "slot watermark and rolling windows".into(),
            },
            detail: format!(
                "slot {slot} digest {} via node {from}",
                hex::encode(request.digest.0)
            ),
            ..Default::default()
        };
        // The slot, the payload's window spends and the audit entry, in one
        // transaction (a refusal is audited on its own).
        let r = self
            .store
            .gossip_commit(
                &SlotClaim {
                    key: &request.key_id,
                    scope: &slot.scope,
                    position: slot.position(),
                    digest: request.digest.0,
                    request_id: &request.request_id,
                    evidence: &evidence,
                },
                &windows,
                now_unix(),
                &holder,
                Some(audited(&Ok(()))),
            )
            .map_err(NodeError::from);
        if r.is_err() {
            let _ = self.audit(audited(&r));
        }
        match r {
            Ok(()) => Ok(Outcome::Watermarked),
            // A conflict is answered with the signed request that set this
            // node's watermark, so the coordinator can check it.
            Err(e @ (NodeError::SlotConflict(_) | NodeError::BelowWatermark(_))) => {
                let evidence = self
                    .store
                    .slot_evidence(&request.key_id, &slot.scope)?
                    .and_then(|b| crate::node::signed_evidence::decode_signed(&b).ok())
                    .map(Box::new);
                Ok(Outcome::SlotConflict {
                    reason: e.to_string(),
                    evidence,
                })
            }
            Err(e) => Err(e),
        }
    }
}
