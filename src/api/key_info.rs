//! A key as the admin API shows it (`KeyInfo`).

use super::services::eth_address;
use crate::node::Node;
use crate::proto::admin as apb;
use crate::storage::{KeyRecord, KeyState};

/// `rec` as the admin API shows it, without this node's bans.
pub(crate) fn key_info(rec: &KeyRecord) -> apb::KeyInfo {
    apb::KeyInfo {
        key_id: rec.key_id.to_string(),
        public_key: rec.public_key.clone(),
        eth_address: eth_address(rec.key_type, &rec.public_key),
        threshold: rec.threshold.into(),
        committee: rec.committee.clone(),
        epoch: rec.epoch,
        state: match &rec.state {
            KeyState::Frozen(why) => format!("frozen: {why}"),
            KeyState::Deleted(why) => format!("deleted: {why}"),
            s => s.label().to_owned(),
        },
        chain_code: rec.chain_code.to_vec(),
        key_type: rec.key_type.to_string(),
        bans: Vec::new(),
        lifecycle_seq: rec.lifecycle_seq,
    }
}

/// `rec` with the nodes `node` refuses to sign it with (its bans), each as
/// "name (since Unix S, session EID: reason)".
pub(crate) fn key_info_here(node: &Node, rec: &KeyRecord) -> apb::KeyInfo {
    let bans = match node.store().bans(&rec.key_id) {
        Ok(bans) => bans.iter().map(ToString::to_string).collect(),
        Err(e) => vec![format!("? (the bans could not be read: {e})")],
    };
    apb::KeyInfo {
        bans,
        ..key_info(rec)
    }
}
