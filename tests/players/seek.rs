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

/// Warm means warm: on a file cached whole, `ffmpeg -ss` and `mpv
/// --start` (seeking players that read a head, an index and a stretch
/// from the middle) cost the origin nothing, with spool's default chunk
/// size and read-ahead.
#[tokio::test]
async fn warm_seeks_on_a_cached_file_cost_the_origin_nothing() {
    let _alone = alone().await;
    let origin = Origin::start().await;
    origin.add_disk_file("long.mp4", long_video().await, "video/mp4");
    let spool = Spool::start_with(&origin, default_sizes).await;
    let url = spool.url(&origin.url("long.mp4"));
    let (_, _, whole) = crate::common::get(&crate::common::client(), &url, None).await;
    assert_eq!(
        whole.len() as u64,
        std::fs::metadata(long_video().await).unwrap().len()
    );
    crate::common::wait_until_cached(&spool.cache_dir, &origin.url("long.mp4")).await;
    crate::common::wait_idle(&spool).await;
    // ffmpeg seeking to `at` and decoding what `limit` says.
    let ffmpeg = |at: &'static str, limit: [&'static str; 2]| {
        let mut args = vec!["-hide_banner", "-loglevel", "error", "-ss", at, "-i", &url];
        args.extend(limit);
        args.extend(["-f", "null", "-"]);
        ("ffmpeg", args)
    };
    let commands = [
        ffmpeg("6", ["-t", "1"]),
        ffmpeg("10", ["-frames:v", "1"]),
        (
            "mpv",
            vec![
                "--no-config",
                "--msg-level=all=error",
                "--vo=null",
                "--ao=null",
                "--start=9",
                "--length=1",
                &url,
            ],
        ),
    ];
    for (program, args) in commands {
        origin.reset_stats();
        let out = crate::tools::run(program, &args).await;
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
        crate::common::wait_idle(&spool).await;
        let stats = origin.stats();
        assert_eq!(
            (stats.requests, stats.body_bytes),
            (0, 0),
            "{program} {args:?} on a cached file asked the origin"
        );
    }
}

/// A prefetch of an MP4 whose index (`moov`) sits at its end fetches each
/// byte once: the origin sends at most the file's size. (The index is
/// fetched first, in the last chunk; the run reading up to it must not
/// ask for that chunk again ahead of time: it once did, +17% here.)
#[tokio::test]
async fn a_prefetch_of_a_moov_at_end_mp4_costs_at_most_its_size() {
    let _alone = alone().await;
    let dir = tempfile::tempdir().unwrap();
    let path = crate::tools::make_video(
        dir.path(),
        "tail.mp4",
        20,
        &["-c:v", "libx264", "-preset", "veryfast", "-b:v", "2M"],
    )
    .await;
    let size = std::fs::metadata(&path).unwrap().len();
    let origin = Origin::start().await;
    origin.add_disk_file("tail.mp4", path, "video/mp4");
    let spool = Spool::start_with(&origin, default_sizes).await;
    let c = crate::common::client();
    let api = |p: &str| format!("{}{p}", spool.admin());
    let body = serde_json::json!({ "url": origin.url("tail.mp4") }).to_string();
    let answer = c
        .post(api("/api/prefetch"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let job: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    let job = job["job"].as_u64().unwrap_or_else(|| panic!("{job}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let state = loop {
        let answer = c
            .get(api(&format!("/api/prefetch/{job}")))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
        if v["state"] != "running" && v["state"] != "starting" {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "no end: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(state["state"], "done", "{state}");
    crate::common::wait_idle(&spool).await;
    let sent = origin.stats().body_bytes;
    let log: Vec<String> = origin
        .requests_log()
        .iter()
        .map(|r| format!("{:?} {}", r.range, r.body_bytes))
        .collect();
    assert!(
        sent <= size,
        "the origin sent {sent} bytes for a {size}-byte file: {log:#?}"
    );
}
