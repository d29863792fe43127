//! Starts the fills `fill.rs` asks for as players watch, and at start
//! those the index recorded (a fill a restart or the disk's level
//! stopped), as prefetch jobs; a recorded fill is forgotten once it ended
//! for good (done, cancelled by an admin, its media deleted by one,
//! failed), and kept when it was held back or left chunks unwritten: it
//! goes on by itself once the cache may take the rest (caching resumed,
//! room on the disk or under `--max-cache-size`), or after a restart.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};
use url::Url;

use super::fill::FillPace;
use super::prefetch::{Phase, Prefetches};
use crate::store::Index;
use crate::upstream::redact;

/// How often a running fill is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// A fill held back waits this long before it looks whether the cache may
/// take the rest, and twice as long before each next look (a disk
/// hovering at its low level does not start and stop it every second),
/// up to `RESUME_MAX`.
const RESUME_FIRST: Duration = Duration::from_secs(2);
const RESUME_MAX: Duration = Duration::from_secs(600);

/// What a resumed fill must have fetched for its next hold to start the
/// waits over.
const PROGRESS: u64 = 1 << 20;

/// Fills media until shutdown cuts it.
pub(crate) async fn fill(
    prefetches: Prefetches,
    index: Index,
    pace: FillPace,
    mut asked: mpsc::UnboundedReceiver<Url>,
    tasks: super::Tasks,
) {
    match index.fills().await {
        Ok(urls) => {
            for u in urls {
                match Url::parse(&u) {
                    Ok(url) => start(&prefetches, &index, &pace, url, &tasks, false).await,
                    Err(_) => {
                        let _ = index.remove_fill(&u).await;
                    }
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot read the fills to resume"),
    }
    while let Some(url) = asked.recv().await {
        start(&prefetches, &index, &pace, url, &tasks, true).await;
    }
}

async fn start(
    prefetches: &Prefetches,
    index: &Index,
    pace: &FillPace,
    url: Url,
    tasks: &super::Tasks,
    new: bool,
) {
    if let Err(e) = index.add_fill(url.as_str()).await {
        warn!(error = %e, "cannot record a fill; it will not resume after a restart");
    }
    let (job, started) = prefetches.start_fill(url.clone(), pace.clone());
    if !started {
        return;
    }
    let why = if new {
        "a player watches it"
    } else {
        "resumed"
    };
    info!(job = job.id(), url = %redact(&url), why, "filling");
    let (index, prefetches, pace) = (index.clone(), prefetches.clone(), pace.clone());
    tasks.spawn(async move {
        let mut job = job;
        let mut backoff = RESUME_FIRST;
        loop {
            let phase = loop {
                let phase = job.phase();
                if !matches!(phase, Phase::Starting | Phase::Running) {
                    break phase;
                }
                tokio::time::sleep(LOOK_EVERY).await;
            };
            if matches!(phase, Phase::Done | Phase::Cancelled | Phase::Failed) {
                return forget(&index, &url).await;
            }
            // Held back (caching paused, the disk low, --max-cache-size)
            // or left chunks unwritten: it goes on once the cache may take
            // what is left, without waiting for a restart or a player.
            let view = job.view();
            let left = view
                .total_bytes
                .map_or(0, |t| t.saturating_sub(view.done_bytes));
            // One that got somewhere before it was held starts the waits
            // over.
            if view.fetched_bytes >= PROGRESS {
                backoff = RESUME_FIRST;
            }
            // Asked less and less often: a cache kept at --max-cache-size
            // may have no room for it for a long time.
            // An admin's cancel (of the job, or a delete of the media)
            // ends it for good.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = job.cancelled() => {
                        // Cancelled as it was held: it says so.
                        prefetches.cancel(&job);
                        return forget(&index, &url).await;
                    }
                }
                backoff = (backoff * 2).min(RESUME_MAX);
                if pace.refuses(left).await.is_none() {
                    break;
                }
            }
            if !job.end_wait() {
                return forget(&index, &url).await;
            }
            let (next, started) = prefetches.start_fill(url.clone(), pace.clone());
            if !started {
                // A player asked it again meanwhile: that fill's own task
                // watches it.
                return;
            }
            info!(job = next.id(), url = %redact(&url), why = "room again", "filling");
            job = next;
        }
    });
}

/// Forgets a fill that ended for good (done, cancelled, failed).
async fn forget(index: &Index, url: &Url) {
    if let Err(e) = index.remove_fill(url.as_str()).await {
        warn!(error = %e, "cannot forget a finished fill");
    }
}
