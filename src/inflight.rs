//! A chunk while it downloads: the bytes that have arrived so far, which any
//! number of readers follow as they grow. This is what lets the first bytes
//! of a miss reach the player as soon as the origin sends them, and what
//! makes all players of one chunk share one upstream transfer.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::watch;

/// Why a download ended without completing its chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkFailure {
    /// No player wanted the chunk any more; whoever wants it next fetches it.
    #[error("download cancelled")]
    Cancelled,
    /// The origin's copy changed; the chunk belongs to an outdated version.
    #[error("the origin's media changed")]
    Changed,
    /// The origin failed, with a short reason.
    #[error("upstream: {0}")]
    Upstream(String),
}

#[derive(Debug, Default)]
struct State {
    pieces: Vec<Bytes>,
    /// Offset of each piece within the chunk.
    starts: Vec<u64>,
    filled: u64,
    end: Option<Result<(), ChunkFailure>>,
}

#[derive(Debug)]
pub struct InFlight {
    len: u64,
    state: Mutex<State>,
    changed: watch::Sender<()>,
}

impl InFlight {
    pub fn new(len: u64) -> InFlight {
        InFlight {
            len,
            state: Mutex::default(),
            changed: watch::Sender::new(()),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes; the writer never passes the chunk's length.
    pub fn push(&self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        {
            let mut st = self.state.lock().unwrap();
            debug_assert!(st.filled + piece.len() as u64 <= self.len);
            let start = st.filled;
            st.filled += piece.len() as u64;
            st.starts.push(start);
            st.pieces.push(piece);
        }
        self.changed.send_replace(());
    }

    pub fn filled(&self) -> u64 {
        self.state.lock().unwrap().filled
    }

    /// Marks the chunk complete (all `len` bytes pushed) or failed.
    pub fn finish(&self, result: Result<(), ChunkFailure>) {
        {
            let mut st = self.state.lock().unwrap();
            if st.end.is_some() {
                return;
            }
            debug_assert!(result.is_err() || st.filled == self.len);
            st.end = Some(result);
        }
        self.changed.send_replace(());
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.state.lock().unwrap().end, Some(Ok(())))
    }

    /// The pieces of a complete chunk, for writing it to disk.
    pub fn pieces(&self) -> Vec<Bytes> {
        self.state.lock().unwrap().pieces.clone()
    }

    /// Returns the bytes available at `offset` (at most up to the end of
    /// one piece), waiting for them to arrive. `Ok(None)` means `offset` is
    /// the chunk's end.
    pub async fn read_at(&self, offset: u64) -> Result<Option<Bytes>, ChunkFailure> {
        if offset >= self.len {
            return Ok(None);
        }
        let mut rx = self.changed.subscribe();
        loop {
            {
                let st = self.state.lock().unwrap();
                if offset < st.filled {
                    // The last piece starting at or before `offset`.
                    let i = st.starts.partition_point(|&s| s <= offset) - 1;
                    let within = (offset - st.starts[i]) as usize;
                    return Ok(Some(st.pieces[i].slice(within..)));
                }
                if let Some(Err(e)) = &st.end {
                    return Err(e.clone());
                }
            }
            // The sender lives as long as `self`, so this cannot fail.
            let _ = rx.changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn readers_follow_the_writer() {
        let c = Arc::new(InFlight::new(6));
        let reader = {
            let c = c.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut off = 0;
                while let Some(b) = c.read_at(off).await.unwrap() {
                    off += b.len() as u64;
                    got.extend_from_slice(&b);
                }
                got
            })
        };
        tokio::task::yield_now().await;
        c.push(Bytes::from_static(b"abc"));
        tokio::task::yield_now().await;
        c.push(Bytes::from_static(b"def"));
        c.finish(Ok(()));
        assert_eq!(reader.await.unwrap(), b"abcdef");
        assert_eq!(&c.read_at(4).await.unwrap().unwrap()[..], b"ef");
        assert!(c.is_complete());
    }

    #[tokio::test]
    async fn failure_reaches_waiting_readers() {
        let c = Arc::new(InFlight::new(6));
        c.push(Bytes::from_static(b"ab"));
        let waiting = {
            let c = c.clone();
            tokio::spawn(async move { c.read_at(2).await })
        };
        tokio::task::yield_now().await;
        c.finish(Err(ChunkFailure::Cancelled));
        assert_eq!(waiting.await.unwrap(), Err(ChunkFailure::Cancelled));
        // Bytes that arrived are still readable.
        assert_eq!(&c.read_at(1).await.unwrap().unwrap()[..], b"b");
    }
}
