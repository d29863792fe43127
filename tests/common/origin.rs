//! A real HTTP/1.1 origin server on loopback for spool's integration tests
//! and benchmarks, with faults on demand.
//!
//! Used from integration tests as `common::origin::Origin` and from
//! `examples/origin.rs` through `#[path = "../tests/common/origin.rs"]`.
//!
//! Behaviour, per request:
//! * `GET` and `HEAD` only (anything else: 405).
//! * The request path (percent-decoded, without the leading `/`) selects the
//!   file; `path?query` is tried first, then `path` alone. Unknown: 404.
//! * `Range: bytes=a-b | a- | -n` (one range) gives 206 with Content-Range;
//!   an unsatisfiable one gives 416 with `Content-Range: bytes */size`;
//!   a malformed or multi-range header is ignored (200, whole body).
//! * `If-Range` that does not match the current validator makes the Range be
//!   ignored (200). `If-None-Match` / `If-Modified-Since` give 304.
//! * 200/206 carry Content-Type, ETag, Last-Modified (unless `no_validators`),
//!   Content-Length and `Accept-Ranges: bytes` (unless `no_length`).
//!
//! Faults are set per path with [`Origin::set_faults`]; see [`Faults`].
//! Bodies are streamed in pieces (64 KiB, or 16 KiB when throttled); disk
//! files are read with pread, never loaded whole.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use tokio::sync::mpsc;
use warp::Filter;

/// Piece size of an unthrottled body.
const PIECE: usize = 64 * 1024;
/// Piece size of a throttled body (finer pacing).
const THROTTLED_PIECE: usize = 16 * 1024;
/// One pread of a disk file reads this much, then it is sent in pieces.
const DISK_READ: usize = 256 * 1024;
/// After the last byte before an injected reset, wait this long so hyper
/// flushes what was yielded before the connection is aborted.
const RESET_FLUSH_DELAY: Duration = Duration::from_millis(100);
/// By default the request log keeps at most this many records (later ones
/// are dropped); see [`Origin::set_log_limit`].
const LOG_LIMIT: usize = 100_000;

/// Faults injected for one path. `Default` is a well-behaved origin.
#[derive(Clone, Default, Debug)]
pub struct Faults {
    /// Delay before the response headers.
    pub latency: Duration,
    /// Throttle each response body to this rate (per response/connection).
    pub rate_bytes_per_sec: Option<u64>,
    /// Send the body in pieces of this many bytes (with a rate: a trickle,
    /// e.g. one byte every half second).
    pub piece_bytes: Option<u64>,
    /// Abort the connection after this many body bytes of a response (only
    /// when the response body is longer than that). With `reset_once` the
    /// fault is cleared when it fires.
    pub reset_after_bytes: Option<u64>,
    pub reset_once: bool,
    /// After this many body bytes of a response (only when the body is
    /// longer), send nothing more and keep the connection open until the
    /// client goes away: a source that stalls mid-body.
    pub stall_after_bytes: Option<u64>,
    /// Answer 200 with the full body even when Range is sent (still claims
    /// `Accept-Ranges: bytes`, like a misbehaving server would).
    pub ignore_range: bool,
    /// No Content-Length (chunked body), no Accept-Ranges, Range ignored.
    pub no_length: bool,
    /// Answer ranges with `Content-Range: bytes a-b/*` (total size unknown,
    /// as for a file still growing).
    pub unknown_total: bool,
    /// Send neither ETag nor Last-Modified (and ignore conditional headers).
    pub no_validators: bool,
    /// Answer with this status and a short text body instead.
    pub status: Option<u16>,
    /// Answer `302 Found` with `Location:` this.
    pub redirect_to: Option<String>,
    /// Accept the request and never answer.
    pub hang: bool,
    /// Claim this total size in `Content-Range` (the body stays the real
    /// bytes), as a lying or hostile origin would.
    pub claim_total: Option<u64>,
    /// Send this `Content-Encoding` (the body is served as stored), as an
    /// origin that compresses whatever the client asks would.
    pub content_encoding: Option<String>,
    /// Answer `429 Too Many Requests` with `Retry-After` (`Busy`), as
    /// rate-limited CDNs and debrid services do.
    pub busy: Option<Busy>,
    /// Answer `503` with `Retry-After: 1` while this many response bodies
    /// (of any path) are open: a server that caps its connections.
    pub max_open: Option<u64>,
    /// Answer presigned URLs only (`Origin::presign`), until they expire:
    /// a URL without a valid signature, or past its expiry, gets 403, as
    /// S3 answers.
    pub presigned: bool,
    /// With `presigned`: the status a URL without a valid signature gets
    /// instead of 403 (a CDN answering a bad token with 404).
    pub presigned_refusal: Option<u16>,
}

