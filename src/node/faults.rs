//! Crash points for tests. With the `fault-injection` feature a test can arm
//! a named point on a named node; from then on, every time that node reaches
//! it, the operation stops there with an error, as if the process had been
//! killed at that instant (nothing after the point runs, and nothing
//! uncommitted is kept). The test then restarts the node (after `disarm_all`).
//! The points are process-wide: a test that arms them runs alone in its test
//! binary. Without the feature every check compiles to nothing.

/// Where a rotation or a keygen can be cut short.
pub mod points {
    /// Participant: refresh finished, staged share not yet written.
    pub const BEFORE_STAGE: &str = "rotate.before_stage";
    /// Participant: staged share written, answer not yet sent.
    pub const AFTER_STAGE: &str = "rotate.after_stage";
    /// Participant: asked to activate, activation not yet written.
    pub const BEFORE_ACTIVATE: &str = "rotate.before_activate";
    /// Participant: activation written, answer not yet sent.
    pub const AFTER_ACTIVATE: &str = "rotate.after_activate";
    /// Coordinator of a keygen, rotation or reshare: every member staged and sent
    /// its receipt, no activation sent yet (a coordinator that dies, or turns
    /// hostile, at the moment the key is decided).
    pub const COORDINATOR_BEFORE_ACTIVATE: &str = "coordinator.before_activate";
    /// Reshare dealer: send one new member a point that does not match the
    /// commitments (a misbehaving dealer, not a crash).
    pub const CORRUPT_DEALING: &str = "reshare.corrupt_dealing";
    /// Signing participant: send the other signers a wrong signature share (a
    /// misbehaving co-signer, not a crash): the final signature fails and
    /// nobody can be blamed, so the honest signers freeze the key.
    pub const CORRUPT_SIGN_SHARE: &str = "sign.corrupt_share";
    /// Signing participant: tamper with its round-1 OT data (a misbehaving
    /// co-signer the others' engines catch and name): they ban it.
    pub const TAMPER_SIGN_OT: &str = "sign.tamper_ot";
    /// Signing participant: admit the session, then never send a round
    /// message (a node that answers probes but stalls its rounds).
    pub const STALL_SIGN: &str = "sign.stall";
    /// Signing participant: once it has admitted a session (its ledger entry
    /// durable, the session open everywhere), the session's coordinator is
    /// cut off from every node, both ways, as by a network partition, until
    /// `disarm_all`.
    pub const PARTITION_COORDINATOR: &str = "sign.partition_coordinator";
    /// Signing participant: slot watermark committed, no message sent yet.
    pub const AFTER_WATERMARK: &str = "sign.after_watermark";
    /// A committee node outside a signing session: a slot gossip received,
    /// not yet taken (a hold point: the node waits, as if paused).
    pub const BEFORE_GOSSIP: &str = "sign.before_gossip";
    /// A member a reshare moved the key away from: every new member
    /// activated, its old share not yet deleted.
    pub const BEFORE_RETIRE: &str = "reshare.before_retire";
    /// A leaving member: its old share deleted, answer not yet sent.
    pub const AFTER_RETIRE: &str = "reshare.after_retire";
    /// Every rotation crash point, for tests that walk them all (a reshare's
    /// staging and activation pass the same points).
    pub const ALL: [&str; 4] = [BEFORE_STAGE, AFTER_STAGE, BEFORE_ACTIVATE, AFTER_ACTIVATE];
    /// Keygen participant: keygen finished, generated share not yet written.
    pub const KEYGEN_BEFORE_STORE: &str = "keygen.before_store";
    /// Keygen participant: generated share written, answer not yet sent.
    pub const KEYGEN_AFTER_STORE: &str = "keygen.after_store";
    /// Every keygen crash point (its activation shares rotation's points).
    pub const KEYGEN: [&str; 4] = [
        KEYGEN_BEFORE_STORE,
        KEYGEN_AFTER_STORE,
        BEFORE_ACTIVATE,
        AFTER_ACTIVATE,
    ];
}

#[cfg(feature = "fault-injection")]
mod imp {
    use std::collections::HashSet;
    use std::sync::Mutex;

    static ARMED: Mutex<Option<HashSet<(String, &'static str)>>> = Mutex::new(None);
    /// Nodes that hit a crash point: "dead" until `disarm_all`.
    static DEAD: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    /// Points at which a node waits (as if its process were paused) until
    /// `release_holds` or `disarm_all`.
    static HELD: Mutex<Option<HashSet<(String, &'static str)>>> = Mutex::new(None);

    /// Makes `node` wait at `point` until `release_holds` (then any crash
    /// armed at the same point fires): a test can see what the others do
    /// while one node is stuck there, without racing it.
    pub fn hold(node: &str, point: &'static str) {
        if let Ok(mut g) = HELD.lock() {
            g.get_or_insert_with(HashSet::new)
                .insert((node.to_owned(), point));
        }
    }

    /// Nodes cut off from every other (a partition), until `disarm_all`.
    static ISOLATED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(node: &str) {
        if let Ok(mut g) = ISOLATED.lock() {
            g.get_or_insert_with(HashSet::new).insert(node.to_owned());
        }
    }

    pub fn is_isolated(node: &str) -> bool {
        ISOLATED
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|s| s.contains(node)))
            .unwrap_or(false)
    }

