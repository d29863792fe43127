//! Proxied bytes never act as spool: the control plane is a listener of
//! its own that refuses foreign Hosts and cross-site state changes, and
//! every media answer is inert in a browser. Over real HTTP, against a
//! real origin on loopback.

mod common;

use common::origin::Origin;
use common::{client, data, get, header, Spool};
use serde_json::{json, Value};

const TOKEN: &str = "boundary-admin-token-0123";

/// One request to the control plane: method, path, extra headers.
async fn call(spool: &Spool, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), format!("{}{path}", spool.admin()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if method == "POST" {
        req = req.header("content-type", "application/json").body("{}");
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

/// A rebinding page sends its own name as Host: every control plane
/// endpoint refuses it, also to a loopback client that is an admin, also
/// with the token.
#[tokio::test]
async fn a_foreign_host_is_refused_everywhere() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| c.admin_token = Some(TOKEN.into())).await;
    let bearer = format!("Bearer {TOKEN}");
    for host in [
        "attacker.example",
        "attacker.example:8081",
        "127.0.0.1.nip.io",
    ] {
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/api/status"),
            ("GET", "/api/media"),
            ("GET", "/metrics"),
            ("POST", "/api/caching/pause"),
            ("POST", "/sign"),
        ] {
            let (status, v) = call(&spool, method, path, &[("host", host)]).await;
            assert_eq!(status, 403, "{method} {path} Host {host}: {v}");
            assert!(v["error"].as_str().unwrap().contains("Host"), "{v}");
            let (status, _) = call(
                &spool,
                method,
                path,
                &[("host", host), ("authorization", &bearer)],
            )
            .await;
            assert_eq!(status, 403, "{method} {path} Host {host} with the token");
        }
    }
    // Caching was never paused by any of them.
    assert!(spool.server.is_caching());
    // Its own address and localhost are fine.
    let port = spool.admin_addr.unwrap().port();
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (status, v) = call(&spool, "GET", "/api/status", &[("host", &host)]).await;
        assert_eq!(status, 200, "{host}: {v}");
    }
}

/// `--admin-host` names extra Hosts (a reverse proxy's name) and origins.
#[tokio::test]
async fn admin_host_names_are_accepted() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| c.admin_host = vec!["Spool.LAN".into()]).await;
    let (status, v) = call(&spool, "GET", "/api/status", &[("host", "spool.lan")]).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = call(
        &spool,
        "POST",
        "/api/caching/pause",
        &[("host", "spool.lan"), ("origin", "https://spool.lan")],
    )
    .await;
    assert_eq!((status, v["changed"].clone()), (200, json!(true)), "{v}");
}

