//! What spool keeps per origin host, to stay polite to it: at most
//! `--max-connections-per-origin` transfers from it at once, and how many
//! streams one media may take from it (`--streams-per-media`). An origin
//! that answers `429`, or `503` with `Retry-After`, is left alone for the
//! time it asked (new transfers wait), and its media get half the streams
//! they had; one stream comes back per [`CALM`] without such an answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use crate::metrics::Metrics;

/// How long an origin must not ask for a pause before one stream per
/// media comes back.
pub const CALM: Duration = Duration::from_secs(30);

/// The longest pause an origin's `Retry-After` imposes on new transfers
/// (the one that was refused waits as long, `resume.rs`).
pub const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Origin hosts remembered at most; past it, those with nothing to
/// remember (no transfer, all streams, no pause) are forgotten.
const MAX_HOSTS: usize = 1024;

/// The limits, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// `--max-connections-per-origin` (at least 1).
    pub connections: usize,
    /// `--streams-per-media` (at least 1).
    pub streams: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 8,
            streams: 4,
        }
    }
}

/// The state of every origin host. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Origins {
    limits: Limits,
    hosts: Arc<Mutex<HashMap<String, Arc<Host>>>>,
    metrics: Arc<Metrics>,
}

struct Host {
    connections: Arc<Semaphore>,
    streams: Mutex<Streams>,
}

#[derive(Clone, Copy)]
struct Streams {
    /// What one media may take now.
    allowed: usize,
    /// When it last changed (lowered, or one came back).
    changed: Instant,
    /// No new transfer before this.
    paused_until: Option<Instant>,
}

impl Origins {
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Origins {
        Origins {
            limits: Limits {
                connections: limits.connections.max(1),
                streams: limits.streams.max(1),
            },
            hosts: Arc::default(),
            metrics,
        }
    }

    fn host(&self, url: &Url) -> Arc<Host> {
        let key = url.origin().ascii_serialization();
        let mut hosts = self.hosts.lock().unwrap();
        if let Some(h) = hosts.get(&key) {
            return h.clone();
        }
        if hosts.len() >= MAX_HOSTS {
            let now = Instant::now();
            hosts.retain(|_, h| !h.idle(&self.limits, now));
        }
        let h = Arc::new(Host {
            connections: Arc::new(Semaphore::new(self.limits.connections)),
            streams: Mutex::new(Streams {
                allowed: self.limits.streams,
                changed: Instant::now(),
                paused_until: None,
            }),
        });
        hosts.insert(key, h.clone());
        h
    }

    /// `--streams-per-media`.
    pub fn max_streams(&self) -> usize {
        self.limits.streams
    }

    /// Waits for a pause `url`'s origin asked for to pass: every request
    /// to it waits (`client.rs`).
    pub async fn pause(&self, url: &Url) {
        let host = self.host(url);
        let paused = host.streams.lock().unwrap().paused_until;
        if let Some(until) = paused.filter(|t| *t > Instant::now()) {
            tokio::time::sleep_until(until).await;
        }
    }

