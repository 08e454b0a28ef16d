//! Refused proposals from one peer, counted per window (checklist 21,
//! issue 19): each refusal of a roster node's proposal used to append an
//! fsync'd audit entry, so one node could make another write without bound.
//! Now the first `audited` refusals of a peer in a window are audited one by
//! one, then one coalesced entry at each power of ten (100, 1000, ...) says
//! how many there were; and past `limit` in a window, that peer's key-change
//! proposals are refused at once (RESOURCE_EXHAUSTED with a retry hint),
//! before any approval is verified. The numbers are the config's `[limits]`
//! (`RefusalBudget`; defaults below). Signing proposals are never refused for
//! this (an honest coordinator's are refused during a rotation, say), only
//! coalesced.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Node, NodeError};
use crate::domain::NodeName;
use crate::storage::AuditEvent;

/// The default window refusals are counted in.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The default number of refusals of one peer audited one by one in a window.
pub const AUDITED: u64 = 10;
/// The default number of refused key-change proposals of one peer in a
/// window past which its key-change proposals are refused at once (refused
/// signing proposals do not count: an honest coordinator's are refused
/// during a rotation).
pub const LIMIT: u64 = 50;

/// How many refusals of one peer's proposals a node audits and tolerates
/// (config `[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalBudget {
    /// The window refusals are counted in (`refusal_window_secs`).
    pub window: Duration,
    /// Refusals of one peer audited one by one in a window (`refusals_audited`).
    pub audited: u64,
    /// Refused key-change proposals of one peer in a window past which its
    /// key changes are refused at once (`refusals_per_window`).
    pub limit: u64,
}

impl Default for RefusalBudget {
    fn default() -> Self {
        Self {
            window: WINDOW,
            audited: AUDITED,
            limit: LIMIT,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Refusals {
    budget: RefusalBudget,
    /// Per peer: when its window started, its refusals in it, and how many
    /// of those were key changes.
    peers: std::sync::Mutex<HashMap<NodeName, (Instant, u64, u64)>>,
    /// Refusals of peers' proposals, ever (for `/metrics`).
    total: std::sync::atomic::AtomicU64,
    /// Refusals not audited one by one, ever (for `/metrics`).
    coalesced: std::sync::atomic::AtomicU64,
}

impl Refusals {
    /// Counts one refusal of `peer`'s proposal (`key_change`: of a key
    /// change, which alone counts toward `LIMIT`); returns its number among
    /// all refusals of the peer in the current window.
    fn count(&self, peer: &NodeName, key_change: bool) -> u64 {
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut g = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let w = g.entry(peer.clone()).or_insert((now, 0, 0));
        if now.duration_since(w.0) >= self.budget.window {
            *w = (now, 0, 0);
        }
        w.1 = w.1.saturating_add(1);
        if key_change {
            w.2 = w.2.saturating_add(1);
        }
        w.1
    }

    /// How long `peer` must wait, if it is over `LIMIT` in this window.
    fn over_limit(&self, peer: &NodeName) -> Option<Duration> {
        let g = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, _, changes) = g.get(peer)?;
        let left = self.budget.window.checked_sub(start.elapsed())?;
        (*changes > self.budget.limit).then_some(left)
    }

    /// Refusals that were not audited one by one since start.
    pub fn coalesced(&self) -> u64 {
        self.coalesced.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Node {
    /// This node with `budget` for refused peer proposals (the default is
    /// `RefusalBudget::default()`).
    #[must_use]
    pub fn with_refusal_budget(mut self, budget: RefusalBudget) -> Self {
        self.refusals.budget = budget;
        self.client_refusals.budget = budget;
        self
    }

    /// The budget refused peer proposals are counted against.
    pub fn refusal_budget(&self) -> RefusalBudget {
        self.refusals.budget
    }

    /// Audits the refusal of `peer`'s proposal (see the module doc): one by
    /// one up to `AUDITED` in a window, then coalesced.
    /// `key_change`: the refused proposal was a key change (only those count
    /// toward the budget that refuses a peer's key changes at once).
    pub(crate) fn audit_refusal(&self, peer: &NodeName, event: AuditEvent, key_change: bool) {
        if *peer == self.name {
            let _ = self.audit(event);
            return;
        }
        self.coalesce(&self.refusals, peer, event, key_change, "node", "proposals");
    }

    /// Audits a sign request of `client` refused for a rate limit: one by
    /// one up to the budget's `audited` in a window, then coalesced (a
    /// client flooding past its limit makes the node write a handful of
    /// entries, not one fsync per request).
    pub(crate) fn audit_client_refusal(&self, client: &NodeName, event: AuditEvent) {
        self.coalesce(
            &self.client_refusals,
            client,
            event,
            false,
            "client",
            "sign requests",
        );
    }

    fn coalesce(
        &self,
        counts: &Refusals,
        who: &NodeName,
        event: AuditEvent,
        key_change: bool,
        role: &str,
        what: &str,
    ) {
        let budget = counts.budget;
        let n = counts.count(who, key_change);
        if n <= budget.audited {
            let _ = self.audit(event);
            return;
        }
        counts
            .coalesced
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let power_of_ten = n >= 100 && n.checked_ilog10().is_some_and(|e| 10u64.pow(e) == n);
        if power_of_ten {
            let _ = self.audit(AuditEvent {
                kind: "refusals.coalesced".into(),
                actor: format!("{role}/{who}"),
                decision: "denied".into(),
                rule: format!("per-{role} refusal budget"),
                detail: format!(
                    "{n} {what} from {role} {who} refused within {} s; audited one by one: the \
                     first {}; the last: {} of key {} ({})",
                    budget.window.as_secs(),
                    budget.audited,
                    event.kind,
                    event.key,
                    event.detail
                ),
                ..Default::default()
            });
        }
    }

    /// Refuses a key-change proposal from `peer` at once while it is over
    /// its refusal budget.
    pub(crate) fn check_refusal_budget(&self, peer: &NodeName) -> Result<(), NodeError> {
        if *peer == self.name {
            return Ok(());
        }
        match self.refusals.over_limit(peer) {
            Some(retry_after) => {
                self.refusals
                    .total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.refusals
                    .coalesced
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let budget = self.refusals.budget;
                Err(NodeError::RateLimited {
                    message: format!(
                        "node {peer} sent more than {} proposals this node refused within {} s; \
                         its key changes are refused until the window ends",
                        budget.limit,
                        budget.window.as_secs()
                    ),
                    retry_after,
                })
            }
            None => Ok(()),
        }
    }

    /// Refusals of peers' proposals not audited one by one, since start.
    pub fn coalesced_refusals(&self) -> u64 {
        self.refusals.coalesced()
    }

    /// Refusals of peers' proposals since start (audited or not).
    pub fn peer_refusals(&self) -> u64 {
        self.refusals
            .total
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
