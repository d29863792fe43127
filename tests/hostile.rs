//! Hostile origins and clients, over real HTTP against the in-tree origin:
//! what an attacker tried, and what spool must hold.

mod common;

use spool::config::ReadAhead;
use std::time::Duration;

use common::origin::{Faults, Origin};
use common::tmpfs::Tmpfs;
use common::{client, data, get, wait_for, Spool};

/// GET of `/health/live`, which must answer while an attack runs.
async fn alive(spool: &Spool) -> bool {
    let c = client();
    let req = c.get(format!("{}/health/live", spool.base())).send();
    // A deadline only so that a frozen spool fails the test instead of
    // hanging it.
    matches!(tokio::time::timeout(Duration::from_secs(10), req).await, Ok(Ok(r)) if r.status() == 200)
}

/// An origin claiming an enormous size costs spool no more than the bytes
/// asked for: chunk bookkeeping is sparse. Two such streams at once used
/// to occupy both worker threads for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_claimed_size_does_not_freeze_spool() {
    let origin = Origin::start().await;
    let body = data(100_000, 1);
    origin.add_file("huge", body.clone(), "video/mp4");
    let claimed = 1u64 << 59;
    origin.set_faults(
        "huge",
        Faults {
            claim_total: Some(claimed),
            ..Faults::default()
        },
    );
    let spool = Spool::start_with(&origin, |c| c.max_media_size = 1 << 60).await;
    let url = spool.url(&origin.url("huge"));
    let players: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&client(), &url, Some("bytes=0-99")).await })
        })
        .collect();
    assert!(
        alive(&spool).await,
        "health check answered during the attack"
    );
    for p in players {
        let (status, headers, got) = p.await.unwrap();
        assert_eq!(status, 206);
        assert_eq!(
            common::header(&headers, "content-range"),
            format!("bytes 0-99/{claimed}")
        );
        assert!(got == body.slice(..100));
    }
    assert!(alive(&spool).await);
}