/// 429 with `Retry-After: retry_after_secs` to `times` requests of a path,
/// from its `from`-th request on (1: the first).
#[derive(Clone, Debug, Default)]
pub struct Busy {
    pub from: u64,
    pub times: u64,
    pub retry_after_secs: u64,
    /// Requests seen and 429s given so far.
    pub seen: Arc<AtomicU64>,
    pub given: Arc<AtomicU64>,
}

impl Busy {
    pub fn new(from: u64, times: u64, retry_after_secs: u64) -> Busy {
        Busy {
            from,
            times,
            retry_after_secs,
            ..Busy::default()
        }
    }

    /// Whether this request gets a 429.
    fn fires(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.from {
            return false;
        }
        self.given
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |g| {
                (g < self.times).then_some(g + 1)
            })
            .is_ok()
    }
}

impl Faults {
    /// Only a throttle: each response body at `rate` bytes per second.
    pub fn throttled(rate: u64) -> Faults {
        Faults {
            rate_bytes_per_sec: Some(rate),
            ..Faults::default()
        }
    }
}

#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Stats {
    pub requests: u64,
    pub body_bytes: u64,
}

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    /// The path as requested, without the leading `/` (query included).
    pub path: String,
    /// The `Range` request header, if any.
    pub range: Option<String>,
    /// Status answered; 0 while the response is not decided yet (hang).
    pub status: u16,
    /// Body bytes yielded to the connection so far.
    pub body_bytes: u64,
    /// All request headers.
    pub headers: HeaderMap,
    /// When the request arrived.
    pub at: std::time::Instant,
}

#[derive(Clone, Debug)]
enum Content {
    Mem(Bytes),
    Disk { file: PathBuf, len: u64 },
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Content::Mem(b) => b.len() as u64,
            Content::Disk { len, .. } => *len,
        }
    }
}

#[derive(Clone, Debug)]
struct FileEntry {
    content: Content,
    content_type: String,
    etag: String,
    last_modified: SystemTime,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    body_bytes: AtomicU64,
}

impl Counters {
    fn get(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            body_bytes: self.body_bytes.load(Ordering::Relaxed),
        }
    }
    fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.body_bytes.store(0, Ordering::Relaxed);
    }
}

struct LogEntry {
    method: String,
    path: String,
    range: Option<String>,
    headers: HeaderMap,
    status: AtomicU64,
    body_bytes: AtomicU64,
    at: std::time::Instant,
}

struct Inner {
    addr: SocketAddr,
    files: Mutex<HashMap<String, FileEntry>>,
    faults: Mutex<HashMap<String, Faults>>,
    path_counters: Mutex<HashMap<String, Arc<Counters>>>,
    total: Arc<Counters>,
    log: Mutex<Vec<Arc<LogEntry>>>,
    log_limit: AtomicUsize,
    /// Fake clock for Last-Modified: advances >= 1 s per change.
    clock: Mutex<Option<SystemTime>>,
    next_tag: AtomicU64,
    open_bodies: Arc<AtomicU64>,
    /// The most response bodies open at once since the last reset.
    peak_open: Arc<AtomicU64>,
    salt: u32,
}

impl Inner {
    fn signature(&self, path: &str, expires: &str, nonce: u64) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.salt, path, expires, nonce).hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Whether `query` presigns `path` and has not expired; why not.
    fn check_presigned(&self, path: &str, query: &str) -> Result<(), &'static str> {
        let get = |name: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        };
        let (Some(expires), Some(nonce), Some(sig)) = (
            get("X-Amz-Expires"),
            get("X-Amz-Nonce").and_then(|n| n.parse::<u64>().ok()),
            get("X-Amz-Signature"),
        ) else {
            return Err("not a presigned URL");
        };
        if self.signature(path, expires, nonce) != sig {
            return Err("signature does not match");
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        match expires.parse::<f64>() {
            Ok(t) if t > now => Ok(()),
            _ => Err("request has expired"),
        }
    }
}

