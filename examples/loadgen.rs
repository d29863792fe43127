//! Load and measurement client for spool's benchmarks. Every subcommand
//! prints one JSON object on stdout.
//!
//!     loadgen throughput --url URL --clients N --duration-secs S [--range-size BYTES]
//!     loadgen seq        --url URL [--expect-file PATH] [--repeat N]
//!     loadgen seeks      --url URL --count K --size FILESIZE --len BYTES [--seed N] [--expect-file PATH] [--open] [--pause-ms MS]
//!     loadgen paced      --url URL --bits-per-sec R --secs S [--ahead-secs A] [--stall-ms M]
//!     loadgen gap        --url URL
//!     loadgen fanout     --url URL --clients N [--expect-size BYTES]
//!     loadgen free-port
//!
//! Everything is bounded: each request has a timeout (--timeout-secs,
//! default 60 s), and `throughput` stops every client at its deadline.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Load and measurement client for spool benchmarks")]
struct Args {
    /// Per-request timeout in seconds (whole request, body included).
    #[arg(long, global = true, default_value_t = 60)]
    timeout_secs: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N concurrent clients GET the URL (whole, or random ranges) in a loop
    /// for S seconds; aggregate throughput.
    Throughput {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// GET random ranges of this size instead of the whole URL.
        #[arg(long)]
        range_size: Option<u64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// One GET of the whole URL: throughput and time to first body byte.
    Seq {
        #[arg(long)]
        url: String,
        /// Compare every received byte with this file.
        #[arg(long)]
        expect_file: Option<PathBuf>,
        /// Read it this many times in a row; report the median run (by
        /// bytes_per_sec) and every run's rate.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// K sequential GETs of random ranges; time to first body byte.
    Seeks {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Size of the resource in bytes.
        #[arg(long)]
        size: u64,
        /// Length of each range.
        #[arg(long, default_value_t = 65536)]
        len: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Compare every received range with this file.
        #[arg(long)]
        expect_file: Option<PathBuf>,
        /// Ask for an open range (`bytes=N-`), as players do, read `len`
        /// bytes of it and close the connection.
        #[arg(long)]
        open: bool,
        /// Wait this long after each seek before the next (0: back to
        /// back): with a pause, a seek does not share the machine with
        /// what the one before left to do.
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
    },
    /// A player reading an open range (`bytes=0-`) at a fixed bit rate for
    /// S seconds of playback: counts stalls (a byte needed more than
    /// --stall-ms after its time) and the largest lateness.
    Paced {
        #[arg(long)]
        url: String,
        /// Playback rate in bits per second.
        #[arg(long)]
        bits_per_sec: u64,
        /// Seconds of playback.
        #[arg(long, default_value_t = 30.0)]
        secs: f64,
        /// The player's buffer: it reads at most this far (in playback
        /// seconds) ahead of the playhead.
        #[arg(long, default_value_t = 2.0)]
        ahead_secs: f64,
        /// A byte later than this past its time is a stall.
        #[arg(long, default_value_t = 250)]
        stall_ms: u64,
        /// Once its buffer ran dry, the player plays again only when it
        /// holds this much playback (real players rebuffer so: a stream
        /// slower than playback then shows as stalls of this length, not
        /// as many tiny waits). 0: it plays on with the late byte.
        #[arg(long, default_value_t = 0.0)]
        rebuffer_secs: f64,
    },
    /// One GET of the whole URL: largest gap between body pieces.
    Gap {
        #[arg(long)]
        url: String,
    },
    /// N concurrent GETs of the whole URL, once each.
    Fanout {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 20)]
        clients: usize,
        /// Each client must receive exactly this many bytes.
        #[arg(long)]
        expect_size: Option<u64>,
    },
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
}

