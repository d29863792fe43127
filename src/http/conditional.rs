//! Conditional requests (RFC 9110 §13): `If-None-Match` and `If-Range`.
//!
//! Hand-written rather than the `headers` crate's typed headers: its
//! `IfRange` accepts a date later than Last-Modified, where §13.1.5 asks
//! for an exact match before a range may be served.

/// If-None-Match (§13.1.2): true when any listed tag matches the current
/// ETag by the weak comparison (or the header is `*`).
pub(crate) fn none_match_hits(header: &str, etag: Option<&str>) -> bool {
    if header.trim() == "*" {
        return true;
    }
    let Some(etag) = etag else { return false };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    header.split(',').any(|t| opaque(t) == opaque(etag))
}

/// If-Range (§13.1.5): the range applies only when the validator matches
/// strongly: the same strong ETag, or exactly the Last-Modified date.
pub(crate) fn if_range_holds(
    header: Option<&str>,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> bool {
    let Some(v) = header.map(str::trim) else {
        return true;
    };
    if v.starts_with('"') || v.starts_with("W/") {
        return !v.starts_with("W/") && etag.is_some_and(|e| !e.starts_with("W/") && e == v);
    }
    match (
        httpdate::parse_http_date(v),
        last_modified.map(httpdate::parse_http_date),
    ) {
        (Ok(a), Some(Ok(b))) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match() {
        assert!(none_match_hits("\"a\"", Some("\"a\"")));
        assert!(none_match_hits("W/\"a\"", Some("\"a\"")));
        assert!(none_match_hits("\"b\", \"a\"", Some("W/\"a\"")));
        assert!(none_match_hits("*", None));
        assert!(!none_match_hits("\"b\"", Some("\"a\"")));
        assert!(!none_match_hits("\"a\"", None));
    }

    #[test]
    fn if_range() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let later = "Mon, 07 Nov 1994 08:49:37 GMT";
        assert!(if_range_holds(None, None, None));
        assert!(if_range_holds(Some("\"a\""), Some("\"a\""), None));
        assert!(
            !if_range_holds(Some("W/\"a\""), Some("W/\"a\""), None),
            "weak never"
        );
        assert!(!if_range_holds(Some("\"a\""), Some("W/\"a\""), None));
        assert!(!if_range_holds(Some("\"b\""), Some("\"a\""), None));
        assert!(if_range_holds(Some(date), None, Some(date)));
        assert!(
            !if_range_holds(Some(later), None, Some(date)),
            "exact date only"
        );
        assert!(!if_range_holds(Some("garbage"), None, Some(date)));
    }
}
