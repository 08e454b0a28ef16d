//! Routes inbound protocol messages to running sessions by execution id.
//! Messages that arrive before their session starts are held, with bounds
//! on count, bytes and age, overall and per sending node, so that one roster
//! node cannot crowd out the others' sessions; messages for finished
//! sessions, and messages to a running session from a node that is not one
//! of its parties, are refused.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::domain::{ExecutionId, NodeName};

/// A session sees at most one round from each of up to 63 peers, plus the next.
const MAILBOX: usize = 128;
const MAX_EARLY_SESSIONS: usize = 256;
/// Sessions one node may have messages waiting in before they start.
const MAX_EARLY_SESSIONS_PER_PEER: usize = 64;
const MAX_EARLY_PER_SESSION: usize = 64;
/// Messages one node may have waiting for one session (a round and the next,
/// with slack): a node cannot fill another's session with invented messages.
const MAX_EARLY_PER_SENDER: usize = 4;
/// Total payload bytes held for sessions that have not started.
const MAX_EARLY_BYTES: usize = 32 << 20;
const EARLY_TTL: Duration = Duration::from_secs(30);
const FINISHED_MEMORY: usize = 4096;

/// One protocol message from an authenticated node. The payload may carry
/// secret values (keygen round 1), so `Debug` shows only its length.
pub struct Inbound {
    pub from: NodeName,
    pub round: u32,
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("from", &self.from)
            .field("round", &self.round)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("node {0} is not in this cluster's roster")]
    UnknownSender(NodeName),
    #[error("session {0} has finished")]
    Finished(ExecutionId),
    #[error("too many messages buffered for session {0}")]
    Full(ExecutionId),
    #[error("session {0} is already running")]
    AlreadyOpen(ExecutionId),
    #[error("node {from} is not a party of session {eid}")]
    NotAParty { eid: ExecutionId, from: NodeName },
    #[error("node {0} has too many messages waiting for sessions that have not started")]
    PeerQuota(NodeName),
}

/// Messages held for a session that has not started, and the node whose
/// message opened the entry (it is charged for the session).
struct Early {
    since: Instant,
    opened_by: NodeName,
    msgs: Vec<Inbound>,
}

#[derive(Default)]
struct Inner {
    /// Running sessions: their mailbox and their parties.
    live: HashMap<ExecutionId, (mpsc::Sender<Inbound>, Vec<NodeName>)>,
    early: HashMap<ExecutionId, Early>,
    early_bytes: usize,
    /// Early sessions charged to each node.
    early_by_peer: HashMap<NodeName, usize>,
    finished: VecDeque<ExecutionId>,
    /// Per sending node: its messages refused or dropped because it is not
    /// a party of the session they name (sender from its certificate).
    outsiders: HashMap<NodeName, u64>,
}

impl Inner {
    /// Counts one message of `from` for a session (or round) it does not
    /// send in (`from` is a roster node: the map stays small).
    fn blame(&mut self, from: NodeName) {
        let n = self.outsiders.entry(from).or_insert(0);
        *n = n.saturating_add(1);
    }

    fn expire_early(&mut self, now: Instant) {
        let expired: Vec<ExecutionId> = self
            .early
            .iter()
            .filter(|(_, e)| now.duration_since(e.since) >= EARLY_TTL)
            .map(|(eid, _)| *eid)
            .collect();
        for eid in expired {
            self.take_early(&eid);
        }
    }

    /// Removes a session's early messages, releasing what they were charged.
    fn take_early(&mut self, eid: &ExecutionId) -> Option<Vec<Inbound>> {
        let e = self.early.remove(eid)?;
        let freed = e.msgs.iter().map(|m| m.payload.len()).sum::<usize>();
        self.early_bytes = self.early_bytes.saturating_sub(freed);
        if let Some(n) = self.early_by_peer.get_mut(&e.opened_by) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.early_by_peer.remove(&e.opened_by);
            }
        }
        Some(e.msgs)
    }
}

#[derive(Default, Clone)]
pub struct Router {
    inner: Arc<Mutex<Inner>>,
}

/// Unregisters a session's mailbox when dropped.
pub struct Mailbox {
    pub rx: mpsc::Receiver<Inbound>,
    eid: ExecutionId,
    router: Router,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("eid", &self.eid)
            .finish_non_exhaustive()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        if let Ok(mut g) = self.router.inner.lock() {
            g.live.remove(&self.eid);
            g.finished.push_back(self.eid);
            if g.finished.len() > FINISHED_MEMORY {
                g.finished.pop_front();
            }
        }
    }
}