    /// A place to transfer from `url`'s origin, waiting for one (and for
    /// a pause the origin asked for to pass).
    pub async fn connection(&self, url: &Url) -> OwnedSemaphorePermit {
        self.pause(url).await;
        let host = self.host(url);
        match host.connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => host
                .connections
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed"),
        }
    }

    /// A place to transfer from `url`'s origin if one is free now.
    pub fn try_connection(&self, url: &Url) -> Option<OwnedSemaphorePermit> {
        self.host(url).connections.clone().try_acquire_owned().ok()
    }

    /// Whether a transfer from `url`'s origin would find a place now (no
    /// pause, a free connection): an extra stream starts only then.
    pub fn has_room(&self, url: &Url) -> bool {
        let host = self.host(url);
        let free = host.connections.available_permits() > 0;
        let s = *host.streams.lock().unwrap();
        free && s.paused_until.is_none_or(|t| t <= Instant::now())
    }

    /// The streams one media may take from `url`'s origin now: one while
    /// it asked for a pause, otherwise what it was lowered to, plus one
    /// per [`CALM`] since.
    pub fn streams(&self, url: &Url) -> usize {
        let host = self.host(url);
        let mut s = host.streams.lock().unwrap();
        let now = Instant::now();
        if let Some(until) = s.paused_until {
            if now < until {
                return 1;
            }
            s.paused_until = None;
        }
        if s.allowed < self.limits.streams && now - s.changed >= CALM {
            while s.allowed < self.limits.streams && now - s.changed >= CALM {
                s.allowed += 1;
                s.changed += CALM;
            }
            self.gauge(url).set(s.allowed as i64);
        }
        s.allowed
    }

    /// `url`'s origin answered that it is busy, asking for `wait` (or
    /// not): its media get half the streams, and new transfers wait.
    pub fn busy(&self, url: &Url, wait: Option<Duration>) {
        self.slow_down(url, wait);
        let m = &self.metrics;
        m.origin_busy.get_or_create(&m.host(url)).inc();
    }

    /// The same for the origin a busy one was reached through (a redirect):
    /// its media's streams and new transfers are counted by the URL asked
    /// first, and every request of theirs ends at the busy one.
    pub fn slow_down(&self, url: &Url, wait: Option<Duration>) {
        let host = self.host(url);
        let mut s = host.streams.lock().unwrap();
        let now = Instant::now();
        let wait = wait.unwrap_or(Duration::from_secs(1)).min(MAX_PAUSE);
        s.allowed = (s.allowed / 2).max(1);
        s.changed = now;
        let until = now + wait;
        s.paused_until = Some(s.paused_until.map_or(until, |t| t.max(until)));
        self.gauge(url).set(s.allowed as i64);
    }

    /// Whether `url`'s origin asked for a pause that is still on.
    pub fn paused(&self, url: &Url) -> bool {
        let host = self.host(url);
        let s = *host.streams.lock().unwrap();
        s.paused_until.is_some_and(|t| t > Instant::now())
    }

    fn gauge(&self, url: &Url) -> prometheus_client::metrics::gauge::Gauge {
        let m = &self.metrics;
        m.origin_streams.get_or_create(&m.host(url)).clone()
    }

    /// Transfers from `url`'s origin now.
    #[cfg(test)]
    pub fn transferring(&self, url: &Url) -> usize {
        self.limits.connections - self.host(url).connections.available_permits()
    }
}

impl Host {
    /// Nothing worth remembering: no transfer, all its streams, no pause.
    fn idle(&self, limits: &Limits, now: Instant) -> bool {
        let s = *self.streams.lock().unwrap();
        self.connections.available_permits() == limits.connections
            && s.allowed == limits.streams
            && s.paused_until.is_none_or(|t| t <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_origin_gets_half_the_streams_and_a_pause() {
        let o = Origins::new(
            Limits {
                connections: 8,
                streams: 4,
            },
            Arc::new(Metrics::new()),
        );
        let a = url("http://a.example/x");
        let b = url("http://b.example/x");
        assert_eq!(o.streams(&a), 4);
        o.busy(&a, Some(Duration::from_secs(2)));
        // Paused: one stream, no extra one starts, new transfers wait.
        assert_eq!(o.streams(&a), 1);
        assert!(!o.has_room(&a));
        // Another origin is not affected.
        assert_eq!(o.streams(&b), 4);
        assert!(o.has_room(&b));
        let asked = Instant::now();
        let _p = o.connection(&url("http://a.example/other")).await;
        assert!(
            asked.elapsed() >= Duration::from_secs(2),
            "waited the pause"
        );
        // After the pause: half of what it had, one more per calm period.
        assert_eq!(o.streams(&a), 2);
        tokio::time::advance(CALM).await;
        assert_eq!(o.streams(&a), 3);
        o.busy(&a, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(o.streams(&a), 1);
        tokio::time::advance(CALM * 10).await;
        assert_eq!(o.streams(&a), 4, "never more than --streams-per-media");
    }

    #[tokio::test]
    async fn connections_per_origin_are_capped() {
        let o = Origins::new(
            Limits {
                connections: 2,
                streams: 4,
            },
            Arc::new(Metrics::new()),
        );
        let a = url("http://a.example:8080/x");
        let p1 = o.connection(&a).await;
        let _p2 = o.connection(&a).await;
        assert_eq!(o.transferring(&a), 2);
        assert!(!o.has_room(&a));
        // The same host on another port is another origin.
        assert!(o.has_room(&url("http://a.example:8081/x")));
        let third = tokio::spawn({
            let (o, a) = (o.clone(), a.clone());
            async move { o.connection(&a).await }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "a third transfer waits");
        drop(p1);
        let _p3 = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("it gets the place given back")
            .unwrap();
        assert_eq!(o.transferring(&a), 2);
    }
}
