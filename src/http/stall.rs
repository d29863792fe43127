//! A connection whose client stopped taking bytes is closed.
//!
//! When a player stops reading, its socket fills, hyper stops polling the
//! response body, and nothing inside the body producer can end the
//! connection: the socket, its `--max-connections` place, the stream's
//! permit and its playhead would stay for as long as the client keeps the
//! connection open. So every connection's writes are watched: a write the
//! socket has not taken for `--write-timeout` closes the connection (its
//! body producer then sees the player gone and frees what it holds).
//! Idle keep-alive connections write nothing and are not stalled; the
//! header timeout is theirs.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Since when a connection's writes have waited for its socket.
#[derive(Debug)]
pub(crate) struct Stall {
    base: Instant,
    /// Milliseconds after `base` plus one when the current wait began;
    /// 0 while writes go through.
    since: AtomicU64,
}

impl Stall {
    pub fn new() -> Arc<Stall> {
        Arc::new(Stall {
            base: Instant::now(),
            since: AtomicU64::new(0),
        })
    }

    fn waiting(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            let ms = self.base.elapsed().as_millis() as u64 + 1;
            self.since.store(ms, Ordering::Relaxed);
        }
    }

    fn moved(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    /// How long the current wait has lasted (zero when none).
    fn stalled_for(&self) -> Duration {
        match self.since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            ms => self
                .base
                .elapsed()
                .saturating_sub(Duration::from_millis(ms - 1)),
        }
    }

    /// Resolves once a write has waited `limit` for the socket.
    pub async fn expired(&self, limit: Duration) {
        let tick = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            tokio::time::sleep(tick).await;
            // A write waiting now, for the limit (a limit of 0 closes only
            // connections that are stalled, never idle ones).
            let stalled = self.stalled_for();
            if self.since.load(Ordering::Relaxed) != 0 && stalled >= limit {
                return;
            }
        }
    }
}

/// An IO whose writes are watched by a [`Stall`].
pub(crate) struct Watched<T> {
    inner: T,
    stall: Arc<Stall>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, stall: Arc<Stall>) -> Watched<T> {
        Watched { inner, stall }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    fn note<R>(&self, r: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        match &r {
            Poll::Pending => self.stall.waiting(),
            Poll::Ready(_) => self.stall.moved(),
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that reads nothing: writes stall once the pipe is full, and
    /// the stall expires after the limit; reading clears it.
    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_does_not_take_expires() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let stall = Stall::new();
        let mut w = Watched::new(ours, stall.clone());
        w.write_all(&[0; 1024]).await.unwrap();
        assert_eq!(stall.stalled_for(), Duration::ZERO);
        let writer = tokio::spawn(async move {
            let _ = w.write_all(&[0; 4096]).await;
        });
        let limit = Duration::from_secs(60);
        let expired = tokio::time::timeout(limit * 2, stall.expired(limit)).await;
        assert!(expired.is_ok(), "a stalled write expires");
        assert!(stall.stalled_for() >= limit);
        // The peer reads: the write goes on, the stall is over.
        let mut sink = vec![0; 8192];
        use tokio::io::AsyncReadExt;
        let mut got = 0;
        while got < 1024 + 4096 {
            got += theirs.read(&mut sink).await.unwrap();
        }
        writer.await.unwrap();
        assert_eq!(stall.stalled_for(), Duration::ZERO);
    }
}