/// A claimed size past `--max-media-size` is refused with 502 and a reason.
#[tokio::test]
async fn a_size_past_the_limit_is_refused() {
    let origin = Origin::start().await;
    origin.add_file("huge", data(1000, 2), "video/mp4");
    origin.set_faults(
        "huge",
        Faults {
            claim_total: Some(4611686018427387904),
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let (status, _, body) = get(&client(), &spool.url(&origin.url("huge")), None).await;
    assert_eq!(status, 502);
    let reason = String::from_utf8_lossy(&body);
    assert!(reason.contains("--max-media-size"), "{reason}");
}

/// An allowed origin cannot redirect spool to another port of an allowed
/// host: every hop is checked against port-scoped allow entries, names
/// included.
#[tokio::test]
async fn a_redirect_to_another_port_is_refused() {
    let allowed = Origin::start().await;
    let inner = Origin::start().await;
    inner.add_file("secret", data(1000, 3), "text/plain");
    let (pa, pb) = (allowed.addr().port(), inner.addr().port());
    for (entry, target) in [
        (
            format!("127.0.0.1:{pa}"),
            format!("http://localhost:{pb}/secret"),
        ),
        (
            format!("localhost:{pa}"),
            format!("http://localhost:{pb}/secret"),
        ),
        (
            format!("127.0.0.1:{pa}"),
            format!("http://127.0.0.1:{pb}/secret"),
        ),
    ] {
        allowed.add_file("r", data(10, 4), "video/mp4");
        allowed.set_faults(
            "r",
            Faults {
                redirect_to: Some(target.clone()),
                ..Faults::default()
            },
        );
        let spool = Spool::start_with(&allowed, |c| {
            c.allow_upstream = spool::upstream::allow::AllowList::parse(&entry).unwrap();
        })
        .await;
        inner.reset_stats();
        let start = allowed.url("r").replace("127.0.0.1", "localhost");
        let from = if entry.starts_with("localhost") {
            start
        } else {
            allowed.url("r")
        };
        let (status, _, body) = get(&client(), &spool.url(&from), None).await;
        assert_eq!(
            status,
            403,
            "{entry} -> {target}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(inner.stats().requests, 0, "{entry} -> {target} reached");
    }
}

/// Overlapping ranges cannot multiply a response: 64 × `0-` on a file is
/// answered with the file once (coalesced; more than --max-ranges ranges
/// are ignored and the whole body sent), never 64 copies.
#[tokio::test]
async fn overlapping_ranges_do_not_amplify() {
    let origin = Origin::start().await;
    let size = 1_000_000;
    let body = data(size, 5);
    origin.add_file("f", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("f"));
    for n in [4usize, 16, 64] {
        let header = format!("bytes={}", vec!["0-"; n].join(","));
        let (status, _, got) = get(&client(), &url, Some(&header)).await;
        assert!(status == 206 || status == 200, "{n} ranges: {status}");
        assert_eq!(got.len(), size, "{n} ranges");
        assert!(got == body);
    }
    // Distinct ranges are still served as multipart, in request order.
    let (status, headers, got) = get(&client(), &url, Some("bytes=500-509,0-9")).await;
    assert_eq!(status, 206);
    assert!(common::header(&headers, "content-type").starts_with("multipart/byteranges"));
    let text = String::from_utf8_lossy(&got);
    let first = text.find("bytes 500-509/").unwrap();
    let second = text.find("bytes 0-9/").unwrap();
    assert!(first < second);
}

/// An origin that ignores Range cannot make a 100-byte request cost the
/// whole file: reaching a position past --max-skip is refused with 502
/// instead of downloading and dropping everything before it.
#[tokio::test]
async fn skipping_over_an_origin_that_ignores_range_is_capped() {
    let origin = Origin::start().await;
    let size = 64 << 20;
    let body = data(size, 6);
    origin.add_file("f", body.clone(), "video/mp4");
    origin.set_faults(
        "f",
        Faults {
            ignore_range: true,
            ..Faults::default()
        },
    );
    let spool = Spool::start_with(&origin, |c| c.max_skip = 1 << 20).await;
    let url = spool.url(&origin.url("f"));
    // Within the cap: served, by skipping.
    let (status, _, got) = get(&client(), &url, Some("bytes=500000-500099")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(500_000..500_100));
    // Past it, cold and once the media is known: refused, with a reason.
    for _ in 0..2 {
        origin.reset_stats();
        let (status, _, got) = get(&client(), &url, Some("bytes=40000000-40000099")).await;
        assert_eq!(status, 502);
        assert!(String::from_utf8_lossy(&got).contains("--max-skip"));
        let sent = origin.stats().body_bytes;
        assert!(
            sent < 16 << 20,
            "origin sent {sent} bytes for a 100-byte request"
        );
    }
}

/// Media the cache holds nothing of, unread for --forget-media-after, leave
/// the index: it grows with what is cached, not with every URL asked for.
#[tokio::test]
async fn the_index_forgets_media_with_nothing_cached() {
    let origin = Origin::start().await;
    let body = data(100_000, 7);
    for i in 0..5 {
        origin.add_file(&format!("probe{i}"), data(1000, i), "video/mp4");
    }
    origin.add_file("kept", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let c = client();
    for i in 0..5 {
        let url = spool.url(&origin.url(&format!("probe{i}")));
        let resp = c.head(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let (_, _, got) = get(&c, &spool.url(&origin.url("kept")), None).await;
    assert!(got == body);
    let (dir, _tmp) = spool.stop().await;
    let count = |dir: &std::path::Path| -> i64 {
        let db = rusqlite::Connection::open(dir.join("index.db")).unwrap();
        db.query_row("SELECT COUNT(*) FROM media", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&dir), 6);
    let mut cfg = common::test_config(&dir, &origin);
    cfg.forget_media_after = Duration::ZERO;
    let spool = Spool::start_cfg(cfg).await;
    wait_for("one media row left", || async { count(&dir) == 1 }).await;
    // What is cached is still served from the cache.
    origin.reset_stats();
    let (_, _, got) = get(&c, &spool.url(&origin.url("kept")), None).await;
    assert!(got == body);
    assert_eq!(origin.stats().requests, 0);
}

/// Caching paused for a full disk gets out of the pause once evictable
/// data exists, whatever the disk level: it used to stay paused at level
/// Warning (free between the critical threshold and one chunk above it)
/// with idle chunks on disk, because the monitor cleaned only at Critical
/// and a paused cache attempts no writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_cache_resumes_when_idle_chunks_can_go() {
    let fs = Tmpfs::mount(96);
    let origin = Origin::start().await;
    let chunk = 16u64 << 20;
    // One big chunk: a player that read 9 MiB of it and stalled is still
    // in it (its socket buffers hold a few MB more), so it is kept. (With a
    // second chunk, whether the read-ahead window keeps that one too
    // depended on how far the stalled stream had got.)
    let a = data(chunk as usize, 8);
    origin.add_file("a", a.clone(), "video/mp4");
    origin.add_file("b", data(1 << 20, 9), "video/mp4");
    let critical = 4u64 << 20;
    let spool = Spool::start_cfg({
        let mut c = common::test_config(&fs.path().join("cache"), &origin);
        c.chunk_size = chunk;
        c.read_ahead = ReadAhead::Bytes(2 * chunk);
        c.free_space.min_free_bytes = critical;
        c.free_space.min_free_percent = 0.0;
        c
    })
    .await;
    let c = client();
    let (_, _, got) = get(&c, &spool.url(&origin.url("a")), None).await;
    assert!(got == a);
    common::wait_for_metric(&spool, "spool_chunks_written_total", 1.0).await;
    // A player holds `a` open, reads 9 MiB of it and stops reading.
    let mut holder = c.get(spool.url(&origin.url("a"))).send().await.unwrap();
    let mut read = 0;
    while read < 9 << 20 {
        read += holder.chunk().await.unwrap().unwrap().len();
    }
    // Free space above critical by 1 MiB (room for the index's own writes
    // meanwhile): level warning, and no room for a chunk without a
    // cleanup, which can evict nothing the player holds.
    fs.ballast(critical + (1 << 20));
    let (_, _, _) = get(&c, &spool.url(&origin.url("b")), None).await;
    wait_for("caching pauses: nothing evictable", || async {
        !spool.server.is_caching()
    })
    .await;
    let (_, _, ready) = get(&c, &format!("{}/health/ready", spool.admin()), None).await;
    let ready: serde_json::Value = serde_json::from_slice(&ready).unwrap();
    assert_ne!(ready["disk"]["level"], "critical", "{ready}");
    // The player leaves: its chunks may go, and caching comes back.
    drop(holder);
    wait_for("caching resumes", || async { spool.server.is_caching() }).await;
}

/// Every file under `dir` with its contents, for before/after checks.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Symlinks planted inside the cache directory are never followed:
/// start-up reconciliation, chunk writes, quarantine and
/// `spool verify --repair` leave what they point at untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_inside_the_cache_are_never_followed() {
    let origin = Origin::start().await;
    let files: Vec<_> = (0..3).map(|i| data(200_000, 20 + i)).collect();
    for (i, f) in files.iter().enumerate() {
        origin.add_file(&format!("f{i}"), f.clone(), "video/mp4");
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let c = client();
    // Media 1 and 2, cached in real directories.
    let spool = Spool::start_cfg(common::test_config(&cache, &origin)).await;
    for (i, body) in files.iter().enumerate().take(2) {
        let (_, _, got) = get(&c, &spool.url(&origin.url(&format!("f{i}"))), None).await;
        assert!(got == body);
    }
    let cache = spool.stop().await.0;
    assert!(cache.join("chunks/1/0.chunk").exists());
    // The next media (3) would land in chunks/3: make it a symlink to a
    // directory outside, full of names spool would clean up; and make
    // quarantine/ a symlink too. Then damage a chunk of media 1.
    let outside = tempfile::tempdir().unwrap();
    for name in ["0.chunk", "1.chunk", ".0.0123.tmp", "notes.txt"] {
        std::fs::write(outside.path().join(name), format!("outside {name}")).unwrap();
    }
    let outside_q = tempfile::tempdir().unwrap();
    std::fs::write(outside_q.path().join("mine"), b"mine").unwrap();
    std::os::unix::fs::symlink(outside.path(), cache.join("chunks/3")).unwrap();
    std::os::unix::fs::symlink(outside_q.path(), cache.join("quarantine")).unwrap();
    let chunk0 = cache.join("chunks/1/0.chunk");
    let mut bad = std::fs::read(&chunk0).unwrap();
    bad[10] ^= 0xff;
    std::fs::write(&chunk0, bad).unwrap();
    let before = (snapshot(outside.path()), snapshot(outside_q.path()));

    let spool = Spool::start_cfg(common::test_config(&cache, &origin)).await;
    // Media 3 streams (uncached: its directory is refused); media 1's bad
    // chunk is never served, and not moved outside.
    let (_, _, got) = get(&c, &spool.url(&origin.url("f2")), None).await;
    assert!(got == files[2]);
    let (_, _, got) = get(&c, &spool.url(&origin.url("f0")), None).await;
    assert!(got == files[0]);
    let cache = spool.stop().await.0;
    assert_eq!(
        (snapshot(outside.path()), snapshot(outside_q.path())),
        before,
        "something outside the cache changed while serving"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["verify", "--repair", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(out.status.code().is_some(), "{out:?}");
    assert_eq!(
        (snapshot(outside.path()), snapshot(outside_q.path())),
        before,
        "verify --repair changed something outside the cache"
    );
    assert!(
        cache.join("chunks/3").is_symlink(),
        "the link itself may stay"
    );
}

/// An origin that encodes its answer although spool asks for identity:
/// the encoding is passed on (cold and from the cache), so players are not
/// handed gzip bytes labelled video/mp4.
#[tokio::test]
async fn an_encoding_the_origin_applied_anyway_is_passed_on() {
    let origin = Origin::start().await;
    let body = data(300_000, 30);
    origin.add_file("gz", body.clone(), "video/mp4");
    origin.set_faults(
        "gz",
        Faults {
            content_encoding: Some("gzip".into()),
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("gz"));
    for round in ["cold", "warm"] {
        let (status, headers, got) = get(&client(), &url, None).await;
        assert_eq!(status, 200);
        assert_eq!(
            common::header(&headers, "content-encoding"),
            "gzip",
            "{round}"
        );
        assert!(got == body, "{round}");
    }
    let (status, headers, _) = get(&client(), &url, Some("bytes=10-19")).await;
    assert_eq!(status, 206);
    assert_eq!(common::header(&headers, "content-encoding"), "gzip");
}

/// An origin that breaks every answer after 100 bytes gets a bounded
/// number of requests, not one per 100 bytes of the file: a trickle of
/// progress does not reset the retry count.
#[tokio::test]
async fn an_origin_breaking_every_answer_gets_bounded_retries() {
    let origin = Origin::start().await;
    let body = data(1_000_000, 31);
    origin.add_file("brk", body.clone(), "video/mp4");
    origin.set_faults(
        "brk",
        Faults {
            reset_after_bytes: Some(100),
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let resp = client()
        .get(spool.url(&origin.url("brk")))
        .send()
        .await
        .unwrap();
    // The body is cut (the bytes cannot be had), within the deadline.
    let got = tokio::time::timeout(Duration::from_secs(60), resp.bytes())
        .await
        .expect("the response ends");
    assert!(got.is_err() || got.unwrap().len() < body.len());
    // Each of the body's attempts (9) gets --upstream-retries + 1 (4)
    // requests, for the bytes from the player's position and for the head
    // of its chunk before it: at most 72; before, one per 100 bytes (10000).
    let requests = origin.stats().requests;
    assert!(requests <= 72, "{requests} origin requests");
}

/// Running out of file descriptors (EMFILE) while writing a chunk is not
/// a disk failure: it neither counts as IO nor opens the cache breaker.
#[tokio::test]
async fn too_many_open_files_is_not_a_disk_failure() {
    let origin = Origin::start().await;
    let body = data(400_000, 32);
    origin.add_file("fd", body.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |c| c.breaker_threshold = 1).await;
    spool.server.inject(spool::testing::Fault {
        stage: spool::testing::WriteStage::Open,
        errno: 24, // EMFILE
        times: 3,
        after_bytes: 0,
    });
    let (_, _, got) = get(&client(), &spool.url(&origin.url("fd")), None).await;
    assert!(got == body);
    assert!(spool.server.is_caching(), "the breaker opened");
    let io = common::metric(&spool, "spool_cache_write_errors_total{class=\"IO\"}").await;
    assert_eq!(io, 0.0);
}

/// spool raises its soft limit on open files to the hard limit at start.
#[tokio::test]
async fn the_open_files_limit_is_raised_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_spool");
    let script = format!(
        "ulimit -Sn 256 && exec {bin} serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --cache-dir {}",
        tmp.path().join("c").display()
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let limits = format!("/proc/{}/limits", child.id());
    let exe = format!("/proc/{}/exe", child.id());
    let open_files = || -> Option<(String, String)> {
        // Only once the shell has become spool (after its ulimit).
        let running = std::fs::read_link(&exe).ok()?;
        if running != std::path::Path::new(bin).canonicalize().ok()? {
            return None;
        }
        let text = std::fs::read_to_string(&limits).ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let mut f = line.split_whitespace().skip(3);
        Some((f.next()?.to_owned(), f.next()?.to_owned()))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let raised = loop {
        match open_files() {
            Some((soft, hard)) if soft == hard => break true,
            _ if std::time::Instant::now() > deadline => break false,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let seen = open_files();
    let _ = child.kill();
    let _ = child.wait();
    assert!(raised, "soft limit not raised: {seen:?}");
}

/// Reads from a raw connection until the server closes it; false if it
/// is still open at the deadline.
async fn closed_by_server(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Slowloris: a client that never finishes its headers, and one that
/// stays idle after a request, are closed after --header-timeout.
#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let origin = Origin::start().await;
    origin.add_file("f", data(1000, 40), "video/mp4");
    let spool = Spool::start_with(&origin, |c| c.header_timeout = Duration::from_millis(500)).await;
    let mut slow = tokio::net::TcpStream::connect(spool.addr).await.unwrap();
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut slow, Duration::from_secs(10)).await,
        "slowloris held"
    );
    let mut idle = tokio::net::TcpStream::connect(spool.addr).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(10)).await,
        "idle keep-alive held"
    );
    assert!(alive(&spool).await);
}

/// Connections past --max-connections-per-client and --max-connections
/// are closed at once and counted; the rest keep working.
#[tokio::test]
async fn connection_limits_hold() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| {
        c.max_connections = 6;
        c.max_connections_per_client = 3;
        c.header_timeout = Duration::from_secs(60);
    })
    .await;
    let v4 = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // Three held from 127.0.0.1: the fourth from it is closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            tokio::net::TcpStream::connect(v4(spool.addr.port()))
                .await
                .unwrap(),
        );
    }
    let mut extra = tokio::net::TcpStream::connect(spool.addr).await.unwrap();
    assert!(closed_by_server(&mut extra, Duration::from_secs(10)).await);
    let per_client = "spool_connections_refused_total{reason=\"max_connections_per_client\"}";
    // Other addresses (127.0.0.2, 127.0.0.3, ...) still get in, up to the
    // total.
    let from = |last: u8| async move {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))
            .unwrap();
        s.connect(v4(spool.addr.port())).await.unwrap()
    };
    for last in 2..5 {
        held.push(from(last).await);
    }
    let mut over = from(9).await;
    assert!(closed_by_server(&mut over, Duration::from_secs(10)).await);
    drop(held.remove(0)); // one of 127.0.0.1's
    drop(held.pop());
    // Room again: a normal request from 127.0.0.1 is answered (places are
    // given back once the closed connections are noticed).
    wait_for("room after connections closed", || alive(&spool)).await;
    held.clear();
    let refused = |reason: &str| {
        let name = format!("spool_connections_refused_total{{reason=\"{reason}\"}}");
        let spool = &spool;
        async move { common::metric(spool, &name).await }
    };
    assert!(common::metric(&spool, per_client).await >= 1.0);
    assert!(refused("max_connections").await >= 1.0);
}

/// A player that takes no bytes for --write-timeout loses its stream (and
/// what it held); past --max-streams, new streams get 503 with Retry-After.
#[tokio::test]
async fn stalled_players_are_cut_and_streams_are_limited() {
    let origin = Origin::start().await;
    origin.add_file("big", data(32 << 20, 41), "video/mp4");
    let spool = Spool::start_with(&origin, |c| {
        c.write_timeout = Duration::from_millis(500);
        c.max_streams = 2;
    })
    .await;
    let url = spool.url(&origin.url("big"));
    let c = client();
    // Two players that read one piece and stall.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut r = c.get(&url).send().await.unwrap();
        r.chunk().await.unwrap();
        stalled.push(r);
    }
    let (status, headers, _) = get(&c, &url, Some("bytes=0-9")).await;
    assert_eq!(status, 503);
    assert_eq!(common::header(&headers, "retry-after"), "1");
    // Their streams end at the write timeout, and room comes back.
    wait_for("stalled streams closed", || async {
        common::metric(&spool, "spool_active_streams").await == 0.0
    })
    .await;
    let (status, _, _) = get(&c, &url, Some("bytes=0-9")).await;
    assert_eq!(status, 206);
    drop(stalled);
}

/// 70 players from one address that stop reading mid-body (their sockets
/// full): after --write-timeout spool holds none of their connections,
/// streams or places, and a new client from the same address streams at
/// once. (Without the connection being closed, hyper would stop polling
/// the stalled bodies and keep every socket.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_that_stop_reading_lose_their_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    let body = data(32 << 20, 44);
    origin.add_file("big", body.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |c| {
        c.write_timeout = Duration::from_secs(1);
    })
    .await;
    let url = spool.url(&origin.url("big"));
    let path = &url[spool.base().len()..];
    let mut stopped = Vec::new();
    for _ in 0..70 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let Ok(mut s) = sock.connect(spool.addr).await else {
            continue;
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            continue;
        }
        let mut head = [0u8; 1000];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut head)).await;
        stopped.push(s);
    }
    // Past the per-client limit (64) the rest were closed at once.
    common::wait_for("the stalled connections closed by spool", || async {
        // (The scrape itself is one open connection, on the control plane.)
        common::metric(&spool, "spool_open_connections").await <= 1.0
            && common::metric(&spool, "spool_active_streams").await == 0.0
    })
    .await;
    assert!(common::metric(&spool, "spool_limited_total{reason=\"write_timeout\"}").await >= 1.0);
    let mut closed = 0;
    for s in &mut stopped {
        closed += closed_by_server(s, Duration::from_secs(10)).await as usize;
    }
    assert_eq!(
        closed,
        stopped.len(),
        "every stalled socket was closed by spool"
    );
    let (status, _, got) = get(&client(), &url, Some("bytes=0-1048575")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(0..1 << 20));
}

