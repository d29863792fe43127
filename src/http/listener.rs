//! Accepting connections, with limits: every client that reaches the port
//! is input. At most `--max-connections` at once and
//! `--max-connections-per-client` from one address (more are closed at
//! once, counted and logged); a request's headers must arrive within
//! `--header-timeout`, which also closes keep-alive connections idle that
//! long; running out of file descriptors makes the loop back off instead
//! of spinning. Shutdown stops accepting and lets open connections finish.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::control::Peer;
use super::forwarded::Front;
use super::sendfile::Sendfile;
use super::stall::{Stall, Watched};
use crate::cache::Tasks;
use crate::metrics::Metrics;
use crate::store::outbox::Outbox;

/// Bytes of a response hyper holds for a connection beyond its socket.
const WRITE_QUEUE: usize = 64 * 1024;

/// When a request's headers were read, put on every request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received(pub std::time::Instant);

/// Limits on client connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub max_connections: usize,
    pub max_per_client: usize,
    /// Time for a request's headers to arrive, and for an idle keep-alive
    /// connection to send its next request.
    pub header_timeout: Duration,
    /// Most unsent response bytes in a connection's socket (0: the
    /// system's default).
    pub send_queue: u32,
    /// How long a write may wait for a client that takes no bytes before
    /// its connection is closed (`stall.rs`); also TCP_USER_TIMEOUT, for
    /// a peer that vanished without a word.
    pub write_timeout: Duration,
}

/// Open connections, in all and per client address.
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Held while a connection is open (a place in all, and one of its
/// client's), or while a request a trusted proxy forwarded is answered
/// (one of its client's only); gives its places back when dropped.
struct ConnectionPlace {
    open: Arc<Mutex<Open>>,
    /// Whether it holds a place in the total.
    counted: bool,
    /// The client whose place it holds, if any.
    ip: Option<IpAddr>,
}

impl Drop for ConnectionPlace {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap();
        if self.counted {
            open.total -= 1;
        }
        if let Some(ip) = self.ip {
            if let Some(n) = open.per_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.per_client.remove(&ip);
                }
            }
        }
    }
}

/// A place of `client`'s for one forwarded request; None past the limit.
fn client_place(open: &Arc<Mutex<Open>>, client: IpAddr, limit: usize) -> Option<ConnectionPlace> {
    let mut o = open.lock().unwrap();
    let n = o.per_client.get(&client).copied().unwrap_or(0);
    if n >= limit {
        return None;
    }
    o.per_client.insert(client, n + 1);
    Some(ConnectionPlace {
        open: open.clone(),
        counted: false,
        ip: Some(client),
    })
}

/// A response body that holds its client's place until it is dropped
/// (sent, or its connection gone).
struct Held<B> {
    inner: Pin<Box<B>>,
    _place: Option<ConnectionPlace>,
}

impl<B: hyper::body::Body> hyper::body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        self.inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// One open connection in `spool_open_connections`, for as long as it
/// lives.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> OpenConnection {
        metrics.open_connections.inc();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

