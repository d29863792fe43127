//! Playlists and manifests kept in memory, below HTTP: fetched whole
//! (bounded) through the upstream client, kept while they are valid, one
//! fetch per URL at a time, evicted oldest first past a budget. HTTP
//! rewrites what it gets from here (`http/playlist.rs`).
//!
//! - **Kept**: VOD playlists (`#EXT-X-ENDLIST`, `PLAYLIST-TYPE:VOD`),
//!   master playlists and static manifests for an hour, so a warm replay
//!   costs the origin nothing; live ones for half their target duration
//!   (dynamic manifests: half their `minimumUpdatePeriod`, at most 2 s), so
//!   none is ever served staler than its target duration. Players asking
//!   while a fetch runs wait for it and share it; a failed fetch answers
//!   for its URL for a second, so they share its error too.
//! - **Bounded**: a playlist larger than 4 MiB is an error with the
//!   reason, and so is one whose fetch takes longer than
//!   `--upstream-timeout` in all (a byte every few seconds does not hold
//!   it open). At most 64 MiB of playlists are kept, counting everything
//!   one holds (its key, final URL, type and body, and a fixed cost for
//!   the bookkeeping, so 2000 empty playlists cost as much as they weigh).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{header, StatusCode};
use tracing::debug;
use url::Url;

use crate::manifest::Kind;
use crate::upstream::{redact, Upstream, UpstreamError, UpstreamRule};

/// Largest playlist read from an origin.
pub(crate) const MAX_PLAYLIST: usize = 4 * 1024 * 1024;
/// Most bytes of playlists kept in memory (bodies, keys, URLs and
/// bookkeeping).
const MEMORY: usize = 64 * 1024 * 1024;
/// How long a playlist that never changes is kept.
const KEEP_VOD: Duration = Duration::from_secs(3600);

/// Bookkeeping of one kept playlist beyond the bytes it holds.
const ENTRY_OVERHEAD: usize = 512;
/// How long a failed fetch answers for its URL without asking again.
const KEEP_FAILURE: Duration = Duration::from_secs(1);
/// How often what no longer answers (stale playlists, old failures) is
/// swept out, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A playlist as the origin sent it.
pub(crate) struct Playlist {
    pub body: bytes::Bytes,
    /// The URL that answered, after redirects: what its URIs resolve
    /// against.
    pub url: Url,
    pub content_type: Option<String>,
    pub kind: Kind,
    pub fetched: Instant,
    pub keep_for: Duration,
}

impl Playlist {
    fn fresh(&self) -> bool {
        self.fetched.elapsed() < self.keep_for
    }

    /// Whether it can change while it is played.
    pub fn live(&self) -> bool {
        self.kind.live()
    }

    /// What keeping it costs, with its key.
    fn cost(&self, key: &str) -> usize {
        ENTRY_OVERHEAD
            + key.len()
            + self.body.len()
            + self.url.as_str().len()
            + self.content_type.as_ref().map_or(0, String::len)
    }
}

/// What a slot holds besides its fetch lock.
enum Kept {
    Playlist(Arc<Playlist>),
    Failed(Instant, UpstreamError),
}

impl Kept {
    fn since(&self) -> Instant {
        match self {
            Kept::Playlist(e) => e.fetched,
            Kept::Failed(at, _) => *at,
        }
    }

    fn cost(&self, key: &str) -> usize {
        match self {
            Kept::Playlist(e) => e.cost(key),
            Kept::Failed(..) => ENTRY_OVERHEAD + key.len(),
        }
    }

    /// Whether it still answers for its URL.
    fn live(&self) -> bool {
        self.answer().is_some()
    }

    /// The answer it still gives: a fresh playlist, a recent failure.
    fn answer(&self) -> Option<Result<Arc<Playlist>, UpstreamError>> {
        match self {
            Kept::Playlist(e) if e.fresh() => Some(Ok(e.clone())),
            Kept::Failed(at, e) if at.elapsed() < KEEP_FAILURE => Some(Err(e.clone())),
            _ => None,
        }
    }
}

#[derive(Default)]
struct UrlState {
    /// One fetch at a time per URL.
    fetching: Arc<tokio::sync::Mutex<()>>,
    kept: Option<Kept>,
}

struct Inner {
    slots: HashMap<String, UrlState>,
    /// What the kept playlists and failures cost, in bytes.
    bytes: usize,
    /// The most they may cost.
    budget: usize,
    /// When stale ones were last swept out.
    swept: Instant,
}

/// The playlists kept in memory, and the client that fetches them.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Playlists {
    upstream: Upstream,
    store: Store,
}

impl Playlists {
    pub fn new(upstream: Upstream) -> Playlists {
        Playlists {
            upstream,
            store: Store::new(MEMORY),
        }
    }

