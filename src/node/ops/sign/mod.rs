//! Signing a client's request. The coordinator side is here: idempotency
//! from the ledgers, picking t live signers (the overlapped path, which runs
//! the committee checks beside the session, and the checked path, which runs
//! them first), and returning a verified signature. The participant side is
//! in `participant.rs`; the checks that run beside a signature in `checks.rs`.

mod checks;
mod culprits;
mod overlapped;
mod participant;
mod payload;
pub(crate) use participant::At;
pub(crate) use payload::DecodeCache;
pub use payload::{PayloadOutcome, Verdict, MAX_TARGETS};

pub(crate) use checks::Gates;
use overlapped::Attempt;

use super::OpKind;
use crate::domain::{ExecutionId, NodeName};
use crate::node::committee::reasons;
use crate::node::propose::nonce;
use crate::node::request::{ClientAuth, SignRequest};
use crate::node::{committee_of, Node, NodeError, Operation, Outcome, Proposal, Reason};
use crate::protocol::sign::Signature;
use crate::storage::KeyRecord;

/// A finished signing request.
#[derive(Debug, Clone)]
pub struct SignOutcome {
    pub signature: Signature,
    pub participants: Vec<NodeName>,
    pub request_id: String,
    pub epoch: u64,
}

/// The request digest a signing eid binds: the client's whole signed request.
pub fn sign_binding(request: &SignRequest) -> Vec<u8> {
    request.binding().to_vec()
}

/// The execution id of signing `request` at `epoch` with `participants`.
pub fn eid(
    request: &SignRequest,
    epoch: u64,
    participants: &[NodeName],
    nonce: &[u8],
) -> ExecutionId {
    OpKind::Sign.eid(
        &request.key_id,
        epoch,
        participants,
        &sign_binding(request),
        nonce,
    )
}

