//! Origins that misbehave: ignored ranges, unknown length, redirects,
//! resets, error statuses, timeouts, changed content; and the allowlist.

mod common;

use std::time::Duration;

use common::origin::{Faults, Origin};
use common::{client, data, get, header, wait_for, wait_until_cached, Spool};

#[tokio::test]
async fn origin_ignoring_range_still_gives_correct_bytes() {
    let origin = Origin::start().await;
    let size = 700 * 1024 + 3;
    let body = data(size, 21);
    origin.add_file("noranges", body.clone(), "video/mp4");
    origin.set_faults(
        "noranges",
        Faults {
            ignore_range: true,
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("noranges"));
    let c = client();
    for (a, b) in [
        (300_000, 400_000),
        (0, 10),
        (size - 100, size - 1),
        (65_535, 65_537),
    ] {
        let (status, h, got) = get(&c, &url, Some(&format!("bytes={a}-{b}"))).await;
        assert_eq!(status, 206, "spool still serves ranges");
        assert_eq!(header(&h, "content-range"), format!("bytes {a}-{b}/{size}"));
        assert!(got == body.slice(a..=b), "{a}-{b}");
    }
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == body);
    wait_until_cached(&spool.cache_dir, &origin.url("noranges")).await;
    origin.reset_stats();
    let (_, _, got) = get(&c, &url, Some("bytes=123456-")).await;
    assert!(got == body.slice(123_456..));
    assert_eq!(
        origin.stats().requests,
        0,
        "cached after the first full read"
    );
}

