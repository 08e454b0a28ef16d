//! The coordinator role: the node that receives a client or admin request
//! picks the participants, proposes, and checks the participants' results
//! (for keys: that every participant reached the same one; for signatures:
//! its own, which its engine verified, or a verified one from another node).
//! It is one participant among others and gets no trust for it.

use std::time::Instant;

use super::committee_of;
use super::participant::{keygen_binding, sign_binding};
use super::reasons;
use super::request::{ClientAuth, SignRequest};
use super::{names, Node, NodeError, Operation, Outcome, Proposal};
use crate::domain::{ExecutionId, KeyId, NodeName, Threshold};
use crate::protocol::sign::Signature;
use crate::storage::{KeyRecord, KeyState, LedgerEntry};

/// A finished signing request.
#[derive(Debug, Clone)]
pub struct SignOutcome {
    pub signature: Signature,
    pub participants: Vec<NodeName>,
    pub request_id: String,
    pub epoch: u64,
}

/// How long a coordinator waits, after a participant failed only because a
/// message could not be delivered, for another participant's own refusal.
const REFUSAL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The remote participants' answers to one proposal, and their tasks,
/// which are aborted (cancelling the calls) when this is dropped unless
/// `detach` was called.
struct RemoteCalls {
    rx: tokio::sync::mpsc::UnboundedReceiver<(NodeName, Result<Outcome, NodeError>)>,
    pending: usize,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl RemoteCalls {
    fn detach(&mut self) {
        self.tasks.clear();
    }
}

impl Drop for RemoteCalls {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub(super) fn nonce() -> Result<Vec<u8>, NodeError> {
    let mut n = vec![0u8; 32];
    getrandom::fill(&mut n).map_err(|e| NodeError::Internal(format!("rng: {e}")))?;
    Ok(n)
}

impl Node {
    /// What a ledger entry (this node's, or `remote` node's for key record
    /// `rec`) says about `request`: refused if the id was used for another
    /// digest, path or slot; the recorded signature if it was finished.
    /// A remote node's signature counts only if it verifies under the key's
    /// own (derived) public key.
    fn recorded(
        &self,
        request: &SignRequest,
        entry: &LedgerEntry,
        remote: Option<(&NodeName, &KeyRecord)>,
    ) -> Result<Option<SignOutcome>, NodeError> {
        let (key_id, rid) = (&request.key_id, &request.request_id);
        if entry.digest != request.digest.0
            || entry.path != request.path.to_string()
            || entry.slot != request.slot.as_ref().map(ToString::to_string)
        {
            let place = remote
                .map(|(n, _)| format!(" (on node {n})"))
                .unwrap_or_default();
            return Err(NodeError::AlreadyExists(format!(
                "request id {rid} was already used with key {key_id} for a different digest, path or slot{place}"
            )));
        }
        let Some(done) = &entry.result else {
            return Ok(None);
        };
        let Ok(public_key) = <[u8; 33]>::try_from(done.public_key.as_slice()) else {
            if remote.is_some() {
                tracing::warn!(key = %key_id, %rid, "a node reported a recorded signature with a malformed public key; ignored");
                return Ok(None);
            }
            return Err(NodeError::Internal("ledger: public key length".into()));
        };
        if let Some((n, rec)) = remote {
            let (derived, _) =
                crate::bip32::derive_public(&rec.public_key, &rec.chain_code, &request.path)
                    .map_err(|e| NodeError::Internal(e.to_string()))?;
            if derived != public_key {
                tracing::warn!(node = %n, key = %key_id, %rid, "a node reported a recorded signature under another public key; ignored");
                return Ok(None);
            }
        }
        let signature = Signature {
            r: done.r,
            s: done.s,
            recovery_id: done.recovery_id,
            public_key,
        };
        if let Err(e) = crate::protocol::sign::verify(&signature, &request.digest) {
            if let Some((n, _)) = remote {
                tracing::warn!(node = %n, key = %key_id, %rid, "a node reported a recorded signature that does not verify; ignored");
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
                tracing::warn!(key = %key_id, %rid, "a node reported a recorded signature with malformed signer names; ignored");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(Some(SignOutcome {
            signature,
            participants,
            request_id: rid.clone(),
            epoch: done.epoch,
        }))
    }

    /// Sends the slot of `request` to `nodes`; returns the first conflict
    /// one of them reports. Nodes that do not answer within the ping timeout
    /// are passed over (their watermark catches up when they next sign).
    async fn gossip_watermark(
        &self,
        request: &SignRequest,
        auth: &ClientAuth,
        nodes: &[NodeName],
    ) -> Result<(), NodeError> {
        let p = Proposal {
            eid: ExecutionId::derive(
                "watermark",
                &request.key_id,
                0,
                &[],
                &request.binding(),
                &[],
            ),
            nonce: Vec::new(),
            op: Operation::Watermark {
                request: Box::new(request.clone()),
                auth: Box::new(auth.clone()),
            },
        };
        let timeout = self.timeouts.ping;
        let calls = nodes.iter().map(|n| {
            let call = self.net.propose(n, p.clone());
            let n = n.clone();
            async move { (n, tokio::time::timeout(timeout, call).await) }
        });
        for (n, r) in futures::future::join_all(calls).await {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e @ NodeError::FailedPrecondition(_))) => return Err(e),
                Ok(Err(e)) => {
                    tracing::warn!(node = %n, error = %e, "watermark gossip not accepted");
                }
                Err(_) => tracing::warn!(node = %n, "watermark gossip: no answer in time"),
            }
        }
        Ok(())
    }