    /// The playlist at `url`, fetched under `rule`: kept, or fetched
    /// (once for all who ask), within `--upstream-timeout` in all. One
    /// kept from another request's fetch is used only if its redirects
    /// landed where `rule` allows.
    pub async fn get(
        &self,
        url: &Url,
        rule: &UpstreamRule,
    ) -> Result<Arc<Playlist>, UpstreamError> {
        let upstream = &self.upstream;
        let deadline = upstream.timeout();
        let playlist = self
            .store
            .get(url.as_str(), || async {
                tokio::time::timeout(deadline, fetch(upstream, url, rule))
                    .await
                    .map_err(|_| UpstreamError::Timeout)?
            })
            .await?;
        upstream.check_landing(rule, url, &playlist.url)?;
        Ok(playlist)
    }
}

/// Fetches a playlist whole, at most [`MAX_PLAYLIST`] bytes.
async fn fetch(
    upstream: &Upstream,
    url: &Url,
    rule: &UpstreamRule,
) -> Result<Playlist, UpstreamError> {
    let too_large = || {
        UpstreamError::Protocol(format!(
            "playlist larger than {} MiB",
            MAX_PLAYLIST / 1024 / 1024
        ))
    };
    let (mut answer, final_url) = upstream.get_following(url, rule, None).await?;
    if answer.status() != StatusCode::OK {
        return Err(UpstreamError::Protocol(format!(
            "playlist answered {}",
            answer.status()
        )));
    }
    if answer
        .content_length()
        .is_some_and(|n| n > MAX_PLAYLIST as u64)
    {
        return Err(too_large());
    }
    let content_type = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Some(piece) = answer.next_piece().await? {
        if body.len() + piece.len() > MAX_PLAYLIST {
            return Err(too_large());
        }
        body.extend_from_slice(&piece);
    }
    let kind = Kind::of(&body);
    debug!(url = %redact(url), bytes = body.len(), ?kind, "playlist fetched");
    Ok(Playlist {
        body: body.into(),
        url: final_url,
        content_type,
        kind,
        fetched: Instant::now(),
        keep_for: keep_for(kind),
    })
}

/// How long a playlist of `kind` answers for its URL.
fn keep_for(kind: Kind) -> Duration {
    match kind {
        Kind::Hls(i) if !i.live() => KEEP_VOD,
        Kind::Hls(i) => {
            Duration::from_secs_f64((i.target_duration.unwrap_or(2.0) / 2.0).clamp(0.5, 30.0))
        }
        Kind::Dash(i) if !i.dynamic => KEEP_VOD,
        Kind::Dash(i) => {
            Duration::from_secs_f64((i.minimum_update_period.unwrap_or(2.0) / 2.0).clamp(0.5, 2.0))
        }
        Kind::Other => Duration::ZERO,
    }
}

/// The kept playlists and failures, by URL.
#[derive(Clone)]
struct Store {
    inner: Arc<Mutex<Inner>>,
}

impl Store {
    fn new(budget: usize) -> Store {
        Store {
            inner: Arc::new(Mutex::new(Inner {
                slots: HashMap::new(),
                bytes: 0,
                budget,
                swept: Instant::now(),
            })),
        }
    }

    /// The playlist at `key`: kept, or fetched by `fetch` (once for all
    /// who ask at the same time).
    async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<Arc<Playlist>, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Playlist, UpstreamError>>,
    {
        let lock = {
            let mut s = self.inner.lock().unwrap();
            let slot = s.slots.entry(key.to_owned()).or_default();
            if let Some(answer) = slot.kept.as_ref().and_then(Kept::answer) {
                return answer;
            }
            slot.fetching.clone()
        };
        // A request that goes away while it waits or fetches (a player
        // hanging up) leaves no empty slot behind: slots without a kept
        // playlist are not counted, so they must not stay.
        let _tidy = Tidy {
            store: self,
            key,
            lock: lock.clone(),
        };
        let _fetching = lock.lock().await;
        // Whoever held the lock before may have fetched it meanwhile, or
        // failed: both answer for it.
        if let Some(answer) = self.kept(key) {
            return answer;
        }
        let kept = match fetch().await {
            Ok(entry) => Kept::Playlist(Arc::new(entry)),
            // A refusal depends on who asked (the rule of their link):
            // it is not shared.
            Err(e @ UpstreamError::Denied(_)) => {
                let mut s = self.inner.lock().unwrap();
                if s.slots.get(key).is_some_and(|sl| sl.kept.is_none()) {
                    s.slots.remove(key);
                }
                return Err(e);
            }
            Err(e) => Kept::Failed(Instant::now(), e),
        };
        let answer = match &kept {
            Kept::Playlist(e) => Ok(e.clone()),
            Kept::Failed(_, e) => Err(e.clone()),
        };
        self.keep(key, kept);
        answer
    }

    /// Removes `key`'s slot if it holds nothing and nobody else waits on
    /// it (`holders`: the references to its lock held by the caller).
    fn tidy(&self, key: &str, holders: usize) {
        let mut s = self.inner.lock().unwrap();
        if s.slots
            .get(key)
            .is_some_and(|sl| sl.kept.is_none() && Arc::strong_count(&sl.fetching) <= holders + 1)
        {
            s.slots.remove(key);
        }
    }

    fn kept(&self, key: &str) -> Option<Result<Arc<Playlist>, UpstreamError>> {
        let s = self.inner.lock().unwrap();
        s.slots.get(key)?.kept.as_ref()?.answer()
    }