fn client(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let timeout = Duration::from_secs(args.timeout_secs);
    let out = match args.cmd {
        Cmd::Throughput {
            url,
            clients,
            duration_secs,
            range_size,
            seed,
        } => {
            throughput(
                client(timeout),
                url,
                clients,
                duration_secs,
                range_size,
                seed,
            )
            .await
        }
        Cmd::Seq {
            url,
            expect_file,
            repeat,
        } => {
            let c = client(timeout);
            let mut runs = Vec::new();
            for _ in 0..repeat.max(1) {
                runs.push(seq(c.clone(), url.clone(), expect_file.clone()).await);
            }
            let rate = |v: &Value| v["bytes_per_sec"].as_f64().unwrap_or(0.0);
            let rates: Vec<f64> = runs.iter().map(rate).collect();
            let errors = runs.iter().filter(|r| !r["error"].is_null()).count();
            let all_identical = runs.iter().all(|r| r["identical"].as_bool() != Some(false));
            runs.sort_by(|a, b| rate(a).partial_cmp(&rate(b)).unwrap());
            let mut out = runs.swap_remove(runs.len() / 2);
            if repeat > 1 {
                out["runs_bytes_per_sec"] = json!(rates);
                out["runs_with_error"] = json!(errors);
                if expect_file.is_some() {
                    out["identical"] = json!(all_identical);
                }
            }
            out
        }
        Cmd::Seeks {
            url,
            count,
            size,
            len,
            seed,
            expect_file,
            open,
            pause_ms,
        } => {
            let spec = SeekSpec {
                count,
                size,
                len,
                seed,
                open,
                pause: Duration::from_millis(pause_ms),
            };
            seeks(client(timeout), url, spec, expect_file).await
        }
        Cmd::Paced {
            url,
            bits_per_sec,
            secs,
            ahead_secs,
            stall_ms,
            rebuffer_secs,
        } => {
            let spec = PacedSpec {
                bytes_per_sec: bits_per_sec as f64 / 8.0,
                secs,
                ahead_secs,
                stall: Duration::from_millis(stall_ms),
                rebuffer_secs,
            };
            paced(client(timeout), url, spec).await
        }
        Cmd::Gap { url } => gap(client(timeout), url).await,
        Cmd::Fanout {
            url,
            clients,
            expect_size,
        } => fanout(client(timeout), url, clients, expect_size).await,
        Cmd::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            json!({ "port": l.local_addr().unwrap().port() })
        }
    };
    println!("{out}");
}

/// Size of the resource: from `Content-Range` of a `bytes=0-0` GET, else
/// from `Content-Length` of a plain GET's headers.
async fn resource_size(c: &reqwest::Client, url: &str) -> Result<u64, String> {
    let res = c
        .get(url)
        .header("Range", "bytes=0-0")
        .send()
        .await
        .map_err(|e| format!("size probe: {e}"))?;
    if res.status() == 206 {
        if let Some(total) = res
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .and_then(|v| v.parse().ok())
        {
            return Ok(total);
        }
    }
    if res.status() == 200 {
        if let Some(len) = res.content_length() {
            return Ok(len);
        }
    }
    Err(format!(
        "size probe: status {}, no usable length",
        res.status()
    ))
}

async fn throughput(
    c: reqwest::Client,
    url: String,
    clients: usize,
    duration_secs: u64,
    range_size: Option<u64>,
    seed: u64,
) -> Value {
    let size = match range_size {
        Some(_) => match resource_size(&c, &url).await {
            Ok(s) => Some(s),
            Err(e) => return json!({ "error": e }),
        },
        None => None,
    };
    let bytes = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(duration_secs);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (c, url) = (c.clone(), url.clone());
        let (bytes, requests, errors) = (bytes.clone(), requests.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(i as u64));
            // Each completed request's time, from send to its last byte.
            let mut took: Vec<f64> = Vec::new();
            while tokio::time::Instant::now() < deadline {
                let t0 = tokio::time::Instant::now();
                let mut req = c.get(&url);
                let mut want = None;
                if let (Some(len), Some(size)) = (range_size, size) {
                    let len = len.min(size).max(1);
                    let a = rng.random_range(0..=size - len);
                    req = req.header("Range", format!("bytes={}-{}", a, a + len - 1));
                    want = Some(len);
                }
                let one = async {
                    let mut res = req.send().await.map_err(|_| ())?;
                    if !res.status().is_success() {
                        return Err(());
                    }
                    let mut got = 0u64;
                    while let Some(chunk) = res.chunk().await.map_err(|_| ())? {
                        got += chunk.len() as u64;
                        bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    match want {
                        Some(w) if w != got => Err(()),
                        _ => Ok(()),
                    }
                };
                match tokio::time::timeout_at(deadline, one).await {
                    Ok(Ok(())) => {
                        requests.fetch_add(1, Ordering::Relaxed);
                        took.push(ms(t0.elapsed()));
                    }
                    Ok(Err(())) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => break, // deadline hit mid-request: stop
                }
            }
            took
        }));
    }
    let mut took = Vec::new();
    for t in tasks {
        took.extend(t.await.unwrap_or_default());
    }
    let secs = start.elapsed().as_secs_f64();
    took.sort_by(|a, b| a.total_cmp(b));
    let total = bytes.load(Ordering::Relaxed);
    json!({
        "mode": "throughput",
        "url": url,
        "clients": clients,
        "range_size": range_size,
        "bytes": total,
        "seconds": secs,
        "bytes_per_sec": total as f64 / secs,
        "mib_per_sec": total as f64 / secs / 1048576.0,
        "requests_completed": requests.load(Ordering::Relaxed),
        "requests_per_sec": requests.load(Ordering::Relaxed) as f64 / secs,
        "request_p50_ms": percentile(&took, 50.0),
        "request_p99_ms": percentile(&took, 99.0),
        "errors": errors.load(Ordering::Relaxed),
    })
}