/// Past --max-downloads, download runs wait for a place (their players
/// with them) instead of opening ever more origin transfers; every player
/// still gets its bytes.
#[tokio::test]
async fn download_runs_are_limited() {
    let origin = Origin::start().await;
    let files: Vec<_> = (0..3).map(|i| data(512 * 1024, 50 + i)).collect();
    for (i, f) in files.iter().enumerate() {
        origin.add_file(&format!("d{i}"), f.clone(), "video/mp4");
        origin.set_faults(&format!("d{i}"), Faults::throttled(2 << 20));
    }
    let spool = Spool::start_with(&origin, |c| c.max_downloads = 1).await;
    let players: Vec<_> = (0..3)
        .map(|i| {
            let url = spool.url(&origin.url(&format!("d{i}")));
            tokio::spawn(async move { get(&client(), &url, None).await })
        })
        .collect();
    for (p, want) in players.into_iter().zip(&files) {
        let (status, _, got) = p.await.unwrap();
        assert_eq!(status, 200);
        assert!(got == *want);
    }
    let waited = common::metric(&spool, "spool_limited_total{reason=\"max_downloads\"}").await;
    assert!(waited >= 1.0, "no run waited for a place");
}

/// One row of the hostile-input table: what is asked, of which origin
/// behaviour, and what spool must answer.
struct Case {
    name: &'static str,
    /// Origin file (created per case) and its faults.
    faults: Faults,
    /// The URL asked for; `{o}` is the origin's file URL, `{other}` an
    /// address on another port of the origin's host.
    url: &'static str,
    range: Option<&'static str>,
    status: u16,
    /// Expected body: the file's bytes in this span (None: not checked).
    bytes: Option<std::ops::Range<usize>>,
}

