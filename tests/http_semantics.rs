//! RFC 9110 range and conditional semantics as players rely on them,
//! through a real spool and a real origin on loopback.

mod common;

use common::origin::Origin;
use common::{client, data, get, header, Spool};

const SIZE: usize = 300 * 1024 + 17; // several 64 KiB chunks, short last one

async fn setup() -> (Origin, Spool, bytes::Bytes, String) {
    let origin = Origin::start().await;
    let body = data(SIZE, 1);
    origin.add_file("movie.mp4", body.clone(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("movie.mp4"));
    (origin, spool, body, url)
}

#[tokio::test]
async fn whole_body_and_head() {
    let (origin, spool, body, url) = setup().await;
    let c = client();
    let (status, h, got) = get(&c, &url, None).await;
    assert_eq!(status, 200);
    assert_eq!(got, body);
    assert_eq!(header(&h, "content-length"), SIZE.to_string());
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    assert_eq!(header(&h, "content-type"), "video/mp4");
    assert_eq!(header(&h, "etag"), origin.etag("movie.mp4").unwrap());
    assert_eq!(
        header(&h, "last-modified"),
        origin.last_modified("movie.mp4").unwrap()
    );

    let resp = c.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(resp.headers(), "content-length"), SIZE.to_string());
    assert_eq!(header(resp.headers(), "accept-ranges"), "bytes");
    assert!(resp.bytes().await.unwrap().is_empty());

    let resp = c
        .head(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(header(resp.headers(), "content-length"), "10");
    assert_eq!(
        header(resp.headers(), "content-range"),
        format!("bytes 10-19/{SIZE}")
    );
    drop(spool);
}

#[tokio::test]
async fn head_on_a_cold_media_downloads_nothing() {
    let (origin, spool, _body, url) = setup().await;
    let resp = client().head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(resp.headers(), "content-length"), SIZE.to_string());
    common::wait_idle(&spool).await;
    assert!(
        origin.stats().body_bytes <= 1,
        "a HEAD probes with at most one byte, got {:?}",
        origin.stats()
    );
    drop(spool);
}

#[tokio::test]
async fn satisfiable_ranges() {
    let (_origin, _spool, body, url) = setup().await;
    let c = client();
    let size = SIZE as u64;
    let cases: Vec<(String, u64, u64)> = vec![
        ("bytes=0-99".into(), 0, 99),
        // across chunk boundaries (64 KiB chunks)
        ("bytes=65000-140000".into(), 65000, 140000),
        ("bytes=100000-".into(), 100000, size - 1),
        ("bytes=-1000".into(), size - 1000, size - 1),
        ("bytes=-99999999".into(), 0, size - 1),
        // last-pos past the end is clipped
        (
            format!("bytes={}-{}", size - 10, size + 1000),
            size - 10,
            size - 1,
        ),
        ("bytes=5-18446744073709551615".into(), 5, size - 1),
        ("bytes=7-99999999999999999999999999".into(), 7, size - 1),
        (
            format!("bytes={}-{}", size - 1, size - 1),
            size - 1,
            size - 1,
        ),
    ];
    for (range, a, b) in cases {
        let (status, h, got) = get(&c, &url, Some(&range)).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(
            header(&h, "content-range"),
            format!("bytes {a}-{b}/{size}"),
            "{range}"
        );
        assert_eq!(
            header(&h, "content-length"),
            (b - a + 1).to_string(),
            "{range}"
        );
        assert_eq!(got, body.slice(a as usize..=b as usize), "{range}");
    }
}

