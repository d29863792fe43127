//! Cached chunks sent with sendfile(2): the bytes are the origin's in
//! every shape of response (whole, ranges, multipart, many on one
//! connection, pipelined), a player leaving in the middle of a file piece
//! frees what it held, a chunk file cut short after spool opened it is
//! served from the origin, and `--sendfile false` sends the same bytes
//! the copying way.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::origin::Origin;
use common::{client, data, get, metric, wait_idle, wait_until_cached, Spool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHUNK: usize = 64 * 1024;
/// Twenty chunks and a short last one.
const LEN: usize = 20 * CHUNK + 777;

const SENT: &str = "spool_sendfile_bytes_total";

/// Asserts that at least `bytes` more went out with sendfile since
/// `before` (where the kernel tells what is in the page cache; elsewhere
/// nothing goes out that way, which the copying path covers).
async fn sent_with_sendfile(spool: &Spool, before: f64, bytes: usize) {
    if spool::testing::page_cache_answered() {
        let sent = metric(spool, SENT).await - before;
        assert!(
            sent >= bytes as f64,
            "{sent} bytes went out with sendfile, not {bytes}"
        );
    }
}

async fn cached(origin: &Origin, spool: &Spool, path: &str) -> Bytes {
    let body = data(LEN, 7);
    origin.add_file(path, body.clone(), "video/mp4");
    let (status, _, got) = get(&client(), &spool.url(&origin.url(path)), None).await;
    assert_eq!(status, 200);
    assert!(got == body, "the first (cold) read is the origin's bytes");
    wait_until_cached(&spool.cache_dir, &origin.url(path)).await;
    wait_idle(spool).await;
    body
}

/// The request target that asks spool for `url`.
fn stream_target(url: &str) -> String {
    format!(
        "/stream?url={}",
        percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// Single ranges across chunk edges, the last byte, suffixes, the whole.
fn ranges() -> Vec<(usize, usize)> {
    vec![
        (0, LEN - 1),
        (0, 0),
        (CHUNK - 1, CHUNK),
        (3 * CHUNK + 100, 9 * CHUNK + 5),
        (LEN - 1, LEN - 1),
        (LEN - 1000, LEN - 1),
        (17, 2 * CHUNK - 18),
    ]
}

/// Every shape of warm response through a connection that sends its
/// cached chunks with sendfile: byte for byte the origin's.
async fn warm_responses_are_the_origins(spool: &Spool, origin: &Origin, body: &Bytes) {
    let c = client();
    let url = spool.url(&origin.url("m"));
    let (status, _, got) = get(&c, &url, None).await;
    assert_eq!(status, 200);
    assert!(got == *body, "a whole warm read is the origin's bytes");
    for (a, b) in ranges() {
        let (status, h, got) = get(&c, &url, Some(&format!("bytes={a}-{b}"))).await;
        assert_eq!(status, 206, "{a}-{b}");
        assert_eq!(
            common::header(&h, "content-length"),
            (b - a + 1).to_string()
        );
        assert!(got == body.slice(a..=b), "range {a}-{b}");
    }
    let (status, _, got) = get(&c, &url, Some("bytes=-5000")).await;
    assert_eq!(status, 206);
    assert!(got == body.slice(LEN - 5000..));
    // Several ranges: multipart framing between file pieces.
    let (status, h, got) = get(&c, &url, Some("bytes=10-20,70000-200000,1300000-")).await;
    assert_eq!(status, 206);
    assert!(common::header(&h, "content-type").starts_with("multipart/byteranges"));
    for (a, b) in [(10, 20), (70000, 200000), (1300000, LEN - 1)] {
        let part = &body[a..=b];
        let at = got
            .windows(part.len())
            .position(|w| w == part)
            .unwrap_or_else(|| panic!("part {a}-{b} in the multipart body"));
        let head = String::from_utf8_lossy(&got[at.saturating_sub(200)..at]);
        assert!(
            head.contains(&format!("bytes {a}-{b}/{LEN}")),
            "part {a}-{b} under its own header"
        );
    }
}

#[tokio::test]
async fn warm_reads_are_sent_from_the_chunk_files_byte_for_byte() {
    let origin = Origin::start().await;
    let spool = Spool::start(&origin).await;
    let body = cached(&origin, &spool, "m").await;
    let before = metric(&spool, SENT).await;
    let requests = origin.path_stats("m").requests;
    warm_responses_are_the_origins(&spool, &origin, &body).await;
    // At least the whole read went out with sendfile.
    sent_with_sendfile(&spool, before, LEN).await;
    // Nothing of it came from the origin again.
    assert_eq!(origin.path_stats("m").requests, requests);
    spool.stop().await;
}

#[tokio::test]
async fn with_sendfile_off_the_same_bytes_are_copied() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| c.sendfile = false).await;
    let body = cached(&origin, &spool, "m").await;
    warm_responses_are_the_origins(&spool, &origin, &body).await;
    assert_eq!(
        metric(&spool, SENT).await,
        0.0,
        "nothing went with sendfile"
    );
    assert!(metric(&spool, "spool_served_bytes_total{source=\"cache\"}").await >= LEN as f64);
    spool.stop().await;
}

/// Reads one response (status, body; none for HEAD) off a keep-alive
/// connection.
async fn read_response(
    s: &mut TcpStream,
    pending: &mut Vec<u8>,
    head_only: bool,
) -> (u16, Vec<u8>) {
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("headers in time")
            .unwrap();
        assert!(n > 0, "connection closed before a response's headers");
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    pending.drain(..end);
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let len = if head_only { 0 } else { len };
    while pending.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("body in time")
            .unwrap();
        assert!(n > 0, "connection closed in a body");
        pending.extend_from_slice(&buf[..n]);
    }
    let body = pending.drain(..len).collect();
    (status, body)
}

