//! A rotation that a crash or a cancelled call left behind: before a new
//! rotation of a key, a maintenance session still running on a committee
//! node gets a moment to end, and a rotation that every node staged and none
//! activated is activated with the members' own receipts as its
//! certificate (see `finish_abandoned`).

use std::time::Instant;

use crate::domain::{ExecutionId, NodeName};
use crate::node::activation::Certificate;
use crate::node::committee::reasons;
use crate::node::{committee_of, Node, NodeError, Operation, Outcome, Proposal, StagedEpoch};
use crate::storage::KeyRecord;

/// A rotation or reshare session of the key is running on this node.
struct Running(NodeName);

/// How long a new rotation waits for a maintenance session still running on
/// a committee node to end (see `staged_settled`), and how often it looks.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

impl Node {
    /// Before a new rotation of `rec`'s key: a rotation or reshare session
    /// still running on a committee node is given `SETTLE` to end (one whose
    /// call was cancelled ends within moments), then refused (named; it ends
    /// by itself). A rotation that every committee node staged and none
    /// activated (its coordinator died, or its call was cancelled, before
    /// activation) is activated everywhere with the certificate its members'
    /// receipts make, exactly as its coordinator would have done; returns
    /// true then. A rotation that some
    /// node did not stage can never be activated by anyone, and the new
    /// rotation's share replaces it. Unreachable nodes are left to the
    /// readiness check that follows.
    pub(super) async fn finish_abandoned(&self, rec: &KeyRecord) -> Result<bool, NodeError> {
        let key_id = &rec.key_id;
        let committee = committee_of(rec)?;
        let next = crate::node::committee::next_epoch(rec)?;
        let staged = self.staged_settled(rec, &committee, next).await?;
        let Some(first) = staged.first() else {
            return Ok(false);
        };
        let (epoch, proof) = (first.epoch, first.proof);
        let Some(eid) = ExecutionId::from_slice(&proof.eid) else {
            return Ok(false);
        };
        // Every member's own signed receipt is the certificate: whatever
        // happened to the rotation's coordinator, activation is the only way
        // on from here (a release deletes nothing).
        let receipts: Vec<_> = staged
            .into_iter()
            .filter_map(|s| s.receipt.map(|r| *r))
            .collect();
        if receipts.len() != committee.len() {
            return Ok(false);
        }
        tracing::warn!(
            key = %key_id,
            epoch,
            %eid,
            "every committee node staged a rotation nobody activated; activating it",
        );
        let activate = Proposal {
            eid,
            nonce: Vec::new(),
            admin: None,
            op: Operation::Activate {
                key_id: key_id.clone(),
                epoch,
                confirmation: proof.confirmation,
                certificate: Certificate(receipts),
            },
        };
        let failed = self.call_with_retries(&committee, &activate).await;
        if !failed.is_empty() {
            return Err(NodeError::Unavailable(format!(
                "finishing an abandoned rotation of key {key_id} to epoch {epoch}: not yet \
                 active on {}; retry",
                reasons(&failed)
            )));
        }
        Ok(true)
    }

    /// `staged_everywhere`, waiting up to `SETTLE` for a rotation or reshare
    /// session still running on a committee node to end: one whose call was
    /// just cancelled (an admin's Ctrl-C) ends on each participant within
    /// moments, when the cancellation reaches it. One that is still running
    /// after that is refused, naming the node.
    async fn staged_settled(
        &self,
        rec: &KeyRecord,
        committee: &[NodeName],
        next: u64,
    ) -> Result<Vec<StagedEpoch>, NodeError> {
        let until = Instant::now().checked_add(SETTLE);
        loop {
            match self.staged_everywhere(rec, committee, next).await {
                Ok(staged) => return Ok(staged),
                Err(Running(n)) if until.is_some_and(|u| Instant::now() < u) => {
                    tracing::debug!(key = %rec.key_id, node = %n, "a maintenance session still runs; waiting");
                    tokio::time::sleep(SETTLE_POLL).await;
                }
                Err(Running(n)) => {
                    return Err(NodeError::FailedPrecondition(format!(
                        "another rotation or reshare of key {} is in progress on node {n}; retry \
                         when it ends",
                        rec.key_id
                    )))
                }
            }
        }
    }

    /// The rotation to `next` each committee node staged at `rec`'s epoch,
    /// one entry per node, if every node answered with the same one
    /// (ignoring how long each still lets it be released); empty if any node
    /// staged nothing, another rotation, or did not answer. Refused while a
    /// rotation or reshare session runs on any node (named; it ends by
    /// itself).
    async fn staged_everywhere(
        &self,
        rec: &KeyRecord,
        committee: &[NodeName],
        next: u64,
    ) -> Result<Vec<StagedEpoch>, Running> {
        let answers: Vec<_> = self
            .committee_status(rec, true)
            .await
            .into_iter()
            .map(|(n, answer)| match answer {
                Ok(Outcome::ShareStatus {
                    epoch, maintenance, ..
                }) => Some((n, epoch, maintenance)),
                _ => None,
            })
            .collect();
        if let Some((n, _, _)) = answers.iter().flatten().find(|(_, _, m)| m.running) {
            return Err(Running(n.clone()));
        }
        let staged: Vec<Option<StagedEpoch>> = answers
            .into_iter()
            .map(|a| match a {
                Some((_, Some(e), m)) if e == rec.epoch => {
                    m.staged.filter(|s| s.epoch == next && !s.reshare)
                }
                _ => None,
            })
            .collect();
        let Some(Some(first)) = staged.first().cloned() else {
            return Ok(Vec::new());
        };
        let same = |s: &Option<StagedEpoch>| {
            s.as_ref()
                .is_some_and(|s| s.epoch == first.epoch && s.proof == first.proof)
        };
        if staged.len() == committee.len() && staged.iter().all(same) {
            Ok(staged.into_iter().flatten().collect())
        } else {
            Ok(Vec::new())
        }
    }
}
