//! Standalone test origin for benchmarks: serves every file of a directory
//! (non-recursive, by file name) from disk, with optional latency and
//! throttling on every response.
//!
//!     cargo run --release --example origin -- --listen 127.0.0.1:0 --dir DIR \
//!         [--latency-ms 50] [--rate 8000000] [--stats-listen 127.0.0.1:0] \
//!         [--max-open 4] [--busy-from 10 --busy-times 3 --retry-after 2] \
//!         [--presigned-ttl 60]
//!
//! The faults of a far, throttled or expiring origin: `--rate` caps each
//! response (a connection), `--latency-ms` delays each; `--max-open`
//! answers 503 with `Retry-After: 1` while that many bodies are open;
//! `--busy-from N --busy-times M` answers 429 with `Retry-After:
//! --retry-after` to M requests of each file from its Nth on;
//! `--presigned-ttl S` answers presigned URLs only, valid S seconds, and
//! prints one per file (`presigned NAME URL`).
//!
//! Prints `listening on 127.0.0.1:PORT` once bound, then serves until killed.
//! With `--stats-listen`, also prints `stats on 127.0.0.1:PORT` and answers
//! any GET there with its counters since start, as JSON:
//! `{"requests": N, "body_bytes": N}` (body bytes handed to the connections,
//! so bytes sent before a client closed count).

#[allow(dead_code)]
#[path = "../tests/common/origin.rs"]
mod origin;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use origin::{Faults, Origin};

#[derive(Parser)]
#[command(about = "Test origin serving the files of a directory")]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory whose files are served, by file name.
    #[arg(long)]
    dir: PathBuf,
    /// Delay before every response's headers, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Throttle every response body to this many bytes per second.
    #[arg(long)]
    rate: Option<u64>,
    /// Serve the counters as JSON on this address (port 0 picks one).
    #[arg(long)]
    stats_listen: Option<SocketAddr>,
    /// Answer 503 (Retry-After: 1) while this many bodies are open.
    #[arg(long)]
    max_open: Option<u64>,
    /// Answer 429 to `--busy-times` requests of each file from its Nth on.
    #[arg(long)]
    busy_from: Option<u64>,
    #[arg(long, default_value_t = 1)]
    busy_times: u64,
    /// The Retry-After of those 429s, in seconds.
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// Answer presigned URLs only, valid this many seconds; one is printed
    /// per file.
    #[arg(long)]
    presigned_ttl: Option<u64>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let origin = match Origin::bind(args.listen).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("origin: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    origin.set_log_limit(0); // long runs: keep counters only
    let faults = Faults {
        latency: Duration::from_millis(args.latency_ms),
        rate_bytes_per_sec: args.rate,
        ..Default::default()
    };
    let entries = match std::fs::read_dir(&args.dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("origin: cannot read {}: {e}", args.dir.display());
            std::process::exit(1);
        }
    };
    let mut count = 0;
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        origin.add_disk_file(&name, path, content_type(&name));
        let mut f = faults.clone();
        f.max_open = args.max_open;
        f.busy = args
            .busy_from
            .map(|from| origin::Busy::new(from, args.busy_times, args.retry_after));
        f.presigned = args.presigned_ttl.is_some();
        origin.set_faults(&name, f);
        names.push(name);
        count += 1;
    }
    eprintln!("origin: serving {count} files from {}", args.dir.display());
    let stats_addr = match args.stats_listen {
        Some(addr) => match serve_stats(addr, origin.clone()).await {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("origin: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        },
        None => None,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", origin.addr()).unwrap();
    if let Some(a) = stats_addr {
        writeln!(out, "stats on {a}").unwrap();
    }
    if let Some(ttl) = args.presigned_ttl {
        for name in &names {
            let url = origin.presign(name, Duration::from_secs(ttl));
            writeln!(out, "presigned {name} {url}").unwrap();
        }
    }
    out.flush().unwrap();
    drop(out);
    std::future::pending::<()>().await;
}

/// Answers every GET on `addr` with the origin's counters.
async fn serve_stats(addr: SocketAddr, origin: Origin) -> std::io::Result<SocketAddr> {
    use warp::Filter;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let route = warp::get().map(move || {
        let s = origin.stats();
        warp::reply::json(&serde_json::json!({
            "requests": s.requests,
            "body_bytes": s.body_bytes,
        }))
    });
    tokio::spawn(warp::serve(route).incoming(listener).run());
    Ok(bound)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "mp4" | "m4v" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "ts" => "video/mp2t",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}
