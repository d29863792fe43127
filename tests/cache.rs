//! The progressive chunk cache: byte identity on cold and warm reads,
//! zero upstream traffic for what was read once, one request per missing
//! stretch, single flight, read-ahead and its end.

mod common;

use spool::config::ReadAhead;
use std::time::Duration;

use common::origin::{Faults, Origin};
use common::{client, data, get, header, metric, wait_for, wait_until_cached, Spool};
use rand::{Rng, SeedableRng};

const CHUNK: u64 = 64 * 1024;

#[tokio::test]
async fn random_ranges_cold_then_warm_are_byte_identical() {
    let origin = Origin::start().await;
    let size = 2 * 1024 * 1024 + 12345;
    let body = data(size, 7);
    origin.add_file("v.mkv", body.clone(), "video/x-matroska");
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("v.mkv"));
    let c = client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let ranges: Vec<(usize, usize)> = (0..40)
        .map(|_| {
            let a = rng.random_range(0..size);
            let len = rng.random_range(1..300_000);
            (a, (a + len).min(size) - 1)
        })
        .collect();
    for pass in ["cold", "warm"] {
        for &(a, b) in &ranges {
            let (status, _, got) = get(&c, &url, Some(&format!("bytes={a}-{b}"))).await;
            assert_eq!(status, 206, "{pass} {a}-{b}");
            assert!(got == body.slice(a..=b), "{pass} {a}-{b}: bytes differ");
        }
    }
    // Once everything the ranges touched is cached, reading them again
    // makes no upstream request at all.
    let touched: std::collections::BTreeSet<u64> = ranges
        .iter()
        .flat_map(|&(a, b)| a as u64 / CHUNK..=b as u64 / CHUNK)
        .collect();
    wait_for("every chunk the ranges touched to be cached", || async {
        let cached = common::cached_chunks(&spool.cache_dir, &origin.url("v.mkv"));
        touched.iter().all(|i| cached.binary_search(i).is_ok())
    })
    .await;
    origin.reset_stats();
    for &(a, b) in &ranges {
        let (_, _, got) = get(&c, &url, Some(&format!("bytes={a}-{b}"))).await;
        assert!(got == body.slice(a..=b));
    }
    assert_eq!(origin.stats().requests, 0, "warm reads went upstream");
}