/// A page on another origin cannot change anything, even where its
/// request needs no credential (a loopback browser, loopback trusted):
/// pause, resume, delete, prefetch and sign all refuse its Origin. The
/// control plane's own origin (the status page) and a command line
/// client (no Origin) may.
#[tokio::test]
async fn cross_site_state_changes_are_refused() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| {
        c.signing.secret = Some("boundary-secret-0123456789abcdef".into())
    })
    .await;
    for evil in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        for (method, path) in [
            ("POST", "/api/caching/pause"),
            ("POST", "/api/prefetch"),
            ("DELETE", "/api/media/1"),
            ("DELETE", "/api/prefetch/1"),
            ("POST", "/sign"),
        ] {
            let (status, v) = call(&spool, method, path, &[("origin", evil)]).await;
            assert_eq!(status, 403, "{method} {path} from {evil}: {v}");
            assert!(v["error"].as_str().unwrap().contains("origin"), "{v}");
        }
    }
    assert!(spool.server.is_caching(), "nothing was paused");
    let own = spool.admin();
    let (status, v) = call(&spool, "POST", "/api/caching/pause", &[("origin", &own)]).await;
    assert_eq!((status, v["changed"].clone()), (200, json!(true)), "{v}");
    let (status, v) = call(&spool, "POST", "/api/caching/resume", &[]).await;
    assert_eq!((status, v["changed"].clone()), (200, json!(true)), "{v}");
    // Reads from another origin are answered (the browser keeps the answer
    // from the page: no CORS header is ever sent).
    let r = client()
        .get(format!("{own}/api/status"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// Every media answer is inert: nosniff and a sandboxing policy on all of
/// them; HTML, SVG and XML come as downloads unless the setting keeps
/// them inline; media types play as before.
#[tokio::test]
async fn media_answers_are_inert() {
    let origin = Origin::start().await;
    let page = b"<html><script>fetch('/api/status')</script></html>".to_vec();
    origin.add_file("page.html", page.clone().into(), "text/html; charset=utf-8");
    origin.add_file(
        "pic.svg",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec().into(),
        "image/svg+xml",
    );
    origin.add_file(
        "feed.xml",
        b"<?xml version='1.0'?><a/>".to_vec().into(),
        "application/xml",
    );
    origin.add_file("movie.mp4", data(100_000, 3), "video/mp4");
    origin.add_file("untyped", b"<html><script>1</script>".to_vec().into(), "");
    let spool = Spool::start(&origin).await;
    let c = client();
    // name, a download, sandboxed (a media document is not: it loads its
    // own URL again; it allows no script either way)
    for (name, download, sandboxed) in [
        ("page.html", true, true),
        ("pic.svg", true, true),
        ("feed.xml", true, true),
        ("movie.mp4", false, false),
        ("untyped", false, true),
    ] {
        let url = spool.url(&origin.url(name));
        for range in [None, Some("bytes=0-9")] {
            let (status, h, body) = get(&c, &url, range).await;
            assert!(status == 200 || status == 206, "{name}: {status}");
            assert!(!body.is_empty());
            assert_eq!(header(&h, "x-content-type-options"), "nosniff", "{name}");
            let csp = header(&h, "content-security-policy");
            assert_eq!(csp.starts_with("sandbox;"), sandboxed, "{name}: {csp}");
            assert!(
                csp.contains("default-src 'none'") && !csp.contains("script-src"),
                "{name}: {csp}"
            );
            let disposition = header(&h, "content-disposition");
            assert_eq!(
                disposition == "attachment",
                download,
                "{name}: {disposition:?}"
            );
        }
    }
    // The path form and errors are inert too.
    let (status, h, _) = get(&c, &format!("{}/p/nonsense/x", spool.base()), None).await;
    assert_eq!(status, 400);
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    // The setting serves them inline, still sandboxed.
    let inline = Spool::start_with(&origin, |c| c.inline_documents = true).await;
    let (_, h, body) = get(&c, &inline.url(&origin.url("page.html")), None).await;
    assert_eq!(body, page);
    assert_eq!(header(&h, "content-disposition"), "");
    assert!(header(&h, "content-security-policy").starts_with("sandbox;"));
}

/// With the control plane off, nothing of it answers anywhere, and media
/// still plays.
#[tokio::test]
async fn the_control_plane_can_be_off() {
    let origin = Origin::start().await;
    let body = data(50_000, 5);
    origin.add_file("a.mp4", body.clone(), "video/mp4");
    let spool = Spool::start_with(&origin, |c| {
        c.admin_listen = spool::config::OptionalAddr(None)
    })
    .await;
    assert!(spool.admin_addr.is_none());
    let c = client();
    assert_eq!(
        get(&c, &spool.url(&origin.url("a.mp4")), None).await.2,
        body
    );
    for path in ["/", "/api/status", "/metrics"] {
        let (status, _, _) = get(&c, &format!("{}{path}", spool.base()), None).await;
        assert_eq!(status, 404, "{path}");
    }
}

/// A file name's signed link on `spool` (file scope, no expiry).
fn signed(spool: &Spool, url: &str, scope: spool::signing::Scope) -> String {
    let key = spool::signing::Key::from_secret(SECRET.as_bytes()).unwrap();
    let url = url::Url::parse(url).unwrap();
    spool::signing::link_scoped(
        &spool.base(),
        &key,
        &url,
        spool::signing::Expiry(None),
        scope,
    )
    .unwrap()
}

const SECRET: &str = "boundary-secret-0123456789abcdef";

/// An `[[upstream]]` table giving `origin` a credential header.
fn credentials_for(origin: &Origin) -> spool::config::UpstreamTable {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-emby-token", "hunter2".parse().unwrap());
    spool::config::UpstreamTable {
        origin: url::Url::parse(&origin.url("")).unwrap().origin(),
        headers,
        redirect_hosts: vec![],
        cache_key_ignore_query: Default::default(),
        fill_while_watched: None,
    }
}

fn redirect(origin: &Origin, from: &str, to: String) {
    origin.add_file(from, data(10, 0), "video/mp4");
    origin.set_faults(
        from,
        common::origin::Faults {
            redirect_to: Some(to),
            ..Default::default()
        },
    );
}

/// Credentials never travel on a redirect: an unsigned link whose
/// allowed origin redirects to an origin with `[[upstream]]` headers is
/// refused before that origin is asked; a signed link reaches it without
/// the headers (they are the first origin's, and only while the chain
/// stays there).
#[tokio::test]
async fn credentials_do_not_travel_on_redirects() {
    let open = Origin::start().await;
    let nas = Origin::start().await;
    let body = data(40_000, 9);
    nas.add_file("private.mkv", body.clone(), "video/x-matroska");
    redirect(&open, "hop.mkv", nas.url("private.mkv"));
    let table = credentials_for(&nas);
    let spool = Spool::start_with(&open, |c| {
        c.upstream_tables = vec![table];
        c.signing.secret = Some(SECRET.into());
    })
    .await;
    let c = client();
    let (status, _, text) = get(&c, &spool.url(&open.url("hop.mkv")), None).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&text));
    assert!(String::from_utf8_lossy(&text).contains("credentials"));
    assert_eq!(
        nas.stats().requests,
        0,
        "the credentialed origin was not asked"
    );
    // The same through the path form.
    let u = url::Url::parse(&open.url("hop.mkv")).unwrap();
    let enc: String =
        url::form_urlencoded::byte_serialize(u.origin().ascii_serialization().as_bytes()).collect();
    let (status, _, _) = get(&c, &format!("{}/p/{enc}/hop.mkv", spool.base()), None).await;
    assert_eq!(status, 403);
    assert_eq!(nas.stats().requests, 0);
    // A signed link may follow it, without the headers.
    let link = signed(&spool, &open.url("hop.mkv"), spool::signing::Scope::File);
    let (status, _, got) = get(&c, &link, None).await;
    assert_eq!((status, got), (200, body));
    let log = nas.requests_log();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|r| r.headers.get("x-emby-token").is_none()),
        "{log:?}"
    );
}

