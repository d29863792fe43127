//! HLS and DASH streams made by ffmpeg, played through spool by ffmpeg and
//! mpv: a VOD (decoded the same as from the origin, a warm replay costing
//! the origin nothing), a live sliding window written in real time while
//! the players play, and a DASH stream from ffmpeg's dash muxer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::common::{origin::Origin, wait_for, wait_until_cached, Spool};
use crate::tools::{decoded_md5, run};

const SOURCES: [&str; 8] = [
    "-f",
    "lavfi",
    "-i",
    "testsrc2=size=320x240:rate=25",
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440",
];
const CODECS: [&str; 8] = [
    "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
];

/// Makes a stream with ffmpeg: `secs` seconds of the test sources into
/// `out` with the muxer options `muxer`.
async fn make_stream(secs: u32, muxer: &[&str], out: &Path) {
    let t = secs.to_string();
    let mut args = vec!["-hide_banner", "-loglevel", "error", "-y"];
    args.extend_from_slice(&SOURCES);
    args.extend_from_slice(&["-t", &t]);
    args.extend_from_slice(&CODECS);
    args.extend_from_slice(muxer);
    args.push(out.to_str().unwrap());
    run("ffmpeg", &args).await;
}

/// Serves every file of `dir` under `prefix/` on the origin; returns the
/// paths of the media files (not the playlists).
fn serve_dir(origin: &Origin, dir: &Path, prefix: &str) -> Vec<String> {
    let mut media = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        let ctype = match name.rsplit('.').next() {
            Some("m3u8") => "application/vnd.apple.mpegurl",
            Some("mpd") => "application/dash+xml",
            Some("ts") => "video/mp2t",
            _ => "video/mp4",
        };
        let path = format!("{prefix}/{name}");
        if !ctype.contains("mpegurl") && !ctype.contains("dash") {
            media.push(path.clone());
        }
        origin.add_disk_file(&path, e.path(), ctype);
    }
    media
}

/// mpv plays `url` for `frames` video frames without a window or sound.
async fn mpv_plays(url: &str, frames: u32) {
    let frames = format!("--frames={frames}");
    run(
        "mpv",
        &[
            "--no-config",
            "--ytdl=no",
            "--really-quiet",
            "--vo=null",
            "--ao=null",
            &frames,
            url,
        ],
    )
    .await;
}

/// Plays a VOD stream through spool with ffmpeg (cold and warm, compared
/// with the origin directly) and mpv; the warm replay costs the origin 0
/// bytes.
async fn vod_through_spool(origin: &Origin, spool: &Spool, path: &str, media: &[String]) {
    let direct_url = origin.url(path);
    let via = spool.url(&direct_url);
    let direct = decoded_md5(&direct_url, &[]).await;
    let cold = decoded_md5(&via, &[]).await;
    assert_eq!(cold, direct, "cold decode of {path} through spool");
    mpv_plays(&via, 50).await;
    for m in media {
        wait_until_cached(&spool.cache_dir, &origin.url(m)).await;
    }
    origin.reset_stats();
    let warm = decoded_md5(&via, &[]).await;
    assert_eq!(warm, direct, "warm decode of {path} through spool");
    mpv_plays(&via, 50).await;
    // Nothing the origin has is fetched again. Players probe for a
    // segment past the end of a DASH template (it does not exist: the
    // origin's 404), as they do directly; spool does not remember 404s.
    let log = origin.requests_log();
    let fetched: Vec<_> = log
        .iter()
        .filter(|r| r.status != 404)
        .map(|r| (&r.path, r.status, r.body_bytes))
        .collect();
    assert!(
        fetched.is_empty(),
        "a warm replay of {path} costs the origin nothing: {fetched:?}"
    );
    let missing: u64 = log.iter().map(|r| r.body_bytes).sum();
    assert!(missing < 100, "only short 404 answers: {missing} bytes");
}