/// The test origin. Cheap to clone; the server runs on the tokio runtime
/// that called [`Origin::start`] and stops with it.
#[derive(Clone)]
pub struct Origin {
    inner: Arc<Inner>,
}

fn key_of(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

impl Origin {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start() -> Origin {
        Origin::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("test origin: bind 127.0.0.1:0")
    }

    /// Binds the given address and starts serving.
    pub async fn bind(addr: SocketAddr) -> io::Result<Origin> {
        // TCP_NODELAY on the listening socket is inherited by accepted
        // sockets on Linux: without it, small throttled pieces meet Nagle
        // and delayed ACKs (40 ms stalls).
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            addr,
            files: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            path_counters: Mutex::new(HashMap::new()),
            total: Arc::new(Counters::default()),
            log: Mutex::new(Vec::new()),
            log_limit: AtomicUsize::new(LOG_LIMIT),
            clock: Mutex::new(None),
            next_tag: AtomicU64::new(1),
            open_bodies: Arc::default(),
            peak_open: Arc::default(),
            salt: rand::random::<u32>(),
        });
        let state = inner.clone();
        let route =
            warp::method()
                .and(warp::path::full())
                .and(warp::query::raw().or(warp::any().map(String::new)).unify())
                .and(warp::header::headers_cloned())
                .then(
                    move |method: Method,
                          path: warp::path::FullPath,
                          query: String,
                          headers: HeaderMap| {
                        let state = state.clone();
                        async move {
                            handle(state, method, path.as_str().to_string(), query, headers).await
                        }
                    },
                );
        tokio::spawn(warp::serve(route).incoming(listener).run());
        Ok(Origin { inner })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A presigned URL of `path` valid for `ttl` from now, S3 style: the
    /// expiry and a signature in the query (`X-Amz-Expires`,
    /// `X-Amz-Signature`), the signature new for every URL.
    pub fn presign(&self, path: &str, ttl: Duration) -> String {
        let expires = SystemTime::now()
            .checked_add(ttl)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let nonce = self.inner.next_tag.fetch_add(1, Ordering::Relaxed);
        let sig = self
            .inner
            .signature(&key_of(path), &format!("{expires:.3}"), nonce);
        format!(
            "{}?X-Amz-Expires={expires:.3}&X-Amz-Nonce={nonce}&X-Amz-Signature={sig}",
            self.url(path)
        )
    }

    /// `http://127.0.0.1:PORT/<path>` (a leading `/` in `path` is allowed).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.inner.addr, key_of(path))
    }

    /// Serves `data` at `path`, replacing any previous content. Each call
    /// gives a new ETag and a Last-Modified at least 1 s after the last one.
    pub fn add_file(&self, path: &str, data: Bytes, content_type: &str) {
        self.insert(path, Content::Mem(data), content_type);
    }

    /// Serves the file on disk at `path` (read with pread on each request;
    /// its length is taken now).
    pub fn add_disk_file(&self, path: &str, file: PathBuf, content_type: &str) {
        let len = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("test origin: stat {}: {e}", file.display()))
            .len();
        self.insert(path, Content::Disk { file, len }, content_type);
    }

    /// Stops serving `path` (404 from now on).
    pub fn remove_file(&self, path: &str) {
        self.inner.files.lock().unwrap().remove(&key_of(path));
    }

    fn insert(&self, path: &str, content: Content, content_type: &str) {
        let last_modified = {
            let mut clock = self.inner.clock.lock().unwrap();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let now = UNIX_EPOCH + Duration::from_secs(now);
            let t = match *clock {
                Some(prev) if prev + Duration::from_secs(1) > now => prev + Duration::from_secs(1),
                _ => now,
            };
            *clock = Some(t);
            t
        };
        let tag = self.inner.next_tag.fetch_add(1, Ordering::Relaxed);
        let entry = FileEntry {
            content,
            content_type: content_type.to_string(),
            etag: format!("\"{:08x}-{:x}\"", self.inner.salt, tag),
            last_modified,
        };
        self.inner.files.lock().unwrap().insert(key_of(path), entry);
    }

    /// Current ETag of `path` (None if not served).
    pub fn etag(&self, path: &str) -> Option<String> {
        self.inner
            .files
            .lock()
            .unwrap()
            .get(&key_of(path))
            .map(|e| e.etag.clone())
    }

    /// Current Last-Modified of `path` as an HTTP-date (None if not served).
    pub fn last_modified(&self, path: &str) -> Option<String> {
        self.inner
            .files
            .lock()
            .unwrap()
            .get(&key_of(path))
            .map(|e| httpdate::fmt_http_date(e.last_modified))
    }

    pub fn set_faults(&self, path: &str, faults: Faults) {
        self.inner
            .faults
            .lock()
            .unwrap()
            .insert(key_of(path), faults);
    }

    pub fn clear_faults(&self, path: &str) {
        self.inner.faults.lock().unwrap().remove(&key_of(path));
    }

    /// Response bodies being sent now (a body counts until hyper drops it:
    /// sent whole, or its connection closed).
    pub fn open_bodies(&self) -> u64 {
        self.inner.open_bodies.load(Ordering::Relaxed)
    }

    /// The most response bodies open at once since the start or the last
    /// `reset_peak_open_bodies`: the origin's concurrent transfers.
    pub fn peak_open_bodies(&self) -> u64 {
        self.inner.peak_open.load(Ordering::Relaxed)
    }

    pub fn reset_peak_open_bodies(&self) {
        let open = self.inner.open_bodies.load(Ordering::Relaxed);
        self.inner.peak_open.store(open, Ordering::Relaxed);
    }

    /// Totals over all paths (unknown paths included).
    pub fn stats(&self) -> Stats {
        self.inner.total.get()
    }

    pub fn path_stats(&self, path: &str) -> Stats {
        self.inner
            .path_counters
            .lock()
            .unwrap()
            .get(&key_of(path))
            .map(|c| c.get())
            .unwrap_or_default()
    }

    /// Zeroes all counters and clears the request log.
    pub fn reset_stats(&self) {
        self.inner.total.reset();
        for c in self.inner.path_counters.lock().unwrap().values() {
            c.reset();
        }
        self.inner.log.lock().unwrap().clear();
    }

    /// Keep at most `n` records in the request log (0: keep none).
    pub fn set_log_limit(&self, n: usize) {
        self.inner.log_limit.store(n, Ordering::Relaxed);
    }

    /// Requests seen since start (or the last `reset_stats`), oldest first.
    pub fn requests_log(&self) -> Vec<RequestRecord> {
        self.inner
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|e| RequestRecord {
                method: e.method.clone(),
                path: e.path.clone(),
                range: e.range.clone(),
                status: e.status.load(Ordering::Relaxed) as u16,
                body_bytes: e.body_bytes.load(Ordering::Relaxed),
                headers: e.headers.clone(),
                at: e.at,
            })
            .collect()
    }
}