#[tokio::test]
async fn unsatisfiable_and_ignored_ranges() {
    let (_origin, _spool, body, url) = setup().await;
    let c = client();
    for range in [
        format!("bytes={SIZE}-"),
        format!("bytes={}-{}", SIZE + 5, SIZE + 10),
        "bytes=-0".into(),
        "bytes=18446744073709551615-".into(),
        "bytes=99999999999999999999999999-".into(),
    ] {
        let (status, h, _) = get(&c, &url, Some(&range)).await;
        assert_eq!(status, 416, "{range}");
        assert_eq!(
            header(&h, "content-range"),
            format!("bytes */{SIZE}"),
            "{range}"
        );
    }
    for range in [
        "items=0-10",
        "bytes=10-5",
        "bytes=abc",
        "bytes=",
        "bytes=1-2-3",
    ] {
        let (status, h, got) = get(&c, &url, Some(range)).await;
        assert_eq!(status, 200, "{range}");
        assert_eq!(header(&h, "content-range"), "", "{range}");
        assert_eq!(got, body, "{range}");
    }
}

#[tokio::test]
async fn cold_unsatisfiable_range() {
    // The very first request for a media is past its end: the probe learns
    // the size from the origin's own 416.
    let (_origin, _spool, _body, url) = setup().await;
    let (status, h, _) = get(&client(), &url, Some(&format!("bytes={}-", SIZE * 2))).await;
    assert_eq!(status, 416);
    assert_eq!(header(&h, "content-range"), format!("bytes */{SIZE}"));
}

