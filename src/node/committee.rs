//! What this node knows and asks about a key's committee: liveness probes
//! and the nodes recently found down (suspects), each member's epoch and the
//! catch-up of a member that missed an activation, this node's own share
//! status and membership checks (the probes are in `probe.rs`, the
//! maintenance lock in `pause.rs`).
//! No operation logic here; the operations in `ops/` call these.

use std::time::{Duration, Instant};

use super::activation::{Certificate, Statement};
use super::ops::OpKind;
use super::request::ClientAuth;
use super::{Maintenance, Node, NodeError, Operation, Outcome, Proposal, StagedEpoch};
use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::protocol::PartyIdx;
use crate::storage::{KeyRecord, KeyState};

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

/// A share status query about `key_id` (at `epoch`); with `request_id`,
/// the answer carries that request's ledger entry too.
pub(crate) fn status_query(key_id: &KeyId, epoch: u64, request_id: Option<String>) -> Proposal {
    Proposal {
        eid: status_eid(key_id, epoch),
        nonce: Vec::new(),
        admin: None,
        op: Operation::ShareStatus {
            key_id: key_id.clone(),
            request_id,
            watermarks: false,
            evidence: false,
        },
    }
}

/// A share status query about `key_id` (at `epoch`) whose answer carries
/// the evidence for activations: the active epoch's certificate and the
/// node's receipt for what it staged or generated.
pub(crate) fn evidence_query(key_id: &KeyId, epoch: u64) -> Proposal {
    let mut p = status_query(key_id, epoch, None);
    if let Operation::ShareStatus { evidence, .. } = &mut p.op {
        *evidence = true;
    }
    p
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

    /// Probes `nodes` concurrently; returns those that did not answer, with
    /// why. A node that misses the first probe is probed once more: the
    /// callers start key maintenance, which a node slow to connect on a busy
    /// host (its connection attempt goes on between the probes) should not
    /// fail, and one more probe timeout costs an admin command little.
    pub(crate) async fn unreachable(&self, nodes: &[NodeName]) -> Vec<(NodeName, String)> {
        let others: Vec<NodeName> = nodes.iter().filter(|n| **n != self.name).cloned().collect();
        let missed: Vec<NodeName> = self
            .probe_all(&others)
            .await
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if missed.is_empty() {
            return Vec::new();
        }
        self.probe_all(&missed).await
    }

    async fn probe_all(&self, nodes: &[NodeName]) -> Vec<(NodeName, String)> {
        let probes = nodes.iter().map(|n| {
            let call = self.net.ping(n);
            let timeout = self.timeouts.ping;
            let n = n.clone();
            async move {
                match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(_)) => None,
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

    /// Marks `nodes` as having failed a signing session of `key` now:
    /// signing with the key avoids them for `SUSPECT_FOR`.
    pub(crate) fn suspect_for_key(&self, key: &KeyId, nodes: &[NodeName]) {
        let mut s = self
            .key_suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        for n in nodes.iter().filter(|n| **n != self.name) {
            s.insert((key.clone(), n.clone()), now);
        }
    }

    /// Nodes that failed a signing session of `key` within `SUSPECT_FOR`,
    /// and those banned for it here.
    pub(crate) fn key_suspects(&self, key: &KeyId) -> Vec<NodeName> {
        let mut nodes = self.banned(key);
        nodes.extend(self.failed_recently(key));
        nodes
    }

    /// Forgets which nodes failed a signing session of `key` (an admin
    /// cleared its bans: every committee node may sign it again).
    pub(crate) fn forget_key_suspects(&self, key: &KeyId) {
        self.key_suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(k, _), _| k != key);
    }

    /// Forgets that `nodes` failed a signing session of `key` (they answer
    /// again); bans stay.
    pub(crate) fn forget_key_suspects_of(&self, key: &KeyId, nodes: &[NodeName]) {
        self.key_suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(k, n), _| k != key || !nodes.contains(n));
    }

    fn failed_recently(&self, key: &KeyId) -> Vec<NodeName> {
        let now = Instant::now();
        let mut s = self
            .key_suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.retain(|_, since| now.duration_since(*since) < SUSPECT_FOR);
        s.keys()
            .filter(|(k, _)| k == key)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Marks `n` as unreachable now.
    pub(crate) fn mark_unreachable(&self, n: &NodeName) {
        self.suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(n.clone(), (Instant::now(), true));
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

    /// Every committee node's answer to a status query about `rec`'s key
    /// (this node's own directly), each within the probe timeout, in
    /// committee order: the outcome, or why there was none.
    /// With `evidence`, the answers carry certificates and receipts.
    pub(crate) async fn committee_status(
        &self,
        rec: &KeyRecord,
        evidence: bool,
    ) -> Vec<(NodeName, Result<Outcome, String>)> {
        let committee = super::committee_of(rec).unwrap_or_default();
        let timeout = self.timeouts.ping;
        let asks = committee.into_iter().map(|n| async move {
            if n == self.name {
                return (n, Ok(self.share_status_outcome(&rec.key_id, evidence)));
            }
            let status = if evidence {
                evidence_query(&rec.key_id, rec.epoch)
            } else {
                status_query(&rec.key_id, rec.epoch, None)
            };
            let answer = match tokio::time::timeout(timeout, self.net.propose(&n, status)).await {
                Ok(Ok(o)) => Ok(o),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            (n, answer)
        });
        futures::future::join_all(asks).await
    }

    /// This node's answer to a share status query (see `Outcome::ShareStatus`);
    /// with `evidence`, also the active epoch's activation certificate and
    /// its receipt for what it staged or generated and did not activate.
    pub fn share_status_outcome(&self, key_id: &KeyId, evidence: bool) -> Outcome {
        let (epoch, signing) = self.share_status(key_id);
        let rec = self.store.key(key_id).ok().flatten();
        let joining = rec.as_ref().is_some_and(|r| {
            r.state == KeyState::Joining && self.store.pending(key_id).ok().flatten().is_some()
        });
        // The last freeze, unfreeze or delete applied here, for a member
        // that missed it (it takes it only with t members' word and a later
        // lifecycle sequence than its own). A key never changed has none to
        // read.
        let lifecycle = rec
            .as_ref()
            .filter(|r| !signing || r.lifecycle_seq > 0)
            .and_then(|_| self.lifecycle_proposal(key_id))
            .map(Box::new);
        let staged_receipt = |s: &crate::storage::Staged| -> Option<Box<ClientAuth>> {
            let r = rec.as_ref().filter(|_| evidence)?;
            let st = Statement {
                key_id,
                key_type: r.key_type,
                eid: &s.proof.eid,
                epoch: s.epoch,
                confirmation: &s.proof.confirmation,
                public_key: &r.public_key,
            };
            self.receipt(&st).ok().map(Box::new)
        };
        let maintenance = Maintenance {
            activated: rec.as_ref().and_then(|r| r.rotation),
            certificate: if evidence {
                self.kept_certificate(key_id)
            } else {
                Certificate::default()
            },
            generated: rec
                .as_ref()
                .filter(|_| evidence)
                .and_then(|r| self.generated_receipt(r))
                .map(Box::new),
            staged: self
                .store
                .staged(key_id)
                .ok()
                .flatten()
                .map(|s| StagedEpoch {
                    epoch: s.epoch,
                    proof: s.proof,
                    reshare: s.reshare,
                    release_open_for: crate::storage::release_open_for(
                        s.staged_ms,
                        self.timeouts.release_window(),
                    ),
                    receipt: staged_receipt(&s),
                }),
            running: self.is_maintaining(key_id),
        };
        match rec {
            Some(r) if joining => Outcome::ShareStatus {
                epoch: Some(r.epoch),
                signing: false,
                rotation: None,
                ledger: None,
                lifecycle,
                maintenance: Maintenance {
                    activated: None,
                    ..maintenance
                },
                watermarks: Vec::new(),
            },
            Some(r) if epoch.is_some() => Outcome::ShareStatus {
                epoch,
                signing,
                rotation: r.rotation.map(|p| p.eid),
                ledger: None,
                lifecycle,
                maintenance,
                watermarks: Vec::new(),
            },
            _ => Outcome::ShareStatus {
                epoch: None,
                signing: false,
                rotation: None,
                ledger: None,
                lifecycle,
                maintenance: Maintenance {
                    activated: None,
                    ..maintenance
                },
                watermarks: Vec::new(),
            },
        }
    }

    /// Whether `who` may learn a key's ledger entries, slot watermarks and
    /// lifecycle proofs: a member of its committee here, or of the committee
    /// a staged reshare brings.
    pub(crate) fn sees_key_detail(&self, key_id: &KeyId, who: &NodeName) -> bool {
        let Ok(Some(rec)) = self.store.key(key_id) else {
            return false;
        };
        if rec.committee.iter().any(|c| c == who.as_str()) {
            return true;
        }
        self.store
            .staged(key_id)
            .ok()
            .flatten()
            .and_then(|s| s.committee)
            .is_some_and(|c| c.iter().any(|c| c == who.as_str()))
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