impl Mailbox {
    /// Counts a message of `from` its session dropped because `from` does
    /// not send in it (or not in that round): blamed on the node whose
    /// certificate carried it.
    pub fn blame_outsider(&self, from: &NodeName) {
        if let Ok(mut g) = self.router.inner.lock() {
            g.blame(from.clone());
        }
    }
}

impl Router {
    pub fn deliver(&self, eid: ExecutionId, msg: Inbound) -> Result<(), RouteError> {
        let mut g = self.inner.lock().map_err(|_| RouteError::Full(eid))?;
        if let Some((tx, parties)) = g.live.get(&eid) {
            if !parties.contains(&msg.from) {
                g.blame(msg.from.clone());
                return Err(RouteError::NotAParty {
                    eid,
                    from: msg.from,
                });
            }
            return tx.try_send(msg).map_err(|_| RouteError::Full(eid));
        }
        if g.finished.contains(&eid) {
            return Err(RouteError::Finished(eid));
        }
        let now = Instant::now();
        g.expire_early(now);
        let size = msg.payload.len();
        if g.early_bytes.saturating_add(size) > MAX_EARLY_BYTES {
            return Err(RouteError::Full(eid));
        }
        match g.early.get(&eid) {
            Some(e) => {
                let from_sender = e.msgs.iter().filter(|m| m.from == msg.from).count();
                if e.msgs.len() >= MAX_EARLY_PER_SESSION || from_sender >= MAX_EARLY_PER_SENDER {
                    return Err(RouteError::Full(eid));
                }
            }
            None => {
                let charged = g.early_by_peer.get(&msg.from).copied().unwrap_or(0);
                if charged >= MAX_EARLY_SESSIONS_PER_PEER {
                    return Err(RouteError::PeerQuota(msg.from));
                }
                if g.early.len() >= MAX_EARLY_SESSIONS {
                    return Err(RouteError::Full(eid));
                }
                *g.early_by_peer.entry(msg.from.clone()).or_insert(0) = charged.saturating_add(1);
                g.early.insert(
                    eid,
                    Early {
                        since: now,
                        opened_by: msg.from.clone(),
                        msgs: Vec::new(),
                    },
                );
            }
        }
        g.early_bytes = g.early_bytes.saturating_add(size);
        if let Some(e) = g.early.get_mut(&eid) {
            e.msgs.push(msg);
        }
        Ok(())
    }

