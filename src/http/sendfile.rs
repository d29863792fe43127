//! A client connection's socket that sends file pieces with
//! `sendfile(2)`: where hyper writes a file piece's stand-in
//! (`store/outbox.rs`), the piece's bytes go from the chunk file to the
//! socket in the kernel; every other byte (headers, bytes read or
//! downloaded) is written as it is.
//!
//! The bytes hyper writes before a stand-in in one call (a response's
//! headers, say) go out first, and the piece follows in the same call
//! when the socket takes it, so a warm response costs one trip through
//! the runtime, not two. hyper must write a connection's buffers as they
//! are (`writev`), never copied into one: the listener sets it so, and
//! only connections with this socket take file pieces.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tracing::warn;

use crate::metrics::Metrics;
use crate::store::outbox::Outbox;

/// Most bytes one `sendfile` call is asked for.
const MOST_PER_CALL: usize = 1 << 20;

/// A TCP stream whose writes send the file pieces of `outbox`.
pub(crate) struct Sendfile {
    stream: TcpStream,
    outbox: Outbox,
    metrics: Arc<Metrics>,
}

impl Sendfile {
    pub fn new(stream: TcpStream, outbox: Outbox, metrics: Arc<Metrics>) -> Sendfile {
        Sendfile {
            stream,
            outbox,
            metrics,
        }
    }

    /// Sends what the socket takes now of the front file piece, whose
    /// stand-in is `buf`; `WouldBlock` when it takes nothing.
    fn try_send_file(&self, buf: &[u8]) -> io::Result<usize> {
        let stream = &self.stream;
        let sent = self.outbox.send_front(buf, |file, offset, len| {
            stream.try_io(Interest::WRITABLE, || {
                let mut at = offset;
                rustix::fs::sendfile(stream, file, Some(&mut at), len.min(MOST_PER_CALL))
                    .map_err(io::Error::from)
            })
        })?;
        self.metrics.sendfile_bytes.inc_by(sent as u64);
        Ok(sent)
    }

    /// Counts what a write took, for the bodies waiting on this player.
    fn took(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = &r {
            self.outbox.wrote(*n);
        }
        r
    }

    /// Runs `io` once the socket may take bytes, again while it would
    /// block.
    fn poll_writable(
        &self,
        cx: &mut Context<'_>,
        mut io: impl FnMut() -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.stream.poll_write_ready(cx))?;
            match io() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    /// Writes bytes a file piece follows (a response's headers): the
    /// socket holds them back for the piece (`MSG_MORE`) rather than send
    /// a small segment of their own; the piece's last page pushes them.
    fn poll_write_more(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = &self.stream;
        let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
        self.poll_writable(cx, || {
            stream.try_io(Interest::WRITABLE, || {
                rustix::net::sendmsg(stream, bufs, &mut SendAncillaryBuffer::default(), flags)
                    .map_err(io::Error::from)
            })
        })
    }

    fn poll_send_file(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = std::task::ready!(self.poll_writable(cx, || self.try_send_file(buf)));
        // A player hanging up is no news; a file piece that cannot go out
        // as queued is.
        if let Err(e) = &r {
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) {
                warn!(error = %e, "cannot send a cached chunk's bytes; connection closed");
            }
        }
        Poll::Ready(r)
    }
}

impl AsyncRead for Sendfile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Sendfile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = match Outbox::is_stand_in(buf) {
            true => self.poll_send_file(cx, buf),
            false => Pin::new(&mut self.stream).poll_write(cx, buf),
        };
        self.took(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = match bufs.iter().position(|b| Outbox::is_stand_in(b)) {
            None => Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
            Some(0) => self.poll_send_file(cx, &bufs[0]),
            Some(i) => {
                let before = &bufs[..i];
                let n = std::task::ready!(self.poll_write_more(cx, before))?;
                if n < before.iter().map(|b| b.len()).sum::<usize>() {
                    Poll::Ready(Ok(n))
                } else {
                    // The piece follows now if the socket takes it;
                    // otherwise (or on an error, met again and told at
                    // the next write) later.
                    Poll::Ready(Ok(n + self.try_send_file(&bufs[i]).unwrap_or(0)))
                }
            }
        };
        self.took(r)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