impl Node {
    /// Signs a client's request with t live committee nodes. `client` is
    /// the identity of the connection it arrived on; the request must be
    /// signed by that same client. Every participant (this node included)
    /// checks the client's signature and its own policy again.
    pub async fn sign(
        &self,
        request: SignRequest,
        auth: ClientAuth,
        client: &NodeName,
    ) -> Result<SignOutcome, NodeError> {
        let _busy = self.start_work(false)?;
        let checked = (|| {
            let signer = self
                .verify_client_request(&request, &auth, "sign request")?
                .client;
            if signer != *client {
                return Err(NodeError::PermissionDenied(format!(
                    "the request is signed by client {signer} but was sent by client {client}"
                )));
            }
            let allowed = self.authorize_sign(client, &request, false)?;
            // This node's own windows first: a request over a limit here
            // costs no other node a record.
            self.check_windows(client, &request, &allowed.windows)?;
            Ok(!allowed.windows.is_empty())
        })()
        .map_err(|e| e.at(&self.name));
        let spends = match checked {
            Ok(spends) => spends,
            Err(e) => {
                let _ = self.audit(crate::storage::AuditEvent {
                    kind: "sign.request".into(),
                    actor: format!("client/{client}"),
                    key: request.key_id.to_string(),
                    request_id: request.request_id.clone(),
                    decision: "denied".into(),
                    rule: e.to_string(),
                    detail: format!(
                        "digest {} path {}",
                        hex::encode(request.digest.0),
                        request.path
                    ),
                    ..Default::default()
                });
                return Err(e);
            }
        };
        let key_id = &request.key_id;
        let ledger_id = request.ledger_id();
        let rid = ledger_id.as_str();
        // The request id is the idempotency key: a repeat gets the signature
        // recorded for it, with no new session; the same id for another
        // digest, path or slot is refused. This node's ledger first; the
        // other committee nodes' answers come with the status probe below.
        let mut rec = self.key(key_id)?;
        if rec.state == crate::storage::KeyState::Generated {
            // Its keygen's coordinator may have died after every member
            // stored its share: the committee has the certificate.
            if self.fetch_keygen_activation(&rec).await {
                rec = self.key(key_id)?;
            }
        }
        if let Some(entry) = self.store.ledger_get(key_id, rid)? {
            if let Some(done) = self.recorded(&request, &entry, &rec, None)? {
                return Ok(done);
            }
        }
        self.check_can_sign(&rec).map_err(|e| e.at(&self.name))?;
        self.check_restored(&rec)
            .await
            .map_err(|e| e.at(&self.name))?;
        let committee = committee_of(&rec)?;
        let candidates = self.candidates(&committee);
        let t = rec.threshold as usize;
        // A request counts against this node's limits once, whichever path
        // below signs it.
        let charged = std::sync::atomic::AtomicBool::new(false);
        let charge = || -> Result<(), NodeError> {
            if charged.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
            self.charge_rate(client, &request).inspect_err(|e| {
                self.audit_client_refusal(
                    client,
                    crate::storage::AuditEvent {
                        kind: "sign.request".into(),
                        actor: format!("client/{client}"),
                        key: key_id.to_string(),
                        request_id: request.request_id.clone(),
                        decision: "denied".into(),
                        rule: "rate limit".into(),
                        detail: e.to_string(),
                        ..Default::default()
                    },
                );
            })
        };
        // The rate limits are charged before any other node is asked
        // anything: a client over its limit costs the committee no probe, no
        // admission and no ledger entry. (A retry answered from this node's
        // ledger, above, costs nothing.)
        charge()?;
        // A payload under a rolling-window limit is counted by every
        // committee node that answers before any session is proposed
        // (`windows.rs`).
        if spends {
            self.reserve_windows(&request, &auth, &committee).await?;
        }
        // Overlapped path: when no candidate is under suspicion, propose the
        // session to the first t at once and run the committee checks
        // alongside; this node joins the session once the probe passed and
        // sends its partial signature once the slot gossip did.
        let mut suspects = self.suspects();
        suspects.extend(self.key_suspects(key_id));
        // While an elimination runs here, each request leaves out the next
        // suspect in turn (`bans.rs`).
        let leave_out = self.elimination_leave_out(key_id);
        suspects.extend(leave_out.clone());
        let preferred: Vec<NodeName> = candidates
            .iter()
            .filter(|c| !suspects.contains(c))
            .take(t)
            .cloned()
            .collect();
        if preferred.len() == t && preferred.first() == Some(&self.name) {
            match self
                .sign_overlapped(
                    &request,
                    &auth,
                    &rec,
                    &committee,
                    &candidates,
                    &preferred,
                    &charge,
                )
                .await
            {
                Attempt::Done(outcome) => return Ok(*outcome),
                Attempt::Failed(e) => return Err(e),
                Attempt::GaveWay(why) => {
                    tracing::info!(
                        key = %key_id,
                        request_id = %request.request_id,
                        reason = %why,
                        "checking the committee first and signing again",
                    );
                }
            }
        }
        // Checked path: probe the committee, then sign with t that answered.
        // Tried again, transparently to the client, at most twice: when the
        // session raced an activation (this node or a participant moved to
        // the next epoch; the probe brings whichever side is behind
        // forward), at the new epoch; when a participant failed it (a round
        // timed out waiting for it, a delivery to it failed, it was blamed),
        // with another signer set that avoids it and a fresh eid.
        let mut retried_mismatch = false;
        let mut last = None;
        for _ in 0..3 {
            let e = match self
                .sign_checked(&request, &auth, &rec, &charge, leave_out.as_ref())
                .await
            {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            let fresh = self.key(key_id)?;
            let moved = fresh.epoch != rec.epoch;
            let mismatch = e.reason() == Reason::EpochMismatch;
            let culprits = self.culprits(&e, &request);
            if moved || (mismatch && !retried_mismatch) {
                retried_mismatch |= mismatch;
                tracing::info!(
                    key = %key_id,
                    request_id = %request.request_id,
                    epoch = fresh.epoch,
                    reason = %e,
                    "signing raced an activation; signing again at the key's epoch",
                );
                self.check_can_sign(&fresh).map_err(|e| e.at(&self.name))?;
                rec = fresh;
            } else if !culprits.is_empty() {
                self.suspect_for_key(key_id, &culprits);
                tracing::warn!(
                    key = %key_id,
                    request_id = %request.request_id,
                    nodes = %crate::node::names(&culprits),
                    reason = %e,
                    "signing session failed at these nodes; signing again without them",
                );
            } else {
                return Err(e);
            }
            last = Some(e);
        }
        Err(last.unwrap_or_else(|| NodeError::Internal("no signing attempt ran".into())))
    }

    /// The committee as signing candidates: ourselves first, then the others
    /// in committee order.
    fn candidates(&self, committee: &[NodeName]) -> Vec<NodeName> {
        let mut candidates: Vec<NodeName> = committee
            .iter()
            .filter(|c| **c == self.name)
            .cloned()
            .collect();
        candidates.extend(committee.iter().filter(|c| **c != self.name).cloned());
        candidates
    }

    /// The checked path: this node's ledger, a status probe of the
    /// committee (nodes that failed one moments ago count as down), any
    /// node's recorded signature for the request, then a session with t
    /// nodes that answered at `rec`'s epoch.
    async fn sign_checked(
        &self,
        request: &SignRequest,
        auth: &ClientAuth,
        rec: &KeyRecord,
        charge: &(dyn Fn() -> Result<(), NodeError> + Sync),
        leave_out: Option<&NodeName>,
    ) -> Result<SignOutcome, NodeError> {
        let key_id = &request.key_id;
        // Our own ledger first: an attempt may have finished here.
        if let Some(entry) = self.store.ledger_get(key_id, &request.ledger_id())? {
            if let Some(done) = self.recorded(request, &entry, rec, None)? {
                return Ok(done);
            }
        }
        let committee = committee_of(rec)?;
        let candidates = self.candidates(&committee);
        let t = rec.threshold as usize;
        // Nodes that failed a probe moments ago are not probed again (they
        // would cost a probe timeout each time); they count as down.
        let skipped = self.recently_down();
        let failed_here = self.key_suspects(key_id);
        let probed: Vec<NodeName> = candidates
            .iter()
            .filter(|c| !skipped.contains(c) && !failed_here.contains(c) && Some(*c) != leave_out)
            .cloned()
            .collect();
        let (mut down, mut ledgers) = self
            .probe(rec, &probed, true, Some(request.ledger_id().as_str()))
            .await;
        self.note_reachability(&probed, &down);
        // Nodes passed over for failing moments ago get a second chance
        // when the others are too few to sign: a fresh probe (one probe
        // timeout, only when the request would fail without them), so a
        // healed partition or a restarted node is used at once.
        // (A node banned for the key gets none.)
        let banned = self.banned(key_id);
        let passed_over: Vec<NodeName> = candidates
            .iter()
            .filter(|c| {
                (skipped.contains(c) || failed_here.contains(c))
                    && !banned.contains(c)
                    && !probed.contains(c)
                    && Some(*c) != leave_out
            })
            .cloned()
            .collect();
        let answered = probed.len().saturating_sub(down.len());
        let (skipped, failed_here) = if answered < t && !passed_over.is_empty() {
            let (again_down, again_ledgers) = self
                .probe_again(rec, &passed_over, &request.ledger_id())
                .await;
            ledgers.extend(again_ledgers);
            down.extend(again_down);
            (Vec::new(), banned)
        } else {
            (skipped, failed_here)
        };
        down.extend(
            skipped
                .into_iter()
                .filter(|s| candidates.contains(s))
                .map(|s| (s, "failed a probe moments ago".to_owned())),
        );
        for s in failed_here {
            if candidates.contains(&s) && !down.iter().any(|(d, _)| *d == s) {
                let why = "failed a signing session of this key moments ago";
                down.push((s, why.to_owned()));
            }
        }
        if let Some(s) = leave_out {
            if candidates.contains(s) && !down.iter().any(|(d, _)| d == s) {
                let why = "left out in turn by the elimination running here after a bad signature";
                down.push((s.clone(), why.to_owned()));
            }
        }
        let mut recorded = None;
        for (n, entry) in &ledgers {
            if let Some(done) = self.recorded(request, entry, rec, Some(n))? {
                recorded = Some(done);
            }
        }
        if let Some(done) = recorded {
            tracing::info!(
                key = %key_id,
                request_id = %request.request_id,
                "request already signed; returning the recorded signature",
            );
            return Ok(done);
        }
        charge()?;
        let live: Vec<NodeName> = candidates
            .into_iter()
            .filter(|c| !down.iter().any(|(d, _)| d == c))
            .collect();
        if live.len() < t {
            let list = reasons(&down);
            return Err(NodeError::Unavailable(format!(
                "key {key_id} needs {t} live committee nodes at epoch {}, {} answered; not \
                 available: {list}; retry when they are back",
                rec.epoch,
                live.len()
            )));
        }
        let participants: Vec<NodeName> = live.into_iter().take(t).collect();
        if request.slot.is_some() {
            // Gossip the slot to the committee nodes that will not sign, and
            // wait for them (briefly): any of them that signed a conflict at
            // this slot, or a higher one, refuses and so does this request.
            let others: Vec<NodeName> = committee
                .iter()
                .filter(|n| !participants.contains(n))
                .cloned()
                .collect();
            self.gossip_watermark(request, auth, &others).await?;
        }
        self.run_sign(request, auth, rec, &participants, None).await
    }

    /// Proposes the signing session to `participants` (ourselves first) and
    /// returns the signature. With `gate`, this node admits the session
    /// only once the gate says yes.
    async fn run_sign(
        &self,
        request: &SignRequest,
        auth: &ClientAuth,
        rec: &KeyRecord,
        participants: &[NodeName],
        gate: Option<checks::Gate>,
    ) -> Result<SignOutcome, NodeError> {
        let request_id = request.request_id.clone();
        let nonce = nonce()?;
        let eid = eid(request, rec.epoch, participants, &nonce);
        crate::node::note_eid(&eid);
        let proposal = Proposal {
            eid,
            nonce,
            admin: None,
            op: Operation::Sign {
                epoch: rec.epoch,
                lifecycle_seq: rec.lifecycle_seq,
                request: Box::new(request.clone()),
                auth: Box::new(auth.clone()),
                participants: participants.to_vec(),
            },
        };
        let _gate = gate.map(|g| self.gates.hold(eid, g));
        let results = self.propose_parties(participants, proposal, true).await?;
        // Our own session verified the signature it assembled against the
        // key; one that came only from other nodes is checked here.
        let own = results.iter().any(|(n, _)| *n == self.name);
        let mut signature: Option<Signature> = None;
        for (n, o) in results {
            let Outcome::Sign(sig) = o else {
                return Err(NodeError::Internal(format!(
                    "node {n} answered signing with another outcome"
                )));
            };
            match &signature {
                None => signature = Some(sig),
                Some(s) if *s != sig => {
                    return Err(NodeError::Internal(format!(
                        "node {n} assembled a different signature"
                    )))
                }
                Some(_) => {}
            }
        }
        let signature = signature.ok_or_else(|| NodeError::Internal("no signature".into()))?;
        if !own {
            crate::protocol::sign::verify(&signature, &request.digest).map_err(|e| {
                NodeError::Protocol {
                    blamed: None,
                    error: e,
                }
            })?;
        }
        Ok(SignOutcome {
            signature,
            participants: participants.to_vec(),
            request_id,
            epoch: rec.epoch,
        })
    }
}
