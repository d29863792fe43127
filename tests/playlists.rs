//! HLS playlists and DASH manifests through spool, over real HTTP against
//! the in-tree origin: every URI of a served playlist points back at spool
//! and gives the origin's bytes, in every URL form; a warm replay costs the
//! origin nothing; live playlists stay fresh with one fetch for many
//! players; the path form obeys the unsigned-link rules; a directory
//! token never reaches outside its directory.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::origin::{Faults, Origin};
use common::{client, data, get, wait_until_cached, Spool};
use spool::signing::{self, Expiry, Key, Scope};

const SECRET: &str = "a test secret that is long enough";
const HLS: &str = "application/vnd.apple.mpegurl";

fn key() -> Key {
    Key::from_secret(SECRET.as_bytes()).unwrap()
}

/// `/p/` form of an upstream URL, spelled by hand as the README says.
fn path_form(spool: &Spool, upstream: &str) -> String {
    let u = url::Url::parse(upstream).unwrap();
    let origin: String =
        url::form_urlencoded::byte_serialize(u.origin().ascii_serialization().as_bytes()).collect();
    format!("{}/p/{origin}{}", spool.base(), u.path())
}

/// The origin's URL by name (`localhost`): reachable through the test
/// allowlist (127.0.0.1), but not listed as written.
fn by_name(origin: &Origin, path: &str) -> String {
    format!("http://localhost:{}/{path}", origin.addr().port())
}

/// The media files of the HLS test stream: path → bytes.
fn hls_files() -> Vec<(&'static str, Bytes)> {
    vec![
        ("hls/low/init.mp4", data(1_000, 10)),
        ("hls/keys/k.bin", data(16, 11)),
        ("hls/low/seg0.ts", data(150_000, 12)),
        ("hls/low/seg1.ts", data(140_000, 13)),
        ("hls/low/seg2.ts", data(70_000, 14)),
        ("hls/high/seg0.ts", data(200_000, 15)),
        ("hls/high/seg1.ts", data(90_000, 16)),
        ("hls/audio/a0.aac", data(30_000, 17)),
    ]
}

/// A VOD stream: a master playlist (relative and absolute variants, an
/// audio rendition), media playlists with KEY and MAP, segments named
/// relative, root-relative and absolute.
fn add_hls(origin: &Origin) {
    let abs = origin.url("");
    origin.add_file(
        "hls/master.m3u8",
        Bytes::from(format!(
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"English, main\",URI=\"audio/en.m3u8\"\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1000,AUDIO=\"a\"\nlow/index.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=2000\n{abs}hls/high/index.m3u8\n"
        )),
        HLS,
    );
    origin.add_file(
        "hls/low/index.m3u8",
        Bytes::from(format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-KEY:METHOD=AES-128,URI=\"../keys/k.bin\",IV=0x01\n\
             #EXTINF:4,\nseg0.ts\n#EXTINF:4,\n/hls/low/seg1.ts\n#EXTINF:2,\n{abs}hls/low/seg2.ts\n#EXT-X-ENDLIST\n"
        )),
        // Some origins send playlists as plain text: the name decides.
        "text/plain",
    );
    origin.add_file(
        "hls/high/index.m3u8",
        Bytes::from_static(
            b"#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg0.ts\n#EXTINF:2,\nseg1.ts\n",
        ),
        HLS,
    );
    origin.add_file(
        "hls/audio/en.m3u8",
        Bytes::from_static(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\na0.aac\n#EXT-X-ENDLIST\n",
        ),
        HLS,
    );
    for (path, body) in hls_files() {
        origin.add_file(path, body, "video/mp2t");
    }
}

/// Every URI of an HLS playlist: URI lines and `URI="…"` attributes.
fn uris(playlist: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in playlist.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            out.push(line.to_owned());
        } else if let Some(i) = line.find("URI=\"") {
            let rest = &line[i + 5..];
            out.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    out
}