#[tokio::test]
async fn hls_vod_plays_through_spool_and_replays_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("seg%03d.ts");
    let seg = seg.to_str().unwrap();
    make_stream(
        6,
        &[
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
            seg,
        ],
        &dir.path().join("index.m3u8"),
    )
    .await;
    let origin = Origin::start().await;
    let media = serve_dir(&origin, dir.path(), "vod");
    assert!(media.len() >= 3, "{media:?}");
    let spool = Spool::start(&origin).await;
    vod_through_spool(&origin, &spool, "vod/index.m3u8", &media).await;

    // A signed link to the playlist (what `spool sign` prints for it) on a
    // spool that requires them: the same frames.
    let secret = "a test secret that is long enough";
    let signed = Spool::start_with(&origin, |c| c.signing.secret = Some(secret.into())).await;
    let key = spool::signing::Key::from_secret(secret.as_bytes()).unwrap();
    let upstream = format!("http://localhost:{}/vod/index.m3u8", origin.addr().port());
    let link = spool::signing::link_scoped(
        &signed.base(),
        &key,
        &url::Url::parse(&upstream).unwrap(),
        spool::signing::Expiry(None),
        spool::signing::Scope::Dir,
    )
    .unwrap();
    assert_eq!(
        decoded_md5(&link, &[]).await,
        decoded_md5(&origin.url("vod/index.m3u8"), &[]).await,
        "decode of a signed link"
    );
    mpv_plays(&link, 50).await;
}

#[tokio::test]
async fn dash_plays_through_spool_and_replays_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    make_stream(
        6,
        &["-f", "dash", "-seg_duration", "2", "-use_timeline", "0"],
        &dir.path().join("manifest.mpd"),
    )
    .await;
    let origin = Origin::start().await;
    let media = serve_dir(&origin, dir.path(), "dash");
    assert!(media.len() >= 4, "{media:?}");
    let spool = Spool::start(&origin).await;
    vod_through_spool(&origin, &spool, "dash/manifest.mpd", &media).await;
}

/// Mirrors a live HLS stream ffmpeg writes into `dir` onto the origin:
/// each new playlist is served once the segments it lists are.
async fn mirror_live(origin: Origin, dir: PathBuf) {
    let mut served = BTreeSet::new();
    let mut last = Bytes::new();
    loop {
        if let Ok(body) = std::fs::read(dir.join("live.m3u8")) {
            let body = Bytes::from(body);
            if body != last {
                for line in String::from_utf8_lossy(&body).lines() {
                    if !line.starts_with('#') && !line.is_empty() && served.insert(line.to_owned())
                    {
                        origin.add_disk_file(&format!("live/{line}"), dir.join(line), "video/mp2t");
                    }
                }
                origin.add_file(
                    "live/live.m3u8",
                    body.clone(),
                    "application/vnd.apple.mpegurl",
                );
                last = body;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_live_sliding_window_plays_through_spool() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("live%03d.ts");
    let playlist = dir.path().join("live.m3u8");
    // Written in real time for longer than the players play.
    let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-y", "-re"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(SOURCES.iter().map(|s| s.to_string()));
    args.extend(["-t", "60"].iter().map(|s| s.to_string()));
    args.extend(CODECS.iter().map(|s| s.to_string()));
    args.extend(
        [
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "4",
            "-hls_flags",
            "delete_segments",
            "-hls_segment_filename",
            seg.to_str().unwrap(),
            playlist.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut writer = tokio::process::Command::new("ffmpeg")
        .args(&args)
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg (scripts/test-players installs it)");
    let origin = Origin::start().await;
    let mirror = tokio::spawn(mirror_live(origin.clone(), dir.path().to_owned()));
    wait_for("the live playlist to list 3 segments", || async {
        std::fs::read_to_string(&playlist)
            .map(|p| p.matches("#EXTINF").count() >= 3)
            .unwrap_or(false)
    })
    .await;
    let spool = Spool::start(&origin).await;
    let via = spool.url(&origin.url("live/live.m3u8"));
    // ffmpeg decodes 4 s of the live edge; the window slides meanwhile.
    run(
        "ffmpeg",
        &[
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            &via,
            "-t",
            "4",
            "-f",
            "null",
            "-",
        ],
    )
    .await;
    mpv_plays(&via, 100).await;
    assert!(
        writer.try_wait().unwrap().is_none(),
        "the stream was still live while the players played"
    );
    // Many playlist reloads, each a fresh window: segments of the later
    // windows were fetched through spool.
    let log = origin.requests_log();
    let segments: BTreeSet<_> = log
        .iter()
        .filter(|r| r.path.ends_with(".ts"))
        .map(|r| r.path.clone())
        .collect();
    assert!(segments.len() >= 6, "{segments:?}");
    mirror.abort();
    let _ = writer.kill().await;
}
