//! Rolling-window limits (`value_per_24h` and the like) on this node. Each
//! node derives a payload's spends from the payload and its own policy
//! (`content_policy`), and counts the spends of every request it admits as
//! a signer or hears of by the committee's gossip (`storage::windows`). A
//! request is signed only once every committee node that answered took its
//! spends into its window, so while every committee node is reachable each
//! window sees every spend and a limit holds exactly, whichever signer sets
//! sign. With nodes missing gossip, each spend is still counted by its t
//! signers: the client's total stays within (n / t) x the limit.

use super::content_policy::{WindowSpend, WINDOW_SECS};
use super::request::SignRequest;
use super::{now_unix, Node, NodeError};
use crate::domain::NodeName;
use crate::storage::WindowClaim;

/// The spend id of `request` when it spends against a window (the payload
/// is hashed only then: no cost on the signing path otherwise).
pub(crate) fn entry(request: &SignRequest, spends: &[WindowSpend]) -> String {
    if spends.is_empty() {
        return String::new();
    }
    request.spend_id().unwrap_or_default()
}

/// The claims of `spends` by `client` for `request`'s payload (`entry`).
pub(crate) fn claims<'a>(
    client: &'a NodeName,
    entry: &'a str,
    spends: &'a [WindowSpend],
) -> Vec<WindowClaim<'a>> {
    spends
        .iter()
        .map(|w| WindowClaim {
            client: client.as_str(),
            scope: &w.scope,
            entry,
            amount: w.amount,
            limit: w.limit,
            secs: WINDOW_SECS,
            knob: w.knob,
            what: &w.what,
        })
        .collect()
}

impl Node {
    /// Would `spends` fit this node's windows? Nothing is recorded: the
    /// coordinator looks before it asks anyone (a request over its limit
    /// here costs no other node a record), and a dry run reports it.
    pub(crate) fn check_windows(
        &self,
        client: &NodeName,
        request: &SignRequest,
        spends: &[WindowSpend],
    ) -> Result<(), NodeError> {
        let entry = entry(request, spends);
        if entry.is_empty() {
            return Ok(());
        }
        self.store
            .window_check(&request.key_id, &claims(client, &entry, spends), now_unix())
            .map_err(NodeError::from)
    }
}
