//! What an admin sees of the cache and may do to it: the media with how
//! much of each is cached, one media's chunk map, the streams reading now,
//! and deleting one media's cache, safely while players read it.

use serde::Serialize;

use super::catalog::Catalog;
use super::media::{Media, Slot};
use super::run::Runs;
use crate::store::summary::{self, MediaSummary};
use crate::store::{ChunkFiles, Index, IndexError, MediaId};
use crate::upstream::redact;

/// One media version as an admin sees it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MediaView {
    pub id: i64,
    /// The upstream URL, its query and password redacted.
    pub url: String,
    pub content_type: Option<String>,
    pub size_bytes: u64,
    pub chunk_size_bytes: u64,
    pub cached_bytes: u64,
    pub cached_chunks: u64,
    pub total_chunks: u64,
    /// Chunks on their way from the origin.
    pub downloading_chunks: u64,
    /// Chunks complete in memory, not (yet) in a file: waiting for the disk,
    /// or kept in memory because the disk could not take them.
    pub in_memory_chunks: u64,
    pub last_access_unix: i64,
    /// Players reading it now.
    pub open_streams: usize,
}

/// What state a chunk is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChunkState {
    Cached,
    Downloading,
    Missing,
}

/// One media's chunk map, run-length encoded: `[state, count]` runs in
/// chunk order whose counts add up to the chunk count, so its size grows
/// with the stretches cached, never with the size of the media.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChunkMap {
    #[serde(flatten)]
    pub media: MediaView,
    pub runs: Vec<(ChunkState, u64)>,
}

/// A player reading now.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StreamView {
    pub media_id: Option<i64>,
    pub url: String,
    /// The chunk read now, and the byte the player reads next.
    pub chunk: u64,
    pub position_bytes: u64,
    /// The read-ahead window: up to this byte (exclusive) is fetched
    /// ahead of the player.
    pub read_ahead_end_bytes: u64,
    pub size_bytes: u64,
    /// The position and the media's length as time, where its byte rate
    /// is known (from the container, or a paced player): seconds.
    pub position_secs: Option<f64>,
    pub duration_secs: Option<f64>,
}

/// `bytes` at `rate` bytes a second, to a tenth of a second.
fn secs(bytes: u64, rate: u64) -> f64 {
    (bytes as f64 / rate.max(1) as f64 * 10.0).round() / 10.0
}

/// What deleting a media's cache removed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Deleted {
    pub id: i64,
    pub chunks: u64,
    pub bytes: u64,
    /// The media's URL (its cache key); not shown.
    #[serde(skip)]
    pub url: String,
}

/// A URL from the index, redacted for showing.
pub(crate) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => redact(&u),
        Err(_) => "(not a URL)".into(),
    }
}

impl MediaView {
    fn new(s: MediaSummary, open: Option<&Media>) -> MediaView {
        let (downloading, in_memory, open_streams) = open.map_or((0, 0, 0), |m| {
            let (mut downloading, mut in_memory) = (0, 0);
            for (_, slot) in m.slots() {
                if let Slot::Pending(chunk) = slot {
                    match chunk.is_complete() {
                        true => in_memory += 1,
                        false => downloading += 1,
                    }
                }
            }
            (downloading, in_memory, m.live_playheads().len())
        });
        MediaView {
            id: s.media_id,
            url: redacted(&s.url),
            content_type: s.content_type,
            size_bytes: s.size_bytes,
            chunk_size_bytes: s.chunk_size_bytes,
            cached_bytes: s.cached_bytes,
            cached_chunks: s.cached_chunks,
            total_chunks: s.total_chunks,
            downloading_chunks: downloading,
            in_memory_chunks: in_memory,
            last_access_unix: s.last_access_unix,
            open_streams,
        }
    }
}

pub(crate) fn is_pending(slot: &Slot) -> bool {
    matches!(slot, Slot::Pending(_))
}

/// Run-length encodes chunk states: `taken` lists the chunks with a state
/// other than missing, in order.
pub(crate) fn runs(total: u64, taken: &[(u64, ChunkState)]) -> Vec<(ChunkState, u64)> {
    let mut out: Vec<(ChunkState, u64)> = Vec::new();
    let mut push = |state: ChunkState, n: u64| {
        if n == 0 {
            return;
        }
        match out.last_mut() {
            Some(last) if last.0 == state => last.1 += n,
            _ => out.push((state, n)),
        }
    };
    let mut next = 0;
    for &(i, state) in taken.iter().filter(|t| t.0 < total) {
        push(ChunkState::Missing, i.saturating_sub(next));
        push(state, 1);
        next = i + 1;
    }
    push(ChunkState::Missing, total.saturating_sub(next));
    out
}

/// What an admin sees of the cache and may do to it. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Inventory {
    pub(super) index: Index,
    pub(super) catalog: Catalog,
    pub(super) runs: Runs,
    pub(super) files: ChunkFiles,
}

impl Inventory {
    /// One page of the media the index knows, and how many match.
    pub async fn media_page(
        &self,
        query: summary::PageQuery,
    ) -> Result<(Vec<MediaView>, u64), IndexError> {
        let (rows, total) = self.index.call(move |c| summary::page(c, &query)).await?;
        let catalog = &self.catalog;
        let views = rows
            .into_iter()
            .map(|s| {
                let open = catalog.by_id(MediaId(s.media_id));
                MediaView::new(s, open.as_deref())
            })
            .collect();
        Ok((views, total))
    }

