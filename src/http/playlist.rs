//! HLS playlists and DASH manifests through spool: fetched whole (bounded),
//! kept in memory while they are valid (`playlist_store.rs`), and
//! rewritten per request so that every URI in them points back at spool
//! in the form the request came in (`links.rs`). Segments are ordinary
//! media: they go through the chunk cache like any other file.
//!
//! - **Recognised** by the name (`.m3u8`, `.m3u`, `.mpd`) before anything
//!   is fetched, or by the origin's Content-Type on the ordinary path; the
//!   body decides which (`#EXTM3U`, `<MPD`). A body that is neither is
//!   served as it came.
//! - **Kept**: VOD playlists (`#EXT-X-ENDLIST`, `PLAYLIST-TYPE:VOD`),
//!   master playlists and static manifests for an hour, so a warm replay
//!   costs the origin nothing; live ones for half their target duration
//!   (dynamic manifests: half their `minimumUpdatePeriod`, at most 2 s), so
//!   none is ever served staler than its target duration. One fetch at a
//!   time per URL: players asking meanwhile wait for it and share it.
//! - **Bounded**: a playlist larger than 4 MiB is a 502 with the reason,
//!   and so is one whose fetch takes longer than `--upstream-timeout` in
//!   all (a byte every few seconds does not hold it open). At most 64 MiB
//!   of playlists are kept, counting keys, URLs and bookkeeping, not only
//!   bodies. A rewritten answer is at most 32 times its playlist plus
//!   64 KiB, and never more than 16 MiB (502 past it: a playlist of
//!   one-character lines cannot make spool write 20 times its size); the
//!   answers being written or sent share 32 MiB (a request waits up to
//!   5 s for its share, then gets 503), each holding its share until its
//!   last byte left.
//! - **Ranges**: a playlist is always answered 200 whole (`Accept-Ranges:
//!   none`). Its bytes depend on the request (signed links get tokens of
//!   their own), so ranges of two answers could not be stitched together;
//!   RFC 9110 §14.2 lets a server ignore Range.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::cell::Cell;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;
use url::Url;
use warp::reply::Response;

use super::dash;
use super::error::{error, text};
use super::hls;
use super::links::Links;
use super::playlist_store::{Entry, Kind, Store};
use crate::upstream::{redact, Upstream, UpstreamError, UpstreamRule};

/// Largest playlist read from an origin.
pub(crate) const MAX_PLAYLIST: usize = 4 * 1024 * 1024;
/// Most bytes of playlists kept in memory (bodies, keys, URLs and
/// bookkeeping).
const MEMORY: usize = 64 * 1024 * 1024;
/// A rewritten answer is at most this many times its playlist...
const ANSWER_MULTIPLE: usize = 32;
/// ... plus this ...
const ANSWER_SLACK: usize = 64 * 1024;
/// ... and never more than this.
const ANSWER_CAP: usize = 16 * 1024 * 1024;
/// Memory for answers being rewritten or sent, across all requests.
const ANSWER_BUDGET: usize = 32 * 1024 * 1024;
/// How long a request waits for its share of that before 503.
const BUDGET_WAIT: Duration = Duration::from_secs(5);
/// How long a playlist that never changes is kept.
const KEEP_VOD: Duration = Duration::from_secs(3600);

const HLS_TYPES: [&str; 4] = [
    "application/vnd.apple.mpegurl",
    "application/x-mpegurl",
    "audio/mpegurl",
    "audio/x-mpegurl",
];
const DASH_TYPE: &str = "application/dash+xml";

/// Whether a URL's name says playlist or manifest.
pub(crate) fn named(url: &Url) -> bool {
    crate::signing::is_playlist_name(url)
}

/// Whether a Content-Type says playlist or manifest.
pub(crate) fn typed(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    HLS_TYPES.contains(&essence.as_str()) || essence == DASH_TYPE
}

/// The playlists kept in memory, and the memory their answers may use.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Playlists {
    store: Store,
    /// Answers being rewritten or sent, in KiB.
    budget: Arc<Semaphore>,
}

impl Default for Playlists {
    fn default() -> Playlists {
        Playlists {
            store: Store::new(MEMORY),
            budget: Arc::new(Semaphore::new(ANSWER_BUDGET / 1024)),
        }
    }
}

impl Playlists {
    /// The playlist at `url`, fetched under `rule`: kept, or fetched
    /// (once for all who ask), within `--upstream-timeout` in all. One
    /// kept from another request's fetch is used only if its redirects
    /// landed where `rule` allows.
    async fn get(
        &self,
        upstream: &Upstream,
        url: &Url,
        rule: &UpstreamRule,
    ) -> Result<Arc<Entry>, UpstreamError> {
        let deadline = upstream.timeout();
        let entry = self
            .store
            .get(url.as_str(), || async {
                tokio::time::timeout(deadline, fetch(upstream, url, rule))
                    .await
                    .map_err(|_| UpstreamError::Timeout)?
            })
            .await?;
        upstream.check_landing(rule, url, &entry.url)?;
        Ok(entry)
    }
}

