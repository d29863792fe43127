//! Running the players: media made with ffmpeg (files, HLS and DASH
//! streams, a live HLS window), and commands bounded in time so that a hung
//! player fails its test instead of the suite.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use bytes::Bytes;

use crate::common::{origin::Origin, wait_for};

/// A player may take this long before its test fails.
pub const PLAYER_LIMIT: Duration = Duration::from_secs(120);

/// Runs a command to its end (killed after `PLAYER_LIMIT`), returning its
/// output; panics with its stderr when it cannot run or fails.
pub async fn run(program: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(PLAYER_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not end within {PLAYER_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/test-players installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Makes a test video with ffmpeg's generated sources: `secs` seconds of a
/// moving test pattern with a tone, keyframe every second. `extra` goes
/// before the output name (e.g. `-movflags +faststart`).
pub async fn make_video(dir: &Path, name: &str, secs: u32, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let t = secs.to_string();
    let src = format!("testsrc2=size=640x360:rate=25:duration={t}");
    let tone = format!("sine=frequency=440:duration={t}");
    let mut args = vec![
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &src,
        "-f",
        "lavfi",
        "-i",
        &tone,
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
    ];
    args.extend_from_slice(extra);
    let path = out.to_str().unwrap().to_string();
    args.push(&path);
    run("ffmpeg", &args).await;
    out
}

/// The MD5 of every decoded frame (video and audio) of `input`, as ffmpeg's
/// `md5` muxer prints it: equal when two inputs decode identically.
pub async fn decoded_md5(input: &str, before_input: &[&str]) -> String {
    let mut args = vec!["-hide_banner", "-loglevel", "error"];
    args.extend_from_slice(before_input);
    args.extend_from_slice(&["-i", input, "-f", "md5", "-"]);
    let out = run("ffmpeg", &args).await;
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The build's target directory (`CARGO_TARGET_DIR`, else `target/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Where the suite leaves what helps after a run: screenshots and
/// browser logs, in `target/players-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let dir = target_dir().join("players-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// hls.js and dash.js as `scripts/test-players` fetches them (pinned
/// versions; keep these names in step with it).
pub const HLS_JS: &str = "hls-1.7.4.min.js";
pub const DASH_JS: &str = "dash-5.2.1.all.min.js";

/// A web player's file in `target/players-web/`; panics when it is
/// missing (`scripts/test-players` fetches it).
pub fn web_player(name: &str) -> PathBuf {
    let path = target_dir().join("players-web").join(name);
    assert!(
        path.is_file(),
        "{} is missing: scripts/test-players fetches it from the npm registry",
        path.display()
    );
    path
}

/// One media file made at a time (tests run in parallel and share them).
static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A file made once by `ffmpeg <args> <file>` and kept between runs in
/// `target/players-media/`; its name carries a checksum of `args`, so
/// changed arguments make a new file.
async fn kept_media(stem: &str, ext: &str, args: &[&str]) -> PathBuf {
    let _one = MAKING.lock().await;
    let dir = target_dir().join("players-media");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let sum = crc32c::crc32c(args.join(" ").as_bytes());
    let path = dir.join(format!("{stem}-{sum:08x}.{ext}"));
    if path.exists() {
        return path;
    }
    // Made under another name and renamed: an interrupted run leaves no
    // half file under the kept name.
    let part = dir.join(format!("part-{stem}-{sum:08x}.{ext}"));
    let part_str = part.to_str().unwrap().to_owned();
    let mut all = vec!["-hide_banner", "-loglevel", "error", "-y"];
    all.extend_from_slice(args);
    all.push(&part_str);
    run("ffmpeg", &all).await;
    std::fs::rename(&part, &path).unwrap();
    path
}

/// A 60 s 640x360 H.264/AAC MP4 with its index first (faststart) and a
/// keyframe every second, at a constant 4 Mbit/s (about 31 MB: a seek to
/// 40 s lands about 20 MB in).
pub async fn long_video() -> PathBuf {
    kept_media("long-cbr4m-faststart", "mp4", &long_video_args(true)).await
}

/// [`long_video`] with its index (`moov`) after the media data, as
/// ffmpeg writes an MP4 by default.
pub async fn long_video_moov_at_end() -> PathBuf {
    kept_media("long-cbr4m-moov-at-end", "mp4", &long_video_args(false)).await
}

fn long_video_args(faststart: bool) -> Vec<&'static str> {
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25:duration=60",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=60",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-b:v",
        "4M",
        "-minrate",
        "4M",
        "-maxrate",
        "4M",
        "-bufsize",
        "4M",
        // Filler data keeps the rate constant however simple the picture.
        "-x264-params",
        "nal-hrd=cbr",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
    ];
    if faststart {
        args.extend(["-movflags", "+faststart"]);
    }
    args
}

/// A 60 s 640x360 VP8/Opus WebM at about 2 Mbit/s (about 15 MB), a
/// keyframe every second, its Cues after the clusters (as ffmpeg writes
/// them by default).
pub async fn long_webm() -> PathBuf {
    kept_media(
        "long-vp8-2m",
        "webm",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25:duration=60",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=60",
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "2M",
            "-minrate",
            "2M",
            "-maxrate",
            "2M",
            "-g",
            "25",
            "-c:a",
            "libopus",
            "-b:a",
            "96k",
        ],
    )
    .await
}

/// A 60 s stereo 44.1 kHz FLAC of pink noise (noise barely compresses:
/// about 10 MB, so a seek to 37 s lands about 6 MB in).
pub async fn long_flac() -> PathBuf {
    kept_media(
        "long-noise",
        "flac",
        &[
            "-f",
            "lavfi",
            "-i",
            "anoisesrc=duration=60:color=pink:sample_rate=44100:amplitude=0.5",
            "-ac",
            "2",
            "-sample_fmt",
            "s16",
            "-c:a",
            "flac",
        ],
    )
    .await
}

/// Runs a command to its end like [`run`]; how long it took.
pub async fn timed(program: &str, args: &[&str]) -> Duration {
    let t0 = std::time::Instant::now();
    run(program, args).await;
    t0.elapsed()
}

/// Held by the tests that measure time, so that they do not run at the
/// same time as each other.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the other timing tests to finish; keep the guard while
/// measuring.
pub async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    TIMING.lock().await
}

