//! Who may use spool, over real HTTP: signed links, the unsigned-link
//! rule, admin endpoints, the refusal to be an open proxy, per-origin
//! credentials, and the `sign` and `healthcheck` commands of the binary.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use common::origin::{Faults, Origin};
use common::{client, data, get, KillOnDrop, Spool};
use spool::signing::{self, Expiry, Key};

const SECRET: &str = "a test secret that is long enough";

fn key() -> Key {
    Key::from_secret(SECRET.as_bytes()).unwrap()
}

/// A signed link to `origin_url` on `spool`.
fn link(spool: &Spool, origin_url: &str, expires: Expiry) -> String {
    let url = url::Url::parse(origin_url).unwrap();
    signing::link(&spool.base(), &key(), &url, expires).unwrap()
}

/// spool with a key: signed links required except for listed upstreams.
async fn signed_spool(origin: &Origin) -> Spool {
    Spool::start_with(origin, |c| c.signing.secret = Some(SECRET.into())).await
}

/// The origin's URL by name (`localhost`), which the test allowlist (the
/// address 127.0.0.1) lets spool reach but does not list as written.
fn by_name(origin: &Origin, path: &str) -> String {
    format!("http://localhost:{}/{path}", origin.addr().port())
}

#[tokio::test]
async fn a_signed_link_plays_and_hides_its_upstream() {
    let origin = Origin::start().await;
    let body = data(300_000, 1);
    origin.add_file("movie.mp4", body.clone(), "video/mp4");
    let spool = signed_spool(&origin).await;
    let upstream = format!("{}?api_key=hunter2", by_name(&origin, "movie.mp4"));
    let link = link(&spool, &upstream, Expiry(Some(Duration::from_secs(60))));
    // The link ends in the file name; it shows neither host nor query.
    assert!(link.ends_with("/movie.mp4"), "{link}");
    assert!(
        !link.contains("localhost") && !link.contains("hunter2"),
        "{link}"
    );
    let c = client();
    let (status, _, got) = get(&c, &link, None).await;
    assert_eq!(status, 200);
    assert_eq!(got, body);
    let (status, h, got) = get(&c, &link, Some("bytes=1000-1999")).await;
    assert_eq!(status, 206);
    assert_eq!(h["content-range"], "bytes 1000-1999/300000");
    assert_eq!(got, body.slice(1000..2000));
    // The credentials in the query reached the origin.
    assert!(origin
        .requests_log()
        .iter()
        .all(|r| r.path.contains("api_key=hunter2")));
}

#[tokio::test]
async fn bad_tokens_get_403_and_fetch_nothing() {
    let origin = Origin::start().await;
    origin.add_file("a.mp4", data(10_000, 2), "video/mp4");
    let spool = signed_spool(&origin).await;
    let good = link(&spool, &by_name(&origin, "a.mp4"), Expiry(None));
    let token = good.split('/').nth(4).unwrap().to_owned();
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let past = SystemTime::now() - Duration::from_secs(1);
    let expired = key().seal(&by_name(&origin, "a.mp4"), Some(past));
    let other_key = Key::from_secret(b"some other secret, long enough")
        .unwrap()
        .seal(&by_name(&origin, "a.mp4"), None);
    let cases = [
        (tampered.as_str(), "not valid"),
        (expired.as_str(), "expired"),
        (other_key.as_str(), "not valid"),
        ("not-a-token", "malformed"),
        ("", "not found"),
    ];
    let c = client();
    for (token, reason) in cases {
        let (status, _, body) = get(&c, &format!("{}/s/{token}/a.mp4", spool.base()), None).await;
        let text = String::from_utf8_lossy(&body);
        let want = if token.is_empty() { 404 } else { 403 };
        assert_eq!(status, want, "{token}: {text}");
        assert!(text.contains(reason), "{token}: {text}");
    }
    assert_eq!(origin.stats().requests, 0, "nothing fetched");
    // The good one works.
    assert_eq!(get(&c, &good, None).await.0, 200);
}

