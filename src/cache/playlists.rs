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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{header, StatusCode};
use tracing::{debug, warn};
use url::Url;

use super::gates::Gates;
use super::lru::Lru;
use super::titles::Titles;
use crate::manifest::Kind;
use crate::store::{unix_now, Index, PlaylistRow};
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
    /// The origin's validators (ETag, Last-Modified).
    pub etag: Option<String>,
    pub last_modified: Option<String>,
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

/// What a URL answers with for a while.
enum Kept {
    Playlist(Arc<Playlist>),
    Failed(Instant, UpstreamError),
}

impl Kept {
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

/// The playlists kept in memory, the client that fetches them, and the
/// index that keeps those that never change. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Playlists {
    upstream: Upstream,
    store: Store,
    index: Index,
    titles: Titles,
}

impl Playlists {
    pub fn new(upstream: Upstream, index: Index, titles: Titles) -> Playlists {
        Playlists {
            upstream,
            store: Store::new(MEMORY),
            titles,
            index,
        }
    }

    /// The playlist at `url`, fetched under `rule`: kept, or fetched
    /// (once for all who ask), within `--upstream-timeout` in all. One
    /// kept from another request's fetch is used only if its redirects
    /// landed where `rule` allows.
    ///
    /// One that never changes (VOD, master, static) is also kept in the
    /// index when fetched, and answers from there when the origin cannot
    /// (unreachable, timed out, a server error), after a restart too: a
    /// cached title plays offline. An origin that says the playlist is
    /// gone (404, 410) or refuses it is believed.
    pub async fn get(
        &self,
        url: &Url,
        rule: &UpstreamRule,
    ) -> Result<Arc<Playlist>, UpstreamError> {
        let upstream = &self.upstream;
        let deadline = upstream.timeout();
        // The copy kept in the index goes by the URL's cache key: a title
        // whose links are signed anew for each player plays offline with
        // a new link too. In memory, each URL is its own (the playlist
        // fetched with a new signature names segments signed anew).
        let key = upstream.cache_key(url);
        let key = key.as_ref().unwrap_or(url);
        // Whether a kept copy came with this very URL (where it landed is
        // this URL), or no signature is involved (neither this URL nor
        // where the copy landed has a parameter the settings ignore).
        let own =
            |k: &Playlist| k.url == *url || key == url && upstream.cache_key(&k.url).is_none();
        let fetched = self
            .store
            .get(url.as_str(), || async {
                // A copy kept in the index is asked for conditionally (a
                // 304 answers from it) only when it is this URL's own: one
                // fetched with another signature may name segments signed
                // for another player.
                let kept = self.kept(key).await.filter(|k| own(k));
                let fetched = fetch(upstream, url, rule, kept.as_deref());
                let playlist = tokio::time::timeout(deadline, fetched)
                    .await
                    .map_err(|_| UpstreamError::Timeout)??;
                match playlist {
                    Fetched::New(p) => {
                        self.keep(key, &p).await;
                        self.titles.record(url, &p.url, p.kind, &p.body).await;
                        Ok(p)
                    }
                    Fetched::Unchanged(p) => {
                        debug!(url = %redact(url), "the origin says the kept playlist did not change");
                        if let Err(e) = self.index.touch_playlist(key.as_str(), unix_now()).await {
                            warn!(url = %redact(url), error = %e, "cannot mark the kept playlist fresh");
                        }
                        self.titles.record(url, &p.url, p.kind, &p.body).await;
                        Ok(p)
                    }
                }
            })
            .await;
        let playlist = match fetched {
            Ok(p) => p,
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => match self.kept(key).await {
                Some(p) => {
                    debug!(url = %redact(url), error = %e, "origin unavailable; the kept playlist answers");
                    // In memory too: the next players do not wait for an
                    // origin that times out (it never changes anyway);
                    // not another signature's copy, which this URL asks
                    // the origin for again as soon as it answers.
                    if own(&p) {
                        self.store.keep(url.as_str(), Kept::Playlist(p.clone()));
                    }
                    p
                }
                None => return Err(e),
            },
        };
        upstream.check_landing(rule, url, &playlist.url)?;
        Ok(playlist)
    }

    /// The titles what is fetched here is recorded in.
    pub fn titles(&self) -> &Titles {
        &self.titles
    }

    /// Keeps a playlist that never changes in the index, under `url` (its
    /// cache key).
    async fn keep(&self, url: &Url, playlist: &Playlist) {
        if playlist.live() {
            return;
        }
        let row = PlaylistRow {
            url: url.as_str().to_owned(),
            final_url: playlist.url.as_str().to_owned(),
            content_type: playlist.content_type.clone(),
            body: playlist.body.to_vec(),
            fetched_unix: unix_now(),
            etag: playlist.etag.clone(),
            last_modified: playlist.last_modified.clone(),
        };
        if let Err(e) = self.index.keep_playlist(row).await {
            warn!(url = %redact(url), error = %e, "cannot keep the playlist in the index");
        }
    }

    /// The playlist the index kept for `url`, if any (and still one that
    /// never changes, with a final URL that parses).
    async fn kept(&self, url: &Url) -> Option<Arc<Playlist>> {
        let row = match self.index.kept_playlist(url.as_str()).await {
            Ok(row) => row?,
            Err(e) => {
                warn!(error = %e, "cannot read kept playlists");
                return None;
            }
        };
        let kind = Kind::of(&row.body);
        if kind.live() || row.body.len() > MAX_PLAYLIST {
            return None;
        }
        Some(Arc::new(Playlist {
            body: row.body.into(),
            url: Url::parse(&row.final_url).ok()?,
            content_type: row.content_type,
            kind,
            fetched: Instant::now(),
            keep_for: keep_for(kind),
            etag: row.etag,
            last_modified: row.last_modified,
        }))
    }
}