#[tokio::test]
async fn second_read_makes_zero_upstream_requests_even_after_restart() {
    let origin = Origin::start().await;
    let body = data(1024 * 1024, 3);
    origin.add_file("a.mp4", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let origin_url = origin.url("a.mp4");
    let c = client();
    let (_, _, got) = get(&c, &spool.url(&origin_url), None).await;
    assert_eq!(got, body);
    let spans = request_spans(&origin);
    assert_eq!(
        merged(&spans),
        vec![(0, body.len() as u64 - 1)],
        "each byte once"
    );
    assert!(
        spans.len() <= 6,
        "requests grow as the player reads: {spans:?}"
    );
    assert_eq!(origin.stats().body_bytes, body.len() as u64);

    // Once the last chunk writes landed, read again.
    wait_until_cached(&spool.cache_dir, &origin_url).await;
    origin.reset_stats();
    let (_, h, got) = get(&c, &spool.url(&origin_url), None).await;
    assert_eq!(got, body);
    assert_eq!(header(&h, "content-type"), "video/mp4");
    assert_eq!(origin.stats().requests, 0);

    // A new process on the same cache directory: metadata and chunks come
    // from the index, nothing from the origin.
    let (dir, tmp) = spool.stop().await;
    let spool = Spool::start_cfg(common::test_config(&dir, &origin)).await;
    let (status, h, got) = get(&c, &spool.url(&origin_url), Some("bytes=1000-")).await;
    assert_eq!(status, 206);
    assert_eq!(got, body.slice(1000..));
    assert_eq!(header(&h, "etag"), origin.etag("a.mp4").unwrap());
    assert_eq!(origin.stats().requests, 0);

    // The index is a plain SQLite file people can read.
    let conn = rusqlite::Connection::open(dir.join("index.db")).unwrap();
    let (cached, total, percent): (i64, i64, f64) = conn
        .query_row(
            "SELECT cached_chunks, total_chunks, cached_percent FROM media_summary",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((cached, total), (16, 16));
    assert_eq!(percent, 100.0);
    let files = std::fs::read_dir(dir.join("chunks"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .count();
    assert_eq!(files, 16, "one file per chunk");

    // And the sqlite3 CLI reads it while spool runs (WAL mode).
    let out = std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(dir.join("index.db"))
        .arg("SELECT url, cached_percent FROM media_summary")
        .output()
        .expect("the sqlite3 CLI is installed (scripts/test installs it)");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{origin_url}|100.0")
    );
    drop(spool);
    drop(tmp);
}

/// A cache made with one chunk size stays good when spool restarts with
/// another (the default changed from 4 MiB to 1 MiB): a media keeps the
/// chunk size it was cached with, and new media get the new one.
#[tokio::test]
async fn media_keep_their_chunk_size_when_the_setting_changes() {
    let origin = Origin::start().await;
    let old = data(3 * 256 * 1024 + 1000, 43);
    origin.add_file("old", old.clone(), "video/mp4");
    let new = data(3 * 256 * 1024 + 1000, 47);
    origin.add_file("new", new.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |c| c.chunk_size = 256 * 1024).await;
    let c = client();
    let (_, _, got) = get(&c, &spool.url(&origin.url("old")), None).await;
    assert!(got == old);
    wait_until_cached(&spool.cache_dir, &origin.url("old")).await;
    let (dir, tmp) = spool.stop().await;

    let mut cfg = common::test_config(&dir, &origin);
    cfg.chunk_size = 64 * 1024;
    let spool = Spool::start_cfg(cfg).await;
    origin.reset_stats();
    for range in ["bytes=0-", "bytes=300000-", "bytes=262143-262144"] {
        let (_, _, got) = get(&c, &spool.url(&origin.url("old")), Some(range)).await;
        let from: usize = range[6..].split('-').next().unwrap().parse().unwrap();
        let to = range
            .split('-')
            .nth(1)
            .filter(|t| !t.is_empty())
            .map_or(old.len(), |t| t.parse::<usize>().unwrap() + 1);
        assert!(got == old.slice(from..to), "{range}");
    }
    assert_eq!(
        origin.stats().requests,
        0,
        "the old media is read from its chunks"
    );
    let (_, _, got) = get(&c, &spool.url(&origin.url("new")), None).await;
    assert!(got == new);
    wait_until_cached(&spool.cache_dir, &origin.url("new")).await;
    let conn = rusqlite::Connection::open(dir.join("index.db")).unwrap();
    let sizes: Vec<(String, i64, i64)> = conn
        .prepare(
            "SELECT m.url, m.chunk_size_bytes, COUNT(c.chunk_index) FROM media m \
             JOIN chunks c USING (media_id) GROUP BY m.media_id ORDER BY m.url",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        sizes,
        vec![
            (origin.url("new"), 64 * 1024, 13),
            (origin.url("old"), 256 * 1024, 4),
        ]
    );
    drop(spool);
    drop(tmp);
}

#[tokio::test]
async fn first_bytes_arrive_before_the_chunk_is_complete() {
    let origin = Origin::start().await;
    let body = data(2 * 1024 * 1024, 5);
    origin.add_file("slow", body.clone(), "video/mp4");
    origin.set_faults("slow", Faults::throttled(256 * 1024));
    // One chunk is 1 MiB: four seconds of this origin.
    let spool = Spool::start_with(&origin, |c| c.chunk_size = 1024 * 1024).await;
    let mut resp = client()
        .get(spool.url(&origin.url("slow")))
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(first, body.slice(..first.len()));
    let sent = origin.stats().body_bytes;
    assert!(
        sent < 1024 * 1024,
        "the first bytes came after the origin sent {sent} bytes: not streamed"
    );
}

#[tokio::test]
async fn concurrent_cold_players_share_one_transfer() {
    let origin = Origin::start().await;
    let size = 3 * 1024 * 1024 + 1;
    let body = data(size, 9);
    origin.add_file("shared", body.clone(), "video/mp4");
    origin.set_faults("shared", Faults::throttled(8 * 1024 * 1024));
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("shared"));
    let c = client();
    let players: Vec<_> = (0..20)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { get(&c, &url, None).await })
        })
        .collect();
    for p in players {
        let (status, _, got) = p.await.unwrap();
        assert_eq!(status, 200);
        assert!(got == body, "a player got wrong bytes");
    }
    let stats = origin.stats();
    assert_eq!(
        stats.body_bytes, size as u64,
        "origin bytes / file size must be 1.00 (stats {stats:?})"
    );
}