#[tokio::test]
async fn with_a_key_unsigned_links_need_a_listed_upstream() {
    let origin = Origin::start().await;
    let body = data(10_000, 3);
    origin.add_file("a.mp4", body.clone(), "video/mp4");
    let spool = signed_spool(&origin).await;
    let c = client();
    // Listed as written (the address 127.0.0.1 is in --allow-upstream).
    let (status, _, got) = get(&c, &spool.url(&origin.url("a.mp4")), None).await;
    assert_eq!((status, got), (200, body));
    // Not listed as written: refused before any connection.
    let before = origin.stats().requests;
    let (status, _, text) = get(&c, &spool.url(&by_name(&origin, "a.mp4")), None).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&text));
    assert!(String::from_utf8_lossy(&text).contains("signed link"));
    let (status, _, _) = get(&c, &spool.url("http://example.com/a.mp4"), None).await;
    assert_eq!(status, 403);
    assert_eq!(origin.stats().requests, before);
    // Without a key, on loopback, unsigned links work as before.
    let open = Spool::start(&origin).await;
    let (status, _, _) = get(&c, &open.url(&by_name(&origin, "a.mp4")), None).await;
    assert_eq!(status, 200);
    // And signed links are not served there.
    let (status, _, text) = get(
        &c,
        &link(&open, &by_name(&origin, "a.mp4"), Expiry(None)),
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&text).contains("not enabled"));
}

/// An open spool (loopback, no key) answers unsigned links only to the
/// names a page rebound to 127.0.0.1 (DNS rebinding) cannot send: an
/// address literal, localhost, or the name of `--public-url`. A spool
/// with a key judges unsigned links by the allowlist alone, and signed
/// links by their token, whatever the Host.
#[tokio::test]
async fn an_open_spool_answers_unsigned_links_to_its_own_names_only() {
    let origin = Origin::start().await;
    let body = data(20_000, 4);
    origin.add_file("a.mp4", body.clone(), "video/mp4");
    let open = Spool::start_with(&origin, |c| {
        c.signing.public_url = Some("http://Media.Home:8080/".into());
    })
    .await;
    let c = client();
    let port = open.addr.port();
    let with_host = |url: String, host: String| {
        let c = c.clone();
        async move {
            let r = c.get(&url).header("host", &host).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap())
        }
    };
    let unsigned = open.url(&origin.url("a.mp4"));
    let path_form = format!(
        "{}/p/{}/a.mp4",
        open.base(),
        url::form_urlencoded::byte_serialize(origin.url("").trim_end_matches('/').as_bytes())
            .collect::<String>()
    );
    let before = origin.stats().requests;
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        "media.home.evil.example:8080".to_owned(),
    ] {
        for url in [&unsigned, &path_form] {
            let (status, text) = with_host(url.clone(), host.clone()).await;
            let text = String::from_utf8_lossy(&text);
            assert_eq!(status, 421, "{host} {url}: {text}");
            assert!(text.contains("--public-url"), "{text}");
        }
    }
    assert_eq!(origin.stats().requests, before, "a refused Host fetched");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        format!("[::1]:{port}"),
        "media.home:8080".to_owned(),
        "Media.Home".to_owned(),
    ] {
        for url in [&unsigned, &path_form] {
            let (status, got) = with_host(url.clone(), host.clone()).await;
            assert_eq!((status, &got), (200, &body), "{host} {url}");
        }
    }
    // With a key: the allowlist and the token judge, not the Host.
    let keyed = signed_spool(&origin).await;
    let evil = "evil.example".to_owned();
    let (status, got) = with_host(keyed.url(&origin.url("a.mp4")), evil.clone()).await;
    assert_eq!((status, got), (200, body.clone()));
    let signed = link(&keyed, &by_name(&origin, "a.mp4"), Expiry(None));
    let (status, got) = with_host(signed, evil).await;
    assert_eq!((status, got), (200, body));
}

