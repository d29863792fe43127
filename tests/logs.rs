//! What spool logs, from the real binary: players hanging up mid-stream,
//! seeking, resetting connections or sending half a request are ordinary
//! and leave no ERROR or WARN line; each stream leaves one info line. Log
//! lines are for people (no escape codes in a file, no Rust debug text),
//! or JSON objects with `--log-format json`.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::origin::{Faults, Origin};
use common::{client, data, ChildLog, KillOnDrop};

/// The real binary with `args` (a subcommand and its flags) on loopback
/// ports of its own, its cache in `dir`, allowed to reach `origin`,
/// logging at info to `log` (a pipe: as a log file would be) in the
/// format the arguments say, not the environment's.
fn spool(
    origin: &Origin,
    dir: &std::path::Path,
    log: &ChildLog,
    args: &[&str],
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--cache-dir")
        .arg(dir)
        .args(["--allow-upstream", &origin.addr().ip().to_string()])
        // This machine's own free space is not what the tests are about.
        .args(["--min-free-bytes", "0", "--min-free-percent", "0"])
        .env("SPOOL_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("SPOOL_LOG_FORMAT")
        .env_remove("SPOOL_SECRET")
        .env_remove("SPOOL_SECRET_FILE")
        .stdout(std::process::Stdio::null())
        .stderr(log.stdio())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_hanging_up_are_not_errors() {
    let origin = Origin::start().await;
    origin.add_file("movie.mp4", data(4 * 1024 * 1024, 1), "video/mp4");
    origin.set_faults("movie.mp4", Faults::throttled(2 * 1024 * 1024));
    let tmp = tempfile::tempdir().unwrap();
    let log = ChildLog::new();
    let mut child = spool(
        &origin,
        tmp.path(),
        &log,
        &["serve", "--chunk-size", "64KiB"],
    );
    let addr = log.listen_addr(&mut child).await;
    let mut child = KillOnDrop(child);
    let enc: String = url::form_urlencoded::byte_serialize(
        format!("{}?token=hunter2", origin.url("movie.mp4")).as_bytes(),
    )
    .collect();
    let url = format!("http://{addr}/stream?url={enc}");
    let c = client();
    // A player reads a little, then seeks: each time it hangs up mid-body.
    for range in [
        "bytes=0-",
        "bytes=2000000-",
        "bytes=100000-",
        "bytes=3000000-",
    ] {
        let mut resp = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(resp.status(), 206);
        let first = resp.chunk().await.unwrap().unwrap();
        assert!(!first.is_empty());
        drop(resp);
    }
    // A connection reset mid-body, and half a request.
    let path = format!("/stream?url={enc}");
    let addr2 = addr.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr2).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST
        let mut s = std::net::TcpStream::connect(&addr2).unwrap();
        write!(s, "GET /stream?url=").unwrap();
        drop(s);
    })
    .await
    .unwrap();
    // Every stream ended with its one info line.
    common::wait_for("five stream lines", || {
        let n = log
            .text()
            .lines()
            .filter(|l| l.contains(" stream ") && l.contains("player left"))
            .count();
        std::future::ready(n >= 5)
    })
    .await;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let text = log.text();
    let loud: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains(" WARN "))
        .collect();
    assert!(loud.is_empty(), "ERROR/WARN lines: {loud:#?}");
    let line = text.lines().find(|l| l.contains(" stream ")).unwrap();
    for field in ["url=", "bytes=", "from_cache=", "from_origin=", "ms="] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(
        line.contains("movie.mp4?REDACTED") && !text.contains("hunter2"),
        "{line}"
    );
    // stderr is a pipe here, as for a log file: no colour codes.
    assert!(
        !text.contains('\x1b'),
        "escape codes in a log file:\n{text}"
    );
    for debug_text in [
        "Some(", "MediaId(", "Bytes(", "Time(", "\"info\"", "ended=\"",
    ] {
        assert!(!text.contains(debug_text), "{debug_text:?} in:\n{text}");
    }
    assert!(text.contains("read_ahead=32.00 MiB"), "{text}");
}

