//! Runs waiting for a chunk of a media to become wanted (or unwanted), by
//! chunk. A playhead that moves wakes only the waits on the chunks its
//! window covered or covers now, so the cost of a move does not grow with
//! the number of runs waiting elsewhere in the media (a burst of seeks
//! leaves one waiting run each).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// The waits on one media's chunks.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    by_chunk: Mutex<BTreeMap<u64, Watched>>,
}

#[derive(Debug)]
struct Watched {
    notify: Arc<Notify>,
    /// Watches on this chunk alive.
    count: usize,
}

/// A wait on one chunk; it ends when dropped.
#[derive(Debug)]
pub(crate) struct Watch<'a> {
    watchers: &'a Watchers,
    index: u64,
    notify: Arc<Notify>,
}

impl Watchers {
    /// Starts watching chunk `index`.
    pub fn watch(&self, index: u64) -> Watch<'_> {
        let mut by_chunk = self.by_chunk.lock().unwrap();
        let w = by_chunk.entry(index).or_insert_with(|| Watched {
            notify: Arc::new(Notify::new()),
            count: 0,
        });
        w.count += 1;
        Watch {
            watchers: self,
            index,
            notify: w.notify.clone(),
        }
    }

    /// Wakes the waits on chunks `lo..=hi`.
    pub fn wake(&self, lo: u64, hi: u64) {
        if lo > hi {
            return;
        }
        let by_chunk = self.by_chunk.lock().unwrap();
        for w in by_chunk.range(lo..=hi).map(|(_, w)| w) {
            w.notify.notify_waiters();
        }
    }

    /// Wakes every wait (the media was dropped).
    pub fn wake_all(&self) {
        self.wake(0, u64::MAX);
    }

    #[cfg(test)]
    fn watched(&self) -> Vec<u64> {
        self.by_chunk.lock().unwrap().keys().copied().collect()
    }
}

impl Watch<'_> {
    /// Resolves at the next wake of this chunk after this call: call it
    /// before looking at the playheads, so a move in between is not lost.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut by_chunk = self.watchers.by_chunk.lock().unwrap();
        if let Some(w) = by_chunk.get_mut(&self.index) {
            w.count -= 1;
            if w.count == 0 {
                by_chunk.remove(&self.index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn woken(n: Notified<'_>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), n)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_wake_reaches_only_the_chunks_in_its_range() {
        let w = Watchers::default();
        let (a, b, c) = (w.watch(3), w.watch(7), w.watch(7));
        let (na, nb, nc) = (a.notified(), b.notified(), c.notified());
        w.wake(5, 9);
        assert!(!woken(na).await, "chunk 3 is outside 5..=9");
        assert!(woken(nb).await);
        assert!(woken(nc).await);
        let na = a.notified();
        w.wake_all();
        assert!(woken(na).await);
        // An empty range wakes nobody.
        let nb = b.notified();
        w.wake(9, 5);
        assert!(!woken(nb).await);
    }

    #[tokio::test]
    async fn watches_leave_no_entry_behind() {
        let w = Watchers::default();
        let a = w.watch(1);
        let b = w.watch(1);
        let c = w.watch(2);
        assert_eq!(w.watched(), vec![1, 2]);
        drop(a);
        assert_eq!(w.watched(), vec![1, 2]);
        drop((b, c));
        assert!(w.watched().is_empty());
    }
}
