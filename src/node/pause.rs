//! The signing pause during key maintenance: a rotation or reshare
//! participant pauses signing with the key from its session's start until
//! activation or release, at most for a deadline, and lifts it when its call
//! fails or is dropped before it staged (`PauseGuard`).

use std::time::Duration;

use super::{Node, NodeError};
use crate::domain::{ExecutionId, KeyId};

impl Node {
    /// Pauses signing with `key` on this node for rotation `eid`, for at most
    /// `for_at_most`. Refuses while another rotation holds the key.
    pub(crate) fn pause(
        &self,
        key: &KeyId,
        eid: ExecutionId,
        for_at_most: Duration,
    ) -> Result<(), NodeError> {
        let mut g = self
            .paused
            .lock()
            .map_err(|_| NodeError::Internal("pause table poisoned".into()))?;
        let now = std::time::Instant::now();
        if let Some((until, other)) = g.get(key) {
            if *until > now && *other != eid {
                return Err(NodeError::FailedPrecondition(format!(
                    "another rotation of key {key} ({other}) is in progress here"
                )));
            }
        }
        let until = now
            .checked_add(for_at_most)
            .ok_or_else(|| NodeError::Internal("pause deadline out of range".into()))?;
        g.insert(key.clone(), (until, eid));
        Ok(())
    }

    /// `pause`, lifted again when the returned guard is dropped unless
    /// `keep` was called: a participant whose session fails, or whose call
    /// is dropped (the coordinator died, the admin pressed Ctrl-C), does not
    /// leave the key paused until the deadline.
    pub(crate) fn pause_guarded(
        &self,
        key: &KeyId,
        eid: ExecutionId,
        for_at_most: Duration,
    ) -> Result<PauseGuard<'_>, NodeError> {
        self.pause(key, eid, for_at_most)?;
        Ok(PauseGuard {
            node: self,
            key: key.clone(),
            eid,
            keep: false,
        })
    }

    /// Lifts the pause of rotation `eid` (not another rotation's).
    pub(crate) fn resume(&self, key: &KeyId, eid: &ExecutionId) {
        if let Ok(mut g) = self.paused.lock() {
            if g.get(key).is_some_and(|(_, e)| e == eid) {
                g.remove(key);
            }
        }
    }

    /// Refuses (UNAVAILABLE, with a retry hint) while a rotation holds the key.
    pub(crate) fn check_not_paused(&self, key: &KeyId) -> Result<(), NodeError> {
        let until = self
            .paused
            .lock()
            .ok()
            .and_then(|g| g.get(key).map(|(t, _)| *t));
        match until {
            Some(t) if t > std::time::Instant::now() => {
                let left = t.saturating_duration_since(std::time::Instant::now());
                Err(NodeError::Paused {
                    message: format!(
                        "key {key} is being rotated here; signing is paused for at most {}s more",
                        left.as_secs().saturating_add(1)
                    ),
                    retry_after: left,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Lifts a pause when dropped, unless kept (see `Node::pause_guarded`).
pub(crate) struct PauseGuard<'a> {
    node: &'a Node,
    key: KeyId,
    eid: ExecutionId,
    keep: bool,
}

impl PauseGuard<'_> {
    /// The share is staged: the pause lasts until activation or release.
    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for PauseGuard<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.node.resume(&self.key, &self.eid);
        }
    }
}