/// Where a body's bytes are counted as the stream yields them.
#[derive(Clone)]
struct Meter {
    path: Arc<Counters>,
    total: Arc<Counters>,
    log: Arc<LogEntry>,
    /// Response bodies not dropped yet (by hyper, when sent or cut).
    open: Arc<AtomicU64>,
    /// The most of them at once.
    peak: Arc<AtomicU64>,
}

impl Meter {
    fn add(&self, n: u64) {
        self.path.body_bytes.fetch_add(n, Ordering::Relaxed);
        self.total.body_bytes.fetch_add(n, Ordering::Relaxed);
        self.log.body_bytes.fetch_add(n, Ordering::Relaxed);
    }
}

enum Source {
    Once(Option<Bytes>),
    Chan(mpsc::Receiver<io::Result<Bytes>>),
}

/// The response body: counts every piece it yields.
struct CountingBody {
    src: Source,
    meter: Meter,
}

impl CountingBody {
    fn new(src: Source, meter: Meter) -> CountingBody {
        let open = meter.open.fetch_add(1, Ordering::Relaxed) + 1;
        meter.peak.fetch_max(open, Ordering::Relaxed);
        CountingBody { src, meter }
    }
}

impl Drop for CountingBody {
    fn drop(&mut self) {
        self.meter.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl futures::Stream for CountingBody {
    type Item = io::Result<Bytes>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = match &mut this.src {
            Source::Once(b) => Poll::Ready(b.take().map(Ok)),
            Source::Chan(rx) => rx.poll_recv(cx),
        };
        if let Poll::Ready(Some(Ok(b))) = &item {
            this.meter.add(b.len() as u64);
        }
        item
    }
}

fn response(
    status: StatusCode,
    headers: Vec<(header::HeaderName, String)>,
    body: Option<CountingBody>,
) -> warp::reply::Response {
    use warp::Reply;
    let mut res = match body {
        Some(b) => warp::reply::stream(b).into_response(),
        None => warp::reply::Response::new(Bytes::new().into()),
    };
    *res.status_mut() = status;
    for (name, value) in headers {
        res.headers_mut()
            .insert(name, HeaderValue::from_str(&value).unwrap());
    }
    res
}

fn small(status: StatusCode, text: String, meter: Meter, head: bool) -> warp::reply::Response {
    let len = text.len();
    let body = (!head).then(|| CountingBody::new(Source::Once(Some(Bytes::from(text))), meter));
    response(
        status,
        vec![
            (header::CONTENT_TYPE, "text/plain".into()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
}

/// Parsed single byte range, inclusive end.
enum RangeReq {
    None,
    Satisfiable(u64, u64),
    Unsatisfiable,
}

fn parse_range(value: &str, size: u64) -> RangeReq {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeReq::None;
    };
    if spec.contains(',') {
        return RangeReq::None; // multi-range: answered 200 whole
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::None;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return RangeReq::None;
        };
        if n == 0 || size == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Satisfiable(size.saturating_sub(n), size - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeReq::None;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeReq::None,
        }
    };
    if start >= size {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Satisfiable(start, end.min(size - 1))
}

fn etag_list_matches(list: &str, etag: &str) -> bool {
    let weakless = |t: &str| t.trim().trim_start_matches("W/").to_string();
    list.split(',')
        .any(|t| t.trim() == "*" || weakless(t) == weakless(etag))
}

async fn handle(
    inner: Arc<Inner>,
    method: Method,
    raw_path: String,
    query: String,
    headers: HeaderMap,
) -> warp::reply::Response {
    let path = percent_encoding::percent_decode_str(raw_path.trim_start_matches('/'))
        .decode_utf8_lossy()
        .into_owned();
    let full = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let (key, file) = {
        let files = inner.files.lock().unwrap();
        match files.get(&full) {
            Some(f) => (full.clone(), Some(f.clone())),
            None => (path.clone(), files.get(&path).cloned()),
        }
    };

    let counters = inner
        .path_counters
        .lock()
        .unwrap()
        .entry(key.clone())
        .or_default()
        .clone();
    counters.requests.fetch_add(1, Ordering::Relaxed);
    inner.total.requests.fetch_add(1, Ordering::Relaxed);
    let range_hdr = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let log = Arc::new(LogEntry {
        method: method.to_string(),
        path: full.clone(),
        range: range_hdr.clone(),
        headers: headers.clone(),
        status: AtomicU64::new(0),
        body_bytes: AtomicU64::new(0),
        at: std::time::Instant::now(),
    });
    {
        let mut l = inner.log.lock().unwrap();
        if l.len() < inner.log_limit.load(Ordering::Relaxed) {
            l.push(log.clone());
        }
    }
    let meter = Meter {
        path: counters,
        total: inner.total.clone(),
        log: log.clone(),
        open: inner.open_bodies.clone(),
        peak: inner.peak_open.clone(),
    };
    let presigned = inner
        .faults
        .lock()
        .unwrap()
        .get(&key)
        .filter(|f| f.presigned)
        .map(|f| f.presigned_refusal.unwrap_or(403));
    if let Some(refusal) = presigned {
        if let Err(why) = inner.check_presigned(&key, &query) {
            let status = StatusCode::from_u16(refusal).expect("test origin: invalid refusal");
            let res = small(status, format!("{why}\n"), meter, false);
            log.status.store(u64::from(refusal), Ordering::Relaxed);
            return res;
        }
    }
    let res = answer(&inner, &key, file, &method, range_hdr, &headers, meter).await;
    log.status
        .store(res.status().as_u16() as u64, Ordering::Relaxed);
    res
}

async fn answer(
    inner: &Arc<Inner>,
    key: &str,
    file: Option<FileEntry>,
    method: &Method,
    range_hdr: Option<String>,
    headers: &HeaderMap,
    meter: Meter,
) -> warp::reply::Response {
    let faults = inner
        .faults
        .lock()
        .unwrap()
        .get(key)
        .cloned()
        .unwrap_or_default();
    if faults.hang {
        std::future::pending::<()>().await;
    }
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let head = *method == Method::HEAD;
    if faults
        .max_open
        .is_some_and(|n| inner.open_bodies.load(Ordering::Relaxed) >= n)
    {
        let mut res = small(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections\n".into(),
            meter,
            head,
        );
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return res;
    }
    if let Some(busy) = faults.busy.as_ref().filter(|b| b.fires()) {
        let mut res = small(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests\n".into(),
            meter,
            head,
        );
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(busy.retry_after_secs),
        );
        return res;
    }
    if *method != Method::GET && !head {
        return small(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
            meter,
            false,
        );
    }
    if let Some(loc) = &faults.redirect_to {
        let mut res = small(
            StatusCode::FOUND,
            format!("redirect to {loc}\n"),
            meter,
            head,
        );
        res.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(loc).unwrap());
        return res;
    }
    if let Some(code) = faults.status {
        let status = StatusCode::from_u16(code).expect("test origin: invalid fault status");
        return small(
            status,
            format!("test origin: fault status {code}\n"),
            meter,
            head,
        );
    }
    let Some(file) = file else {
        return small(StatusCode::NOT_FOUND, "not found\n".into(), meter, head);
    };

    let size = file.content.len();
    let mut hdrs: Vec<(header::HeaderName, String)> =
        vec![(header::CONTENT_TYPE, file.content_type.clone())];
    if let Some(enc) = &faults.content_encoding {
        hdrs.push((header::CONTENT_ENCODING, enc.clone()));
    }
    let last_modified = httpdate::fmt_http_date(file.last_modified);
    if !faults.no_validators {
        hdrs.push((header::ETAG, file.etag.clone()));
        hdrs.push((header::LAST_MODIFIED, last_modified.clone()));

        // Conditional GET/HEAD.
        let inm = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        let not_modified = match inm {
            Some(list) => etag_list_matches(list, &file.etag),
            None => headers
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .is_some_and(|since| file.last_modified <= since),
        };
        if not_modified {
            return response(StatusCode::NOT_MODIFIED, hdrs, None);
        }
    }

    // Which range, if any, is honoured.
    let mut range = match (&range_hdr, faults.ignore_range || faults.no_length) {
        (Some(r), false) => parse_range(r, size),
        _ => RangeReq::None,
    };
    if !matches!(range, RangeReq::None) {
        if let Some(ir) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
            let ir = ir.trim();
            let matches = if faults.no_validators {
                false
            } else if ir.starts_with('"') {
                ir == file.etag
            } else if ir.starts_with("W/") {
                false
            } else {
                httpdate::parse_http_date(ir).is_ok_and(|t| t == file.last_modified)
            };
            if !matches {
                range = RangeReq::None;
            }
        }
    }