    /// Messages of `from` refused or dropped because it does not send in
    /// the session they named (or not in that round), since start.
    pub fn outsider_messages(&self, from: &NodeName) -> u64 {
        self.inner
            .lock()
            .map(|g| g.outsiders.get(from).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Sessions running on this node (their mailbox is open).
    pub fn live(&self) -> usize {
        self.inner
            .lock()
            .map(|g| g.live.len())
            .unwrap_or_else(|p| p.into_inner().live.len())
    }

    /// Opens the mailbox of a session among `parties`, moving in what they
    /// sent early (anything from others is dropped). Refuses an execution id
    /// that is running or has finished.
    pub fn open(&self, eid: ExecutionId, parties: &[NodeName]) -> Result<Mailbox, RouteError> {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let mut g = self
            .inner
            .lock()
            .map_err(|_| RouteError::AlreadyOpen(eid))?;
        if g.live.contains_key(&eid) {
            return Err(RouteError::AlreadyOpen(eid));
        }
        if g.finished.contains(&eid) {
            return Err(RouteError::Finished(eid));
        }
        if let Some(early) = g.take_early(&eid) {
            for m in early {
                if parties.contains(&m.from) {
                    let _ = tx.try_send(m);
                } else {
                    // Held before the session started; now it is known not
                    // to be that node's session. The sender is the node
                    // whose certificate carried it, whatever it contains.
                    tracing::warn!(
                        %eid,
                        from = %m.from,
                        round = m.round,
                        "dropped a message held for a session its sender is not a party of",
                    );
                    g.blame(m.from);
                }
            }
        }
        g.live.insert(eid, (tx, parties.to_vec()));
        Ok(Mailbox {
            rx,
            eid,
            router: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> NodeName {
        NodeName::parse("a").unwrap()
    }

    fn from(name: &str, r: u32) -> Inbound {
        Inbound {
            from: NodeName::parse(name).unwrap(),
            round: r,
            payload: vec![],
        }
    }

    fn msg(r: u32) -> Inbound {
        Inbound {
            from: NodeName::parse("a").unwrap(),
            round: r,
            payload: vec![],
        }
    }

    fn eid(i: usize) -> ExecutionId {
        let mut b = [2u8; 32];
        b[0] = i as u8;
        b[1] = (i >> 8) as u8;
        ExecutionId::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn early_messages_are_bounded_per_sender_and_finished_sessions_refuse() {
        let router = Router::default();
        let eid = ExecutionId::from_slice(&[1; 32]).unwrap();
        for i in 0..MAX_EARLY_PER_SENDER {
            router.deliver(eid, msg(i as u32)).unwrap();
        }
        assert_eq!(router.deliver(eid, msg(0)), Err(RouteError::Full(eid)));
        // Another sender still has its own room in the same session.
        router.deliver(eid, from("b", 0)).unwrap();
        let b = NodeName::parse("b").unwrap();
        let mut mb = router.open(eid, &[a(), b.clone()]).unwrap();
        assert_eq!(
            router.open(eid, &[a()]).unwrap_err(),
            RouteError::AlreadyOpen(eid)
        );
        assert_eq!(mb.rx.recv().await.unwrap().round, 0);
        drop(mb);
        assert_eq!(
            router.open(eid, &[a()]).unwrap_err(),
            RouteError::Finished(eid)
        );
        assert_eq!(router.deliver(eid, msg(1)), Err(RouteError::Finished(eid)));
    }

    #[test]
    fn one_node_cannot_crowd_out_the_others_sessions() {
        let router = Router::default();
        // Node x invents sessions up to its own quota, then is refused...
        for i in 0..MAX_EARLY_SESSIONS_PER_PEER {
            router.deliver(eid(i), from("x", 1)).unwrap();
        }
        let x = NodeName::parse("x").unwrap();
        assert_eq!(
            router.deliver(eid(1000), from("x", 1)),
            Err(RouteError::PeerQuota(x.clone()))
        );
        // ...while b's real session still buffers, and x cannot fill it.
        let real = eid(2000);
        router.deliver(real, from("b", 1)).unwrap();
        for _ in 0..MAX_EARLY_PER_SENDER {
            router.deliver(real, from("x", 1)).unwrap();
        }
        assert_eq!(
            router.deliver(real, from("x", 1)),
            Err(RouteError::Full(real))
        );
        router.deliver(real, from("b", 2)).unwrap();
        // Its parties' messages reach the session; x's are dropped at the
        // open, and once it runs x is refused as no party of it.
        let b = NodeName::parse("b").unwrap();
        let mut mb = router.open(real, &[a(), b]).unwrap();
        let mut rounds = Vec::new();
        while let Ok(m) = mb.rx.try_recv() {
            assert_eq!(m.from.as_str(), "b");
            rounds.push(m.round);
        }
        assert_eq!(rounds, vec![1, 2]);
        assert_eq!(
            router.deliver(real, from("x", 3)),
            Err(RouteError::NotAParty { eid: real, from: x })
        );
        // The overall bound still holds across many nodes.
        let mut held = MAX_EARLY_SESSIONS_PER_PEER;
        'fill: for s in 0.. {
            for i in 0..MAX_EARLY_SESSIONS_PER_PEER {
                if router
                    .deliver(eid(3000 + s * 100 + i), from(&format!("s{s}"), 1))
                    .is_err()
                {
                    break 'fill;
                }
                held += 1;
            }
        }
        assert_eq!(held, MAX_EARLY_SESSIONS);
    }

    #[test]
    fn early_buffering_is_bounded_in_bytes() {
        let router = Router::default();
        let big = |i: u8| Inbound {
            from: NodeName::parse("a").unwrap(),
            round: 1,
            payload: vec![i; 20 << 20],
        };
        router
            .deliver(ExecutionId::from_slice(&[1; 32]).unwrap(), big(1))
            .unwrap();
        let eid2 = ExecutionId::from_slice(&[2; 32]).unwrap();
        assert_eq!(router.deliver(eid2, big(2)), Err(RouteError::Full(eid2)));
        // Opening the first session releases its bytes.
        let _mb = router
            .open(ExecutionId::from_slice(&[1; 32]).unwrap(), &[a()])
            .unwrap();
        router.deliver(eid2, big(2)).unwrap();
    }
}