#[tokio::test]
async fn post_sign_makes_links_for_admins() {
    let origin = Origin::start().await;
    let body = data(5_000, 4);
    origin.add_file("b.mkv", body.clone(), "video/x-matroska");
    let spool = signed_spool(&origin).await;
    let c = client();
    let sign = |json: &'static str| {
        c.post(format!("{}/sign", spool.admin()))
            .header("content-type", "application/json")
            .body(json)
            .send()
    };
    let req = format!(
        r#"{{"url": "{}", "expires": "1h"}}"#,
        by_name(&origin, "b.mkv")
    );
    // Like the rest of the admin API, only JSON: a cross-site "simple"
    // request (text/plain, a form) cannot sign.
    for ctype in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut r = c.post(format!("{}/sign", spool.admin())).body(req.clone());
        if let Some(t) = ctype {
            r = r.header("content-type", t);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 415, "{ctype:?}");
    }
    let resp = c
        .post(format!("{}/sign", spool.admin()))
        .header("content-type", "application/json")
        .body(req.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let link = v["url"].as_str().unwrap().to_owned();
    assert!(link.starts_with(&format!("{}/s/", spool.base())) && link.ends_with("/b.mkv"));
    assert_eq!(get(&c, &link, None).await.2, body);
    for (bad, want) in [
        ("not json", 400),
        (r#"{"nourl": 1}"#, 400),
        (r#"{"url": "ftp://x/y"}"#, 400),
        (r#"{"url": "http://x/y", "expires": "soon"}"#, 400),
        (r#"{"url": "http://x/y", "expires": 5}"#, 400),
        (r#"{"url": "http://x/y", "expires": "300000000000y"}"#, 400),
    ] {
        assert_eq!(sign(bad).await.unwrap().status(), want, "{bad}");
    }
    // A body past 64 KiB is refused as too large, with a length given or
    // sent chunked (no length at all).
    let big = format!(
        r#"{{"url": "http://x/y", "pad": "{}"}}"#,
        "a".repeat(70_000)
    );
    let sign_chunked = |body: String| {
        let chunked = futures::stream::iter([Ok::<_, std::io::Error>(body)]);
        c.post(format!("{}/sign", spool.admin()))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunked))
            .send()
    };
    let resp = c
        .post(format!("{}/sign", spool.admin()))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(sign_chunked(big).await.unwrap().status(), 413);
    let resp = sign_chunked(req).await.unwrap();
    assert_eq!(resp.status(), 200, "a chunked body within the limit");
}

/// A local address that is not loopback, to be a client spool does not
/// trust.
fn lan_address() -> IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("8.8.8.8:53")
        .expect("a route off this machine, for a non-loopback address");
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback());
    ip
}

/// spool listening on every interface, reached on a non-loopback address.
async fn start_on_all(
    cfg: spool::Config,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    start_on_all_with_admin(cfg)
        .await
        .map(|(addr, _, task)| (addr, task))
}

/// [`start_on_all`], the control plane on every address too; returns the
/// media and control plane addresses as a LAN client reaches them.
async fn start_on_all_with_admin(
    cfg: spool::Config,
) -> anyhow::Result<(
    SocketAddr,
    SocketAddr,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let admin = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let port = listener.local_addr()?.port();
    let admin_addr = SocketAddr::new(lan_address(), admin.local_addr()?.port());
    let server = spool::Server::new(cfg).await?;
    let listeners = spool::Listeners {
        media: listener,
        admin: Some(admin),
    };
    let task = tokio::spawn(server.serve_on(listeners, std::future::pending()));
    let addr = SocketAddr::new(lan_address(), port);
    let c = client();
    for _ in 0..200 {
        if task.is_finished() {
            return Err(task
                .await?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("stopped")));
        }
        if c.get(format!("http://{addr}/health/live"))
            .send()
            .await
            .is_ok()
        {
            return Ok((addr, admin_addr, task));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("spool did not answer on {addr}")
}

#[tokio::test]
async fn beyond_loopback_it_is_no_open_proxy() {
    let origin = Origin::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // Neither key nor allowlist: refused, with how to fix it.
    let mut cfg = common::test_config(tmp.path(), &origin);
    cfg.allow_upstream = Default::default();
    let e = start_on_all(cfg).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("open proxy") && msg.contains("SPOOL_SECRET"),
        "{msg}"
    );
    // With an allowlist it serves, but unsigned links only for it.
    origin.add_file("c.mp4", data(1000, 5), "video/mp4");
    let cfg = common::test_config(tmp.path(), &origin);
    let (addr, task) = start_on_all(cfg).await.unwrap();
    let c = client();
    let stream = |u: &str| {
        let enc: String = url::form_urlencoded::byte_serialize(u.as_bytes()).collect();
        format!("http://{addr}/stream?url={enc}")
    };
    assert_eq!(get(&c, &stream(&origin.url("c.mp4")), None).await.0, 200);
    assert_eq!(
        get(&c, &stream(&by_name(&origin, "c.mp4")), None).await.0,
        403
    );
    assert_eq!(
        get(&c, &stream("http://example.com/x.mp4"), None).await.0,
        403
    );
    task.abort();
    let _ = task.await;
}

#[tokio::test]
async fn admin_endpoints_need_loopback_or_the_token() {
    let origin = Origin::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(tmp.path(), &origin);
    cfg.admin_token = Some("let-me-in-please-now".into());
    let (media, addr, task) = start_on_all_with_admin(cfg).await.unwrap();
    let c = client();
    let at = |p: &str| format!("http://{addr}{p}");
    // The media listener has none of it.
    for path in ["/metrics", "/sign", "/api/status", "/"] {
        let r = c
            .get(format!("http://{media}{path}"))
            .header("authorization", "Bearer let-me-in-please-now")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // A client on the LAN: live, and ready without details.
    assert_eq!(get(&c, &at("/health/live"), None).await.0, 200);
    let (status, _, body) = get(&c, &at("/health/ready"), None).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, serde_json::json!({"ready": true}));
    let (status, h, _) = get(&c, &at("/metrics"), None).await;
    assert_eq!(status, 401);
    assert!(h.contains_key("www-authenticate"));
    for wrong in [
        "Bearer let-me-i",
        "Bearer let-me-inn",
        "let-me-in",
        "Bearer ",
    ] {
        let r = c
            .get(at("/metrics"))
            .header("authorization", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{wrong}");
    }
    let r = c
        .post(at("/sign"))
        .header("content-type", "application/json")
        .body(r#"{"url":"http://x/y"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // With the token: everything.
    let auth =
        |r: reqwest::RequestBuilder| r.header("authorization", "Bearer let-me-in-please-now");
    let r = auth(c.get(at("/metrics"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The scheme's name is case-insensitive (RFC 9110 §11.1).
    let r = c
        .get(at("/metrics"))
        .header("authorization", "bearer let-me-in-please-now")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("spool_"));
    let r = auth(c.get(at("/health/ready"))).send().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(v.get("disk").is_some(), "{v}");
    // No key on this server: POST /sign says so, after the admin check.
    let r = auth(c.post(at("/sign")))
        .header("content-type", "application/json")
        .body(r#"{"url":"http://x/y"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // Listening beyond loopback, loopback clients are not trusted either:
    // behind a port forwarder or a local proxy everyone arrives from there.
    let local = format!("http://127.0.0.1:{}/metrics", addr.port());
    assert_eq!(get(&c, &local, None).await.0, 401);
    task.abort();
    let _ = task.await;
    // An empty token is no token; a short one is refused at start.
    let mut cfg = common::test_config(tmp.path(), &origin);
    cfg.admin_token = Some(" ".into());
    let (_, addr, task) = start_on_all_with_admin(cfg).await.unwrap();
    let r = c
        .get(format!("http://{addr}/metrics"))
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    task.abort();
    let _ = task.await;
    let mut cfg = common::test_config(tmp.path(), &origin);
    cfg.admin_token = Some("short".into());
    let e = start_on_all(cfg).await.unwrap_err();
    assert!(format!("{e:#}").contains("too short"), "{e:#}");
}

#[tokio::test]
async fn origin_credentials_go_to_their_origin_only() {
    let origin = Origin::start().await;
    let other = Origin::start().await;
    let body = data(20_000, 6);
    origin.add_file("nas.mkv", body.clone(), "video/x-matroska");
    other.add_file("moved.mkv", body.clone(), "video/x-matroska");
    origin.add_file("redirect.mkv", body.clone(), "video/x-matroska");
    origin.set_faults(
        "redirect.mkv",
        Faults {
            redirect_to: Some(other.url("moved.mkv")),
            ..Faults::default()
        },
    );
    let mut headers = http::HeaderMap::new();
    headers.insert("x-emby-token", "hunter2".parse().unwrap());
    let creds = spool::config::UpstreamTable {
        origin: url::Url::parse(&origin.url("")).unwrap().origin(),
        headers,
        redirect_hosts: vec![],
        cache_key_ignore_query: Default::default(),
        fill_while_watched: None,
    };
    let spool = Spool::start_with(&origin, |c| {
        c.upstream_tables = vec![creds];
        c.signing.secret = Some(SECRET.into());
    })
    .await;
    let c = client();
    // Only signed links may use an origin with credentials, although the
    // origin is in the allowlist.
    let (status, _, _) = get(&c, &spool.url(&origin.url("nas.mkv")), None).await;
    assert_eq!(status, 403);
    assert_eq!(origin.stats().requests, 0);
    let (status, h, got) = get(
        &c,
        &link(&spool, &origin.url("nas.mkv"), Expiry(None)),
        None,
    )
    .await;
    assert_eq!((status, &got), (200, &body));
    assert!(
        !h.contains_key("x-emby-token"),
        "never passed back to players"
    );
    let log = origin.requests_log();
    assert!(!log.is_empty());
    assert!(log.iter().all(|r| r
        .headers
        .get("x-emby-token")
        .is_some_and(|v| v == "hunter2")));
    // A redirect to another origin (another port): the header stays home.
    let (status, _, got) = get(
        &c,
        &link(&spool, &origin.url("redirect.mkv"), Expiry(None)),
        None,
    )
    .await;
    assert_eq!((status, got), (200, body));
    let log = other.requests_log();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|r| r.headers.get("x-emby-token").is_none()),
        "{log:?}"
    );
}

fn spool_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
}

// Multi-threaded: the commands run as blocking child processes while
// the server in this process answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_and_healthcheck_commands() {
    let origin = Origin::start().await;
    let body = data(50_000, 7);
    origin.add_file("show.webm", body.clone(), "video/webm");
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("cache/secret.key");
    let spool =
        Spool::start_with(&origin, |c| c.signing.secret_file = Some(key_file.clone())).await;
    // The server made the key file; `spool sign` with the same file signs
    // links it accepts.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let out = spool_bin()
        .args(["sign", &by_name(&origin, "show.webm"), "--expires", "2h"])
        .args(["--admin-listen", &closed_addr.to_string()])
        .env("SPOOL_SECRET_FILE", &key_file)
        .env("SPOOL_PUBLIC_URL", spool.base())
        .env_remove("SPOOL_SECRET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("signed with the key configured here"), "{err}");
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(link.ends_with("/show.webm"), "{link}");
    assert_eq!(get(&client(), &link, None).await.2, body);
    // With the server answering, the server signs: its key, its public
    // URL, whatever this shell knows.
    let out = spool_bin()
        .args(["sign", &by_name(&origin, "show.webm"), "--expires", "never"])
        .args(["--admin-listen", &spool.admin_addr.unwrap().to_string()])
        .env_remove("SPOOL_SECRET")
        .env_remove("SPOOL_SECRET_FILE")
        .env_remove("SPOOL_PUBLIC_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        link.starts_with(&format!("{}/s/", spool.base())) && link.ends_with("/show.webm"),
        "{link}"
    );
    assert_eq!(get(&client(), &link, None).await.2, body);
    // Neither a server nor a key: it says how to get one.
    let out = spool_bin()
        .args(["sign", "http://example.com/a.mp4"])
        .args(["--admin-listen", &closed_addr.to_string()])
        .env_remove("SPOOL_SECRET")
        .env_remove("SPOOL_SECRET_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SPOOL_SECRET"));
    // healthcheck: 0 against a live spool, 1 against nothing; the control
    // plane first, the media listener when it does not answer.
    let check = |listen: String, admin: String| {
        spool_bin()
            .args(["healthcheck", "--listen", &listen, "--admin-listen", &admin])
            .status()
            .unwrap()
            .code()
    };
    let (live, admin, closed) = (
        spool.addr.to_string(),
        spool.admin_addr.unwrap().to_string(),
        closed_addr.to_string(),
    );
    assert_eq!(check(live.clone(), String::new()), Some(0));
    assert_eq!(check(closed.clone(), admin), Some(0));
    assert_eq!(check(live, closed.clone()), Some(0));
    assert_eq!(check(closed.clone(), closed.clone()), Some(1));
    assert_eq!(check(closed, String::new()), Some(1));
}

/// A flood that fills the media listener's connection limit does not
/// make a live spool look dead: `spool healthcheck` asks the control
/// plane, which has limits of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_is_answered_while_the_media_listener_is_full() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| {
        c.max_connections = 8;
        // The idle connections must outlast the test.
        c.header_timeout = Duration::from_secs(120);
    })
    .await;
    // Eight idle connections fill the media listener; a ninth is closed.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(spool.addr).await.unwrap());
    }
    // All eight taken: the gauge counts them and the metrics request.
    common::wait_for_metric(&spool, "spool_open_connections", 9.0).await;
    let probe = client()
        .get(format!("{}/health/live", spool.base()))
        .send()
        .await;
    assert!(probe.is_err(), "the media listener is full: {probe:?}");
    let status = tokio::task::spawn_blocking({
        let (listen, admin) = (
            spool.addr.to_string(),
            spool.admin_addr.unwrap().to_string(),
        );
        move || {
            spool_bin()
                .args(["healthcheck", "--listen", &listen, "--admin-listen", &admin])
                .status()
                .unwrap()
                .code()
        }
    })
    .await
    .unwrap();
    assert_eq!(status, Some(0));
    drop(idle);
}

