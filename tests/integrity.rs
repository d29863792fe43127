//! Never a wrong byte: corrupted chunk files, broken indexes, `spool
//! verify`, and crashes by real `kill -9` of the real binary.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::origin::Origin;
use common::{client, data, get, wait_for_metric, wait_until_cached, ChildLog, Spool};
use futures::FutureExt;
use rand::{Rng, SeedableRng};

const CHUNK: usize = 64 * 1024;

fn spool_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spool"))
}

/// Runs `spool verify` on a cache; returns (exit code, output).
fn verify(dir: &Path, repair: bool) -> (i32, String) {
    let mut cmd = spool_bin();
    cmd.arg("verify").arg("--cache-dir").arg(dir);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn fill_cache(origin: &Origin, spool: &Spool, path: &str) {
    let (_, _, got) = get(&client(), &spool.url(&origin.url(path)), None).await;
    assert_eq!(got.len(), 8 * CHUNK);
    wait_until_cached(&spool.cache_dir, &origin.url(path)).await;
}

fn chunk_file(dir: &Path, chunk: usize) -> std::path::PathBuf {
    common::only_media_dir(dir).join(format!("{chunk}.chunk"))
}

#[tokio::test]
async fn corrupted_chunk_files_are_never_served() {
    let origin = Origin::start().await;
    let body = data(8 * CHUNK, 41);
    origin.add_file("m", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    fill_cache(&origin, &spool, "m").await;
    let (dir, tmp) = spool.stop().await;
    assert_eq!(verify(&dir, false).0, 0, "clean cache verifies");

    // Flip one byte, truncate one chunk, delete one, add an orphan and a
    // temp file left by a crash.
    let flipped = chunk_file(&dir, 1);
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&flipped, bytes).unwrap();
    let truncated = chunk_file(&dir, 3);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap();
    f.set_len(100).unwrap();
    std::fs::remove_file(chunk_file(&dir, 5)).unwrap();
    let media_dir = flipped.parent().unwrap().to_owned();
    std::fs::write(media_dir.join("99.chunk"), b"orphan").unwrap();
    std::fs::write(media_dir.join(".6.deadbeef.tmp"), b"half").unwrap();

    let (code, out) = verify(&dir, false);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("temp files 1, orphans 1, missing 1, wrong length 1, corrupt 1"),
        "{out}"
    );

    // A restarted spool serves only the origin's bytes, whatever the
    // order of reconciliation and requests.
    let spool = Spool::start_cfg(common::test_config(&dir, &origin)).await;
    let url = spool.url(&origin.url("m"));
    let c = client();
    for _ in 0..2 {
        let (status, _, got) = get(&c, &url, None).await;
        assert_eq!(status, 200);
        assert!(got == body, "a wrong byte was served");
        let (_, _, got) = get(
            &c,
            &url,
            Some(&format!("bytes={}-{}", CHUNK + 500, CHUNK + 1500)),
        )
        .await;
        assert!(got == body.slice(CHUNK + 500..=CHUNK + 1500));
    }
    let (_, _, metrics) = get(&c, &format!("{}/metrics", spool.admin()), None).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("spool_corrupt_chunks_total 1"),
        "the flipped chunk is counted: {metrics}"
    );
    // Start-up reconciliation has removed the temp file and the orphan,
    // and the chunks fetched again are cached.
    for kind in ["temp_file", "orphan"] {
        let name = format!("spool_recovery_fixed_total{{kind=\"{kind}\"}}");
        wait_for_metric(&spool, &name, 1.0).await;
    }
    wait_until_cached(&dir, &origin.url("m")).await;
    let (dir, tmp2) = spool.stop().await;
    let (code, out) = verify(&dir, false);
    assert_eq!(code, 0, "healed after restart and re-fetch: {out}");
    assert!(
        dir.join("quarantine").read_dir().unwrap().count() >= 1,
        "bad chunk kept for a look"
    );
    drop((tmp, tmp2));
}