/// Serves HTTP/1.1 with `filter` on `listener` until `shutdown` resolves,
/// then waits for open connections to finish.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<F>(
    listener: TcpListener,
    filter: F,
    metrics: Arc<Metrics>,
    conn: ConnLimits,
    front: Front,
    tasks: Tasks,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    F: warp::Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let open = Arc::new(Mutex::new(Open {
        total: 0,
        per_client: HashMap::new(),
    }));
    let refusing = Arc::new(AtomicBool::new(false));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut out_of_fds = false;
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    out_of_fds = false;
                    a
                }
                Err(e) => {
                    // EMFILE/ENFILE: wait for connections or files to close
                    // (briefly: health checks must still get in).
                    if crate::disk::out_of_descriptors(&e) {
                        if !out_of_fds {
                            warn!(error = %e, "out of file descriptors; accepting slower");
                            out_of_fds = true;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        debug!(error = %e, "accept failed");
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // An IPv4 client of a dual-stack listener as its IPv4 address
        // (limits, logs and the admin check see one form).
        let ip = peer.ip().to_canonical();
        // A trusted proxy carries many clients: its connections count in
        // the total only, its requests each in their client's limit.
        let proxy = front.trusts(ip);
        let slot = {
            let mut o = open.lock().unwrap();
            let per = o.per_client.get(&ip).copied().unwrap_or(0);
            let reason = if o.total >= conn.max_connections {
                Some("max_connections")
            } else if per >= conn.max_per_client && !proxy {
                Some("max_connections_per_client")
            } else {
                None
            };
            match reason {
                Some(reason) => {
                    metrics.refused(reason);
                    if !refusing.swap(true, Ordering::Relaxed) {
                        warn!(client = %ip, limit = %reason, "connection limit reached; closing new connections");
                    }
                    None
                }
                None => {
                    // Logged again at the next burst of refusals.
                    refusing.store(false, Ordering::Relaxed);
                    o.total += 1;
                    if !proxy {
                        *o.per_client.entry(ip).or_default() += 1;
                    }
                    Some(ConnectionPlace {
                        open: open.clone(),
                        counted: true,
                        ip: (!proxy).then_some(ip),
                    })
                }
            }
        };
        let Some(slot) = slot else {
            drop(socket);
            continue;
        };
        if let Err(e) =
            socket2::SockRef::from(&socket).set_tcp_user_timeout(Some(conn.write_timeout))
        {
            debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
        }
        if conn.send_queue > 0 {
            if let Err(e) = socket2::SockRef::from(&socket).set_tcp_notsent_lowat(conn.send_queue) {
                debug!(error = %e, "cannot set TCP_NOTSENT_LOWAT");
            }
        }
        let warp_svc = TowerToHyperService::new(warp::service(filter.clone()));
        // Handlers that judge the client (admin endpoints) read its address.
        let (front, places, refusing, counts) = (
            front.clone(),
            open.clone(),
            refusing.clone(),
            metrics.clone(),
        );
        let per_client = conn.max_per_client;
        // Cached chunks' pieces this connection sends with sendfile.
        let outbox = Outbox::new();
        let files = outbox.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let received = Received(std::time::Instant::now());
            // Through a proxy only when one said so: a trusted peer's
            // request without a forwarding header (an ssh tunnel to
            // loopback) is its own client.
            let proxied = proxy && front.forwarded(req.headers());
            let client = match proxied {
                true => front.client(ip, req.headers()),
                false => ip,
            };
            req.extensions_mut().insert(Peer {
                addr: client,
                proxied,
            });
            req.extensions_mut().insert(received);
            req.extensions_mut().insert(files.clone());
            if let Some(uri) = front.strip(req.uri()) {
                *req.uri_mut() = uri;
            }
            let place = proxy.then(|| client_place(&places, client, per_client));
            let answer = match place {
                Some(None) => None,
                Some(Some(p)) => Some((Some(p), warp_svc.call(req))),
                None => Some((None, warp_svc.call(req))),
            };
            let (refusing, counts) = (refusing.clone(), counts.clone());
            async move {
                let Some((place, call)) = answer else {
                    counts.refused("max_connections_per_client");
                    if !refusing.swap(true, Ordering::Relaxed) {
                        warn!(client = %client, limit = "max_connections_per_client", "too many requests from one client through a proxy; answering 429");
                    }
                    let r = super::error::text(
                        http::StatusCode::TOO_MANY_REQUESTS,
                        "too many requests at once from this client (--max-connections-per-client)",
                    );
                    return Ok::<_, std::convert::Infallible>(r.map(|b| Held {
                        inner: Box::pin(b),
                        _place: None,
                    }));
                };
                let r = call.await?;
                Ok(r.map(|b| Held {
                    inner: Box::pin(b),
                    _place: place,
                }))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(conn.header_timeout)
            // What hyper queues of a response before the socket takes it
            // (its default is 400 KiB; the socket's own queue is
            // --send-queue). Also the most a request's headers may take.
            .max_buf_size(WRITE_QUEUE)
            // Buffers written as they are, never copied into one: a file
            // piece's stand-in must reach the socket (`sendfile.rs`).
            .writev(true)
            .keep_alive(true);
        let stall = Stall::new();
        let io = TokioIo::new(Watched::new(
            Sendfile::new(socket, outbox, metrics.clone()),
            stall.clone(),
        ));
        let connection = builder.serve_connection(io, svc);
        let connection = graceful.watch(connection);
        let metrics = metrics.clone();
        let write_timeout = conn.write_timeout;
        // Cut at the shutdown deadline with every other player task; its
        // place and its count in the gauge go with it however it ends.
        let open = OpenConnection::new(metrics.clone());
        tasks.spawn(async move {
            let _open = open;
            tokio::select! {
                // Players hang up mid-body all the time (seeks, a closed
                // tab), and slow or idle clients are timed out: not errors.
                ended = connection => if let Err(e) = ended {
                    debug!(client = %ip, error = %e, "connection ended");
                },
                // Dropping the connection closes its socket; its body
                // producer then finds the player gone.
                () = stall.expired(write_timeout) => {
                    debug!(client = %ip, "client took no bytes for --write-timeout; connection closed");
                    metrics.limited("write_timeout");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
