//! What this node knows and asks about a key's committee: liveness probes
//! and the nodes recently found down (suspects), each member's epoch and the
//! catch-up of a member that missed an activation, this node's own share
//! status and membership checks (the signing pause is in `pause.rs`).
//! No operation logic here; the operations in `ops/` call these.

use std::time::{Duration, Instant};

use super::ops::OpKind;
use super::{Node, NodeError, Operation, Outcome, Proposal};
use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::protocol::PartyIdx;
use crate::storage::{KeyRecord, KeyState, LedgerEntry};

/// How long a node that failed a probe is avoided by the overlapped signing path.
const SUSPECT_FOR: Duration = Duration::from_secs(30);
/// A node that failed a probe this recently is not probed again: a node
/// that is stopped or blackholed costs one probe timeout per this interval,
/// not one per request, and is seen again within it once it is back.
const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// The epoch after `rec`'s (refused at the end of the range, never wrapped).
pub(crate) fn next_epoch(rec: &KeyRecord) -> Result<u64, NodeError> {
    rec.epoch.checked_add(1).ok_or_else(|| {
        NodeError::FailedPrecondition(format!(
            "key {} has no epoch after {}",
            rec.key_id, rec.epoch
        ))
    })
}

/// The execution id a status query travels under (no session runs under it).
pub fn status_eid(key_id: &KeyId, epoch: u64) -> ExecutionId {
    OpKind::Status.eid(key_id, epoch, &[], &[], &[])
}

