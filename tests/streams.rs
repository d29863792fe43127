//! Parallel range streams (`--streams-per-media`): against an origin that
//! caps each response's rate, a reader that takes more than one transfer
//! brings gets the chunks ahead over several ranged requests at once,
//! each byte once and in order; a broken stream resumes, a seek into
//! another stream's stretch gets the right bytes, and an origin answering
//! 429 gets the pause it asked for and fewer streams. Over real HTTP.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::origin::{Busy, Faults, Origin};
use common::{client, data, metric, Spool};
use futures::StreamExt;

const CHUNK: u64 = 64 * 1024;
/// Each origin response at 4 MiB/s, after 20 ms: an origin that caps
/// each connection.
const RATE: u64 = 4 * 1024 * 1024;

fn far(path: &str, origin: &Origin, size: usize, seed: u64) -> Bytes {
    let body = data(size, seed);
    origin.add_file(path, body.clone(), "video/mp4");
    origin.set_faults(
        path,
        Faults {
            latency: Duration::from_millis(20),
            ..Faults::throttled(RATE)
        },
    );
    body
}

async fn spool(origin: &Origin, streams: usize) -> Spool {
    Spool::start_with(origin, |cfg| {
        // Room for four streams of 1 MiB each.
        cfg.read_ahead = spool::config::ReadAhead::Bytes(4 * 1024 * 1024);
        cfg.read_ahead_grace = Duration::from_secs(2);
        cfg.streams_per_media = streams;
    })
    .await
}

/// Reads `url` with `range` as fast as it comes; calls `during` once
/// after `after` bytes.
async fn read(url: &str, range: &str, after: u64, during: impl FnOnce()) -> Bytes {
    let resp = client()
        .get(url)
        .header("range", range)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    let mut body = resp.bytes_stream();
    let mut got = bytes::BytesMut::new();
    let mut during = Some(during);
    while let Some(piece) = body.next().await {
        got.extend_from_slice(&piece.unwrap());
        if got.len() as u64 >= after {
            if let Some(f) = during.take() {
                f();
            }
        }
    }
    got.freeze()
}

#[tokio::test]
async fn bytes_are_the_origins_over_one_to_four_streams() {
    for streams in 1..=4 {
        let origin = Origin::start().await;
        let size = 160 * CHUNK as usize;
        let body = far("film.mp4", &origin, size, streams as u64);
        let spool = spool(&origin, streams).await;
        let url = spool.url(&origin.url("film.mp4"));
        let got = read(&url, "bytes=0-", 0, || {}).await;
        assert!(got == body, "{streams} streams: the origin's bytes");
        let peak = origin.peak_open_bodies();
        // One stream overlaps its next request with the end of the last
        // one at most; more streams are more requests at once.
        match streams {
            1 => assert!(peak <= 2, "one stream: {peak} bodies at once"),
            n => assert!(peak >= n as u64, "{n} streams: {peak} bodies at once"),
        }
        // Each byte fetched once (a stream's request ends where the next
        // stream's begins).
        let sent = origin.stats().body_bytes;
        assert!(
            sent <= (size as u64) + 2 * CHUNK,
            "{streams}: {sent} bytes sent"
        );
        // A replay is all cache.
        let before = origin.stats().requests;
        assert!(read(&url, "bytes=0-", 0, || {}).await == body);
        assert_eq!(origin.stats().requests, before);
    }
}

