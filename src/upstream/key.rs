//! Cache keys for URLs whose query changes on every link: presigned S3,
//! R2 and GCS URLs (`X-Amz-Signature`, `Expires`), CDN tokens, debrid
//! links. The query parameters a setting names are not part of a media's
//! identity: two URLs that differ only there are one media, cached once.
//! The URLs that reached a media are kept, the most recent first: spool
//! asks the origin with the newest, and with an older one when the origin
//! refuses it (`resume.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use url::Url;

/// Query parameter names (ASCII case ignored, `*` matches any run of
/// characters) that are not part of a media's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryFilter {
    patterns: Vec<String>,
}

impl QueryFilter {
    /// From a setting's entries; an entry that cannot name a parameter is
    /// refused with the reason.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<QueryFilter, String> {
        let mut patterns = Vec::new();
        for e in entries {
            let p = e.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            if p.chars()
                .any(|c| c.is_control() || c == '&' || c == '=' || c == '#')
            {
                return Err(format!(
                    "{p:?} is not a query parameter name (or a * pattern)"
                ));
            }
            patterns.push(p.to_ascii_lowercase());
        }
        Ok(QueryFilter { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// A setting's value: names or patterns separated by commas.
    pub fn parse_list(s: &str) -> Result<QueryFilter, String> {
        QueryFilter::parse(&s.split(',').collect::<Vec<_>>())
    }

    /// Both filters' names.
    pub fn and(&self, other: &QueryFilter) -> QueryFilter {
        let mut patterns = self.patterns.clone();
        patterns.extend(other.patterns.iter().cloned());
        QueryFilter { patterns }
    }

    /// Whether the parameter `name` (decoded) is left out of keys.
    pub fn ignores(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.patterns
            .iter()
            .any(|p| glob(p.as_bytes(), name.as_bytes()))
    }

    /// The key of `url`: the URL without the parameters this filter
    /// ignores, the others as they were written and in their order. `None`
    /// when it ignores none of them (the URL is its own key).
    pub fn key(&self, url: &Url) -> Option<Url> {
        if self.is_empty() {
            return None;
        }
        let query = url.query()?;
        let mut kept = Vec::new();
        let mut dropped = false;
        for part in query.split('&') {
            let name = part.split('=').next().unwrap_or("");
            let name = percent_encoding::percent_decode_str(&name.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            if !part.is_empty() && self.ignores(&name) {
                dropped = true;
            } else {
                kept.push(part);
            }
        }
        if !dropped {
            return None;
        }
        let mut key = url.clone();
        let kept = kept.join("&");
        key.set_query((!kept.is_empty()).then_some(kept.as_str()));
        Some(key)
    }
}

/// `*` matches any run of bytes; everything else itself.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name byte it was tried against.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `url` as the index may keep it: its query parameters' names without
/// their values (a signature or a token is a credential), no password.
pub(crate) fn shown_names(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    if u.query().is_some() {
        let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        u.set_query(None);
        let mut q = u.query_pairs_mut();
        for name in &names {
            q.append_key_only(name);
        }
    }
    u.to_string()
}

/// How many URLs of a media are remembered.
const KEEP_URLS: usize = 4;

/// The URLs that reached one media, the most recent first. Cheap to clone;
/// clones share the list.
#[derive(Debug, Clone)]
pub(crate) struct UrlSet(Arc<Mutex<VecDeque<Arc<Url>>>>);

impl UrlSet {
    pub fn new(url: Arc<Url>) -> UrlSet {
        UrlSet(Arc::new(Mutex::new(VecDeque::from([url]))))
    }

    /// `url` reached the media: it is the one asked with from now on.
    /// True when it was not the one already.
    pub fn reached(&self, url: &Url) -> bool {
        let mut urls = self.0.lock().unwrap();
        if urls.front().is_some_and(|u| **u == *url) {
            return false;
        }
        urls.retain(|u| **u != *url);
        urls.push_front(Arc::new(url.clone()));
        urls.truncate(KEEP_URLS);
        true
    }

    /// The URL to ask the origin with.
    pub fn latest(&self) -> Arc<Url> {
        self.0
            .lock()
            .unwrap()
            .front()
            .cloned()
            .expect("never empty")
    }

    /// Every URL kept, the most recent first.
    pub fn all(&self) -> Vec<Arc<Url>> {
        self.0.lock().unwrap().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn shown_names_keep_no_value_and_no_password() {
        let shown = shown_names(&u(
            "https://user:secret@b.s3.example/film.mkv?X-Amz-Signature=abc&versionId=3",
        ));
        assert_eq!(
            shown,
            "https://user@b.s3.example/film.mkv?X-Amz-Signature&versionId"
        );
        assert_eq!(shown_names(&u("http://h/a")), "http://h/a");
    }

    #[test]
    fn ignored_parameters_leave_the_key() {
        let f = QueryFilter::parse(&["X-Amz-*", "Expires", "token"]).unwrap();
        let a = u("https://b.s3.example/film.mkv?X-Amz-Algorithm=AWS4&X-Amz-Signature=abc&versionId=3&Expires=99");
        let b = u("https://b.s3.example/film.mkv?versionId=3&x-amz-signature=def&X-Amz-Algorithm=AWS4&expires=100");
        assert_eq!(
            f.key(&a).unwrap().as_str(),
            "https://b.s3.example/film.mkv?versionId=3"
        );
        assert_eq!(f.key(&a), f.key(&b));
        // Nothing ignored: the URL is its own key.
        assert_eq!(f.key(&u("https://cdn.example/a.mp4?v=2")), None);
        assert_eq!(f.key(&u("https://cdn.example/a.mp4")), None);
        // All ignored: no query at all.
        assert_eq!(
            f.key(&u("https://cdn.example/a.mp4?token=x"))
                .unwrap()
                .as_str(),
            "https://cdn.example/a.mp4"
        );
        // Other parameters stay as written, in their order.
        assert_eq!(
            f.key(&u("http://h/a?b=%20x&token=1&a=y+z"))
                .unwrap()
                .as_str(),
            "http://h/a?b=%20x&a=y+z"
        );
        // An encoded name is matched decoded.
        assert!(f.key(&u("http://h/a?%74oken=1")).is_some());
        assert!(QueryFilter::parse(&["a=b"]).is_err());
        assert!(QueryFilter::parse(&[""]).unwrap().is_empty());
    }

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("x-amz-*", "x-amz-signature", true),
            ("x-amz-*", "x-amz-", true),
            ("x-amz-*", "x-goog-date", false),
            ("*", "anything", true),
            ("*sig*", "x-amz-signature", true),
            ("t*n", "token", true),
            ("t*n", "tokens", false),
            ("a*b*c", "aXbYbc", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob(p.as_bytes(), n.as_bytes()), want, "{p} {n}");
        }
    }

    #[test]
    fn the_newest_url_comes_first() {
        let set = UrlSet::new(Arc::new(u("http://h/a?token=1")));
        set.reached(&u("http://h/a?token=2"));
        assert_eq!(set.latest().as_str(), "http://h/a?token=2");
        set.reached(&u("http://h/a?token=1"));
        assert_eq!(set.latest().as_str(), "http://h/a?token=1");
        for i in 3..10 {
            set.reached(&u(&format!("http://h/a?token={i}")));
        }
        let all = set.all();
        assert_eq!(all.len(), KEEP_URLS);
        assert_eq!(all[0].as_str(), "http://h/a?token=9");
    }
}
