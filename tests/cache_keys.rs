//! Cache keys for URLs whose query changes on every link (presigned S3
//! URLs, CDN tokens): `--cache-key-ignore-query` names the parameters that
//! are not part of a media's identity. Over real HTTP, against an origin
//! that answers presigned URLs only until they expire.

mod common;

use std::time::Duration;

use common::origin::{Faults, Origin};
use common::{cached_chunks, client, data, get, wait_for, wait_until_cached, Spool};
use spool::upstream::QueryFilter;

const CHUNK: usize = 64 * 1024;

async fn presigned_origin(name: &str, size: usize) -> (Origin, bytes::Bytes) {
    let origin = Origin::start().await;
    let body = data(size, 11);
    origin.add_file(name, body.clone(), "video/mp4");
    origin.set_faults(
        name,
        Faults {
            presigned: true,
            ..Faults::default()
        },
    );
    (origin, body)
}

async fn keyed_spool(origin: &Origin) -> Spool {
    Spool::start_with(origin, |c| {
        c.cache_key_ignore_query = QueryFilter::parse_list("X-Amz-*").unwrap();
    })
    .await
}

/// Waits until the origin refuses a presigned URL as expired.
async fn expired(url: &str) {
    wait_for("the presigned URL to expire", || async {
        get(&client(), url, Some("bytes=0-0")).await.0 == 403
    })
    .await;
}