/// Compares received pieces with a file in a separate thread, so the
/// comparison overlaps the transfer.
struct Verifier {
    tx: Option<std::sync::mpsc::SyncSender<(u64, Bytes)>>,
    handle: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Verifier {
    fn new(path: &PathBuf) -> Result<Verifier, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Bytes)>(64);
        let handle = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut first_err = Ok(());
            for (offset, data) in rx {
                if first_err.is_err() {
                    continue;
                }
                buf.resize(data.len(), 0);
                let mut got = 0;
                while got < buf.len() {
                    match file.read_at(&mut buf[got..], offset + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) => {
                            first_err = Err(format!("read expect file: {e}"));
                            break;
                        }
                    }
                }
                if first_err.is_ok() && (got != data.len() || buf[..] != data[..]) {
                    let at = (0..got.min(data.len()))
                        .find(|&i| buf[i] != data[i])
                        .unwrap_or(got.min(data.len()));
                    first_err = Err(format!("mismatch at byte {}", offset + at as u64));
                }
            }
            first_err
        });
        Ok(Verifier {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    fn check(&self, offset: u64, data: Bytes) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((offset, data));
        }
    }

    fn finish(mut self) -> Result<(), String> {
        drop(self.tx.take());
        self.handle
            .take()
            .unwrap()
            .join()
            .unwrap_or(Err("verifier panicked".into()))
    }
}

