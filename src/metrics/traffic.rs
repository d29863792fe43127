//! Bytes served per minute over the last hour, for the status page's chart.

/// Minutes of traffic kept.
const TRAFFIC_MINUTES: usize = 60;

/// Bytes served per minute, by where they came from, over the last hour.
#[derive(Debug, Default)]
pub struct Traffic {
    inner: std::sync::Mutex<TrafficInner>,
}

#[derive(Debug, Default)]
struct TrafficInner {
    /// Totals at the last sample (None before the first).
    last: Option<[u64; 3]>,
    /// (unix minute, bytes from cache, memory, origin), oldest first.
    minutes: std::collections::VecDeque<(i64, [u64; 3])>,
}

/// One minute of traffic, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Minute {
    /// Its start, unix seconds.
    pub at_unix: i64,
    pub cache_bytes: u64,
    pub memory_bytes: u64,
    pub origin_bytes: u64,
}

impl Traffic {
    /// Minutes held in memory.
    #[cfg(test)]
    pub(super) fn minutes_kept(&self) -> usize {
        self.inner.lock().unwrap().minutes.len()
    }

    pub(super) fn add(&self, totals: [u64; 3], now: i64) {
        let mut t = self.inner.lock().unwrap();
        let last = t.last.replace(totals).unwrap_or(totals);
        let delta: [u64; 3] = std::array::from_fn(|i| totals[i].saturating_sub(last[i]));
        let minute = now.div_euclid(60);
        match t.minutes.back_mut() {
            Some((m, b)) if *m == minute => (0..3).for_each(|i| b[i] += delta[i]),
            _ => t.minutes.push_back((minute, delta)),
        }
        while t
            .minutes
            .front()
            .is_some_and(|(m, _)| *m <= minute - TRAFFIC_MINUTES as i64)
        {
            t.minutes.pop_front();
        }
    }

    /// The last hour, a minute at a time, oldest first; minutes with
    /// nothing sampled are there with zeros.
    pub fn last_hour(&self, now: i64) -> Vec<Minute> {
        let t = self.inner.lock().unwrap();
        let this = now.div_euclid(60);
        (this - TRAFFIC_MINUTES as i64 + 1..=this)
            .map(|m| {
                let b = t
                    .minutes
                    .iter()
                    .find(|(at, _)| *at == m)
                    .map_or([0; 3], |x| x.1);
                Minute {
                    at_unix: m * 60,
                    cache_bytes: b[0],
                    memory_bytes: b[1],
                    origin_bytes: b[2],
                }
            })
            .collect()
    }
}