    /// Probes `nodes` concurrently; returns those that did not answer, with why.
    pub(super) async fn unreachable(&self, nodes: &[NodeName]) -> Vec<(NodeName, String)> {
        let probes = nodes.iter().filter(|n| **n != self.name).map(|n| {
            let call = self.net.ping(n);
            let timeout = self.timeouts.ping;
            let n = n.clone();
            async move {
                match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some((n, e.kind.to_string())),
                    Err(_) => Some((n, format!("no answer within {timeout:?}"))),
                }
            }
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Sends `proposal` to every party (ourselves directly) and collects the
    /// outcomes. The first failure ends the wait: the other calls are
    /// cancelled and that failure is returned, so a refusal reaches the
    /// client at once instead of after a round timeout.
    pub(super) async fn propose_all(
        &self,
        parties: &[NodeName],
        proposal: Proposal,
    ) -> Result<Vec<(NodeName, Outcome)>, NodeError> {
        self.propose_parties(parties, proposal, false).await
    }

    /// `propose_all`; with `own_suffices`, this node's own successful
    /// outcome ends the wait (it is returned alone) and the other
    /// participants' calls are left to finish undisturbed. For signing,
    /// where our own session's signature is complete and verified.
    async fn propose_parties(
        &self,
        parties: &[NodeName],
        proposal: Proposal,
        own_suffices: bool,
    ) -> Result<Vec<(NodeName, Outcome)>, NodeError> {
        let session_limit = self.timeouts.session();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut remote = RemoteCalls {
            rx,
            pending: 0,
            tasks: Vec::new(),
        };
        let mut own: Option<futures::future::BoxFuture<'_, Result<Outcome, NodeError>>> = None;
        for n in parties {
            if *n == self.name {
                let p = proposal.clone();
                own = Some(Box::pin(async move {
                    match tokio::time::timeout(session_limit, self.on_propose(&self.name, p)).await
                    {
                        Ok(r) => r,
                        Err(_) => Err(NodeError::Internal(format!(
                            "own session exceeded {session_limit:?}"
                        ))),
                    }
                }));
            } else {
                // Each call runs on its own task, so that leaving early does
                // not cancel it; dropping `remote` aborts the unfinished ones.
                let call = self.net.propose(n, proposal.clone());
                let (n, tx) = (n.clone(), tx.clone());
                let task = tokio::spawn(async move {
                    let r = call.await;
                    if let Err(tokio::sync::mpsc::error::SendError((n, Err(e)))) = tx.send((n, r)) {
                        tracing::warn!(node = %n, error = %e, "participant failed after the coordinator had its result");
                    }
                });
                remote.tasks.push(task.abort_handle());
                remote.pending += 1;
            }
        }
        drop(tx);
        let mut ok = Vec::with_capacity(parties.len());
        while let Some((n, r)) = self.next_answer(&mut own, &mut remote).await {
            match r {
                Ok(o) if own_suffices && n == self.name => {
                    remote.detach();
                    return Ok(vec![(n, o)]);
                }
                Ok(o) => ok.push((n, o)),
                Err(e) => {
                    tracing::warn!(node = %n, error = %e, eid = %proposal.eid, "participant failed; abandoning the session");
                    if !matches!(e, NodeError::Net(_) | NodeError::Timeout { .. }) {
                        return Err(e);
                    }
                    // A delivery failure or a round timeout is usually the
                    // echo of another participant's refusal (its session
                    // closed). Give the others a moment to report the cause.
                    let grace = tokio::time::sleep(REFUSAL_GRACE);
                    tokio::pin!(grace);
                    loop {
                        tokio::select! {
                            _ = &mut grace => return Err(e),
                            next = self.next_answer(&mut own, &mut remote) => match next {
                                Some((_, Err(cause)))
                                    if !matches!(cause, NodeError::Net(_) | NodeError::Timeout { .. }) =>
                                {
                                    return Err(cause)
                                }
                                // Our own session finished after all: its
                                // verified signature stands.
                                Some((n, Ok(o))) if own_suffices && n == self.name => {
                                    remote.detach();
                                    return Ok(vec![(n, o)]);
                                }
                                Some(_) => {}
                                None => return Err(e),
                            },
                        }
                    }
                }
            }
        }
        Ok(ok)
    }

    /// The next participant answer: our own session's or a remote one's;
    /// `None` once every party has answered.
    async fn next_answer(
        &self,
        own: &mut Option<futures::future::BoxFuture<'_, Result<Outcome, NodeError>>>,
        remote: &mut RemoteCalls,
    ) -> Option<(NodeName, Result<Outcome, NodeError>)> {
        enum Next {
            Own(Result<Outcome, NodeError>),
            Remote(Option<(NodeName, Result<Outcome, NodeError>)>),
        }
        if own.is_none() && remote.pending == 0 {
            return None;
        }
        let has_own = own.is_some();
        let has_remote = remote.pending > 0;
        let next = tokio::select! {
            r = async {
                match own.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if has_own => Next::Own(r),
            r = remote.rx.recv(), if has_remote => Next::Remote(r),
        };
        match next {
            Next::Own(r) => {
                *own = None;
                Some((self.name.clone(), r))
            }
            Next::Remote(Some(answer)) => {
                remote.pending -= 1;
                Some(answer)
            }
            Next::Remote(None) => {
                remote.pending = 0;
                Some((
                    self.name.clone(),
                    Err(NodeError::Internal(
                        "a proposal task ended without an answer".into(),
                    )),
                ))
            }
        }
    }

    /// Runs a distributed key generation across `committee` (default: every node).
    pub async fn create_key(
        &self,
        key_id: &KeyId,
        threshold: u32,
        committee: Vec<NodeName>,
    ) -> Result<KeyRecord, NodeError> {
        let committee = if committee.is_empty() {
            self.roster.clone()
        } else {
            committee
        };
        Threshold::new(threshold, committee.len())
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        for (i, m) in committee.iter().enumerate() {
            if !self.roster.contains(m) {
                return Err(NodeError::InvalidArgument(format!(
                    "node {m} is not in the cluster roster"
                )));
            }
            if committee[..i].contains(m) {
                return Err(NodeError::InvalidArgument(format!(
                    "node {m} is listed twice in the committee"
                )));
            }
        }
        if self.store.key(key_id)?.is_some() {
            return Err(NodeError::AlreadyExists(format!(
                "key {key_id} already exists"
            )));
        }
        let down = self.unreachable(&committee).await;
        if !down.is_empty() {
            let list = reasons(&down);
            return Err(NodeError::Unavailable(format!(
                "keygen needs every committee node; unreachable: {list}; retry when they are back"
            )));
        }
        let nonce = nonce()?;
        let eid = ExecutionId::derive(
            "keygen",
            key_id,
            0,
            &committee,
            &keygen_binding(threshold, &committee),
            &nonce,
        );
        let started = Instant::now();
        let proposal = Proposal {
            eid,
            nonce,
            op: Operation::Keygen {
                key_id: key_id.clone(),
                threshold,
                committee: committee.clone(),
            },
        };
        let results = self.propose_all(&committee, proposal).await?;
        let mut first: Option<(Vec<u8>, [u8; 32], [u8; 32])> = None;
        for (n, o) in results {
            let Outcome::Keygen {
                public_key,
                chain_code,
                package_hash,
            } = o
            else {
                return Err(NodeError::Internal(format!(
                    "node {n} answered keygen with another outcome"
                )));
            };
            match &first {
                None => first = Some((public_key, chain_code, package_hash)),
                Some(f) if f.2 != package_hash || f.0 != public_key => {
                    return Err(NodeError::Internal(format!(
                        "node {n} reports a different public key package"
                    )));
                }
                Some(_) => {}
            }
        }
        let (public_key, chain_code, package_hash) =
            first.ok_or_else(|| NodeError::Internal("empty committee".into()))?;
        tracing::info!(key = %key_id, eid = %eid, ms = started.elapsed().as_millis() as u64, committee = %names(&committee), "keygen complete");
        match self.store.key(key_id)? {
            Some(rec) => Ok(rec),
            None => Ok(KeyRecord {
                schema: crate::storage::records_schema(),
                key_id: key_id.clone(),
                public_key,
                chain_code,
                committee: committee.iter().map(|c| c.as_str().to_owned()).collect(),
                threshold: threshold as u8,
                epoch: 0,
                state: KeyState::Active,
                package_hash,
                package: String::new(),
                rotation: None,
                created_unix: super::now_unix(),
            }),
        }
    }

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
        let checked = (|| {
            request
                .check_fields(super::now_unix())
                .map_err(NodeError::InvalidArgument)?;
            let signer = self
                .verifier
                .verify(&auth, &request.canonical_bytes())
                .map_err(|e| NodeError::PermissionDenied(format!("sign request refused: {e}")))?;
            if signer != *client {
                return Err(NodeError::PermissionDenied(format!(
                    "the request is signed by client {signer} but was sent by client {client}"
                )));
            }
            self.authorize_sign(client, &request, false)
        })();
        if let Err(e) = checked {
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
        let key_id = &request.key_id;
        let rid = request.request_id.as_str();
        // The request id is the idempotency key: a repeat gets the signature
        // recorded for it, with no new session; the same id for another
        // digest, path or slot is refused. This node's ledger first; the
        // other committee nodes' answers come with the status probe below.
        if let Some(entry) = self.store.ledger_get(key_id, rid)? {
            if let Some(done) = self.recorded(&request, &entry, None)? {
                return Ok(done);
            }
        }
        self.check_not_paused(key_id)?;
        let rec = self.key(key_id)?;
        match &rec.state {
            KeyState::Active => {}
            KeyState::Frozen(why) => {
                return Err(NodeError::FailedPrecondition(format!(
                    "key {key_id} is frozen: {why}"
                )))
            }
            KeyState::Retired => {
                return Err(NodeError::FailedPrecondition(format!(
                    "key {key_id} is retired on node {}: this node left the key's committee; \
                     send the request to a node of the current committee",
                    self.name
                )))
            }
            other => {
                return Err(NodeError::FailedPrecondition(format!(
                    "key {key_id} is {} on node {}; it cannot sign here yet",
                    other.label(),
                    self.name
                )))
            }
        }
        let committee = committee_of(&rec)?;
        // Ourselves first, then the others in committee order.
        let mut candidates: Vec<NodeName> = committee
            .iter()
            .filter(|c| **c == self.name)
            .cloned()
            .collect();
        candidates.extend(committee.iter().filter(|c| **c != self.name).cloned());
        let t = rec.threshold as usize;
        // A request that runs a session counts against this node's limits,
        // once, whichever path below signs it; one answered from a ledger
        // does not.
        let charged = std::sync::atomic::AtomicBool::new(false);
        let charge = || -> Result<(), NodeError> {
            if charged.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
            self.charge_rate(client, &request).inspect_err(|e| {
                let _ = self.audit(crate::storage::AuditEvent {
                    kind: "sign.request".into(),
                    actor: format!("client/{client}"),
                    key: key_id.to_string(),
                    request_id: request.request_id.clone(),
                    decision: "denied".into(),
                    rule: "rate limit".into(),
                    detail: e.to_string(),
                    ..Default::default()
                });
            })
        };
        // Overlapped path: when no candidate is under suspicion, propose the
        // session to the first t at once and run the committee checks
        // alongside; this node joins the session once they passed.
        let suspects = self.suspects();
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
                    tracing::info!(key = %key_id, request_id = %request.request_id, reason = %why, "checking the committee first and signing again");
                }
            }
        }
        // Checked path: probe the committee, then sign with t that answered.
        // Our own ledger first: an attempt above may have finished here.
        if let Some(entry) = self.store.ledger_get(key_id, rid)? {
            if let Some(done) = self.recorded(&request, &entry, None)? {
                return Ok(done);
            }
        }
        let (down, ledgers) = self
            .probe(&rec, &candidates, true, Some(request.request_id.as_str()))
            .await;
        self.note_reachability(&candidates, &down);
        let mut recorded = None;
        for (n, entry) in &ledgers {
            if let Some(done) = self.recorded(&request, entry, Some((n, &rec)))? {
                recorded = Some(done);
            }
        }
        if let Some(done) = recorded {
            tracing::info!(key = %key_id, request_id = %request.request_id, "request already signed; returning the recorded signature");
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
                "key {key_id} needs {t} live committee nodes at epoch {}, {} answered; not available: {list}; retry when they are back",
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
            self.gossip_watermark(&request, &auth, &others).await?;
        }
        self.run_sign(&request, &auth, &rec, &participants, None)
            .await
    }

