//! The cluster as this node sees it, for `thresig status`: every roster node
//! (reachable, versions, round trip) and every key this node holds (its
//! record, and each committee node's epoch and whether it can sign). Reads
//! only; each question to a peer is bounded by the probe timeout.

use std::time::{Duration, Instant};

use super::{Node, Outcome, PeerVersion};
use crate::domain::NodeName;
use crate::storage::{KeyRecord, KeyState};

/// One roster node.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: NodeName,
    /// The versions it announced, or why it did not answer.
    pub answer: Result<PeerVersion, String>,
    /// Round trip of the ping (zero for this node).
    pub rtt: Duration,
    pub this_node: bool,
}

/// What one committee node reports of a key: the epoch of its share and
/// whether it can sign, or why it did not answer.
pub type MemberView = Result<(Option<u64>, bool), String>;

/// One key, with what each committee node reports of it.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub record: KeyRecord,
    /// Per committee node: (epoch of its share, can sign), or why unknown.
    pub members: Vec<(NodeName, MemberView)>,
}

impl KeyView {
    /// Committee nodes that answered at the key's epoch and can sign.
    pub fn ready(&self) -> usize {
        self.members
            .iter()
            .filter(|(_, m)| matches!(m, Ok((Some(e), true)) if *e == self.record.epoch))
            .count()
    }
}

#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeView>,
    pub keys: Vec<KeyView>,
}

/// What the ops plane watches (`/metrics`, `/readyz`): each roster node's
/// ping, and per key how many committee nodes answer. Cheaper than
/// `ClusterStatus`: one ping per node, no question per key.
#[derive(Debug, Clone)]
pub struct Health {
    pub nodes: Vec<NodeView>,
    pub keys: Vec<KeyHealth>,
    pub sessions_in_flight: usize,
}

#[derive(Debug, Clone)]
pub struct KeyHealth {
    pub key_id: crate::domain::KeyId,
    /// active, frozen, ... (`KeyState::label`).
    pub state: &'static str,
    pub threshold: u8,
    /// Committee nodes that answered their ping (this node counts when the
    /// key is active here).
    pub reachable: usize,
}

impl KeyHealth {
    /// Whether t committee nodes answer.
    pub fn quorum(&self) -> bool {
        self.reachable >= usize::from(self.threshold)
    }

    /// Not active on this node, or one committee node failure (or none)
    /// from losing its quorum: such a key is listed on its own in
    /// `/metrics` and `/readyz`, the healthy ones only counted.
    pub fn in_trouble(&self) -> bool {
        self.state != "active" || self.reachable <= usize::from(self.threshold)
    }
}

impl Node {
    /// Pings every roster node at once (this node answers for itself).
    pub async fn roster_pings(&self) -> Vec<NodeView> {
        let timeout = self.timeouts.ping;
        let pings = self.roster.iter().map(|n| async move {
            if *n == self.name {
                return NodeView {
                    name: n.clone(),
                    answer: Ok(PeerVersion {
                        wire: super::WIRE_VERSION,
                        software: env!("CARGO_PKG_VERSION").into(),
                        // The node knows no certificates; the API fills this in.
                        cert_not_after: None,
                    }),
                    rtt: Duration::ZERO,
                    this_node: true,
                };
            }
            let started = Instant::now();
            let answer = match tokio::time::timeout(timeout, self.net.ping(n)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(e.kind.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            NodeView {
                name: n.clone(),
                answer,
                rtt: started.elapsed(),
                this_node: false,
            }
        });
        futures::future::join_all(pings).await
    }

    /// Asks every roster node for its versions and every committee node of
    /// each key this node holds for its share status, all at once.
    pub async fn cluster_status(&self) -> ClusterStatus {
        let records = self.store.keys().unwrap_or_default();
        let keys = records
            .into_iter()
            .filter(|r| !matches!(r.state, KeyState::Deleted(_)))
            .map(|record| self.key_view(record));
        let (nodes, keys) = tokio::join!(self.roster_pings(), futures::future::join_all(keys));
        ClusterStatus { nodes, keys }
    }

    /// Pings the roster and counts, per key this node holds (not deleted or
    /// retired), the committee nodes that answer. Errors only if the store
    /// cannot be read.
    pub async fn health(&self) -> Result<Health, super::NodeError> {
        let records = self.keys()?;
        let nodes = self.roster_pings().await;
        let up = |n: &str| {
            nodes
                .iter()
                .any(|v| v.name.as_str() == n && !v.this_node && v.answer.is_ok())
        };
        let keys = records
            .into_iter()
            .filter(|r| !matches!(r.state, KeyState::Deleted(_) | KeyState::Retired))
            .map(|r| {
                let here = r.state == KeyState::Active
                    && r.committee.iter().any(|c| c == self.name.as_str());
                let others = r
                    .committee
                    .iter()
                    .filter(|c| c.as_str() != self.name.as_str() && up(c))
                    .count();
                KeyHealth {
                    state: r.state.label(),
                    threshold: r.threshold,
                    reachable: others.saturating_add(usize::from(here)),
                    key_id: r.key_id,
                }
            })
            .collect();
        Ok(Health {
            nodes,
            keys,
            sessions_in_flight: self.router.live(),
        })
    }

    async fn key_view(&self, record: KeyRecord) -> KeyView {
        let members = self
            .committee_status(&record, false)
            .await
            .into_iter()
            .map(|(n, answer)| {
                let member = match answer {
                    Ok(Outcome::ShareStatus { epoch, signing, .. }) => Ok((epoch, signing)),
                    Ok(_) => Err("answered with another outcome".to_owned()),
                    Err(e) => Err(e),
                };
                (n, member)
            })
            .collect();
        KeyView { record, members }
    }
}
