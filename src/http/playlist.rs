//! HLS playlists and DASH manifests answered through spool: the cache
//! keeps them (`cache/playlists.rs`), this rewrites them per request so
//! that every URI in them points back at spool in the form the request
//! came in (`links.rs`). Segments are ordinary media: they go through the
//! chunk cache like any other file.
//!
//! - **Recognised** by the name (`.m3u8`, `.m3u`, `.mpd`) before anything
//!   is fetched, or by the origin's Content-Type on the ordinary path; the
//!   body decides which (`#EXTM3U`, `<MPD`). A body that is neither is
//!   served as it came.
//! - **Bounded**: a rewritten answer is at most 32 times its playlist plus
//!   64 KiB, and never more than 16 MiB (502 past it: a playlist of
//!   one-character lines cannot make spool write 20 times its size); the
//!   answers being written or sent share 32 MiB (a request waits up to
//!   5 s for its share, then gets 503), each holding its share until its
//!   last byte left. Fetch failures (too large, too slow) are 502 with the
//!   reason.
//! - **Ranges**: a playlist is always answered 200 whole (`Accept-Ranges:
//!   none`). Its bytes depend on the request (signed links get tokens of
//!   their own), so ranges of two answers could not be stitched together;
//!   RFC 9110 §14.2 lets a server ignore Range.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;
use warp::reply::Response;

use super::error::{error, text};
use super::links::Links;
use crate::cache::{Playlist, Playlists};
use crate::manifest::{dash, hls, Kind, DASH_TYPE, HLS_TYPES};
use crate::upstream::UpstreamRule;

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
/// The playlists the cache keeps, and the memory their rewritten
/// answers may use. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Answers {
    playlists: Playlists,
    /// The public URL's path prefix ("" for none), before every
    /// root-relative URI an answer spells.
    prefix: Arc<str>,
    /// Answers being rewritten or sent, in KiB.
    budget: Arc<Semaphore>,
}

impl Answers {
    pub fn new(playlists: Playlists, prefix: &str) -> Answers {
        Answers {
            playlists,
            prefix: prefix.into(),
            budget: Arc::new(Semaphore::new(ANSWER_BUDGET / 1024)),
        }
    }
}

/// The answer for a playlist at `url`, its URIs spelled by `links`.
pub(crate) async fn answer(
    answers: &Answers,
    url: &Url,
    rule: &UpstreamRule,
    links: &Links,
    method: &Method,
) -> Response {
    let entry = match answers.playlists.get(url, rule).await {
        Ok(e) => e,
        Err(e) => return error(&e),
    };
    let (body, default_type) = match entry.kind {
        Kind::Other => (entry.body.clone(), "application/octet-stream"),
        kind => match rewritten(answers, &entry, kind, links).await {
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
    answers: &Answers,
    entry: &Playlist,
    kind: Kind,
    links: &Links,
) -> Result<(Bytes, &'static str), Response> {
    let bound = answer_bound(entry.body.len());
    let units = bound.div_ceil(1024) as u32;
    let acquire = answers.budget.clone().acquire_many_owned(units);
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
        let mut s = links.spell(u);
        if s.starts_with('/') && !answers.prefix.is_empty() {
            s.insert_str(0, &answers.prefix);
        }
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
