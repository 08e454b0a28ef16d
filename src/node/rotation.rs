//! Share rotation (proactive refresh with epochs): the coordinator side
//! (check every node is on the key's epoch, refresh, activate with proof,
//! release an abandoned rotation) and the participant side (stage the
//! refreshed share, activate only with the rotation's proof). Signing pauses
//! while a rotation holds the key.

use std::time::Instant;

use super::committee_of;
use super::coordinator::nonce;
use super::participant::keygen_binding;
use super::reasons;
use super::session::Session;
use super::{names, Node, NodeError, Operation, Outcome, Proposal};
use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::protocol::refresh::Refresh;
use crate::storage::{KeyRecord, KeyState, LedgerEntry, RotationProof};

impl Node {
    /// After a failed refresh: "activating" the epoch that is already active
    /// changes nothing and lifts the signing pause on every node that can be
    /// reached (best effort; a pause also expires by itself).
    pub(super) async fn release(
        &self,
        key_id: &KeyId,
        eid: ExecutionId,
        active_epoch: u64,
        committee: &[NodeName],
    ) {
        let p = Proposal {
            eid,
            nonce: Vec::new(),
            op: Operation::Activate {
                key_id: key_id.clone(),
                epoch: active_epoch,
                confirmation: [0; 32],
            },
        };
        let calls = committee.iter().map(|n| {
            let p = p.clone();
            async move {
                let r = if *n == self.name { self.on_propose(&self.name, p).await } else { self.net.propose(n, p).await };
                match r {
                    Ok(_) => {}
                    // A node new to the key (reshare) has nothing to release.
                    Err(NodeError::NotFound(_)) => {}
                    Err(e) => tracing::warn!(node = %n, key = %key_id, error = %e, "could not release the abandoned rotation"),
                }
            }
        });
        let _ = tokio::time::timeout(self.timeouts.round, futures::future::join_all(calls)).await;
    }

    /// Asks `nodes` (other than this one) which epoch of `rec`'s key they
    /// hold. A node one epoch behind is sent the activation of the last
    /// rotation, with its proof (it missed it, e.g. it was down). Returns the
    /// nodes that are not at `rec.epoch` afterwards, with the reason.
    /// With `to_sign`, a node must also be allowed to sign (not awaiting a
    /// post-repair refresh).
    pub(super) async fn not_ready(
        &self,
        rec: &KeyRecord,
        nodes: &[NodeName],
        to_sign: bool,
    ) -> Vec<(NodeName, String)> {
        self.probe(rec, nodes, to_sign, None).await.0
    }

    /// `not_ready`, and with `request_id` also what each node that answered
    /// recorded in its ledger for that request (in the same round trip).
    pub(super) async fn probe(
        &self,
        rec: &KeyRecord,
        nodes: &[NodeName],
        to_sign: bool,
        request_id: Option<&str>,
    ) -> (Vec<(NodeName, String)>, Vec<(NodeName, LedgerEntry)>) {
        let key_id = &rec.key_id;
        let probes = nodes.iter().filter(|n| **n != self.name).map(|n| {
            let status = Proposal {
                eid: ExecutionId::derive("status", key_id, rec.epoch, &[], &[], &[]),
                nonce: Vec::new(),
                op: Operation::ShareStatus {
                    key_id: key_id.clone(),
                    request_id: request_id.map(str::to_owned),
                },
            };
            let call = self.net.propose(n, status);
            let timeout = self.timeouts.ping;
            let n = n.clone();
            async move {
                let (epoch, signing, ledger) = match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(Outcome::ShareStatus { epoch, signing, ledger, .. })) => (epoch, signing, ledger),
                    Ok(Ok(_)) => return (Some((n, "answered the status query with another outcome".to_owned())), None),
                    Ok(Err(e)) => return (Some((n, e.to_string())), None),
                    Err(_) => return (Some((n, format!("no answer within {timeout:?}"))), None),
                };
                let ledger = ledger.map(|l| (n.clone(), *l));
                let down = match (epoch, rec.rotation) {
                    (Some(e), _) if e == rec.epoch && to_sign && !signing => {
                        Some((n, "its share cannot sign yet (repaired or joining; awaits activation)".to_owned()))
                    }
                    (Some(e), _) if e == rec.epoch => None,
                    (Some(e), Some(proof)) if e + 1 == rec.epoch => {
                        let Some(eid) = ExecutionId::from_slice(&proof.eid) else {
                            return (Some((n, "bad rotation proof".to_owned())), ledger);
                        };
                        let activate = Proposal {
                            eid,
                            nonce: Vec::new(),
                            op: Operation::Activate { key_id: key_id.clone(), epoch: rec.epoch, confirmation: proof.confirmation },
                        };
                        match self.net.propose(&n, activate).await {
                            Ok(_) => {
                                tracing::warn!(node = %n, key = %key_id, epoch = rec.epoch, "node had missed an activation; activated it");
                                None
                            }
                            Err(err) => Some((n, format!("at epoch {e} and could not catch up: {err}"))),
                        }
                    }
                    (Some(e), _) => Some((n, format!("holds epoch {e}, not {}", rec.epoch))),
                    (None, _) => Some((n, "holds no share of this key".to_owned())),
                };
                (down, ledger)
            }
        });
        let mut down = Vec::new();
        let mut ledgers = Vec::new();
        for (d, l) in futures::future::join_all(probes).await {
            down.extend(d);
            ledgers.extend(l);
        }
        (down, ledgers)
    }
}

