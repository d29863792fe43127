//! Media answers are inert: whatever an upstream sends, a browser never
//! runs it as a page of spool's.
//!
//! - `X-Content-Type-Options: nosniff`: a body is what its type says,
//!   never guessed into HTML or script.
//! - `Content-Security-Policy: sandbox`: opened as a page, a proxied
//!   answer runs in a unique opaque origin with no script, no forms, no
//!   plugins and no requests but for its own media and images (a video
//!   or image opened in a tab still shows; `<video>`, hls.js and dash.js
//!   fetch bytes, for which the policy does nothing).
//! - Types that browsers render as active documents (HTML, XHTML, SVG,
//!   XML) are answered as `Content-Disposition: attachment` (a download)
//!   unless `--inline-documents` says otherwise.

use http::{header, HeaderValue};
use warp::reply::Response;

/// The policy on every media answer. `'self'` is the answer's own URL's
/// origin: a media document (a video opened in a tab) loads its video
/// from it.
const POLICY: &str = "sandbox; default-src 'none'; media-src 'self'; img-src 'self' data:; \
                      style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; \
                      form-action 'none'";

/// How media answers are made inert. Cheap to copy.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Inert {
    /// Serve active document types inline (still sandboxed).
    pub inline_documents: bool,
}

impl Inert {
    /// The answer with the headers above.
    pub fn apply(&self, mut r: Response) -> Response {
        let active = !self.inline_documents
            && r.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(is_active_document);
        let h = r.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        );
        if active {
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment"),
            );
        }
        r
    }
}

/// Whether a browser opening this type would render a document that can
/// run script: HTML, XHTML, SVG, XSLT and XML in general (an XML document
/// may pull in a stylesheet that writes HTML). Manifests such as DASH's
/// `application/dash+xml` are XML too: players fetch them, and a person
/// opening one gets a download.
fn is_active_document(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html" | "application/xhtml+xml" | "text/xml" | "application/xml" | "text/xsl"
    ) || essence.ends_with("+xml")
        || essence.starts_with("image/svg")
        || essence.contains("html")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer(ctype: Option<&str>) -> Response {
        let mut r = Response::new(Bytes::new().into());
        if let Some(c) = ctype {
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_str(c).unwrap());
        }
        r
    }

    #[test]
    fn active_types_are_downloads() {
        for t in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "application/xhtml+xml",
            "image/svg+xml",
            "text/xml",
            "application/xml",
            "application/dash+xml",
            "application/rss+xml",
            "text/xsl",
            "text/x-server-parsed-html",
        ] {
            let r = Inert::default().apply(answer(Some(t)));
            assert_eq!(
                r.headers()[header::CONTENT_DISPOSITION],
                "attachment",
                "{t}"
            );
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.starts_with("sandbox;"), "{csp}");
        }
        for t in [
            None,
            Some("video/mp4"),
            Some("application/vnd.apple.mpegurl"),
            Some("audio/mpeg"),
            Some("application/octet-stream"),
            Some("text/plain; charset=utf-8"),
            Some("image/png"),
        ] {
            let r = Inert::default().apply(answer(t));
            assert!(
                r.headers().get(header::CONTENT_DISPOSITION).is_none(),
                "{t:?}"
            );
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        }
        // The setting keeps them inline, still sandboxed.
        let inline = Inert {
            inline_documents: true,
        };
        let r = inline.apply(answer(Some("text/html")));
        assert!(r.headers().get(header::CONTENT_DISPOSITION).is_none());
        assert!(r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("sandbox"));
    }
}