#[tokio::test]
async fn read_ahead_fetches_the_window_after_the_playhead() {
    let origin = Origin::start().await;
    let body = data(4 * 1024 * 1024, 11);
    origin.add_file("ra", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await; // read-ahead 256 KiB = 4 chunks
    let url = spool.url(&origin.url("ra"));
    let c = client();
    // A player reading on (open-ended range) that stops after 20 chunks: its
    // window is what it read past its first piece (1 MiB), 4 chunks.
    let mut resp = c
        .get(&url)
        .header("range", "bytes=0-")
        .send()
        .await
        .unwrap();
    let mut read = Vec::new();
    while (read.len() as u64) < 20 * CHUNK {
        read.extend_from_slice(&resp.chunk().await.unwrap().unwrap());
    }
    assert!(read[..] == body[..read.len()]);
    drop(resp);
    // The four chunks after the one reached come without asking.
    wait_for("read-ahead to cache chunks 21 to 24", || async {
        let cached = common::cached_chunks(&spool.cache_dir, &origin.url("ra"));
        (21..25).all(|i| cached.contains(&i))
    })
    .await;
    origin.reset_stats();
    let (_, _, got) = get(
        &c,
        &url,
        Some(&format!("bytes={}-{}", 21 * CHUNK, 25 * CHUNK - 1)),
    )
    .await;
    assert!(got == body.slice(21 * CHUNK as usize..25 * CHUNK as usize));
    // Requests made now are this read's own read-ahead, past the window.
    for (start, _) in request_spans(&origin) {
        assert!(start >= 25 * CHUNK, "chunk at {start} was not read ahead");
    }
}

/// A player that reads one piece and leaves (a probe, a seek preview)
/// gets no read-ahead: the origin sends at most the chunk it read from.
/// (The origin is throttled so that what the player took is what spool
/// sent: a fast origin's bytes fill the connection's buffers at once.)
#[tokio::test]
async fn an_abandoned_first_piece_costs_at_most_its_chunk() {
    let origin = Origin::start().await;
    let chunk = 1024 * 1024;
    let body = data(16 * chunk as usize, 12);
    origin.add_file("probe", body.clone(), "video/mp4");
    origin.set_faults("probe", Faults::throttled(4 * 1024 * 1024));
    let spool = spool_with_chunks(&origin, chunk, 8).await;
    let url = spool.url(&origin.url("probe"));
    let c = client();
    for at in [0, 5 * chunk + 1000] {
        origin.reset_stats();
        let mut resp = c
            .get(&url)
            .header("range", format!("bytes={at}-"))
            .send()
            .await
            .unwrap();
        let mut read = Vec::new();
        while read.len() < 64 * 1024 {
            read.extend_from_slice(&resp.chunk().await.unwrap().unwrap());
        }
        assert!(read[..] == body[at as usize..at as usize + read.len()]);
        drop(resp);
        // The chunk finishes and the run ends after the grace: whatever it
        // fetched is counted.
        common::wait_idle(&spool).await;
        let sent = origin.stats().body_bytes;
        assert!(
            sent <= chunk,
            "{sent} origin bytes for a 64 KiB read at {at}"
        );
    }
}

/// A player reading on from a distant origin finds its next chunk on the
/// way: the request for it leaves once what the current request still
/// brings takes about one origin time to first byte (both measured), not
/// only when the player's window reaches the chunk. At the first chunk
/// the window reaches it at 768 KiB, too late for an origin 200 ms away
/// sending 2 MiB/s: the player would wait at the chunk's end.
#[tokio::test]
async fn the_next_request_leaves_one_origin_latency_before_it_is_needed() {
    let origin = Origin::start().await;
    let chunk = 1024 * 1024;
    let body = data(4 * chunk as usize, 13);
    origin.add_file("far", body.clone(), "video/mp4");
    origin.set_faults(
        "far",
        Faults {
            latency: Duration::from_millis(200),
            rate_bytes_per_sec: Some(2 * chunk),
            ..Faults::default()
        },
    );
    let spool = spool_with_chunks(&origin, chunk, 8).await;
    let url = spool.url(&origin.url("far"));
    let want = body.slice(..(chunk + chunk / 2) as usize);
    let player = tokio::spawn(async move {
        let mut resp = client()
            .get(&url)
            .header("range", "bytes=0-")
            .send()
            .await
            .unwrap();
        let mut read = Vec::new();
        while read.len() < want.len() {
            read.extend_from_slice(&resp.chunk().await.unwrap().unwrap());
        }
        read.truncate(want.len());
        read == want[..]
    });
    // What the origin had sent of chunk 0 when the request for chunk 1
    // came (the log is looked at every 2 ms: 4 KiB at this rate).
    let sent_before = loop {
        let log = origin.requests_log();
        let next = format!("bytes={chunk}-");
        if log
            .iter()
            .any(|r| r.range.as_deref().is_some_and(|h| h.starts_with(&next)))
        {
            assert_eq!(log[0].range.as_deref(), Some("bytes=0-1048575"));
            break log[0].body_bytes;
        }
        assert!(!player.is_finished(), "no request for chunk 1: {log:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(player.await.unwrap(), "wrong bytes");
    // Not before the player read past its first piece (512 KiB), and well
    // before its window reached chunk 1.
    assert!(
        (512 * 1024..700 * 1024).contains(&sent_before),
        "chunk 1 asked for when chunk 0 had {sent_before} bytes sent"
    );
}

#[tokio::test]
async fn abandoned_stream_stops_downloading() {
    let origin = Origin::start().await;
    let size = 16 * 1024 * 1024;
    origin.add_file("big", data(size, 13), "video/mp4");
    origin.set_faults("big", Faults::throttled(2 * 1024 * 1024));
    let spool = Spool::start(&origin).await;
    let mut resp = client()
        .get(spool.url(&origin.url("big")))
        .send()
        .await
        .unwrap();
    let mut got = 0;
    while got < 100_000 {
        got += resp.chunk().await.unwrap().unwrap().len();
    }
    // The player goes away; after the grace its run ends at its next
    // chunk boundary (a run that went on would never let spool go idle),
    // and the origin lets its last body go.
    drop(resp);
    common::wait_idle(&spool).await;
    wait_for("the origin to send nothing more", || {
        std::future::ready(origin.open_bodies() == 0)
    })
    .await;
    let later = origin.stats().body_bytes;
    assert!(
        later < 2 * 1024 * 1024,
        "downloaded {later} bytes of {size} for a player that read 100 KB"
    );
}

#[tokio::test]
async fn seeking_during_a_download() {
    let origin = Origin::start().await;
    let size = 4 * 1024 * 1024;
    let body = data(size, 17);
    origin.add_file("seek", body.clone(), "video/mp4");
    origin.set_faults("seek", Faults::throttled(4 * 1024 * 1024));
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("seek"));
    let c = client();
    // A player starts at 0, reads a bit, then seeks (new request) while
    // the first download is still running; another seeks backwards.
    let mut first = c.get(&url).send().await.unwrap();
    let piece = first.chunk().await.unwrap().unwrap();
    assert_eq!(piece, body.slice(..piece.len()));
    let seeks = [3 * 1024 * 1024 + 5, 1024 * 1024 - 3, 100, 2 * 1024 * 1024];
    for a in seeks {
        let (status, _, got) = get(&c, &url, Some(&format!("bytes={a}-{}", a + 200_000))).await;
        assert_eq!(status, 206);
        assert!(got == body.slice(a..=a + 200_000), "seek to {a}");
    }
    drop(first);
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == body);
}

#[tokio::test]
async fn a_player_leaving_does_not_disturb_others() {
    let origin = Origin::start().await;
    let body = data(2 * 1024 * 1024, 19);
    origin.add_file("f", body.clone(), "video/mp4");
    origin.set_faults("f", Faults::throttled(4 * 1024 * 1024));
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("f"));
    let c = client();
    let mut leavers = Vec::new();
    for _ in 0..5 {
        let mut r = c.get(&url).send().await.unwrap();
        r.chunk().await.unwrap();
        leavers.push(r);
    }
    let stayer = {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move { get(&c, &url, None).await })
    };
    // The leavers go while the stayer streams too.
    wait_for("the stayer's response to start", || async {
        metric(&spool, "spool_active_streams").await >= 6.0
    })
    .await;
    drop(leavers);
    let (status, _, got) = stayer.await.unwrap();
    assert_eq!(status, 200);
    assert!(got == body);
}

