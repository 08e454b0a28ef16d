//! A participant never takes a key's lifecycle (frozen, deleted) from the
//! coordinator alone. Before it takes part in a signing session of a key, it
//! must have compared the key's state with a committee member other than the
//! session's coordinator since this process started (a node that was down
//! while the admins froze the key learns of it here, whoever coordinates),
//! and it compares again once a minute. A freeze or delete a member applied
//! and this node missed is checked and applied as any catch-up is
//! (`catch_up_lifecycle`), and the session is then refused by the key state
//! check that follows.

use std::time::{Duration, Instant};

use super::committee::status_query;
use super::{committee_of, Node, NodeError, Outcome};
use crate::domain::{KeyId, NodeName};

/// How often a participant compares a key's lifecycle with another member.
pub(crate) const RECHECK: Duration = Duration::from_secs(60);
/// How long a recheck (after the first comparison) may hold up a session:
/// the comparison is best effort then, and a silent member costs little.
const RECHECK_BUDGET: Duration = Duration::from_millis(250);

impl Node {
    /// Ok once this node has compared `key_id`'s lifecycle with a committee
    /// member other than `coordinator` since it started (and applied any
    /// freeze or delete it had missed); refused until then. Compares again,
    /// best effort, once `RECHECK` has passed.
    pub(crate) async fn check_lifecycle_heard(
        &self,
        key_id: &KeyId,
        coordinator: &NodeName,
    ) -> Result<(), NodeError> {
        let last = self
            .lifecycle_heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key_id)
            .copied();
        if last.is_some_and(|t| t.elapsed() < RECHECK) {
            return Ok(());
        }
        let rec = self.key(key_id)?;
        let down = self.recently_down();
        let others: Vec<NodeName> = committee_of(&rec)?
            .into_iter()
            .filter(|n| *n != self.name && n != coordinator)
            .collect();
        if others.is_empty() {
            // A committee of two: nobody else to ask.
            return Ok(());
        }
        let asks = others
            .iter()
            .filter(|n| !down.contains(n))
            .map(|n| self.compare_lifecycle(key_id, rec.epoch, n));
        let compared = async {
            futures::future::join_all(asks)
                .await
                .into_iter()
                .any(|heard| heard)
        };
        let heard = if last.is_some() {
            // Heard before: a recheck never holds a session up for long.
            tokio::time::timeout(RECHECK_BUDGET, compared)
                .await
                .unwrap_or(false)
        } else {
            compared.await
        };
        if heard {
            self.lifecycle_heard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key_id.clone(), Instant::now());
            return Ok(());
        }
        if last.is_some() {
            return Ok(());
        }
        Err(NodeError::Unavailable(format!(
            "node {} has not compared the state of key {key_id} with a committee member other \
             than the coordinator {coordinator} since it started, and none answered ({}); it \
             takes no part in signing with the key until one does",
            self.name,
            super::names(&others)
        )))
    }

    /// Asks `n` about `key_id`: true if it answered. A freeze or delete it
    /// applied that this node missed is applied here first.
    async fn compare_lifecycle(&self, key_id: &KeyId, epoch: u64, n: &NodeName) -> bool {
        let ask = self.net.propose(n, status_query(key_id, epoch, None));
        match tokio::time::timeout(self.timeouts.ping, ask).await {
            Ok(Ok(Outcome::ShareStatus {
                lifecycle, signing, ..
            })) => {
                if let Some(p) = lifecycle.filter(|_| !signing) {
                    if let Some(done) = self.catch_up_lifecycle(n, *p).await {
                        tracing::warn!(key = %key_id, node = %n, %done, "learned a missed key state change");
                    }
                }
                true
            }
            Ok(Ok(_)) => false,
            Ok(Err(e)) => {
                tracing::debug!(key = %key_id, node = %n, error = %e, "lifecycle comparison failed");
                false
            }
            Err(_) => false,
        }
    }
}