/// The test sources of the HLS and DASH streams: a moving pattern with a
/// tone.
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
/// H.264 with a keyframe every second (segments cut on whole seconds) and
/// AAC.
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

/// An HLS VOD of `secs` seconds in `dir`: `index.m3u8` and 2 s MPEG-TS
/// segments `seg000.ts`, ...
pub async fn make_hls_vod(dir: &Path, secs: u32) {
    let seg = dir.join("seg%03d.ts");
    make_stream(
        secs,
        &[
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
            seg.to_str().unwrap(),
        ],
        &dir.join("index.m3u8"),
    )
    .await;
}

/// An HLS VOD of `secs` seconds in `dir` whose segments are byte ranges
/// of one file: `index.m3u8` (`#EXT-X-BYTERANGE`) and `all.ts`.
pub async fn make_hls_byte_ranges(dir: &Path, secs: u32) {
    let seg = dir.join("all.ts");
    make_stream(
        secs,
        &[
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
            "-hls_flags",
            "single_file",
            "-hls_segment_filename",
            seg.to_str().unwrap(),
        ],
        &dir.join("index.m3u8"),
    )
    .await;
}

/// A DASH stream of `secs` seconds in `dir` with one file per stream
/// (ffmpeg's `-single_file`): `manifest.mpd` addresses its segments as
/// byte ranges of that file.
pub async fn make_dash_single_file(dir: &Path, secs: u32) {
    make_stream(
        secs,
        &["-f", "dash", "-seg_duration", "2", "-single_file", "1"],
        &dir.join("manifest.mpd"),
    )
    .await;
}

/// A DASH stream of `secs` seconds in `dir` from ffmpeg's dash muxer:
/// `manifest.mpd` (a numbered `SegmentTemplate`), init and 2 s fMP4
/// segments per stream.
pub async fn make_dash(dir: &Path, secs: u32) {
    make_stream(
        secs,
        &["-f", "dash", "-seg_duration", "2", "-use_timeline", "0"],
        &dir.join("manifest.mpd"),
    )
    .await;
}

/// Serves every file of `dir` under `prefix/` on the origin; returns the
/// paths of the media files (not the playlists).
pub fn serve_dir(origin: &Origin, dir: &Path, prefix: &str) -> Vec<String> {
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

/// A live HLS sliding window ffmpeg writes in real time (1 s segments, 4
/// in the playlist, older ones deleted), served by the origin as
/// `live/live.m3u8`. Ended (writer killed) when dropped.
pub struct LiveHls {
    writer: tokio::process::Child,
    mirror: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl LiveHls {
    /// The origin path of the live playlist.
    pub const PLAYLIST: &'static str = "live/live.m3u8";

    /// Starts writing `secs` seconds of stream (longer than the players
    /// play); returns once the playlist lists 3 segments.
    pub async fn start(origin: &Origin, secs: u32) -> LiveHls {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("live%03d.ts");
        let playlist = dir.path().join("live.m3u8");
        let t = secs.to_string();
        let mut args = vec!["-hide_banner", "-loglevel", "error", "-y", "-re"];
        args.extend_from_slice(&SOURCES);
        args.extend_from_slice(&["-t", &t]);
        args.extend_from_slice(&CODECS);
        args.extend_from_slice(&[
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
        ]);
        let writer = tokio::process::Command::new("ffmpeg")
            .args(&args)
            .kill_on_drop(true)
            .spawn()
            .expect("ffmpeg (scripts/test-players installs it)");
        let mirror = tokio::spawn(mirror_live(origin.clone(), dir.path().to_owned()));
        wait_for("the live playlist to list 3 segments", || async {
            std::fs::read_to_string(&playlist)
                .map(|p| p.matches("#EXTINF").count() >= 3)
                .unwrap_or(false)
        })
        .await;
        LiveHls {
            writer,
            mirror,
            _dir: dir,
        }
    }

    /// Whether ffmpeg is still writing the stream.
    pub fn still_live(&mut self) -> bool {
        self.writer.try_wait().unwrap().is_none()
    }
}

impl Drop for LiveHls {
    fn drop(&mut self) {
        self.mirror.abort();
        let _ = self.writer.start_kill();
    }
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
                    LiveHls::PLAYLIST,
                    body.clone(),
                    "application/vnd.apple.mpegurl",
                );
                last = body;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