#[tokio::test]
async fn requests_cover_each_missing_stretch_once() {
    let origin = Origin::start().await;
    let size = 20 * CHUNK as usize;
    let body = data(size, 23);
    origin.add_file("gaps", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("gaps"));
    let c = client();
    // Cache a stretch in the middle (with its read-ahead).
    let (_, _, got) = get(
        &c,
        &url,
        Some(&format!("bytes={}-{}", 3 * CHUNK, 5 * CHUNK - 1)),
    )
    .await;
    assert!(got == body.slice(3 * CHUNK as usize..5 * CHUNK as usize));
    // The downloads for it are over once every byte the origin sent is in
    // a cached chunk.
    wait_for("the stretch's downloads to end and be cached", || async {
        let cached = common::cached_chunks(&spool.cache_dir, &origin.url("gaps"));
        cached.contains(&3)
            && cached.contains(&4)
            && origin.stats().body_bytes == cached.len() as u64 * CHUNK
    })
    .await;
    let conn = rusqlite::Connection::open(spool.cache_dir.join("index.db")).unwrap();
    let cached: Vec<u64> = conn
        .prepare("SELECT chunk_index FROM chunks ORDER BY chunk_index")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0).map(|v| v as u64))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (lo, hi) = (cached[0], *cached.last().unwrap());
    assert_eq!(cached, (lo..=hi).collect::<Vec<_>>(), "one cached stretch");
    assert!(lo == 3 && hi < 19, "cached {cached:?}");

    origin.reset_stats();
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == body);
    // Each missing stretch is fetched once, in requests that grow as the
    // player reads on, none reaching into the cached chunks.
    let spans = request_spans(&origin);
    assert_eq!(
        merged(&spans),
        vec![(0, lo * CHUNK - 1), ((hi + 1) * CHUNK, size as u64 - 1)],
        "requests cover exactly the missing stretches: {spans:?}"
    );
    assert_eq!(
        origin.stats().body_bytes,
        size as u64 - cached.len() as u64 * CHUNK,
        "cached chunks were fetched again"
    );
}

