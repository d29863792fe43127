//! Index first: on the first open of a media whose index lies away from its
//! start (an MP4's `moov` after its `mdat`, a Matroska or WebM file's `Cues`
//! and the other elements its `SeekHead` lists), the index is fetched at
//! once, beside the player's first range, so the player finds it cached or
//! on its way when it asks. The container's duration also gives the media's
//! byte rate, for `--read-ahead` in seconds.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tracing::debug;

use super::inflight::InFlight;
use super::media::{Media, Slot};
use super::run::Runs;
use crate::container;

/// Bytes looked at from the start of the file, and from the start of the
/// index for a duration.
const LOOK: usize = 64 * 1024;

/// How long the first bytes may take before index-first gives up.
const WAIT: Duration = Duration::from_secs(10);

/// Looks at the first bytes of a media a player has just opened from its
/// start, fetches its index region and learns its byte rate.
pub(crate) async fn index_first(runs: Runs, media: Arc<Media>) {
    let Some(Slot::Pending(chunk)) = media.slot(0) else {
        return;
    };
    let head = first_bytes(&chunk, 0).await;
    let size = media.size();
    let mut layout = container::sniff(&head, size);
    let mut index = std::mem::take(&mut layout.index);
    let mut duration = layout.duration;
    for _ in 0..container::MAX_STEPS {
        let Some(more) = layout.more.take() else {
            break;
        };
        let Some(bytes) = runs.fetch_small(&media, more.range.clone()).await else {
            break;
        };
        layout = container::resume(&more, &bytes, size);
        index.append(&mut layout.index);
        duration = duration.or(layout.duration);
    }
    if !index.is_empty() {
        debug!(media = media.id().map(|m| m.0), kind = ?layout.kind, ?index, "fetching the index first");
        runs.fetch_region(&media, &index);
    }
    // An MP4's duration is in its moov, which may be what was just asked for.
    if duration.is_none() {
        if let Some(r) = index.first() {
            let at = r.start / media.chunk_size();
            if let Some(Slot::Pending(chunk)) = media.slot(at) {
                let bytes = first_bytes(&chunk, r.start - media.chunk_start(at)).await;
                duration = container::duration(&bytes);
            }
        }
    }
    if let Some(rate) = duration.and_then(|d| container::bytes_per_second(size, d)) {
        debug!(
            media = media.id().map(|m| m.0),
            rate, "byte rate from the container"
        );
        media.set_byte_rate(rate);
    }
}

/// Up to `LOOK` bytes of a downloading chunk from `offset`, as they arrive
/// (fewer when they do not come within `WAIT`).
async fn first_bytes(chunk: &InFlight, offset: u64) -> BytesMut {
    let want = LOOK.min(chunk.len().saturating_sub(offset) as usize);
    let mut got = BytesMut::new();
    let _ = tokio::time::timeout(WAIT, async {
        while got.len() < want {
            match chunk.read_at(offset + got.len() as u64).await {
                Ok(Some(b)) => got.extend_from_slice(&b[..b.len().min(want - got.len())]),
                _ => break,
            }
        }
    })
    .await;
    got
}