/// Many responses on one connection, asked one after the other and all
/// at once (pipelined), HEAD among them: each body is its own bytes, none
/// of the pieces of one slips into the next.
#[tokio::test]
async fn one_connection_carries_many_responses_in_order() {
    let origin = Origin::start().await;
    let spool = Spool::start(&origin).await;
    let body = cached(&origin, &spool, "m").await;
    let target = stream_target(&origin.url("m"));
    let request = |method: &str, range: Option<(usize, usize)>| {
        let range = range
            .map(|(a, b)| format!("Range: bytes={a}-{b}\r\n"))
            .unwrap_or_default();
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{range}\r\n")
    };
    let asks: Vec<(&str, Option<(usize, usize)>)> = vec![
        ("GET", Some((5, 70000))),
        ("HEAD", None),
        ("GET", None),
        ("GET", Some((CHUNK, CHUNK))),
        ("HEAD", Some((0, 10))),
        ("GET", Some((LEN - 3, LEN - 1))),
        ("GET", Some((200000, 900000))),
    ];
    let check = |i: usize, status: u16, got: &[u8]| {
        let (method, range) = asks[i];
        match (method, range) {
            ("HEAD", _) => assert!(got.is_empty()),
            (_, Some((a, b))) => {
                assert_eq!(status, 206);
                assert!(got == &body[a..=b], "response {i}: range {a}-{b}");
            }
            (_, None) => {
                assert_eq!(status, 200);
                assert!(got == &body[..], "response {i}: the whole");
            }
        }
    };
    let before = metric(&spool, SENT).await;
    let mut s = TcpStream::connect(spool.addr).await.unwrap();
    let mut pending = Vec::new();
    // One after the other.
    for (i, (method, range)) in asks.iter().enumerate() {
        s.write_all(request(method, *range).as_bytes())
            .await
            .unwrap();
        let (status, got) = read_response(&mut s, &mut pending, *method == "HEAD").await;
        check(i, status, &got);
    }
    // All at once.
    let all: String = asks.iter().map(|(m, r)| request(m, *r)).collect();
    s.write_all(all.as_bytes()).await.unwrap();
    for (i, (method, _)) in asks.iter().enumerate() {
        let (status, got) = read_response(&mut s, &mut pending, *method == "HEAD").await;
        check(i, status, &got);
    }
    assert!(pending.is_empty(), "no byte past the last response");
    drop(s);
    wait_idle(&spool).await;
    sent_with_sendfile(&spool, before, 2 * LEN).await;
    spool.stop().await;
}