    fn keep(&self, key: &str, kept: Kept) {
        let mut guard = self.inner.lock().unwrap();
        let s = &mut *guard;
        let added = kept.cost(key);
        let slot = s.slots.entry(key.to_owned()).or_default();
        let old = slot.kept.replace(kept).map_or(0, |k| k.cost(key));
        s.bytes = s.bytes + added - old;
        // What no longer answers only holds memory: a later request
        // fetches anew either way. Swept at most once a second, and never
        // a slot whose fetch is under way (its lock is held).
        if s.swept.elapsed() >= SWEEP_EVERY {
            s.swept = Instant::now();
            let mut freed = 0;
            s.slots.retain(|k, sl| {
                let idle = Arc::strong_count(&sl.fetching) == 1;
                match &sl.kept {
                    Some(kept) if idle && !kept.live() => {
                        freed += kept.cost(k);
                        false
                    }
                    _ => true,
                }
            });
            s.bytes -= freed;
        }
        while s.bytes > s.budget {
            let oldest = s
                .slots
                .iter()
                .filter_map(|(k, sl)| sl.kept.as_ref().map(|e| (e.since(), k.clone())))
                .min();
            let Some((_, k)) = oldest else { break };
            // The slot goes too, so the map does not grow with every URL
            // ever asked for.
            if let Some(kept) = s.slots.remove(&k).and_then(|sl| sl.kept) {
                s.bytes -= kept.cost(&k);
            }
        }
    }

    /// What is kept: playlists and failures, and what they cost.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let s = self.inner.lock().unwrap();
        (s.slots.len(), s.bytes)
    }
}

/// Tidies a request's slot when the request ends, however it ends.
struct Tidy<'a> {
    store: &'a Store,
    key: &'a str,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Tidy<'_> {
    fn drop(&mut self) {
        // This guard's reference, and the caller's own clone of the lock.
        let _ = &self.lock;
        self.store.tidy(self.key, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str, keep_for: Duration) -> Playlist {
        Playlist {
            body: bytes::Bytes::from(body.to_owned()),
            url: Url::parse("http://h/a.m3u8").unwrap(),
            content_type: None,
            kind: Kind::Other,
            fetched: Instant::now(),
            keep_for,
        }
    }

    #[tokio::test]
    async fn empty_playlists_count_and_are_evicted() {
        let store = Store::new(64 * 1024);
        for i in 0..2000 {
            let key = format!("http://h/{i}.m3u8?{}", "q".repeat(100));
            let got = store
                .get(&key, || async { Ok(entry("", Duration::from_secs(60))) })
                .await;
            assert!(got.is_ok());
        }
        let (slots, bytes) = store.held();
        assert!(bytes <= 64 * 1024, "{bytes}");
        assert!(slots < 2000 && slots > 50, "{slots}");
    }

    #[tokio::test]
    async fn stale_ones_are_swept() {
        let store = Store::new(1 << 20);
        for i in 0..100 {
            let key = format!("http://h/{i}.m3u8");
            let _ = store
                .get(&key, || async { Ok(entry("", Duration::ZERO)) })
                .await;
        }
        store
            .get("fresh", || async {
                Ok(entry("x", Duration::from_secs(3600)))
            })
            .await
            .unwrap();
        assert!(store.held().0 >= 100);
        std::thread::sleep(SWEEP_EVERY);
        store
            .get("next", || async {
                Ok(entry("y", Duration::from_secs(3600)))
            })
            .await
            .unwrap();
        let (slots, bytes) = store.held();
        assert_eq!(slots, 2, "the fresh one and the new one stay");
        assert!(bytes < 2 * (ENTRY_OVERHEAD + 64), "{bytes}");
    }

    /// Requests dropped while their fetch runs (players hanging up) leave
    /// no slot behind.
    #[tokio::test]
    async fn abandoned_requests_leave_no_slot() {
        let store = Store::new(1 << 20);
        for i in 0..100 {
            let key = format!("http://h/{i}.m3u8");
            let got = tokio::time::timeout(
                Duration::from_millis(1),
                store.get(&key, std::future::pending),
            )
            .await;
            assert!(got.is_err());
        }
        assert_eq!(store.held(), (0, 0));
    }

    #[tokio::test]
    async fn a_failure_is_shared_for_a_moment() {
        let store = Store::new(1 << 20);
        let asked = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..3 {
            let got = store
                .get("k", || async {
                    asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Err(UpstreamError::Timeout)
                })
                .await;
            assert_eq!(got.err(), Some(UpstreamError::Timeout));
        }
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 1);
        // A refusal depends on who asked: each asks for itself.
        for _ in 0..2 {
            let got = store
                .get("d", || async {
                    asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Err(UpstreamError::Denied("not for you".into()))
                })
                .await;
            assert!(matches!(got, Err(UpstreamError::Denied(_))));
        }
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 3);
        // A kept playlist answers while fresh.
        let got = store
            .get("p", || async {
                Ok(entry("#EXTM3U", Duration::from_secs(60)))
            })
            .await
            .unwrap();
        let again = store
            .get("p", || async { panic!("fetched again while fresh") })
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&got, &again));
    }
}