#[tokio::test]
async fn origin_without_length_is_streamed_through() {
    let origin = Origin::start().await;
    let body = data(300_000, 23);
    origin.add_file("live", body.clone(), "video/mp2t");
    origin.set_faults(
        "live",
        Faults {
            no_length: true,
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("live"));
    let (status, h, got) = get(&client(), &url, None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "video/mp2t");
    assert!(got == body);
    let (status, _, got) = get(&client(), &url, Some("bytes=100-200")).await;
    assert_eq!(status, 200, "no size, no ranges: the whole body");
    assert!(got == body);
}

#[tokio::test]
async fn redirects_are_followed() {
    let origin = Origin::start().await;
    let body = data(200_000, 25);
    origin.add_file("real", body.clone(), "video/mp4");
    origin.add_file("moved", bytes::Bytes::new(), "text/plain");
    origin.set_faults(
        "moved",
        Faults {
            redirect_to: Some(origin.url("real")),
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("moved"));
    let (status, _, got) = get(&client(), &url, Some("bytes=1000-1999")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(1000..2000));
}

#[tokio::test]
async fn redirect_into_a_refused_address_is_403() {
    let origin = Origin::start().await;
    origin.add_file("evil", bytes::Bytes::new(), "text/plain");
    origin.set_faults(
        "evil",
        Faults {
            redirect_to: Some("http://169.254.169.254/latest/meta-data/".into()),
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let (status, _, body) = get(&client(), &spool.url(&origin.url("evil")), None).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn redirect_loops_end() {
    let origin = Origin::start().await;
    origin.add_file("loop", bytes::Bytes::new(), "text/plain");
    origin.set_faults(
        "loop",
        Faults {
            redirect_to: Some(origin.url("loop")),
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let (status, _, _) = get(&client(), &spool.url(&origin.url("loop")), None).await;
    assert_eq!(status, 502);
    assert!(origin.stats().requests <= 12, "redirects are bounded");
}

#[tokio::test]
async fn reset_mid_transfer_is_resumed_from_the_exact_byte() {
    let origin = Origin::start().await;
    let size = 1024 * 1024;
    let body = data(size, 27);
    origin.add_file("flaky", body.clone(), "video/mp4");
    origin.set_faults(
        "flaky",
        Faults {
            reset_after_bytes: Some(300_001),
            reset_once: true,
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    // A closed range of the whole file: one request asks for all of it.
    let all = format!("bytes=0-{}", size - 1);
    let (status, _, got) = get(&client(), &spool.url(&origin.url("flaky")), Some(&all)).await;
    assert_eq!(status, 206);
    assert!(got == body, "bytes differ after a resumed transfer");
    let log = origin.requests_log();
    assert_eq!(log.len(), 2, "one resume: {log:?}");
    assert_eq!(
        log[1].range.as_deref(),
        Some(format!("bytes=300001-{}", size - 1).as_str())
    );
    assert_eq!(
        origin.stats().body_bytes,
        size as u64,
        "no byte fetched twice"
    );
}

#[tokio::test]
async fn repeated_resets_still_deliver_every_byte() {
    let origin = Origin::start().await;
    let size = 600 * 1024;
    let body = data(size, 29);
    origin.add_file("flakier", body.clone(), "video/mp4");
    origin.set_faults(
        "flakier",
        Faults {
            reset_after_bytes: Some(100_000),
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let (status, _, got) = get(&client(), &spool.url(&origin.url("flakier")), None).await;
    assert_eq!(status, 200);
    assert!(got == body);
}

#[tokio::test]
async fn error_statuses_are_mapped() {
    let origin = Origin::start().await;
    let spool =
        Spool::start_with(&origin, |c| c.upstream_timeout = Duration::from_millis(700)).await;
    let c = client();
    for (fault, want) in [
        (Some(404), 404),
        (Some(403), 403),
        (Some(410), 410),
        (Some(500), 502),
        (Some(503), 502),
        (Some(418), 502),
        (None, 504), // hangs
    ] {
        let path = format!("e{want}{}", fault.unwrap_or(0));
        origin.add_file(&path, data(10, 1), "video/mp4");
        origin.set_faults(
            &path,
            Faults {
                status: fault,
                hang: fault.is_none(),
                ..Faults::default()
            },
        );
        let (status, h, body) = get(&c, &spool.url(&origin.url(&path)), None).await;
        assert_eq!(status, want, "origin fault {fault:?}");
        assert!(header(&h, "content-type").starts_with("text/plain"));
        assert!(!body.is_empty(), "a short reason is given");
    }
    let (status, _, _) = get(&c, &spool.url(&origin.url("missing-file")), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unreachable_origin_is_502() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let origin = Origin::start().await;
    let spool = Spool::start(&origin).await;
    let (status, _, body) = get(
        &client(),
        &spool.url(&format!("http://127.0.0.1:{port}/x.mp4")),
        None,
    )
    .await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn allowlist_refuses_local_origins_unless_named() {
    let origin = Origin::start().await;
    origin.add_file("f", data(1000, 1), "video/mp4");
    let spool = Spool::start_with(&origin, |c| {
        c.allow_upstream = spool::upstream::allow::AllowList::default();
    })
    .await;
    let c = client();
    for target in [
        origin.url("f"),
        origin.url("f").replace("127.0.0.1", "localhost"),
        "http://10.0.0.1/x".into(),
        "http://192.168.1.1/x".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://[::1]:9/x".into(),
        "http://0.0.0.0:9/x".into(),
    ] {
        let (status, _, body) = get(&c, &spool.url(&target), None).await;
        assert_eq!(status, 403, "{target}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(origin.stats().requests, 0, "refused before any connection");

    // Naming host:port allows exactly that.
    let port = origin.addr().port();
    let spool = Spool::start_with(&origin, |c| {
        c.allow_upstream =
            spool::upstream::allow::AllowList::parse(&format!("127.0.0.1:{port}")).unwrap();
    })
    .await;
    let (status, _, _) = get(&c, &spool.url(&origin.url("f")), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn changed_origin_content_is_never_mixed() {
    let origin = Origin::start().await;
    let size = 512 * 1024;
    let old = data(size, 31);
    let new = data(size, 32);
    origin.add_file("c", old.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("c"));
    let c = client();
    // Cache the first chunk only (a closed range gets no read-ahead).
    let (_, _, got) = get(&c, &url, Some("bytes=0-1000")).await;
    assert!(got == old.slice(0..=1000));
    wait_for("the first chunk to be cached", || async {
        common::cached_chunks(&spool.cache_dir, &origin.url("c")).contains(&0)
    })
    .await;

    origin.add_file("c", new.clone(), "video/mp4");
    // The next download sees another ETag: the old version is dropped. The
    // response in progress either has consistent bytes or is cut.
    let resp = c.get(&url).send().await.unwrap();
    // (an Err is a cut body, which is fine)
    if let Ok(b) = resp.bytes().await {
        assert!(b == old || b == new, "mixed bytes");
    }
    // From then on, only new bytes.
    for _ in 0..2 {
        let (status, h, got) = get(&c, &url, None).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "etag"), origin.etag("c").unwrap());
        assert!(got == new, "old bytes served after the origin changed");
    }
}

#[tokio::test]
async fn validators_are_trusted_until_their_age_runs_out() {
    let origin = Origin::start().await;
    let size = 300 * 1024;
    let (old, new) = (data(size, 61), data(size, 62));
    origin.add_file("r", old.clone(), "video/mp4");
    // Default age (an hour): a fully cached media is served without asking.
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("r"));
    let c = client();
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == old);
    wait_until_cached(&spool.cache_dir, &origin.url("r")).await;
    origin.add_file("r", new.clone(), "video/mp4");
    origin.reset_stats();
    let (_, h, got) = get(&c, &url, None).await;
    assert!(
        got == old,
        "served from cache while the validators are fresh"
    );
    assert_ne!(
        header(&h, "etag"),
        origin.etag("r").unwrap(),
        "with the old ETag"
    );
    assert_eq!(origin.stats().requests, 0);
}

#[tokio::test]
async fn stale_validators_are_rechecked_and_a_change_drops_the_old_bytes() {
    let origin = Origin::start().await;
    let size = 300 * 1024;
    let (old, new) = (data(size, 63), data(size, 64));
    origin.add_file("r", old.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |c| c.revalidate_after = Duration::ZERO).await;
    let url = spool.url(&origin.url("r"));
    let c = client();
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == old);
    wait_until_cached(&spool.cache_dir, &origin.url("r")).await;

    // Unchanged: one one-byte request confirms it, the bytes come from cache.
    origin.reset_stats();
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == old);
    let log = origin.requests_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].range.as_deref(), Some("bytes=0-0"));
    assert!(origin.stats().body_bytes <= 1);

    // Changed (same size, new ETag): the next player gets the new bytes
    // only, with the new ETag.
    origin.add_file("r", new.clone(), "video/mp4");
    let (status, h, got) = get(&c, &url, None).await;
    assert_eq!(status, 200);
    assert!(got == new, "old bytes after the origin changed");
    assert_eq!(header(&h, "etag"), origin.etag("r").unwrap());

    // Deleted at the origin: 404, not the cached copy.
    origin.remove_file("r");
    let (status, _, _) = get(&c, &url, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_unreachable_origin_does_not_stop_cached_playback() {
    let origin = Origin::start().await;
    let body = data(200 * 1024, 65);
    origin.add_file("r", body.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |c| c.revalidate_after = Duration::ZERO).await;
    let url = spool.url(&origin.url("r"));
    let c = client();
    let (_, _, got) = get(&c, &url, None).await;
    assert!(got == body);
    wait_until_cached(&spool.cache_dir, &origin.url("r")).await;
    origin.set_faults(
        "r",
        Faults {
            status: Some(503),
            ..Faults::default()
        },
    );
    let (status, _, got) = get(&c, &url, None).await;
    assert_eq!(
        status, 200,
        "stale copy served when the origin cannot answer"
    );
    assert!(got == body);
}

#[tokio::test]
async fn origin_without_a_total_size_answers_the_players_own_range() {
    let origin = Origin::start().await;
    let body = data(300_000, 66);
    origin.add_file("growing", body.clone(), "video/mp2t");
    origin.set_faults(
        "growing",
        Faults {
            unknown_total: true,
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("growing"));
    let c = client();
    let (status, h, got) = get(&c, &url, Some("bytes=1000-1999")).await;
    assert_eq!(status, 206);
    assert_eq!(header(&h, "content-range"), "bytes 1000-1999/*");
    assert!(
        got == body.slice(1000..2000),
        "the player's range, not spool's probe"
    );
    let (status, _, got) = get(&c, &url, None).await;
    assert_eq!(status, 200, "no Range asked, no 206 given");
    assert!(got == body);
}

/// An origin that asks to slow down (429 with Retry-After): a player that
/// opens a media then gets 503 with the origin's Retry-After; a transfer
/// already under way waits as long as asked, then goes on from its byte.
#[tokio::test]
async fn a_busy_origin_is_given_the_pause_it_asks_for() {
    use common::origin::Busy;
    let origin = Origin::start().await;
    let size = 24 * 64 * 1024;
    let body = data(size, 31);
    origin.add_file("busy.mkv", body.clone(), "video/x-matroska");
    origin.set_faults(
        "busy.mkv",
        Faults {
            busy: Some(Busy::new(1, 1, 7)),
            ..Faults::default()
        },
    );
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("busy.mkv"));
    let c = client();
    let (status, h, _) = get(&c, &url, None).await;
    assert_eq!(status, 503);
    assert_eq!(header(&h, "retry-after"), "7");

    // Now the origin answers the first request, then asks its second to
    // wait a second: the player gets every byte, late by that second.
    origin.set_faults(
        "busy.mkv",
        Faults {
            busy: Some(Busy::new(2, 1, 1)),
            ..Faults::throttled(4 << 20)
        },
    );
    origin.reset_stats();
    let began = tokio::time::Instant::now();
    let (status, _, got) = get(&c, &url, None).await;
    assert_eq!(status, 200);
    assert!(got == body, "bytes differ after the pause");
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "asked again before the Retry-After passed ({:?})",
        began.elapsed()
    );
    let log = origin.requests_log();
    let refused = log.iter().position(|r| r.status == 429);
    let refused = refused.expect("no 429 was given");
    assert!(
        log[refused + 1..].iter().any(|r| r.status == 206),
        "no request after the 429: {:?}",
        log.iter()
            .map(|r| (r.status, r.range.clone()))
            .collect::<Vec<_>>()
    );
    wait_until_cached(&spool.cache_dir, &origin.url("busy.mkv")).await;
}