/// Where unsigned links are limited to the allowlist, a redirect hop is
/// held to it too: an open redirect on a listed host leads nowhere else
/// (refused before any lookup or connection), unless that upstream's
/// `redirect_hosts` names the destination. Signed file links may follow.
#[tokio::test]
async fn unsigned_redirect_hops_obey_the_allowlist() {
    let origin = Origin::start().await;
    let body = data(30_000, 4);
    origin.add_file("real.mp4", body.clone(), "video/mp4");
    // A public host nobody listed, and the same origin under a name the
    // allowlist (an address entry) does not list as written.
    redirect(&origin, "out.mp4", "http://example.com/x.mp4".into());
    let by_name = format!("http://localhost:{}/real.mp4", origin.addr().port());
    redirect(&origin, "named.mp4", by_name);
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let c = client();
    for name in ["out.mp4", "named.mp4"] {
        let (status, _, text) = get(&c, &spool.url(&origin.url(name)), None).await;
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 403, "{name}: {text}");
        assert!(text.contains("does not name"), "{name}: {text}");
    }
    assert_eq!(origin.path_stats("real.mp4").requests, 0);
    // A signed file link follows the same-origin one.
    let link = signed(
        &spool,
        &origin.url("named.mp4"),
        spool::signing::Scope::File,
    );
    let (status, _, got) = get(&c, &link, None).await;
    assert_eq!((status, got), (200, body.clone()));
    // redirect_hosts in the origin's [[upstream]] table lets unsigned
    // links follow it to the hosts it names.
    let table = spool::config::UpstreamTable {
        origin: url::Url::parse(&origin.url("")).unwrap().origin(),
        headers: http::HeaderMap::new(),
        redirect_hosts: vec!["localhost".into()],
        cache_key_ignore_query: Default::default(),
        fill_while_watched: None,
    };
    let cdn = Spool::start_with(&origin, |c| {
        c.signing.secret = Some(SECRET.into());
        c.upstream_tables = vec![table];
    })
    .await;
    let (status, _, got) = get(&c, &cdn.url(&origin.url("named.mp4")), None).await;
    assert_eq!((status, got), (200, body));
    let (status, _, _) = get(&c, &cdn.url(&origin.url("out.mp4")), None).await;
    assert_eq!(status, 403);
}