    /// Lets every held node go on.
    pub fn release_holds() {
        if let Ok(mut g) = HELD.lock() {
            *g = None;
        }
    }

    pub fn is_held(node: &str, point: &'static str) -> bool {
        HELD.lock()
            .ok()
            .and_then(|g| g.as_ref().map(|s| s.contains(&(node.to_owned(), point))))
            .unwrap_or(false)
    }

    /// Arms `point` on `node` until `disarm_all`.
    pub fn arm(node: &str, point: &'static str) {
        if let Ok(mut g) = ARMED.lock() {
            g.get_or_insert_with(HashSet::new)
                .insert((node.to_owned(), point));
        }
    }

    /// Disarms every point and revives every node (the "process" restarts clean).
    pub fn disarm_all() {
        release_holds();
        if let Ok(mut g) = ISOLATED.lock() {
            *g = None;
        }
        if let Ok(mut g) = ARMED.lock() {
            *g = None;
        }
        if let Ok(mut g) = DEAD.lock() {
            *g = None;
        }
    }

    pub fn kill(node: &str) {
        if let Ok(mut g) = DEAD.lock() {
            g.get_or_insert_with(HashSet::new).insert(node.to_owned());
        }
    }

    pub fn is_dead(node: &str) -> bool {
        DEAD.lock()
            .ok()
            .and_then(|g| g.as_ref().map(|s| s.contains(node)))
            .unwrap_or(false)
    }

    /// True if `point` is armed on `node`.
    pub fn fires(node: &str, point: &'static str) -> bool {
        ARMED
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|s| s.contains(&(node.to_owned(), point))))
            .unwrap_or(false)
    }
}

#[cfg(feature = "fault-injection")]
pub use imp::{arm, disarm_all, hold, isolate, kill, release_holds};

/// A message between `from` and `to` while either is cut off
/// (`isolate`; fault-injection builds only) is lost: this waits as long as
/// the cut lasts, then returns false (the caller drops the message), as a
/// network that drops packets would. True at once when nothing is cut.
pub async fn passes(from: &crate::domain::NodeName, to: &crate::domain::NodeName) -> bool {
    #[cfg(feature = "fault-injection")]
    if imp::is_isolated(from.as_str()) || imp::is_isolated(to.as_str()) {
        while imp::is_isolated(from.as_str()) || imp::is_isolated(to.as_str()) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        return false;
    }
    let _ = (from, to);
    true
}

/// Waits while `point` is held on `node` (fault-injection builds only).
pub async fn wait_if_held(node: &crate::domain::NodeName, point: &'static str) {
    #[cfg(feature = "fault-injection")]
    while imp::is_held(node.as_str(), point) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = (node, point);
}

/// Returns an error if `point` is armed on `node` (fault-injection builds only).
#[inline]
pub fn check(
    node: &crate::domain::NodeName,
    point: &'static str,
) -> Result<(), crate::node::NodeError> {
    #[cfg(feature = "fault-injection")]
    if imp::fires(node.as_str(), point) {
        imp::kill(node.as_str());
        tracing::warn!(%node, point, "injected crash");
        // A crashed node is, to everyone else, a node that stopped answering.
        return Err(crate::node::NodeError::Unavailable(format!(
            "injected crash at {point} on node {node}"
        )));
    }
    let _ = (node, point);
    Ok(())
}

/// True if misbehaviour `point` is armed on `node` (fault-injection builds only).
#[cfg(feature = "fault-injection")]
pub fn tampers(node: &crate::domain::NodeName, point: &'static str) -> bool {
    let fires = imp::fires(node.as_str(), point);
    if fires {
        tracing::warn!(%node, point, "injected misbehaviour");
    }
    fires
}

/// Returns an error if `node` hit a crash point and has not been restarted
/// (fault-injection builds only): a killed process answers nothing.
#[inline]
pub fn check_alive(node: &crate::domain::NodeName) -> Result<(), crate::node::NodeError> {
    #[cfg(feature = "fault-injection")]
    if imp::is_dead(node.as_str()) {
        return Err(crate::node::NodeError::Unavailable(format!(
            "node {node} is down (injected crash)"
        )));
    }
    let _ = node;
    Ok(())
}