#[tokio::test]
async fn a_seek_does_not_borrow_the_window_of_a_player_elsewhere() {
    let origin = Origin::start().await;
    let chunk = 1024 * 1024;
    let body = data(32 * chunk as usize, 37);
    origin.add_file("two", body.clone(), "video/mp4");
    let spool = spool_with_chunks(&origin, chunk, 16).await;
    let url = spool.url(&origin.url("two"));
    let c = client();
    // A player reads on from chunk 10, far past its first piece: its
    // window reaches well beyond it. It stays connected.
    let at = 10 * chunk as usize;
    let mut far = c
        .get(&url)
        .header("range", format!("bytes={at}-"))
        .send()
        .await
        .unwrap();
    let mut read = 0;
    while read < 4 * chunk as usize {
        let b = far.chunk().await.unwrap().unwrap();
        assert!(b[..] == body[at + read..at + read + b.len()]);
        read += b.len();
    }
    // Another player asks for 100 KB in chunk 3.
    origin.reset_stats();
    let seek = 3 * chunk + 5000;
    let range = format!("bytes={seek}-{}", seek + 99_999);
    let (_, _, got) = get(&c, &url, Some(&range)).await;
    assert!(got == body.slice(seek as usize..seek as usize + 100_000));
    // Its requests are for its own chunk: neither the far player's window
    // nor its open range stretch them towards chunk 10.
    let spans: Vec<_> = request_spans(&origin)
        .into_iter()
        .filter(|&(a, _)| a < 10 * chunk)
        .collect();
    assert!(!spans.is_empty());
    for (a, b) in &spans {
        assert!(
            *a >= 3 * chunk && *b < 4 * chunk,
            "asked for {a}-{b} for a preview of chunk 3: {spans:?}"
        );
    }
    drop(far);
}

/// A player that stops reading holds little: spool does not pile the
/// response up in the connection's buffers (the kernel would take
/// megabytes), so it neither counts the player as reading on nor fetches
/// read-ahead for it.
#[tokio::test]
async fn a_player_that_stops_reading_gets_no_read_ahead() {
    use tokio::io::AsyncReadExt;
    let origin = Origin::start().await;
    let chunk = 1024 * 1024;
    let body = data(16 * chunk as usize, 41);
    origin.add_file("stops", body.clone(), "video/mp4");
    let spool = spool_with_chunks(&origin, chunk, 8).await;
    let url = spool.url(&origin.url("stops"));
    let mut stream = raw_get_from_start(&spool, &url, 4096).await;
    let mut buf = [0; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 206"));
    // The player stays connected, reading nothing more: its chunk is
    // fetched, and no run goes on past it (the one that fetched it waits
    // for the player to read on, transferring nothing).
    wait_for("its chunk to be cached", || async {
        common::cached_chunks(&spool.cache_dir, &origin.url("stops")) == [0]
    })
    .await;
    common::wait_for_metric_at_most(&spool, "spool_downloads_transferring", 0.0).await;
    let sent = origin.stats().body_bytes;
    assert_eq!(sent, chunk, "origin bytes for a player that read 1 KiB");
    drop(stream);
}

/// `--read-ahead` in seconds on a media whose container tells no duration:
/// the byte rate comes from a player reading at its own pace, so the
/// window is two seconds of its reading, not what it has read so far.
#[tokio::test]
async fn read_ahead_in_seconds_learns_the_rate_from_a_paced_player() {
    use tokio::io::AsyncReadExt;
    const RATE: f64 = 2.0 * 1024.0 * 1024.0;
    let origin = Origin::start().await;
    let chunk = 256 * 1024;
    let body = data(48 << 20, 53);
    origin.add_file("paced", body.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |cfg| {
        cfg.chunk_size = chunk;
        cfg.read_ahead = ReadAhead::Time(Duration::from_secs(2));
        cfg.read_ahead_limit = 64 << 20;
    })
    .await;
    let url = spool.url(&origin.url("paced"));
    let mut stream = raw_get_from_start(&spool, &url, 64 * 1024).await;
    let mut got = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let head_end = loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = find(&got, b"\r\n\r\n") {
            break i + 4;
        }
    };
    let mut read = got.len() - head_end;
    // Plays 10 s at 2 MiB/s.
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        assert!(buf[..n] == body[read..read + n]);
        read += n;
        tokio::time::sleep_until(start + Duration::from_secs_f64(read as f64 / RATE)).await;
    }
    // The player leaves; its window is finished within the grace, and then
    // nothing more is fetched.
    drop(stream);
    common::wait_idle(&spool).await;
    let sent = origin.stats().body_bytes;
    // Two seconds of playback ahead (4 MiB), the next request sent early
    // (at most as long), and what the connection holds. A window as long
    // as what was read (the fallback) would reach about 40 MiB.
    assert!(
        sent <= read as u64 + (10 << 20),
        "{sent} origin bytes for {read} read: {:?}",
        request_spans(&origin)
    );
}

/// spool with `chunk`-byte chunks and a read-ahead of `window` chunks.
async fn spool_with_chunks(origin: &Origin, chunk: u64, window: u64) -> Spool {
    Spool::start_with(origin, |cfg| {
        cfg.chunk_size = chunk;
        cfg.read_ahead = ReadAhead::Bytes(window * chunk);
    })
    .await
}

/// A raw connection asking for `bytes=0-` of `url`, with a receive buffer
/// of `recv_buffer` bytes (so that what spool sent is close to what the
/// player took); nothing read yet.
async fn raw_get_from_start(spool: &Spool, url: &str, recv_buffer: u32) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let path = &url[format!("http://{}", spool.addr).len()..];
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(recv_buffer).unwrap();
    let mut stream = socket.connect(spool.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=0-\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream
}

