//! Running the players: media made with ffmpeg, and commands bounded in time
//! so that a hung player fails its test instead of the suite.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

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
