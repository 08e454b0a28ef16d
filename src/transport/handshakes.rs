//! Handshakes in progress on one listener, bounded overall and per source
//! address. When a bound is reached, the oldest handshake (of that source
//! first, else overall) is cut to make room for the new connection. A peer
//! finishes its handshake in milliseconds, so connections that never finish
//! theirs (half-open, or a slow-loris) only hold a slot until newer
//! connections need it: they cannot lock out a real peer, and authenticated
//! connections, once handed to the server, hold no slot at all.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// Pending handshakes, oldest first.
pub(crate) struct Handshakes {
    max_total: usize,
    max_per_source: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    pending: VecDeque<Entry>,
}

struct Entry {
    id: u64,
    source: IpAddr,
    /// Dropped to cut the handshake.
    _cut: oneshot::Sender<()>,
}

/// A handshake's place among the pending ones: `cut` resolves when a newer
/// connection took it; dropping the slot frees it.
pub(crate) struct Slot {
    owner: Arc<Handshakes>,
    id: u64,
    pub cut: oneshot::Receiver<()>,
}

impl Handshakes {
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            inner: Mutex::default(),
        })
    }

    /// A slot for a new handshake from `source`, cutting the oldest pending
    /// one from the same source, or else the oldest overall, when full.
    /// Returns how many were cut.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> (Slot, usize) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cut = 0usize;
        if g.pending.iter().filter(|e| e.source == source).count() >= self.max_per_source {
            if let Some(i) = g.pending.iter().position(|e| e.source == source) {
                g.pending.remove(i);
                cut = cut.saturating_add(1);
            }
        }
        while g.pending.len() >= self.max_total {
            g.pending.pop_front();
            cut = cut.saturating_add(1);
        }
        let id = g.next;
        g.next = g.next.wrapping_add(1);
        let (tx, rx) = oneshot::channel();
        g.pending.push_back(Entry {
            id,
            source,
            _cut: tx,
        });
        (
            Slot {
                owner: self.clone(),
                id,
                cut: rx,
            },
            cut,
        )
    }

    /// Handshakes pending now.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending
            .len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self
            .owner
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = g.pending.iter().position(|e| e.id == self.id) {
            g.pending.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn was_cut(s: &mut Slot) -> bool {
        matches!(s.cut.try_recv(), Err(oneshot::error::TryRecvError::Closed))
    }

    #[test]
    fn the_oldest_handshake_makes_room_and_finished_ones_free_their_slot() {
        let h = Handshakes::new(3, 10);
        let (mut a, _) = h.admit(ip(1));
        let (mut b, _) = h.admit(ip(2));
        let (mut c, _) = h.admit(ip(3));
        assert_eq!(h.pending(), 3);
        let (mut d, cut) = h.admit(ip(4));
        assert_eq!(cut, 1);
        assert!(was_cut(&mut a), "the oldest was not cut");
        assert!(!was_cut(&mut b) && !was_cut(&mut c) && !was_cut(&mut d));
        // A finished handshake frees its slot: the next one cuts nobody.
        drop(b);
        let (mut e, cut) = h.admit(ip(5));
        assert_eq!(cut, 0);
        assert!(!was_cut(&mut c) && !was_cut(&mut d) && !was_cut(&mut e));
        assert_eq!(h.pending(), 3);
    }

    #[test]
    fn one_source_over_its_share_cuts_its_own_oldest_not_others() {
        let h = Handshakes::new(100, 2);
        let (mut other, _) = h.admit(ip(9));
        let (mut x1, _) = h.admit(ip(1));
        let (mut x2, _) = h.admit(ip(1));
        let (mut x3, cut) = h.admit(ip(1));
        assert_eq!(cut, 1);
        assert!(was_cut(&mut x1));
        assert!(!was_cut(&mut x2) && !was_cut(&mut x3));
        assert!(!was_cut(&mut other), "another source's handshake was cut");
    }
}