/// What a fetch found.
enum Fetched {
    New(Playlist),
    /// The origin answered 304 for the kept copy: that copy, fresh again.
    Unchanged(Playlist),
}

/// Fetches a playlist whole, at most [`MAX_PLAYLIST`] bytes; with a
/// `kept` copy that has validators, conditionally.
async fn fetch(
    upstream: &Upstream,
    url: &Url,
    rule: &UpstreamRule,
    kept: Option<&Playlist>,
) -> Result<Fetched, UpstreamError> {
    let too_large = || {
        UpstreamError::Protocol(format!(
            "playlist larger than {} MiB",
            MAX_PLAYLIST / 1024 / 1024
        ))
    };
    let validators = kept.filter(|k| k.etag.is_some() || k.last_modified.is_some());
    let (mut answer, final_url) = match validators {
        Some(k) => {
            upstream
                .get_following_if(url, rule, k.etag.as_deref(), k.last_modified.as_deref())
                .await?
        }
        None => upstream.get_following(url, rule, None).await?,
    };
    if let (StatusCode::NOT_MODIFIED, Some(k)) = (answer.status(), validators) {
        return Ok(Fetched::Unchanged(Playlist {
            body: k.body.clone(),
            url: final_url,
            content_type: k.content_type.clone(),
            kind: k.kind,
            fetched: Instant::now(),
            keep_for: k.keep_for,
            etag: k.etag.clone(),
            last_modified: k.last_modified.clone(),
        }));
    }
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
    let text = |name: header::HeaderName| {
        answer
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = text(header::CONTENT_TYPE);
    let etag = text(header::ETAG);
    let last_modified = text(header::LAST_MODIFIED);
    let mut body = Vec::new();
    while let Some(piece) = answer.next_piece().await? {
        if body.len() + piece.len() > MAX_PLAYLIST {
            return Err(too_large());
        }
        body.extend_from_slice(&piece);
    }
    let kind = Kind::of(&body);
    debug!(url = %redact(url), bytes = body.len(), ?kind, "playlist fetched");
    Ok(Fetched::New(Playlist {
        body: body.into(),
        url: final_url,
        content_type,
        kind,
        fetched: Instant::now(),
        keep_for: keep_for(kind),
        etag,
        last_modified,
    }))
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

/// The kept playlists and failures, by URL, and the fetches under way.
#[derive(Clone)]
struct Store {
    kept: Arc<Mutex<KeptMap>>,
    /// One fetch at a time per URL.
    fetching: Gates,
}

/// The kept ones, and when what no longer answers was last swept out.
struct KeptMap {
    lru: Lru<String, Kept>,
    swept: Instant,
}

impl Store {
    fn new(budget: usize) -> Store {
        Store {
            kept: Arc::new(Mutex::new(KeptMap {
                lru: Lru::new(budget as u64),
                swept: Instant::now(),
            })),
            fetching: Gates::default(),
        }
    }

    /// The playlist at `key`: kept, or fetched by `fetch` (once for all
    /// who ask at the same time).
    async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<Arc<Playlist>, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Playlist, UpstreamError>>,
    {
        if let Some(answer) = self.kept(key) {
            return answer;
        }
        let _fetching = self.fetching.enter(key).await;
        // Whoever went before may have fetched it meanwhile, or failed:
        // both answer for it.
        if let Some(answer) = self.kept(key) {
            return answer;
        }
        let kept = match fetch().await {
            Ok(entry) => Kept::Playlist(Arc::new(entry)),
            // A refusal depends on who asked (the rule of their link):
            // it is not shared.
            Err(e @ UpstreamError::Denied(_)) => return Err(e),
            Err(e) => Kept::Failed(Instant::now(), e),
        };
        let answer = match &kept {
            Kept::Playlist(e) => Ok(e.clone()),
            Kept::Failed(_, e) => Err(e.clone()),
        };
        self.keep(key, kept);
        answer
    }

    fn kept(&self, key: &str) -> Option<Result<Arc<Playlist>, UpstreamError>> {
        let mut k = self.kept.lock().unwrap();
        k.lru.get(key)?.answer()
    }

    fn keep(&self, key: &str, kept: Kept) {
        let mut guard = self.kept.lock().unwrap();
        let k = &mut *guard;
        let cost = kept.cost(key) as u64;
        // Past the budget, the least recently used go.
        let _ = k.lru.insert(key.to_owned(), kept, cost);
        // What no longer answers only holds memory: a later request
        // fetches anew either way. Swept at most once a second.
        if k.swept.elapsed() >= SWEEP_EVERY {
            k.swept = Instant::now();
            k.lru.remove_where(|_, kept| !kept.live());
        }
    }

    /// What is kept: playlists and failures, and what they cost.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let k = self.kept.lock().unwrap();
        (k.lru.len(), k.lru.cost() as usize)
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
            etag: None,
            last_modified: None,
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
        // As if a sweep's interval had passed.
        store.kept.lock().unwrap().swept -= SWEEP_EVERY;
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
        assert_eq!(store.fetching.len(), 0);
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