/// Hostile input from both sides, over HTTP, in one table: every case of
/// the review above plus malformed requests. Each answer is the status
/// given, with the origin's exact bytes where there are any.
#[tokio::test]
async fn hostile_input_table() {
    let origin = Origin::start().await;
    let other = Origin::start().await;
    other.add_file("secret", data(100, 60), "text/plain");
    let size = 3 << 20;
    let spool = Spool::start_with(&origin, |c| {
        let entry = format!("127.0.0.1:{}", origin.addr().port());
        c.allow_upstream = spool::upstream::allow::AllowList::parse(&entry).unwrap();
        c.max_skip = 1 << 20;
        c.upstream_timeout = Duration::from_secs(1);
        c.upstream_retries = 1;
    })
    .await;
    let f = Faults::default;
    let cases = vec![
        // Client side.
        Case { name: "plain", faults: f(), url: "{o}", range: None, status: 200, bytes: Some(0..size) },
        Case { name: "64 overlapping ranges", faults: f(), url: "{o}", range: Some("bytes=0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-"), status: 206, bytes: Some(0..size) },
        Case { name: "more ranges than allowed", faults: f(), url: "{o}", range: Some("bytes=0-0,2-2,4-4,6-6,8-8,10-10,12-12,14-14,16-16,18-18,20-20,22-22,24-24,26-26,28-28,30-30,32-32"), status: 200, bytes: Some(0..size) },
        Case { name: "garbage range", faults: f(), url: "{o}", range: Some("bytes=--,;x=5-4"), status: 200, bytes: Some(0..size) },
        Case { name: "absurd range numbers", faults: f(), url: "{o}", range: Some("bytes=99999999999999999999999-"), status: 416, bytes: None },
        Case { name: "suffix bigger than file", faults: f(), url: "{o}", range: Some("bytes=-99999999999999999999"), status: 206, bytes: Some(0..size) },
        Case { name: "not http", faults: f(), url: "ftp://127.0.0.1/x", range: None, status: 400, bytes: None },
        Case { name: "not a URL", faults: f(), url: "not a url", range: None, status: 400, bytes: None },
        Case { name: "private address", faults: f(), url: "http://10.1.2.3/x", range: None, status: 403, bytes: None },
        Case { name: "metadata address", faults: f(), url: "http://169.254.169.254/latest", range: None, status: 403, bytes: None },
        Case { name: "another port of an allowed host", faults: f(), url: "{other}", range: None, status: 403, bytes: None },
        // Origin side.
        Case { name: "claims 2^62 bytes", faults: Faults { claim_total: Some(1 << 62), ..f() }, url: "{o}", range: Some("bytes=0-99"), status: 502, bytes: None },
        Case { name: "redirects to another port", faults: Faults { redirect_to: Some("{other}".into()), ..f() }, url: "{o}", range: None, status: 403, bytes: None },
        Case { name: "ignores Range, far seek", faults: Faults { ignore_range: true, ..f() }, url: "{o}", range: Some("bytes=2000000-2000099"), status: 502, bytes: None },
        Case { name: "ignores Range, near seek", faults: Faults { ignore_range: true, ..f() }, url: "{o}", range: Some("bytes=500000-500099"), status: 206, bytes: Some(500_000..500_100) },
        Case { name: "no length", faults: Faults { no_length: true, ..f() }, url: "{o}", range: None, status: 200, bytes: Some(0..size) },
        Case { name: "unknown total", faults: Faults { unknown_total: true, ..f() }, url: "{o}", range: Some("bytes=10-19"), status: 206, bytes: Some(10..20) },
        Case { name: "gzip although identity asked", faults: Faults { content_encoding: Some("gzip".into()), ..f() }, url: "{o}", range: Some("bytes=0-99"), status: 206, bytes: Some(0..100) },
        Case { name: "origin error", faults: Faults { status: Some(500), ..f() }, url: "{o}", range: None, status: 502, bytes: None },
        Case { name: "origin not found", faults: Faults { status: Some(404), ..f() }, url: "{o}", range: None, status: 404, bytes: None },
        Case { name: "origin wants credentials", faults: Faults { status: Some(401), ..f() }, url: "{o}", range: None, status: 401, bytes: None },
        Case { name: "origin hangs", faults: Faults { hang: true, ..f() }, url: "{o}", range: None, status: 504, bytes: None },
    ];
    let other_url = other.url("secret");
    for (i, case) in cases.into_iter().enumerate() {
        let name = format!("t{i}");
        let body = data(size, 70 + i as u64);
        origin.add_file(&name, body.clone(), "video/mp4");
        let mut faults = case.faults;
        if let Some(to) = &mut faults.redirect_to {
            *to = to.replace("{other}", &other_url);
        }
        origin.set_faults(&name, faults);
        let target = case
            .url
            .replace("{o}", &origin.url(&name))
            .replace("{other}", &other_url);
        other.reset_stats();
        let (status, headers, got) = get(&client(), &spool.url(&target), case.range).await;
        // RFC 9110 §15.5.2: a 401 names a challenge, also one passed on.
        assert!(
            status != 401 || headers.contains_key("www-authenticate"),
            "{}: 401 without WWW-Authenticate",
            case.name
        );
        assert_eq!(
            status,
            case.status,
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&got[..got.len().min(200)])
        );
        if let Some(span) = case.bytes {
            assert!(got == body.slice(span), "{}: wrong bytes", case.name);
        }
        assert_eq!(
            other.stats().requests,
            0,
            "{}: reached the other port",
            case.name
        );
    }
    assert!(alive(&spool).await);
}

