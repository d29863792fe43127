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

/// The URLs of one media (a media known by its cache key is reached by
/// URLs that differ in the parameters the key ignores). First the newest
/// one a player brought that the origin has not answered yet, if any (a
/// fresh presigned URL is asked with at once); then those it answered,
/// the one answered last first. One it refuses without having answered
/// it is dropped, and no such URL ever pushes an answered one out: a
/// made-up signature costs one refused request, not the media's good
/// URLs. Cheap to clone; clones share the list.
#[derive(Debug, Clone)]
pub(crate) struct UrlSet(Arc<Mutex<Urls>>);

#[derive(Debug)]
struct Urls {
    answered: VecDeque<Arc<Url>>,
    offered: Option<Arc<Url>>,
}

impl UrlSet {
    /// A set of one URL the origin has not answered yet (the media's key:
    /// its probe or its first transfer answers the URL it asked with).
    pub fn unanswered(url: Arc<Url>) -> UrlSet {
        UrlSet(Arc::new(Mutex::new(Urls {
            answered: VecDeque::new(),
            offered: Some(url),
        })))
    }

    /// A player asked for the media with `url`. True when it is new (not
    /// one the origin answered, nor the one offered last).
    pub fn offer(&self, url: &Url) -> bool {
        let mut u = self.0.lock().unwrap();
        if u.answered.iter().any(|a| **a == *url) || u.offered.as_deref() == Some(url) {
            return false;
        }
        u.offered = Some(Arc::new(url.clone()));
        true
    }

    /// The origin answered `url` (did not refuse it).
    pub fn answered(&self, url: &Arc<Url>) {
        let mut u = self.0.lock().unwrap();
        if u.offered.as_ref() == Some(url) {
            u.offered = None;
        }
        if u.answered.front() != Some(url) {
            u.answered.retain(|a| a != url);
            u.answered.push_front(url.clone());
            u.answered.truncate(KEEP_URLS);
        }
    }

    /// Whether the origin accepted `url` before.
    pub fn is_accepted(&self, url: &Url) -> bool {
        self.0.lock().unwrap().answered.iter().any(|a| **a == *url)
    }

    /// The origin refused `url`: one it never answered is not asked with
    /// again (unless it is the only one).
    pub fn refused(&self, url: &Arc<Url>) {
        let mut u = self.0.lock().unwrap();
        if u.offered.as_ref() == Some(url) && !u.answered.is_empty() {
            u.offered = None;
        }
    }

    /// The URL the origin accepted last, else the one there is: what a
    /// check of the media's version asks with (a made-up URL must not
    /// have the origin's 404 drop the media).
    pub fn accepted(&self) -> Arc<Url> {
        let u = self.0.lock().unwrap();
        u.answered
            .front()
            .or(u.offered.as_ref())
            .cloned()
            .expect("a media's URLs are never none")
    }

    /// The URL to ask the origin with.
    pub fn latest(&self) -> Arc<Url> {
        let u = self.0.lock().unwrap();
        u.offered
            .as_ref()
            .or(u.answered.front())
            .cloned()
            .expect("a media's URLs are never none")
    }

    /// Every URL kept, in the order they are asked with.
    pub fn all(&self) -> Vec<Arc<Url>> {
        let u = self.0.lock().unwrap();
        let all: Vec<Arc<Url>> = u.offered.iter().chain(&u.answered).cloned().collect();
        assert!(!all.is_empty(), "a media's URLs are never none");
        all
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
    fn a_new_url_first_and_made_up_ones_push_nothing_out() {
        let names = |s: &UrlSet| s.all().iter().map(|u| u.to_string()).collect::<Vec<_>>();
        let set = UrlSet::unanswered(Arc::new(u("http://h/a?token=1")));
        set.answered(&set.latest());
        // A new one first; one answered before or offered already is not new.
        assert!(set.offer(&u("http://h/a?token=2")));
        assert!(!set.offer(&u("http://h/a?token=2")));
        assert!(!set.offer(&u("http://h/a?token=1")));
        assert_eq!(names(&set), ["http://h/a?token=2", "http://h/a?token=1"]);
        let two = set.latest();
        set.answered(&two);
        assert_eq!(names(&set), ["http://h/a?token=2", "http://h/a?token=1"]);
        // An old link again: the one answered last stays first.
        assert!(!set.offer(&u("http://h/a?token=1")));
        assert_eq!(set.latest().as_str(), "http://h/a?token=2");
        // Made-up ones: each refused once, then gone; the good ones stay.
        for i in 0..10 {
            assert!(set.offer(&u(&format!("http://h/a?token=junk{i}"))));
            let junk = set.latest();
            set.refused(&junk);
        }
        assert_eq!(names(&set), ["http://h/a?token=2", "http://h/a?token=1"]);
        // An answered one refused stays (an origin's passing refusal).
        set.refused(&two);
        assert_eq!(set.all().len(), 2);
        for i in 3..10 {
            let t = Arc::new(u(&format!("http://h/a?token={i}")));
            set.offer(&t);
            set.answered(&t);
        }
        let all = set.all();
        assert_eq!(all.len(), KEEP_URLS);
        assert_eq!(all[0].as_str(), "http://h/a?token=9");
        assert_eq!(set.accepted().as_str(), "http://h/a?token=9");
        set.offer(&u("http://h/a?token=made-up"));
        assert_eq!(set.latest().as_str(), "http://h/a?token=made-up");
        assert_eq!(set.accepted().as_str(), "http://h/a?token=9");
        // Known by its key only: that one is asked with, refused or not,
        // until a player brings another.
        let set = UrlSet::unanswered(Arc::new(u("http://h/a")));
        let bare = set.latest();
        set.refused(&bare);
        assert_eq!(set.latest().as_str(), "http://h/a");
        set.offer(&u("http://h/a?token=1"));
        assert_eq!(names(&set), ["http://h/a?token=1"]);
    }
}
