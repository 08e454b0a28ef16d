//! Per-key signing bans (checklist 11). When this node's own engine finds a
//! fault that the protocol says must exclude the counterparty for good (an
//! OT consistency failure in DKLs23, an equivocated broadcast), it records a
//! durable ban: it refuses every signing session of the key that includes
//! the banned node, and as a coordinator it never picks it. Another node's
//! word never bans anyone (a hostile node could frame an honest one); a
//! relayed blame only makes the blamed node a suspect for a while. An admin
//! clears a key's bans on every committee node with an approved `unban`
//! request (`thresig keys unban`), after finding out what happened.
//!
//! A final signature that fails verification names nobody (any of the other
//! signers may have sent the bad share): the key freezes, and this node
//! starts an elimination. Until an admin clears it (`unban`), the key signs
//! here only with signer sets that leave out one of the suspects, in turn
//! when this node coordinates; a second failure keeps only the suspects that
//! signed it too, and once one is left it is named and banned for the key
//! (without a freeze: the abort now names someone).

use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::node::{now_unix, Node, NodeError};
use crate::storage::{Ban, Elimination};

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

    /// After the final signature of session `eid` with `participants` of
    /// `key` failed verification here, nobody blamed: takes the failure into
    /// the key's elimination. Returns the node it names (banned now), or
    /// `None` when the key must freeze, with the suspects left.
    pub(crate) fn eliminate(
        &self,
        key: &KeyId,
        eid: &ExecutionId,
        participants: &[NodeName],
    ) -> Result<(Option<NodeName>, Vec<String>), NodeError> {
        let others: Vec<String> = participants
            .iter()
            .filter(|p| **p != self.name)
            .map(ToString::to_string)
            .collect();
        // With t = n every signer set holds every suspect: nothing to leave
        // out, so no elimination (the key stays frozen until an unfreeze).
        let rec = self.key(key)?;
        if rec.committee.len() <= usize::from(rec.threshold) {
            return Ok((None, others));
        }
        let fresh = || Elimination {
            suspects: others.clone(),
            since_unix: now_unix(),
            sessions: vec![eid.to_string()],
        };
        let next = match self.store.elimination(key)? {
            None => fresh(),
            Some(mut e) => {
                e.suspects.retain(|s| others.contains(s));
                e.sessions.push(eid.to_string());
                // None of the earlier suspects signed this one: another
                // node misbehaves (or the first was intermittent); start
                // again from this session.
                if e.suspects.is_empty() {
                    fresh()
                } else {
                    e
                }
            }
        };
        if let ([named], true) = (next.suspects.as_slice(), next.sessions.len() > 1) {
            let node = NodeName::parse(named).map_err(|e| NodeError::Internal(e.to_string()))?;
            let ban = Ban {
                node: named.clone(),
                since_unix: now_unix(),
                eid: eid.to_string(),
                reason: format!(
                    "the final signatures of sessions {} failed verification, and it is the only \
                     signer of all of them besides this node (found by elimination)",
                    next.sessions.join(", ")
                ),
            };
            self.store.ban(key, &ban)?;
            self.store.set_elimination(key, None)?;
            tracing::error!(key = %key, node = %node, reason = %ban.reason, "node named by elimination and banned for this key");
            return Ok((Some(node), Vec::new()));
        }
        self.store.set_elimination(key, Some(&next))?;
        Ok((None, next.suspects))
    }

    /// The suspect this node leaves out of the next signer set it picks for
    /// `key` while an elimination runs (each in turn), if one does.
    pub(crate) fn elimination_leave_out(&self, key: &KeyId) -> Option<NodeName> {
        let e = self.store.elimination(key).ok().flatten()?;
        let mut turns = self
            .elimination_turns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let turn = turns.entry(key.clone()).or_insert(0);
        let pick = e.suspects.get(turn.checked_rem(e.suspects.len())?)?;
        *turn = turn.wrapping_add(1);
        NodeName::parse(pick).ok()
    }

    /// Refuses a signing session of `key` whose signers include every
    /// suspect of the elimination running here, blaming one of them (the
    /// coordinator `from` if it is one): the coordinator then signs again
    /// without it, or, if it is the one blamed, without this node.
    pub(crate) fn check_elimination(
        &self,
        key: &KeyId,
        participants: &[NodeName],
        from: &NodeName,
    ) -> Result<(), NodeError> {
        let Some(e) = self.store.elimination(key)? else {
            return Ok(());
        };
        if e.suspects
            .iter()
            .all(|s| participants.iter().any(|p| p.as_str() == s))
        {
            let blamed = if e.suspects.iter().any(|s| s == from.as_str()) {
                from.clone()
            } else {
                e.suspects
                    .first()
                    .and_then(|s| NodeName::parse(s).ok())
                    .unwrap_or_else(|| from.clone())
            };
            return Err(NodeError::Blamed {
                node: blamed,
                reason: format!(
                    "key {key} is under elimination at node {} (the final signature of session {} \
                 failed with nobody blamed): a signer set must leave out one of {}; an admin \
                 ends it with `thresig keys unban`",
                    self.name,
                    e.sessions.last().map(String::as_str).unwrap_or("?"),
                    e.suspects.join(", ")
                ),
            });
        }
        Ok(())
    }
}
