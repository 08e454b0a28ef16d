//! Routes inbound protocol messages to running sessions by execution id.
//! Messages that arrive before their session starts are held, with bounds
//! on count and age; messages for finished sessions are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::domain::{ExecutionId, NodeName};

/// A session sees at most one round from each of up to 63 peers, plus the next.
const MAILBOX: usize = 128;
const MAX_EARLY_SESSIONS: usize = 256;
const MAX_EARLY_PER_SESSION: usize = 64;
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
}

#[derive(Default)]
struct Inner {
    live: HashMap<ExecutionId, mpsc::Sender<Inbound>>,
    early: HashMap<ExecutionId, (Instant, Vec<Inbound>)>,
    early_bytes: usize,
    finished: VecDeque<ExecutionId>,
}

impl Inner {
    fn expire_early(&mut self, now: Instant) {
        let mut freed: usize = 0;
        self.early.retain(|_, (t, q)| {
            let keep = now.duration_since(*t) < EARLY_TTL;
            if !keep {
                freed = freed.saturating_add(q.iter().map(|m| m.payload.len()).sum::<usize>());
            }
            keep
        });
        self.early_bytes = self.early_bytes.saturating_sub(freed);
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

impl Router {
    pub fn deliver(&self, eid: ExecutionId, msg: Inbound) -> Result<(), RouteError> {
        let mut g = self.inner.lock().map_err(|_| RouteError::Full(eid))?;
        if let Some(tx) = g.live.get(&eid) {
            return tx.try_send(msg).map_err(|_| RouteError::Full(eid));
        }
        if g.finished.contains(&eid) {
            return Err(RouteError::Finished(eid));
        }
        let now = Instant::now();
        g.expire_early(now);
        if !g.early.contains_key(&eid) && g.early.len() >= MAX_EARLY_SESSIONS {
            return Err(RouteError::Full(eid));
        }
        let size = msg.payload.len();
        if g.early_bytes.saturating_add(size) > MAX_EARLY_BYTES {
            return Err(RouteError::Full(eid));
        }
        let (_, q) = g.early.entry(eid).or_insert_with(|| (now, Vec::new()));
        if q.len() >= MAX_EARLY_PER_SESSION {
            return Err(RouteError::Full(eid));
        }
        q.push(msg);
        g.early_bytes = g.early_bytes.saturating_add(size);
        Ok(())
    }

    /// Opens the mailbox of a session, moving in anything that arrived early.
    /// Refuses an execution id that is running or has finished.
    pub fn open(&self, eid: ExecutionId) -> Result<Mailbox, RouteError> {
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
        if let Some((_, early)) = g.early.remove(&eid) {
            let freed = early.iter().map(|m| m.payload.len()).sum::<usize>();
            g.early_bytes = g.early_bytes.saturating_sub(freed);
            for m in early {
                let _ = tx.try_send(m);
            }
        }
        g.live.insert(eid, tx);
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

    fn msg(r: u32) -> Inbound {
        Inbound {
            from: NodeName::parse("a").unwrap(),
            round: r,
            payload: vec![],
        }
    }

    #[tokio::test]
    async fn early_messages_are_bounded_and_finished_sessions_refuse() {
        let router = Router::default();
        let eid = ExecutionId::from_slice(&[1; 32]).unwrap();
        for i in 0..MAX_EARLY_PER_SESSION {
            router.deliver(eid, msg(i as u32)).unwrap();
        }
        assert_eq!(router.deliver(eid, msg(0)), Err(RouteError::Full(eid)));
        let mut mb = router.open(eid).unwrap();
        assert_eq!(router.open(eid).unwrap_err(), RouteError::AlreadyOpen(eid));
        assert_eq!(mb.rx.recv().await.unwrap().round, 0);
        drop(mb);
        assert_eq!(router.open(eid).unwrap_err(), RouteError::Finished(eid));
        assert_eq!(router.deliver(eid, msg(1)), Err(RouteError::Finished(eid)));
        for i in 0..MAX_EARLY_SESSIONS {
            let mut b = [2u8; 32];
            b[0] = i as u8;
            b[1] = (i >> 8) as u8;
            router
                .deliver(ExecutionId::from_slice(&b).unwrap(), msg(1))
                .unwrap();
        }
        assert!(router
            .deliver(ExecutionId::from_slice(&[9; 32]).unwrap(), msg(1))
            .is_err());
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
            .open(ExecutionId::from_slice(&[1; 32]).unwrap())
            .unwrap();
        router.deliver(eid2, big(2)).unwrap();
    }
}
