//! Handshakes in progress on one listener, bounded overall and per source
//! address. Only a handshake that has stalled (no bytes from its client for
//! `STALL`) is cut to make room for a new connection: of the same source when
//! that source is over its share, else the oldest stalled one overall. An
//! honest burst (a worker pool, many validators behind one NAT, everyone
//! reconnecting after a restart) keeps sending and is never cut, however
//! many connect from one address at once. Connections that never finish
//! their handshake (half-open, or a slow-loris) stall and only hold a slot
//! until newer connections need it. Only when every pending handshake is
//! still live and the overall bound is reached is the oldest handshake of the
//! source with the most pending cut (so one busy source cannot push out
//! another's). Authenticated connections, once handed to the server, hold no
//! slot at all. Every cut is counted (`telemetry::note_handshake_cut`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// A pending handshake whose client sent nothing for this long has stalled.
pub(crate) const STALL: Duration = Duration::from_secs(2);

/// Pending handshakes, oldest first.
pub(crate) struct Handshakes {
    max_total: usize,
    max_per_source: usize,
    /// Activity times are milliseconds since this instant.
    start: Instant,
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
    /// When its client last sent bytes (ms since `Handshakes::start`).
    last: Arc<AtomicU64>,
    /// Dropped to cut the handshake.
    _cut: oneshot::Sender<()>,
}

/// A handshake's place among the pending ones: `cut` resolves when a newer
/// connection took it; dropping the slot frees it. Its stream is read
/// through `Slot::watch`, which notes each read as progress.
pub(crate) struct Slot {
    owner: Arc<Handshakes>,
    id: u64,
    last: Arc<AtomicU64>,
    pub cut: oneshot::Receiver<()>,
}

impl Slot {
    /// `io`, with every read that brings bytes noted as this handshake's
    /// progress.
    pub fn watch<T>(&self, io: T) -> Watched<T> {
        Watched {
            io,
            start: self.owner.start,
            last: self.last.clone(),
        }
    }
}

/// A stream whose reads are noted as progress of a pending handshake.
pub struct Watched<T> {
    io: T,
    start: Instant,
    last: Arc<AtomicU64>,
}

fn ms_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.store(ms_since(self.start), Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Handshakes {
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            start: Instant::now(),
            inner: Mutex::default(),
        })
    }

    /// A slot for a new handshake from `source`. When `source` is over its
    /// share, its oldest stalled handshake is cut; while the overall bound is
    /// reached, the oldest stalled handshake is cut, or if none has stalled,
    /// the oldest of the source with the most pending. Returns how many were
    /// cut.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> (Slot, usize) {
        self.admit_at(source, ms_since(self.start), STALL)
    }

    fn admit_at(self: &Arc<Self>, source: IpAddr, now: u64, stall: Duration) -> (Slot, usize) {
        let stall_ms = u64::try_from(stall.as_millis()).unwrap_or(u64::MAX);
        let stalled = |e: &Entry| now.saturating_sub(e.last.load(Ordering::Relaxed)) >= stall_ms;
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cut = 0usize;
        if g.pending.iter().filter(|e| e.source == source).count() >= self.max_per_source {
            if let Some(i) = g
                .pending
                .iter()
                .position(|e| e.source == source && stalled(e))
            {
                g.pending.remove(i);
                cut = cut.saturating_add(1);
            }
        }
        while g.pending.len() >= self.max_total {
            let i = match g.pending.iter().position(&stalled) {
                Some(i) => i,
                None => {
                    let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
                    for e in &g.pending {
                        let n = per_source.entry(e.source).or_default();
                        *n = n.saturating_add(1);
                    }
                    let heaviest = per_source
                        .into_iter()
                        .max_by_key(|(_, n)| *n)
                        .map(|(s, _)| s);
                    g.pending
                        .iter()
                        .position(|e| Some(e.source) == heaviest)
                        .unwrap_or(0)
                }
            };
            g.pending.remove(i);
            cut = cut.saturating_add(1);
        }
        let id = g.next;
        g.next = g.next.wrapping_add(1);
        let (tx, rx) = oneshot::channel();
        let last = Arc::new(AtomicU64::new(now));
        g.pending.push_back(Entry {
            id,
            source,
            last: last.clone(),
            _cut: tx,
        });
        (
            Slot {
                owner: self.clone(),
                id,
                last,
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

    const S: Duration = Duration::from_secs(2);

    #[test]
    fn the_oldest_stalled_handshake_makes_room_and_finished_ones_free_their_slot() {
        let h = Handshakes::new(3, 10);
        let (mut a, _) = h.admit_at(ip(1), 0, S);
        let (mut b, _) = h.admit_at(ip(2), 1000, S);
        let (mut c, _) = h.admit_at(ip(3), 1000, S);
        assert_eq!(h.pending(), 3);
        // At 2.5 s only a has sent nothing for 2 s.
        let (mut d, cut) = h.admit_at(ip(4), 2500, S);
        assert_eq!(cut, 1);
        assert!(was_cut(&mut a), "the oldest was not cut");
        assert!(!was_cut(&mut b) && !was_cut(&mut c) && !was_cut(&mut d));
        // A finished handshake frees its slot: the next one cuts nobody.
        drop(b);
        let (mut e, cut) = h.admit_at(ip(5), 2600, S);
        assert_eq!(cut, 0);
        assert!(!was_cut(&mut c) && !was_cut(&mut d) && !was_cut(&mut e));
        assert_eq!(h.pending(), 3);
    }

    #[test]
    fn one_source_over_its_share_cuts_its_own_oldest_stalled_not_others() {
        let h = Handshakes::new(100, 2);
        let (mut other, _) = h.admit_at(ip(9), 0, S);
        let (mut x1, _) = h.admit_at(ip(1), 0, S);
        let (mut x2, _) = h.admit_at(ip(1), 1000, S);
        let (mut x3, cut) = h.admit_at(ip(1), 2500, S);
        assert_eq!(cut, 1);
        assert!(was_cut(&mut x1));
        assert!(!was_cut(&mut x2) && !was_cut(&mut x3));
        assert!(!was_cut(&mut other), "another source's handshake was cut");
    }

    #[test]
    fn an_honest_burst_from_one_source_is_never_cut_while_it_progresses() {
        let h = Handshakes::new(256, 64);
        let mut burst: Vec<Slot> = Vec::new();
        for i in 0..200u64 {
            let (s, cut) = h.admit_at(ip(1), i, S);
            assert_eq!(cut, 0, "connection {i} cut another");
            burst.push(s);
        }
        assert!(burst.iter_mut().all(|s| !was_cut(s)));
        assert_eq!(h.pending(), 200);
    }

    #[test]
    fn progress_keeps_a_handshake_from_stalling_and_a_full_table_cuts_the_heaviest_source() {
        let h = Handshakes::new(4, 64);
        let (mut a, _) = h.admit_at(ip(1), 0, S);
        let (mut b, _) = h.admit_at(ip(1), 0, S);
        let (mut c, _) = h.admit_at(ip(1), 0, S);
        let (mut d, _) = h.admit_at(ip(2), 0, S);
        // a, b and c send bytes at 2 s; d too: nothing has stalled at 3 s.
        for s in [&a, &b, &c, &d] {
            s.last.store(2000, Ordering::Relaxed);
        }
        let (mut e, cut) = h.admit_at(ip(3), 3000, S);
        assert_eq!(cut, 1);
        assert!(was_cut(&mut a), "the heaviest source's oldest goes first");
        assert!(!was_cut(&mut b) && !was_cut(&mut c) && !was_cut(&mut d) && !was_cut(&mut e));
    }
}
