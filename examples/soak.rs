//! Chaos soak: many simulated players against two spool processes in front
//! of the in-tree origin, while everything around them fails. Run by
//! `scripts/soak [SECONDS]` (root: it mounts two small tmpfs).
//!
//!     soak --seconds 120 --spool target/release/spool --work target/soak
//!
//! - Players: sequential readers (some paced like a high-bitrate film, some
//!   as fast as they can), seekers (random closed and open ranges), probers
//!   that read a little and hang up, slow readers (and readers that stop
//!   taking bytes for longer than spool's `--write-timeout`), and HLS players
//!   (master, variant, segments in order, through the path form). Each
//!   request goes to one of the two spools, by URL form `/p/` or `/stream`.
//! - The origin injects faults for a few seconds at a time on random files:
//!   resets and short bodies, stalls mid-body, requests never answered, 5xx
//!   answers, a slow and throttled source; now and then a file gets new
//!   content (a new ETag).
//! - Spool "A" lives through the whole run; spool "B" is killed with
//!   SIGKILL at random moments and restarted on its cache, whose index and
//!   files are checked (`spool verify`) after every kill. Both caches live on
//!   their own small tmpfs, which is filled for a few seconds at random
//!   moments (a ballast file takes whatever spool's cleanup frees, so chunk
//!   writes meet ENOSPC) and then emptied, under a `--max-cache-size`
//!   well below the media's total, so eviction runs all the time.
//! - Every byte every player receives is compared with the origin's file
//!   at that offset: a whole answer must belong to one version of it.
//!
//! A request is "hung" when spool gives it neither its head nor a byte for
//! 30 s (spool's own waits are at most a few seconds here). After a warm-up,
//! and again at the end, the players pause and spool A's RSS and open fds
//! are taken at rest, so the two figures compare like with like.
//!
//! Prints a report and exits 1 when any of these holds: a wrong byte, a
//! hung request, an answer spool should never give (a status other than
//! 200/206/502/503/504, a Content-Range that does not fit the request),
//! a disagreement between index and files after a kill, spool A dying, a
//! shutdown slower than `--shutdown-timeout` plus 2 s, no bytes served, or
//! (in runs of 5 minutes or more) spool A's fds or RSS at the end more than
//! 10% above their level after warm-up.

#[allow(dead_code)]
#[path = "../tests/common/origin.rs"]
mod origin;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use origin::{Faults, Origin};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// No head and no byte for this long: the request is hung.
const HUNG_AFTER: Duration = Duration::from_secs(30);
/// Each spool's tmpfs.
const TMPFS_MIB: u64 = 64;
const WRITE_TIMEOUT_SECS: u64 = 4;
const SHUTDOWN_TIMEOUT_SECS: u64 = 2;
/// How long spool is left idle before a look at rest: past its idle
/// origin connections' 30 s.
const AT_REST: Duration = Duration::from_secs(32);
/// Growth of RSS and fds is judged only in runs this long (seconds).
const JUDGE_GROWTH_AFTER: u64 = 300;
/// Faults live on at most this many paths at once.
const MAX_FAULTS: usize = 3;

#[derive(Parser)]
#[command(about = "Chaos soak of spool: players, faults, kill -9, a full disk")]
struct Args {
    /// How long the players play (warm-up included).
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// The spool binary to run.
    #[arg(long, default_value = "target/release/spool")]
    spool: PathBuf,
    /// Working directory (tmpfs mount points, logs, result.json).
    #[arg(long, default_value = "target/soak")]
    work: PathBuf,
    /// Random seed (default: from the clock); printed in the report.
    #[arg(long)]
    seed: Option<u64>,
}

// ---------------------------------------------------------------- media

/// What the origin serves, with every version each file ever had: an
/// answer must match one of them from its first byte to its last.
struct Library {
    versions: Mutex<HashMap<String, Vec<Bytes>>>,
    /// Progressive files (path, content type).
    files: Vec<(String, &'static str)>,
    segments: Vec<String>,
    /// The origin's variant playlist, as served.
    variant: String,
}

impl Library {
    fn build(origin: &Origin, seed: u64) -> Library {
        let mut rng = StdRng::seed_from_u64(seed);
        let sizes: [(&str, &str, usize); 6] = [
            ("films/a.mp4", "video/mp4", 3 << 20),
            ("films/b.mkv", "video/x-matroska", 7 << 20),
            ("films/c.webm", "video/webm", 13 << 20),
            ("films/d.mp4", "video/mp4", 24 << 20),
            ("music/e.mp3", "audio/mpeg", (1 << 20) + 12_345),
            ("music/f.flac", "audio/flac", 5 << 20),
        ];
        let mut versions = HashMap::new();
        let mut files = Vec::new();
        for (path, ctype, len) in sizes {
            let body = random_bytes(&mut rng, len);
            origin.add_file(path, body.clone(), ctype);
            versions.insert(path.to_string(), vec![body]);
            files.push((path.to_string(), ctype));
        }
        let mut segments = Vec::new();
        let mut variant = String::from(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n",
        );
        for i in 0..24 {
            let path = format!("hls/s{i:02}.ts");
            let len = rng.random_range(200_000..700_000);
            let body = random_bytes(&mut rng, len);
            origin.add_file(&path, body.clone(), "video/mp2t");
            versions.insert(path.clone(), vec![body]);
            variant.push_str(&format!("#EXTINF:4.000,\ns{i:02}.ts\n"));
            segments.push(path);
        }
        variant.push_str("#EXT-X-ENDLIST\n");
        origin.add_file(
            "hls/v.m3u8",
            Bytes::from(variant.clone()),
            "application/vnd.apple.mpegurl",
        );
        origin.add_file(
            "hls/master.m3u8",
            Bytes::from_static(
                b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1200000,RESOLUTION=1280x720\nv.m3u8\n",
            ),
            "application/vnd.apple.mpegurl",
        );
        Library {
            versions: Mutex::new(versions),
            files,
            segments,
            variant,
        }
    }

