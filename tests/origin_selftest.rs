//! Tests of the test origin itself (tests/common/origin.rs).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::origin::{test_client, Faults, Origin, Stats};
use futures::StreamExt;

fn data(n: usize) -> Bytes {
    (0..n)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn hdr(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

async fn get_range(origin: &Origin, path: &str, range: &str) -> reqwest::Response {
    test_client()
        .get(origin.url(path))
        .header("Range", range)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn full_get_has_headers_and_body() {
    let origin = Origin::start().await;
    let body = data(300_000);
    origin.add_file("a.bin", body.clone(), "video/mp4");
    let res = test_client().get(origin.url("a.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(hdr(&res, "content-length").as_deref(), Some("300000"));
    assert_eq!(hdr(&res, "accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(hdr(&res, "content-type").as_deref(), Some("video/mp4"));
    let etag = hdr(&res, "etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    assert_eq!(Some(etag), origin.etag("a.bin"));
    let lm = hdr(&res, "last-modified").unwrap();
    httpdate::parse_http_date(&lm).unwrap();
    assert_eq!(res.bytes().await.unwrap(), body);
    assert_eq!(origin.url("/a.bin"), origin.url("a.bin"));
    assert_eq!(
        origin.url("a.bin"),
        format!("http://{}/a.bin", origin.addr())
    );
}

#[tokio::test]
async fn ranges() {
    let origin = Origin::start().await;
    let body = data(1000);
    origin.add_file("r.bin", body.clone(), "application/octet-stream");

    let res = get_range(&origin, "r.bin", "bytes=10-19").await;
    assert_eq!(res.status(), 206);
    assert_eq!(
        hdr(&res, "content-range").as_deref(),
        Some("bytes 10-19/1000")
    );
    assert_eq!(hdr(&res, "content-length").as_deref(), Some("10"));
    assert!(hdr(&res, "etag").is_some() && hdr(&res, "last-modified").is_some());
    assert_eq!(
        hdr(&res, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(res.bytes().await.unwrap(), body.slice(10..20));

    let res = get_range(&origin, "r.bin", "bytes=990-").await;
    assert_eq!(res.status(), 206);
    assert_eq!(
        hdr(&res, "content-range").as_deref(),
        Some("bytes 990-999/1000")
    );
    assert_eq!(res.bytes().await.unwrap(), body.slice(990..));

    let res = get_range(&origin, "r.bin", "bytes=-5").await;
    assert_eq!(res.status(), 206);
    assert_eq!(
        hdr(&res, "content-range").as_deref(),
        Some("bytes 995-999/1000")
    );
    assert_eq!(res.bytes().await.unwrap(), body.slice(995..));

    // Suffix longer than the file: the whole file, as 206.
    let res = get_range(&origin, "r.bin", "bytes=-5000").await;
    assert_eq!(res.status(), 206);
    assert_eq!(
        hdr(&res, "content-range").as_deref(),
        Some("bytes 0-999/1000")
    );

    // End past the size is clamped.
    let res = get_range(&origin, "r.bin", "bytes=900-5000").await;
    assert_eq!(res.status(), 206);
    assert_eq!(
        hdr(&res, "content-range").as_deref(),
        Some("bytes 900-999/1000")
    );
    assert_eq!(res.bytes().await.unwrap(), body.slice(900..));

    // Unsatisfiable.
    let res = get_range(&origin, "r.bin", "bytes=1000-").await;
    assert_eq!(res.status(), 416);
    assert_eq!(hdr(&res, "content-range").as_deref(), Some("bytes */1000"));

    // Multi-range and garbage: answered 200 whole.
    for r in ["bytes=0-1,5-6", "bytes=abc", "items=0-1", "bytes=5-2"] {
        let res = get_range(&origin, "r.bin", r).await;
        assert_eq!(res.status(), 200, "{r}");
        assert_eq!(res.bytes().await.unwrap(), body, "{r}");
    }
}

#[tokio::test]
async fn large_disk_file_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let body = data(3 * 1024 * 1024 + 123);
    std::fs::write(&path, &body).unwrap();
    let origin = Origin::start().await;
    origin.add_disk_file("big.bin", path, "video/mp4");

    let res = test_client()
        .get(origin.url("big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(hdr(&res, "content-length"), Some(body.len().to_string()));
    assert_eq!(res.bytes().await.unwrap(), body);

    let res = get_range(&origin, "big.bin", "bytes=1000000-2500000").await;
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap(), body.slice(1_000_000..2_500_001));

    let res = get_range(&origin, "big.bin", "bytes=-100").await;
    assert_eq!(res.bytes().await.unwrap(), body.slice(body.len() - 100..));

    assert_eq!(
        origin.path_stats("big.bin"),
        Stats {
            requests: 3,
            body_bytes: (body.len() + 1_500_001 + 100) as u64
        }
    );
}

#[tokio::test]
async fn head_has_length_but_no_body() {
    let origin = Origin::start().await;
    origin.add_file("h.bin", data(4096), "video/webm");
    let res = test_client()
        .head(origin.url("h.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(hdr(&res, "content-length").as_deref(), Some("4096"));
    assert_eq!(hdr(&res, "accept-ranges").as_deref(), Some("bytes"));
    assert!(hdr(&res, "etag").is_some());
    assert!(res.bytes().await.unwrap().is_empty());

    let res = test_client()
        .head(origin.url("h.bin"))
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(hdr(&res, "content-length").as_deref(), Some("100"));
    assert_eq!(
        origin.stats(),
        Stats {
            requests: 2,
            body_bytes: 0
        }
    );
    let log = origin.requests_log();
    assert_eq!(log[0].method, "HEAD");
    assert_eq!(log[1].range.as_deref(), Some("bytes=0-99"));
    assert_eq!(log[1].status, 206);
}

#[tokio::test]
async fn unknown_path_is_404_and_other_methods_405() {
    let origin = Origin::start().await;
    let res = test_client().get(origin.url("nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = test_client().post(origin.url("nope")).send().await.unwrap();
    assert_eq!(res.status(), 405);
}

#[tokio::test]
async fn ignore_range_answers_whole() {
    let origin = Origin::start().await;
    let body = data(5000);
    origin.add_file("i.bin", body.clone(), "video/mp4");
    origin.set_faults(
        "i.bin",
        Faults {
            ignore_range: true,
            ..Default::default()
        },
    );
    let res = get_range(&origin, "i.bin", "bytes=100-199").await;
    assert_eq!(res.status(), 200);
    assert_eq!(hdr(&res, "content-length").as_deref(), Some("5000"));
    assert!(hdr(&res, "content-range").is_none());
    assert_eq!(res.bytes().await.unwrap(), body);
}

#[tokio::test]
async fn no_length_is_chunked_without_ranges() {
    let origin = Origin::start().await;
    let body = data(200_000);
    origin.add_file("n.bin", body.clone(), "video/mp4");
    origin.set_faults(
        "n.bin",
        Faults {
            no_length: true,
            ..Default::default()
        },
    );
    let res = get_range(&origin, "n.bin", "bytes=100-199").await;
    assert_eq!(res.status(), 200);
    assert!(hdr(&res, "content-length").is_none());
    assert!(hdr(&res, "accept-ranges").is_none());
    assert_eq!(hdr(&res, "transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(res.bytes().await.unwrap(), body);
}

#[tokio::test]
async fn no_validators() {
    let origin = Origin::start().await;
    origin.add_file("v.bin", data(100), "video/mp4");
    origin.set_faults(
        "v.bin",
        Faults {
            no_validators: true,
            ..Default::default()
        },
    );
    let res = test_client().get(origin.url("v.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(hdr(&res, "etag").is_none());
    assert!(hdr(&res, "last-modified").is_none());
    assert_eq!(hdr(&res, "content-length").as_deref(), Some("100"));
}

#[tokio::test]
async fn replacing_changes_validators_and_conditionals_work() {
    let origin = Origin::start().await;
    origin.add_file("c.bin", data(100), "video/mp4");
    let (e1, l1) = (
        origin.etag("c.bin").unwrap(),
        origin.last_modified("c.bin").unwrap(),
    );
    origin.add_file("c.bin", data(200), "video/mp4");
    let (e2, l2) = (
        origin.etag("c.bin").unwrap(),
        origin.last_modified("c.bin").unwrap(),
    );
    assert_ne!(e1, e2);
    assert_ne!(l1, l2);
    assert!(httpdate::parse_http_date(&l2).unwrap() > httpdate::parse_http_date(&l1).unwrap());

    let c = test_client();
    let res = c.get(origin.url("c.bin")).send().await.unwrap();
    assert_eq!(hdr(&res, "etag"), Some(e2.clone()));
    assert_eq!(res.bytes().await.unwrap().len(), 200);

    // If-None-Match / If-Modified-Since
    let res = c
        .get(origin.url("c.bin"))
        .header("If-None-Match", &e2)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let res = c
        .get(origin.url("c.bin"))
        .header("If-None-Match", &e1)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = c
        .get(origin.url("c.bin"))
        .header("If-Modified-Since", &l2)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let res = c
        .get(origin.url("c.bin"))
        .header("If-Modified-Since", &l1)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // If-Range: a stale validator gets the whole (new) body.
    for (ir, want) in [(&e2, 206), (&e1, 200), (&l2, 206), (&l1, 200)] {
        let res = c
            .get(origin.url("c.bin"))
            .header("Range", "bytes=0-9")
            .header("If-Range", ir.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), want, "If-Range {ir}");
    }
}

#[tokio::test]
async fn reset_aborts_mid_body_and_counts_partial_bytes() {
    let origin = Origin::start().await;
    let body = data(1_000_000);
    origin.add_file("x.bin", body.clone(), "video/mp4");
    origin.set_faults(
        "x.bin",
        Faults {
            reset_after_bytes: Some(300_000),
            reset_once: true,
            ..Default::default()
        },
    );
    let res = test_client().get(origin.url("x.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(hdr(&res, "content-length").as_deref(), Some("1000000"));
    let mut stream = res.bytes_stream();
    let mut got = Vec::new();
    let mut error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => got.extend_from_slice(&b),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert!(
        error.is_some(),
        "client must see an error, got {} bytes cleanly",
        got.len()
    );
    assert_eq!(got.len(), 300_000);
    assert_eq!(&got[..], &body[..300_000]);
    assert_eq!(
        origin.path_stats("x.bin"),
        Stats {
            requests: 1,
            body_bytes: 300_000
        }
    );

    // reset_once: the fault is gone, the next request completes.
    let res = get_range(&origin, "x.bin", "bytes=300000-").await;
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap(), body.slice(300_000..));
    assert_eq!(
        origin.path_stats("x.bin"),
        Stats {
            requests: 2,
            body_bytes: 1_000_000
        }
    );
}

#[tokio::test]
async fn reset_every_time_without_reset_once() {
    let origin = Origin::start().await;
    origin.add_file("y.bin", data(100_000), "video/mp4");
    origin.set_faults(
        "y.bin",
        Faults {
            reset_after_bytes: Some(1000),
            ..Default::default()
        },
    );
    for _ in 0..2 {
        let res = test_client().get(origin.url("y.bin")).send().await.unwrap();
        assert!(res.bytes().await.is_err());
    }
    // A response shorter than the limit is not reset.
    let res = get_range(&origin, "y.bin", "bytes=0-499").await;
    assert_eq!(res.bytes().await.unwrap().len(), 500);
    assert_eq!(
        origin.path_stats("y.bin"),
        Stats {
            requests: 3,
            body_bytes: 2500
        }
    );
}

#[tokio::test]
async fn reset_is_a_transfer_error_for_curl() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl not installed; skipping");
        return;
    }
    let origin = Origin::start().await;
    origin.add_file("z.bin", data(500_000), "video/mp4");
    origin.set_faults(
        "z.bin",
        Faults {
            reset_after_bytes: Some(100_000),
            ..Default::default()
        },
    );
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
        ])
        .arg(origin.url("z.bin"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(18),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "100000");
}

#[tokio::test]
async fn redirect_and_status_faults() {
    let origin = Origin::start().await;
    origin.add_file("target.bin", data(10), "video/mp4");
    origin.set_faults(
        "moved.bin",
        Faults {
            redirect_to: Some(origin.url("target.bin")),
            ..Default::default()
        },
    );
    let res = test_client()
        .get(origin.url("moved.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(hdr(&res, "location"), Some(origin.url("target.bin")));

    origin.set_faults(
        "target.bin",
        Faults {
            status: Some(503),
            ..Default::default()
        },
    );
    let res = test_client()
        .get(origin.url("target.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(!res.bytes().await.unwrap().is_empty());

    origin.clear_faults("target.bin");
    let res = test_client()
        .get(origin.url("target.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn latency_rate_and_hang() {
    let origin = Origin::start().await;
    origin.add_file("s.bin", data(300_000), "video/mp4");
    origin.set_faults(
        "s.bin",
        Faults {
            latency: Duration::from_millis(200),
            rate_bytes_per_sec: Some(1_000_000),
            ..Default::default()
        },
    );
    let t0 = Instant::now();
    let res = test_client().get(origin.url("s.bin")).send().await.unwrap();
    let ttfb = t0.elapsed();
    assert!(ttfb >= Duration::from_millis(200), "{ttfb:?}");
    assert_eq!(res.bytes().await.unwrap().len(), 300_000);
    let total = t0.elapsed();
    // 300 kB at 1 MB/s: about 0.3 s of body after the latency.
    assert!(total >= Duration::from_millis(450), "{total:?}");
    assert!(total < Duration::from_secs(3), "{total:?}");

    origin.set_faults(
        "s.bin",
        Faults {
            hang: true,
            ..Default::default()
        },
    );
    let r = test_client()
        .get(origin.url("s.bin"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
}

#[tokio::test]
async fn stats_and_log() {
    let origin = Origin::start().await;
    origin.add_file("p.bin", data(1000), "video/mp4");
    origin.add_file("q.bin", data(50), "video/mp4");
    let c = test_client();
    c.get(origin.url("p.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.get(origin.url("p.bin"))
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.get(origin.url("q.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.get(origin.url("q.bin?x=1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        origin.path_stats("p.bin"),
        Stats {
            requests: 2,
            body_bytes: 1100
        }
    );
    assert_eq!(
        origin.path_stats("/q.bin"),
        Stats {
            requests: 2,
            body_bytes: 100
        }
    );
    assert_eq!(origin.path_stats("never"), Stats::default());
    assert_eq!(
        origin.stats(),
        Stats {
            requests: 4,
            body_bytes: 1200
        }
    );
    let log = origin.requests_log();
    assert_eq!(log.len(), 4);
    assert_eq!(
        log.iter()
            .map(|r| (r.path.as_str(), r.status, r.body_bytes))
            .collect::<Vec<_>>(),
        vec![
            ("p.bin", 200, 1000),
            ("p.bin", 206, 100),
            ("q.bin", 200, 50),
            ("q.bin?x=1", 200, 50)
        ]
    );
    assert_eq!(log[1].range.as_deref(), Some("bytes=0-99"));
    assert!(log[0].range.is_none());
    assert_eq!(log[0].method, "GET");

    origin.reset_stats();
    assert_eq!(origin.stats(), Stats::default());
    assert_eq!(origin.path_stats("p.bin"), Stats::default());
    assert!(origin.requests_log().is_empty());
    c.get(origin.url("p.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        origin.stats(),
        Stats {
            requests: 1,
            body_bytes: 1000
        }
    );
}

#[tokio::test]
async fn aborted_client_counts_only_what_was_sent() {
    let origin = Origin::start().await;
    origin.add_file("big.bin", data(8 * 1024 * 1024), "video/mp4");
    origin.set_faults("big.bin", Faults::throttled(2_000_000));
    let res = test_client()
        .get(origin.url("big.bin"))
        .send()
        .await
        .unwrap();
    let mut s = res.bytes_stream();
    let mut got = 0;
    while got < 100_000 {
        got += s.next().await.unwrap().unwrap().len();
    }
    drop(s);
    // Counted until the origin's side of the connection lets the body go.
    common::wait_for("the origin to drop the body", || {
        std::future::ready(origin.open_bodies() == 0)
    })
    .await;
    let sent = origin.path_stats("big.bin").body_bytes;
    assert!((100_000..4_000_000).contains(&sent), "sent {sent}");
}

#[tokio::test]
async fn capped_and_busy_origins() {
    use common::origin::Busy;
    let origin = Origin::start().await;
    origin.add_file("f", data(4 << 20), "application/octet-stream");
    origin.set_faults(
        "f",
        Faults {
            max_open: Some(1),
            ..Faults::throttled(256 * 1024)
        },
    );
    let c = test_client();
    // One body open (slow): the next request is turned away.
    let first = c.get(origin.url("f")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = c.get(origin.url("f")).send().await.unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(hdr(&second, "retry-after").as_deref(), Some("1"));
    drop(first);
    common::wait_for("the body closed", || async { origin.open_bodies() == 0 }).await;
    let third = get_range(&origin, "f", "bytes=0-9").await;
    assert_eq!(third.status(), 206);

    // 429 to the second request only.
    origin.set_faults(
        "f",
        Faults {
            busy: Some(Busy::new(2, 1, 3)),
            ..Faults::default()
        },
    );
    let statuses: Vec<(u16, Option<String>)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let r = get_range(&origin, "f", "bytes=0-9").await;
            v.push((r.status().as_u16(), hdr(&r, "retry-after")));
        }
        v
    };
    assert_eq!(
        statuses,
        [(206, None), (429, Some("3".to_string())), (206, None)]
    );

    // Presigned URLs: a plain one and a tampered one are refused.
    origin.set_faults(
        "f",
        Faults {
            presigned: true,
            ..Faults::default()
        },
    );
    let signed = origin.presign("f", Duration::from_secs(60));
    assert_eq!(c.get(&signed).send().await.unwrap().status(), 200);
    assert_eq!(c.get(origin.url("f")).send().await.unwrap().status(), 403);
    let tampered = signed.replace("X-Amz-Nonce=", "X-Amz-Nonce=9");
    assert_eq!(c.get(&tampered).send().await.unwrap().status(), 403);
}