impl Node {
    /// Sends `p` to each of `nodes` (ourselves directly), retrying each up to
    /// three times; returns the nodes that never accepted it, with the last
    /// error. For steps that must reach every node once decided (activation,
    /// retirement) and are idempotent.
    pub(super) async fn call_with_retries(
        &self,
        nodes: &[NodeName],
        p: &Proposal,
    ) -> Vec<(NodeName, String)> {
        let calls = nodes.iter().map(|n| {
            let (n, p) = (n.clone(), p.clone());
            async move {
                let mut last = None;
                for attempt in 0..3u32 {
                    let r = if n == self.name {
                        self.on_propose(&self.name, p.clone()).await
                    } else {
                        self.net.propose(&n, p.clone()).await
                    };
                    match r {
                        Ok(_) => return (n, None),
                        Err(e) => last = Some(e.to_string()),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(
                        200 * u64::from(attempt + 1),
                    ))
                    .await;
                }
                (n, last)
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|(n, e)| e.map(|e| (n, e)))
            .collect()
    }
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
    /// Proactive refresh of every share of `key_id` across its whole committee,
    /// then activation of the new epoch on every node. Signing with the key is
    /// paused (UNAVAILABLE) on the committee for the duration.
    pub async fn rotate(&self, key_id: &KeyId) -> Result<RotateSummary, NodeError> {
        let started = Instant::now();
        let rec = self.key(key_id)?;
        if rec.state != KeyState::Active {
            return Err(NodeError::FailedPrecondition(format!(
                "key {key_id} is {}",
                rec.state.label()
            )));
        }
        let committee = committee_of(&rec)?;
        let down = self.not_ready(&rec, &committee, false).await;
        if !down.is_empty() {
            let list = reasons(&down);
            return Err(NodeError::Unavailable(format!(
                "rotation needs every committee node at epoch {}; not available: {list}; retry when they are back",
                rec.epoch
            )));
        }
        let old_epoch = rec.epoch;
        let new_epoch = old_epoch + 1;
        let nonce = nonce()?;
        let eid = ExecutionId::derive(
            "refresh",
            key_id,
            old_epoch,
            &committee,
            &keygen_binding(rec.threshold.into(), &committee),
            &nonce,
        );
        tracing::info!(key = %key_id, old_epoch, new_epoch, committee = %names(&committee), eid = %eid, "rotation: refreshing shares");
        let proposal = Proposal {
            eid,
            nonce,
            op: Operation::Refresh {
                key_id: key_id.clone(),
                epoch: old_epoch,
                committee: committee.clone(),
            },
        };
        let refreshed = match self.propose_all(&committee, proposal).await {
            Ok(r) => r,
            Err(e) => {
                self.release(key_id, eid, old_epoch, &committee).await;
                return Err(e);
            }
        };
        let mut confirmation: Option<[u8; 32]> = None;
        for (n, o) in refreshed {
            let Outcome::Refresh { confirmation: c } = o else {
                self.release(key_id, eid, old_epoch, &committee).await;
                return Err(NodeError::Internal(format!(
                    "node {n} answered a refresh with another outcome"
                )));
            };
            if confirmation.is_some_and(|x| x != c) {
                self.release(key_id, eid, old_epoch, &committee).await;
                return Err(NodeError::Aborted(format!("node {n} confirmed a different refresh; epoch {new_epoch} is not activated anywhere")));
            }
            confirmation = Some(c);
        }
        let confirmation =
            confirmation.ok_or_else(|| NodeError::Internal("empty committee".into()))?;

        tracing::info!(key = %key_id, new_epoch, "rotation: every node confirmed; activating");
        let activate = Proposal {
            eid,
            nonce: Vec::new(),
            op: Operation::Activate {
                key_id: key_id.clone(),
                epoch: new_epoch,
                confirmation,
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
}

impl Node {
    pub(super) async fn participate_refresh(
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
            let out = session.run(proto, &mut mailbox).await?;
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
    pub(super) fn participate_activate(
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
        let rec = match self.key(key_id) {
            Ok(rec) => rec,
            Err(e) => {
                self.resume(key_id, eid);
                return Err(e);
            }
        };
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
}

/// The group key recorded in a record's public key package (compressed).
fn package_key(rec: &KeyRecord) -> Option<Vec<u8>> {
    let bytes = hex::decode(&rec.package).ok()?;
    let pkg: dkls23::secp256k1::PublicKeyPackage = crate::codec::decode(&bytes).ok()?;
    crate::protocol::compress(pkg.verifying_key())
        .ok()
        .map(|k| k.to_vec())
}