#[tokio::test]
async fn the_binary_refuses_to_be_an_open_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let out = spool_bin()
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--cache-dir")
        .arg(tmp.path())
        .env_remove("SPOOL_SECRET")
        .env_remove("SPOOL_SECRET_FILE")
        .env_remove("SPOOL_ALLOW_UPSTREAM")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("open proxy") && err.contains("SPOOL_ALLOW_UPSTREAM"),
        "{err}"
    );
}

/// Credentials never reach the log: neither an origin's headers from the
/// settings file nor a query, even at debug level and when the origin
/// fails. The real binary, its real log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_stay_out_of_the_log() {
    let origin = Origin::start().await;
    origin.add_file("ok.mp4", data(200_000, 8), "video/mp4");
    origin.add_file("broken.mp4", data(1000, 9), "video/mp4");
    origin.set_faults(
        "broken.mp4",
        Faults {
            status: Some(500),
            ..Faults::default()
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let settings = tmp.path().join("spool.toml");
    std::fs::write(
        &settings,
        format!(
            "chunk_size = \"64KiB\"\nallow_upstream = [\"{ip}\"]\n\n[[upstream]]\norigin = \"{o}\"\nheaders = {{ \"X-Emby-Token\" = \"header-secret-1\" }}\n",
            ip = origin.addr().ip(),
            o = origin.url(""),
        ),
    )
    .unwrap();
    let log = common::ChildLog::new();
    let mut child = spool_bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&settings)
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .env("SPOOL_LOG", "debug")
        .env("SPOOL_SECRET", SECRET)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log.stdio())
        .spawn()
        .unwrap();
    let addr = log.listen_addr(&mut child).await;
    let mut child = KillOnDrop(child);
    let c = client();
    let stream = |path: &str| {
        let u = format!("{}?api_key=query-secret-2", origin.url(path));
        let u = url::Url::parse(&u).unwrap();
        signing::link(&format!("http://{addr}"), &key(), &u, Expiry(None)).unwrap()
    };
    assert_eq!(get(&c, &stream("ok.mp4"), None).await.0, 200);
    let (status, _, text) = get(&c, &stream("broken.mp4"), None).await;
    assert_eq!(status, 502);
    assert!(!String::from_utf8_lossy(&text).contains("query-secret-2"));
    // The header did reach the origin, and the requests were logged.
    assert!(origin.requests_log().iter().all(|r| r
        .headers
        .get("x-emby-token")
        .is_some_and(|v| v == "header-secret-1")));
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let text = log.text();
    assert!(
        text.contains("ok.mp4?REDACTED"),
        "URLs are logged, queries redacted: {text}"
    );
    assert!(!text.contains("header-secret-1"), "{text}");
    assert!(!text.contains("query-secret-2"), "{text}");
}

