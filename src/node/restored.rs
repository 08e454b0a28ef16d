//! Keys restored from a backup (checklist 26). `thresig backup restore`
//! marks every key it brings back; this node does not sign such a key, as
//! coordinator or participant, until every other committee node has told
//! it the key's epoch and slot watermarks:
//! - a committee node at a later epoch means the backup predates a rotation:
//!   the restored share must never sign again, and the key stays refused
//!   here until `thresig keys repair` gives this node a share of the
//!   current epoch;
//! - otherwise this node takes the highest watermark of every slot scope
//!   (a slot signed after the backup is then never signed again below it)
//!   and the mark is lifted.
//!
//! A committee node that does not answer keeps the mark: with one node
//! silent, a later epoch or a higher watermark could be hiding there. And
//! the mark is lifted only when at least t other committee nodes (all of
//! them when fewer) say they hold the key's epoch themselves: a node that
//! holds no share (it left the committee in a reshare the backup predates)
//! confirms nothing.

use super::{Node, NodeError, Operation, Outcome, Proposal};
use crate::node::committee::status_eid;
use crate::storage::{KeyRecord, Watermark};

impl Node {
    /// Ok when `rec`'s key carries no restore mark, or when the committee
    /// has just confirmed it (see the module doc); otherwise why this node
    /// may not sign it.
    pub(crate) async fn check_restored(&self, rec: &KeyRecord) -> Result<(), NodeError> {
        let key = &rec.key_id;
        let Some(mark) = self.store.restored(key)? else {
            return Ok(());
        };
        let committee = super::committee_of(rec)?;
        let timeout = self.timeouts.ping;
        let asks = committee
            .iter()
            .filter(|n| **n != self.name)
            .map(|n| async move {
                let ask = Proposal {
                    eid: status_eid(key, rec.epoch),
                    nonce: Vec::new(),
                    admin: None,
                    op: Operation::ShareStatus {
                        key_id: key.clone(),
                        request_id: None,
                        watermarks: true,
                        evidence: false,
                    },
                };
                let answer = match tokio::time::timeout(timeout, self.net.propose(n, ask)).await {
                    Ok(Ok(o)) => Ok(o),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                (n.clone(), answer)
            });
        let mut silent = Vec::new();
        let mut holders: Vec<super::NodeName> = Vec::new();
        let mut without: Vec<String> = Vec::new();
        let mut later: Option<(super::NodeName, u64)> = None;
        let mut marks: Vec<(String, Watermark)> = Vec::new();
        for (n, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Outcome::ShareStatus {
                    epoch, watermarks, ..
                }) => {
                    match epoch {
                        Some(e) if e == rec.epoch => holders.push(n.clone()),
                        Some(e) if e > rec.epoch => {
                            if later.as_ref().is_none_or(|(_, l)| e > *l) {
                                later = Some((n.clone(), e));
                            }
                        }
                        Some(e) => without.push(format!("{n} (epoch {e})")),
                        None => without.push(format!("{n} (holds no share)")),
                    }
                    marks.extend(watermarks);
                }
                Ok(_) => silent.push(format!("{n} (answered with another outcome)")),
                Err(e) => silent.push(format!("{n} ({e})")),
            }
        }
        let me = &self.name;
        if let Some((n, e)) = later {
            return Err(NodeError::FailedPrecondition(format!(
                "node {me} was restored from a backup taken at Unix {}: its share of key {key} is \
                 of epoch {}, but node {n} holds epoch {e}. The old share must not sign again; \
                 give node {me} a share of the current epoch with `thresig keys repair {key} \
                 --node {me}`",
                mark.backup_unix, rec.epoch
            )));
        }
        if !silent.is_empty() {
            return Err(NodeError::Unavailable(format!(
                "node {me} was restored from a backup and signs key {key} again once every other \
                 committee node has confirmed the key's epoch and slot watermarks; no answer \
                 from {}. Retry when they are up, or send the request to another node",
                silent.join(", ")
            )));
        }
        let others = committee.len().saturating_sub(1);
        let needed = usize::from(rec.threshold).min(others);
        if holders.len() < needed {
            return Err(NodeError::FailedPrecondition(format!(
                "node {me} was restored from a backup taken at Unix {}: key {key} signs here again                  only once {needed} other committee nodes hold its epoch {}; {} do ({}), and {}                  do not. The backup may predate a reshare that moved the key away: if so, this                  share must not sign again",
                mark.backup_unix,
                rec.epoch,
                holders.len(),
                super::names(&holders),
                without.join(", ")
            )));
        }
        self.store.confirm_restored(key, &marks)?;
        tracing::info!(
            key = %key,
            epoch = rec.epoch,
            scopes = marks.len(),
            "restored key confirmed by its committee: epoch current, slot watermarks taken"
        );
        Ok(())
    }
}
