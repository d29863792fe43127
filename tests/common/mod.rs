#![allow(dead_code)]

pub mod origin;

use std::path::{Path, PathBuf};
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
    pub addr: std::net::SocketAddr,
    pub cache_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Settings small enough to exercise many chunks with small files.
pub fn test_config(cache_dir: &Path, origin: &origin::Origin) -> spool::Config {
    let mut cfg = spool::Config::new(cache_dir);
    cfg.chunk_size = 64 * 1024;
    cfg.read_ahead = 256 * 1024;
    cfg.read_ahead_grace = Duration::from_millis(300);
    cfg.upstream_timeout = Duration::from_secs(5);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.allow_upstream = spool::allow::AllowList::parse(&origin.addr().ip().to_string()).unwrap();
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
    pub async fn start_cfg(cfg: spool::Config) -> Spool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cache_dir = cfg.cache_dir.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(spool::run(cfg, listener, async {
            let _ = stopped.await;
        }));
        Spool {
            addr,
            cache_dir,
            stop: Some(stop),
            task: Some(task),
            _tmp: None,
        }
    }

    /// The proxied URL of an origin URL.
    pub fn url(&self, origin_url: &str) -> String {
        let enc: String = url::form_urlencoded::byte_serialize(origin_url.as_bytes()).collect();
        format!("http://{}/stream?url={enc}", self.addr)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
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

pub fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}