/// Pages on another origin can read media: CORS headers on every media
/// answer, and the preflight answered 204.
#[tokio::test]
async fn cross_origin_pages_can_read_media() {
    let origin = Origin::start().await;
    let body = data(10_000, 10);
    origin.add_file("v.webm", body.clone(), "video/webm");
    // With a key: unsigned links are limited to the allowlist, so they
    // carry CORS headers too.
    let spool = signed_spool(&origin).await;
    let c = client();
    let media = spool.url(&origin.url("v.webm"));
    let r = c
        .request(reqwest::Method::OPTIONS, &media)
        .header("origin", "http://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "range")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("GET"));
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Range"));
    assert_eq!(origin.stats().requests, 0, "a preflight fetches nothing");
    let r = c
        .get(&media)
        .header("origin", "http://app.example")
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in ["Content-Range", "Content-Length", "Accept-Ranges", "ETag"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    assert_eq!(r.bytes().await.unwrap(), body.slice(0..100));
    // Errors too, so a page can read why.
    let (status, h, _) = get(&c, &spool.url("ftp://nope/x"), None).await;
    assert_eq!(status, 400);
    assert_eq!(h["access-control-allow-origin"], "*");
    let (_, h, _) = get(&c, &link(&spool, &origin.url("v.webm"), Expiry(None)), None).await;
    assert_eq!(h["access-control-allow-origin"], "*");
    // An open spool (loopback, no key): no CORS on unsigned links, or any
    // web page could read through it whatever it reaches.
    let open = Spool::start(&origin).await;
    let (status, h, _) = get(&c, &open.url(&origin.url("v.webm")), None).await;
    assert_eq!(status, 200);
    assert!(!h.contains_key("access-control-allow-origin"));
    // One origin, or none.
    let one = Spool::start_with(&origin, |c| {
        c.cors_origin = "https://app.lan".into();
        c.signing.secret = Some(SECRET.into());
    })
    .await;
    let (_, h, _) = get(&c, &one.url(&origin.url("v.webm")), None).await;
    assert_eq!(h["access-control-allow-origin"], "https://app.lan");
    assert_eq!(h["vary"], "Origin");
    let none = Spool::start_with(&origin, |c| {
        c.cors_origin = String::new();
        c.signing.secret = Some(SECRET.into());
    })
    .await;
    let (_, h, _) = get(&c, &none.url(&origin.url("v.webm")), None).await;
    assert!(!h.contains_key("access-control-allow-origin"));
}

/// A signed link's error answers name nothing of its upstream.
#[tokio::test]
async fn signed_link_errors_do_not_reveal_the_upstream() {
    let origin = Origin::start().await;
    origin.add_file("gone.mp4", data(100, 11), "video/mp4");
    origin.set_faults(
        "gone.mp4",
        Faults {
            status: Some(500),
            ..Faults::default()
        },
    );
    let spool = signed_spool(&origin).await;
    let c = client();
    let refused = link(
        &spool,
        "http://10.255.255.1:8096/secret-dir/x.mp4",
        Expiry(None),
    );
    let failing = link(&spool, &by_name(&origin, "gone.mp4"), Expiry(None));
    for (l, want) in [(refused, 403), (failing, 502)] {
        let (status, _, body) = get(&c, &l, None).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, want, "{text}");
        for secret in ["10.255", "secret-dir", "localhost", "127.0.0.1", "8096"] {
            assert!(!text.contains(secret), "{secret} in {text:?}");
        }
    }
    // The same failures through unsigned links keep their details.
    let open = Spool::start(&origin).await;
    let (status, _, body) = get(&c, &open.url("http://10.255.255.1:8096/x.mp4"), None).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("10.255.255.1"));
}

