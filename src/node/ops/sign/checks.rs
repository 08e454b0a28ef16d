//! The committee checks around a signature: what a ledger entry (this
//! node's or another's) says about a request (idempotency), the slot gossip
//! to committee nodes that will not sign, and the gate through which the
//! overlapped path admits its own participant only once those checks passed.

use crate::domain::{ExecutionId, NodeName};
use crate::node::ops::OpKind;
use crate::node::propose::nonce;
use crate::node::request::{ClientAuth, SignRequest};
use crate::node::{Node, NodeError, Operation, Outcome, Proposal, Reason, WindowStep};
use crate::protocol::sign::Signature;
use crate::storage::rules::{slot_verdict, SlotVerdict};
use crate::storage::{KeyRecord, LedgerEntry};

use super::SignOutcome;

/// The execution id under which a slot is gossiped (no session runs under it).
pub fn watermark_eid(request: &SignRequest) -> ExecutionId {
    OpKind::Watermark.eid(&request.key_id, 0, &[], &request.binding(), &[])
}

impl Node {
    /// What a ledger entry (this node's, or `remote` node's for key record
    /// `rec`) says about `request`: refused if the id was used for another
    /// digest, path or slot; the recorded signature if it was finished.
    /// A remote node's signature counts only if it verifies under the key's
    /// own (derived) public key.
    pub(crate) fn recorded(
        &self,
        request: &SignRequest,
        entry: &LedgerEntry,
        rec: &KeyRecord,
        remote: Option<&NodeName>,
    ) -> Result<Option<SignOutcome>, NodeError> {
        let (key_id, rid) = (&request.key_id, &request.request_id);
        if entry.digest != request.digest.0
            || entry.path != request.path.to_string()
            || entry.slot != request.slot.as_ref().map(ToString::to_string)
        {
            let place = remote
                .map(|n| format!(" (on node {n})"))
                .unwrap_or_default();
            return Err(NodeError::RequestIdReused(format!(
                "request id {rid} was already used with key {key_id} for a different digest, path \
                 or slot{place}"
            )));
        }
        let Some(done) = &entry.result else {
            return Ok(None);
        };
        let Ok(public_key) = <[u8; 33]>::try_from(done.public_key.as_slice()) else {
            if remote.is_some() {
                tracing::warn!(
                    key = %key_id,
                    %rid,
                    "a node reported a recorded signature with a malformed public key; ignored",
                );
                return Ok(None);
            }
            return Err(NodeError::Internal("ledger: public key length".into()));
        };
        if let Some(n) = remote {
            let (derived, _) = crate::bip32::derive_public(
                rec.key_type,
                &rec.public_key,
                &rec.chain_code,
                &request.path,
            )
            .map_err(|e| NodeError::Internal(e.to_string()))?;
            if derived != public_key {
                tracing::warn!(
                    node = %n,
                    key = %key_id,
                    %rid,
                    "a node reported a recorded signature under another public key; ignored",
                );
                return Ok(None);
            }
        }
        let signature = Signature {
            r: done.r,
            s: done.s,
            recovery_id: done.recovery_id,
            public_key,
            key_type: rec.key_type,
        };
        if let Err(e) = crate::protocol::sign::verify(&signature, &request.digest) {
            if let Some(n) = remote {
                tracing::warn!(
                    node = %n,
                    key = %key_id,
                    %rid,
                    "a node reported a recorded signature that does not verify; ignored",
                );
                return Ok(None);
            }
            return Err(NodeError::Protocol {
                blamed: None,
                error: e,
            });
        }
        let participants = match done
            .participants
            .iter()
            .map(|p| NodeName::parse(p).map_err(|e| NodeError::Internal(e.to_string())))
            .collect::<Result<_, _>>()
        {
            Ok(p) => p,
            Err(_) if remote.is_some() => {
                tracing::warn!(
                    key = %key_id,
                    %rid,
                    "a node reported a recorded signature with malformed signer names; ignored",
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        // A replay: the log line names the session that made the signature.
        if let Some(eid) = ExecutionId::from_slice(&entry.eid) {
            crate::node::note_eid(&eid);
        }
        Ok(Some(SignOutcome {
            signature,
            participants,
            request_id: rid.clone(),
            epoch: done.epoch,
        }))
    }

    /// Sends the slot of `request` (and with it, the payload each node
    /// derives its rolling-window spends from) to `nodes`; returns the first
    /// conflict one of them reports, or the first full window. Nodes that do
    /// not answer within the ping timeout are passed over (their watermark
    /// catches up when they next sign).
    pub(crate) async fn gossip_watermark(
        &self,
        request: &SignRequest,
        auth: &ClientAuth,
        nodes: &[NodeName],
    ) -> Result<(), NodeError> {
        self.gossip(request, auth, nodes, WindowStep::Gossip, &[])
            .await
            .1
    }

    /// Reserves `request`'s rolling-window spends (with its slot) at every
    /// committee node, this one included, before any session is proposed:
    /// the request goes on only once every node that answered counted it.
    /// Refused anywhere, what the attempt reserved is released again, so a
    /// request that is not signed holds no window; when other nodes had
    /// room (concurrent spends contending for the last of a window) it is
    /// tried again after a short random pause, at most four times.
    pub(crate) async fn reserve_windows(
        &self,
        request: &SignRequest,
        auth: &ClientAuth,
        committee: &[NodeName],
    ) -> Result<(), NodeError> {
        const TRIES: u64 = 4;
        for tried in 1..=TRIES {
            // Each attempt reserves under its own id, so a late release of
            // an earlier one cannot take this one's reservations.
            let attempt = nonce()?;
            let (accepted, r) = self
                .gossip(request, auth, committee, WindowStep::Reserve, &attempt)
                .await;
            let Err(e) = r else { return Ok(()) };
            let (released, _) = self
                .gossip(request, auth, committee, WindowStep::Release, &attempt)
                .await;
            // Contended: another node had room (this one looked first).
            let contended =
                e.reason() == Reason::WindowExceeded && accepted.iter().any(|n| *n != self.name);
            tracing::info!(
                key = %request.key_id,
                request_id = %request.request_id,
                reason = %e,
                accepted = accepted.len(),
                released = released.len(),
                tried,
                "rolling-window reservation refused; what it reserved was released",
            );
            if !contended || tried == TRIES {
                return Err(e);
            }
            let jitter = nonce().ok().and_then(|b| b.first().copied()).unwrap_or(0);
            let pause = tried
                .saturating_mul(20)
                .saturating_add(u64::from(jitter % 40));
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        Err(NodeError::Internal("no reservation attempt ran".into()))
    }

    /// The gossip itself, or a window step of `attempt`: the nodes that
    /// took it, and the first conflict or full window one of them reported.
    /// This node answers its own part here.
    async fn gossip(
        &self,
        request: &SignRequest,
        auth: &ClientAuth,
        nodes: &[NodeName],
        window: WindowStep,
        attempt: &[u8],
    ) -> (Vec<NodeName>, Result<(), NodeError>) {
        let p = Proposal {
            eid: watermark_eid(request),
            nonce: attempt.to_vec(),
            admin: None,
            op: Operation::Watermark {
                request: Box::new(request.clone()),
                auth: Box::new(auth.clone()),
                window,
            },
        };
        let timeout = self.timeouts.ping;
        let calls = nodes.iter().map(|n| {
            let p = p.clone();
            async move {
                let answer = if *n == self.name {
                    Ok(self.participate_watermark(n, request, auth, window, attempt))
                } else {
                    tokio::time::timeout(timeout, self.net.propose(n, p)).await
                };
                (n.clone(), answer)
            }
        });
        let mut accepted = Vec::new();
        let mut first: Result<(), NodeError> = Ok(());
        for (n, r) in futures::future::join_all(calls).await {
            match r {
                Ok(Ok(Outcome::SlotConflict { reason, evidence })) => {
                    // A proven conflict ends the request (it names the node
                    // that showed it, and is not that node's failure).
                    match self.proven_conflict(request, evidence.as_deref(), &n) {
                        Ok(e) => {
                            if first.is_ok() {
                                first = Err(e);
                            }
                        }
                        Err(why) => self.ignore_conflict(request, &n, &reason, &why),
                    }
                }
                Ok(Ok(_)) => accepted.push(n),
                // A refusal is not evidence: only a conflict shown with the
                // client's signed request stops a request.
                Ok(Err(e))
                    if matches!(e.reason(), Reason::SlotConflict | Reason::BelowWatermark) =>
                {
                    self.ignore_conflict(request, &n, &e.to_string(), "it showed no evidence");
                }
                // A rolling window full at a committee node ends the
                // request: every committee node that answers counts every
                // spend, or the limit would not hold across signer sets.
                Ok(Err(e)) if e.reason() == Reason::WindowExceeded => {
                    if first.is_ok() {
                        first = Err(e.at(&n));
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(node = %n, error = %e, "watermark gossip not accepted");
                }
                Err(_) => tracing::warn!(node = %n, "watermark gossip: no answer in time"),
            }
        }
        (accepted, first)
    }

    /// The refusal of `request` that `evidence` proves: a request for the
    /// same key and scope, signed by a client of this cluster, at the same
    /// position for another digest or at a higher position. Why not,
    /// otherwise.
    fn proven_conflict(
        &self,
        request: &SignRequest,
        evidence: Option<&(SignRequest, ClientAuth)>,
        shown_by: &NodeName,
    ) -> Result<NodeError, String> {
        let (theirs, auth) = evidence.ok_or("it showed no evidence")?;
        let (Some(ours), Some(slot)) = (&request.slot, &theirs.slot) else {
            return Err("its evidence has no slot".into());
        };
        // A payload's slot, digest and path must be the ones its payload
        // names (the client signed the payload, not them).
        if theirs.payload.is_some() {
            let rec = self
                .key(&theirs.key_id)
                .map_err(|e| format!("its evidence names key {}: {e}", theirs.key_id))?;
            self.check_payload(theirs, &rec)
                .map_err(|e| format!("its evidence does not match its payload: {e}"))?;
        }
        if theirs.key_id != request.key_id || slot.scope != ours.scope {
            return Err(format!(
                "its evidence is for key {} scope {}",
                theirs.key_id, slot.scope
            ));
        }
        // The double-sign rule itself, with their request as the watermark.
        let held = crate::storage::Watermark {
            height: slot.height,
            round: slot.round,
            step: slot.step,
            digest: theirs.digest.0,
            request_id: theirs.request_id.clone(),
        };
        let verdict = slot_verdict(Some(&held), ours.position(), &request.digest.0);
        if !matches!(
            verdict,
            SlotVerdict::Below { .. } | SlotVerdict::OtherDigest { .. }
        ) {
            return Err(format!(
                "its evidence (slot {slot}) does not conflict with slot {ours}"
            ));
        }
        // The client's signature, not the request's age: the evidence may
        // be long expired; it only has to have been signed by a client of
        // this cluster whose certificate was valid then (the request was
        // signed before its expiry). Not this node's policy of today: the
        // holder took it under its own policy when it was signed, and an
        // honest conflict must not be ignored for a policy change.
        let then = theirs.expiry_unix.min(crate::node::now_unix());
        let client = self
            .verifier
            .verify_at(auth, &theirs.canonical_bytes(), then)
            .map_err(|e| format!("its evidence is not a client's signed request: {e}"))?;
        let same_slot = matches!(verdict, SlotVerdict::OtherDigest { .. });
        let msg = if same_slot {
            format!(
                "slot {ours} of key {} was already signed for another digest (request {} of \
                 client {client}, shown by node {shown_by}); refused (double-sign protection)",
                request.key_id, theirs.request_id
            )
        } else {
            format!(
                "slot {ours} of key {} is below its watermark {}/{}/{} (request {} of client \
                 {client}, shown by node {shown_by}; double-sign protection)",
                request.key_id, slot.height, slot.round, slot.step, theirs.request_id
            )
        };
        Ok(if same_slot {
            NodeError::SlotConflict(msg)
        } else {
            NodeError::BelowWatermark(msg)
        })
    }

    /// A conflict answer without valid evidence: the request goes on, the
    /// node is suspected for the key (passed over as a signer for a while)
    /// and the decision is audited.
    fn ignore_conflict(&self, request: &SignRequest, node: &NodeName, reason: &str, why: &str) {
        tracing::warn!(
            %node,
            key = %request.key_id,
            request_id = %request.request_id,
            %reason,
            %why,
            "slot conflict answer ignored: no valid evidence",
        );
        self.suspect_for_key(&request.key_id, std::slice::from_ref(node));
        self.audit_refusal(
            node,
            crate::storage::AuditEvent {
                kind: "watermark.conflict-ignored".into(),
                actor: format!("node/{node}"),
                key: request.key_id.to_string(),
                request_id: request.request_id.clone(),
                decision: "denied".into(),
                rule: "no veto without evidence".into(),
                detail: format!("{reason}; ignored: {why}"),
                ..Default::default()
            },
            false,
        );
    }
}

/// Gates of signing sessions this node coordinates on the overlapped path:
/// our own participant side takes the gate of its eid, waits on its
/// admission half before it admits the session, and holds its partial
/// signature until the release half passed (the slot gossip).
#[derive(Default)]
pub(crate) struct Gates(std::sync::Mutex<std::collections::HashMap<ExecutionId, Gate>>);

/// The two halves of a gate: the committee checks that admission waits
/// for, and the slot gossip that the partial signature waits for.
pub(crate) struct Gate {
    pub admit: tokio::sync::oneshot::Receiver<bool>,
    pub release: tokio::sync::oneshot::Receiver<bool>,
}

/// Removes a gate nobody took when the session ends.
pub(crate) struct HeldGate<'a> {
    gates: &'a Gates,
    eid: ExecutionId,
}

impl Drop for HeldGate<'_> {
    fn drop(&mut self) {
        self.gates.lock().remove(&self.eid);
    }
}

impl Gates {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ExecutionId, Gate>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn hold(&self, eid: ExecutionId, gate: Gate) -> HeldGate<'_> {
        self.lock().insert(eid, gate);
        HeldGate { gates: self, eid }
    }

    /// The gate of `eid`: a future that fails unless the admission checks
    /// passed, and one that fails unless the slot gossip did.
    pub(crate) fn take(
        &self,
        eid: &ExecutionId,
    ) -> Option<(
        futures::future::BoxFuture<'static, Result<(), NodeError>>,
        crate::node::session::Hold,
    )> {
        let Gate { admit, release } = self.lock().remove(eid)?;
        let admit = Box::pin(async move {
            match admit.await {
                Ok(true) => Ok(()),
                _ => Err(NodeError::FailedPrecondition(
                    "the coordinator's committee checks stopped this signature before it was \
                     admitted"
                        .into(),
                )),
            }
        });
        let release: crate::node::session::Hold = Box::pin(async move {
            match release.await {
                Ok(true) => Ok(()),
                _ => Err(NodeError::FailedPrecondition(
                    "the coordinator's slot gossip to the committee stopped this signature \
                     before its partial signature left"
                        .into(),
                )),
            }
        });
        Some((admit, release))
    }
}
