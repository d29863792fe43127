//! How far a prefetch job is: its bytes sampled over time, with their
//! rate over the last seconds, and a title's files.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How far back the recent rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Samples of progress kept at most this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A count sampled over time, and its rate over the last `RATE_WINDOW`:
/// an ETA from it follows the origin's pace now, not an average since
/// the start (a job whose origin slowed down midway is not promised its
/// first minute's speed).
#[derive(Debug, Default)]
pub(crate) struct Rolling {
    samples: VecDeque<(Instant, u64)>,
}

impl Rolling {
    pub fn record(&mut self, now: Instant, count: u64) {
        if self
            .samples
            .back()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) < SAMPLE_EVERY)
        {
            return;
        }
        self.samples.push_back((now, count));
        // One sample older than the window stays, as the start of it.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Per second, from the oldest sample kept to `count` at `now`; None
    /// before a second of samples.
    pub fn rate(&self, now: Instant, count: u64) -> Option<f64> {
        let (at, first) = *self.samples.front()?;
        let secs = now.saturating_duration_since(at).as_secs_f64();
        (secs >= 1.0).then(|| count.saturating_sub(first) as f64 / secs)
    }
}

/// A title's files and how far a job is with them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Files {
    pub total: u64,
    /// Opened: their sizes are known.
    pub opened: u64,
    /// Sizes of the files opened.
    pub known_bytes: u64,
    /// Ended cached whole.
    pub done: u64,
    pub failed: u64,
}

impl Files {
    /// The title's bytes: those of the files opened, and as many again
    /// per file not opened yet as an opened one has on average.
    pub fn total_bytes(&self) -> u64 {
        match self.opened {
            0 => 0,
            n => self.known_bytes + self.known_bytes / n * (self.total - n.min(self.total)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recent rate follows the last 10 s, not the average since the
    /// start; no rate before a second of samples.
    #[test]
    fn the_recent_rate_follows_the_last_seconds() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = Rolling::default();
        r.record(at(0), 0);
        assert_eq!(r.rate(at(500), 50), None);
        // 30 s at 1 MB/s, then 20 s at 100 kB/s.
        let mut count = 0;
        for tick in 1..=200u64 {
            count += if tick <= 120 { 250_000 } else { 25_000 };
            r.record(at(tick * 250), count);
        }
        let rate = r.rate(at(50_000), count).unwrap();
        assert!((95_000.0..=105_000.0).contains(&rate), "{rate}");
        // Samples closer than SAMPLE_EVERY are not kept; the window stays
        // bounded.
        r.record(at(50_010), count + 1);
        assert!(r.samples.len() <= 42, "{}", r.samples.len());
    }
}