/// Through a trusted proxy on this host every client arrives from
/// loopback: such requests are never admins by loopback, whatever the
/// forwarding headers say; the admin token still works.
#[tokio::test]
async fn a_trusted_proxy_on_loopback_makes_nobody_an_admin() {
    let origin = Origin::start().await;
    let spool = Spool::start_with(&origin, |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.admin_token = Some("a-token-of-sixteen-bytes".into());
    })
    .await;
    let c = client();
    let status = |h: Option<(&'static str, &'static str)>| {
        let mut r = c.get(format!("{}/api/status", spool.admin()));
        if let Some((k, v)) = h {
            r = r.header(k, v);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    // Without a forwarding header (an ssh tunnel to loopback), loopback.
    assert_eq!(status(None).await, 200);
    assert_eq!(status(Some(("x-forwarded-for", "127.0.0.1"))).await, 401);
    assert_eq!(status(Some(("forwarded", "for=127.0.0.1"))).await, 401);
    assert_eq!(
        status(Some(("authorization", "Bearer a-token-of-sixteen-bytes"))).await,
        200
    );
    // Without --trusted-proxies, the same loopback client is an admin.
    let direct = Spool::start_with(&origin, |c| {
        c.admin_token = Some("a-token-of-sixteen-bytes".into());
    })
    .await;
    let r = c
        .get(format!("{}/api/status", direct.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Behind trusted proxies, the client is read from the one forwarding
/// header they write (`--forwarded-header`); the other is the client's
/// own word, passed on by the proxy as written, and names nobody.
#[tokio::test]
async fn only_the_proxies_forwarding_header_names_the_client() {
    let origin = Origin::start().await;
    origin.add_file("big", data(16 << 20, 77), "video/mp4");
    for header in [
        spool::config::ForwardedHeader::XForwardedFor,
        spool::config::ForwardedHeader::Forwarded,
    ] {
        let spool = Spool::start_with(&origin, |c| {
            c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            c.forwarded_header = header;
            c.max_connections_per_client = 1;
        })
        .await;
        let c = client();
        let url = spool.url(&origin.url("big"));
        let (read, other) = match header {
            spool::config::ForwardedHeader::XForwardedFor => ("x-forwarded-for", "forwarded"),
            spool::config::ForwardedHeader::Forwarded => ("forwarded", "x-forwarded-for"),
        };
        let naming = |name: &str, ip: &str| match name {
            "forwarded" => format!("for={ip}"),
            _ => ip.to_owned(),
        };
        // 203.0.113.5 holds its one place with a stream it reads slowly.
        let mut held = c
            .get(&url)
            .header(read, naming(read, "203.0.113.5"))
            .send()
            .await
            .unwrap();
        assert_eq!(held.status(), 200);
        assert!(!held.chunk().await.unwrap().unwrap().is_empty());
        let status = |headers: Vec<(&'static str, String)>| {
            let mut r = c.get(&url).header("range", "bytes=0-9");
            for (k, v) in headers {
                r = r.header(k, v);
            }
            async move { r.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(
            status(vec![(read, naming(read, "203.0.113.5"))]).await,
            429,
            "{read}: the same client"
        );
        // The other header alone: the proxy's own request, not
        // 203.0.113.5's.
        assert_eq!(
            status(vec![(other, naming(other, "203.0.113.5"))]).await,
            206,
            "{other} is not read"
        );
        // Both: the one read decides, whatever the other says.
        assert_eq!(
            status(vec![
                (other, naming(other, "198.51.100.1")),
                (read, naming(read, "203.0.113.5")),
            ])
            .await,
            429,
            "{read} decides"
        );
        assert_eq!(
            status(vec![
                (other, naming(other, "203.0.113.5")),
                (read, naming(read, "198.51.100.1")),
            ])
            .await,
            206,
            "{read} decides"
        );
        drop(held);
    }
}
