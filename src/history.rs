//! What happened, for the index's history (`events` in `index.db`):
//! evictions, cleanups, disk levels, caching paused and resumed, chunks
//! quarantined, upstream failures, versions. Any layer records an event
//! here in memory (it rides on `Metrics`, which every layer has); the
//! upkeep writes what gathered to the index at each disk check, so an
//! event costs no index write of its own. Bounded: past `MAX_PENDING`
//! unwritten events, more are counted and dropped; the same event again
//! within a minute (an origin failing for every request) adds to one row.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Events held between writes at most.
const MAX_PENDING: usize = 10_000;

/// Seconds within which the same event adds to one row.
const SAME_WITHIN: i64 = 60;

/// Seconds since the Unix epoch now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What kind of thing happened; its name is the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A media's chunks evicted by one cleanup (`reason`: its cause).
    Eviction,
    /// One cleanup run (`reason`: disk_space, max_cache_size, max_age).
    Cleanup,
    /// The disk level changed (`reason`: the new level; `bytes`: free).
    DiskLevel,
    /// Cache writes paused (`reason`: why).
    CachingPaused,
    /// Cache writes resumed.
    CachingResumed,
    /// A cached chunk found bad and set aside (`reason`: checksum, length,
    /// unreadable).
    Quarantine,
    /// An origin request failed (`reason`: its class, e.g. `status 503`).
    UpstreamFailure,
    /// An origin's file changed: the cached version was dropped.
    MediaChanged,
    /// spool started (`reason`: its version).
    Started,
    /// spool started with another version than before (`reason`: from → to).
    VersionChange,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Eviction => "eviction",
            Kind::Cleanup => "cleanup",
            Kind::DiskLevel => "disk_level",
            Kind::CachingPaused => "caching_paused",
            Kind::CachingResumed => "caching_resumed",
            Kind::Quarantine => "quarantine",
            Kind::UpstreamFailure => "upstream_failure",
            Kind::MediaChanged => "media_changed",
            Kind::Started => "started",
            Kind::VersionChange => "version_change",
        }
    }
}

/// One event, as its row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at_unix: i64,
    pub kind: Kind,
    pub media_id: Option<i64>,
    pub chunk: Option<u64>,
    /// Chunks it concerns (an eviction, a cleanup).
    pub chunks: Option<u64>,
    pub bytes: Option<u64>,
    pub reason: Option<String>,
    /// The URL as logs show it (query redacted); filled from the index
    /// for an event that names only its media.
    pub url: Option<String>,
    /// How many times it happened within a minute.
    pub count: u64,
}

impl Event {
    /// An event of `kind` at `at_unix`, with nothing else said yet.
    pub fn new(kind: Kind, at_unix: i64) -> Event {
        Event {
            at_unix,
            kind,
            media_id: None,
            chunk: None,
            chunks: None,
            bytes: None,
            reason: None,
            url: None,
            count: 1,
        }
    }

    pub fn media(mut self, id: i64) -> Event {
        self.media_id = Some(id);
        self
    }

    pub fn chunk(mut self, index: u64) -> Event {
        self.chunk = Some(index);
        self
    }

    pub fn chunks(mut self, n: u64) -> Event {
        self.chunks = Some(n);
        self
    }

    pub fn bytes(mut self, n: u64) -> Event {
        self.bytes = Some(n);
        self
    }

    pub fn reason(mut self, why: impl Into<String>) -> Event {
        self.reason = Some(why.into());
        self
    }

    pub fn url(mut self, shown: impl Into<String>) -> Event {
        self.url = Some(shown.into());
        self
    }

    /// Whether `later` is this event again (and adds to its count).
    fn same(&self, later: &Event) -> bool {
        later.at_unix - self.at_unix < SAME_WITHIN
            && (
                self.kind,
                self.media_id,
                self.chunk,
                &self.reason,
                &self.url,
            ) == (
                later.kind,
                later.media_id,
                later.chunk,
                &later.reason,
                &later.url,
            )
            && self.chunks.is_none()
            && self.bytes.is_none()
            && later.chunks.is_none()
            && later.bytes.is_none()
    }
}

/// Upstream failures of distinct URLs recorded one by one in a minute;
/// past it they add to one row per class without a URL, so that requests
/// for ever new failing URLs cannot grow the index by a row each.
const URL_FAILURES_PER_MINUTE: u32 = 100;

/// The same event again and again is one row with a count: it is looked
/// for among the last few events only.
fn same_recent<'a>(p: &'a mut VecDeque<Event>, event: &Event) -> Option<&'a mut Event> {
    p.iter_mut().rev().take(8).find(|e| e.same(event))
}