    let (status, start, end) = match range {
        RangeReq::Unsatisfiable => {
            hdrs.push((header::CONTENT_RANGE, format!("bytes */{size}")));
            hdrs.push((header::ACCEPT_RANGES, "bytes".into()));
            hdrs.push((header::CONTENT_LENGTH, "0".into()));
            hdrs.retain(|(n, _)| n != header::CONTENT_TYPE);
            return response(StatusCode::RANGE_NOT_SATISFIABLE, hdrs, None);
        }
        RangeReq::Satisfiable(a, b) => {
            let total = match (faults.unknown_total, faults.claim_total) {
                (true, _) => "*".to_owned(),
                (false, Some(claimed)) => claimed.to_string(),
                (false, None) => size.to_string(),
            };
            hdrs.push((header::CONTENT_RANGE, format!("bytes {a}-{b}/{total}")));
            (StatusCode::PARTIAL_CONTENT, a, b + 1)
        }
        RangeReq::None => (StatusCode::OK, 0, size),
    };
    if !faults.no_length {
        hdrs.push((header::ACCEPT_RANGES, "bytes".into()));
        hdrs.push((header::CONTENT_LENGTH, (end - start).to_string()));
    }
    if head {
        return response(status, hdrs, None);
    }

    // Does this response get reset? Consume a one-shot reset now, so that
    // concurrent requests do not both fire it.
    let reset_at = match faults.reset_after_bytes {
        Some(n) if n < end - start => {
            if faults.reset_once {
                if let Some(f) = inner.faults.lock().unwrap().get_mut(key) {
                    f.reset_after_bytes = None;
                }
            }
            Some(n)
        }
        _ => None,
    };

