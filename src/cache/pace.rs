//! What an origin showed so far for one media: its time to first byte and
//! the rate of its transfers, as moving averages, and from them when a new
//! request is worth sending (`Pace::lead`).

use std::time::Duration;

/// What an origin showed so far: time to first byte and bytes per second
/// of one transfer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    pub ttfb: Duration,
    pub rate: f64,
    /// How many samples of each went in (the first replaces the guess).
    samples: (u32, u32),
}

impl Default for Pace {
    /// Until measured: a distant origin of modest speed.
    fn default() -> Pace {
        Pace {
            ttfb: Duration::from_millis(100),
            rate: 4e6,
            samples: (0, 0),
        }
    }
}

impl Pace {
    #[cfg(test)]
    pub fn new(ttfb: Duration, rate: f64) -> Pace {
        Pace {
            ttfb,
            rate,
            samples: (1, 1),
        }
    }

    /// One transfer's rate, once one was measured.
    pub fn measured_rate(&self) -> Option<f64> {
        (self.samples.1 > 0).then_some(self.rate)
    }

    /// How soon bytes must be due for a new request not to be worth it:
    /// a new request brings its first byte after about one time to first
    /// byte, so only a clearly later arrival (half again, and 5 ms) counts.
    pub fn lead(&self) -> Duration {
        self.ttfb + self.ttfb / 2 + Duration::from_millis(5)
    }

    /// Folds a new time to first byte in (a moving average).
    pub fn with_ttfb(self, t: Duration) -> Pace {
        let ttfb = match self.samples.0 {
            0 => t,
            _ => self.ttfb.mul_f64(0.7) + t.mul_f64(0.3),
        };
        Pace {
            ttfb,
            samples: (self.samples.0.saturating_add(1), self.samples.1),
            ..self
        }
    }

    /// Folds a new transfer rate in.
    pub fn with_rate(self, rate: f64) -> Pace {
        let rate = match self.samples.1 {
            0 => rate,
            _ => self.rate * 0.7 + rate * 0.3,
        };
        Pace {
            rate,
            samples: (self.samples.0, self.samples.1.saturating_add(1)),
            ..self
        }
    }
}
