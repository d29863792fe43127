//! The URL forms that name an upstream file, read and written:
//!
//! - `/stream?url=<percent-encoded URL>`: the upstream URL whole.
//! - `/p/<percent-encoded upstream origin or directory>/<path>[?query]`:
//!   the path form. The first segment names an upstream directory (spool
//!   writes the origin, `http%3A%2F%2Fnas.lan%3A8096`, so that relative
//!   references climbing any number of directories still resolve); the
//!   rest is the path below it, ending in the real file name, and the
//!   query is the upstream's. The same thing as `/stream?url=` spelled
//!   differently, with the same access rules.
//! - `/s/<token>/<name>`: a signed link. A file token ignores the name; a
//!   directory token takes the path after it as a file below the signed
//!   directory.
//!
//! Playlists are rewritten to root-relative URLs (`/p/…`, `/s/…`), which
//! players resolve against the address they reached spool at.
//!
//! A playlist never widens the grant of the link it came through: a URI
//! below a signed directory reuses that directory's token; any other file
//! gets a token for that one file (never for an address literal the
//! upstream rules refuse); a directory outside the grant gets nothing
//! (`/s/-/…`, which answers 403 saying why). A client's query on a
//! directory token's path is never forwarded: the signed query goes
//! instead (a file with a query of its own gets a token of its own).

use std::sync::Arc;
use std::time::SystemTime;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use crate::signing::{self, Key, Scope};
use crate::upstream::allow::AllowList;

/// The token of a URI a link's grant does not cover: `/s/-/…` answers 403
/// with [`NOT_COVERED`].
pub(crate) const UNCOVERED_TOKEN: &str = "-";

/// Why `/s/-/…` is refused.
pub(crate) const NOT_COVERED: &str = "this link's playlist names a directory outside what the \
                                      link grants: sign the playlist with directory scope";

/// How the URLs of one answer are spelled: the form the request came in.
#[derive(Clone)]
pub(crate) enum Links {
    /// `/stream?url=` or `/p/`: the path form.
    Unsigned,
    /// A signed link: URLs below its directory (when it grants one) reuse
    /// its token; others get tokens of their own with the same expiry.
    Signed {
        key: Key,
        token: String,
        /// The URL the token grants (a file, or a directory).
        granted: Url,
        /// Whether it grants a directory.
        dir: bool,
        expires: Option<SystemTime>,
        /// Origins with credentials in the settings file: a playlist from
        /// another origin does not get tokens for them (it could otherwise
        /// make spool fetch them with their credentials).
        credentialed: Arc<Vec<url::Origin>>,
        /// The upstream rules: no token for an address they refuse.
        allow: Arc<AllowList>,
    },
}

impl Links {
    /// spool's root-relative URL for an upstream file, or for a directory
    /// when `u`'s path ends in `/`.
    pub fn spell(&self, u: &Url) -> String {
        match self {
            Links::Unsigned => path_form(u),
            Links::Signed {
                key,
                token,
                granted,
                dir,
                expires,
                credentialed,
                allow,
            } => {
                if let Some(rel) = dir.then(|| below(granted, u)).flatten() {
                    return format!("/s/{token}/{rel}");
                }
                if u.origin() != granted.origin() && credentialed.contains(&u.origin()) {
                    return u.as_str().to_owned();
                }
                // A token minted here is a signed link of its own (any
                // redirect, and credentials for its origin): never for the
                // granted origin outside a granted directory, and never for
                // a credentialed origin beyond what was granted.
                let outside_dir =
                    *dir && u.origin() == granted.origin() && !u.path().starts_with(granted.path());
                if outside_dir || (credentialed.contains(&u.origin()) && u != granted) {
                    let name = match u.path().ends_with('/') {
                        true => String::new(),
                        false => signing::file_name(u),
                    };
                    return format!("/s/{UNCOVERED_TOKEN}/{name}");
                }
                // A directory outside the grant, or an address the upstream
                // rules refuse: no token at all.
                if u.path().ends_with('/') || allow.refuses_literal(u) {
                    let name = match u.path().ends_with('/') {
                        true => String::new(),
                        false => signing::file_name(u),
                    };
                    return format!("/s/{UNCOVERED_TOKEN}/{name}");
                }
                let name = signing::file_name(u);
                format!(
                    "/s/{}/{name}",
                    key.seal_scoped(u.as_str(), *expires, Scope::File)
                )
            }
        }
    }
}

