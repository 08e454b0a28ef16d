//! Graceful shutdown: a draining node takes no new work (it answers
//! UNAVAILABLE, so coordinators pick other signers and failing-over clients
//! go to another node), reports not ready, and lets the work in flight
//! finish, within a bound, before it stops.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Node, NodeError};

/// What a node is doing right now: whether it drains, and how many
/// proposals and client requests it is working on.
#[derive(Debug, Default)]
pub(crate) struct Work {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    /// `thresig node run` is still comparing every key's state with its
    /// committee (`sync_lifecycles_at_start`): `/readyz` reports not ready,
    /// so a rolling restart does not take the next member down before this
    /// one has heard from it.
    comparing_at_start: AtomicBool,
}

/// Counts one piece of work in flight until dropped.
#[derive(Debug)]
pub(crate) struct Busy<'a>(&'a Work);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Node {
    /// Starts draining: new proposals and client requests are refused with
    /// UNAVAILABLE from now on, and `/readyz` reports not ready.
    pub fn drain(&self) {
        self.work.draining.store(true, Ordering::SeqCst);
        tracing::info!(node = %self.name, "draining: taking no new work");
    }

    pub fn is_draining(&self) -> bool {
        self.work.draining.load(Ordering::SeqCst)
    }

    /// Marks the start-up comparison of key states as running (`true`) or
    /// done; see `Work::comparing_at_start`.
    pub fn set_comparing_at_start(&self, comparing: bool) {
        self.work
            .comparing_at_start
            .store(comparing, Ordering::SeqCst);
    }

    /// Whether the start-up comparison of key states is still running.
    pub fn is_comparing_at_start(&self) -> bool {
        self.work.comparing_at_start.load(Ordering::SeqCst)
    }

    /// Proposals and client requests being worked on now.
    pub fn in_flight(&self) -> usize {
        self.work.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no work is in flight, or `bound` has passed; returns how
    /// many pieces of work were still running then.
    pub async fn wait_idle(&self, bound: Duration) -> usize {
        let started = Instant::now();
        loop {
            let n = self.in_flight();
            if n == 0 || started.elapsed() >= bound {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Counts new work in flight, or refuses it while draining (unless it
    /// is part of work this node already started: `ours`).
    pub(crate) fn start_work(&self, ours: bool) -> Result<Busy<'_>, NodeError> {
        self.work.in_flight.fetch_add(1, Ordering::SeqCst);
        let busy = Busy(&self.work);
        if self.is_draining() && !ours {
            return Err(NodeError::Unavailable(
                "this node is shutting down; use another node".into(),
            ));
        }
        Ok(busy)
    }
}
