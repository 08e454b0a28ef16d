//! The maintenance lock: a rotation or reshare participant holds its key's
//! lock for as long as its session runs, so that a second rotation of the
//! key is refused meanwhile. Signing never waits for it: the old epoch signs
//! until the new one is activated. The lock is lifted when the participant's
//! call ends in any way, completed, failed or dropped (`MaintenanceGuard`),
//! and it lasts at most a deadline in any case.

use std::time::Duration;

use super::{Node, NodeError};
use crate::domain::{ExecutionId, KeyId};

impl Node {
    /// Takes the maintenance lock of `key` for session `eid` while the
    /// returned guard lives, for at most `for_at_most`. Refuses while another
    /// session holds it.
    pub(crate) fn hold_maintenance(
        &self,
        key: &KeyId,
        eid: ExecutionId,
        for_at_most: Duration,
    ) -> Result<MaintenanceGuard<'_>, NodeError> {
        let mut g = self
            .maintaining
            .lock()
            .map_err(|_| NodeError::Internal("maintenance table poisoned".into()))?;
        let now = std::time::Instant::now();
        if let Some((until, other)) = g.get(key) {
            if *until > now && *other != eid {
                return Err(NodeError::FailedPrecondition(format!(
                    "another rotation or reshare of key {key} ({other}) is in progress here"
                )));
            }
        }
        let until = now
            .checked_add(for_at_most)
            .ok_or_else(|| NodeError::Internal("maintenance deadline out of range".into()))?;
        g.insert(key.clone(), (until, eid));
        Ok(MaintenanceGuard {
            node: self,
            key: key.clone(),
            eid,
        })
    }

    /// Lifts the lock of session `eid` (not another session's).
    pub(crate) fn release_maintenance(&self, key: &KeyId, eid: &ExecutionId) {
        if let Ok(mut g) = self.maintaining.lock() {
            if g.get(key).is_some_and(|(_, e)| e == eid) {
                g.remove(key);
            }
        }
    }

    /// Whether a rotation or reshare session of `key` is running here.
    pub(crate) fn is_maintaining(&self, key: &KeyId) -> bool {
        self.maintaining
            .lock()
            .ok()
            .and_then(|g| g.get(key).map(|(t, _)| *t))
            .is_some_and(|t| t > std::time::Instant::now())
    }
}

/// Lifts the maintenance lock when dropped (see `Node::hold_maintenance`).
pub(crate) struct MaintenanceGuard<'a> {
    node: &'a Node,
    key: KeyId,
    eid: ExecutionId,
}

impl Drop for MaintenanceGuard<'_> {
    fn drop(&mut self) {
        self.node.release_maintenance(&self.key, &self.eid);
    }
}
