//! Whom a failed signing session is pinned on, so that the coordinator
//! signs again without them: the nodes the error names, a participant that
//! refused to sign with this node, and one that refused the slot without
//! this node's own watermark agreeing.

use crate::domain::NodeName;
use crate::node::request::SignRequest;
use crate::node::{Node, NodeError, Reason};

impl Node {
    /// The other nodes a failed signing session is pinned on (see
    /// `NodeError::culprits`). A participant that refused to sign with this
    /// node (it banned this node for the key) is one: signing goes on
    /// without it.
    pub(super) fn culprits(&self, e: &NodeError, request: &SignRequest) -> Vec<NodeName> {
        let mut culprits = e.culprits();
        if culprits.contains(&self.name) {
            if let NodeError::At { node, .. } = e {
                culprits.push(node.clone());
            }
        }
        // Another participant that refused the slot: no veto without
        // evidence. The request is signed again without it; as a non-signer
        // it then gets the slot by gossip, where a conflict counts only with
        // the client's signed request behind it (`checks.rs`).
        // (Unless this node's own watermark refuses the slot too: then the
        // refusal stands, whoever reported it first.)
        if let NodeError::At { node, error } = e {
            if *node != self.name
                && matches!(
                    error.reason(),
                    Reason::SlotConflict | Reason::BelowWatermark
                )
                && !self.own_watermark_refuses(request)
            {
                culprits.push(node.clone());
            }
        }
        culprits.retain(|n| *n != self.name);
        culprits
    }

    /// Whether this node's own watermark refuses `request`'s slot: a higher
    /// position, or the same one for another digest.
    fn own_watermark_refuses(&self, request: &SignRequest) -> bool {
        let Some(slot) = &request.slot else {
            return false;
        };
        use crate::storage::rules::{slot_verdict, SlotVerdict};
        match self.store.watermark(&request.key_id, &slot.scope) {
            Ok(w) => matches!(
                slot_verdict(w.as_ref(), slot.position(), &request.digest.0),
                SlotVerdict::Below { .. } | SlotVerdict::OtherDigest { .. }
            ),
            // Unreadable: err towards refusing.
            Err(_) => true,
        }
    }
}