/// A cache directory that exists but cannot hold an index (a read-only
/// filesystem) makes spool serve uncached and report not ready.
#[tokio::test]
async fn a_cache_that_cannot_hold_an_index_is_not_ready() {
    let fs = Tmpfs::mount(8);
    let cache = fs.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    fs.remount("ro");
    let origin = Origin::start().await;
    let body = data(300_000, 90);
    origin.add_file("r", body.clone(), "video/mp4");
    let spool = Spool::start_cfg(common::test_config(&cache, &origin)).await;
    let (_, _, got) = get(&client(), &spool.url(&origin.url("r")), None).await;
    assert!(got == body);
    let (status, _, ready) = get(&client(), &format!("{}/health/ready", spool.admin()), None).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&ready));
    assert!(String::from_utf8_lossy(&ready).contains("serving uncached"));
}

/// An origin that drips bytes keeps no download place once its players
/// are gone: with one place, a dripping transfer nobody wants any more
/// gives way to the next player.
#[tokio::test]
async fn a_dripping_origin_gives_its_place_back() {
    let origin = Origin::start().await;
    origin.add_file("drip", data(1 << 20, 91), "video/mp4");
    // 16 KiB pieces every 4 s: always within the upstream timeout (5 s in
    // the tests), a 1 MiB chunk in about four minutes.
    origin.set_faults("drip", Faults::throttled(4096));
    let fast = data(200_000, 92);
    origin.add_file("fast", fast.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |c| {
        c.max_downloads = 1;
        c.chunk_size = 1 << 20;
    })
    .await;
    let c = client();
    // A player takes the one place on the dripping origin, then leaves.
    let mut dripping = c.get(spool.url(&origin.url("drip"))).send().await.unwrap();
    dripping.chunk().await.unwrap();
    drop(dripping);
    // The next player gets its bytes (a deadline turns a hang into a
    // failure).
    let got = tokio::time::timeout(
        Duration::from_secs(30),
        get(&c, &spool.url(&origin.url("fast")), None),
    )
    .await
    .expect("the dripping transfer kept the only download place");
    assert!(got.2 == fast);
}

