//! Fill while watched (`--fill-while-watched`): once a player has read a
//! media for `--fill-after`, the rest of it is fetched in the background
//! as a prefetch job of its own (`filler.rs` starts them, `prefetch.rs`
//! runs them), at `--fill-rate` per origin host, after and never instead
//! of what players wait for; stopped when caching pauses, the disk runs
//! low or `--max-cache-size` would be passed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use url::Url;

use super::media::Media;
use super::persist::Writer;
use crate::store::MediaId;
use crate::upstream::Upstream;

/// Asks for media to be filled as players watch them. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Fills {
    inner: Arc<Inner>,
}

struct Inner {
    /// How long a player reads before its media is filled (None: off).
    after: Option<Duration>,
    /// Whether for origins whose `[[upstream]]` does not say.
    by_default: bool,
    upstream: Upstream,
    tx: mpsc::UnboundedSender<Url>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Url>>>,
    /// Media asked for in this process (each once).
    asked: Mutex<HashSet<MediaId>>,
}

impl Fills {
    pub fn new(after: Option<Duration>, by_default: bool, upstream: Upstream) -> Fills {
        let (tx, rx) = mpsc::unbounded_channel();
        Fills {
            inner: Arc::new(Inner {
                after,
                by_default,
                upstream,
                tx,
                rx: Mutex::new(Some(rx)),
                asked: Mutex::default(),
            }),
        }
    }

    /// A player reading `media` since `began` (its first request, when it
    /// reads on in consecutive ones) got more bytes: once it has read for
    /// long enough, the media is asked to be filled (once). True when
    /// nothing is left to ask for this stream (fills off, a media that
    /// cannot be filled, or asked already): its later pieces need not ask.
    pub fn watched(&self, media: &Media, began: Instant) -> bool {
        let Some(after) = self.inner.after else {
            return true;
        };
        let Some(id) = media.id() else {
            return true;
        };
        let on = self.inner.upstream.fill_while_watched(&media.url);
        if !on.unwrap_or(self.inner.by_default) {
            return true;
        }
        if media.is_gone() {
            return true;
        }
        if began.elapsed() < after {
            return false;
        }
        if self.inner.asked.lock().unwrap().insert(id) {
            let _ = self.inner.tx.send(media.urls.latest().as_ref().clone());
        }
        true
    }

    /// The media asked to be filled, for the one who fills them.
    pub fn requests(&self) -> Option<mpsc::UnboundedReceiver<Url>> {
        self.inner.rx.lock().unwrap().take()
    }
}

/// How fills take from origins: at most `rate` bytes per second per
/// origin host, all its fills together, and only while the cache may
/// grow. Cheap to clone.
#[derive(Clone)]
pub(crate) struct FillPace {
    inner: Arc<PaceInner>,
}

struct PaceInner {
    rate: u64,
    writer: Writer,
    /// When each host's next bytes may be taken.
    next: Mutex<HashMap<String, Instant>>,
}

impl FillPace {
    pub fn new(rate: u64, writer: Writer) -> FillPace {
        FillPace {
            inner: Arc::new(PaceInner {
                rate: rate.max(1),
                writer,
                next: Mutex::default(),
            }),
        }
    }

    /// Waits until `n` more bytes from `host` keep its fills within the
    /// rate.
    pub async fn take(&self, host: &str, n: u64) {
        let start = {
            let mut next = self.inner.next.lock().unwrap();
            let now = Instant::now();
            let at = next.entry(host.to_owned()).or_insert(now);
            if *at < now {
                *at = now;
            }
            let start = *at;
            *at += Duration::from_secs_f64(n as f64 / self.inner.rate as f64);
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// Why a fill of `more` bytes may not go on now, if it may not.
    pub async fn refuses(&self, more: u64) -> Option<&'static str> {
        self.inner.writer.may_grow(more).await.err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_host_is_paced_whoever_takes() {
        let rig = crate::cache::rig::rig();
        let pace = FillPace::new(1000, rig.writer.clone());
        let t0 = Instant::now();
        // Two fills of one host share its rate: of ten takes of half a
        // second's bytes, the tenth begins 4.5 s in; another host has its
        // own.
        for _ in 0..5 {
            pace.take("a", 500).await;
            pace.take("a", 500).await;
        }
        assert_eq!(t0.elapsed(), Duration::from_millis(4500));
        let t1 = Instant::now();
        pace.take("b", 500).await;
        assert!(t1.elapsed() < Duration::from_millis(10));
    }
}
