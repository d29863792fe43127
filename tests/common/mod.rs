#![allow(dead_code)]

pub mod origin;
pub mod tmpfs;

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

/// Deterministic pseudo-random content: every offset has its own byte, so
/// a byte served from the wrong offset or version is caught.
pub fn data(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// A spool server running in this process on a free port.
pub struct Spool {
    /// The media listener.
    pub addr: std::net::SocketAddr,
    /// The control plane's listener (status page, admin API, metrics,
    /// signing); None when the test turned it off.
    pub admin_addr: Option<std::net::SocketAddr>,
    pub cache_dir: PathBuf,
    /// The server's handles, for fault injection and inspection.
    pub server: spool::Server,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Settings small enough to exercise many chunks with small files.
pub fn test_config(cache_dir: &Path, origin: &origin::Origin) -> spool::Config {
    let mut cfg = spool::Config::new(cache_dir);
    cfg.chunk_size = 64 * 1024;
    cfg.read_ahead = spool::config::ReadAhead::Bytes(256 * 1024);
    cfg.read_ahead_grace = Duration::from_millis(300);
    cfg.upstream_timeout = Duration::from_secs(5);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.allow_upstream =
        spool::upstream::allow::AllowList::parse(&origin.addr().ip().to_string()).unwrap();
    // The host's own free space must not decide how tests behave; the disk
    // tests set thresholds for their own small filesystems.
    cfg.free_space.min_free_bytes = 0;
    cfg.free_space.min_free_percent = 0.0;
    cfg.cleanup_headroom = 1024 * 1024;
    cfg.disk_check_interval = Duration::from_millis(100);
    cfg.breaker_cool_down = Duration::from_millis(300);
    // A free port: tests run side by side.
    cfg.admin_listen = spool::config::OptionalAddr(Some("127.0.0.1:0".parse().unwrap()));
    cfg
}

impl Spool {
    /// Starts spool with a fresh cache directory and the test settings.
    pub async fn start(origin: &origin::Origin) -> Spool {
        Spool::start_with(origin, |_| {}).await
    }

    pub async fn start_with(
        origin: &origin::Origin,
        tweak: impl FnOnce(&mut spool::Config),
    ) -> Spool {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = test_config(tmp.path(), origin);
        tweak(&mut cfg);
        let mut s = Spool::start_cfg(cfg).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts spool on an existing configuration (e.g. a cache directory
    /// another instance used).
    /// The control plane listens on a free loopback port unless the
    /// configuration turns it off (`admin_listen` empty); a non-loopback
    /// `admin_listen` address is bound on its own free port.
    pub async fn start_cfg(cfg: spool::Config) -> Spool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = match cfg.admin_listen.0 {
            Some(a) => {
                let mut a = a;
                a.set_port(0);
                Some(tokio::net::TcpListener::bind(a).await.unwrap())
            }
            None => None,
        };
        let admin_addr = admin.as_ref().map(|l| {
            let a = l.local_addr().unwrap();
            // An unspecified address is reached on loopback.
            std::net::SocketAddr::new(spool::config::local_address(a).ip(), a.port())
        });
        let cache_dir = cfg.cache_dir.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = spool::Server::new(cfg).await.unwrap();
        let listeners = spool::Listeners {
            media: listener,
            admin,
        };
        let task = tokio::spawn(server.clone().serve_on(listeners, async {
            let _ = stopped.await;
        }));
        // Up once the listener answers.
        let c = client();
        wait_for("spool to answer /health/live", || async {
            c.get(format!("http://{addr}/health/live"))
                .send()
                .await
                .is_ok()
        })
        .await;
        drop(c);
        let spool = Spool {
            addr,
            admin_addr,
            cache_dir,
            server,
            stop: Some(stop),
            task: Some(task),
            _tmp: None,
        };
        // The probe's keep-alive connection is gone before a test begins:
        // tests that fill the connection limits count on every place.
        // Only the metrics request's own connection is left.
        if spool.admin_addr.is_some() {
            wait_for_metric_at_most(&spool, "spool_open_connections", 1.0).await;
        }
        spool
    }

    /// The proxied URL of an origin URL.
    pub fn url(&self, origin_url: &str) -> String {
        let enc: String = url::form_urlencoded::byte_serialize(origin_url.as_bytes()).collect();
        format!("http://{}/stream?url={enc}", self.addr)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The control plane's base URL.
    pub fn admin(&self) -> String {
        format!(
            "http://{}",
            self.admin_addr.expect("this spool's control plane is off")
        )
    }

    /// Stops the server, keeping the cache directory; returns it (and the
    /// temp dir guard) for a restart.
    pub async fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        (self.cache_dir.clone(), self._tmp.take())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn client() -> reqwest::Client {
    origin::test_client()
}

/// GET with an optional Range header; the whole response.
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Bytes) {
    let mut req = client.get(url);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
        .await
        .expect("response in time")
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(60), resp.bytes())
        .await
        .expect("body in time")
        .expect("body");
    (status, headers, body)
}

/// The value of a counter (or gauge) in spool's /metrics, 0 when absent.
pub async fn metric(spool: &Spool, name_and_labels: &str) -> f64 {
    let (_, _, body) = get(&client(), &format!("{}/metrics", spool.admin()), None).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name_and_labels).then(|| v.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// Every file under `dir` whose name ends with `.tmp`.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".tmp") {
                found.push(p);
            }
        }
    }
    found
}

pub fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