/// Fetches a playlist whole, at most [`MAX_PLAYLIST`] bytes.
async fn fetch(
    upstream: &Upstream,
    url: &Url,
    rule: &UpstreamRule,
) -> Result<Entry, UpstreamError> {
    let too_large = || {
        UpstreamError::Protocol(format!(
            "playlist larger than {} MiB",
            MAX_PLAYLIST / 1024 / 1024
        ))
    };
    let (mut resp, final_url) = upstream.get_following(url, rule, None).await?;
    if resp.status() != StatusCode::OK {
        return Err(UpstreamError::Protocol(format!(
            "playlist answered {}",
            resp.status()
        )));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_PLAYLIST as u64)
    {
        return Err(too_large());
    }
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Some(piece) = upstream.next_piece(&mut resp).await? {
        if body.len() + piece.len() > MAX_PLAYLIST {
            return Err(too_large());
        }
        body.extend_from_slice(&piece);
    }
    let kind = match std::str::from_utf8(&body) {
        Ok(t) if hls::sniff(&body) => Kind::Hls(hls::info(t)),
        Ok(t) if dash::sniff(&body) => Kind::Dash(dash::info(t)),
        _ => Kind::Other,
    };
    let keep_for = match kind {
        Kind::Hls(i) if !i.live() => KEEP_VOD,
        Kind::Hls(i) => {
            Duration::from_secs_f64((i.target_duration.unwrap_or(2.0) / 2.0).clamp(0.5, 30.0))
        }
        Kind::Dash(i) if !i.dynamic => KEEP_VOD,
        Kind::Dash(i) => {
            Duration::from_secs_f64((i.minimum_update_period.unwrap_or(2.0) / 2.0).clamp(0.5, 2.0))
        }
        Kind::Other => Duration::ZERO,
    };
    debug!(url = %redact(url), bytes = body.len(), ?kind, "playlist fetched");
    Ok(Entry {
        body: body.into(),
        url: final_url,
        content_type,
        kind,
        fetched: Instant::now(),
        keep_for,
    })
}

/// The answer for a playlist at `url`, its URIs spelled by `links`.
pub(crate) async fn answer(
    playlists: &Playlists,
    upstream: &Upstream,
    url: &Url,
    rule: &UpstreamRule,
    links: &Links,
    method: &Method,
) -> Response {
    let entry = match playlists.get(upstream, url, rule).await {
        Ok(e) => e,
        Err(e) => return error(&e),
    };
    let (body, default_type) = match entry.kind {
        Kind::Other => (entry.body.clone(), "application/octet-stream"),
        kind => match rewritten(playlists, &entry, kind, links).await {
            Ok(b) => b,
            Err(r) => return r,
        },
    };
    let mut h = HeaderMap::new();
    let ctype = entry
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or(HeaderValue::from_static(default_type));
    h.insert(header::CONTENT_TYPE, ctype);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    if entry.live() {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    let body = if *method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    let mut r = Response::new(body.into());
    r.headers_mut().extend(h);
    r
}

/// The most bytes the answer for a playlist of `len` bytes may take.
fn answer_bound(len: usize) -> usize {
    len.saturating_mul(ANSWER_MULTIPLE)
        .saturating_add(ANSWER_SLACK)
        .min(ANSWER_CAP)
}

/// Bytes that hold their share of the answer budget until the last of
/// them is dropped (once hyper wrote them out).
struct Held {
    text: String,
    _share: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

/// The playlist with its URIs spelled by `links`, within the bound and
/// the shared budget; the error answer when it does not fit.
async fn rewritten(
    playlists: &Playlists,
    entry: &Entry,
    kind: Kind,
    links: &Links,
) -> Result<(Bytes, &'static str), Response> {
    let bound = answer_bound(entry.body.len());
    let units = bound.div_ceil(1024) as u32;
    let acquire = playlists.budget.clone().acquire_many_owned(units);
    let Ok(Ok(mut share)) = tokio::time::timeout(BUDGET_WAIT, acquire).await else {
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "playlist rewriting is at its memory budget; try again",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    };
    // Spelled bytes are counted as they are made: past the bound nothing
    // more is spelled (no token minted), and the answer is refused.
    let spent = Cell::new(0usize);
    let spell = |u: &Url| {
        if spent.get() > bound {
            return String::new();
        }
        let s = links.spell(u);
        spent.set(spent.get() + s.len());
        s
    };
    let text_of = std::str::from_utf8(&entry.body).expect("checked when fetched");
    let (out, default_type) = match kind {
        Kind::Hls(_) => (hls::rewrite(text_of, &entry.url, &spell), HLS_TYPES[0]),
        Kind::Dash(_) => match dash::rewrite(text_of, &entry.url, &spell) {
            Ok(b) => (b, DASH_TYPE),
            Err(reason) => return Err(text(StatusCode::BAD_GATEWAY, &reason)),
        },
        Kind::Other => unreachable!("served as it came"),
    };
    if spent.get() > bound || out.len() > bound {
        return Err(text(
            StatusCode::BAD_GATEWAY,
            &format!(
                "the playlist ({} bytes) would be rewritten to more than {bound} bytes \
                 ({ANSWER_MULTIPLE} times its size plus {} KiB, at most {} MiB)",
                entry.body.len(),
                ANSWER_SLACK / 1024,
                ANSWER_CAP / 1024 / 1024
            ),
        ));
    }
    // Keep the share of what the answer holds; give back the rest.
    let keep = (out.len().div_ceil(1024) as u32).max(1);
    drop(share.split((units - keep.min(units)) as usize));
    let held = Held {
        text: out,
        _share: share,
    };
    Ok((Bytes::from_owner(held), default_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(typed(Some("application/vnd.apple.mpegurl")));
        assert!(typed(Some("Application/X-MpegURL; charset=utf-8")));
        assert!(typed(Some("application/dash+xml")));
        assert!(!typed(Some("video/mp2t")));
        assert!(!typed(None));
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(named(&u("http://h/a/index.M3U8?x=1")));
        assert!(named(&u("http://h/manifest.mpd")));
        assert!(!named(&u("http://h/seg.ts")));
    }
}