    /// Every media version the index knows, most recently read first.
    pub async fn media_list(&self) -> Result<Vec<MediaView>, IndexError> {
        let rows = self.index.call(|c| summary::list(c)).await?;
        let catalog = &self.catalog;
        Ok(rows
            .into_iter()
            .map(|s| {
                let open = catalog.by_id(MediaId(s.media_id));
                MediaView::new(s, open.as_deref())
            })
            .collect())
    }

    /// One media's chunk map; None when the index does not know the id.
    /// For a media open in this process, from its slots (downloads
    /// included), else from the index.
    pub async fn chunk_map(&self, id: MediaId) -> Result<Option<ChunkMap>, IndexError> {
        let Some(s) = self.index.call(move |c| summary::one(c, id)).await? else {
            return Ok(None);
        };
        let open = self.catalog.by_id(id);
        let taken: Vec<(u64, ChunkState)> = match &open {
            Some(m) => m
                .slots()
                .into_iter()
                .map(|(i, slot)| match slot {
                    Slot::Pending(_) => (i, ChunkState::Downloading),
                    Slot::Cached { .. } => (i, ChunkState::Cached),
                })
                .collect(),
            None => self
                .index
                .call(move |c| summary::chunk_indexes(c, id))
                .await?
                .into_iter()
                .map(|i| (i, ChunkState::Cached))
                .collect(),
        };
        let total = s.total_chunks;
        Ok(Some(ChunkMap {
            media: MediaView::new(s, open.as_deref()),
            runs: runs(total, &taken),
        }))
    }

    /// What the cache holds: media, chunks, bytes (from the index).
    pub async fn totals(&self) -> Result<(u64, u64, u64), IndexError> {
        self.index.totals().await
    }

    /// The players reading now, with their read-ahead windows.
    pub fn streams(&self) -> Vec<StreamView> {
        let mut out = Vec::new();
        for m in self.catalog.all() {
            let last = m.chunk_count().saturating_sub(1);
            let window = self.runs.window(&m);
            let rate = m.byte_rate();
            for head in m.live_playheads() {
                let at = head.at;
                let end = window.end(&head).min(last);
                out.push(StreamView {
                    media_id: m.id().map(|i| i.0),
                    url: redact(&m.url),
                    chunk: at,
                    position_bytes: head.pos.min(m.size()),
                    read_ahead_end_bytes: (m.chunk_start(end) + m.chunk_len(end)).min(m.size()),
                    size_bytes: m.size(),
                    position_secs: rate.map(|r| secs(head.pos.min(m.size()), r)),
                    duration_secs: rate.map(|r| secs(m.size(), r)),
                });
            }
        }
        out.sort_by_key(|s| (s.media_id, s.chunk));
        out
    }

    /// Deletes one media version's cache: its rows and chunk files go, and
    /// the next player of its URL starts afresh. Players reading it now go
    /// on: a chunk they wait for is fetched from the origin again (and not
    /// kept: a late chunk write fails its foreign key). None when the
    /// index does not know the id.
    pub async fn delete_media(&self, id: MediaId) -> Result<Option<Deleted>, IndexError> {
        let index = &self.index;
        let Some(s) = index.call(move |c| summary::one(c, id)).await? else {
            return Ok(None);
        };
        // No open of the URL half-way through while its rows go.
        let catalog = &self.catalog;
        let opening = catalog.opening.enter(&s.url).await;
        // As eviction does: while rows and files go, each cached slot
        // holds a placeholder, so no player reads a file being removed
        // or fetches the chunk into the same file name meanwhile.
        let open = catalog.by_id(id);
        let mut retired = Vec::new();
        if let Some(m) = &open {
            catalog.remove(m);
            for (i, slot) in m.slots() {
                if !is_pending(&slot) {
                    retired.extend(m.retire_cached(i));
                }
            }
        }
        let removed = index.remove_media(id).await;
        if removed.is_ok() {
            self.files.remove_media(id).await;
        }
        drop(retired);
        drop(opening);
        removed?;
        tracing::info!(url = %redacted(&s.url), media = id.0, bytes = s.cached_bytes, "media cache deleted by an admin");
        // In the history beside what eviction took (the `evictions` view).
        let e =
            crate::history::Event::new(crate::history::Kind::Eviction, crate::store::unix_now())
                .media(id.0)
                .reason("admin")
                .chunks(s.cached_chunks)
                .bytes(s.cached_bytes)
                .url(redacted(&s.url));
        self.runs.upstream().metrics().history.record(e);
        Ok(Some(Deleted {
            id: id.0,
            chunks: s.cached_chunks,
            bytes: s.cached_bytes,
            url: s.url,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChunkState::{Cached as C, Downloading as D, Missing as M};

    #[test]
    fn chunk_maps_are_run_length_encoded() {
        assert_eq!(runs(0, &[]), vec![]);
        assert_eq!(runs(4, &[]), vec![(M, 4)]);
        assert_eq!(
            runs(6, &[(0, C), (1, C), (3, D), (5, C)]),
            vec![(C, 2), (M, 1), (D, 1), (M, 1), (C, 1)]
        );
        assert_eq!(runs(2, &[(0, C), (1, C)]), vec![(C, 2)]);
        // Chunks past the end (a stale row) do not stretch the map.
        assert_eq!(runs(2, &[(1, C), (7, C)]), vec![(M, 1), (C, 1)]);
        let total: u64 = runs(1000, &[(10, C), (999, D)]).iter().map(|r| r.1).sum();
        assert_eq!(total, 1000);
    }
}
