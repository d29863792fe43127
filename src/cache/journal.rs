//! Writing the history gathered in memory (`crate::history`) to the
//! index, at each disk check and at shutdown: the events, with the URLs of
//! those that name only a media filled in as logs show them, and the
//! requests and bytes served since the last write added to the day's
//! rollup. Events older than `--events-retention` are pruned a batch at a
//! time, so the index thread is never held long.

use std::time::Duration;

use tracing::warn;

use super::admin::redacted;
use crate::metrics::{Metrics, FIRST_BYTE_SOURCES};
use crate::store::history::{self, Batch};
use crate::store::{unix_now, Index};

/// Events removed per prune.
pub(crate) const PRUNE_BATCH: u32 = 5_000;

/// Writes what gathered; returns the events written.
pub(crate) async fn write(index: &Index, metrics: &Metrics) -> usize {
    let (mut events, dropped) = metrics.history.take();
    let traffic: Vec<_> = FIRST_BYTE_SOURCES
        .into_iter()
        .zip(metrics.take_daily())
        .map(|(source, (requests, bytes))| (source, requests, bytes))
        .collect();
    if events.is_empty() && dropped == 0 && traffic.iter().all(|t| t.1 == 0 && t.2 == 0) {
        return 0;
    }
    let unnamed: Vec<i64> = events
        .iter()
        .filter(|e| e.url.is_none())
        .filter_map(|e| e.media_id)
        .collect();
    if !unnamed.is_empty() {
        match index.call(move |c| history::media_urls(c, &unnamed)).await {
            Ok(urls) => {
                for e in events.iter_mut().filter(|e| e.url.is_none()) {
                    let url = e.media_id.and_then(|id| urls.get(&id));
                    e.url = url.map(|u| redacted(u));
                }
            }
            Err(e) => warn!(error = %e, "cannot name the media of events"),
        }
    }
    let n = events.len();
    let batch = Batch {
        events,
        dropped,
        day: day_of(unix_now()),
        traffic,
    };
    if let Err(e) = index.call(move |c| history::write(c, &batch)).await {
        warn!(error = %e, events = n, "cannot write the history");
    }
    n
}

/// Removes one batch of events older than `retention` (zero: keep all);
/// returns how many went.
pub(crate) async fn prune(index: &Index, retention: Duration) -> usize {
    if retention.is_zero() {
        return 0;
    }
    let age = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let before = unix_now().saturating_sub(age);
    match index
        .call(move |c| history::prune(c, before, PRUNE_BATCH))
        .await
    {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot prune the history");
            0
        }
    }
}

/// `YYYY-MM-DD` (UTC) of a unix time.
fn day_of(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_796_428_799), "2026-12-04");
        assert_eq!(day_of(1_796_428_800), "2026-12-05");
    }
}