    fn versions(&self, path: &str) -> Vec<Bytes> {
        self.versions.lock().unwrap()[path].clone()
    }

    fn len(&self, path: &str) -> u64 {
        self.versions.lock().unwrap()[path][0].len() as u64
    }

    /// New content for `path` (same length, new ETag): known here before
    /// the origin serves it.
    fn change(&self, origin: &Origin, path: &str, ctype: &str, rng: &mut StdRng) {
        let body = random_bytes(rng, self.len(path) as usize);
        self.versions
            .lock()
            .unwrap()
            .get_mut(path)
            .unwrap()
            .push(body.clone());
        origin.add_file(path, body, ctype);
    }
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    Bytes::from(v)
}

// ---------------------------------------------------------------- spool

/// One spool process (restarted on the same cache after a kill).
struct Instance {
    name: &'static str,
    bin: PathBuf,
    mount: PathBuf,
    log: PathBuf,
    /// The media listener of the current (or last) process.
    addr: RwLock<Option<String>>,
    admin: RwLock<Option<String>>,
    child: Mutex<Option<Child>>,
}

impl Instance {
    fn cache_dir(&self) -> PathBuf {
        self.mount.join("cache")
    }

    async fn start(&self) -> anyhow::Result<()> {
        let from = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        // Dies with the soak, also when the soak is killed.
        // SAFETY: the closure only makes one async-signal-safe system call.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .args(["--allow-upstream", "127.0.0.1"])
            .args(["--chunk-size", "256KiB", "--read-ahead", "2MiB"])
            .args(["--max-cache-size", "24MiB", "--memory-cache", "8MiB"])
            .args(["--min-free-bytes", "2MiB", "--min-free-percent", "3"])
            .args([
                "--cleanup-headroom",
                "4MiB",
                "--disk-check-interval",
                "500ms",
            ])
            .args(["--connect-timeout", "2s", "--upstream-timeout", "3s"])
            .args(["--header-timeout", "5s"])
            .args(["--write-timeout", &format!("{WRITE_TIMEOUT_SECS}s")])
            .args(["--shutdown-timeout", &format!("{SHUTDOWN_TIMEOUT_SECS}s")])
            .args(["--revalidate-after", "5s", "--breaker-cool-down", "2s"])
            .args(["--scrub-interval", "20s", "--forget-media-after", "30s"])
            .env("SPOOL_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()?;
        *self.child.lock().unwrap() = Some(child);
        let t0 = Instant::now();
        loop {
            if let Some(line) = serving_line(&self.log, from) {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(name))
                        .map(str::to_owned)
                };
                *self.addr.write().unwrap() = field("listen=");
                *self.admin.write().unwrap() = field("admin=");
                return Ok(());
            }
            if let Some(status) = self.child.lock().unwrap().as_mut().unwrap().try_wait()? {
                anyhow::bail!("spool {} exited ({status}) while starting", self.name);
            }
            if t0.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("spool {} did not start within 60 s", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    fn base(&self) -> Option<String> {
        self.addr
            .read()
            .unwrap()
            .as_ref()
            .map(|a| format!("http://{a}"))
    }

    /// Has the process ended on its own?
    fn died(&self) -> Option<std::process::ExitStatus> {
        self.child
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn kill9(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then how long the process took to exit (None: it was
    /// still running 10 s after the shutdown timeout, and was killed).
    async fn terminate(&self) -> Option<Duration> {
        let mut child = self.child.lock().unwrap().take()?;
        let pid = rustix::process::Pid::from_raw(child.id() as i32)?;
        let t0 = Instant::now();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        while t0.elapsed() < Duration::from_secs(SHUTDOWN_TIMEOUT_SECS + 10) {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn verify(&self) -> (bool, String) {
        match Command::new(&self.bin)
            .arg("verify")
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .output()
        {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                (text.contains("missing 0, wrong length 0, corrupt 0"), text)
            }
            Err(e) => (false, format!("cannot run spool verify: {e}")),
        }
    }
}

/// The `spool serving` line logged after byte `from` of the log.
fn serving_line(log: &Path, from: u64) -> Option<String> {
    let mut f = File::open(log).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| l.contains("spool serving"))
        .map(str::to_owned)
}

/// RSS in KiB, open fds and threads of a process.
fn proc_sample(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")?, fds, field("Threads:")?))
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: PathBuf) -> anyhow::Result<Tmpfs> {
        // A mount left by a soak that was killed.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&path)
            .stderr(Stdio::null())
            .status();
        std::fs::create_dir_all(&path)?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_MIB}m,mode=0755")])
            .arg("tmpfs")
            .arg(&path)
            .status()?
            .success();
        anyhow::ensure!(ok, "mount tmpfs at {} (run as root)", path.display());
        Ok(Tmpfs(path))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Grows a ballast file on the filesystem of `mount` until about `leave`
/// bytes are free (spool writes at the same time, so it may end fuller).
/// Called again and again while a disk stays full: whatever spool's
/// cleanup frees, the ballast takes.
fn top_up(mount: &Path, leave: u64) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(mount.join("ballast"))?;
    for _ in 0..3 {
        let free = spool::disk::space(mount)?.free_bytes;
        if free <= leave {
            return Ok(());
        }
        let len = file.metadata()?.len();
        match rustix::fs::fallocate(
            &file,
            rustix::fs::FallocateFlags::empty(),
            len,
            free - leave,
        ) {
            Ok(()) => return Ok(()),
            // Somebody wrote meanwhile: measure again.
            Err(rustix::io::Errno::NOSPC) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- counters

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    bytes: AtomicU64,
    complete: AtomicU64,
    /// The player hung up on purpose (a probe, a seek away).
    dropped: AtomicU64,
    /// 502/503/504 from spool.
    error_answers: AtomicU64,
    /// The connection broke before the head or mid-body.
    cut: AtomicU64,
    /// Nobody listening (spool B between a kill and its restart).
    refused: AtomicU64,
    wrong_bytes: AtomicU64,
    wrong_answers: AtomicU64,
    hung: AtomicU64,
    unexpected: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// The first problems, for the report.
    problems: Mutex<Vec<String>>,
    /// Requests waiting on spool right now.
    active: AtomicU64,
}

impl Tally {
    fn problem(&self, what: String) {
        let mut p = self.problems.lock().unwrap();
        if p.len() < 20 {
            p.push(what);
        }
    }
}

#[derive(Default)]
struct Chaos {
    faults: AtomicU64,
    new_versions: AtomicU64,
    disk_fills: AtomicU64,
    kills: AtomicU64,
    index_problems: AtomicU64,
}

struct Ctx {
    origin: Origin,
    lib: Library,
    spools: [Instance; 2],
    tally: Tally,
    chaos: Chaos,
    /// Players start no new request while set (a measurement at rest).
    quiet: AtomicBool,
    /// Cleared at the end of the run.
    running: AtomicBool,
    enc_origin: String,
}

impl Ctx {
    /// Waits while quiet; false once the run is over.
    async fn go(&self) -> bool {
        while self.quiet.load(Ordering::Relaxed) && self.running.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.running.load(Ordering::Relaxed)
    }

    async fn nap(&self, ms: std::ops::Range<u64>, rng: &mut StdRng) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(ms))).await;
    }

    /// A spool URL for the origin's `path`: path form or `/stream?url=`.
    fn url(&self, base: &str, path: &str, rng: &mut StdRng) -> String {
        if rng.random_bool(0.7) {
            format!("{base}/p/{}/{path}", self.enc_origin)
        } else {
            let full = self.origin.url(path);
            let q: String = url::form_urlencoded::byte_serialize(full.as_bytes()).collect();
            format!("{base}/stream?url={q}")
        }
    }

    /// One of the spools (B also while it is down: players then meet a
    /// refused connection, as they would).
    fn pick(&self, rng: &mut StdRng) -> String {
        let i = rng.random_range(0..2);
        self.spools[i]
            .base()
            .or_else(|| self.spools[0].base())
            .expect("spool A has an address")
    }
}

// ---------------------------------------------------------------- requests

#[derive(Clone, Copy)]
enum Reading {
    All,
    /// Hang up after this many bytes.
    Upto(u64),
    /// Take bytes at this rate, and hang up after `upto`.
    Paced {
        rate: u64,
        upto: u64,
    },
    /// Take `after` bytes, then nothing for `pause`, then the rest.
    Pause {
        after: u64,
        pause: Duration,
    },
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Complete,
    Dropped,
    ErrorAnswer,
    Cut,
    Refused,
    Bad,
}

struct Active<'a>(&'a Tally);

impl<'a> Active<'a> {
    fn new(t: &'a Tally) -> Active<'a> {
        t.requests.fetch_add(1, Ordering::Relaxed);
        t.active.fetch_add(1, Ordering::Relaxed);
        Active(t)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends a GET and waits for its head: None when it was hung, refused or
/// cut (counted).
async fn head(
    ctx: &Ctx,
    client: &reqwest::Client,
    url: &str,
    range: Option<String>,
) -> Result<reqwest::Response, Outcome> {
    let t = &ctx.tally;
    let mut req = client.get(url);
    if let Some(r) = &range {
        req = req.header(reqwest::header::RANGE, r);
    }
    let res = match tokio::time::timeout(HUNG_AFTER, req.send()).await {
        Err(_) => {
            t.hung.fetch_add(1, Ordering::Relaxed);
            t.problem(format!("hung: no head in 30 s: {url} {range:?}"));
            return Err(Outcome::Bad);
        }
        Ok(Err(e)) if e.is_connect() => {
            t.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Outcome::Refused);
        }
        Ok(Err(_)) => {
            t.cut.fetch_add(1, Ordering::Relaxed);
            return Err(Outcome::Cut);
        }
        Ok(Ok(res)) => res,
    };
    let status = res.status().as_u16();
    *t.statuses.lock().unwrap().entry(status).or_default() += 1;
    match status {
        200 | 206 => Ok(res),
        502..=504 => {
            t.error_answers.fetch_add(1, Ordering::Relaxed);
            Err(Outcome::ErrorAnswer)
        }
        _ => {
            t.unexpected.fetch_add(1, Ordering::Relaxed);
            let body = tokio::time::timeout(Duration::from_secs(5), res.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            t.problem(format!(
                "status {status} for {url} {range:?}: {}",
                body.trim()
            ));
            Err(Outcome::Bad)
        }
    }
}

/// GETs the origin's `path` through spool at `url` and checks every byte.
async fn fetch(
    ctx: &Ctx,
    client: &reqwest::Client,
    url: &str,
    path: &str,
    range: Option<(u64, Option<u64>)>,
    reading: Reading,
) -> Outcome {
    let t = &ctx.tally;
    let _active = Active::new(t);
    let range_hdr = range.map(|(a, b)| match b {
        Some(b) => format!("bytes={a}-{b}"),
        None => format!("bytes={a}-"),
    });
    let mut res = match head(ctx, client, url, range_hdr.clone()).await {
        Ok(r) => r,
        Err(o) => return o,
    };
    let bad = |what: String| {
        t.unexpected.fetch_add(1, Ordering::Relaxed);
        t.problem(format!("{what}: {url} {range_hdr:?}"));
        Outcome::Bad
    };
    let lens: Vec<u64> = ctx
        .lib
        .versions(path)
        .iter()
        .map(|v| v.len() as u64)
        .collect();
    // Which bytes the head promises: [start, end) of a file of `total`.
    let (start, end, total) = if res.status().as_u16() == 206 {
        let cr = res
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let parsed = cr.strip_prefix("bytes ").and_then(|s| {
            let (r, total) = s.split_once('/')?;
            let (a, b) = r.split_once('-')?;
            Some((
                a.parse::<u64>().ok()?,
                b.parse::<u64>().ok()?,
                total.parse::<u64>().ok()?,
            ))
        });
        let Some((a, b, total)) = parsed else {
            return bad(format!("206 with Content-Range {cr:?}"));
        };
        let Some((want_a, want_b)) = range else {
            return bad("206 to a request without Range".into());
        };
        let want_b = want_b.unwrap_or(u64::MAX).min(total.saturating_sub(1));
        if a != want_a || b != want_b || !lens.contains(&total) {
            return bad(format!("Content-Range {cr:?}"));
        }
        (a, b + 1, total)
    } else {
        if range.is_some() {
            return bad("200 to a satisfiable Range".into());
        }
        let Some(total) = res.content_length() else {
            return bad("200 without Content-Length".into());
        };
        if !lens.contains(&total) {
            return bad(format!("200 of {total} bytes"));
        }
        (0, total, total)
    };

    let mut candidates: Option<Vec<Bytes>> = None;
    let mut pos = start;
    let mut paused = false;
    let t0 = Instant::now();
    loop {
        let taken = pos - start;
        let limit = match reading {
            Reading::Upto(n) | Reading::Paced { upto: n, .. } => n,
            _ => u64::MAX,
        };
        if taken >= limit && pos < end {
            t.dropped.fetch_add(1, Ordering::Relaxed);
            return Outcome::Dropped;
        }
        match reading {
            Reading::Paced { rate, .. } => {
                let due = Duration::from_secs_f64(taken as f64 / rate as f64);
                tokio::time::sleep_until((t0 + due).into()).await;
            }
            Reading::Pause { after, pause } if taken >= after && !paused => {
                paused = true;
                tokio::time::sleep(pause).await;
            }
            _ => {}
        }
        let piece = match tokio::time::timeout(HUNG_AFTER, res.chunk()).await {
            Err(_) => {
                t.hung.fetch_add(1, Ordering::Relaxed);
                t.problem(format!(
                    "hung: no byte in 30 s at {pos} of {url} {range_hdr:?}"
                ));
                return Outcome::Bad;
            }
            Ok(Err(_)) => {
                t.cut.fetch_add(1, Ordering::Relaxed);
                return Outcome::Cut;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(piece))) => piece,
        };
        let n = piece.len() as u64;
        if pos + n > end {
            return bad(format!(
                "body longer than its head: {} bytes past",
                pos + n - end
            ));
        }
        let cands = candidates.get_or_insert_with(|| {
            ctx.lib
                .versions(path)
                .into_iter()
                .filter(|v| v.len() as u64 == total)
                .collect()
        });
        let range_of = pos as usize..(pos + n) as usize;
        let before = cands.first().cloned();
        cands.retain(|v| v[range_of.clone()] == piece[..]);
        if cands.is_empty() {
            let wrong = before.map_or(n, |v| {
                v[range_of.clone()]
                    .iter()
                    .zip(piece.iter())
                    .filter(|(a, b)| a != b)
                    .count() as u64
            });
            t.wrong_bytes.fetch_add(wrong, Ordering::Relaxed);
            t.wrong_answers.fetch_add(1, Ordering::Relaxed);
            t.problem(format!(
                "WRONG BYTES: {wrong} of {n} at offset {pos} of {path} ({url} {range_hdr:?})"
            ));
            return Outcome::Bad;
        }
        t.bytes.fetch_add(n, Ordering::Relaxed);
        pos += n;
    }
    if pos != end {
        return bad(format!(
            "body ended at {pos} of {start}..{end} without an error"
        ));
    }
    t.complete.fetch_add(1, Ordering::Relaxed);
    Outcome::Complete
}

/// GETs a playlist through spool: its text, or None (counted).
async fn fetch_text(ctx: &Ctx, client: &reqwest::Client, url: &str) -> Option<String> {
    let t = &ctx.tally;
    let _active = Active::new(t);
    let res = head(ctx, client, url, None).await.ok()?;
    match tokio::time::timeout(HUNG_AFTER, res.text()).await {
        Err(_) => {
            t.hung.fetch_add(1, Ordering::Relaxed);
            t.problem(format!("hung: playlist body for 30 s: {url}"));
            None
        }
        Ok(Err(_)) => {
            t.cut.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok(Ok(text)) => {
            t.complete.fetch_add(1, Ordering::Relaxed);
            t.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
            Some(text)
        }
    }
}

// ---------------------------------------------------------------- players

fn client() -> reqwest::Client {
    origin::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .expect("reqwest client")
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sequential,
    Seeker,
    Prober,
    Slow,
    Hls,
}

async fn player(ctx: Arc<Ctx>, kind: Kind, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = client();
    while ctx.go().await {
        let base = ctx.pick(&mut rng);
        let outcome = match kind {
            Kind::Sequential => sequential(&ctx, &c, &base, &mut rng).await,
            Kind::Seeker => seeker(&ctx, &c, &base, &mut rng).await,
            Kind::Prober => prober(&ctx, &c, &base, &mut rng).await,
            Kind::Slow => slow(&ctx, &c, &base, &mut rng).await,
            Kind::Hls => hls(&ctx, &c, &base, &mut rng).await,
        };
        if outcome != Outcome::Complete && outcome != Outcome::Dropped {
            ctx.nap(100..500, &mut rng).await; // as a player retrying would
        }
    }
}

fn any_file<'a>(ctx: &'a Ctx, rng: &mut StdRng) -> &'a str {
    &ctx.lib.files[rng.random_range(0..ctx.lib.files.len())].0
}

/// Plays a whole file: a high-bitrate film's pace, or as fast as it goes.
async fn sequential(ctx: &Ctx, c: &reqwest::Client, base: &str, rng: &mut StdRng) -> Outcome {
    let path = any_file(ctx, rng);
    let url = ctx.url(base, path, rng);
    let reading = if rng.random_bool(0.3) {
        Reading::All
    } else {
        Reading::Paced {
            rate: rng.random_range(2_000_000..16_000_000),
            upto: u64::MAX,
        }
    };
    let range = rng.random_bool(0.5).then_some((0, None));
    fetch(ctx, c, &url, path, range, reading).await
}

/// Seeks around one file: closed ranges, and open ones it leaves early.
async fn seeker(ctx: &Ctx, c: &reqwest::Client, base: &str, rng: &mut StdRng) -> Outcome {
    let path = any_file(ctx, rng);
    let url = ctx.url(base, path, rng);
    let len = ctx.lib.len(path);
    let mut last = Outcome::Complete;
    for _ in 0..rng.random_range(3..10) {
        if !ctx.go().await {
            break;
        }
        let a = rng.random_range(0..len);
        last = if rng.random_bool(0.6) {
            let b = (a + rng.random_range(1..2_000_000)).min(len - 1);
            fetch(ctx, c, &url, path, Some((a, Some(b))), Reading::All).await
        } else {
            let upto = rng.random_range(1..1_500_000);
            fetch(ctx, c, &url, path, Some((a, None)), Reading::Upto(upto)).await
        };
        if last == Outcome::Refused {
            break;
        }
        ctx.nap(0..300, rng).await;
    }
    last
}

/// Reads a little of the head or the tail (as players probe a container),
/// then hangs up.
async fn prober(ctx: &Ctx, c: &reqwest::Client, base: &str, rng: &mut StdRng) -> Outcome {
    let path = any_file(ctx, rng);
    let url = ctx.url(base, path, rng);
    let len = ctx.lib.len(path);
    let outcome = if rng.random_bool(0.5) {
        let upto = rng.random_range(0..65_536);
        fetch(ctx, c, &url, path, Some((0, None)), Reading::Upto(upto)).await
    } else {
        let a = len - rng.random_range(1..300_000).min(len);
        fetch(ctx, c, &url, path, Some((a, None)), Reading::All).await
    };
    ctx.nap(50..300, rng).await;
    outcome
}

/// A slow reader, or one that stops taking bytes for longer than spool's
/// write timeout (spool then cuts it: whatever came must still be right).
async fn slow(ctx: &Ctx, c: &reqwest::Client, base: &str, rng: &mut StdRng) -> Outcome {
    let path = any_file(ctx, rng);
    let url = ctx.url(base, path, rng);
    let len = ctx.lib.len(path);
    let a = rng.random_range(0..len);
    let reading = if rng.random_bool(0.25) {
        Reading::Pause {
            after: rng.random_range(0..200_000),
            pause: Duration::from_secs(WRITE_TIMEOUT_SECS + 2),
        }
    } else {
        Reading::Paced {
            rate: rng.random_range(100_000..500_000),
            upto: rng.random_range(200_000..1_500_000),
        }
    };
    fetch(ctx, c, &url, path, Some((a, None)), reading).await
}

/// An HLS player: master, variant, then segments in order from a random
/// one, through the path form (rewritten URIs resolve against spool).
async fn hls(ctx: &Ctx, c: &reqwest::Client, base: &str, rng: &mut StdRng) -> Outcome {
    let master_url = format!("{base}/p/{}/hls/master.m3u8", ctx.enc_origin);
    let Some(master) = fetch_text(ctx, c, &master_url).await else {
        return Outcome::Cut;
    };
    let Some(variant_uri) = master
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
    else {
        return playlist_problem(ctx, "master without a variant", &master);
    };
    if !variant_uri.starts_with("/p/") || !variant_uri.ends_with("/hls/v.m3u8") {
        return playlist_problem(ctx, "variant URI not rewritten to /p/", &master);
    }
    let Some(variant) = fetch_text(ctx, c, &format!("{base}{variant_uri}")).await else {
        return Outcome::Cut;
    };
    // Tags as the origin wrote them; each URI rewritten to its segment.
    let origin_lines: Vec<&str> = ctx.lib.variant.lines().collect();
    let lines: Vec<&str> = variant.lines().collect();
    if lines.len() != origin_lines.len() {
        return playlist_problem(ctx, "variant has other lines than the origin's", &variant);
    }
    let mut segments = Vec::new();
    for (got, want) in lines.iter().zip(&origin_lines) {
        if want.starts_with('#') {
            if got != want {
                return playlist_problem(ctx, "variant tag changed", &variant);
            }
        } else if got.starts_with("/p/") && got.ends_with(&format!("/hls/{want}")) {
            segments.push((got.to_string(), format!("hls/{want}")));
        } else {
            return playlist_problem(ctx, "segment URI not rewritten to /p/", &variant);
        }
    }
    let first = rng.random_range(0..segments.len());
    let count = rng.random_range(1..=8).min(segments.len() - first);
    let mut last = Outcome::Complete;
    for (uri, path) in &segments[first..first + count] {
        if !ctx.go().await {
            break;
        }
        last = fetch(ctx, c, &format!("{base}{uri}"), path, None, Reading::All).await;
        if last != Outcome::Complete {
            break;
        }
        ctx.nap(0..200, rng).await;
    }
    last
}

fn playlist_problem(ctx: &Ctx, what: &str, text: &str) -> Outcome {
    ctx.tally.unexpected.fetch_add(1, Ordering::Relaxed);
    ctx.tally.problem(format!(
        "{what}:\n{}",
        text.lines().take(8).collect::<Vec<_>>().join("\n")
    ));
    Outcome::Bad
}

// ---------------------------------------------------------------- chaos

/// Faults on random paths for a few seconds each.
async fn faults(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut paths: Vec<String> = ctx.lib.files.iter().map(|(p, _)| p.clone()).collect();
    paths.extend(ctx.lib.segments.iter().cloned());
    let live: Arc<Mutex<Vec<String>>> = Arc::default();
    while ctx.go().await {
        ctx.nap(500..3000, &mut rng).await;
        if ctx.quiet.load(Ordering::Relaxed) || live.lock().unwrap().len() >= MAX_FAULTS {
            continue;
        }
        let path = paths[rng.random_range(0..paths.len())].clone();
        let mut f = Faults::default();
        match rng.random_range(0..7) {
            0 => f.reset_after_bytes = Some(rng.random_range(0..600_000)),
            1 => {
                f.reset_after_bytes = Some(rng.random_range(0..600_000));
                f.reset_once = true;
            }
            2 => f.stall_after_bytes = Some(rng.random_range(0..600_000)),
            3 => f.hang = true,
            4 => f.status = Some(503),
            5 => f.status = Some(500),
            _ => {
                f.latency = Duration::from_millis(300);
                f.rate_bytes_per_sec = Some(1_000_000);
            }
        }
        ctx.origin.set_faults(&path, f);
        live.lock().unwrap().push(path.clone());
        ctx.chaos.faults.fetch_add(1, Ordering::Relaxed);
        let (ctx, live) = (ctx.clone(), live.clone());
        let hold = Duration::from_millis(rng.random_range(1000..5000));
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            ctx.origin.clear_faults(&path);
            live.lock().unwrap().retain(|p| *p != path);
        });
    }
}

/// Now and then a file gets new content.
async fn new_versions(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    while ctx.go().await {
        ctx.nap(8_000..20_000, &mut rng).await;
        if !ctx.go().await {
            break;
        }
        let (path, ctype) = if rng.random_bool(0.8) {
            ctx.lib.files[rng.random_range(0..ctx.lib.files.len())].clone()
        } else {
            (
                ctx.lib.segments[rng.random_range(0..ctx.lib.segments.len())].clone(),
                "video/mp2t",
            )
        };
        ctx.lib.change(&ctx.origin, &path, ctype, &mut rng);
        ctx.chaos.new_versions.fetch_add(1, Ordering::Relaxed);
    }
}

/// Fills spool `i`'s tmpfs for a few seconds, then empties it.
async fn disk_filler(ctx: Arc<Ctx>, i: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mount = ctx.spools[i].mount.clone();
    while ctx.go().await {
        ctx.nap(6_000..15_000, &mut rng).await;
        if !ctx.go().await {
            break;
        }
        // The disk stays full for a few seconds: what cleanup frees, the
        // ballast takes again, so chunk writes meet ENOSPC.
        let leave = rng.random_range(0..1_000_000);
        ctx.chaos.disk_fills.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + Duration::from_millis(rng.random_range(2_000..8_000));
        while Instant::now() < until && ctx.running.load(Ordering::Relaxed) {
            if ctx.quiet.load(Ordering::Relaxed) {
                break;
            }
            if let Err(e) = top_up(&mount, leave) {
                eprintln!("soak: ballast on {}: {e}", mount.display());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = std::fs::remove_file(mount.join("ballast"));
    }
}

/// Kills spool B with SIGKILL at random moments, checks its cache, and
/// starts it again.
async fn killer(ctx: Arc<Ctx>, seed: u64) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let b = &ctx.spools[1];
    while ctx.go().await {
        ctx.nap(4_000..15_000, &mut rng).await;
        if !ctx.go().await {
            break;
        }
        b.kill9();
        ctx.chaos.kills.fetch_add(1, Ordering::Relaxed);
        let (ok, out) = b.verify();
        if !ok {
            ctx.chaos.index_problems.fetch_add(1, Ordering::Relaxed);
            ctx.tally
                .problem(format!("index and files disagree after kill -9:\n{out}"));
        }
        ctx.nap(100..1500, &mut rng).await;
        b.start().await?;
    }
    Ok(())
}

#[derive(Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    /// Chunks spool holds in memory because the disk could not take them
    /// (`--memory-cache`, at most 8 MiB here), in KiB: part of the RSS.
    memcache_kib: u64,
    threads: u64,
}

fn sample(inst: &Instance) -> Sample {
    inst.pid()
        .and_then(proc_sample)
        .map_or(Sample::default(), |(rss_kib, fds, threads)| Sample {
            rss_kib,
            fds,
            memcache_kib: 0,
            threads,
        })
}

/// Stops new requests and chaos, waits for the requests under way to end
/// and for spool's own work after them to settle, then samples both.
async fn at_rest(ctx: &Ctx) -> [Sample; 2] {
    ctx.quiet.store(true, Ordering::Relaxed);
    for inst in &ctx.spools {
        let _ = std::fs::remove_file(inst.mount.join("ballast"));
    }
    let t0 = Instant::now();
    while ctx.tally.active.load(Ordering::Relaxed) > 0 && t0.elapsed() < HUNG_AFTER * 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for inst in &ctx.spools {
        let _ = std::fs::remove_file(inst.mount.join("ballast"));
    }
    // Idle connections close (clients after 1 s), read-ahead grace ends,
    // chunk writes finish, the runtime's idle blocking threads (file reads
    // and writes run there) exit after 10 s, and spool's idle connections
    // to the origin after 30 s: what is left is what spool holds at rest,
    // not the high-water mark of its pools at that moment.
    tokio::time::sleep(AT_REST).await;
    let mut out = [sample(&ctx.spools[0]), sample(&ctx.spools[1])];
    for (i, inst) in ctx.spools.iter().enumerate() {
        let admin = inst.admin.read().unwrap().clone();
        let m = metric_sums(admin).await;
        out[i].memcache_kib =
            m.get("spool_memory_cache_bytes").copied().unwrap_or(0.0) as u64 / 1024;
    }
    out
}

async fn metric_sums(admin: Option<String>) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    let Some(admin) = admin else { return sums };
    let Ok(res) = client().get(format!("http://{admin}/metrics")).send().await else {
        return sums;
    };
    let text = res.text().await.unwrap_or_default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name);
        if let Ok(v) = value.parse::<f64>() {
            *sums.entry(name.to_string()).or_default() += v;
        }
    }
    sums
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn growth(before: u64, after: u64) -> f64 {
    if before == 0 {
        return 0.0;
    }
    (after as f64 / before as f64 - 1.0) * 100.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let origin = Origin::start().await;
    origin.set_log_limit(0);
    let lib = Library::build(&origin, seed);
    let enc_origin: String =
        url::form_urlencoded::byte_serialize(format!("http://{}", origin.addr()).as_bytes())
            .collect();
    let mut mounts = Vec::new();
    let mut spools = Vec::new();
    for name in ["a", "b"] {
        let mount = work.join(format!("cache-{name}"));
        mounts.push(Tmpfs::mount(mount.clone())?);
        let log = work.join(format!("spool-{name}.log"));
        let _ = std::fs::remove_file(&log);
        spools.push(Instance {
            name: if name == "a" { "A" } else { "B" },
            bin: args.spool.clone(),
            mount,
            log,
            addr: RwLock::new(None),
            admin: RwLock::new(None),
            child: Mutex::new(None),
        });
    }
    let spools: [Instance; 2] = spools
        .try_into()
        .map_err(|_| anyhow::anyhow!("two spools"))?;
    for s in &spools {
        s.start().await?;
    }
    let ctx = Arc::new(Ctx {
        origin,
        lib,
        spools,
        tally: Tally::default(),
        chaos: Chaos::default(),
        quiet: AtomicBool::new(false),
        running: AtomicBool::new(true),
        enc_origin,
    });
    let started = [sample(&ctx.spools[0]), sample(&ctx.spools[1])];
    println!(
        "soak: {} s, seed {seed}; logs in {}",
        args.seconds,
        work.display()
    );

    let t0 = Instant::now();
    let mut players = Vec::new();
    let kinds = [
        (Kind::Sequential, 3),
        (Kind::Seeker, 3),
        (Kind::Prober, 2),
        (Kind::Slow, 3),
        (Kind::Hls, 3),
    ];
    let mut n = 0;
    for (kind, count) in kinds {
        for _ in 0..count {
            n += 1;
            players.push(tokio::spawn(player(ctx.clone(), kind, seed ^ (n * 7919))));
        }
    }
    let mut chaos = vec![
        tokio::spawn(faults(ctx.clone(), seed ^ 1)),
        tokio::spawn(new_versions(ctx.clone(), seed ^ 2)),
        tokio::spawn(disk_filler(ctx.clone(), 0, seed ^ 3)),
        tokio::spawn(disk_filler(ctx.clone(), 1, seed ^ 4)),
    ];
    let kill = tokio::spawn(killer(ctx.clone(), seed ^ 5));

    // Peaks while playing, and spool A's health.
    let peaks = Arc::new(Mutex::new([Sample::default(); 2]));
    let died = Arc::new(Mutex::new(None::<String>));
    let sampler = {
        let (ctx, peaks, died) = (ctx.clone(), peaks.clone(), died.clone());
        tokio::spawn(async move {
            loop {
                for (i, inst) in ctx.spools.iter().enumerate() {
                    let s = sample(inst);
                    let mut p = peaks.lock().unwrap();
                    p[i].rss_kib = p[i].rss_kib.max(s.rss_kib);
                    p[i].fds = p[i].fds.max(s.fds);
                    p[i].threads = p[i].threads.max(s.threads);
                }
                if let Some(status) = ctx.spools[0].died() {
                    *died.lock().unwrap() = Some(format!("spool A exited: {status}"));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let warmup = Duration::from_secs((args.seconds / 6).clamp(10, 60));
    tokio::time::sleep(warmup).await;
    let warm = at_rest(&ctx).await;
    println!(
        "soak: warm after {} s: spool A RSS {}, {} fds",
        warmup.as_secs(),
        mib(warm[0].rss_kib),
        warm[0].fds
    );
    ctx.quiet.store(false, Ordering::Relaxed);
    let deadline = t0 + Duration::from_secs(args.seconds);
    let mut next_line = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next_line {
            next_line += Duration::from_secs(30);
            let t = &ctx.tally;
            let a = sample(&ctx.spools[0]);
            println!(
                "soak: {:>4} s: {} requests, {} MB, wrong {}, hung {}, kills {}, A RSS {}, {} fds",
                t0.elapsed().as_secs(),
                t.requests.load(Ordering::Relaxed),
                t.bytes.load(Ordering::Relaxed) / 1_000_000,
                t.wrong_bytes.load(Ordering::Relaxed),
                t.hung.load(Ordering::Relaxed),
                ctx.chaos.kills.load(Ordering::Relaxed),
                mib(a.rss_kib),
                a.fds
            );
        }
    }

    // The end: players finish what they are doing (each wait is bounded by
    // HUNG_AFTER), chaos stops, then the last look at rest.
    ctx.running.store(false, Ordering::Relaxed);
    let mut unfinished = 0;
    for p in players {
        if tokio::time::timeout(HUNG_AFTER * 3, p).await.is_err() {
            unfinished += 1;
        }
    }
    for c in chaos.drain(..) {
        let _ = c.await;
    }
    let kill_result = kill.await;
    let played = t0.elapsed();
    for i in 0..2 {
        for path in ctx
            .lib
            .files
            .iter()
            .map(|(p, _)| p)
            .chain(&ctx.lib.segments)
        {
            ctx.origin.clear_faults(path);
        }
        let _ = std::fs::remove_file(ctx.spools[i].mount.join("ballast"));
    }
    let end = at_rest(&ctx).await;
    let admin_a = ctx.spools[0].admin.read().unwrap().clone();
    let metrics = metric_sums(admin_a).await;
    sampler.abort();
    let mut shutdown = Vec::new();
    for inst in &ctx.spools {
        shutdown.push(inst.terminate().await);
    }
    let verified: Vec<(bool, String)> = ctx.spools.iter().map(Instance::verify).collect();
    drop(mounts);

    // ---- report
    let t = &ctx.tally;
    let ch = &ctx.chaos;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let peaks = *peaks.lock().unwrap();
    let statuses = t.statuses.lock().unwrap().clone();
    println!();
    println!("soak report ({} s of play, seed {seed})", played.as_secs());
    println!("  requests          {}", load(&t.requests));
    println!("  bytes served      {}", load(&t.bytes));
    println!(
        "  answers           complete {}, hung up by the player {}, 502-504 {}, cut {}, refused (B down) {}",
        load(&t.complete),
        load(&t.dropped),
        load(&t.error_answers),
        load(&t.cut),
        load(&t.refused)
    );
    println!("  statuses          {statuses:?}");
    println!(
        "  wrong bytes       {} (in {} answers)",
        load(&t.wrong_bytes),
        load(&t.wrong_answers)
    );
    println!("  hung clients      {}", load(&t.hung) + unfinished);
    println!("  unexpected        {}", load(&t.unexpected));
    println!(
        "  restarts          {} (kill -9 of spool B); index problems after a kill: {}",
        load(&ch.kills),
        load(&ch.index_problems)
    );
    println!(
        "  chaos             {} origin faults, {} new versions, {} disk fills",
        load(&ch.faults),
        load(&ch.new_versions),
        load(&ch.disk_fills)
    );
    let m = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
    println!(
        "  spool A metrics   upstream errors {}, resumes {}, cache write errors {}, evicted chunks {}, cleanups {}",
        m("spool_upstream_errors_total"),
        m("spool_upstream_resumes_total"),
        m("spool_cache_write_errors_total"),
        m("spool_evicted_chunks_total"),
        m("spool_cleanups_total"),
    );
    for (i, inst) in ctx.spools.iter().enumerate() {
        println!(
            "  spool {} RSS      start {}, after warm-up {}, end {} ({:+.1}%), peak {}",
            inst.name,
            mib(started[i].rss_kib),
            mib(warm[i].rss_kib),
            mib(end[i].rss_kib),
            growth(warm[i].rss_kib, end[i].rss_kib),
            mib(peaks[i].rss_kib)
        );
        println!(
            "  spool {} threads  start {}, after warm-up {}, end {}, peak {}",
            inst.name, started[i].threads, warm[i].threads, end[i].threads, peaks[i].threads
        );
        println!(
            "  spool {} memory   chunks held in memory (part of RSS): after warm-up {}, end {}",
            inst.name,
            mib(warm[i].memcache_kib),
            mib(end[i].memcache_kib)
        );
        println!(
            "  spool {} fds      start {}, after warm-up {}, end {} ({:+.1}%), peak {}",
            inst.name,
            started[i].fds,
            warm[i].fds,
            end[i].fds,
            growth(warm[i].fds, end[i].fds),
            peaks[i].fds
        );
        println!(
            "  spool {} stop     {}",
            inst.name,
            match shutdown[i] {
                Some(d) => format!("exited {} ms after SIGTERM", d.as_millis()),
                None => "still running after SIGTERM: killed".into(),
            }
        );
    }

    let mut failures = Vec::new();
    if load(&t.wrong_bytes) > 0 || load(&t.wrong_answers) > 0 {
        failures.push("wrong bytes".to_string());
    }
    if load(&t.hung) + unfinished > 0 {
        failures.push("hung clients".into());
    }
    if load(&t.unexpected) > 0 {
        failures.push("answers spool should never give".into());
    }
    if load(&ch.index_problems) > 0 {
        failures.push("index and files disagree after a kill".into());
    }
    if let Some(d) = died.lock().unwrap().clone() {
        failures.push(d);
    }
    match kill_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("restarting spool B: {e:#}")),
        Err(e) => failures.push(format!("the killer task: {e}")),
    }
    for (i, d) in shutdown.iter().enumerate() {
        let limit = Duration::from_secs(SHUTDOWN_TIMEOUT_SECS + 2);
        if !d.is_some_and(|d| d <= limit) {
            failures.push(format!(
                "spool {} did not exit within {} s of SIGTERM",
                ctx.spools[i].name,
                limit.as_secs()
            ));
        }
    }
    for (i, (ok, out)) in verified.iter().enumerate() {
        if !ok {
            failures.push(format!(
                "spool verify after the run, spool {}: {out}",
                ctx.spools[i].name
            ));
        }
    }
    if load(&t.bytes) == 0 {
        failures.push("no bytes served".into());
    }
    if args.seconds >= JUDGE_GROWTH_AFTER {
        if growth(warm[0].fds, end[0].fds) > 10.0 {
            failures.push("spool A's fds grew more than 10%".into());
        }
        if growth(warm[0].rss_kib, end[0].rss_kib) > 10.0 {
            failures.push("spool A's RSS grew more than 10%".into());
        }
    } else {
        println!(
            "  (RSS and fds are judged in runs of {JUDGE_GROWTH_AFTER} s or more: a shorter one ends before memory settles)"
        );
    }
    let problems = t.problems.lock().unwrap().clone();
    if !problems.is_empty() {
        println!("  first problems:");
        for p in &problems {
            println!("    - {}", p.replace('\n', "\n      "));
        }
    }
    let result = serde_json::json!({
        "seconds": played.as_secs(),
        "seed": seed,
        "requests": load(&t.requests),
        "bytes": load(&t.bytes),
        "wrong_bytes": load(&t.wrong_bytes),
        "hung": load(&t.hung) + unfinished,
        "unexpected": load(&t.unexpected),
        "restarts": load(&ch.kills),
        "rss_kib": {"start": started[0].rss_kib, "warm": warm[0].rss_kib, "end": end[0].rss_kib, "peak": peaks[0].rss_kib},
        "memory_cache_kib": {"warm": warm[0].memcache_kib, "end": end[0].memcache_kib},
        "fds": {"start": started[0].fds, "warm": warm[0].fds, "end": end[0].fds, "peak": peaks[0].fds},
        "failures": failures,
    });
    std::fs::write(work.join("result.json"), result.to_string())?;
    if failures.is_empty() {
        println!("soak: ok");
        Ok(true)
    } else {
        println!("soak: FAILED: {}", failures.join("; "));
        Ok(false)
    }
}
