//! Warming: reading what a media lacks the way a player would
//! (`Cache::produce`: the same single flight, runs, read-ahead and
//! writes; the bytes go nowhere), and listing the files of a title's
//! chosen renditions for a prefetch to warm. `prefetch.rs` runs jobs of
//! them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use url::Url;

use super::body::{BodyPart, Player, Span};
use super::fill::FillPace;
use super::handle::Cache;
use super::media::{Media, Slot};
use super::open::Opened;
use crate::manifest::{self, Variant};
use crate::upstream::UpstreamRule;

/// How long a finished transfer waits for its chunks to reach the disk.
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// Most files one title's prefetch warms.
pub(super) const MAX_TITLE_FILES: usize = 200_000;

/// Why a media was not warmed whole.
#[derive(Debug)]
pub(super) enum WarmError {
    Failed(String),
    /// A fill held back (`fill.rs`): the cache may not grow now.
    Held(&'static str),
}

impl std::fmt::Display for WarmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WarmError::Failed(why) => f.write_str(why),
            WarmError::Held(why) => write!(f, "stopped: {why}"),
        }
    }
}

impl From<String> for WarmError {
    fn from(why: String) -> WarmError {
        WarmError::Failed(why)
    }
}

/// How often a fill asks whether the cache may still grow.
const FILL_CHECK: Duration = Duration::from_secs(1);

/// What warming one media did.
#[derive(Debug, Clone, Copy)]
pub(super) struct Warmed {
    pub size: u64,
    pub cached_at_end: u64,
}

/// Warms the media at `url`: `opened` hears of it once it is open (with
/// the bytes it lacks), `arrived` of every piece that came. A fill is
/// paced, and held back when the cache may not grow. An error says why it
/// could not be warmed.
pub(super) async fn warm_media(
    cache: &Cache,
    url: &Url,
    opened: &(dyn Fn(&Media, u64) + Sync),
    arrived: &(dyn Fn(u64) + Sync),
    fill: Option<&FillPace>,
) -> Result<Warmed, WarmError> {
    // An admin may sign any link: a prefetch obeys a signed link's rule.
    let rule = UpstreamRule::signed();
    let media = match cache.open(url, &rule, Some((0, None))).await {
        Ok(Opened::Media(m)) => m,
        Ok(_) => {
            return Err(WarmError::Failed(
                "the origin does not tell the media's size: it cannot be cached".into(),
            ))
        }
        Err(e) => return Err(WarmError::Failed(e.to_string())),
    };
    if media.id().is_none() {
        return Err(WarmError::Failed(
            "the index could not record this media: nothing would be kept".into(),
        ));
    }
    // Chunks kept in memory while caching could not write (paused, disk
    // full) are written now, not fetched again.
    cache.write_kept_of(&media);
    let stretches = missing(&media);
    let missing_bytes: u64 = stretches.iter().map(|s| s.end + 1 - s.start).sum();
    opened(&media, missing_bytes);
    if let Some(why) = match fill {
        Some(f) if missing_bytes > 0 => f.refuses(missing_bytes).await,
        _ => None,
    } {
        return Err(WarmError::Held(why));
    }
    let host = media.url.host_str().unwrap_or("").to_owned();
    let mut checked = Instant::now();
    if !stretches.is_empty() {
        // Read like a player would, and drop the bytes.
        let (tx, mut rx) = mpsc::channel(2);
        let parts = stretches.iter().map(|s| BodyPart::Range(*s)).collect();
        cache.tasks().spawn(
            cache
                .clone()
                .produce(media.clone(), parts, tx, Player::none()),
        );
        let mut received = 0u64;
        while let Some(piece) = rx.recv().await {
            let n = piece.map_err(|e| e.to_string())?.len() as u64;
            received += n;
            arrived(n);
            if let Some(f) = fill {
                // A fill takes the origin's bytes at its pace: its reader
                // waits, and its read-ahead window with it.
                f.take(&host, n).await;
                if checked.elapsed() >= FILL_CHECK {
                    checked = Instant::now();
                    if let Some(why) = f.refuses(0).await {
                        return Err(WarmError::Held(why));
                    }
                }
            }
        }
        if received < missing_bytes {
            return Err(WarmError::Failed(format!(
                "the transfer ended after {received} of {missing_bytes} bytes"
            )));
        }
    }
    Ok(Warmed {
        size: media.size(),
        cached_at_end: written(&media).await,
    })
}

