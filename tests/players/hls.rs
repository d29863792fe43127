//! HLS and DASH streams made by ffmpeg, played through spool by ffmpeg and
//! mpv: a VOD (decoded the same as from the origin, a warm replay costing
//! the origin nothing), a live sliding window written in real time while
//! the players play, and a DASH stream from ffmpeg's dash muxer.

use std::collections::BTreeSet;

use crate::common::{origin::Origin, wait_until_cached, Spool};
use crate::tools::{decoded_md5, make_dash, make_hls_vod, run, serve_dir, LiveHls};

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
    make_hls_vod(dir.path(), 6).await;
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
    make_dash(dir.path(), 6).await;
    let origin = Origin::start().await;
    let media = serve_dir(&origin, dir.path(), "dash");
    assert!(media.len() >= 4, "{media:?}");
    let spool = Spool::start(&origin).await;
    vod_through_spool(&origin, &spool, "dash/manifest.mpd", &media).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_live_sliding_window_plays_through_spool() {
    let origin = Origin::start().await;
    // Written in real time for longer than the players play.
    let mut live = LiveHls::start(&origin, 60).await;
    let spool = Spool::start(&origin).await;
    let via = spool.url(&origin.url(LiveHls::PLAYLIST));
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
        live.still_live(),
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
}

/// Offline replay: an HLS VOD and a DASH title played once through spool
/// play again after spool restarts on its cache with the origin answering
/// nothing but 503: the playlist or manifest comes from the index, the
/// segments from the chunk cache, and ffmpeg decodes the same frames as
/// from the origin directly.
#[tokio::test]
async fn vod_titles_replay_offline_after_a_restart() {
    for (kind, playlist) in [("vod", "index.m3u8"), ("dash", "manifest.mpd")] {
        let dir = tempfile::tempdir().unwrap();
        match kind {
            "vod" => make_hls_vod(dir.path(), 6).await,
            _ => make_dash(dir.path(), 6).await,
        }
        let origin = Origin::start().await;
        let media = serve_dir(&origin, dir.path(), kind);
        let path = format!("{kind}/{playlist}");
        let direct = decoded_md5(&origin.url(&path), &[]).await;
        let spool = Spool::start(&origin).await;
        let via = spool.url(&origin.url(&path));
        assert_eq!(decoded_md5(&via, &[]).await, direct, "{path} through spool");
        for m in &media {
            wait_until_cached(&spool.cache_dir, &origin.url(m)).await;
        }
        let (cache_dir, _keep) = spool.stop().await;
        // The origin is down: every file answers 503.
        let down = crate::common::origin::Faults {
            status: Some(503),
            ..Default::default()
        };
        for name in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = name.file_name().into_string().unwrap();
            origin.set_faults(&format!("{kind}/{name}"), down.clone());
        }
        let (status, _, _) =
            crate::common::get(&crate::common::client(), &origin.url(&path), None).await;
        assert_eq!(status, 503, "the origin is down");
        let spool = Spool::start_cfg(crate::common::test_config(&cache_dir, &origin)).await;
        let via = spool.url(&origin.url(&path));
        assert_eq!(
            decoded_md5(&via, &[]).await,
            direct,
            "{path} replayed offline after a restart"
        );
        mpv_plays(&via, 50).await;
    }
}

/// `spool prefetch` (the real command) of a master playlist warms its
/// best variant whole and nothing of the other; after a restart with the
/// origin down, ffmpeg plays that variant from the cache, decoding the
/// same frames as from the origin directly.
// Multi-threaded: the command runs as a blocking child process while the
// server in this process answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetched_master_plays_its_chosen_variant_offline() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let mut media = Vec::new();
    for v in ["lo", "hi"] {
        let d = dir.path().join(v);
        std::fs::create_dir(&d).unwrap();
        make_hls_vod(&d, 6).await;
        media.push(serve_dir(&origin, &d, &format!("t/{v}")));
    }
    origin.add_file(
        "t/master.m3u8",
        bytes::Bytes::from_static(
            b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=500000\nlo/index.m3u8\n\
              #EXT-X-STREAM-INF:BANDWIDTH=2000000\nhi/index.m3u8\n",
        ),
        "application/vnd.apple.mpegurl",
    );
    let direct = decoded_md5(&origin.url("t/hi/index.m3u8"), &[]).await;
    let spool = Spool::start(&origin).await;
    let admin = spool.admin().trim_start_matches("http://").to_owned();
    let master = origin.url("t/master.m3u8");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
            .args(["prefetch", &master, "--admin-listen", &admin])
            .env_remove("SPOOL_ADMIN_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let segments = media[1].len();
    assert!(
        stdout.contains(&format!(": done, {segments} of {segments} files,")),
        "{stdout}"
    );
    for m in &media[1] {
        assert!(
            crate::common::cached_whole(&spool.cache_dir, &origin.url(m)),
            "{m}"
        );
    }
    for m in &media[0] {
        assert!(
            !crate::common::cached_whole(&spool.cache_dir, &origin.url(m)),
            "{m} is not the best variant's"
        );
    }
    let (cache_dir, _keep) = spool.stop().await;
    let down = crate::common::origin::Faults {
        status: Some(503),
        ..Default::default()
    };
    for m in media.iter().flatten().chain(
        [
            "t/master.m3u8".to_owned(),
            "t/hi/index.m3u8".to_owned(),
            "t/lo/index.m3u8".to_owned(),
        ]
        .iter(),
    ) {
        origin.set_faults(m, down.clone());
    }
    let spool = Spool::start_cfg(crate::common::test_config(&cache_dir, &origin)).await;
    let via = spool.url(&origin.url("t/hi/index.m3u8"));
    assert_eq!(
        decoded_md5(&via, &[]).await,
        direct,
        "the prefetched variant, offline"
    );
}

/// No byte fetched twice: ffmpeg plays an HLS VOD made of byte ranges of
/// one file, and a DASH stream with one file per stream, through spool;
/// the origin sends at most the files' sizes (each range of a file is a
/// range of one cached media).
#[tokio::test]
async fn single_file_streams_cost_at_most_their_size() {
    for (kind, playlist) in [("br", "index.m3u8"), ("sf", "manifest.mpd")] {
        let dir = tempfile::tempdir().unwrap();
        match kind {
            "br" => crate::tools::make_hls_byte_ranges(dir.path(), 12).await,
            _ => crate::tools::make_dash_single_file(dir.path(), 12).await,
        }
        let origin = Origin::start().await;
        let media = serve_dir(&origin, dir.path(), kind);
        let size: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                media
                    .iter()
                    .any(|m| m.ends_with(&*e.file_name().to_string_lossy()))
            })
            .map(|e| e.metadata().unwrap().len())
            .sum();
        let path = format!("{kind}/{playlist}");
        let direct = decoded_md5(&origin.url(&path), &[]).await;
        origin.reset_stats();
        let spool = Spool::start(&origin).await;
        assert_eq!(
            decoded_md5(&spool.url(&origin.url(&path)), &[]).await,
            direct,
            "{path}"
        );
        crate::common::wait_idle(&spool).await;
        let sent: u64 = media.iter().map(|m| origin.path_stats(m).body_bytes).sum();
        eprintln!(
            "{path}: {} media file(s) of {size} bytes; the origin sent {sent}",
            media.len()
        );
        let asked: Vec<_> = origin
            .requests_log()
            .into_iter()
            .map(|r| (r.path, r.range, r.body_bytes))
            .collect();
        assert!(
            sent <= size,
            "{path}: {sent} bytes sent for {size} bytes of media: {asked:?}"
        );
    }
}
