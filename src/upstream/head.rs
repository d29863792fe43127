//! What an origin's response head says: which bytes its body holds, the
//! media's size, type and validators; and whether it still is the version
//! spool has cached.

use http::{header, HeaderMap, StatusCode};

use super::error::UpstreamError;

/// What one origin response says about the media and its body.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub status: StatusCode,
    /// Offset of the body's first byte in the media.
    pub start: u64,
    /// The media's total size, when the origin told it.
    pub total: Option<u64>,
    pub content_type: Option<String>,
    /// Sent although spool asks for `identity`: passed on to players.
    pub content_encoding: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Head {
    pub fn parse(status: StatusCode, headers: &HeaderMap) -> Result<Head, UpstreamError> {
        let text = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_length = text(header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
        let (start, total) = match status {
            StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
                let cr = text(header::CONTENT_RANGE).ok_or_else(|| {
                    UpstreamError::Protocol(format!("{status} without Content-Range"))
                })?;
                parse_content_range(&cr)
                    .ok_or_else(|| UpstreamError::Protocol(format!("bad Content-Range {cr:?}")))?
            }
            _ => (0, content_length),
        };
        Ok(Head {
            status,
            start,
            total,
            content_type: text(header::CONTENT_TYPE),
            content_encoding: text(header::CONTENT_ENCODING)
                .filter(|e| !e.trim().eq_ignore_ascii_case("identity")),
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
        })
    }
}

/// Parses `bytes a-b/total`, `bytes a-b/*` or `bytes */total` into the
/// first byte's offset and the total size.
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match range.trim() {
        "*" => 0,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if b < a || total.is_some_and(|t| b >= t) {
                return None;
            }
            a
        }
    };
    Some((start, total))
}

/// One version of a media as spool cached it: what every later response
/// must agree with, or the cached bytes are of another file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Version {
    /// Checks that a response carries this version's bytes from `pos`;
    /// returns how many leading bytes to drop (an origin ignoring Range).
    pub fn check(&self, head: &Head, pos: u64) -> Result<u64, UpstreamError> {
        let differs = |ours: &Option<String>, theirs: &Option<String>| matches!((ours, theirs), (Some(a), Some(b)) if a != b);
        if head.total.is_some_and(|t| t != self.size)
            || differs(&self.etag, &head.etag)
            || differs(&self.last_modified, &head.last_modified)
        {
            return Err(UpstreamError::Changed);
        }
        match head.status {
            StatusCode::PARTIAL_CONTENT if head.start == pos => Ok(0),
            StatusCode::PARTIAL_CONTENT => Err(UpstreamError::Protocol(format!(
                "asked for byte {pos} and got byte {}",
                head.start
            ))),
            // The origin ignored Range: drop what comes before `pos`.
            StatusCode::OK => Ok(pos),
            s => Err(UpstreamError::BadStatus(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, Some(100))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */100"), Some((0, Some(100))));
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes 0-1"), None);
    }

    #[test]
    fn versions() {
        let v = Version {
            size: 100,
            etag: Some("\"a\"".into()),
            last_modified: None,
        };
        let head = |status, start, total: Option<u64>, etag: &str| Head {
            status,
            start,
            total,
            content_type: None,
            content_encoding: None,
            etag: Some(etag.into()),
            last_modified: None,
        };
        let partial = StatusCode::PARTIAL_CONTENT;
        assert_eq!(v.check(&head(partial, 10, Some(100), "\"a\""), 10), Ok(0));
        assert_eq!(
            v.check(&head(StatusCode::OK, 0, Some(100), "\"a\""), 10),
            Ok(10)
        );
        assert_eq!(
            v.check(&head(partial, 10, Some(100), "\"b\""), 10),
            Err(UpstreamError::Changed)
        );
        assert_eq!(
            v.check(&head(partial, 10, Some(99), "\"a\""), 10),
            Err(UpstreamError::Changed)
        );
        assert!(matches!(
            v.check(&head(partial, 0, Some(100), "\"a\""), 10),
            Err(UpstreamError::Protocol(_))
        ));
    }

    proptest::proptest! {
        /// Any Content-Range an origin sends parses or is refused, never a
        /// panic; what parses is consistent (first byte within the total).
        #[test]
        fn fuzz_content_range(v in "bytes [0-9*]{0,22}-?[0-9]{0,22}/[0-9*]{0,22}|.{0,40}") {
            if let Some((start, Some(total))) = parse_content_range(&v) {
                proptest::prop_assert!(start < total || v.contains('*'));
            }
        }

        /// A whole response head from a hostile origin: parsed or refused.
        #[test]
        fn fuzz_head(
            status in proptest::sample::select(vec![200u16, 206, 416, 302, 500]),
            cr in ".{0,40}",
            len in ".{0,24}",
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&cr) {
                h.insert(header::CONTENT_RANGE, v);
            }
            if let Ok(v) = http::HeaderValue::from_str(&len) {
                h.insert(header::CONTENT_LENGTH, v);
            }
            let status = StatusCode::from_u16(status).unwrap();
            if let Ok(head) = Head::parse(status, &h) {
                if let Some(total) = head.total {
                    proptest::prop_assert!(status != StatusCode::PARTIAL_CONTENT || head.start < total);
                }
            }
        }
    }
}