/// The bytes of `media` cached once its last chunks reached the disk
/// (waited for a little).
async fn written(media: &Arc<Media>) -> u64 {
    let deadline = Instant::now() + WRITE_WAIT;
    while media
        .slots()
        .iter()
        .any(|s| matches!(s.1, Slot::Pending(_)))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let uncached: u64 = missing(media).iter().map(|s| s.end + 1 - s.start).sum();
    media.size() - uncached
}

/// The files of the title at `url` (a playlist or manifest) that
/// `variant` chooses, each once, in order: for an HLS master, the chosen
/// variants' and renditions' playlists are fetched (and so kept and
/// recorded in the title) and their segments, keys and initialization
/// sections listed; a DASH manifest lists its chosen representations'
/// files; a media playlist its own. None when `url` is no playlist.
pub(super) async fn title_files(
    cache: &Cache,
    url: &Url,
    variant: Variant,
) -> Result<Option<Vec<Url>>, String> {
    let rule = UpstreamRule::signed();
    let playlists = cache.playlists();
    let top = playlists.get(url, &rule).await.map_err(|e| e.to_string())?;
    let Some(outline) = top.kind.outline(&top.body, &top.url) else {
        return match top.kind {
            manifest::Kind::Other => Ok(None),
            _ => Err("the manifest cannot be read".into()),
        };
    };
    let mut files: Vec<Url> = outline.files.iter().map(|(u, _)| u.clone()).collect();
    for s in outline.choose(variant) {
        match &s.playlist {
            Some(p) => {
                let pl = playlists
                    .get(p, &rule)
                    .await
                    .map_err(|e| format!("the rendition {}: {e}", crate::upstream::redact(p)))?;
                if let Some(o) = pl.kind.outline(&pl.body, &pl.url) {
                    files.extend(o.files.into_iter().map(|(u, _)| u));
                }
            }
            None => files.extend(s.files.iter().map(|(u, _)| u.clone())),
        }
        if files.len() > MAX_TITLE_FILES {
            return Err(format!("the title names more than {MAX_TITLE_FILES} files"));
        }
    }
    let mut seen = HashSet::new();
    files.retain(|u| seen.insert(u.clone()));
    Ok(Some(files))
}

/// The stretches of a media not cached yet, downloads under way included
/// (a prefetch follows them too).
fn missing(media: &Media) -> Vec<Span> {
    spans(media, |s| matches!(s, Slot::Cached { .. }))
}

/// Byte spans of the runs of chunks that are not `have`.
fn spans(media: &Media, have: impl Fn(&Slot) -> bool) -> Vec<Span> {
    let count = media.chunk_count();
    let mut out: Vec<Span> = Vec::new();
    let mut next = 0u64;
    let mut push = |from: u64, to: u64| {
        if from < to {
            out.push(Span {
                start: media.chunk_start(from),
                end: media.chunk_start(to - 1) + media.chunk_len(to - 1) - 1,
            });
        }
    };
    for (i, slot) in media.slots() {
        if i >= count || !have(&slot) {
            continue;
        }
        push(next, i);
        next = i + 1;
    }
    push(next, count);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChunkRow, MediaRow};

    fn media(size: u64, chunk: u64, cached: &[u64]) -> Media {
        let row = MediaRow::for_test(1, "http://x/u", size, chunk);
        let rows = cached.iter().map(|&i| ChunkRow::new(i, 10, 0)).collect();
        Media::new(Arc::new(Url::parse(&row.url).unwrap()), row, rows)
    }

    #[test]
    fn missing_stretches_skip_what_is_cached() {
        let span = |start, end| Span { start, end };
        assert_eq!(missing(&media(35, 10, &[])), vec![span(0, 34)]);
        assert_eq!(missing(&media(35, 10, &[0, 1, 2, 3])), vec![]);
        assert_eq!(
            missing(&media(35, 10, &[1, 3])),
            vec![span(0, 9), span(20, 29)]
        );
        assert_eq!(missing(&media(35, 10, &[0])), vec![span(10, 34)]);
        assert_eq!(missing(&media(0, 10, &[])), vec![]);
        let m = media(35, 10, &[0]);
        drop(m.claim(1, 1, 0, &crate::cache::inflight::Transfer::new(0, 0), None));
        assert_eq!(missing(&m), vec![span(10, 34)], "a download is followed");
    }
}
