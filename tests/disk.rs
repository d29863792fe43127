//! A cache that cannot be written never stops a stream: a real full
//! filesystem (tmpfs), a read-only remount, a directory the user may not
//! write, injected faults, and chunk files vanishing under a stream.
//!
//! The tmpfs tests mount filesystems and need root (CI runs as root).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::origin::{Faults, Origin};
use common::tmpfs::Tmpfs;
use common::{
    client, data, get, metric, temp_files, wait_for, wait_for_metric, wait_until_cached, ChildLog,
    KillOnDrop, Spool,
};
use spool::testing::{Fault, WriteStage};

const CHUNK: usize = 64 * 1024;
const MIB: u64 = 1024 * 1024;

fn run(cmd: &str, args: &[&str], path: &Path) {
    let status = Command::new(cmd).args(args).arg(path).status().unwrap();
    assert!(status.success(), "{cmd} {args:?} {path:?}");
}

async fn read_all_concurrently(url: &str, players: usize, body: &bytes::Bytes) {
    let c = client();
    let tasks: Vec<_> = (0..players)
        .map(|i| {
            let (c, url) = (c.clone(), url.to_owned());
            // Players start at different places, like viewers of one file.
            let start = i * body.len() / (players * 3);
            tokio::spawn(
                async move { (start, get(&c, &url, Some(&format!("bytes={start}-"))).await) },
            )
        })
        .collect();
    for t in tasks {
        let (start, (status, _, got)) = t.await.unwrap();
        assert_eq!(status, 206);
        assert!(
            got == body.slice(start..),
            "a player got wrong bytes (from {start})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_stops_a_stream() {
    let fs = Tmpfs::mount(24);
    let origin = Origin::start().await;
    // Three times the filesystem's size.
    let body = data(72 * MIB as usize, 71);
    origin.add_file("big", body.clone(), "video/mp4");
    origin.set_faults("big", Faults::throttled(64 * MIB));
    let cache = fs.path().join("cache");
    let spool = Spool::start_cfg({
        let mut cfg = common::test_config(&cache, &origin);
        cfg.cleanup_headroom = 2 * MIB;
        cfg.memory_cache = 8 * MIB;
        cfg
    })
    .await;
    // Someone else's file leaves 6 MiB free.
    fs.ballast(6 * MIB);
    // spool's view of the tmpfs is df's.
    let out = Command::new("df")
        .args(["-B1", "--output=size,avail"])
        .arg(&cache)
        .output()
        .unwrap();
    let df: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let ours = spool::disk::space(&cache).unwrap();
    assert_eq!((ours.total_bytes, ours.free_bytes), (df[0], df[1]));
    let url = spool.url(&origin.url("big"));
    read_all_concurrently(&url, 4, &body).await;

    let full = metric(
        &spool,
        "spool_cache_write_errors_total{class=\"DISK_FULL\"}",
    )
    .await;
    let cleanups = metric(&spool, "spool_evicted_chunks_total").await;
    assert!(full > 0.0, "the filesystem filled up: DISK_FULL counted");
    assert!(cleanups > 0.0, "cleanup evicted chunks");
    assert!(metric(&spool, "spool_chunks_written_total").await > 0.0);
    // Writes still under way have theirs; one that failed must not leave
    // its temp file behind.
    wait_for("no temp file left in the cache", || async {
        temp_files(&cache).is_empty()
    })
    .await;

    // The cache still verifies: rows only for complete files. Stopping
    // spool waits for the chunk writes under way and ends the cleanups, so
    // the scan sees the cache at rest.
    let server = spool.server.clone();
    spool.stop().await;
    let report = server
        .scan(spool::testing::ScanOptions {
            checksums: true,
            since: None,
            rate: None,
        })
        .await;
    let bad = report.count(|p| !matches!(p, spool::testing::Problem::Orphan(_)));
    assert_eq!(bad, 0, "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_pauses_on_a_disk_someone_else_filled_and_resumes() {
    let fs = Tmpfs::mount(32);
    let origin = Origin::start().await;
    let body = data(8 * MIB as usize, 73);
    origin.add_file("a", body.clone(), "video/mp4");
    origin.add_file("b", body.clone(), "video/mp4");
    let cache = fs.path().join("cache");
    let spool = Spool::start_cfg({
        let mut cfg = common::test_config(&cache, &origin);
        cfg.free_space.min_free_bytes = 4 * MIB;
        cfg.cleanup_headroom = MIB;
        cfg.memory_cache = 2 * MIB;
        cfg
    })
    .await;
    let ballast = fs.ballast(2 * MIB);
    // The monitor sees Critical, cleanup finds nothing of spool's to remove.
    wait_for("caching paused: disk full", || async {
        ready_json(&spool).await["caching"] == "paused: disk full"
    })
    .await;
    let state = ready_json(&spool).await;
    assert_eq!(state["disk"]["level"], "critical", "{state}");
    assert_eq!(state["caching"], "paused: disk full", "{state}");

    let written_before = metric(&spool, "spool_chunks_written_total").await;
    let kept_before = metric(&spool, "spool_chunks_kept_in_memory_total").await;
    read_all_concurrently(&spool.url(&origin.url("a")), 3, &body).await;
    // Each of a's 128 chunks has been through the writer.
    wait_for_chunks_dealt_with(&spool, written_before + kept_before + 128.0).await;
    assert_eq!(
        metric(&spool, "spool_chunks_written_total").await,
        written_before,
        "nothing written while paused"
    );
    assert!(metric(&spool, "spool_caching_paused").await == 1.0);

    // Space comes back: caching resumes by itself.
    std::fs::remove_file(ballast).unwrap();
    wait_for("caching to resume", || async {
        ready_json(&spool).await["caching"] == "writing"
    })
    .await;
    // What a's streams kept in memory (2 MiB of its 64 KiB chunks) goes to
    // disk by itself, with no read of a and no request for it.
    let a_requests = origin.path_stats("a").requests;
    wait_for("a's chunks kept in memory to be written", || async {
        common::cached_chunks(&cache, &origin.url("a")).len() >= 16
    })
    .await;
    assert_eq!(origin.path_stats("a").requests, a_requests);
    read_all_concurrently(&spool.url(&origin.url("a")), 1, &body).await;
    read_all_concurrently(&spool.url(&origin.url("b")), 2, &body).await;
    wait_for("chunks of b to be written", || async {
        metric(&spool, "spool_chunks_written_total").await > written_before
    })
    .await;
}

/// Waits until `n` complete chunks were either written to the cache or kept
/// in memory (a write that failed or was refused): no chunk write of them
/// is under way any more.
async fn wait_for_chunks_dealt_with(spool: &Spool, n: f64) {
    wait_for(&format!("{n} chunks written or kept in memory"), || async {
        metric(spool, "spool_chunks_written_total").await
            + metric(spool, "spool_chunks_kept_in_memory_total").await
            >= n
    })
    .await;
}

async fn ready_json(spool: &Spool) -> serde_json::Value {
    let (_, _, body) = get(&client(), &format!("{}/health/ready", spool.admin()), None).await;
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_cache_is_permission_denied_and_streams_go_on() {
    // The chunk directory is its own filesystem (the index, open for
    // writing, would keep a remount from going read-only).
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(cache.join("chunks")).unwrap();
    let fs = Tmpfs::mount_at(cache.join("chunks"), 32);
    let origin = Origin::start().await;
    let files: Vec<bytes::Bytes> = (0..3).map(|i| data(2 * MIB as usize, 80 + i)).collect();
    for (i, f) in files.iter().enumerate() {
        origin.add_file(&format!("f{i}"), f.clone(), "video/mp4");
    }
    let spool = Spool::start_cfg(common::test_config(&cache, &origin)).await;
    let c = client();
    let (_, _, got) = get(&c, &spool.url(&origin.url("f0")), None).await;
    assert!(got == files[0]);
    // A chunk file still being written would make the remount fail.
    wait_until_cached(&cache, &origin.url("f0")).await;

    fs.remount("ro");
    read_all_concurrently(&spool.url(&origin.url("f1")), 3, &files[1]).await;
    // Every chunk of f0 and f1 (32 each) has been written or kept in
    // memory: no write (nor a probe that lets one through) is under way.
    wait_for_chunks_dealt_with(&spool, 64.0).await;
    assert!(
        metric(
            &spool,
            "spool_cache_write_errors_total{class=\"PERMISSION_DENIED\"}"
        )
        .await
            > 0.0
    );
    assert!(ready_json(&spool).await["caching"]
        .as_str()
        .unwrap()
        .starts_with("paused"));
    // What was cached before is still served from the read-only disk.
    origin.reset_stats();
    let (_, _, got) = get(&c, &spool.url(&origin.url("f0")), None).await;
    assert!(got == files[0]);
    assert_eq!(origin.stats().requests, 0);

    fs.remount("rw");
    // After the cool-down a probe write finds the disk writable again.
    // Not synchronisation: the breaker's cool-down (300 ms in the test
    // settings) is time that must pass; until then no write is tried.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = metric(&spool, "spool_chunks_written_total").await;
    let (_, _, got) = get(&c, &spool.url(&origin.url("f2")), None).await;
    assert!(got == files[2]);
    wait_for("caching to resume (chunks of f2 written)", || async {
        metric(&spool, "spool_chunks_written_total").await > written
    })
    .await;
    assert_eq!(ready_json(&spool).await["caching"], "writing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_dir_the_user_may_not_write_is_permission_denied() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "needs root to switch to an unprivileged user (CI runs as root)"
    );
    let origin = Origin::start().await;
    let body = data(2 * MIB as usize, 90);
    origin.add_file("p", body.clone(), "video/mp4");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(cache.join("chunks")).unwrap();
    run("chmod", &["0777"], tmp.path());
    run("chown", &["-R", "nobody:nogroup"], &cache);
    // The index is writable, the chunk directory is not.
    run("chmod", &["0555"], &cache.join("chunks"));
    let log = ChildLog::new();
    let child = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_spool"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--chunk-size",
            "64KiB",
            "--min-free-bytes",
            "0",
            "--min-free-percent",
            "0",
        ])
        .arg("--cache-dir")
        .arg(&cache)
        .args(["--allow-upstream", "127.0.0.1"])
        .env("SPOOL_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log.stdio())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let addr = log.listen_addr(&mut child.0).await;
    let admin = log.admin_addr(&mut child.0).await;
    let c = client();
    let enc: String = url::form_urlencoded::byte_serialize(origin.url("p").as_bytes()).collect();
    let url = format!("http://{addr}/stream?url={enc}");
    for _ in 0..2 {
        let (status, _, got) = get(&c, &url, None).await;
        assert_eq!(status, 200);
        assert!(got == body);
    }
    // The failed writes are counted as they happen, after the chunks were
    // streamed.
    wait_for("a PERMISSION_DENIED write error in the metrics", || async {
        let (_, _, m) = get(&c, &format!("http://{admin}/metrics"), None).await;
        String::from_utf8_lossy(&m).lines().any(|l| {
            l.strip_prefix("spool_cache_write_errors_total{class=\"PERMISSION_DENIED\"} ")
                .is_some_and(|v| v.parse::<f64>().unwrap() > 0.0)
        })
    })
    .await;
}

/// The index reporting a full disk (SQLITE_FULL) when a new media is
/// recorded stops caching for it: that names DISK_FULL in the metrics,
/// once, and the stream goes on.
#[tokio::test]
async fn a_full_index_when_recording_a_media_names_disk_full() {
    let origin = Origin::start().await;
    let spool = Spool::start(&origin).await;
    let body = data(3 * CHUNK + 5, 77);
    origin.add_file("m", body.clone(), "video/mp4");
    let disk_full = "spool_cache_write_errors_total{class=\"DISK_FULL\"}";
    assert_eq!(metric(&spool, disk_full).await, 0.0);
    spool.server.inject(Fault {
        stage: WriteStage::MediaRow,
        errno: 28, // ENOSPC, as SQLite reports a full disk
        times: 1,
        after_bytes: 0,
    });
    let (status, _, got) = get(&client(), &spool.url(&origin.url("m")), None).await;
    assert_eq!(status, 200);
    assert!(got == body, "wrong bytes");
    assert_eq!(metric(&spool, disk_full).await, 1.0);
}

/// A disk below the critical threshold stops caching before any write is
/// attempted; that names DISK_FULL in the metrics, once for the episode,
/// and streams go on.
#[tokio::test]
async fn a_disk_below_the_threshold_names_disk_full_once() {
    let origin = Origin::start().await;
    // Every filesystem is below 100% free: always critical.
    let spool = Spool::start_with(&origin, |c| c.free_space.min_free_percent = 100.0).await;
    let body = data(3 * CHUNK + 5, 78);
    origin.add_file("m", body.clone(), "video/mp4");
    for _ in 0..2 {
        let (status, _, got) = get(&client(), &spool.url(&origin.url("m")), None).await;
        assert_eq!(status, 200);
        assert!(got == body, "wrong bytes");
    }
    let disk_full = "spool_cache_write_errors_total{class=\"DISK_FULL\"}";
    assert_eq!(metric(&spool, disk_full).await, 1.0);
    assert!(!spool.server.is_caching());
}

/// Injected faults: what a real filesystem cannot produce on demand.
#[tokio::test]
async fn injected_write_faults_are_classified_and_streams_go_on() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| {
        c.breaker_threshold = 3;
        c.memory_cache = 0;
    })
    .await;
    let c = client();
    let cases = [
        (WriteStage::Open, 122, "DISK_FULL"),         // EDQUOT
        (WriteStage::Rename, 5, "IO"),                // a failing rename
        (WriteStage::Sync, 5, "IO"),                  // a failing fsync
        (WriteStage::Write, 28, "DISK_FULL"),         // ENOSPC in the middle of a chunk
        (WriteStage::Index, 28, "DISK_FULL"),         // the index cannot grow
        (WriteStage::Index, 30, "PERMISSION_DENIED"), // read-only index
    ];
    for (i, (stage, errno, class)) in cases.into_iter().enumerate() {
        let name = format!("inj{i}");
        let body = data(4 * CHUNK + 77, 100 + i as u64);
        origin.add_file(&name, body.clone(), "video/mp4");
        let before = metric(
            &spool,
            &format!("spool_cache_write_errors_total{{class=\"{class}\"}}"),
        )
        .await;
        spool.server.inject(Fault {
            stage,
            errno,
            times: 1,
            after_bytes: 1000,
        });
        let (status, _, got) = get(&c, &spool.url(&origin.url(&name)), None).await;
        assert_eq!(status, 200);
        assert!(got == body, "{stage:?}: wrong bytes");
        // The failed write is counted once it is over, maybe after the
        // stream ended.
        wait_for_metric(
            &spool,
            &format!("spool_cache_write_errors_total{{class=\"{class}\"}}"),
            before + 1.0,
        )
        .await;
        let after = metric(
            &spool,
            &format!("spool_cache_write_errors_total{{class=\"{class}\"}}"),
        )
        .await;
        assert_eq!(
            after,
            before + 1.0,
            "{stage:?} errno {errno} counted as {class}"
        );
        // Writes of the other chunks may still have theirs.
        wait_for(&format!("{stage:?} to leave no temp file"), || async {
            temp_files(&spool.cache_dir).is_empty()
        })
        .await;
        // The chunk that failed is fetched again by the next player; the
        // rest were cached.
        let (_, _, got) = get(&c, &spool.url(&origin.url(&name)), None).await;
        assert!(got == body);
    }
}

#[tokio::test]
async fn repeated_io_failures_open_the_breaker() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| {
        c.breaker_threshold = 3;
        c.breaker_cool_down = Duration::from_secs(3600);
    })
    .await;
    let c = client();
    spool.server.inject(Fault {
        stage: WriteStage::Rename,
        errno: 5,
        times: 100,
        after_bytes: 0,
    });
    let body = data(8 * CHUNK, 120);
    origin.add_file("breaker", body.clone(), "video/mp4");
    let (_, _, got) = get(&c, &spool.url(&origin.url("breaker")), None).await;
    assert!(got == body);
    // Each of its 8 chunks was written, or failed or was refused and kept
    // in memory: no write of it is under way any more.
    wait_for_chunks_dealt_with(&spool, 8.0).await;
    assert!(!spool.server.is_caching(), "breaker open");
    // Writes already under way when it opened may still fail.
    let failed = metric(&spool, "spool_cache_write_errors_total{class=\"IO\"}").await;
    assert!((3.0..8.0).contains(&failed), "{failed} failed writes");
    assert_eq!(metric(&spool, "spool_caching_paused").await, 1.0);
    // No more writes are tried while it is open; streams go on.
    let more = data(8 * CHUNK, 121);
    origin.add_file("more", more.clone(), "video/mp4");
    let (_, _, got) = get(&c, &spool.url(&origin.url("more")), None).await;
    assert!(got == more);
    wait_for_chunks_dealt_with(&spool, 16.0).await;
    assert_eq!(
        metric(&spool, "spool_cache_write_errors_total{class=\"IO\"}").await,
        failed,
        "writes stop once the breaker is open"
    );
}