/// A directory token's hops stay below the signed directory.
#[tokio::test]
async fn directory_token_redirects_stay_in_the_directory() {
    let origin = Origin::start().await;
    let secret = data(20_000, 1);
    let inside = data(20_000, 2);
    origin.add_file("secret.mp4", secret, "video/mp4");
    origin.add_file("show/hd/b.mp4", inside.clone(), "video/mp4");
    redirect(&origin, "show/out.mp4", origin.url("secret.mp4"));
    redirect(&origin, "show/in.mp4", origin.url("show/hd/b.mp4"));
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let c = client();
    let link = signed(
        &spool,
        &origin.url("show/in.mp4"),
        spool::signing::Scope::Dir,
    );
    let (status, _, got) = get(&c, &link, None).await;
    assert_eq!((status, got), (200, inside));
    let out = link.replace("/in.mp4", "/out.mp4");
    let (status, _, _) = get(&c, &out, None).await;
    assert_eq!(status, 403);
    assert_eq!(origin.path_stats("secret.mp4").requests, 0);
}

/// The URIs of a playlist's lines that are not tags.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// A playlist's content never widens the link it came through: a
/// file-scoped link to a playlist that names the origin's root, a
/// metadata address or a loopback address gets no token for them (the
/// spelled URI answers 403 saying why); its own segments get file tokens.
#[tokio::test]
async fn playlists_never_widen_a_grant() {
    let origin = Origin::start().await;
    let seg = data(5_000, 7);
    origin.add_file("show/seg1.ts", seg.clone(), "video/mp2t");
    origin.add_file(
        "index.html",
        b"<html>root</html>".to_vec().into(),
        "text/html",
    );
    let playlist = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg1.ts\n#EXTINF:4,\n{root}\n\
         #EXTINF:4,\nhttp://169.254.169.254/latest/meta-data/\n#EXTINF:4,\n\
         http://169.254.169.254/latest/meta-data/iam.ts\n#EXT-X-ENDLIST\n",
        root = origin.url("")
    );
    origin.add_file(
        "show/list.m3u8",
        playlist.into_bytes().into(),
        "application/vnd.apple.mpegurl",
    );
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let c = client();
    let link = signed(
        &spool,
        &origin.url("show/list.m3u8"),
        spool::signing::Scope::File,
    );
    let (status, _, body) = get(&c, &link, None).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let uris = lines(&text);
    assert_eq!(uris.len(), 4, "{text}");
    assert!(
        uris[0].starts_with("/s/") && uris[0].ends_with("/seg1.ts"),
        "{text}"
    );
    assert_eq!(&uris[1..], ["/s/-/", "/s/-/", "/s/-/iam.ts"], "{text}");
    let key = spool::signing::Key::from_secret(SECRET.as_bytes()).unwrap();
    let token = uris[0].split('/').nth(2).unwrap();
    let grant = key.open_grant(token, std::time::SystemTime::now()).unwrap();
    assert_eq!(grant.scope, spool::signing::Scope::File);
    let (status, _, got) = get(&c, &format!("{}{}", spool.base(), uris[0]), None).await;
    assert_eq!((status, got), (200, seg));
    for uri in &uris[1..] {
        let (status, _, why) = get(&c, &format!("{}{uri}index.html", spool.base()), None).await;
        assert_eq!(status, 403, "{uri}");
        assert!(String::from_utf8_lossy(&why).contains("directory scope"));
    }
    assert_eq!(origin.path_stats("index.html").requests, 0);
}

