//! Seeks from a cold cache against a slow origin (50 ms per answer, about
//! 2 MB/s per connection), with spool's default chunk size and read-ahead:
//! each command through spool must finish within 0.2 s of the same command
//! straight from the origin, measured in the same test.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::origin::{Faults, Origin};
use crate::common::Spool;
use crate::tools::{alone, long_flac, long_video, timed};

/// How much longer than direct a command may take through spool.
const SLACK: Duration = Duration::from_millis(200);
/// Rounds of (direct, through a fresh spool); the best of each counts, so a
/// load spike on the machine does not decide the result.
const ROUNDS: usize = 3;

/// The slow origin of the seek tests: 50 ms before each answer, about
/// 2 MB/s per connection.
pub fn slow() -> Faults {
    Faults {
        latency: Duration::from_millis(50),
        rate_bytes_per_sec: Some(2_000_000),
        ..Faults::default()
    }
}

/// spool's own chunk size, read-ahead and timeouts, not the fast suite's
/// small ones.
pub fn default_sizes(c: &mut spool::Config) {
    let d = spool::Config::new(&c.cache_dir);
    c.chunk_size = d.chunk_size;
    c.read_ahead = d.read_ahead;
    c.read_ahead_grace = d.read_ahead_grace;
    c.upstream_timeout = d.upstream_timeout;
    c.connect_timeout = d.connect_timeout;
}

/// Runs `program <before…> <url> <after…>` direct from the slow origin and
/// through a cold spool, `ROUNDS` times each (interleaved); fails unless
/// the best run through spool is within `SLACK` of the best direct one.
async fn within_slack_of_direct(
    media: PathBuf,
    name: &str,
    content_type: &str,
    program: &str,
    before: &[&str],
    after: &[&str],
) {
    let _alone = alone().await;
    let origin = Origin::start().await;
    origin.add_disk_file(name, media, content_type);
    origin.set_faults(name, slow());
    let direct_url = origin.url(name);
    let command = |url: &str| {
        let mut args: Vec<String> = before.iter().map(|s| s.to_string()).collect();
        args.push(url.to_owned());
        args.extend(after.iter().map(|s| s.to_string()));
        args
    };
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let args = command(&direct_url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        direct.push(timed(program, &args).await);
        // A fresh spool each round: the cache is cold every time.
        let spool = Spool::start_with(&origin, default_sizes).await;
        let args = command(&spool.url(&direct_url));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        via.push(timed(program, &args).await);
    }
    let best_direct = *direct.iter().min().unwrap();
    let best_via = *via.iter().min().unwrap();
    let what = format!("{program} {} <url> {}", before.join(" "), after.join(" "));
    eprintln!("{what}: direct {direct:.2?}, through spool {via:.2?}");
    assert!(
        best_via <= best_direct + SLACK,
        "{what}: through spool {best_via:.2?} (runs {via:.2?}), direct {best_direct:.2?} \
         (runs {direct:.2?}); allowed {SLACK:?} more than direct"
    );
}

/// ffmpeg decodes one second from `seek` seconds into the faststart MP4.
async fn ffmpeg_mp4_seek(seek: &str) {
    within_slack_of_direct(
        long_video().await,
        "long.mp4",
        "video/mp4",
        "ffmpeg",
        &["-hide_banner", "-loglevel", "error", "-ss", seek, "-i"],
        &["-t", "1", "-f", "null", "-"],
    )
    .await;
}

#[tokio::test]
async fn ffmpeg_seek_to_6s_in_mp4_as_fast_as_direct() {
    ffmpeg_mp4_seek("6").await;
}

#[tokio::test]
async fn ffmpeg_seek_to_10s_in_mp4_as_fast_as_direct() {
    ffmpeg_mp4_seek("10").await;
}

#[tokio::test]
async fn ffmpeg_seek_to_37s_in_flac_as_fast_as_direct() {
    within_slack_of_direct(
        long_flac().await,
        "long.flac",
        "audio/flac",
        "ffmpeg",
        &["-hide_banner", "-loglevel", "error", "-ss", "37", "-i"],
        &["-t", "1", "-f", "null", "-"],
    )
    .await;
}

#[tokio::test]
async fn mpv_start_at_9s_as_fast_as_direct() {
    within_slack_of_direct(
        long_video().await,
        "long.mp4",
        "video/mp4",
        "mpv",
        &[
            "--no-config",
            "--msg-level=all=error",
            "--vo=null",
            "--ao=null",
            "--start=9",
            "--length=1",
        ],
        &[],
    )
    .await;
}