/// What the prefix of the path form encodes: all but the unreserved
/// characters of RFC 3986, so `/` and `:` never show.
const PREFIX: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// `/p/<encoded origin>/<path>[?query]`.
fn path_form(u: &Url) -> String {
    let origin = u.origin().ascii_serialization();
    let mut out = format!("/p/{}{}", utf8_percent_encode(&origin, PREFIX), u.path());
    if let Some(q) = u.query() {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The path of `u` relative to the directory `dir`, with `u`'s query when
/// it differs from the directory's, if `u` lies below `dir` and the
/// directory token can name it; None otherwise.
fn below(dir: &Url, u: &Url) -> Option<String> {
    if dir.origin() != u.origin() || dir.username() != u.username() {
        return None;
    }
    let rel = u.path().strip_prefix(dir.path())?;
    let out = rel.to_owned();
    match (dir.query(), u.query()) {
        (a, b) if a == b => {}
        // The token's query goes with every file that has none of its own;
        // a file without one below a directory with one needs its own token,
        // and so does a file with a query below a directory without one (a
        // client's query on such a token's path is not forwarded).
        // Any other query: a token of its own (a client's query on a
        // directory token's path is never forwarded).
        _ => return None,
    }
    Some(out)
}

/// The upstream URL of a `/p/` request: `tail` is the path after `/p/`
/// as sent, `query` the request's query. The reason for a 400 when it is
/// not one.
pub(crate) fn parse_path_form(tail: &str, query: Option<&str>) -> Result<Url, String> {
    const USAGE: &str = "use /p/<percent-encoded upstream origin or directory>/<path>";
    let (prefix, rest) = tail.split_once('/').unwrap_or((tail, ""));
    let prefix = percent_decode_str(prefix)
        .decode_utf8()
        .map_err(|_| format!("the upstream prefix is not UTF-8; {USAGE}"))?;
    let mut base = crate::upstream::parse_url(&prefix).map_err(|e| format!("{e}; {USAGE}"))?;
    if base.query().is_some() || base.fragment().is_some() {
        return Err(format!(
            "the upstream prefix must not have a query or fragment; {USAGE}"
        ));
    }
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    below_dir(&base, rest, query)
}

/// The upstream URL of a file below a signed directory: `rest` is the path
/// after the token as sent. The query is the signed directory's, never a
/// client's (a client-chosen query could make the origin answer for
/// another file, or redirect elsewhere).
pub(crate) fn parse_signed_dir(dir: &str, rest: &str) -> Result<Url, String> {
    let base = crate::upstream::parse_url(dir).map_err(|e| e.to_string())?;
    if rest.is_empty() {
        return Err("a directory link needs the file's path after the token".into());
    }
    // Only the signed query, whatever the client sends: a client-chosen
    // query could make the origin answer for another file.
    let query = base.query().map(str::to_owned);
    below_dir(&base, rest, query.as_deref())
}

/// `rest` below the directory `base` (whose path ends in `/`): dot
/// segments, encoded slashes and backslashes are refused, so the result
/// never leaves the directory.
fn below_dir(base: &Url, rest: &str, query: Option<&str>) -> Result<Url, String> {
    for seg in rest.split('/') {
        let lower = seg.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") || seg.contains('\\') {
            return Err("encoded slashes and backslashes are not allowed in the path".into());
        }
        let decoded = percent_decode_str(seg).decode_utf8_lossy();
        if decoded == "." || decoded == ".." {
            return Err("`.` and `..` segments are not allowed in the path".into());
        }
    }
    if rest.contains(['?', '#']) {
        return Err("bad path".into());
    }
    let mut u = base.clone();
    u.set_path(&format!("{}{rest}", base.path()));
    u.set_query(query.filter(|q| !q.is_empty()));
    u.set_fragment(None);
    // Defence in depth: whatever the URL parser made of it, it is below.
    if u.origin() != base.origin() || !u.path().starts_with(base.path()) {
        return Err("the path leaves the upstream directory".into());
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn path_form_round_trips() {
        for s in [
            "http://nas.lan:8096/Videos/show/master.m3u8",
            "https://cdn.example/a/b%20c/seg-1.ts?tok=x&y=1",
            "http://[::1]:81/x.mpd",
            "http://h/",
        ] {
            let spelled = path_form(&u(s));
            let (path, query) = spelled.split_once('?').unwrap_or((&spelled, ""));
            let tail = path.strip_prefix("/p/").unwrap();
            let q = (!query.is_empty()).then_some(query);
            assert_eq!(parse_path_form(tail, q).unwrap().as_str(), s, "{spelled}");
        }
        assert_eq!(
            path_form(&u("http://nas.lan:8096/a/b.ts")),
            "/p/http%3A%2F%2Fnas.lan%3A8096/a/b.ts"
        );
        // A prefix naming a directory also works.
        assert_eq!(
            parse_path_form("http%3A%2F%2Fh%2Fdir%2Fsub/seg.ts", None)
                .unwrap()
                .as_str(),
            "http://h/dir/sub/seg.ts"
        );
    }

    #[test]
    fn path_form_refusals() {
        for (tail, why) in [
            ("ftp%3A%2F%2Fh/x", "scheme"),
            ("nonsense/x", "use /p/"),
            ("http%3A%2F%2Fh%3Fq%3D1/x", "query"),
            ("http%3A%2F%2Fh/a/../../etc/passwd", "`..`"),
            ("http%3A%2F%2Fh/a/%2e%2E/x", "`..`"),
            ("http%3A%2F%2Fh/a%2Fb", "encoded slashes"),
            ("http%3A%2F%2Fh/a\\b", "backslashes"),
        ] {
            let e = parse_path_form(tail, None).unwrap_err();
            assert!(e.contains(why), "{tail}: {e}");
        }
    }

    #[test]
    fn signed_directory_scope() {
        let ok = parse_signed_dir("http://h/show/?k=1", "hls/seg1.ts").unwrap();
        assert_eq!(ok.as_str(), "http://h/show/hls/seg1.ts?k=1");
        let own = parse_signed_dir("http://h/show/?k=1", "a.ts").unwrap();
        assert_eq!(own.as_str(), "http://h/show/a.ts?k=1");
        // A directory signed without a query forwards none of the client's.
        let none = parse_signed_dir("http://h/show/", "a.ts").unwrap();
        assert_eq!(none.as_str(), "http://h/show/a.ts");
        for rest in [
            "",
            "../secret.mp4",
            "a/../../secret.mp4",
            "%2e%2e/secret.mp4",
            "a%2F..%2F..%2Fsecret",
            "..%5csecret",
            "//evil.example/x",
            "./a.ts",
        ] {
            let r = parse_signed_dir("http://h/show/", rest);
            // Empty segments are harmless ("//evil" stays a path on h).
            match r {
                Err(_) => {}
                Ok(url) => {
                    assert_eq!(url.host_str(), Some("h"), "{rest}");
                    assert!(url.path().starts_with("/show/"), "{rest}: {url}");
                }
            }
        }
        assert!(parse_signed_dir("http://h/show/", "../x").is_err());
    }

    #[test]
    fn signed_spelling_reuses_the_token_below_its_directory() {
        let key = Key::from_secret(b"0123456789abcdef0123456789abcdef").unwrap();
        let links = Links::Signed {
            key: key.clone(),
            token: "TOK".into(),
            granted: u("http://h/show/?k=1"),
            dir: true,
            expires: None,
            credentialed: Arc::new(vec![u("http://jellyfin.lan/").origin()]),
            allow: Arc::new(AllowList::parse("10.0.0.5").unwrap()),
        };
        assert_eq!(
            links.spell(&u("http://h/show/a/seg.ts?k=1")),
            "/s/TOK/a/seg.ts"
        );
        let other_query = links.spell(&u("http://h/show/a/seg.ts?z=2"));
        let g = key
            .open_grant(other_query.split('/').nth(2).unwrap(), SystemTime::now())
            .unwrap();
        assert_eq!(
            (g.url.as_str(), g.scope),
            ("http://h/show/a/seg.ts?z=2", Scope::File)
        );
        // Below the directory without its query, or on another origin: a
        // token of its own, for that file only. On the granted origin but
        // outside the directory: none (a minted token is a signed link of
        // its own, with any redirect and credentials).
        assert_eq!(links.spell(&u("http://h/other/seg.ts?k=1")), "/s/-/seg.ts");
        for outside in ["http://h/show/seg.ts", "http://x/show/s.ts?k=1"] {
            let s = links.spell(&u(outside));
            let token = s.split('/').nth(2).unwrap();
            let g = key.open_grant(token, SystemTime::now()).unwrap();
            assert_eq!((g.url.as_str(), g.scope), (outside, Scope::File), "{s}");
        }
        // Another origin's credentials are not handed to what a playlist
        // names: its URI stays as it is.
        assert_eq!(
            links.spell(&u("http://jellyfin.lan/Videos/1/stream.ts")),
            "http://jellyfin.lan/Videos/1/stream.ts"
        );
        // Never a directory token but the granted one: a directory outside
        // it (the origin's root too) gets none.
        for d in ["http://cdn/v/", "http://h/", "http://h/other/"] {
            assert_eq!(links.spell(&u(d)), "/s/-/", "{d}");
        }
        // Below the granted directory, a subdirectory keeps its token.
        assert_eq!(links.spell(&u("http://h/show/hd/?k=1")), "/s/TOK/hd/");
        // No token for an address the upstream rules refuse; an allowed
        // one gets its file token.
        for refused in [
            "http://169.254.169.254/latest/meta-data/x.ts",
            "http://127.0.0.1/x.ts",
            "http://[::1]:8080/x.ts",
        ] {
            assert_eq!(links.spell(&u(refused)), "/s/-/x.ts", "{refused}");
        }
        let ok = links.spell(&u("http://10.0.0.5/x.ts"));
        assert!(ok.starts_with("/s/") && !ok.starts_with("/s/-/"), "{ok}");
        // A file-scoped grant mints file tokens only.
        let file = Links::Signed {
            key: key.clone(),
            token: "TOK".into(),
            granted: u("http://h/show/master.m3u8"),
            dir: false,
            expires: None,
            credentialed: Arc::new(vec![]),
            allow: Arc::new(AllowList::default()),
        };
        assert_eq!(file.spell(&u("http://h/")), "/s/-/");
        let seg = file.spell(&u("http://h/show/seg1.ts"));
        let g = key
            .open_grant(seg.split('/').nth(2).unwrap(), SystemTime::now())
            .unwrap();
        assert_eq!(
            (g.url.as_str(), g.scope),
            ("http://h/show/seg1.ts", Scope::File)
        );
    }

    /// A playlist on an origin with credentials mints no token for
    /// anything but what was granted: each would carry the credentials.
    #[test]
    fn no_tokens_for_a_credentialed_origin_beyond_the_grant() {
        let key = Key::from_secret(b"0123456789abcdef0123456789abcdef").unwrap();
        let nas = u("http://nas.lan/Videos/1/master.m3u8");
        let links = Links::Signed {
            key,
            token: "TOK".into(),
            granted: nas.clone(),
            dir: false,
            expires: None,
            credentialed: Arc::new(vec![nas.origin()]),
            allow: Arc::new(AllowList::default()),
        };
        assert_eq!(
            links.spell(&u("http://nas.lan/System/Info.ts")),
            "/s/-/Info.ts"
        );
        assert_eq!(
            links.spell(&u("http://nas.lan/Videos/1/hd.m3u8")),
            "/s/-/hd.m3u8"
        );
        assert!(!links.spell(&nas).starts_with("/s/-/"));
    }

    #[test]
    fn a_query_below_a_directory_without_one_gets_a_file_token() {
        let key = Key::from_secret(b"0123456789abcdef0123456789abcdef").unwrap();
        let links = Links::Signed {
            key: key.clone(),
            token: "TOK".into(),
            granted: u("http://h/show/"),
            dir: true,
            expires: None,
            credentialed: Arc::new(vec![]),
            allow: Arc::new(AllowList::default()),
        };
        assert_eq!(links.spell(&u("http://h/show/a.ts")), "/s/TOK/a.ts");
        let s = links.spell(&u("http://h/show/a.ts?cdn=1"));
        let g = key
            .open_grant(s.split('/').nth(2).unwrap(), SystemTime::now())
            .unwrap();
        assert_eq!(g.url, "http://h/show/a.ts?cdn=1");
    }
}