/// A client's query on a directory token's path is not forwarded when
/// the signed directory had none (an origin could answer it with a
/// redirect, or another file); with one, the signed query goes along.
#[tokio::test]
async fn a_client_query_does_not_ride_a_directory_token() {
    let origin = Origin::start().await;
    origin.add_file("show/a.ts", data(3_000, 1), "video/mp2t");
    origin.add_file("keyed/a.ts?k=1", data(3_000, 2), "video/mp2t");
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let c = client();
    let link = signed(&spool, &origin.url("show/a.ts"), spool::signing::Scope::Dir);
    let (status, _, _) = get(&c, &format!("{link}?next=/secret"), None).await;
    assert_eq!(status, 200);
    let paths: Vec<String> = origin.requests_log().into_iter().map(|r| r.path).collect();
    assert!(paths.iter().all(|p| p == "show/a.ts"), "{paths:?}");
    let keyed = signed(
        &spool,
        &origin.url("keyed/a.ts?k=1"),
        spool::signing::Scope::Dir,
    );
    origin.reset_stats();
    let (status, _, got) = get(&c, &keyed, None).await;
    assert_eq!((status, got), (200, data(3_000, 2)));
    let paths: Vec<String> = origin.requests_log().into_iter().map(|r| r.path).collect();
    assert!(paths.iter().all(|p| p == "keyed/a.ts?k=1"), "{paths:?}");
}

/// Rewriting is bounded: an answer is at most 32 times its playlist plus
/// 64 KiB. A playlist of one-character lines grows twenty-fold through
/// the path form (within the bound); through a signed link, where every
/// line would get a token of its own, it is refused with the reason
/// instead of being written out. A normal playlist still plays.
#[tokio::test]
async fn a_playlist_that_would_balloon_is_refused() {
    let origin = Origin::start().await;
    let mut text = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:1\n");
    while text.len() < 100_000 {
        text.push_str("a\n");
    }
    text.push_str("#EXT-X-ENDLIST\n");
    let len = text.len();
    // The same below a long directory name: each line's URL is longer.
    let deep = format!("{}/list.m3u8", "d".repeat(100));
    origin.add_file(
        &deep,
        text.clone().into_bytes().into(),
        "application/vnd.apple.mpegurl",
    );
    origin.add_file(
        "big/list.m3u8",
        text.into_bytes().into(),
        "application/vnd.apple.mpegurl",
    );
    origin.add_file(
        "ok/list.m3u8",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg1.ts\n#EXT-X-ENDLIST\n"
            .to_vec()
            .into(),
        "application/vnd.apple.mpegurl",
    );
    let spool = Spool::start_with(&origin, |c| c.signing.secret = Some(SECRET.into())).await;
    let c = client();
    let (status, _, body) = get(&c, &spool.url(&origin.url("big/list.m3u8")), None).await;
    assert_eq!(status, 200);
    assert!(
        body.len() > 10 * len && body.len() <= 32 * len + 64 * 1024,
        "{}",
        body.len()
    );
    let link = signed(
        &spool,
        &origin.url("big/list.m3u8"),
        spool::signing::Scope::File,
    );
    let (status, _, why) = get(&c, &spool.url(&origin.url(&deep)), None).await;
    let why = String::from_utf8_lossy(&why);
    assert_eq!(status, 502, "{}", &why[..why.len().min(300)]);
    assert!(why.contains("would be rewritten to more than"), "{why}");
    // (A signed link's errors name no reason that could show its upstream.)
    assert_eq!(get(&c, &link, None).await.0, 502);
    let link = signed(
        &spool,
        &origin.url("ok/list.m3u8"),
        spool::signing::Scope::File,
    );
    let (status, _, body) = get(&c, &link, None).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("/seg1.ts"));
}