#[tokio::test]
async fn while_caching_is_paused_memory_keeps_recent_chunks() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| {
        c.memory_cache = 8 * MIB;
        c.breaker_cool_down = Duration::from_secs(3600);
    })
    .await;
    spool.server.inject(Fault {
        stage: WriteStage::Open,
        errno: 13,
        times: 1,
        after_bytes: 0,
    });
    let body = data(2 * MIB as usize, 130);
    origin.add_file("m", body.clone(), "video/mp4");
    let c = client();
    let url = spool.url(&origin.url("m"));
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == body);
    // All 32 chunks are on disk or in memory before they are read again.
    wait_for_chunks_dealt_with(&spool, 32.0).await;
    assert!(!spool.server.is_caching(), "EACCES paused caching");
    origin.reset_stats();
    // A re-read and a seek back come from memory.
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == body);
    let (_, _, got) = get(&c, &url, Some("bytes=1000-300000")).await;
    assert!(got == body.slice(1000..=300_000));
    assert_eq!(origin.stats().requests, 0, "re-reads went to the origin");
    assert!(metric(&spool, "spool_served_bytes_total{source=\"memory\"}").await > 0.0);
}

#[tokio::test]
async fn vanished_chunk_files_switch_to_the_origin_mid_stream() {
    let origin = Origin::start().await;
    let size = 40 * CHUNK;
    let body = data(size, 140);
    origin.add_file("v", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let c = client();
    let url = spool.url(&origin.url("v"));
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == body);
    wait_until_cached(&spool.cache_dir, &origin.url("v")).await;
    // Chunk files disappear (a user cleaning up by hand, a broken disk).
    let media_dir = common::only_media_dir(&spool.cache_dir);
    for i in [5, 6, 20, 39] {
        std::fs::remove_file(media_dir.join(format!("{i}.chunk"))).unwrap();
    }
    origin.reset_stats();
    // Many players at once, cold and mid-file.
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            let start = i * 3 * CHUNK + 11;
            tokio::spawn(
                async move { (start, get(&c, &url, Some(&format!("bytes={start}-"))).await) },
            )
        })
        .collect();
    for t in tasks {
        let (start, (status, _, got)) = t.await.unwrap();
        assert_eq!(status, 206);
        assert!(
            got == body.slice(start..),
            "from {start}: one continuous, correct body"
        );
    }
    assert!(
        origin.stats().requests > 0,
        "the missing chunks came from the origin"
    );
    assert!(
        metric(&spool, "spool_served_bytes_total{source=\"passthrough\"}").await > 0.0,
        "served straight from the origin"
    );
    assert!(
        origin.stats().body_bytes < (size / 2) as u64,
        "only the missing chunks: {:?}",
        origin.stats()
    );
}