#[tokio::test]
async fn verify_repair_fixes_what_it_finds() {
    let origin = Origin::start().await;
    origin.add_file("m", data(8 * CHUNK, 43), "video/mp4");
    let spool = Spool::start(&origin).await;
    fill_cache(&origin, &spool, "m").await;
    let (dir, _tmp) = spool.stop().await;
    let f = chunk_file(&dir, 2);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    assert_eq!(verify(&dir, false).0, 1);
    let (code, out) = verify(&dir, true);
    assert_eq!(code, 1, "problems were found: {out}");
    assert!(out.contains("repaired 1"), "{out}");
    assert_eq!(verify(&dir, false).0, 0);
}

async fn broken_index_is_replaced(damage: impl FnOnce(&Path)) {
    let origin = Origin::start().await;
    let body = data(8 * CHUNK, 45);
    origin.add_file("m", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    fill_cache(&origin, &spool, "m").await;
    let (dir, _tmp) = spool.stop().await;
    std::fs::write(dir.join("not-spools.txt"), b"keep me").unwrap();
    damage(&dir.join("index.db"));

    let spool = Spool::start_cfg(common::test_config(&dir, &origin)).await;
    let (status, _, got) = get(&client(), &spool.url(&origin.url("m")), None).await;
    assert_eq!(status, 200);
    assert!(got == body);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("index.db.broken-")),
        "{names:?}"
    );
    assert!(dir.join("not-spools.txt").exists(), "nothing else deleted");
    wait_until_cached(&dir, &origin.url("m")).await;
    let (dir, _tmp2) = spool.stop().await;
    assert_eq!(verify(&dir, false).0, 0);
}

#[tokio::test]
async fn garbage_index_is_moved_aside() {
    broken_index_is_replaced(|p| std::fs::write(p, vec![0xA5u8; 64 * 1024]).unwrap()).await;
}

#[tokio::test]
async fn truncated_index_is_moved_aside() {
    broken_index_is_replaced(|p| {
        let _ = std::fs::remove_file(p.with_extension("db-wal"));
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(1500).unwrap();
    })
    .await;
}

#[tokio::test]
async fn index_from_the_future_is_moved_aside() {
    broken_index_is_replaced(|p| {
        rusqlite::Connection::open(p)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
    })
    .await;
}

/// A real spool process. Its log is a field of its own, so a test can move
/// `child` out (to kill or stop it) and still have the log printed when it
/// fails.
struct Proc {
    child: Child,
    addr: String,
    log: ChildLog,
}

/// Starts `spool serve` on a port the system picks, read back from its log.
async fn start_proc(dir: &Path, origin: &Origin, extra: &[&str]) -> Proc {
    let log = ChildLog::new();
    let mut child = spool_bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--chunk-size",
            "64KiB",
            "--read-ahead",
            "256KiB",
        ])
        .arg("--cache-dir")
        .arg(dir)
        .args(["--allow-upstream", &origin.addr().ip().to_string()])
        // This machine's own free space is not what the tests are about.
        .args(["--min-free-bytes", "0", "--min-free-percent", "0"])
        .args(extra)
        .env("SPOOL_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log.stdio())
        .spawn()
        .unwrap();
    let addr = std::panic::AssertUnwindSafe(log.listen_addr(&mut child))
        .catch_unwind()
        .await;
    match addr {
        Ok(addr) => Proc { child, addr, log },
        Err(panic) => {
            let _ = child.kill();
            let _ = child.wait();
            std::panic::resume_unwind(panic)
        }
    }
}