/// A playlist origin that trickles a byte every half second cannot hold
/// a request (and the URL's fetch) for longer than `--upstream-timeout`
/// in all, although it is never silent that long; the players waiting
/// for that fetch share its failure.
#[tokio::test]
async fn a_trickling_playlist_origin_is_cut_at_the_deadline() {
    let origin = Origin::start().await;
    let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg1.ts\n#EXT-X-ENDLIST\n";
    origin.add_file(
        "slow.m3u8",
        text.as_bytes().to_vec().into(),
        "application/vnd.apple.mpegurl",
    );
    origin.set_faults(
        "slow.m3u8",
        common::origin::Faults {
            rate_bytes_per_sec: Some(2),
            piece_bytes: Some(1),
            ..Default::default()
        },
    );
    let spool = Spool::start_with(&origin, |c| {
        c.upstream_timeout = std::time::Duration::from_secs(2)
    })
    .await;
    let url = spool.url(&origin.url("slow.m3u8"));
    let asks = (0..3).map(|_| {
        let url = url.clone();
        async move { get(&client(), &url, None).await.0 }
    });
    let statuses = futures::future::join_all(asks).await;
    assert_eq!(statuses, [504, 504, 504]);
    assert_eq!(
        origin.path_stats("slow.m3u8").requests,
        1,
        "one fetch for all three"
    );
}

/// Answers being rewritten or sent share one memory budget: players that
/// do not read hold their answer's share until it is written out, so past
/// the budget a request waits briefly, then gets 503 with Retry-After;
/// once they go, playlists are answered again.
#[tokio::test]
async fn playlist_answers_share_a_memory_budget() {
    let origin = Origin::start().await;
    let mut text = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:4\n");
    let mut i = 0;
    while text.len() < 1_000_000 {
        text.push_str(&format!("#EXTINF:4,\ns{i:06}.ts\n"));
        i += 1;
    }
    text.push_str("#EXT-X-ENDLIST\n");
    origin.add_file(
        "vod/list.m3u8",
        text.into_bytes().into(),
        "application/vnd.apple.mpegurl",
    );
    let spool = Spool::start(&origin).await;
    let url = spool.url(&origin.url("vod/list.m3u8"));
    // Players that take the headers and never read the body.
    let holders = (0..10).map(|_| {
        let url = url.clone();
        async move {
            let r = client().get(&url).send().await.unwrap();
            let retry = r.headers().contains_key("retry-after");
            (r.status().as_u16(), retry, r)
        }
    });
    let held = futures::future::join_all(holders).await;
    let ok = held.iter().filter(|(s, _, _)| *s == 200).count();
    let busy = held.iter().filter(|(s, r, _)| *s == 503 && *r).count();
    assert!(
        ok >= 1 && busy >= 1 && ok + busy == 10,
        "{ok} answered, {busy} busy"
    );
    drop(held);
    common::wait_for("the budget to come back", || async {
        get(&client(), &url, None).await.0 == 200
    })
    .await;
}

/// Credentials do not travel through a signed playlist's line either: a
/// line (below the signed directory) that redirects to an origin with
/// `[[upstream]]` headers leaves the directory and is refused; a line of
/// a file-scoped playlist gets a file token and reaches it without them.
#[tokio::test]
async fn a_playlist_line_carries_no_credentials_on_a_redirect() {
    let open = Origin::start().await;
    let nas = Origin::start().await;
    let body = data(8_000, 3);
    nas.add_file("private.ts", body.clone(), "video/mp2t");
    redirect(&open, "show/seg1.ts", nas.url("private.ts"));
    open.add_file(
        "show/list.m3u8",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg1.ts\n#EXT-X-ENDLIST\n"
            .to_vec()
            .into(),
        "application/vnd.apple.mpegurl",
    );
    let table = credentials_for(&nas);
    let spool = Spool::start_with(&open, |c| {
        c.upstream_tables = vec![table];
        c.signing.secret = Some(SECRET.into());
    })
    .await;
    let c = client();
    for (scope, want) in [
        (spool::signing::Scope::Dir, 403),
        (spool::signing::Scope::File, 200),
    ] {
        let link = signed(&spool, &open.url("show/list.m3u8"), scope);
        let (status, _, text) = get(&c, &link, None).await;
        assert_eq!(status, 200);
        let text = String::from_utf8(text.to_vec()).unwrap();
        let line = lines(&text).remove(0);
        let (status, _, got) = get(&c, &format!("{}{line}", spool.base()), None).await;
        assert_eq!(status, want, "{scope:?}: {line}");
        if want == 200 {
            assert_eq!(got, body);
        }
    }
    let log = nas.requests_log();
    assert_eq!(
        log.len(),
        1,
        "only the file-scoped line reached it: {log:?}"
    );
    assert!(log[0].headers.get("x-emby-token").is_none());
}
