//! Parallel range streams: what a media keeps to decide how many of its
//! transfers run at once (how many there are, when a player last waited
//! at a transfer's front). How many it should have is the read-ahead
//! policy's (`readahead::streams`); where the next one starts, past every
//! stretch already asked for, is `Runs::read_ahead`'s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

use super::readahead::OUTRUN_FOR;

/// The transfers of one media.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    /// Runs of the media alive now (transferring, or waiting for a player
    /// to want their next chunk).
    runs: AtomicUsize,
    /// When a player last waited for bytes a transfer had not brought yet.
    outrun: Mutex<Option<Instant>>,
}

impl Streams {
    pub fn run_started(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn run_ended(&self) {
        self.runs.fetch_sub(1, Ordering::Relaxed);
    }

    /// Runs of the media alive now.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }

    /// A player waits for bytes that have not arrived.
    pub fn waited(&self) {
        *self.outrun.lock().unwrap() = Some(Instant::now());
    }

    /// Whether a player waited for bytes within [`OUTRUN_FOR`].
    pub fn outrun(&self) -> bool {
        self.outrun
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() < OUTRUN_FOR)
    }
}