#[tokio::test]
async fn a_reset_on_one_stream_is_resumed_from_its_byte() {
    let origin = Origin::start().await;
    let size = 128 * CHUNK as usize;
    let body = far("film.mp4", &origin, size, 11);
    let spool = spool(&origin, 4).await;
    let url = spool.url(&origin.url("film.mp4"));
    // Once the reader is well under way (several streams open), the next
    // response longer than 100 KiB is cut after 100 KiB: one stream's.
    let got = read(&url, "bytes=0-", 40 * CHUNK, || {
        origin.set_faults(
            "film.mp4",
            Faults {
                latency: Duration::from_millis(20),
                reset_after_bytes: Some(100 * 1024),
                reset_once: true,
                ..Faults::throttled(RATE)
            },
        );
    })
    .await;
    assert!(got == body, "the origin's bytes, in order");
    assert!(origin.peak_open_bodies() >= 2, "several streams");
    let log = origin.requests_log();
    let cut = log
        .iter()
        .filter(|r| r.range.is_some() && r.status == 206)
        .any(|r| r.body_bytes == 100 * 1024);
    assert!(cut, "a stream was cut: {log:?}");
    // Every chunk cached whole (the last ones are written just after
    // their bytes went out).
    common::wait_until_cached(&spool.cache_dir, &origin.url("film.mp4")).await;
    assert!(common::cached_whole(
        &spool.cache_dir,
        &origin.url("film.mp4")
    ));
}