#[tokio::test]
async fn an_unusable_cache_directory_still_streams() {
    let origin = Origin::start().await;
    let body = data(MIB as usize, 150);
    origin.add_file("u", body.clone(), "video/mp4");
    let tmp = tempfile::tempdir().unwrap();
    // The cache directory would have to live under a regular file.
    std::fs::write(tmp.path().join("file"), b"x").unwrap();
    let cache = tmp.path().join("file").join("cache");
    let spool = Spool::start_cfg(common::test_config(&cache, &origin)).await;
    let c = client();
    for _ in 0..2 {
        let (status, _, got) = get(&c, &spool.url(&origin.url("u")), Some("bytes=1000-")).await;
        assert_eq!(status, 206);
        assert!(got == body.slice(1000..));
    }
    let (status, _, ready) = get(&c, &format!("{}/health/ready", spool.admin()), None).await;
    assert_eq!(status, 503, "not ready: the cache is unusable");
    let ready: serde_json::Value = serde_json::from_slice(&ready).unwrap();
    assert_eq!(ready["cache_dir"], "missing", "{ready}");
    assert!(
        ready["caching"].as_str().unwrap().starts_with("paused"),
        "{ready}"
    );
}

/// A failing free-space measurement (statvfs answering EIO, as on a broken
/// NFS or FUSE mount) during a full-disk episode is "unknown", never
/// "empty": the cleanup acts on the last good sample and evicts no more
/// than a working measurement would have (it used to evict every chunk no
/// player held); readiness names the failure; the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statvfs_never_empties_the_cache() {
    let fs = Tmpfs::mount(48);
    let origin = Origin::start().await;
    let a = data(16 * MIB as usize, 81);
    let b = data(8 * MIB as usize, 82);
    origin.add_file("a", a.clone(), "video/mp4");
    origin.add_file("b", b.clone(), "video/mp4");
    let cache = fs.path().join("cache");
    let spool = Spool::start_cfg({
        let mut cfg = common::test_config(&cache, &origin);
        cfg.free_space.min_free_bytes = 4 * MIB;
        cfg.cleanup_headroom = 2 * MIB;
        cfg.memory_cache = 2 * MIB;
        cfg
    })
    .await;
    read_all_concurrently(&spool.url(&origin.url("a")), 1, &a).await;
    common::wait_until_cached(&cache, &origin.url("a")).await;
    let chunks = common::cached_chunks(&cache, &origin.url("a")).len();
    assert_eq!(chunks, 256);
    // The monitor has a good sample; from now on every measurement fails,
    // and someone else fills the disk.
    wait_for("a disk sample", || async {
        ready_json(&spool).await["disk"]["free_bytes"].is_u64()
    })
    .await;
    spool.server.fail_disk_measurements(true);
    fs.ballast(256 * 1024);
    let dealt = metric(&spool, "spool_chunks_written_total").await
        + metric(&spool, "spool_chunks_kept_in_memory_total").await;
    read_all_concurrently(&spool.url(&origin.url("b")), 1, &b).await;
    wait_for_chunks_dealt_with(&spool, dealt + 128.0).await;
    assert!(
        metric(
            &spool,
            "spool_cache_write_errors_total{class=\"DISK_FULL\"}"
        )
        .await
            > 0.0,
        "the disk was full"
    );
    // With free space measured, a cleanup would have freed the critical
    // threshold plus the headroom (6 MiB, 96 chunks) and one chunk more.
    let left = common::cached_chunks(&cache, &origin.url("a")).len();
    assert!(left >= 256 - 97, "{left} of a's 256 chunks left");
    let ready = ready_json(&spool).await;
    assert!(ready["disk"]["measure_error"].is_string(), "{ready}");
    spool.server.fail_disk_measurements(false);
    wait_for("the failure to clear", || async {
        ready_json(&spool).await["disk"]["measure_error"].is_null()
    })
    .await;
}

