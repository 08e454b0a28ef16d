//! The coordinator role: the node that receives a client or admin request
//! picks the participants, proposes, and checks that every participant
//! reached the same result. It is one participant among others and gets no
//! trust for it.

use std::time::Instant;

use super::committee_of;
use super::participant::{keygen_binding, sign_binding};
use super::{names, Node, NodeError, Operation, Outcome, Proposal};
use crate::domain::{DerivationPath, Digest32, ExecutionId, KeyId, NodeName, Threshold};
use crate::protocol::sign::Signature;
use crate::storage::{KeyRecord, KeyState};

/// A finished signing request.
#[derive(Debug, Clone)]
pub struct SignOutcome {
    pub signature: Signature,
    pub participants: Vec<NodeName>,
    pub request_id: String,
    pub epoch: u64,
}

fn nonce() -> Result<Vec<u8>, NodeError> {
    let mut n = vec![0u8; 32];
    getrandom::fill(&mut n).map_err(|e| NodeError::Internal(format!("rng: {e}")))?;
    Ok(n)
}

impl Node {
    /// Probes `nodes` concurrently; returns those that did not answer, with why.
    async fn unreachable(&self, nodes: &[NodeName]) -> Vec<(NodeName, String)> {
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
    /// outcomes. The first failure ends the wait: the other calls are dropped
    /// (cancelled) and that failure is returned, so a refusal reaches the
    /// client at once instead of after a round timeout.
    async fn propose_all(
        &self,
        parties: &[NodeName],
        proposal: Proposal,
    ) -> Result<Vec<(NodeName, Outcome)>, NodeError> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let session_limit = self.timeouts.session();
        let mut calls: FuturesUnordered<_> = parties
            .iter()
            .map(|n| {
                let (n, p) = (n.clone(), proposal.clone());
                async move {
                    let r = if n == self.name {
                        match tokio::time::timeout(session_limit, self.on_propose(&self.name, p))
                            .await
                        {
                            Ok(r) => r,
                            Err(_) => Err(NodeError::Internal(format!(
                                "own session exceeded {session_limit:?}"
                            ))),
                        }
                    } else {
                        self.net.propose(&n, p).await
                    };
                    (n, r)
                }
            })
            .collect();
        let mut ok = Vec::with_capacity(parties.len());
        while let Some((n, r)) = calls.next().await {
            match r {
                Ok(o) => ok.push((n, o)),
                Err(e) => {
                    tracing::warn!(node = %n, error = %e, eid = %proposal.eid, "participant failed; abandoning the session");
                    return Err(e);
                }
            }
        }
        Ok(ok)
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
            let list = down
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect::<Vec<_>>()
                .join(", ");
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

    /// Signs `digest` with `key_id` (at `path`) using t live committee nodes.
    pub async fn sign(
        &self,
        key_id: &KeyId,
        digest: Digest32,
        path: DerivationPath,
        request_id: Option<String>,
    ) -> Result<SignOutcome, NodeError> {
        self.check_not_paused(key_id)?;
        let rec = self.key(key_id)?;
        if let KeyState::Frozen(why) = &rec.state {
            return Err(NodeError::FailedPrecondition(format!(
                "key {key_id} is frozen: {why}"
            )));
        }
        let committee = committee_of(&rec)?;
        // Ourselves first, then the others in committee order, skipping nodes that do not answer.
        let mut candidates: Vec<NodeName> = committee
            .iter()
            .filter(|c| **c == self.name)
            .cloned()
            .collect();
        candidates.extend(committee.iter().filter(|c| **c != self.name).cloned());
        let down = self.not_ready(&rec, &candidates, true).await;
        let live: Vec<NodeName> = candidates
            .into_iter()
            .filter(|c| !down.iter().any(|(d, _)| d == c))
            .collect();
        let t = rec.threshold as usize;
        if live.len() < t {
            let list = down
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(NodeError::Unavailable(format!(
                "key {key_id} needs {t} live committee nodes at epoch {}, {} answered; not available: {list}; retry when they are back",
                rec.epoch,
                live.len()
            )));
        }
        let participants: Vec<NodeName> = live.into_iter().take(t).collect();
        let request_id = match request_id {
            Some(r) if !r.is_empty() => r,
            _ => hex::encode(&nonce()?[..16]),
        };
        let nonce = nonce()?;
        let eid = ExecutionId::derive(
            "sign",
            key_id,
            rec.epoch,
            &participants,
            &sign_binding(&digest, &path, &request_id),
            &nonce,
        );
        let proposal = Proposal {
            eid,
            nonce,
            op: Operation::Sign {
                key_id: key_id.clone(),
                epoch: rec.epoch,
                digest,
                path,
                request_id: request_id.clone(),
                participants: participants.clone(),
            },
        };
        let results = self.propose_all(&participants, proposal).await?;
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
        crate::protocol::sign::verify(&signature, &digest).map_err(|e| NodeError::Protocol {
            blamed: None,
            error: e,
        })?;
        Ok(SignOutcome {
            signature,
            participants,
            request_id,
            epoch: rec.epoch,
        })
    }
}

impl Node {
    /// After a failed refresh: "activating" the epoch that is already active
    /// changes nothing and lifts the signing pause on every node that can be
    /// reached (best effort; a pause also expires by itself).
    async fn release(
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
                if let Err(e) = r {
                    tracing::warn!(node = %n, key = %key_id, error = %e, "could not release the abandoned rotation");
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
    async fn not_ready(
        &self,
        rec: &KeyRecord,
        nodes: &[NodeName],
        to_sign: bool,
    ) -> Vec<(NodeName, String)> {
        let key_id = &rec.key_id;
        let probes = nodes.iter().filter(|n| **n != self.name).map(|n| {
            let status = Proposal { eid: ExecutionId::derive("status", key_id, rec.epoch, &[], &[], &[]), nonce: Vec::new(), op: Operation::ShareStatus { key_id: key_id.clone() } };
            let call = self.net.propose(n, status);
            let timeout = self.timeouts.ping;
            let n = n.clone();
            async move {
                let epoch = match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(Outcome::ShareStatus { signing: false, epoch: Some(_) })) if to_sign => {
                        return Some((n, "its repaired share awaits a refresh".to_owned()))
                    }
                    Ok(Ok(Outcome::ShareStatus { epoch, .. })) => epoch,
                    Ok(Ok(_)) => return Some((n, "answered the status query with another outcome".to_owned())),
                    Ok(Err(e)) => return Some((n, e.to_string())),
                    Err(_) => return Some((n, format!("no answer within {timeout:?}"))),
                };
                match (epoch, rec.rotation) {
                    (Some(e), _) if e == rec.epoch => None,
                    (Some(e), Some(proof)) if e + 1 == rec.epoch => {
                        let Some(eid) = ExecutionId::from_slice(&proof.eid) else {
                            return Some((n, "bad rotation proof".to_owned()));
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
                }
            }
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
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
            let list = down
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect::<Vec<_>>()
                .join(", ");
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
        let calls = committee.iter().map(|n| {
            let (n, p) = (n.clone(), activate.clone());
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
        let failed: Vec<(NodeName, String)> = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|(n, e)| e.map(|e| (n, e)))
            .collect();
        if !failed.is_empty() {
            let list = failed
                .iter()
                .map(|(n, e)| format!("{n} ({e})"))
                .collect::<Vec<_>>()
                .join(", ");
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
    pub async fn repair(
        &self,
        key_id: &KeyId,
        target: &NodeName,
    ) -> Result<RepairSummary, NodeError> {
        let rec = self.key(key_id)?;
        if *target == self.name {
            return Err(NodeError::InvalidArgument(format!(
                "node {target} cannot coordinate its own repair; send the request to another committee node"
            )));
        }
        if rec.state != KeyState::Active {
            return Err(NodeError::FailedPrecondition(format!(
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
            eid: ExecutionId::derive(
                "share-status",
                key_id,
                rec.epoch,
                std::slice::from_ref(target),
                &[],
                &nonce()?,
            ),
            nonce: Vec::new(),
            op: Operation::ShareStatus {
                key_id: key_id.clone(),
            },
        };
        if let Outcome::ShareStatus {
            epoch: Some(e),
            signing: true,
        } = self.net.propose(target, status).await?
        {
            return Err(NodeError::FailedPrecondition(format!(
                "node {target} still holds a live share of key {key_id} (epoch {e}); repair refused"
            )));
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
        let nonce = nonce()?;
        let eid = ExecutionId::derive(
            "repair",
            key_id,
            rec.epoch,
            &members,
            &super::participant::repair_binding(target, &rec),
            &nonce,
        );
        tracing::info!(key = %key_id, %target, helpers = %names(&helpers), eid = %eid, "repair: rebuilding share");
        let proposal = Proposal {
            eid,
            nonce,
            op: Operation::Repair {
                key_id: key_id.clone(),
                target: target.clone(),
                helpers: helpers.clone(),
                record: Box::new(rec),
            },
        };
        self.propose_all(&members, proposal).await?;
        tracing::info!(key = %key_id, %target, "repair: share rebuilt; running a complete refresh");
        let rotation = self.rotate(key_id).await?;
        Ok(RepairSummary {
            target: target.clone(),
            helpers,
            rotation,
        })
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