/// The media rows of the index whose URL names `name`.
fn media_urls(spool: &Spool, name: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open_with_flags(
        spool.cache_dir.join("index.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT url FROM media WHERE url LIKE '%' || ?1 || '%'")
        .unwrap();
    let rows = stmt.query_map([name], |r| r.get(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

/// The `latest_url` media_summary shows for the media whose URL is `key`.
fn summary_latest(spool: &Spool, key: &str) -> Option<String> {
    let conn = rusqlite::Connection::open_with_flags(
        spool.cache_dir.join("index.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT latest_url FROM media_summary WHERE url = ?1",
        [key],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn a_media_fetched_under_one_presigned_url_replays_under_a_newer_one_for_nothing() {
    let size = 5 * CHUNK + 777;
    let (origin, body) = presigned_origin("film.mp4", size).await;
    let spool = keyed_spool(&origin).await;
    let c = client();
    // The origin itself refuses a URL that is not presigned.
    let (status, _, _) = get(&c, &origin.url("film.mp4"), None).await;
    assert_eq!(status, 403);

    let first = origin.presign("film.mp4", Duration::from_secs(60));
    let (status, _, got) = get(&c, &spool.url(&first), None).await;
    assert_eq!(status, 200);
    assert!(got == body, "bytes differ from the origin's");
    let key = origin.url("film.mp4");
    wait_until_cached(&spool.cache_dir, &key).await;
    // One media, known by its key: the URL without the signature.
    assert_eq!(media_urls(&spool, "film.mp4"), vec![key.clone()]);

    origin.reset_stats();
    let newer = origin.presign("film.mp4", Duration::from_secs(60));
    assert_ne!(first, newer);
    let (status, _, got) = get(&c, &spool.url(&newer), None).await;
    assert_eq!(status, 200);
    assert!(got == body, "bytes differ on the replay");
    let (status, _, got) = get(&c, &spool.url(&newer), Some("bytes=100000-200000")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(100000..=200000));
    assert_eq!(
        origin.stats().requests,
        0,
        "the replay under a newer URL went to the origin"
    );
    assert_eq!(media_urls(&spool, "film.mp4").len(), 1);
    // media_summary shows the key, and the latest URL's parameter names
    // without their values (the signature is a credential).
    let names: Vec<String> = url::Url::parse(&newer)
        .unwrap()
        .query_pairs()
        .map(|(k, _)| k.into_owned())
        .collect();
    let shown = format!("{key}?{}", names.join("&"));
    wait_for("the latest URL in media_summary", || async {
        summary_latest(&spool, &key).as_deref() == Some(shown.as_str())
    })
    .await;
    let latest = summary_latest(&spool, &key);
    let signature = url::Url::parse(&newer)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Signature")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert!(!latest.unwrap().contains(&signature));

    // After a restart, a third URL still finds it.
    let (dir, _tmp) = spool.stop().await;
    let mut cfg = common::test_config(&dir, &origin);
    cfg.cache_key_ignore_query = QueryFilter::parse_list("X-Amz-*").unwrap();
    let spool = Spool::start_cfg(cfg).await;
    let third = origin.presign("film.mp4", Duration::from_secs(60));
    let (status, _, got) = get(&c, &spool.url(&third), Some("bytes=1000-")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(1000..));
    assert_eq!(
        origin.stats().requests,
        0,
        "after a restart the media was fetched again"
    );
}

#[tokio::test]
async fn without_the_setting_every_presigned_url_is_a_media_of_its_own() {
    let size = 2 * CHUNK;
    let (origin, body) = presigned_origin("clip.mp4", size).await;
    let spool = Spool::start(&origin).await;
    let c = client();
    for _ in 0..2 {
        let u = origin.presign("clip.mp4", Duration::from_secs(60));
        let (status, _, got) = get(&c, &spool.url(&u), None).await;
        assert_eq!(status, 200);
        assert!(got == body);
    }
    wait_for("two media rows", || async {
        media_urls(&spool, "clip.mp4").len() == 2
    })
    .await;
}

#[tokio::test]
async fn a_missing_chunk_after_the_first_url_expired_comes_with_the_newer_one() {
    let size = 6 * CHUNK;
    let (origin, body) = presigned_origin("show.mp4", size).await;
    let spool = keyed_spool(&origin).await;
    let key = origin.url("show.mp4");
    let c = client();

    // A player opens the media with a URL that expires soon and reads the
    // first chunk only.
    let short = origin.presign("show.mp4", Duration::from_secs(2));
    let (status, _, got) = get(&c, &spool.url(&short), Some("bytes=0-1000")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(0..=1000));
    wait_for("chunk 0 cached", || async {
        cached_chunks(&spool.cache_dir, &key).contains(&0)
    })
    .await;
    expired(&short).await;

    // A newer URL reaches the media: the missing chunk 3 is fetched with it.
    origin.reset_stats();
    let fresh = origin.presign("show.mp4", Duration::from_secs(60));
    let a = 3 * CHUNK + 10;
    let (status, _, got) = get(
        &c,
        &spool.url(&fresh),
        Some(&format!("bytes={a}-{}", a + 999)),
    )
    .await;
    assert_eq!(status, 206);
    assert!(got == body.slice(a..a + 1000));
    let log = origin.requests_log();
    assert!(!log.is_empty());
    let fresh_query = fresh.split_once('?').unwrap().1;
    for r in &log {
        assert!(
            r.path.ends_with(fresh_query),
            "asked with another URL: {}",
            r.path
        );
        assert_eq!(r.status, 206, "{}", r.path);
    }

    // A player with the old, expired link: what is cached is served, and
    // a missing chunk is fetched with the URL the origin answered last,
    // the newer one (the old link is not asked with again).
    origin.reset_stats();
    let (status, _, got) = get(&c, &spool.url(&short), Some("bytes=0-1000")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(0..=1000));
    assert_eq!(origin.stats().requests, 0);
    let b = 5 * CHUNK + 5;
    let (status, _, got) = get(
        &c,
        &spool.url(&short),
        Some(&format!("bytes={b}-{}", b + 999)),
    )
    .await;
    assert_eq!(status, 206);
    assert!(
        got == body.slice(b..b + 1000),
        "bytes differ after the retry"
    );
    let log = origin.requests_log();
    assert!(!log.is_empty());
    assert!(
        log.iter()
            .all(|r| r.path.ends_with(fresh_query) && r.status == 206),
        "asked with another URL than the newer one: {:?}",
        log.iter().map(|r| (&r.path, r.status)).collect::<Vec<_>>()
    );
    // Nothing cached was dropped; what the newer URL fetched is cached.
    wait_for("chunks 0, 3 and 5 cached", || async {
        let cached = cached_chunks(&spool.cache_dir, &key);
        [0, 3, 5].iter().all(|i| cached.contains(i))
    })
    .await;
}

#[tokio::test]
async fn with_no_newer_url_the_player_gets_no_wrong_byte_and_the_cache_stays() {
    let size = 4 * CHUNK;
    let (origin, body) = presigned_origin("old.mp4", size).await;
    let spool = keyed_spool(&origin).await;
    let key = origin.url("old.mp4");
    let c = client();
    let short = origin.presign("old.mp4", Duration::from_secs(2));
    let (status, _, got) = get(&c, &spool.url(&short), Some("bytes=0-99")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(0..100));
    wait_for("chunk 0 cached", || async {
        cached_chunks(&spool.cache_dir, &key).contains(&0)
    })
    .await;
    expired(&short).await;
    // Only the expired URL is known: the missing bytes cannot be had.
    let a = 2 * CHUNK;
    let resp = c
        .get(spool.url(&short))
        .header("range", format!("bytes={a}-{}", a + 999))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let got = resp.bytes().await.unwrap_or_default();
    assert!(
        status >= 400 || got.len() < 1000,
        "an expired URL's missing bytes came as a whole answer ({status}, {} bytes)",
        got.len()
    );
    assert!(got.is_empty() || status >= 400 || got == body.slice(a..a + got.len()));
    // The cached chunk still plays, under the expired URL too.
    let (status, _, got) = get(&c, &spool.url(&short), Some("bytes=0-99")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(0..100));
    assert!(cached_chunks(&spool.cache_dir, &key).contains(&0));
}

/// A made-up signature on a keyed media's URL costs one refused request
/// and pushes none of the URLs the origin answered out: fetches go on with
/// the good one, those no player's link asks for included.
#[tokio::test]
async fn made_up_signatures_push_no_good_url_out() {
    let size = 8 * CHUNK;
    let (origin, body) = presigned_origin("ep.mp4", size).await;
    let spool = keyed_spool(&origin).await;
    let c = client();
    let good = origin.presign("ep.mp4", Duration::from_secs(60));
    let (status, _, got) = get(&c, &spool.url(&good), Some("bytes=0-999")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(0..1000));
    // Ten made-up signatures (more than the URLs a media keeps), each
    // asking for a chunk nobody fetched.
    let (base, _) = good.split_once('?').unwrap();
    for i in 1..=5usize {
        origin.reset_stats();
        let fake = format!("{base}?X-Amz-Expires=9999999999&X-Amz-Signature=fake{i}");
        let a = i * CHUNK + 1;
        let (status, _, got) = get(
            &c,
            &spool.url(&fake),
            Some(&format!("bytes={a}-{}", a + 99)),
        )
        .await;
        // Served with the good URL after the made-up one was refused.
        assert_eq!(status, 206, "made-up {i}");
        assert!(got == body.slice(a..a + 100));
        let log = origin.requests_log();
        let refused = log.iter().filter(|r| r.status == 403).count();
        assert_eq!(
            refused,
            1,
            "{:?}",
            log.iter().map(|r| (&r.path, r.status)).collect::<Vec<_>>()
        );
    }
    for i in 6..=10usize {
        let fake = format!("{base}?X-Amz-Expires=9999999999&X-Amz-Signature=fake{i}");
        let (status, _, _) = get(&c, &spool.url(&fake), Some("bytes=0-9")).await;
        assert_eq!(status, 206, "cached bytes, whatever the signature");
    }
    // Fetches nobody's link asks for (a prefetch of the bare URL, as an
    // admin gives it) still find the good URL among the media's: the rest
    // comes whole.
    let r = c
        .post(format!("{}/api/prefetch", spool.admin()))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "url": base }).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let key = origin.url("ep.mp4");
    wait_for("the prefetch caching the media whole", || async {
        common::cached_whole(&spool.cache_dir, &key)
    })
    .await;
}

/// A keyed media's version is checked with the URL the origin accepted
/// last, never with a made-up one a client just brought: an origin that
/// answers a bad token with 404 must not have the cached media dropped.
#[tokio::test]
async fn a_made_up_url_cannot_have_a_stale_media_dropped() {
    let size = 3 * CHUNK;
    let origin = Origin::start().await;
    let body = data(size, 21);
    origin.add_file("tv.mp4", body.clone(), "video/mp4");
    origin.set_faults(
        "tv.mp4",
        Faults {
            presigned: true,
            presigned_refusal: Some(404),
            ..Faults::default()
        },
    );
    let spool = Spool::start_with(&origin, |c| {
        c.cache_key_ignore_query = QueryFilter::parse_list("X-Amz-*").unwrap();
        c.revalidate_after = Duration::ZERO;
    })
    .await;
    let c = client();
    let good = origin.presign("tv.mp4", Duration::from_secs(60));
    let (status, _, got) = get(&c, &spool.url(&good), Some("bytes=0-999")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(0..1000));
    let key = origin.url("tv.mp4");
    wait_for("chunk 0 cached", || async {
        cached_chunks(&spool.cache_dir, &key).contains(&0)
    })
    .await;
    origin.reset_stats();
    let (base, _) = good.split_once('?').unwrap();
    let fake = format!("{base}?X-Amz-Expires=9999999999&X-Amz-Signature=fake");
    let (status, _, got) = get(&c, &spool.url(&fake), Some("bytes=10-99")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(10..100));
    // Checked with the good URL; the media and its chunks stay.
    let log = origin.requests_log();
    let good_query = good.split_once('?').unwrap().1;
    assert!(
        !log.is_empty() && log.iter().all(|r| r.path.ends_with(good_query)),
        "{:?}",
        log.iter().map(|r| (&r.path, r.status)).collect::<Vec<_>>()
    );
    assert!(cached_chunks(&spool.cache_dir, &key).contains(&0));
    assert_eq!(media_urls(&spool, "tv.mp4"), vec![key.clone()]);
    // A chunk nobody fetched, asked for with another made-up URL: its 404
    // says that URL is no good, and the good one brings the bytes.
    origin.reset_stats();
    let fake2 = format!("{base}?X-Amz-Expires=9999999999&X-Amz-Signature=fake2");
    let a = 2 * CHUNK + 7;
    let (status, _, got) = get(
        &c,
        &spool.url(&fake2),
        Some(&format!("bytes={a}-{}", a + 99)),
    )
    .await;
    assert_eq!(status, 206);
    assert!(got == body.slice(a..a + 100));
    let log = origin.requests_log();
    let shown = log.iter().map(|r| (&r.path, r.status)).collect::<Vec<_>>();
    assert!(
        log.iter()
            .any(|r| r.path.ends_with(good_query) && r.status == 206),
        "{shown:?}"
    );
    assert!(
        log.iter()
            .all(|r| r.path.ends_with(good_query) || r.status == 404),
        "{shown:?}"
    );
    assert_eq!(media_urls(&spool, "tv.mp4"), vec![key]);
}