/// A player that leaves with file pieces queued: its stream ends, and
/// the next player gets the right bytes.
#[tokio::test]
async fn a_player_leaving_in_a_file_piece_frees_its_stream() {
    let origin = Origin::start().await;
    let spool = Spool::start(&origin).await;
    let body = cached(&origin, &spool, "m").await;
    let target = stream_target(&origin.url("m"));
    for _ in 0..5 {
        let mut s = TcpStream::connect(spool.addr).await.unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 1000];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        drop(s);
    }
    wait_idle(&spool).await;
    let before = metric(&spool, SENT).await;
    let (_, _, got) = get(&client(), &spool.url(&origin.url("m")), None).await;
    assert!(got == body);
    sent_with_sendfile(&spool, before, LEN).await;
    spool.stop().await;
}

/// A player reading slowly but steadily (400 KiB/s here, with
/// --write-timeout 1s and 1 MiB chunks) gets every byte: a file piece
/// (512 KiB) takes it longer than the timeout to take, and its body waits
/// on while the connection takes bytes; only a player that takes none
/// for the timeout loses its stream.
#[tokio::test]
async fn a_slow_steady_player_gets_every_byte() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| {
        c.chunk_size = 1 << 20;
        c.write_timeout = Duration::from_secs(1);
    })
    .await;
    let len = (2 << 20) + 300_000;
    let body = data(len, 9);
    origin.add_file("slow", body.clone(), "video/mp4");
    let url = origin.url("slow");
    let (_, _, got) = get(&client(), &spool.url(&url), None).await;
    assert!(got == body);
    wait_until_cached(&spool.cache_dir, &url).await;
    wait_idle(&spool).await;
    let before = metric(&spool, SENT).await;
    // A small receive buffer, so that the player's pace reaches spool.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut s = socket.connect(spool.addr).await.unwrap();
    let target = stream_target(&url);
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let end = loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the headers");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    got.drain(..end);
    while got.len() < len {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("bytes in time")
            .unwrap();
        assert!(
            n > 0,
            "the slow player's response was cut after {} bytes",
            got.len()
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == body, "the slow player got the origin's bytes");
    sent_with_sendfile(&spool, before, len).await;
    spool.stop().await;
}

/// A chunk file cut short after spool opened and kept it: the stretch
/// is not all in the page cache any more, so it is read, found short,
/// set aside and served from the origin, from the exact byte.
#[tokio::test]
async fn a_chunk_file_cut_short_while_open_is_served_from_the_origin() {
    let origin = Origin::start().await;
    let spool = Spool::start(&origin).await;
    let body = cached(&origin, &spool, "m").await;
    let url = spool.url(&origin.url("m"));
    // Read warm once: every chunk file is now open and kept.
    let (_, _, got) = get(&client(), &url, None).await;
    assert!(got == body);
    let media_dir = common::only_media_dir(&spool.cache_dir);
    std::fs::OpenOptions::new()
        .write(true)
        .open(media_dir.join("3.chunk"))
        .unwrap()
        .set_len(100)
        .unwrap();
    let requests = origin.path_stats("m").requests;
    let before = metric(&spool, SENT).await;
    let (status, _, got) = get(&client(), &url, None).await;
    assert_eq!(status, 200);
    assert!(got == body, "a wrong byte was served");
    let (_, _, got) = get(
        &client(),
        &url,
        Some(&format!("bytes={}-{}", 3 * CHUNK + 50, 4 * CHUNK + 50)),
    )
    .await;
    assert!(got == body.slice(3 * CHUNK + 50..=4 * CHUNK + 50));
    assert!(
        origin.path_stats("m").requests > requests,
        "the cut chunk came from the origin"
    );
    // The chunks around it still went out with sendfile.
    sent_with_sendfile(&spool, before, LEN - CHUNK).await;
    assert!(metric(&spool, "spool_cache_read_errors_total").await >= 1.0);
    spool.stop().await;
}