/// Plays a stream the way a player walks it: the playlist at `start`,
/// every URI in it (each must be a root-relative URL starting with
/// `prefix`), recursively. Returns the media bodies fetched.
async fn crawl(spool: &Spool, start: &str, prefix: &str) -> Vec<Bytes> {
    let c = client();
    let mut todo = vec![start.to_owned()];
    let mut media = Vec::new();
    let mut seen = BTreeSet::new();
    while let Some(u) = todo.pop() {
        let (status, h, body) = get(&c, &u, None).await;
        assert_eq!(status, 200, "{u}: {}", String::from_utf8_lossy(&body));
        if !body.starts_with(b"#EXTM3U") {
            media.push(body);
            continue;
        }
        assert_eq!(
            common::header(&h, "content-length"),
            body.len().to_string(),
            "the rewritten length"
        );
        let text = String::from_utf8(body.to_vec()).unwrap();
        for uri in uris(&text) {
            assert!(uri.starts_with(prefix), "{uri} in\n{text}");
            if seen.insert(uri.clone()) {
                todo.push(format!("{}{uri}", spool.base()));
            }
        }
    }
    media
}

fn sorted(v: Vec<Bytes>) -> Vec<Bytes> {
    let mut v = v;
    v.sort();
    v
}

fn expected() -> Vec<Bytes> {
    sorted(hls_files().into_iter().map(|(_, b)| b).collect())
}

async fn wait_until_segments_cached(
    spool: &Spool,
    origin: &Origin,
    by: fn(&Origin, &str) -> String,
) {
    for (path, _) in hls_files() {
        wait_until_cached(&spool.cache_dir, &by(origin, path)).await;
    }
}

#[tokio::test]
async fn hls_every_uri_goes_through_spool_and_a_warm_replay_costs_nothing() {
    let origin = Origin::start().await;
    add_hls(&origin);
    let spool = Spool::start(&origin).await;
    let master = origin.url("hls/master.m3u8");
    // Opened with /stream?url=, the playlists point at the path form.
    let got = crawl(&spool, &spool.url(&master), "/p/").await;
    assert_eq!(sorted(got), expected(), "every file, byte for byte");
    // The absolute variant, relative to the playlist's own address.
    let (_, _, body) = get(&client(), &spool.url(&master), None).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    let port = origin.addr().port();
    assert!(
        text.contains(&format!(
            "\n/p/http%3A%2F%2F127.0.0.1%3A{port}/hls/high/index.m3u8\n"
        )),
        "{text}"
    );

    wait_until_segments_cached(&spool, &origin, |o, p| o.url(p)).await;
    origin.reset_stats();
    let warm = crawl(&spool, &spool.url(&master), "/p/").await;
    assert_eq!(sorted(warm), expected());
    // Opened with the path form, the same.
    let warm = crawl(&spool, &path_form(&spool, &master), "/p/").await;
    assert_eq!(sorted(warm), expected());
    assert_eq!(
        origin.stats().body_bytes,
        0,
        "a warm replay costs the origin nothing"
    );
    assert_eq!(origin.stats().requests, 0);
}

