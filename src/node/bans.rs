//! Per-key signing bans (checklist 11). When this node's own engine finds a
//! fault that the protocol says must exclude the counterparty for good (an
//! OT consistency failure in DKLs23, an equivocated broadcast), it records a
//! durable ban: it refuses every signing session of the key that includes
//! the banned node, and as a coordinator it never picks it. Another node's
//! word never bans anyone (a hostile node could frame an honest one); a
//! relayed blame only makes the blamed node a suspect for a while. An admin
//! clears a key's bans on every committee node with an approved `unban`
//! request (`thresig keys unban`), after finding out what happened.

use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::node::{now_unix, Node, NodeError};
use crate::storage::Ban;

impl Node {
    /// After a session of `key` failed here with `e`: a ban-worthy fault
    /// found by this node's own engine bans its culprit (durably, before
    /// the failure is reported).
    pub(crate) fn ban_on_fault(&self, key: &KeyId, eid: &ExecutionId, e: &NodeError) {
        let NodeError::Protocol {
            error,
            blamed: Some(node),
        } = e
        else {
            return;
        };
        if error.ban_worthy().is_none() || *node == self.name {
            return;
        }
        let ban = Ban {
            node: node.to_string(),
            since_unix: now_unix(),
            eid: eid.to_string(),
            reason: error.to_string(),
        };
        match self.store.ban(key, &ban) {
            Ok(()) => tracing::error!(
                key = %key,
                %node,
                %eid,
                reason = %ban.reason,
                "node banned for this key: this node no longer signs it with that node \
                 (`thresig keys show` lists it; `thresig keys unban` clears it)",
            ),
            Err(err) => tracing::error!(
                key = %key,
                %node,
                error = %err,
                "could not record the ban of a misbehaving node",
            ),
        }
    }

    /// The nodes banned for `key` here (none if the store cannot say).
    pub(crate) fn banned(&self, key: &KeyId) -> Vec<NodeName> {
        self.store
            .bans(key)
            .unwrap_or_default()
            .iter()
            .filter_map(|b| NodeName::parse(&b.node).ok())
            .collect()
    }

    /// Refuses a signing session of `key` with a node banned for it here,
    /// naming the node (the coordinator avoids it and signs again).
    pub(crate) fn check_not_banned(
        &self,
        key: &KeyId,
        participants: &[NodeName],
    ) -> Result<(), NodeError> {
        let bans = self.store.bans(key)?;
        match bans
            .iter()
            .find(|b| participants.iter().any(|p| p.as_str() == b.node))
        {
            Some(b) => Err(NodeError::Blamed {
                node: NodeName::parse(&b.node).map_err(|e| NodeError::Internal(e.to_string()))?,
                reason: format!(
                    "banned for key {key} at node {}: {b}; an admin clears it with `thresig keys \
                     unban`",
                    self.name
                ),
            }),
            None => Ok(()),
        }
    }
}