/// `--log-format json`: every line one JSON object, fields as values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let origin = Origin::start().await;
    origin.add_file("a.mp4", data(300_000, 2), "video/mp4");
    let tmp = tempfile::tempdir().unwrap();
    let log = ChildLog::new();
    let child = spool(
        &origin,
        tmp.path(),
        &log,
        &["--log-format", "json", "serve"],
    );
    let mut child = KillOnDrop(child);
    let line = log.wait_for_line(&mut child.0, "spool serving").await;
    let serving: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = serving["fields"]["listen"].as_str().unwrap().to_owned();
    let url = format!(
        "http://{addr}/stream?url={}",
        url::form_urlencoded::byte_serialize(origin.url("a.mp4").as_bytes()).collect::<String>()
    );
    let (_, _, body) = common::get(&client(), &url, None).await;
    assert_eq!(body.len(), 300_000);
    common::wait_for("the stream line", || {
        std::future::ready(log.text().contains("\"stream\""))
    })
    .await;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let text = log.text();
    let mut streams = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["fields"]["message"] == "stream" {
            streams += 1;
            assert_eq!(v["fields"]["bytes"], 300_000, "{line}");
            assert_eq!(v["fields"]["ended"], "complete", "{line}");
        }
    }
    assert_eq!(streams, 1, "{text}");
}

/// A player's session of an HLS title is one info line when it ends (the
/// server stopping ends it too), not two lines per segment; a file no
/// playlist names keeps its own stream line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_title_session_is_one_line() {
    let origin = Origin::start().await;
    origin.add_file(
        "show/index.m3u8",
        bytes::Bytes::from_static(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\ns0.ts\n#EXTINF:2,\ns1.ts\n#EXTINF:2,\ns2.ts\n#EXT-X-ENDLIST\n",
        ),
        "application/vnd.apple.mpegurl",
    );
    for i in 0..3u64 {
        origin.add_file(&format!("show/s{i}.ts"), data(100_000, i), "video/mp2t");
    }
    origin.add_file("lone.mp4", data(100_000, 9), "video/mp4");
    let tmp = tempfile::tempdir().unwrap();
    let log = ChildLog::new();
    let mut child = spool(&origin, tmp.path(), &log, &["serve"]);
    let addr = log.listen_addr(&mut child).await;
    let child = KillOnDrop(child);
    let c = client();
    let proxied = |u: &str| {
        let enc: String = url::form_urlencoded::byte_serialize(u.as_bytes()).collect();
        format!("http://{addr}/stream?url={enc}")
    };
    // A player: the playlist, then its segments, twice over (a replay).
    for _ in 0..2 {
        let (status, _, body) =
            common::get(&c, &proxied(&origin.url("show/index.m3u8")), None).await;
        assert_eq!(status, 200);
        let text = String::from_utf8(body.to_vec()).unwrap();
        for uri in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (status, _, body) = common::get(&c, &format!("http://{addr}{uri}"), None).await;
            assert_eq!((status, body.len()), (200, 100_000));
        }
        // The replay reads them from the cache.
        for i in 0..3 {
            common::wait_until_cached(tmp.path(), &origin.url(&format!("show/s{i}.ts"))).await;
        }
    }
    let (status, _, _) = common::get(&c, &proxied(&origin.url("lone.mp4")), None).await;
    assert_eq!(status, 200);
    common::wait_for("the lone file's stream line", || {
        std::future::ready(
            log.text()
                .lines()
                .any(|l| l.contains(" stream ") && l.contains("lone.mp4")),
        )
    })
    .await;
    // Stopped: the session still open is logged.
    let pid = child.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut child = child;
    child.0.wait().unwrap();
    let text = log.text();
    let info: Vec<&str> = text.lines().filter(|l| l.contains(" INFO ")).collect();
    let sessions: Vec<&&str> = info
        .iter()
        .filter(|l| l.contains("title session"))
        .collect();
    assert_eq!(sessions.len(), 1, "{text}");
    let s = sessions[0];
    for field in [
        "url=http://127.0.0.1",
        "show/index.m3u8",
        "client=127.0.0.1",
        "streams=6",
        "bytes=600000",
        "from_origin=300000",
        "from_cache=300000",
    ] {
        assert!(s.contains(field), "{field} in {s}");
    }
    assert!(
        !info
            .iter()
            .any(|l| l.contains(".ts") && !l.contains("title session")),
        "no line per segment:\n{text}"
    );
    assert_eq!(
        info.iter()
            .filter(|l| l.contains(" stream ") && l.contains("lone.mp4"))
            .count(),
        1,
        "{text}"
    );
}