    let cut = match (reset_at, faults.stall_after_bytes) {
        (Some(n), _) => Some(Cut::Reset(n)),
        (None, Some(n)) if n < end - start => Some(Cut::Stall(n)),
        _ => None,
    };
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(produce(
        tx,
        file.content,
        start,
        end,
        faults.rate_bytes_per_sec,
        faults.piece_bytes,
        cut,
    ));
    response(
        status,
        hdrs,
        Some(CountingBody::new(Source::Chan(rx), meter)),
    )
}

/// How a response body is cut short, after how many bytes.
#[derive(Clone, Copy)]
enum Cut {
    /// The connection is aborted.
    Reset(u64),
    /// Nothing more is sent; the connection stays open.
    Stall(u64),
}

/// Sends `content[start..end)` in pieces, paced to `rate`, cut short as
/// `cut` says. Stops when the receiver is dropped.
async fn produce(
    tx: mpsc::Sender<io::Result<Bytes>>,
    content: Content,
    start: u64,
    end: u64,
    rate: Option<u64>,
    piece: Option<u64>,
    cut: Option<Cut>,
) {
    let piece = piece.unwrap_or(if rate.is_some() {
        THROTTLED_PIECE
    } else {
        PIECE
    } as u64);
    let stop = match cut {
        Some(Cut::Reset(n) | Cut::Stall(n)) => start + n,
        None => end,
    };
    let t0 = tokio::time::Instant::now();
    let mut pos = start;
    let mut buf = Bytes::new(); // disk read-ahead, holds bytes at pos..
    let disk = match &content {
        Content::Disk { file, .. } => {
            let file = file.clone();
            match tokio::task::spawn_blocking(move || std::fs::File::open(file))
                .await
                .unwrap()
            {
                Ok(f) => Some(Arc::new(f)),
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        Content::Mem(_) => None,
    };
    while pos < stop {
        let n = piece.min(stop - pos);
        if let Some(rate) = rate {
            let due = t0 + Duration::from_secs_f64((pos - start) as f64 / rate.max(1) as f64);
            tokio::time::sleep_until(due).await;
        }
        let data = match &content {
            Content::Mem(b) => b.slice(pos as usize..(pos + n) as usize),
            Content::Disk { .. } => {
                if buf.is_empty() {
                    let f = disk.clone().unwrap();
                    let want = (DISK_READ as u64).max(n).min(stop - pos) as usize;
                    let at = pos;
                    let read = tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
                        use std::os::unix::fs::FileExt;
                        let mut b = BytesMut::zeroed(want);
                        let mut got = 0;
                        while got < want {
                            let r = f.read_at(&mut b[got..], at + got as u64)?;
                            if r == 0 {
                                return Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "file shrank",
                                ));
                            }
                            got += r;
                        }
                        Ok(b.freeze())
                    })
                    .await
                    .unwrap();
                    match read {
                        Ok(b) => buf = b,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                buf.split_to((n as usize).min(buf.len()))
            }
        };
        pos += data.len() as u64;
        if tx.send(Ok(data)).await.is_err() {
            return; // client went away
        }
    }
    if let Some(Cut::Stall(_)) = cut {
        tx.closed().await;
        return;
    }
    if let Some(Cut::Reset(_)) = cut {
        // Let hyper flush what was yielded, then abort the connection.
        tokio::time::sleep(RESET_FLUSH_DELAY).await;
        let _ = tx
            .send(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "test origin: injected reset",
            )))
            .await;
    }
}

/// Installs rustls' ring provider as the process default (reqwest here is
/// built without one); harmless if one is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client for tests: no proxy, no automatic redirects.
pub fn test_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

#[allow(unused)]
fn _assert_body_is_send_sync() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<CountingBody>();
}