/// "a (why), b (why)" for nodes that could not take part.
pub(crate) fn reasons(down: &[(NodeName, String)]) -> String {
    down.iter()
        .map(|(n, why)| format!("{n} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Node {
    /// Refuses unless this node may sign with `rec`'s key (it is active here).
    pub(crate) fn check_can_sign(&self, rec: &KeyRecord) -> Result<(), NodeError> {
        let key_id = &rec.key_id;
        match &rec.state {
            KeyState::Active => Ok(()),
            KeyState::Frozen(why) => Err(NodeError::KeyNotActive(format!(
                "key {key_id} is frozen: {why}"
            ))),
            KeyState::Deleted(why) => Err(NodeError::KeyNotActive(format!(
                "key {key_id} is deleted: {why}"
            ))),
            KeyState::Retired => Err(NodeError::NotInCommittee(format!(
                "key {key_id} is retired here: this node left the key's committee; \
                 send the request to a node of the current committee"
            ))),
            other => Err(NodeError::KeyNotActive(format!(
                "key {key_id} is {} here; it cannot sign yet",
                other.label()
            ))),
        }
    }

    /// Probes `nodes` concurrently; returns those that did not answer, with why.
    pub(crate) async fn unreachable(&self, nodes: &[NodeName]) -> Vec<(NodeName, String)> {
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

    /// Nodes that failed a status probe in the last `SUSPECT_FOR`: the
    /// overlapped path does not propose to them, so a node that is down
    /// costs one probe timeout per request, as in the checked path, and not
    /// a round timeout.
    pub(crate) fn suspects(&self) -> Vec<NodeName> {
        let now = Instant::now();
        let mut s = self
            .suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.retain(|_, (since, _)| now.duration_since(*since) < SUSPECT_FOR);
        s.keys().cloned().collect()
    }

    /// Nodes that failed a probe within `RECHECK_AFTER`: not worth probing
    /// again yet.
    pub(crate) fn recently_down(&self) -> Vec<NodeName> {
        let now = Instant::now();
        self.suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, (since, unreachable))| {
                *unreachable && now.duration_since(*since) < RECHECK_AFTER
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Records the probe of `probed`: those in `down` become suspects (the
    /// overlapped path avoids them), the others are cleared. A node the
    /// probe could not reach was marked unreachable by the probe itself
    /// (`mark_unreachable`) and keeps that mark.
    pub(crate) fn note_reachability(&self, probed: &[NodeName], down: &[(NodeName, String)]) {
        let mut s = self
            .suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        for n in probed {
            if down.iter().any(|(d, _)| d == n) {
                let unreachable = s
                    .get(n)
                    .is_some_and(|(since, u)| *u && now.duration_since(*since) < RECHECK_AFTER);
                if !unreachable {
                    s.insert(n.clone(), (now, false));
                }
            } else {
                s.remove(n);
            }
        }
    }

    /// Marks `n` as unreachable now.
    pub(crate) fn mark_unreachable(&self, n: &NodeName) {
        self.suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(n.clone(), (Instant::now(), true));
    }

    /// Asks `nodes` (other than this one) which epoch of `rec`'s key they
    /// hold. A node one epoch behind is sent the activation of the last
    /// rotation, with its proof (it missed it, e.g. it was down). Returns the
    /// nodes that are not at `rec.epoch` afterwards, with the reason.
    /// With `to_sign`, a node must also be allowed to sign (not awaiting a
    /// post-repair refresh).
    pub(crate) async fn not_ready(
        &self,
        rec: &KeyRecord,
        nodes: &[NodeName],
        to_sign: bool,
    ) -> Vec<(NodeName, String)> {
        self.probe(rec, nodes, to_sign, None).await.0
    }

    /// `not_ready`, and with `request_id` also what each node that answered
    /// recorded in its ledger for that request (in the same round trip).
    pub(crate) async fn probe(
        &self,
        rec: &KeyRecord,
        nodes: &[NodeName],
        to_sign: bool,
        request_id: Option<&str>,
    ) -> (Vec<(NodeName, String)>, Vec<(NodeName, LedgerEntry)>) {
        let probes = nodes
            .iter()
            .filter(|n| **n != self.name)
            .map(|n| self.probe_one(rec, n, to_sign, request_id));
        let mut down = Vec::new();
        let mut ledgers = Vec::new();
        for (d, l) in futures::future::join_all(probes).await {
            down.extend(d);
            ledgers.extend(l);
        }
        (down, ledgers)
    }

    /// One node's answer to `probe`: why it is not ready (if it is not), and
    /// its ledger entry for `request_id`.
    async fn probe_one(
        &self,
        rec: &KeyRecord,
        n: &NodeName,
        to_sign: bool,
        request_id: Option<&str>,
    ) -> (Option<(NodeName, String)>, Option<(NodeName, LedgerEntry)>) {
        let key_id = &rec.key_id;
        let status = Proposal {
            eid: status_eid(key_id, rec.epoch),
            nonce: Vec::new(),
            admin: None,
            op: Operation::ShareStatus {
                key_id: key_id.clone(),
                request_id: request_id.map(str::to_owned),
            },
        };
        let timeout = self.timeouts.ping;
        let down = |why: String| Some((n.clone(), why));
        let (epoch, signing, ledger, lifecycle) =
            match tokio::time::timeout(timeout, self.net.propose(n, status)).await {
                Ok(Ok(Outcome::ShareStatus {
                    epoch,
                    signing,
                    ledger,
                    lifecycle,
                    ..
                })) => (epoch, signing, ledger, lifecycle),
                Ok(Ok(_)) => {
                    let why = "answered the status query with another outcome";
                    return (down(why.to_owned()), None);
                }
                Ok(Err(e)) => {
                    // Unreachable, timed out or shutting down: not worth
                    // asking again for a moment. (A refusal for another
                    // reason comes from a node that is there.)
                    if matches!(
                        e.reason(),
                        crate::node::Reason::Unavailable | crate::node::Reason::Timeout
                    ) {
                        self.mark_unreachable(n);
                    }
                    return (down(e.to_string()), None);
                }
                Err(_) => {
                    self.mark_unreachable(n);
                    return (down(format!("no answer within {timeout:?}")), None);
                }
            };
        let ledger = ledger.map(|l| (n.clone(), *l));
        // A freeze or delete the peer applied and this node missed: checked
        // here as if its coordinator had sent it.
        // Only from a peer that cannot sign with the key itself (a freeze
        // that a later activation ended does not count).
        // A freeze counts only from a peer at this node's epoch (one left on
        // an older epoch may hold a freeze a recovery reshare ended); a
        // delete from a peer that no longer holds a share.
        let lifecycle =
            lifecycle.filter(|_| !signing && (epoch.is_none() || epoch == Some(rec.epoch)));
        if let Some(done) = lifecycle.and_then(|p| self.catch_up_lifecycle(n, *p)) {
            return (down(format!("the key changed there: {done}")), ledger);
        }
        // The epoch is the peer's word: compared with checked arithmetic.
        let verdict = match (epoch, rec.rotation) {
            // A generated key the peer has not activated: at epoch 0 the
            // proof is the keygen's, which this node's active record holds.
            (Some(0), Some(proof))
                if rec.epoch == 0 && !signing && rec.state == KeyState::Active =>
            {
                let Some(eid) = ExecutionId::from_slice(&proof.eid) else {
                    return (down("bad keygen proof".to_owned()), ledger);
                };
                let activate = Proposal {
                    eid,
                    nonce: Vec::new(),
                    admin: None,
                    op: Operation::Activate {
                        key_id: key_id.clone(),
                        epoch: 0,
                        confirmation: proof.confirmation,
                    },
                };
                match self.net.propose(n, activate).await {
                    // Its share may still be unable to sign (a repaired one
                    // awaits its refresh): it counts from the next request.
                    Ok(_) if to_sign => down(
                        "its share could not sign; sent it the keygen activation it may have missed"
                            .to_owned(),
                    ),
                    Ok(_) => None,
                    Err(err) => down(format!(
                        "its share cannot sign yet and could not catch up: {err}"
                    )),
                }
            }
            (Some(e), _) if e == rec.epoch && to_sign && !signing => down(
                "its share cannot sign yet (repaired or joining; awaits activation)".to_owned(),
            ),
            (Some(e), _) if e == rec.epoch => None,
            (Some(e), Some(proof)) if e.checked_add(1) == Some(rec.epoch) => {
                let Some(eid) = ExecutionId::from_slice(&proof.eid) else {
                    return (down("bad rotation proof".to_owned()), ledger);
                };
                let activate = Proposal {
                    eid,
                    nonce: Vec::new(),
                    admin: None,
                    op: Operation::Activate {
                        key_id: key_id.clone(),
                        epoch: rec.epoch,
                        confirmation: proof.confirmation,
                    },
                };
                match self.net.propose(n, activate).await {
                    Ok(_) => {
                        let epoch = rec.epoch;
                        tracing::warn!(
                            node = %n,
                            key = %key_id,
                            epoch,
                            "node had missed an activation; activated it",
                        );
                        None
                    }
                    Err(err) => down(format!("at epoch {e} and could not catch up: {err}")),
                }
            }
            (Some(e), _) => down(format!("holds epoch {e}, not {}", rec.epoch)),
            (None, _) => down("holds no share of this key".to_owned()),
        };
        (verdict, ledger)
    }

    /// Sends `p` to each of `nodes` (ourselves directly), retrying each up to
    /// three times; returns the nodes that never accepted it, with the last
    /// error. For steps that must reach every node once decided (activation,
    /// retirement) and are idempotent.
    pub(crate) async fn call_with_retries(
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
                        200u64.saturating_mul(u64::from(attempt).saturating_add(1)),
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

    /// This node's answer to a share status query (see `Outcome::ShareStatus`).
    pub fn share_status_outcome(&self, key_id: &KeyId) -> Outcome {
        let (epoch, signing) = self.share_status(key_id);
        let rec = self.store.key(key_id).ok().flatten();
        let joining = rec.as_ref().is_some_and(|r| {
            r.state == KeyState::Joining && self.store.pending(key_id).ok().flatten().is_some()
        });
        // Only a node that cannot sign hands out its last freeze or delete
        // (the receiver takes it from no other), so the signing path's status
        // queries do not read it.
        let lifecycle = rec
            .as_ref()
            .filter(|_| !signing)
            .and_then(|_| self.lifecycle_proposal(key_id))
            .map(Box::new);
        match rec {
            Some(r) if joining => Outcome::ShareStatus {
                epoch: Some(r.epoch),
                signing: false,
                rotation: None,
                ledger: None,
                lifecycle,
            },
            Some(r) if epoch.is_some() => Outcome::ShareStatus {
                epoch,
                signing,
                rotation: r.rotation.map(|p| p.eid),
                ledger: None,
                lifecycle,
            },
            _ => Outcome::ShareStatus {
                epoch: None,
                signing: false,
                rotation: None,
                ledger: None,
                lifecycle,
            },
        }
    }

    /// The epoch of a share this node can sign with, if any.
    pub fn live_share_epoch(&self, key_id: &KeyId) -> Option<u64> {
        match self.share_status(key_id) {
            (Some(e), true) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn check_members(&self, members: &[NodeName]) -> Result<PartyIdx, NodeError> {
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
            .and_then(crate::node::party_at)
            .ok_or_else(|| {
                NodeError::NotInCommittee("this node is not among the proposed parties".into())
            })
    }
}