async fn seq(c: reqwest::Client, url: String, expect_file: Option<PathBuf>) -> Value {
    let verifier = match expect_file.as_ref().map(Verifier::new).transpose() {
        Ok(v) => v,
        Err(e) => return json!({ "error": e }),
    };
    let t0 = Instant::now();
    let mut res = match c.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return json!({ "mode": "seq", "url": url, "error": e.to_string() }),
    };
    let status = res.status().as_u16();
    let mut ttfb = None;
    let mut total = 0u64;
    let mut error = None;
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                ttfb.get_or_insert_with(|| t0.elapsed());
                if let Some(v) = &verifier {
                    v.check(total, chunk.clone());
                }
                total += chunk.len() as u64;
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut out = json!({
        "mode": "seq",
        "url": url,
        "status": status,
        "bytes": total,
        "seconds": secs,
        "bytes_per_sec": total as f64 / secs,
        "mib_per_sec": total as f64 / secs / 1048576.0,
        "ttfb_ms": ttfb.map(ms),
        "error": error,
    });
    if let (Some(v), Some(path)) = (verifier, expect_file) {
        let file_len = std::fs::metadata(&path)
            .map(|m| m.len())
            .unwrap_or(u64::MAX);
        let cmp = v.finish();
        let identical = cmp.is_ok() && total == file_len && out["error"].is_null();
        out["identical"] = json!(identical);
        if let Err(e) = cmp {
            out["mismatch"] = json!(e);
        } else if total != file_len {
            out["mismatch"] = json!(format!("got {total} bytes, file has {file_len}"));
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What `seeks` does: `count` ranges of `len` bytes at random offsets of a
/// resource of `size` bytes; closed ranges, or open ones read for `len`
/// bytes and then abandoned.
struct SeekSpec {
    count: usize,
    size: u64,
    len: u64,
    seed: u64,
    open: bool,
    pause: Duration,
}

async fn seeks(
    c: reqwest::Client,
    url: String,
    spec: SeekSpec,
    expect_file: Option<PathBuf>,
) -> Value {
    let verifier = match expect_file.as_ref().map(Verifier::new).transpose() {
        Ok(v) => v,
        Err(e) => return json!({ "error": e }),
    };
    let SeekSpec {
        count,
        size,
        len,
        seed,
        open,
        pause,
    } = spec;
    let len = len.min(size).max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ttfbs = Vec::with_capacity(count);
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    let t_all = Instant::now();
    for _ in 0..count {
        let a = rng.random_range(0..=size - len);
        let range = if open {
            format!("bytes={a}-")
        } else {
            format!("bytes={}-{}", a, a + len - 1)
        };
        let t0 = Instant::now();
        let r: Result<(), String> = async {
            let mut res = c
                .get(&url)
                .header("Range", range)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if res.status() != 206 {
                return Err(format!("status {}", res.status()));
            }
            let mut got = 0u64;
            while let Some(mut chunk) = res.chunk().await.map_err(|e| e.to_string())? {
                if got == 0 {
                    ttfbs.push(ms(t0.elapsed()));
                }
                if open && got + chunk.len() as u64 >= len {
                    // Enough: drop the response, which closes the
                    // connection mid-body as a player's seek does.
                    chunk.truncate((len - got) as usize);
                }
                if let Some(v) = &verifier {
                    v.check(a + got, chunk.clone());
                }
                got += chunk.len() as u64;
                if open && got == len {
                    break;
                }
            }
            if got != len {
                return Err(format!("got {got} bytes of {len}"));
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            errors += 1;
            first_error.get_or_insert(e);
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    let mut sorted = ttfbs.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut out = json!({
        "mode": "seeks",
        "url": url,
        "count": count,
        "len": len,
        "open_range": open,
        "pause_ms": pause.as_millis() as u64,
        "seed": seed,
        "seconds": t_all.elapsed().as_secs_f64(),
        "p50_ms": percentile(&sorted, 50.0),
        "p99_ms": percentile(&sorted, 99.0),
        "max_ms": sorted.last(),
        "mean_ms": if sorted.is_empty() { None } else { Some(sorted.iter().sum::<f64>() / sorted.len() as f64) },
        "errors": errors,
        "first_error": first_error,
    });
    if let Some(v) = verifier {
        let cmp = v.finish();
        out["identical"] = json!(cmp.is_ok() && errors == 0);
        if let Err(e) = cmp {
            out["mismatch"] = json!(e);
        }
    }
    out
}

/// A paced player: bytes per second of playback, seconds of playback, how
/// far ahead it buffers, and the lateness that counts as a stall.
struct PacedSpec {
    bytes_per_sec: f64,
    secs: f64,
    ahead_secs: f64,
    stall: Duration,
    rebuffer_secs: f64,
}

/// Plays `bytes=0-` of the URL at a fixed rate. Playback starts with the
/// first body byte; byte k is due `k / rate` seconds of playback later. The
/// player reads no further than `ahead_secs` past the playhead (so a slow
/// reader exerts back-pressure as a real one does). When a piece arrives
/// after its first byte was due, the buffer ran dry: the playhead waits (a
/// rebuffer) until `rebuffer_secs` of playback past it arrived, and the
/// schedule shifts by the wait; a wait over `stall` counts as a stall.
/// Playback starts once `rebuffer_secs` of it arrived (at the first byte
/// with 0): that wait is the startup time, not a stall.
async fn paced(c: reqwest::Client, url: String, spec: PacedSpec) -> Value {
    let PacedSpec {
        bytes_per_sec: rate,
        secs,
        ahead_secs,
        stall,
        rebuffer_secs,
    } = spec;
    let refill = (rebuffer_secs.max(0.0) * rate) as u64;
    let want = (rate * secs).ceil() as u64;
    let t0 = Instant::now();
    let mut res = match c.get(&url).header("Range", "bytes=0-").send().await {
        Ok(r) => r,
        Err(e) => return json!({ "mode": "paced", "url": url, "error": e.to_string() }),
    };
    let status = res.status().as_u16();
    let mut ttfb = None;
    // Playback of byte 0 starts at `play0`; rebuffers move it later.
    let mut play0 = Instant::now();
    let mut got = 0u64;
    let mut stalls = 0u64;
    let mut max_late = Duration::ZERO;
    let mut late_total = Duration::ZERO;
    let mut error = None;
    // Since when the buffer is dry, and the byte the playhead stopped at.
    let mut dry: Option<(Instant, u64)> = None;
    let mut stalled_at = Vec::new();
    let mut starting = refill > 0;
    let mut startup = None;
    while got < want {
        // Buffer full: wait until the playhead is within `ahead_secs`.
        let ahead_until =
            play0 + Duration::from_secs_f64((got as f64 / rate - ahead_secs).max(0.0));
        if ttfb.is_some() && !starting && ahead_until > Instant::now() {
            tokio::time::sleep_until(ahead_until.into()).await;
        }
        match res.chunk().await {
            Ok(Some(chunk)) => {
                let now = Instant::now();
                if ttfb.is_none() {
                    ttfb = Some(now - t0);
                    play0 = now;
                }
                if starting {
                    // Playback starts once the player holds what it
                    // rebuffers to (at the first byte with none).
                    got += chunk.len() as u64;
                    if got >= refill || got >= want {
                        starting = false;
                        play0 = now;
                        startup = Some(now - t0);
                    }
                    continue;
                }
                let due = play0 + Duration::from_secs_f64(got as f64 / rate);
                if dry.is_none() && now > due {
                    dry = Some((due, got));
                }
                got += chunk.len() as u64;
                if let Some((since, at)) = dry {
                    if got >= at.saturating_add(refill) || got >= want {
                        let late = now - since;
                        max_late = max_late.max(late);
                        late_total += late;
                        if late > stall {
                            stalls += 1;
                            // Where in playback it stalled, in seconds.
                            stalled_at.push((at as f64 / rate * 10.0).round() / 10.0);
                        }
                        play0 += late;
                        dry = None;
                    }
                }
            }
            Ok(None) => {
                error = Some(format!("body ended after {got} bytes of {want}"));
                break;
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    drop(res);
    json!({
        "mode": "paced",
        "url": url,
        "status": status,
        "bits_per_sec": rate * 8.0,
        "playback_secs": secs,
        "ahead_secs": ahead_secs,
        "stall_ms": ms(stall),
        "rebuffer_secs": rebuffer_secs,
        "bytes": got,
        "seconds": t0.elapsed().as_secs_f64(),
        "ttfb_ms": ttfb.map(ms),
        "stalls": stalls,
        "stalled_at_secs": stalled_at,
        "startup_ms": startup.or(ttfb).map(ms),
        "max_late_ms": ms(max_late),
        "total_late_ms": ms(late_total),
        "error": error,
    })
}

async fn gap(c: reqwest::Client, url: String) -> Value {
    let t0 = Instant::now();
    let mut res = match c.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return json!({ "mode": "gap", "url": url, "error": e.to_string() }),
    };
    let status = res.status().as_u16();
    let mut last: Option<Instant> = None;
    let mut ttfb = None;
    let mut max_gap = Duration::ZERO;
    let mut total = 0u64;
    let mut pieces = 0u64;
    let mut error = None;
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                let now = Instant::now();
                match last {
                    None => ttfb = Some(now - t0),
                    Some(prev) => max_gap = max_gap.max(now - prev),
                }
                last = Some(now);
                total += chunk.len() as u64;
                pieces += 1;
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    json!({
        "mode": "gap",
        "url": url,
        "status": status,
        "bytes": total,
        "pieces": pieces,
        "seconds": secs,
        "bytes_per_sec": total as f64 / secs,
        "ttfb_ms": ttfb.map(ms),
        "max_gap_ms": ms(max_gap),
        "error": error,
    })
}

async fn fanout(
    c: reqwest::Client,
    url: String,
    clients: usize,
    expect_size: Option<u64>,
) -> Value {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let mut res = c.get(&url).send().await.map_err(|e| e.to_string())?;
            if !res.status().is_success() {
                return Err(format!("status {}", res.status()));
            }
            let mut got = 0u64;
            while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
                got += chunk.len() as u64;
            }
            Ok::<_, String>((got, t0.elapsed().as_secs_f64()))
        }));
    }
    let mut sizes = Vec::new();
    let mut secs = Vec::new();
    let mut errors = 0u64;
    let mut first_error = None;
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((got, s)) => {
                if expect_size.is_some_and(|e| e != got) {
                    errors += 1;
                    first_error.get_or_insert(format!("got {got} bytes"));
                }
                sizes.push(got);
                secs.push(s);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let total: u64 = sizes.iter().sum();
    let seconds = t0.elapsed().as_secs_f64();
    json!({
        "mode": "fanout",
        "url": url,
        "clients": clients,
        "bytes": total,
        "min_client_bytes": sizes.iter().min(),
        "max_client_bytes": sizes.iter().max(),
        "seconds": seconds,
        "slowest_client_seconds": secs.iter().cloned().fold(0.0, f64::max),
        "bytes_per_sec": total as f64 / seconds,
        "errors": errors,
        "first_error": first_error,
    })
}