/// Events not written to the index yet.
#[derive(Debug, Default)]
pub struct History {
    pending: Mutex<VecDeque<Event>>,
    dropped: AtomicU64,
    /// (minute, upstream failures with their URL recorded in it).
    failures: Mutex<(i64, u32)>,
}

impl History {
    /// Keeps `event` for the next write.
    pub fn record(&self, mut event: Event) {
        let mut p = self.pending.lock().unwrap();
        // Only a failure that would make a row of its own counts against
        // the URLs of the minute (one URL failing for every request does
        // not use them up).
        if event.kind == Kind::UpstreamFailure && same_recent(&mut p, &event).is_none() {
            let mut f = self.failures.lock().unwrap();
            let minute = event.at_unix.div_euclid(60);
            if f.0 != minute {
                *f = (minute, 0);
            }
            f.1 += 1;
            if f.1 > URL_FAILURES_PER_MINUTE {
                event.url = None;
            }
        }
        if let Some(e) = same_recent(&mut p, &event) {
            e.count += event.count;
            return;
        }
        if p.len() >= MAX_PENDING {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        p.push_back(event);
    }

    /// What gathered since the last take, oldest first, and how many
    /// events were dropped meanwhile.
    pub fn take(&self) -> (Vec<Event>, u64) {
        let events = std::mem::take(&mut *self.pending.lock().unwrap());
        (events.into(), self.dropped.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failure_within_a_minute_is_one_row() {
        let h = History::default();
        let fail = |at| {
            Event::new(Kind::UpstreamFailure, at)
                .reason("status 503")
                .url("http://o/a")
        };
        h.record(fail(100));
        h.record(fail(130));
        h.record(Event::new(Kind::Quarantine, 131).media(4).chunk(2));
        h.record(fail(150));
        h.record(fail(170));
        let (events, dropped) = h.take();
        assert_eq!(dropped, 0);
        let counts: Vec<_> = events.iter().map(|e| (e.kind, e.count)).collect();
        assert_eq!(
            counts,
            [
                (Kind::UpstreamFailure, 3),
                (Kind::Quarantine, 1),
                (Kind::UpstreamFailure, 1)
            ]
        );
        assert!(h.take().0.is_empty(), "taken once");
    }

    #[test]
    fn failures_of_ever_new_urls_become_one_row() {
        let h = History::default();
        for i in 0..URL_FAILURES_PER_MINUTE + 50 {
            let e = Event::new(Kind::UpstreamFailure, 120)
                .reason("status 404")
                .url(format!("http://o/{i}"));
            h.record(e);
        }
        let (events, _) = h.take();
        assert_eq!(events.len(), URL_FAILURES_PER_MINUTE as usize + 1);
        let rest = events.last().unwrap();
        assert_eq!((rest.url.as_deref(), rest.count), (None, 50));
        // A new minute: URLs again.
        h.record(Event::new(Kind::UpstreamFailure, 180).url("http://o/x"));
        assert_eq!(h.take().0[0].url.as_deref(), Some("http://o/x"));
    }

    /// One URL failing for every request is one row, and leaves the
    /// minute's URLs to other failures.
    #[test]
    fn one_url_failing_again_and_again_uses_one_place() {
        let h = History::default();
        for _ in 0..URL_FAILURES_PER_MINUTE * 3 {
            h.record(
                Event::new(Kind::UpstreamFailure, 120)
                    .reason("status 503")
                    .url("http://o/a"),
            );
        }
        h.record(Event::new(Kind::UpstreamFailure, 121).url("http://o/b"));
        let (events, _) = h.take();
        let rows: Vec<_> = events.iter().map(|e| (e.url.as_deref(), e.count)).collect();
        assert_eq!(
            rows,
            [
                (Some("http://o/a"), u64::from(URL_FAILURES_PER_MINUTE) * 3),
                (Some("http://o/b"), 1)
            ]
        );
    }

    #[test]
    fn evictions_are_never_merged_and_the_buffer_is_bounded() {
        let h = History::default();
        let evicted = || Event::new(Kind::Eviction, 5).media(1).chunks(2).bytes(10);
        h.record(evicted());
        h.record(evicted());
        assert_eq!(h.take().0.len(), 2);
        for i in 0..MAX_PENDING as u64 + 5 {
            h.record(Event::new(Kind::Quarantine, 5).media(1).chunk(i));
        }
        let (events, dropped) = h.take();
        assert_eq!((events.len(), dropped), (MAX_PENDING, 5));
    }
}