/// How long [`wait_for`] waits at most. Only there so that a hang fails the
/// test instead of blocking it: generous, and never what a test asserts.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// Polls `cond` every 20 ms until it holds; panics naming `what` when it
/// does not within [`WAIT_LIMIT`]. Tests wait for the event they need with
/// this instead of sleeping for a time that is usually long enough.
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("gave up after {WAIT_LIMIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until spool's counter (or gauge) `name_and_labels` is at least
/// `at_least`.
pub async fn wait_for_metric(spool: &Spool, name_and_labels: &str, at_least: f64) {
    wait_for(&format!("{name_and_labels} >= {at_least}"), || async {
        metric(spool, name_and_labels).await >= at_least
    })
    .await;
}

/// Waits until spool's gauge `name_and_labels` is at most `at_most`.
pub async fn wait_for_metric_at_most(spool: &Spool, name_and_labels: &str, at_most: f64) {
    wait_for(&format!("{name_and_labels} <= {at_most}"), || async {
        metric(spool, name_and_labels).await <= at_most
    })
    .await;
}

/// Waits until no response body streams and no download run is alive:
/// with its players gone, nothing is left that could reach the origin.
pub async fn wait_idle(spool: &Spool) {
    wait_for("spool to stream and download nothing", || async {
        metric(spool, "spool_active_streams").await == 0.0
            && metric(spool, "spool_active_downloads").await == 0.0
    })
    .await;
}

/// The chunk directory of the one media version cached in `cache_dir`.
pub fn only_media_dir(cache_dir: &Path) -> PathBuf {
    std::fs::read_dir(cache_dir.join("chunks"))
        .unwrap()
        .next()
        .expect("a media's chunk directory")
        .unwrap()
        .path()
}

/// The chunk indexes the index in `cache_dir` holds for the media at
/// `origin_url`, in order (none when there is no index or no such media).
pub fn cached_chunks(cache_dir: &Path, origin_url: &str) -> Vec<u64> {
    let query = || -> rusqlite::Result<Vec<u64>> {
        let conn = rusqlite::Connection::open_with_flags(
            cache_dir.join("index.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mut stmt = conn.prepare(
            "SELECT c.chunk_index FROM chunks c JOIN media m ON m.media_id = c.media_id \
             WHERE m.url = ?1 ORDER BY c.chunk_index",
        )?;
        let rows = stmt.query_map([origin_url], |r| r.get::<_, i64>(0).map(|v| v as u64))?;
        rows.collect()
    };
    query().unwrap_or_default()
}

/// Whether every chunk of the media at `origin_url` has its row in the
/// index in `cache_dir` (false when the index does not know the media).
pub fn cached_whole(cache_dir: &Path, origin_url: &str) -> bool {
    let query = || -> rusqlite::Result<bool> {
        let conn = rusqlite::Connection::open_with_flags(
            cache_dir.join("index.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.query_row(
            "SELECT cached_chunks = total_chunks FROM media_summary WHERE url = ?1",
            [origin_url],
            |r| r.get(0),
        )
    };
    query().unwrap_or(false)
}

/// Waits until every chunk of the media at `origin_url` is written to the
/// cache in `cache_dir` and recorded in its index.
pub async fn wait_until_cached(cache_dir: &Path, origin_url: &str) {
    wait_for(&format!("{origin_url} to be cached whole"), || async {
        cached_whole(cache_dir, origin_url)
    })
    .await;
}

/// The log of a spool process a test started: the child's stderr goes to a
/// temp file, which is printed to the test's output when the test fails
/// (dropped while panicking). Keep it alive as long as the process.
pub struct ChildLog {
    file: tempfile::NamedTempFile,
}

impl ChildLog {
    pub fn new() -> ChildLog {
        ChildLog {
            file: tempfile::NamedTempFile::new().expect("a temp file for the spool log"),
        }
    }

    /// For `Command::stderr`: the child writes to the log file.
    pub fn stdio(&self) -> Stdio {
        Stdio::from(self.file.reopen().expect("reopen the spool log"))
    }

    /// What the child logged so far.
    pub fn text(&self) -> String {
        let mut bytes = Vec::new();
        let _ = self
            .file
            .reopen()
            .and_then(|mut f| f.read_to_end(&mut bytes));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until the log has a line containing `needle`; panics if
    /// `child` exits first.
    pub async fn wait_for_line(&self, child: &mut Child, needle: &str) -> String {
        let mut found = None;
        wait_for(&format!("spool to log {needle:?}"), || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("spool exited ({status}) before logging {needle:?}");
            }
            found = self
                .text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned);
            std::future::ready(found.is_some())
        })
        .await;
        found.expect("found")
    }

    /// The address a child started with `--listen 127.0.0.1:0` listens on,
    /// read from its `spool serving listen=ADDR` line (logged once bound;
    /// needs `SPOOL_LOG=info`; a pipe gets no colour codes).
    pub async fn listen_addr(&self, child: &mut Child) -> String {
        let line = self.wait_for_line(child, "spool serving").await;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .unwrap_or_else(|| panic!("no listen= in {line:?}"))
            .to_owned()
    }
}

impl ChildLog {
    /// The address of the control plane of a child started with
    /// `--admin-listen 127.0.0.1:0`, from its `admin=ADDR` log field.
    pub async fn admin_addr(&self, child: &mut Child) -> String {
        let line = self.wait_for_line(child, "spool serving").await;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("admin="))
            .unwrap_or_else(|| panic!("no admin= in {line:?}"))
            .to_owned()
    }
}

impl Default for ChildLog {
    fn default() -> ChildLog {
        ChildLog::new()
    }
}

impl Drop for ChildLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- spool log ({}) -----\n{}----- end of spool log -----",
                self.file.path().display(),
                self.text()
            );
        }
    }
}

/// A child process killed when dropped, also when the test fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