fn proxied(addr: &str, origin_url: &str) -> String {
    let enc: String = url::form_urlencoded::byte_serialize(origin_url.as_bytes()).collect();
    format!("http://{addr}/stream?url={enc}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_during_heavy_writes() {
    let origin = Origin::start().await;
    let files: Vec<(String, bytes::Bytes)> = (0..4)
        .map(|i| (format!("f{i}"), data(24 * CHUNK + i * 1000, 100 + i as u64)))
        .collect();
    for (name, body) in &files {
        origin.add_file(name, body.clone(), "video/mp4");
        // Slow enough that a kill lands in the middle of the transfers.
        origin.set_faults(name, common::origin::Faults::throttled(6 * 1024 * 1024));
    }
    // Each round reads new URLs (the origin ignores the query), so every
    // round writes new chunks.
    let url_of = |round: usize, name: &str| origin.url(&format!("{name}?round={round}"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let c = client();
    let mut interrupted_rounds = 0;
    for round in 0..50 {
        let proc = start_proc(dir, &origin, &[]).await;
        // After a restart every byte served is the origin's, also for the
        // media the last process was writing when it was killed.
        if round > 0 {
            let (name, body) = &files[round % files.len()];
            let a = rng.random_range(0..body.len());
            let b = (a + rng.random_range(1..400_000)).min(body.len() - 1);
            let url = proxied(&proc.addr, &url_of(round - 1, name));
            let (status, _, got) = get(&c, &url, Some(&format!("bytes={a}-{b}"))).await;
            assert_eq!(status, 206, "round {round}");
            assert!(
                got == body.slice(a..=b),
                "round {round}: wrong bytes after a crash"
            );
        }

        // Heavy concurrent writes: every file read whole by two players.
        let mut load = Vec::new();
        for (name, _) in &files {
            for _ in 0..2 {
                let url = proxied(&proc.addr, &url_of(round, name));
                let c = c.clone();
                load.push(tokio::spawn(async move {
                    if let Ok(r) = c.get(&url).send().await {
                        let _ = r.bytes().await;
                    }
                }));
            }
        }
        // Not synchronisation: the kill lands at a random moment of the load.
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..300))).await;
        let mut child = proc.child;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for l in load {
            let _ = l.await;
        }
        // The index never holds a row for a chunk that is not complete on
        // disk. Temp files and orphans are allowed here: start-up cleans them.
        let (_, out) = verify(dir, false);
        assert!(
            out.contains("missing 0, wrong length 0, corrupt 0"),
            "round {round}: index and files disagree after kill -9:\n{out}"
        );
        let conn = rusqlite::Connection::open(dir.join("index.db")).unwrap();
        let complete: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM media_summary WHERE url LIKE ?1 AND cached_chunks = total_chunks",
                [format!("%round={round}")],
                |r| r.get(0),
            )
            .unwrap();
        if complete < files.len() as i64 {
            interrupted_rounds += 1;
        }
    }
    assert!(
        interrupted_rounds >= 25,
        "only {interrupted_rounds} of 50 kills landed during writes"
    );
    // A last clean start reconciles, and a clean stop leaves nothing to fix.
    let mut proc = start_proc(dir, &origin, &[]).await;
    for (name, body) in &files {
        let (_, _, got) = get(&c, &proxied(&proc.addr, &url_of(49, name)), None).await;
        assert!(got == *body);
    }
    proc.log
        .wait_for_line(&mut proc.child, "start-up reconciliation done")
        .await;
    terminate(proc.child, Duration::from_secs(10)).await;
    let (code, out) = verify(dir, false);
    assert_eq!(code, 0, "{out}");
}

/// Sends SIGTERM and waits for the exit, at most `limit`.
async fn terminate(child: Child, limit: Duration) -> std::process::ExitStatus {
    signal_and_wait(child, libc::SIGTERM, limit).await
}