/// A player that hangs up while its download waits for a --max-downloads
/// place lets the place go: the queued run gives its claim back (after
/// the grace period and the finishing budget) instead of downloading and
/// caching for nobody once a place frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_queued_for_nobody_gives_up() {
    let origin = Origin::start().await;
    origin.add_file("busy", data(4 << 20, 91), "video/mp4");
    origin.set_faults("busy", Faults::throttled(4096));
    origin.add_file("queued", data(256 * 1024, 92), "video/mp4");
    let spool = Spool::start_with(&origin, |c| c.max_downloads = 1).await;
    // One player holds the only place: its first chunk takes 16 s to come.
    let busy = spool.url(&origin.url("busy"));
    let mut reader = client().get(&busy).send().await.unwrap();
    reader.chunk().await.unwrap();
    // Another asks for another media, waits in the queue, and hangs up.
    let queued = spool.url(&origin.url("queued"));
    let mut waiting = client().get(&queued).send().await.unwrap();
    let first = tokio::time::timeout(Duration::from_millis(500), waiting.chunk()).await;
    assert!(first.is_err(), "its body waited for a place");
    drop(waiting);
    common::wait_for_metric(&spool, "spool_limited_total{reason=\"max_downloads\"}", 1.0).await;
    // Past the grace period and the finishing budget (10 s), the queued
    // run is gone; then the place frees.
    tokio::time::sleep(Duration::from_secs(11)).await;
    drop(reader);
    common::wait_for("the busy run to stop", || async {
        common::metric(&spool, "spool_active_streams").await == 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        common::cached_chunks(&spool.cache_dir, &origin.url("queued")).is_empty(),
        "nobody wanted it, yet it was downloaded and cached"
    );
}
