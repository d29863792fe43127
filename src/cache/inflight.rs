//! A chunk while it downloads: the bytes that have arrived so far, which any
//! number of readers follow as they grow. This is what lets the first bytes
//! of a miss reach the player as soon as the origin sends them, and what
//! makes all players of one chunk share one upstream transfer.
//!
//! A chunk may download in two parts: when a player seeks into the middle
//! of a missing chunk, the run starts at the player's byte (the *tail*, so
//! the first byte comes after one origin round trip) and a second, small
//! request fetches the bytes before it (the *head*). Each byte still comes
//! from the origin once.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::watch;

use super::error::CacheError;

/// One sequentially filled part of a chunk.
#[derive(Debug, Default)]
struct Part {
    pieces: Vec<Bytes>,
    /// Offset of each piece within the part.
    starts: Vec<u64>,
    filled: u64,
    end: Option<Result<(), CacheError>>,
}

impl Part {
    fn push(&mut self, piece: Bytes) {
        self.starts.push(self.filled);
        self.filled += piece.len() as u64;
        self.pieces.push(piece);
    }

    /// The bytes at `offset` up to the end of their piece, if arrived.
    fn slice_at(&self, offset: u64) -> Option<Bytes> {
        if offset >= self.filled {
            return None;
        }
        let i = self.starts.partition_point(|&s| s <= offset) - 1;
        let within = (offset - self.starts[i]) as usize;
        Some(self.pieces[i].slice(within..))
    }

    fn fail(&mut self, e: &CacheError) {
        if !matches!(self.end, Some(Ok(()))) {
            self.end = Some(Err(e.clone()));
        }
    }
}

#[derive(Debug, Default)]
struct State {
    head: Part,
    tail: Part,
}

#[derive(Debug)]
pub(crate) struct InFlight {
    len: u64,
    /// Where the tail starts within the chunk (0: no head part).
    split: u64,
    state: Mutex<State>,
    changed: watch::Sender<()>,
}

impl InFlight {
    pub fn new(len: u64) -> InFlight {
        InFlight::with_split(len, 0)
    }

    /// A chunk whose bytes before `split` come from a separate request.
    pub fn with_split(len: u64, split: u64) -> InFlight {
        let mut state = State::default();
        if split == 0 {
            state.head.end = Some(Ok(()));
        }
        InFlight {
            len,
            split: split.min(len),
            state: Mutex::new(state),
            changed: watch::Sender::new(()),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Where the tail starts within the chunk.
    pub fn split(&self) -> u64 {
        self.split
    }

    /// Bytes the tail still needs.
    pub fn tail_missing(&self) -> u64 {
        (self.len - self.split) - self.state.lock().unwrap().tail.filled
    }

    /// Whether the head part has ended (complete or failed).
    pub fn head_ended(&self) -> bool {
        self.state.lock().unwrap().head.end.is_some()
    }

    /// Bytes the head still needs.
    pub fn head_missing(&self) -> u64 {
        self.split - self.state.lock().unwrap().head.filled
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
        self.changed.send_replace(());
    }

    /// Appends bytes to the tail; the writer never passes its length.
    pub fn push(&self, piece: Bytes) {
        if !piece.is_empty() {
            self.update(|st| st.tail.push(piece));
        }
    }

    pub fn push_head(&self, piece: Bytes) {
        if !piece.is_empty() {
            self.update(|st| st.head.push(piece));
        }
    }

    /// Marks the tail complete.
    pub fn finish_tail(&self) {
        self.update(|st| {
            st.tail.end.get_or_insert(Ok(()));
        });
    }

    /// Marks the head complete or failed.
    pub fn finish_head(&self, result: Result<(), CacheError>) {
        self.update(|st| match result {
            Ok(()) => {
                st.head.end.get_or_insert(Ok(()));
            }
            Err(e) => st.head.fail(&e),
        });
    }

    /// Fails whatever is not complete yet.
    pub fn fail(&self, e: CacheError) {
        self.update(|st| {
            st.head.fail(&e);
            st.tail.fail(&e);
        });
    }

    /// None while downloading; then whether every byte arrived.
    fn outcome(&self) -> Option<Result<(), CacheError>> {
        let st = self.state.lock().unwrap();
        match (&st.head.end, &st.tail.end) {
            (Some(Err(e)), _) | (_, Some(Err(e))) => Some(Err(e.clone())),
            (Some(Ok(())), Some(Ok(()))) => Some(Ok(())),
            _ => None,
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.outcome(), Some(Ok(())))
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.outcome(), Some(Err(_)))
    }

    /// Why a part failed, if one did.
    pub fn failure(&self) -> Option<CacheError> {
        self.outcome().and_then(Result::err)
    }

    /// Waits until every byte arrived or a part failed.
    pub async fn wait(&self) -> Result<(), CacheError> {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(r) = self.outcome() {
                return r;
            }
            let _ = rx.changed().await;
        }
    }