#[tokio::test]
async fn multiple_ranges_are_multipart() {
    let (_origin, _spool, body, url) = setup().await;
    let ranges = [
        (0u64, 9u64),
        (65530, 65545),
        (SIZE as u64 - 5, SIZE as u64 - 1),
    ];
    let header_value = format!(
        "bytes={}",
        ranges
            .iter()
            .map(|(a, b)| format!("{a}-{b}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (status, h, got) = get(&client(), &url, Some(&header_value)).await;
    assert_eq!(status, 206);
    let ctype = header(&h, "content-type");
    let boundary = ctype
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart content type");
    assert_eq!(header(&h, "content-length"), got.len().to_string());
    // Parse the parts back and compare with the origin's bytes.
    let mut rest = &got[..];
    for (a, b) in ranges {
        let delim = format!("\r\n--{boundary}\r\n");
        assert!(rest.starts_with(delim.as_bytes()));
        rest = &rest[delim.len()..];
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let part_head = std::str::from_utf8(&rest[..end])
            .unwrap()
            .to_ascii_lowercase();
        assert!(part_head.contains("content-type: video/mp4"));
        assert!(part_head.contains(&format!("content-range: bytes {a}-{b}/{SIZE}")));
        rest = &rest[end + 4..];
        let n = (b - a + 1) as usize;
        assert_eq!(&rest[..n], &body[a as usize..=b as usize]);
        rest = &rest[n..];
    }
    assert_eq!(rest, format!("\r\n--{boundary}--\r\n").as_bytes());
}

#[tokio::test]
async fn conditional_requests() {
    let (origin, _spool, body, url) = setup().await;
    let c = client();
    let etag = origin.etag("movie.mp4").unwrap();
    let last_modified = origin.last_modified("movie.mp4").unwrap();

    // If-None-Match: 304 with the validators, no body.
    let resp = c
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(header(resp.headers(), "etag"), etag);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = c
        .get(&url)
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // If-Range with the current ETag or date: the range applies.
    for validator in [etag.as_str(), last_modified.as_str()] {
        let resp = c
            .get(&url)
            .header("range", "bytes=100-199")
            .header("if-range", validator)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206, "If-Range {validator}");
        assert_eq!(resp.bytes().await.unwrap(), body.slice(100..200));
    }
    // With a stale validator: the whole, current body.
    for validator in ["\"old\"", "Mon, 01 Jan 2001 00:00:00 GMT", "W/\"weak\""] {
        let resp = c
            .get(&url)
            .header("range", "bytes=100-199")
            .header("if-range", validator)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "If-Range {validator}");
        assert_eq!(resp.bytes().await.unwrap(), body);
    }
}

#[tokio::test]
async fn empty_media() {
    let origin = Origin::start().await;
    origin.add_file("empty", bytes::Bytes::new(), "video/mp4");
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("empty"));
    let (status, h, got) = get(&client(), &url, None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-length"), "0");
    assert!(got.is_empty());
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let origin = Origin::start().await;
    let spool = Spool::start(&origin).await;
    let c = client();
    let cases = [
        (format!("{}/stream", spool.base()), 400),
        (format!("{}/stream?url=", spool.base()), 400),
        (format!("{}/stream?url=not%20a%20url", spool.base()), 400),
        (spool.url("ftp://127.0.0.1/x"), 400),
        (spool.url("file:///etc/passwd"), 400),
        (format!("{}/nowhere", spool.base()), 404),
    ];
    for (url, want) in cases {
        let (status, h, body) = get(&c, &url, None).await;
        assert_eq!(status, want, "{url}");
        assert!(
            header(&h, "content-type").starts_with("text/plain"),
            "{url}"
        );
        assert!(!body.is_empty(), "{url}: a reason is given");
    }
    let resp = c.post(spool.url(&origin.url("x"))).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(origin.stats().requests, 0);
}

#[tokio::test]
async fn health_and_metrics() {
    let origin = Origin::start().await;
    let spool = Spool::start(&origin).await;
    let c = client();
    let (status, _, _) = get(&c, &format!("{}/health/live", spool.base()), None).await;
    assert_eq!(status, 200);
    // The media listener: the plain answer only.
    let (status, _, body) = get(&c, &format!("{}/health/ready", spool.base()), None).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, serde_json::json!({ "ready": true }));
    // The control plane (a loopback client of a loopback control plane
    // is an admin): details and metrics.
    let (status, _, body) = get(&c, &format!("{}/health/ready", spool.admin()), None).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["ready"], true);
    assert!(v.get("disk").is_some(), "{v}");
    let (status, _, body) = get(&c, &format!("{}/metrics", spool.admin()), None).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("spool_upstream_requests_total"), "{text}");
    // Every labelled family is there before its first event, at zero.
    for series in [
        "spool_served_bytes_total{source=\"cache\"} 0",
        "spool_served_bytes_total{source=\"download\"} 0",
        "spool_cache_write_errors_total{class=\"DISK_FULL\"} 0",
        "spool_limited_total{reason=\"max_streams\"} 0",
        "spool_connections_refused_total{reason=\"max_connections\"} 0",
        "spool_recovery_fixed_total{kind=\"corrupt\"} 0",
        "spool_cache_bytes 0",
        "spool_cache_chunks 0",
    ] {
        assert!(text.lines().any(|l| l == series), "{series} in:\n{text}");
    }
    // None of the control plane is on the media listener.
    for path in ["/metrics", "/", "/api/status", "/sign"] {
        let (status, _, _) = get(&c, &format!("{}{path}", spool.base()), None).await;
        assert_eq!(status, 404, "{path}");
    }
    // The cache's size, as the index counts it, by the next disk check.
    origin.add_file("sized", common::data(300_000, 9), "video/mp4");
    let (status, _, _) = get(&c, &spool.url(&origin.url("sized")), None).await;
    assert_eq!(status, 200);
    common::wait_until_cached(&spool.cache_dir, &origin.url("sized")).await;
    common::wait_for_metric(&spool, "spool_cache_bytes", 300_000.0).await;
    assert_eq!(common::metric(&spool, "spool_cache_bytes").await, 300_000.0);
}

#[tokio::test]
async fn cold_open_with_an_absurd_range_end() {
    // The very first request for a media: the probe's end is computed from
    // the player's range, which must not overflow.
    let (_origin, _spool, body, url) = setup().await;
    let (status, h, got) = get(&client(), &url, Some("bytes=10-18446744073709551615")).await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes 10-{}/{SIZE}", SIZE - 1)
    );
    assert!(got == body.slice(10..));
}