#[tokio::test]
async fn a_signed_playlist_is_rewritten_to_signed_links_of_the_same_expiry() {
    let origin = Origin::start().await;
    add_hls(&origin);
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let master = url::Url::parse(&by_name(&origin, "hls/master.m3u8")).unwrap();
    let link = signing::link_scoped(
        &spool.base(),
        &key(),
        &master,
        Expiry(Some(Duration::from_secs(3600))),
        Scope::Dir,
    )
    .unwrap();
    assert!(link.ends_with("/master.m3u8"), "{link}");
    let token = link.split('/').nth(4).unwrap().to_owned();
    let expires = key().open_grant(&token, SystemTime::now()).unwrap().expires;
    // Restricted (a key): no unsigned URI leaks out, every file plays.
    let got = crawl(&spool, &link, "/s/").await;
    assert_eq!(sorted(got), expected());
    let (_, _, body) = get(&client(), &link, None).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    for uri in uris(&text) {
        let t = uri.split('/').nth(2).unwrap();
        let g = key().open_grant(t, SystemTime::now()).unwrap();
        assert_eq!(g.expires, expires, "{uri}");
        if t == token {
            assert_eq!(g.scope, Scope::Dir);
        } else {
            // The absolute variant (another origin spelling) gets a token
            // for that file alone.
            assert_eq!(g.scope, Scope::File, "{uri}");
            assert!(g.url.ends_with("hls/high/index.m3u8"), "{uri}");
        }
    }
    // The same playlist through the unsigned forms: refused (not listed as
    // written), before anything is fetched.
    let before = origin.stats().requests;
    for u in [
        spool.url(master.as_str()),
        path_form(&spool, master.as_str()),
    ] {
        let (status, _, body) = get(&client(), &u, None).await;
        assert_eq!(status, 403, "{u}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(origin.stats().requests, before);
}

#[tokio::test]
async fn the_path_form_obeys_the_unsigned_rules() {
    let origin = Origin::start().await;
    let body = data(100_000, 20);
    origin.add_file("v/movie.mp4", body.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let c = client();
    // Listed as written: served, with ranges, ending in the file name.
    let listed = path_form(&spool, &origin.url("v/movie.mp4"));
    assert!(listed.ends_with("/v/movie.mp4"));
    let (status, _, got) = get(&c, &listed, None).await;
    assert_eq!((status, got), (200, body.clone()));
    let (status, _, got) = get(&c, &listed, Some("bytes=10-19")).await;
    assert_eq!((status, got), (206, body.slice(10..20)));
    // A name not listed as written, an unknown host: 403, nothing fetched.
    let before = origin.stats().requests;
    for u in [
        path_form(&spool, &by_name(&origin, "v/movie.mp4")),
        path_form(&spool, "http://example.com/movie.mp4"),
    ] {
        let (status, _, text) = get(&c, &u, None).await;
        assert_eq!(status, 403, "{u}");
        assert!(String::from_utf8_lossy(&text).contains("signed link"));
    }
    // Malformed: 400 with a reason.
    for tail in [
        "nonsense/x.mp4",
        "ftp%3A%2F%2Fh/x",
        "http%3A%2F%2F127.0.0.1/a%2Fb",
    ] {
        let (status, _, text) = get(&c, &format!("{}/p/{tail}", spool.base()), None).await;
        assert_eq!(status, 400, "{tail}: {}", String::from_utf8_lossy(&text));
    }
    assert_eq!(origin.stats().requests, before);
}

/// A request sent as written (HTTP clients remove dot segments before
/// sending): its status and body.
fn raw_get(spool: &Spool, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(spool.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    (status, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_token_never_reaches_outside_its_directory() {
    let origin = Origin::start().await;
    origin.add_file("show/a.ts", data(1000, 30), "video/mp2t");
    origin.add_file("secret.mp4", data(1000, 31), "video/mp4");
    origin.add_file("show/sub/b.ts", data(1000, 32), "video/mp2t");
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let dir = by_name(&origin, "show/");
    let token = key().seal_scoped(&dir, None, Scope::Dir);
    let c = client();
    let (status, _, got) = get(&c, &format!("{}/s/{token}/sub/b.ts", spool.base()), None).await;
    assert_eq!((status, got), (200, data(1000, 32)));
    let before = origin.stats().requests;
    for rest in [
        "../secret.mp4",
        "sub/../../secret.mp4",
        "%2e%2e/secret.mp4",
        "sub/%2E%2E/%2e%2E/secret.mp4",
        "..%2Fsecret.mp4",
        "sub%2F..%2F..%2Fsecret.mp4",
        "..%5Csecret.mp4",
        "",
    ] {
        let (status, text) = raw_get(&spool, &format!("/s/{token}/{rest}"));
        assert_eq!(status, 400, "{rest}: {text}");
    }
    assert_eq!(origin.stats().requests, before, "nothing fetched");
    // A file token still names its file, whatever follows it.
    let file = key().seal(&by_name(&origin, "show/a.ts"), None);
    let (status, _, got) = get(
        &c,
        &format!("{}/s/{file}/anything/else.ts", spool.base()),
        None,
    )
    .await;
    assert_eq!((status, got), (200, data(1000, 30)));
}

#[tokio::test]
async fn a_live_playlist_is_fresh_and_fetched_once_for_many_players() {
    let origin = Origin::start().await;
    let live = |first: u32| {
        let mut s = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
        for n in first..first + 3 {
            s.push_str(&format!("#EXTINF:2,\nseg{n}.ts\n"));
        }
        Bytes::from(s)
    };
    origin.add_file("live/index.m3u8", live(0), HLS);
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("live/index.m3u8"));
    // Twenty players at once: one request to the origin.
    let c = client();
    let all = futures::future::join_all((0..20).map(|_| get(&c, &url, None))).await;
    for (status, _, body) in &all {
        assert_eq!(*status, 200);
        assert!(String::from_utf8_lossy(body).contains("/live/seg0.ts\n"));
    }
    assert_eq!(origin.path_stats("live/index.m3u8").requests, 1);
    let (_, h, _) = get(&c, &url, None).await;
    assert_eq!(common::header(&h, "cache-control"), "no-cache");
    // The window slides; one target duration later every player sees it.
    origin.add_file("live/index.m3u8", live(1), HLS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, _, body) = get(&c, &url, None).await;
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("/live/seg3.ts\n") && !text.contains("/live/seg0.ts\n"),
        "{text}"
    );
}

#[tokio::test]
async fn playlist_edge_cases() {
    let origin = Origin::start().await;
    // Moved: relative URIs resolve against where it was found.
    origin.add_file(
        "new/index.m3u8",
        Bytes::from_static(b"#EXTM3U\n#EXTINF:1,\nseg.ts\n#EXT-X-ENDLIST\n"),
        HLS,
    );
    origin.set_faults(
        "old/index.m3u8",
        Faults {
            redirect_to: Some(origin.url("new/index.m3u8")),
            ..Faults::default()
        },
    );
    // Too large.
    let mut big = b"#EXTM3U\n".to_vec();
    big.resize(5 * 1024 * 1024, b'#');
    origin.add_file("big.m3u8", Bytes::from(big), HLS);
    // Named by its Content-Type only.
    origin.add_file(
        "playlist",
        Bytes::from_static(b"#EXTM3U\n#EXTINF:1,\nx.ts\n#EXT-X-ENDLIST\n"),
        HLS,
    );
    // Named like a playlist, but not one: served as it came.
    origin.add_file(
        "notes.m3u",
        Bytes::from_static(b"just text\n"),
        "text/plain",
    );
    let spool = Spool::start(&origin).await;
    let c = client();
    let port = origin.addr().port();
    let (status, _, body) = get(&c, &spool.url(&origin.url("old/index.m3u8")), None).await;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body)
            .contains(&format!("/p/http%3A%2F%2F127.0.0.1%3A{port}/new/seg.ts\n")),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = get(&c, &spool.url(&origin.url("big.m3u8")), None).await;
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body).contains("playlist larger than 4 MiB"));
    let (status, h, body) = get(&c, &spool.url(&origin.url("playlist")), Some("bytes=0-3")).await;
    // Ranges on a playlist: the whole rewritten body, 200.
    assert_eq!(status, 200);
    assert_eq!(common::header(&h, "accept-ranges"), "none");
    assert!(String::from_utf8_lossy(&body)
        .contains(&format!("/p/http%3A%2F%2F127.0.0.1%3A{port}/x.ts\n")));
    let (status, _, body) = get(&c, &spool.url(&origin.url("notes.m3u")), None).await;
    assert_eq!((status, body), (200, Bytes::from_static(b"just text\n")));
}

const MPD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT4S" minBufferTime="PT2S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" segmentAlignment="true">
      <Representation id="0" mimeType="video/mp4" codecs="avc1.64001e" bandwidth="100000" width="320" height="240">
        <SegmentTemplate timescale="1000" duration="2000" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1"/>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio">
      <BaseURL>ABS/dash/audio/</BaseURL>
      <SegmentList><SegmentURL media="a1.m4s"/></SegmentList>
    </AdaptationSet>
  </Period>
</MPD>
"#;

#[tokio::test]
async fn dash_relative_references_resolve_through_spool() {
    let origin = Origin::start().await;
    let files = [
        ("dash/init-stream0.m4s", data(900, 40)),
        ("dash/chunk-stream0-00001.m4s", data(100_000, 41)),
        ("dash/chunk-stream0-00002.m4s", data(90_000, 42)),
        ("dash/audio/a1.m4s", data(20_000, 43)),
    ];
    for (p, b) in &files {
        origin.add_file(p, b.clone(), "video/mp4");
    }
    let mpd = MPD.replace("ABS/", &origin.url(""));
    origin.add_file(
        "dash/manifest.mpd",
        Bytes::from(mpd),
        "application/dash+xml",
    );
    let spool = Spool::start(&origin).await;
    let c = client();
    let port = origin.addr().port();
    let enc = format!("/p/http%3A%2F%2F127.0.0.1%3A{port}");
    for opened in [
        spool.url(&origin.url("dash/manifest.mpd")),
        path_form(&spool, &origin.url("dash/manifest.mpd")),
    ] {
        let (status, h, body) = get(&c, &opened, None).await;
        assert_eq!(status, 200);
        assert_eq!(common::header(&h, "content-type"), "application/dash+xml");
        let text = String::from_utf8(body.to_vec()).unwrap();
        // An MPD-level base naming the directory through spool; the
        // absolute audio base rewritten; templates left to the player.
        let base = format!("<BaseURL>{enc}/dash/</BaseURL>");
        assert!(text.contains(&base), "{text}");
        assert!(
            text.contains(&format!("<BaseURL>{enc}/dash/audio/</BaseURL>")),
            "{text}"
        );
        assert!(!text.contains("http://127.0.0.1"), "{text}");
        // What a player resolves: MPD base, then the relative names.
        let mpd_base = url::Url::parse(&opened)
            .unwrap()
            .join(&format!("{enc}/dash/"))
            .unwrap();
        for (name, want) in [
            ("init-stream0.m4s", &files[0].1),
            ("chunk-stream0-00001.m4s", &files[1].1),
            ("chunk-stream0-00002.m4s", &files[2].1),
            ("audio/a1.m4s", &files[3].1),
        ] {
            let u = mpd_base.join(name).unwrap();
            let (status, _, got) = get(&c, u.as_str(), None).await;
            assert_eq!((status, &got), (200, want), "{u}");
        }
    }
    // Opened with the path form, relative references resolve through
    // spool without any rewriting.
    let direct = url::Url::parse(&path_form(&spool, &origin.url("dash/manifest.mpd")))
        .unwrap()
        .join("chunk-stream0-00001.m4s")
        .unwrap();
    assert_eq!(get(&c, direct.as_str(), None).await.2, files[1].1);
}

#[tokio::test]
async fn sign_scopes_playlists_to_their_directory() {
    let origin = Origin::start().await;
    add_hls(&origin);
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let c = client();
    let sign = |body: String| {
        let c = c.clone();
        let u = format!("{}/sign", spool.admin());
        async move {
            let r = c
                .post(u)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            v["url"].as_str().unwrap().to_owned()
        }
    };
    let master = by_name(&origin, "hls/master.m3u8");
    let link = sign(format!(r#"{{"url": "{master}"}}"#)).await;
    let token = link.split('/').nth(4).unwrap();
    let g = key().open_grant(token, SystemTime::now()).unwrap();
    assert_eq!((g.scope, g.url), (Scope::Dir, by_name(&origin, "hls/")));
    assert_eq!(sorted(crawl(&spool, &link, "/s/").await), expected());
    // An explicit scope for anything else.
    let seg = by_name(&origin, "hls/low/seg0.ts");
    let dir_link = sign(format!(r#"{{"url": "{seg}", "scope": "directory"}}"#)).await;
    assert!(dir_link.ends_with("/seg0.ts"));
    let g = key()
        .open_grant(dir_link.split('/').nth(4).unwrap(), SystemTime::now())
        .unwrap();
    assert_eq!(g.scope, Scope::Dir);
    let file_link = sign(format!(r#"{{"url": "{master}", "scope": "file"}}"#)).await;
    let g = key()
        .open_grant(file_link.split('/').nth(4).unwrap(), SystemTime::now())
        .unwrap();
    assert_eq!(g.scope, Scope::File);
    // A file-scoped playlist link still plays: each URI gets its own token.
    assert_eq!(sorted(crawl(&spool, &file_link, "/s/").await), expected());
}

#[test]
fn the_sign_command_scopes_playlists_to_their_directory() {
    let sign = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
            .arg("sign")
            .args(args)
            .env("SPOOL_SECRET", SECRET)
            .env("SPOOL_PUBLIC_URL", "http://spool.lan:8080")
            .env_remove("SPOOL_SECRET_FILE")
            .env_remove("SPOOL_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let token = link.split('/').nth(4).unwrap().to_owned();
        let g = key().open_grant(&token, SystemTime::now()).unwrap();
        (link, g.scope, g.url)
    };
    let (link, scope, url) = sign(&["http://nas.lan/show/hls/master.m3u8?k=1"]);
    assert!(link.starts_with("http://spool.lan:8080/s/") && link.ends_with("/master.m3u8"));
    assert_eq!(
        (scope, url.as_str()),
        (Scope::Dir, "http://nas.lan/show/hls/?k=1")
    );
    let (_, scope, _) = sign(&["http://nas.lan/show/manifest.mpd", "--file"]);
    assert_eq!(scope, Scope::File);
    let (link, scope, url) = sign(&["http://nas.lan/show/movie.mkv", "--directory"]);
    assert!(link.ends_with("/movie.mkv"));
    assert_eq!((scope, url.as_str()), (Scope::Dir, "http://nas.lan/show/"));
    let (_, scope, _) = sign(&["http://nas.lan/show/movie.mkv"]);
    assert_eq!(scope, Scope::File);
}

/// A playlist that never changes is kept in the index and answers when
/// the origin cannot, after a restart too; a live one is never served
/// from there (it would be stale), and an origin that says a playlist is
/// gone is believed.
#[tokio::test]
async fn vod_playlists_outlive_their_origin_and_live_ones_do_not() {
    let origin = Origin::start().await;
    let vod = Bytes::from_static(
        b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:2,\nseg0.ts\n#EXT-X-ENDLIST\n",
    );
    let live = Bytes::from_static(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg0.ts\n");
    origin.add_file("v/index.m3u8", vod.clone(), HLS);
    origin.add_file("l/index.m3u8", live, HLS);
    origin.add_file("g/index.m3u8", vod.clone(), HLS);
    let spool = Spool::start(&origin).await;
    let c = client();
    for p in ["v/index.m3u8", "l/index.m3u8", "g/index.m3u8"] {
        let (status, _, _) = get(&c, &spool.url(&origin.url(p)), None).await;
        assert_eq!(status, 200, "{p}");
    }
    let (dir, _keep) = spool.stop().await;
    let down = Faults {
        status: Some(503),
        ..Default::default()
    };
    origin.set_faults("v/index.m3u8", down.clone());
    origin.set_faults("l/index.m3u8", down);
    origin.remove_file("g/index.m3u8");
    let spool = Spool::start_cfg(common::test_config(&dir, &origin)).await;
    let (status, _, body) = get(&c, &spool.url(&origin.url("v/index.m3u8")), None).await;
    assert_eq!(status, 200, "the VOD playlist from the index");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("/v/seg0.ts\n") && text.contains("#EXT-X-ENDLIST"),
        "{text}"
    );
    let (status, _, _) = get(&c, &spool.url(&origin.url("l/index.m3u8")), None).await;
    assert_eq!(status, 502, "a live playlist is not kept");
    let (status, _, _) = get(&c, &spool.url(&origin.url("g/index.m3u8")), None).await;
    assert_eq!(status, 404, "a playlist the origin says is gone is gone");
}

/// A kept VOD playlist is asked for again conditionally after a restart:
/// the origin's 304 answers from the kept copy (no playlist bytes sent),
/// and a playlist that changed is taken anew.
#[tokio::test]
async fn kept_playlists_are_revalidated_after_a_restart() {
    let origin = Origin::start().await;
    let first = Bytes::from_static(
        b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg0.ts\n#EXT-X-ENDLIST\n",
    );
    origin.add_file("r/index.m3u8", first.clone(), HLS);
    assert!(origin.etag("r/index.m3u8").is_some());
    let spool = Spool::start(&origin).await;
    let c = client();
    let url = origin.url("r/index.m3u8");
    let (status, _, before) = get(&c, &spool.url(&url), None).await;
    assert_eq!(status, 200);
    let (dir, _keep) = spool.stop().await;

    origin.reset_stats();
    let spool = Spool::start_cfg(common::test_config(&dir, &origin)).await;
    let (status, _, again) = get(&c, &spool.url(&url), None).await;
    assert_eq!(
        (status, &again),
        (200, &before),
        "the kept copy, rewritten the same"
    );
    let s = origin.path_stats("r/index.m3u8");
    assert_eq!(
        (s.requests, s.body_bytes),
        (1, 0),
        "one conditional request, answered 304"
    );
    let (dir, _keep2) = spool.stop().await;

    // The origin's playlist changes: a restarted spool takes the new one.
    origin.add_file(
        "r/index.m3u8",
        Bytes::from_static(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg0.ts\n#EXTINF:2,\nseg1.ts\n#EXT-X-ENDLIST\n",
        ),
        HLS,
    );
    let spool = Spool::start_cfg(common::test_config(&dir, &origin)).await;
    let (status, _, changed) = get(&c, &spool.url(&url), None).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&changed);
    assert!(text.contains("/r/seg1.ts\n"), "the new playlist: {text}");
}

/// With `--cache-key-ignore-query`, a kept playlist goes by its key (a
/// link signed anew finds it) but is asked for conditionally only with
/// the URL it was fetched with: another signature's playlist may name
/// segments signed for another player, so it is fetched whole. With the
/// origin down it answers a link signed anew, which asks the origin
/// again as soon as it is back (not that copy from memory).
#[tokio::test]
async fn a_kept_playlist_is_asked_for_conditionally_only_with_its_own_url() {
    let origin = Origin::start().await;
    origin.add_file(
        "k/index.m3u8",
        Bytes::from_static(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg0.ts\n#EXT-X-ENDLIST\n",
        ),
        HLS,
    );
    let keyed = |dir: &std::path::Path| {
        let mut cfg = common::test_config(dir, &origin);
        cfg.cache_key_ignore_query = spool::upstream::QueryFilter::parse_list("token").unwrap();
        cfg
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::start_cfg(keyed(dir.path())).await;
    let c = client();
    let signed = |t: &str| format!("{}?token={t}", origin.url("k/index.m3u8"));
    assert_eq!(get(&c, &spool.url(&signed("a")), None).await.0, 200);
    let (dir, _keep) = spool.stop().await;
    let spool = Spool::start_cfg(keyed(&dir)).await;
    for t in ["a", "b"] {
        assert_eq!(get(&c, &spool.url(&signed(t)), None).await.0, 200, "{t}");
    }
    // The bare URL: the copy kept came with a signature.
    let bare = origin.url("k/index.m3u8");
    assert_eq!(get(&c, &spool.url(&bare), None).await.0, 200);
    let asked = |from: usize| -> Vec<(String, bool)> {
        let log = origin.requests_log().into_iter().skip(from);
        log.map(|r| (r.path, r.headers.contains_key("if-none-match")))
            .collect()
    };
    assert_eq!(
        asked(0),
        [
            ("k/index.m3u8?token=a".to_owned(), false),
            ("k/index.m3u8?token=a".to_owned(), true),
            ("k/index.m3u8?token=b".to_owned(), false),
            ("k/index.m3u8".to_owned(), false),
        ],
        "conditional only with the URL it was kept from"
    );
    // Down: a link signed anew gets the kept copy; back up: that link
    // asks the origin again.
    origin.set_faults(
        "k/index.m3u8",
        Faults {
            status: Some(503),
            ..Default::default()
        },
    );
    let before = origin.requests_log().len();
    assert_eq!(
        get(&c, &spool.url(&signed("c")), None).await.0,
        200,
        "offline"
    );
    origin.clear_faults("k/index.m3u8");
    // Past the second a failure is shared for.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&c, &spool.url(&signed("c")), None).await.0, 200);
    let again: Vec<String> = asked(before).into_iter().map(|(p, _)| p).collect();
    assert_eq!(again, ["k/index.m3u8?token=c", "k/index.m3u8?token=c"]);
}