/// Another file of someone else's, leaving `leave` bytes free.
fn more_ballast(fs: &Tmpfs, name: &str, leave: u64) {
    let size = fs.free().saturating_sub(leave);
    let status = Command::new("fallocate")
        .args(["-l", &size.to_string()])
        .arg(fs.path().join(name))
        .status()
        .unwrap();
    assert!(status.success());
}

/// A pinned title outlives what eviction wants: a disk that falls below
/// its critical level loses the chunks of unpinned media first (though
/// they were read after the title), and only when those are gone the
/// pinned title's, and then only until the disk is above the critical
/// level again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_disk_evicts_pinned_titles_last() {
    let fs = Tmpfs::mount(32);
    let origin = Origin::start().await;
    origin.add_file(
        "show/index.m3u8",
        bytes::Bytes::from_static(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\ns0.ts\n#EXTINF:4,\ns1.ts\n#EXTINF:4,\ns2.ts\n#EXTINF:4,\ns3.ts\n#EXT-X-ENDLIST\n",
        ),
        "application/vnd.apple.mpegurl",
    );
    for i in 0..4u64 {
        origin.add_file(
            &format!("show/s{i}.ts"),
            data(MIB as usize, 90 + i),
            "video/mp2t",
        );
    }
    origin.add_file("film.mp4", data(4 * MIB as usize, 99), "video/mp4");
    let cache = fs.path().join("cache");
    let spool = Spool::start_cfg({
        let mut cfg = common::test_config(&cache, &origin);
        cfg.free_space.min_free_bytes = 8 * MIB;
        cfg.cleanup_headroom = MIB;
        cfg
    })
    .await;
    let c = client();
    // The title first, then the film: by age the title would go first.
    let (status, _, _) = get(&c, &spool.url(&origin.url("show/index.m3u8")), None).await;
    assert_eq!(status, 200);
    for i in 0..4 {
        let u = origin.url(&format!("show/s{i}.ts"));
        assert_eq!(get(&c, &spool.url(&u), None).await.0, 200);
        wait_until_cached(&cache, &u).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let film = origin.url("film.mp4");
    assert_eq!(get(&c, &spool.url(&film), None).await.0, 200);
    wait_until_cached(&cache, &film).await;
    let r = c
        .post(format!("{}/api/pin", spool.admin()))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "url": origin.url("show/index.m3u8") }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cached = |u: &str| common::cached_chunks(&cache, u).len() as u64 * CHUNK as u64;
    let title = || {
        (0..4)
            .map(|i| cached(&origin.url(&format!("show/s{i}.ts"))))
            .sum::<u64>()
    };
    assert_eq!(title(), 4 * MIB);

    // Someone else's file leaves 6 MiB free: 3 MiB must go (to 8 MiB and
    // the 1 MiB headroom), all of them the film's.
    fs.ballast(6 * MIB);
    wait_for("the film's chunks to be evicted", || async {
        cached(&film) < 4 * MIB
    })
    .await;
    wait_for("the disk above its critical level", || async {
        fs.free() >= 8 * MIB
    })
    .await;
    assert_eq!(title(), 4 * MIB, "the pinned title is whole");
    assert!(cached(&film) <= MIB, "{} of the film left", cached(&film));

    // More of it: with the film gone, the pinned title gives way, until
    // the disk is above its critical level, not to the headroom.
    more_ballast(&fs, "ballast2", 6 * MIB);
    wait_for("the pinned title's chunks to be evicted", || async {
        title() < 4 * MIB
    })
    .await;
    wait_for("the disk above its critical level", || async {
        fs.free() >= 8 * MIB
    })
    .await;
    assert_eq!(cached(&film), 0, "the film went first");
    let left = title();
    assert!(
        left > 0 && left < 4 * MIB,
        "{left} bytes of the pinned title left"
    );
}