async fn signal_and_wait(
    mut child: Child,
    signal: i32,
    limit: Duration,
) -> std::process::ExitStatus {
    let pid = child.id() as i32;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, signal) };
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("spool did not exit within {limit:?} of SIGTERM");
        }
        // Polling for the exit; `limit` is what the callers claim about
        // shutdown, not a guess at how long it takes.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_within_the_deadline_and_leaves_no_temp_files() {
    let origin = Origin::start().await;
    let body = data(64 * CHUNK, 51);
    origin.add_file("slow", body.clone(), "video/mp4");
    origin.set_faults("slow", common::origin::Faults::throttled(512 * 1024));
    let tmp = tempfile::tempdir().unwrap();
    let proc = start_proc(tmp.path(), &origin, &["--shutdown-timeout", "2s"]).await;
    let url = proxied(&proc.addr, &origin.url("slow"));
    let mut resp = client().get(&url).send().await.unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(first == body.slice(..first.len()));
    let status = terminate(proc.child, Duration::from_secs(6)).await;
    assert!(status.success(), "{status:?}");
    let (code, out) = verify(tmp.path(), false);
    assert_eq!(code, 0, "{out}");

    // SIGINT (Ctrl-C) the same way.
    let proc = start_proc(tmp.path(), &origin, &["--shutdown-timeout", "2s"]).await;
    let mut resp = client()
        .get(proxied(&proc.addr, &origin.url("slow?again=1")))
        .send()
        .await
        .unwrap();
    resp.chunk().await.unwrap().unwrap();
    let status = signal_and_wait(proc.child, libc::SIGINT, Duration::from_secs(6)).await;
    assert!(status.success(), "{status:?}");
    let (code, out) = verify(tmp.path(), false);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn stats_prints_what_the_cache_holds() {
    let origin = Origin::start().await;
    origin.add_file("m", data(8 * CHUNK, 47), "video/mp4");
    let spool = Spool::start(&origin).await;
    fill_cache(&origin, &spool, "m").await;
    let (dir, _tmp) = spool.stop().await;
    let stats = |thresholds: &[&str]| -> String {
        let out = spool_bin()
            .arg("stats")
            .arg("--cache-dir")
            .arg(&dir)
            .args(thresholds)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let field = |text: &str, name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    // For people by default; byte counts for scripts.
    let text = stats(&[]);
    assert_eq!(field(&text, "cache_size"), "512.00 KiB", "{text}");
    assert!(field(&text, "disk_free").contains("iB of "), "{text}");
    let text = stats(&["--bytes"]);
    assert_eq!(field(&text, "cache_bytes"), (8 * CHUNK).to_string());
    assert!(field(&text, "disk_free").contains(" bytes ("), "{text}");
    assert_eq!(field(&text, "media"), "1");
    assert_eq!(field(&text, "chunks"), "8");
    // The disk level follows the thresholds given: with both at zero any
    // disk is healthy; no filesystem holding a cache is 100% free, so
    // asking for that much is critical.
    let text = stats(&["--min-free-percent", "0", "--min-free-bytes", "0"]);
    assert_eq!(field(&text, "disk_level"), "healthy", "{text}");
    let text = stats(&["--min-free-percent", "100"]);
    assert_eq!(field(&text, "disk_level"), "critical", "{text}");
}

#[tokio::test]
async fn the_background_check_finds_corruption_before_a_player_does() {
    let origin = Origin::start().await;
    let body = data(8 * CHUNK, 49);
    origin.add_file("m", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    fill_cache(&origin, &spool, "m").await;
    let f = chunk_file(&spool.cache_dir, 4);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[77] ^= 0x10;
    std::fs::write(&f, bytes).unwrap();
    // Written by this process, the chunk is trusted on read; the scrub
    // finds it.
    let report = spool.server.scrub().await;
    assert_eq!(
        report.count(|p| matches!(p, spool::testing::Problem::Corrupt { .. })),
        1,
        "{}",
        report.summary()
    );
    assert!(!f.exists(), "quarantined");
    origin.reset_stats();
    let (_, _, got) = get(&client(), &spool.url(&origin.url("m")), None).await;
    assert!(got == body);
    let log = origin.requests_log();
    assert_eq!(log.len(), 1, "only the bad chunk is fetched again: {log:?}");
    assert_eq!(
        log[0].range.as_deref(),
        Some(format!("bytes={}-{}", 4 * CHUNK, 5 * CHUNK - 1).as_str())
    );
}

/// A FIFO planted where a chunk file was never hangs a request: it is
/// refused without waiting for a writer, kept aside for a look, and the
/// chunk comes from the origin.
#[tokio::test]
async fn a_fifo_in_place_of_a_chunk_never_hangs_a_request() {
    let origin = Origin::start().await;
    let body = data(8 * CHUNK, 43);
    origin.add_file("f", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    fill_cache(&origin, &spool, "f").await;
    let chunk = chunk_file(&spool.cache_dir, 2);
    std::fs::remove_file(&chunk).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&chunk)
        .status()
        .unwrap();
    assert!(status.success());
    let range = format!("bytes={}-{}", 2 * CHUNK + 10, 2 * CHUNK + 5000);
    let (status, _, got) = get(&client(), &spool.url(&origin.url("f")), Some(&range)).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(2 * CHUNK + 10..=2 * CHUNK + 5000));
    let quarantined: Vec<_> = std::fs::read_dir(spool.cache_dir.join("quarantine"))
        .unwrap()
        .collect();
    assert_eq!(quarantined.len(), 1, "the FIFO kept aside for a look");
    let (status, _, got) = get(&client(), &spool.url(&origin.url("f")), None).await;
    assert_eq!((status, got.len()), (200, body.len()));
    assert!(got == body);
}

/// The real binary, with a FIFO planted in place of a chunk and a player
/// that stopped reading a slow stream: a request for the FIFO's bytes is
/// answered from the origin, and SIGTERM ends the process within its
/// `--shutdown-timeout` (a FIFO opened for reading would otherwise block a
/// thread that the exit waits for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_fifo_chunk_exits_within_the_shutdown_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    let body = data(8 * CHUNK, 49);
    origin.add_file("f", body.clone(), "video/mp4");
    origin.add_file("slow", data(16 << 20, 50), "video/mp4");
    origin.set_faults("slow", common::origin::Faults::throttled(1 << 20));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut proc = start_proc(dir, &origin, &["--shutdown-timeout", "2s"]).await;
    let c = client();
    let (_, _, got) = get(&c, &proxied(&proc.addr, &origin.url("f")), None).await;
    assert!(got == body);
    wait_until_cached(dir, &origin.url("f")).await;
    let chunk = chunk_file(dir, 2); // the only media cached so far
    assert!(chunk.exists(), "{chunk:?}");
    std::fs::remove_file(&chunk).unwrap();
    let status = Command::new("mkfifo").arg(&chunk).status().unwrap();
    assert!(status.success());

    // A player that read a little of a slow stream and stopped reading.
    let mut stalled = tokio::net::TcpStream::connect(&proc.addr).await.unwrap();
    let slow = proxied(&proc.addr, &origin.url("slow"));
    let path = slow.split_once(&proc.addr).unwrap().1;
    stalled
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    assert!(stalled.read(&mut buf).await.unwrap() > 0);

    let range = format!("bytes={}-{}", 2 * CHUNK + 10, 2 * CHUNK + 5000);
    let (status, _, got) = get(&c, &proxied(&proc.addr, &origin.url("f")), Some(&range)).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(2 * CHUNK + 10..=2 * CHUNK + 5000));

    let t0 = std::time::Instant::now();
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(
        unsafe { libc::kill(proc.child.id() as i32, libc::SIGTERM) },
        0
    );
    let exited = loop {
        if let Some(status) = proc.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "still running {:?} after SIGTERM with --shutdown-timeout 2s:\n{}",
            t0.elapsed(),
            proc.log.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exited.success(), "{exited}: {}", proc.log.text());
}

