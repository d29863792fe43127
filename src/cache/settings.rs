//! How the cache behaves: the settings `spool serve` gives it.

use std::time::Duration;

/// How the cache behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub chunk_size: u64,
    /// The most bytes fetched ahead of the playhead.
    pub read_ahead: u64,
    /// Read-ahead as a time of media, where its byte rate is known (bounded
    /// by `read_ahead`).
    pub read_ahead_time: Option<Duration>,
    /// Fetch a media's index at once on its first open.
    pub index_first: bool,
    /// How long read-ahead goes on for a position nobody reads any more.
    pub read_ahead_grace: Duration,
    /// Age after which an origin's validators are checked again.
    pub revalidate_after: Duration,
    /// Largest size an origin may claim for a media.
    pub max_media_size: u64,
    /// How long a player may take no bytes before its stream is closed.
    pub write_timeout: Duration,
    /// Cached chunks sent with sendfile where the connection can.
    pub sendfile: bool,
    /// Response bodies streaming at once.
    pub max_streams: usize,
    /// Fill while watched: after how long a player read (None: off for
    /// every origin), and whether for origins whose `[[upstream]]` does
    /// not say (`--fill-while-watched`).
    pub fill_after: Option<Duration>,
    pub fill_by_default: bool,
}

impl Settings {
    /// The read-ahead policy these settings make (`readahead.rs`).
    pub fn read_ahead_policy(&self) -> super::readahead::Policy {
        super::readahead::Policy {
            max_bytes: self.read_ahead,
            time: self.read_ahead_time,
            grace: self.read_ahead_grace,
        }
    }
}