/// The byte ranges the origin was asked for, in order.
fn request_spans(origin: &Origin) -> Vec<(u64, u64)> {
    origin
        .requests_log()
        .iter()
        .map(|r| {
            let range = r.range.clone().expect("ranged request");
            let (a, b) = range
                .trim_start_matches("bytes=")
                .split_once('-')
                .expect("a-b");
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// Sorted ranges merged where they touch; panics when two overlap (a byte
/// asked for twice).
fn merged(spans: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut sorted = spans.to_vec();
    sorted.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in sorted {
        match out.last_mut() {
            Some(last) if a <= last.1 => panic!("bytes asked for twice: {spans:?}"),
            Some(last) if a == last.1 + 1 => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out
}

#[tokio::test]
async fn a_seek_into_a_missing_chunk_starts_at_the_players_byte() {
    let origin = Origin::start().await;
    let size = 2 * 1024 * 1024;
    let body = data(size, 29);
    origin.add_file("s", body.clone(), "video/mp4");
    origin.set_faults("s", Faults::throttled(512 * 1024));
    let spool = Spool::start_with(&origin, |c| {
        c.chunk_size = 1024 * 1024;
        c.read_ahead = ReadAhead::Bytes(0);
    })
    .await;
    let url = spool.url(&origin.url("s"));
    let c = client();
    // Cold (the media's first request) and then warm media, both in the
    // middle of a missing chunk.
    for a in [700_000usize, 1024 * 1024 + 900_000] {
        origin.reset_stats();
        let mut resp = c
            .get(&url)
            .header("range", format!("bytes={a}-{}", a + 99_999))
            .send()
            .await
            .unwrap();
        let first = resp.chunk().await.unwrap().unwrap();
        assert_eq!(first, body.slice(a..a + first.len()));
        let sent = origin.stats().body_bytes;
        assert!(
            sent < 300_000,
            "first byte after {sent} origin bytes: the chunk head was fetched first"
        );
        let mut got = first.to_vec();
        while let Some(b) = resp.chunk().await.unwrap() {
            got.extend_from_slice(&b);
        }
        assert!(got == body.slice(a..a + 100_000));
    }
    // Both chunks complete (heads fetched on the side) and are cached;
    // every byte came from the origin exactly once.
    wait_until_cached(&spool.cache_dir, &origin.url("s")).await;
    let before = origin.stats().requests;
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == body);
    assert_eq!(origin.stats().requests, before, "not cached whole");
}

#[tokio::test]
async fn a_closed_range_fetches_only_what_it_asks_for() {
    let origin = Origin::start().await;
    let size = 64 * CHUNK as usize;
    let body = data(size, 31);
    origin.add_file("closed", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("closed"));
    let c = client();
    // Cold (first request) and warm media: a 1000-byte range in chunk 10.
    for (a, b) in [
        (10 * CHUNK + 5, 10 * CHUNK + 1004),
        (20 * CHUNK + 5, 21 * CHUNK + 9),
    ] {
        origin.reset_stats();
        let (_, _, got) = get(&c, &url, Some(&format!("bytes={a}-{b}"))).await;
        assert!(got == body.slice(a as usize..=b as usize));
        common::wait_idle(&spool).await;
        let sent = origin.stats().body_bytes;
        let chunks = b / CHUNK - a / CHUNK + 1;
        assert!(
            sent <= chunks * CHUNK,
            "{sent} origin bytes for a range within {chunks} chunk(s)"
        );
    }
    // A player reading on in consecutive ranges gets read-ahead again once
    // it read past its first piece (1 MiB, 16 chunks).
    origin.reset_stats();
    for i in 22..40 {
        let (_, _, got) = get(
            &c,
            &url,
            Some(&format!("bytes={}-{}", i * CHUNK, (i + 1) * CHUNK - 1)),
        )
        .await;
        assert!(got == body.slice((i * CHUNK) as usize..((i + 1) * CHUNK) as usize));
    }
    wait_for("read-ahead for consecutive ranges", || async {
        common::cached_chunks(&spool.cache_dir, &origin.url("closed")).contains(&41)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_catching_up_with_a_fast_download_never_start_a_second_one() {
    let origin = Origin::start().await;
    let size = 4 * 1024 * 1024;
    let body = data(size, 37);
    origin.add_file("fast", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let c = client();
    for round in 0..3 {
        // A new URL each round (the origin ignores the query).
        let url = spool.url(&origin.url(&format!("fast?round={round}")));
        origin.reset_stats();
        let players: Vec<_> = (0..20)
            .map(|_| {
                let (c, url) = (c.clone(), url.clone());
                tokio::spawn(async move { get(&c, &url, None).await })
            })
            .collect();
        for p in players {
            let (_, _, got) = p.await.unwrap();
            assert!(got == body);
        }
        // One transfer at a time for the whole file: no byte asked twice,
        // in requests of several chunks each (they double as the players
        // read on).
        let spans = request_spans(&origin);
        assert_eq!(merged(&spans), vec![(0, size as u64 - 1)], "round {round}");
        assert!(spans.len() <= 20, "round {round}: {} requests", spans.len());
        assert_eq!(origin.stats().body_bytes, size as u64);
    }
}

#[tokio::test]
async fn the_cache_stays_within_its_maximum_size() {
    let origin = Origin::start().await;
    let a = data(8 * CHUNK as usize, 41);
    let b = data(8 * CHUNK as usize, 42);
    origin.add_file("a", a.clone(), "video/mp4");
    origin.add_file("b", b.clone(), "video/mp4");
    let max = 10 * CHUNK;
    let spool = Spool::start_with(&origin, |c| c.max_cache_size = max).await;
    let c = client();
    let (_, _, got) = get(&c, &spool.url(&origin.url("a")), None).await;
    assert!(got == a);
    wait_until_cached(&spool.cache_dir, &origin.url("a")).await;
    // Not synchronisation: access times have a one-second resolution, so
    // wall-clock time passes to make "a" clearly older.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, _, got) = get(&c, &spool.url(&origin.url("b")), None).await;
    assert!(got == b);
    let per_media = || -> Vec<(String, i64, i64)> {
        let conn = rusqlite::Connection::open(spool.cache_dir.join("index.db")).unwrap();
        let mut stmt = conn
            .prepare("SELECT url, cached_chunks, cached_bytes FROM media_summary ORDER BY url")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    wait_until_cached(&spool.cache_dir, &origin.url("b")).await;
    // Trims run with the disk checks (every 100 ms in the test settings).
    wait_for("the cache to be trimmed to its maximum size", || async {
        per_media().iter().map(|m| m.2).sum::<i64>() as u64 <= max
    })
    .await;
    let per_media = per_media();
    assert_eq!(
        per_media[1].1, 8,
        "the recently played media stays whole: {per_media:?}"
    );
    assert!(per_media[0].1 < 8, "the older one made room: {per_media:?}");
    // Still served correctly, partly from the origin again.
    let (_, _, got) = get(&c, &spool.url(&origin.url("a")), None).await;
    assert!(got == a);
}

/// Now before later: a player that seeks ahead of a running download, into
/// the chunk it fills, gets a request of its own from its byte instead of
/// waiting for the download to get there; the download stops at that byte,
/// so no byte comes twice.
#[tokio::test]
async fn a_seek_ahead_of_a_slow_download_does_not_wait_for_it() {
    let origin = Origin::start().await;
    let chunk = 1024 * 1024;
    let body = data(4 * chunk as usize, 51);
    origin.add_file("slow", body.clone(), "video/mp4");
    origin.set_faults("slow", Faults::throttled(512 * 1024));
    let spool = spool_with_chunks(&origin, chunk, 4).await;
    let url = spool.url(&origin.url("slow"));
    let c = client();
    // A player starts at the beginning and keeps its connection open.
    let mut first = c
        .get(&url)
        .header("range", "bytes=0-")
        .send()
        .await
        .unwrap();
    let piece = first.chunk().await.unwrap().unwrap();
    assert!(piece[..] == body[..piece.len()]);
    // Another seeks 700 kB into the same chunk, far ahead of the download.
    let at = 700_000u64;
    let (status, _, got) = get(&c, &url, Some(&format!("bytes={at}-{}", at + 9999))).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(at as usize..at as usize + 10000));
    let spans = request_spans(&origin);
    assert!(
        spans.iter().any(|&(a, _)| a == at),
        "no request from the seek's byte: {spans:?}"
    );
    assert!(common::metric(&spool, "spool_seek_requests_total").await >= 1.0);
    drop(first);
    // Both parts make one chunk, cached whole and right.
    wait_for("chunk 0 to be cached", || async {
        common::cached_chunks(&spool.cache_dir, &origin.url("slow")).contains(&0)
    })
    .await;
    origin.reset_stats();
    let (_, _, got) = get(&c, &url, Some(&format!("bytes=0-{}", chunk - 1))).await;
    assert!(got == body.slice(..chunk as usize));
    assert_eq!(origin.stats().requests, 0, "chunk 0 is whole in the cache");
}

/// Small reads going backwards inside a missing chunk (a FLAC or MP4 probe
/// looking for an index near the end) each fetch from the byte asked for,
/// not from the chunk's start, and the chunk still ends up whole.
#[tokio::test]
async fn small_reads_backwards_in_a_missing_chunk_fetch_from_their_bytes() {
    let origin = Origin::start().await;
    let chunk = 1024 * 1024;
    let body = data(2 * chunk as usize, 52);
    origin.add_file("flac", body.clone(), "audio/flac");
    origin.set_faults("flac", Faults::throttled(512 * 1024));
    let spool = Spool::start_with(&origin, |cfg| {
        cfg.chunk_size = chunk;
    })
    .await;
    let url = spool.url(&origin.url("flac"));
    let c = client();
    let reads = [900_000u64, 800_000, 700_000];
    for at in reads {
        let (status, _, got) = get(&c, &url, Some(&format!("bytes={at}-{}", at + 999))).await;
        assert_eq!(status, 206);
        assert!(
            got == body.slice(at as usize..at as usize + 1000),
            "read at {at}"
        );
    }
    let spans = request_spans(&origin);
    for at in reads {
        assert!(
            spans.iter().any(|&(a, _)| a == at),
            "no request from {at}: {spans:?}"
        );
    }
    wait_for("chunk 0 to be cached", || async {
        common::cached_chunks(&spool.cache_dir, &origin.url("flac")).contains(&0)
    })
    .await;
    let sent = origin.stats().body_bytes;
    assert!(
        sent <= chunk + 64 * 1024,
        "{sent} origin bytes for one chunk"
    );
    origin.reset_stats();
    let (_, _, got) = get(&c, &url, Some(&format!("bytes=0-{}", chunk - 1))).await;
    assert!(got == body.slice(..chunk as usize));
    assert_eq!(origin.stats().requests, 0, "chunk 0 is whole in the cache");
}

/// Where a byte pattern first occurs in a file.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Index first: a player reading the start of an MP4 whose moov follows its
/// media data makes spool fetch the moov at once, before the player asks
/// for it; with `--index-first false` it does not. (The file is built from
/// a small ffmpeg-made fixture's boxes, with a larger mdat so that the moov
/// lies chunks away; `tests/players/` plays real files.)
#[tokio::test]
async fn the_index_of_a_media_is_fetched_first() {
    let fixture = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tail.mp4"),
    )
    .unwrap();
    let moov = find(&fixture, b"moov").expect("moov in the fixture") - 4;
    let ftyp_len = u32::from_be_bytes(fixture[..4].try_into().unwrap()) as usize;
    let payload = data(300_000, 61);
    let mut file = fixture[..ftyp_len].to_vec();
    file.extend_from_slice(&(8 + payload.len() as u32).to_be_bytes());
    file.extend_from_slice(b"mdat");
    file.extend_from_slice(&payload);
    let at = file.len() as u64;
    file.extend_from_slice(&fixture[moov..]);
    let body = bytes::Bytes::from(file);
    for index_first in [true, false] {
        let origin = Origin::start().await;
        origin.add_file("tail.mp4", body.clone(), "video/mp4");
        let spool = Spool::start_with(&origin, |cfg| cfg.index_first = index_first).await;
        let url = spool.url(&origin.url("tail.mp4"));
        let (_, _, got) = get(&client(), &url, Some("bytes=0-1023")).await;
        assert!(got == body.slice(..1024));
        let index_chunk = at / CHUNK;
        assert!(index_chunk > 1, "the moov lies chunks away from the start");
        if index_first {
            wait_for("the moov to be fetched first", || async {
                common::cached_chunks(&spool.cache_dir, &origin.url("tail.mp4"))
                    .contains(&index_chunk)
            })
            .await;
            let spans = request_spans(&origin);
            assert!(
                spans.iter().any(|&(a, b)| a <= at && at <= b),
                "no request for the moov at {at}: {spans:?}"
            );
        } else {
            common::wait_idle(&spool).await;
            let spans = request_spans(&origin);
            assert!(
                spans.iter().all(|&(_, b)| b < index_chunk * CHUNK),
                "moov fetched without index-first: {spans:?}"
            );
        }
    }
}

/// A seek that lands inside a read-ahead transfer still under way, chunks
/// ahead of where it has got, after the player that started it left (a
/// browser seeking drops its request): the seek gets a request of its own
/// from its byte rather than waiting for the transfer to get there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_into_a_running_read_ahead_transfer_gets_its_own_request() {
    let origin = Origin::start().await;
    let body = data(8 * 1024 * 1024, 53);
    origin.add_file("ahead", body.clone(), "video/webm");
    origin.set_faults("ahead", Faults::throttled(1_000_000));
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("ahead"));
    let c = client();
    let mut player = c.get(&url).send().await.unwrap();
    let mut read = 0u64;
    while read < 1_500_000 {
        read += player.chunk().await.unwrap().unwrap().len() as u64;
    }
    // The transfer that reads ahead reaches past where the seek lands.
    let at = read + 200_000;
    let covering = |spans: &[(u64, u64)]| spans.iter().any(|&(a, b)| a <= at && at <= b);
    assert!(
        covering(&request_spans(&origin)),
        "{:?}",
        request_spans(&origin)
    );
    drop(player);
    let mut seek = c
        .get(&url)
        .header("range", format!("bytes={at}-"))
        .send()
        .await
        .unwrap();
    let first = seek.chunk().await.unwrap().unwrap();
    assert!(first[..] == body[at as usize..at as usize + first.len()]);
    let spans = request_spans(&origin);
    assert!(
        spans.iter().any(|&(a, _)| a == at),
        "no request from the seek's byte: {spans:?}"
    );
}