/// One server per cache directory: a second server on a held cache, and
/// `spool verify --repair` (which would remove the first one's writes
/// under way), refuse with the reason; `verify` without repair may look;
/// once the first stops, the cache is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_directory_is_held_by_one_server() {
    let origin = Origin::start().await;
    origin.add_file("m", data(8 * CHUNK, 47), "video/mp4");
    let spool = Spool::start(&origin).await;
    fill_cache(&origin, &spool, "m").await;
    let second = spool::Server::new(common::test_config(&spool.cache_dir, &origin)).await;
    let e = second
        .err()
        .expect("a second server on a held cache refuses");
    assert!(
        format!("{e:#}").contains("holds the cache directory"),
        "{e:#}"
    );
    let dir = spool.cache_dir.clone();
    let (code, out) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            let out = spool_bin()
                .args(["verify", "--repair", "--cache-dir"])
                .arg(&dir)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    assert_ne!(code, Some(0));
    assert!(out.contains("stop the server first"), "{out}");
    let looked = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || verify(&dir, false)
    })
    .await
    .unwrap();
    assert_eq!(looked.0, 0, "verify without repair looks: {}", looked.1);
    let (dir, _tmp) = spool.stop().await;
    let (code, out) = verify(&dir, true);
    assert_eq!(code, 0, "{out}");
    spool::Server::new(common::test_config(&dir, &origin))
        .await
        .expect("free once the first server stopped");
}