#[tokio::test]
async fn a_seek_into_another_streams_stretch_gets_its_bytes() {
    let origin = Origin::start().await;
    let size = 128 * CHUNK as usize;
    let body = far("film.mp4", &origin, size, 12);
    let spool = spool(&origin, 4).await;
    let url = spool.url(&origin.url("film.mp4"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader = {
        let url = url.clone();
        tokio::spawn(async move {
            read(&url, "bytes=0-", 48 * CHUNK, move || {
                let _ = tx.send(());
            })
            .await
        })
    };
    rx.await.unwrap();
    // The reader's window reaches up to 4 MiB past it; the stretches past
    // its first are other streams'. A seek lands within one of them.
    let at = 70 * CHUNK + 12_345;
    let end = at + 6 * CHUNK;
    let seek = read(&url, &format!("bytes={at}-{end}"), 0, || {}).await;
    assert!(
        seek == body.slice(at as usize..=end as usize),
        "the seek's bytes"
    );
    let got = reader.await.unwrap();
    assert!(got == body, "the reader's bytes");
    assert!(origin.peak_open_bodies() >= 2, "several streams");
    let sent = origin.stats().body_bytes;
    assert!(sent <= size as u64 + 8 * CHUNK, "{sent} bytes sent");
}

#[tokio::test]
async fn a_busy_origin_gets_its_pause_and_fewer_streams() {
    let origin = Origin::start().await;
    let size = 128 * CHUNK as usize;
    let body = far("film.mp4", &origin, size, 13);
    let other = far("other.mp4", &origin, 8 * CHUNK as usize, 14);
    let spool = spool(&origin, 4).await;
    let url = spool.url(&origin.url("film.mp4"));
    let host = origin.addr().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader = {
        let (url, origin) = (url.clone(), origin.clone());
        tokio::spawn(async move {
            read(&url, "bytes=0-", 48 * CHUNK, move || {
                // From the next request on, one 429 asking for a second.
                origin.set_faults(
                    "film.mp4",
                    Faults {
                        latency: Duration::from_millis(20),
                        busy: Some(Busy::new(1, 1, 1)),
                        ..Faults::throttled(RATE)
                    },
                );
                let _ = tx.send(());
            })
            .await
        })
    };
    rx.await.unwrap();
    common::wait_for("the 429", || async {
        origin.requests_log().iter().any(|r| r.status == 429)
    })
    .await;
    // Another media of the same origin, asked for during the pause.
    let (status, _, got_other) =
        common::get(&client(), &spool.url(&origin.url("other.mp4")), None).await;
    assert_eq!(status, 200);
    assert!(got_other == other);
    assert!(
        reader.await.unwrap() == body,
        "the origin's bytes, in order"
    );
    let log = origin.requests_log();
    let busy = log.iter().find(|r| r.status == 429).unwrap();
    // Nothing asked of the origin during the second it asked for (but
    // what was on its way when the 429 left).
    let early: Vec<_> = log
        .iter()
        .filter(|r| {
            r.at > busy.at + Duration::from_millis(100)
                && r.at < busy.at + Duration::from_millis(900)
        })
        .map(|r| (r.path.clone(), r.range.clone()))
        .collect();
    assert!(early.is_empty(), "requests during the pause: {early:?}");
    let first_other = log.iter().find(|r| r.path == "other.mp4").unwrap();
    assert!(first_other.at >= busy.at + Duration::from_millis(900));
    // Half the streams for that origin, and the answer counted.
    let label = format!("host=\"{host}\"");
    let streams = metric(&spool, &format!("spool_origin_streams{{{label}}}")).await;
    assert_eq!(streams, 2.0);
    let busy = metric(&spool, &format!("spool_origin_busy_total{{{label}}}")).await;
    assert_eq!(busy, 1.0);
}

/// An origin that redirects every request to another that answers 429:
/// the pause and the fewer streams hold for the media's own origin too,
/// since its media's streams are counted there and every request of
/// theirs starts there.
#[tokio::test]
async fn a_busy_redirect_target_slows_the_first_origin_too() {
    let front = Origin::start().await;
    let cdn = Origin::start().await;
    let size = 128 * CHUNK as usize;
    let body = far("film.mp4", &cdn, size, 15);
    front.add_file("film.mp4", Bytes::from_static(b"x"), "video/mp4");
    front.set_faults(
        "film.mp4",
        Faults {
            redirect_to: Some(cdn.url("film.mp4")),
            ..Faults::default()
        },
    );
    let spool = spool(&front, 4).await;
    let url = spool.url(&front.url("film.mp4"));
    let got = read(&url, "bytes=0-", 48 * CHUNK, || {
        cdn.set_faults(
            "film.mp4",
            Faults {
                latency: Duration::from_millis(20),
                busy: Some(Busy::new(1, 1, 1)),
                ..Faults::throttled(RATE)
            },
        );
    })
    .await;
    assert!(got == body, "the origin's bytes, in order");
    let busy = cdn
        .requests_log()
        .into_iter()
        .find(|r| r.status == 429)
        .expect("the 429");
    // The first origin was asked nothing during the pause either.
    let early: Vec<_> = front
        .requests_log()
        .into_iter()
        .filter(|r| {
            r.at > busy.at + Duration::from_millis(100)
                && r.at < busy.at + Duration::from_millis(900)
        })
        .map(|r| r.range)
        .collect();
    assert!(early.is_empty(), "requests during the pause: {early:?}");
    // Half the streams, counted for both; the 429 counted where it came
    // from.
    for o in [&front, &cdn] {
        let label = format!("host=\"{}\"", o.addr());
        let streams = metric(&spool, &format!("spool_origin_streams{{{label}}}")).await;
        assert_eq!(streams, 2.0, "{label}");
    }
    let busy_at = |o: &Origin| format!("spool_origin_busy_total{{host=\"{}\"}}", o.addr());
    assert_eq!(metric(&spool, &busy_at(&cdn)).await, 1.0);
    assert_eq!(metric(&spool, &busy_at(&front)).await, 0.0);
}

/// `--max-connections-per-origin` holds back read-ahead and extra
/// streams, never the chunk a player is at: a seek while an earlier
/// seek's chunk is still finishing gets its own request at once.
#[tokio::test]
async fn a_seek_does_not_wait_for_the_origins_cap() {
    let origin = Origin::start().await;
    let size = 16 * CHUNK as usize;
    let body = data(size, 15);
    origin.add_file("film.mp4", body.clone(), "video/mp4");
    // A chunk takes two seconds to come.
    origin.set_faults("film.mp4", Faults::throttled(32 * 1024));
    let spool = Spool::start_with(&origin, |cfg| cfg.max_connections_per_origin = 1).await;
    let url = spool.url(&origin.url("film.mp4"));
    let c = client();
    let (status, _, got) = common::get(&c, &url, Some("bytes=0-1023")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(..1024));
    // The first chunk is still finishing, in the origin's one place.
    assert_eq!(origin.open_bodies(), 1);
    let at = 8 * CHUNK as usize;
    let (status, _, got) = common::get(&c, &url, Some(&format!("bytes={at}-{}", at + 1023))).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(at..at + 1024));
    assert!(
        origin.peak_open_bodies() >= 2,
        "the seek waited for the first chunk to finish"
    );
}
