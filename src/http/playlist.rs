//! HLS playlists and DASH manifests through spool: fetched whole (bounded),
//! kept in memory while they are valid, and rewritten per request so that
//! every URI in them points back at spool in the form the request came in
//! (`links.rs`). Segments are ordinary media: they go through the chunk
//! cache like any other file.
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
//! - **Bounded**: a playlist larger than 4 MiB is a 502 with the reason;
//!   at most 64 MiB of playlists are kept (the oldest go first).
//! - **Ranges**: a playlist is always answered 200 whole (`Accept-Ranges:
//!   none`). Its bytes depend on the request (signed links get tokens of
//!   their own), so ranges of two answers could not be stitched together;
//!   RFC 9110 §14.2 lets a server ignore Range.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tracing::debug;
use url::Url;
use warp::reply::Response;

use super::dash::{self, DashInfo};
use super::error::{error, text};
use super::hls::{self, HlsInfo};
use super::links::Links;
use crate::upstream::{redact, Upstream, UpstreamError, UpstreamRule};

/// Largest playlist read from an origin.
pub(crate) const MAX_PLAYLIST: usize = 4 * 1024 * 1024;
/// Most bytes of playlists kept in memory.
const MEMORY: usize = 64 * 1024 * 1024;
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

/// What a fetched body is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Hls(HlsInfo),
    Dash(DashInfo),
    /// Named like a playlist, but not one: served as it came.
    Other,
}

/// A playlist as the origin sent it.
struct Entry {
    body: Bytes,
    /// The URL that answered, after redirects: what its URIs resolve
    /// against.
    url: Url,
    content_type: Option<String>,
    kind: Kind,
    fetched: Instant,
    keep_for: Duration,
}

impl Entry {
    fn fresh(&self) -> bool {
        self.fetched.elapsed() < self.keep_for
    }

    fn live(&self) -> bool {
        match self.kind {
            Kind::Hls(i) => i.live(),
            Kind::Dash(i) => i.dynamic,
            Kind::Other => true,
        }
    }
}

#[derive(Default)]
struct Slot {
    /// One fetch at a time per URL.
    fetching: Arc<tokio::sync::Mutex<()>>,
    entry: Option<Arc<Entry>>,
}

#[derive(Default)]
struct Store {
    slots: HashMap<String, Slot>,
    bytes: usize,
}

/// The playlists kept in memory. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Playlists {
    store: Arc<Mutex<Store>>,
}

impl Playlists {
    /// The playlist at `url`: kept, or fetched (once for all who ask).
    async fn get(
        &self,
        upstream: &Upstream,
        url: &Url,
        rule: &UpstreamRule,
    ) -> Result<Arc<Entry>, UpstreamError> {
        let key = url.as_str().to_owned();
        let lock = {
            let mut s = self.store.lock().unwrap();
            let slot = s.slots.entry(key.clone()).or_default();
            match &slot.entry {
                Some(e) if e.fresh() => return Ok(e.clone()),
                _ => slot.fetching.clone(),
            }
        };
        let _fetching = lock.lock().await;
        // Whoever held the lock before may have fetched it meanwhile.
        if let Some(e) = self.kept(&key) {
            return Ok(e);
        }
        match fetch(upstream, url, rule).await {
            Ok(entry) => {
                let entry = Arc::new(entry);
                self.keep(&key, entry.clone());
                Ok(entry)
            }
            Err(e) => {
                let mut s = self.store.lock().unwrap();
                if s.slots.get(&key).is_some_and(|sl| sl.entry.is_none()) {
                    s.slots.remove(&key);
                }
                Err(e)
            }
        }
    }

    fn kept(&self, key: &str) -> Option<Arc<Entry>> {
        let s = self.store.lock().unwrap();
        s.slots
            .get(key)
            .and_then(|sl| sl.entry.clone())
            .filter(|e| e.fresh())
    }

    fn keep(&self, key: &str, entry: Arc<Entry>) {
        let mut s = self.store.lock().unwrap();
        let added = entry.body.len();
        let old = s
            .slots
            .entry(key.to_owned())
            .or_default()
            .entry
            .replace(entry)
            .map_or(0, |e| e.body.len());
        s.bytes = s.bytes + added - old;
        while s.bytes > MEMORY {
            let oldest = s
                .slots
                .iter()
                .filter_map(|(k, sl)| sl.entry.as_ref().map(|e| (e.fetched, k.clone())))
                .min();
            let Some((_, k)) = oldest else { break };
            // The slot goes too, so the map does not grow with every URL
            // ever asked for.
            if let Some(e) = s.slots.remove(&k).and_then(|sl| sl.entry) {
                s.bytes -= e.body.len();
            }
        }
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
    let spell = |u: &Url| links.spell(u);
    let text_of = || std::str::from_utf8(&entry.body).expect("checked when fetched");
    let (body, default_type) = match entry.kind {
        Kind::Hls(_) => (
            Bytes::from(hls::rewrite(text_of(), &entry.url, &spell)),
            HLS_TYPES[0],
        ),
        Kind::Dash(_) => match dash::rewrite(text_of(), &entry.url, &spell) {
            Ok(b) => (Bytes::from(b), DASH_TYPE),
            Err(reason) => return text(StatusCode::BAD_GATEWAY, &reason),
        },
        Kind::Other => (entry.body.clone(), "application/octet-stream"),
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