    /// The pieces of a complete chunk, in order, for writing it to disk.
    pub fn pieces(&self) -> Vec<Bytes> {
        let st = self.state.lock().unwrap();
        st.head
            .pieces
            .iter()
            .chain(st.tail.pieces.iter())
            .cloned()
            .collect()
    }

    /// Returns the bytes available at `offset` (at most up to the end of
    /// one piece), waiting for them to arrive. `Ok(None)` means `offset` is
    /// the chunk's end.
    pub async fn read_at(&self, offset: u64) -> Result<Option<Bytes>, CacheError> {
        if offset >= self.len {
            return Ok(None);
        }
        let mut rx = self.changed.subscribe();
        loop {
            {
                let st = self.state.lock().unwrap();
                let (part, at) = if offset < self.split {
                    (&st.head, offset)
                } else {
                    (&st.tail, offset - self.split)
                };
                if let Some(b) = part.slice_at(at) {
                    return Ok(Some(b));
                }
                if let Some(Err(e)) = &part.end {
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

    async fn read_all(c: &InFlight, mut off: u64) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(b) = c.read_at(off).await.unwrap() {
            off += b.len() as u64;
            got.extend_from_slice(&b);
        }
        got
    }

    #[tokio::test]
    async fn readers_follow_the_writer() {
        let c = Arc::new(InFlight::new(6));
        let reader = {
            let c = c.clone();
            tokio::spawn(async move { read_all(&c, 0).await })
        };
        tokio::task::yield_now().await;
        c.push(Bytes::from_static(b"abc"));
        tokio::task::yield_now().await;
        c.push(Bytes::from_static(b"def"));
        c.finish_tail();
        assert_eq!(reader.await.unwrap(), b"abcdef");
        assert_eq!(&c.read_at(4).await.unwrap().unwrap()[..], b"ef");
        assert!(c.is_complete());
        assert_eq!(c.wait().await, Ok(()));
    }

    #[tokio::test]
    async fn head_and_tail() {
        let c = Arc::new(InFlight::with_split(6, 2));
        assert!(!c.is_complete());
        // A reader at the split gets tail bytes before the head arrives.
        c.push(Bytes::from_static(b"cd"));
        assert_eq!(&c.read_at(2).await.unwrap().unwrap()[..], b"cd");
        let from_start = {
            let c = c.clone();
            tokio::spawn(async move { read_all(&c, 0).await })
        };
        c.push(Bytes::from_static(b"ef"));
        c.finish_tail();
        assert!(!c.is_complete(), "head still missing");
        c.push_head(Bytes::from_static(b"ab"));
        c.finish_head(Ok(()));
        assert_eq!(from_start.await.unwrap(), b"abcdef");
        assert_eq!(c.pieces().concat(), b"abcdef");
        assert_eq!(c.wait().await, Ok(()));
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
        c.fail(CacheError::Cancelled);
        assert_eq!(waiting.await.unwrap(), Err(CacheError::Cancelled));
        // Bytes that arrived are still readable.
        assert_eq!(&c.read_at(1).await.unwrap().unwrap()[..], b"b");
        assert!(c.is_failed());
        assert_eq!(c.wait().await, Err(CacheError::Cancelled));
    }
}