    /// Signs with `participants` while the checks the checked path makes
    /// first run alongside: the status probe of every committee node (each
    /// participant must answer at the key's epoch; any node's ledger may
    /// already hold this request) and, for a slot, the watermark gossip.
    /// This node admits the session (claims the eid, writes its ledger
    /// entry and watermark) and sends its first message only once they
    /// passed, and no signature can be assembled without it. The other
    /// participants start meanwhile, so the probe's round trip overlaps
    /// theirs instead of preceding the session.
    #[allow(clippy::too_many_arguments)]
    async fn sign_overlapped(
        &self,
        request: &SignRequest,
        auth: &ClientAuth,
        rec: &KeyRecord,
        committee: &[NodeName],
        candidates: &[NodeName],
        participants: &[NodeName],
        charge: &(dyn Fn() -> Result<(), NodeError> + Sync),
    ) -> Attempt {
        let (gate, gate_rx) = tokio::sync::oneshot::channel();
        let others: Vec<NodeName> = committee
            .iter()
            .filter(|n| !participants.contains(n))
            .cloned()
            .collect();
        let checks = async {
            let probe = self.probe(rec, candidates, true, Some(request.request_id.as_str()));
            let gossip = async {
                if request.slot.is_some() {
                    self.gossip_watermark(request, auth, &others).await
                } else {
                    Ok(())
                }
            };
            let ((down, ledgers), gossiped) = tokio::join!(probe, gossip);
            self.note_reachability(candidates, &down);
            let verdict = (|| {
                for (n, entry) in &ledgers {
                    match self.recorded(request, entry, Some((n, rec))) {
                        Ok(Some(done)) => return Err(Attempt::Done(Box::new(done))),
                        Ok(None) => {}
                        Err(e) => return Err(Attempt::Failed(e)),
                    }
                }
                gossiped.map_err(Attempt::Failed)?;
                if let Some((n, why)) = down.iter().find(|(d, _)| participants.contains(d)) {
                    return Err(Attempt::GaveWay(format!("node {n}: {why}")));
                }
                charge().map_err(Attempt::Failed)
            })();
            let _ = gate.send(verdict.is_ok());
            verdict
        };
        let (signed, verdict) = tokio::join!(
            self.run_sign(request, auth, rec, participants, Some(gate_rx)),
            checks
        );
        match (verdict, signed) {
            // The checks stopped our session before this node joined it.
            (Err(attempt), _) => attempt,
            (Ok(()), Ok(outcome)) => Attempt::Done(Box::new(outcome)),
            (Ok(()), Err(e)) => match e {
                NodeError::Net(_) | NodeError::Timeout { .. } | NodeError::Unavailable(_) => {
                    Attempt::GaveWay(e.to_string())
                }
                // A participant behind on the key's epoch (the checked path
                // brings it up to date), one that holds this request signed
                // (the checked path returns that signature), or a refusal
                // that the checked path meets again.
                NodeError::FailedPrecondition(_) | NodeError::AlreadyExists(_) => {
                    Attempt::GaveWay(e.to_string())
                }
                e => Attempt::Failed(e),
            },
        }
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
        gate: Option<tokio::sync::oneshot::Receiver<bool>>,
    ) -> Result<SignOutcome, NodeError> {
        let key_id = &request.key_id;
        let request_id = request.request_id.clone();
        let nonce = nonce()?;
        let eid = ExecutionId::derive(
            "sign",
            key_id,
            rec.epoch,
            participants,
            &sign_binding(request),
            &nonce,
        );
        let proposal = Proposal {
            eid,
            nonce,
            op: Operation::Sign {
                epoch: rec.epoch,
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

    /// Nodes that failed a status probe in the last `SUSPECT_FOR`: the
    /// overlapped path does not propose to them, so a node that is down
    /// costs one probe timeout per request, as in the checked path, and not
    /// a round timeout.
    fn suspects(&self) -> Vec<NodeName> {
        let now = Instant::now();
        let mut s = self
            .suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.retain(|_, since| now.duration_since(*since) < SUSPECT_FOR);
        s.keys().cloned().collect()
    }

    fn note_reachability(&self, probed: &[NodeName], down: &[(NodeName, String)]) {
        let mut s = self
            .suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for n in probed {
            match down.iter().any(|(d, _)| d == n) {
                true => s.insert(n.clone(), Instant::now()),
                false => s.remove(n),
            };
        }
    }
}

/// How a signing attempt on the overlapped path ended.
enum Attempt {
    Done(Box<SignOutcome>),
    Failed(NodeError),
    /// Nothing was signed; the checked path should run.
    GaveWay(String),
}

/// How long a node that failed a probe is avoided by the overlapped path.
const SUSPECT_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Gates of signing sessions this node coordinates on the overlapped path:
/// our own participant side takes the gate of its eid and waits on it
/// before it admits the session.
#[derive(Default)]
pub(super) struct Gates(
    std::sync::Mutex<std::collections::HashMap<ExecutionId, tokio::sync::oneshot::Receiver<bool>>>,
);

/// Removes a gate nobody took when the session ends.
pub(super) struct HeldGate<'a> {
    gates: &'a Gates,
    eid: ExecutionId,
}

impl Drop for HeldGate<'_> {
    fn drop(&mut self) {
        self.gates.lock().remove(&self.eid);
    }
}

impl Gates {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<ExecutionId, tokio::sync::oneshot::Receiver<bool>>,
    > {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(&self, eid: ExecutionId, gate: tokio::sync::oneshot::Receiver<bool>) -> HeldGate<'_> {
        self.lock().insert(eid, gate);
        HeldGate { gates: self, eid }
    }

    /// The gate of `eid`, as a future that fails unless the checks passed.
    pub(super) fn take(
        &self,
        eid: &ExecutionId,
    ) -> Option<futures::future::BoxFuture<'static, Result<(), NodeError>>> {
        let gate = self.lock().remove(eid)?;
        Some(Box::pin(async move {
            match gate.await {
                Ok(true) => Ok(()),
                _ => Err(NodeError::FailedPrecondition(
                    "the coordinator's committee checks stopped this signature before it was admitted"
                        .into(),
                )),
            }
        }))
    }
}
