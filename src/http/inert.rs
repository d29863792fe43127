//! Media answers are inert: whatever an upstream sends, a browser never
//! runs it as a page of spool's.
//!
//! - `X-Content-Type-Options: nosniff`: a body is what its type says,
//!   never guessed into HTML or script.
//! - `Content-Security-Policy`: opened as a page, a proxied answer runs no
//!   script and makes no request but for its own media and images. Every
//!   type a browser could render as a page of its own also gets `sandbox`:
//!   a unique opaque origin, no script, no forms, no plugins. Audio,
//!   video, images (not SVG) and HLS playlists do not: a browser renders
//!   them as a media document that loads the URL again for its `<video>`,
//!   which an opaque origin could not do without CORS; they can never
//!   become a page with script (`nosniff`, and the policy allows none).
//!   `<video>`, hls.js and dash.js fetch bytes, for which the policy does
//!   nothing.
//! - Types that browsers render as active documents (HTML, XHTML, SVG,
//!   XML) are answered as `Content-Disposition: attachment` (a download)
//!   unless `--inline-documents` says otherwise.

use http::{header, HeaderValue};
use warp::reply::Response;

/// The policy on media answers. `'self'` is the answer's own URL's
/// origin: a media document (a video opened in a tab) loads its video
/// from it.
const MEDIA_POLICY: &str = "default-src 'none'; media-src 'self'; img-src 'self' data:; \
                            style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; \
                            form-action 'none'";
/// The policy on every other answer: the same, sandboxed.
const SANDBOX_POLICY: &str =
    "sandbox; default-src 'none'; media-src 'self'; img-src 'self' data:; \
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
        let ctype = r
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(essence);
        let active = !self.inline_documents && ctype.as_deref().is_some_and(is_active_document);
        let policy = match ctype.as_deref().is_some_and(is_media) {
            true => MEDIA_POLICY,
            false => SANDBOX_POLICY,
        };
        let h = r.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(policy),
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
fn is_active_document(essence: &str) -> bool {
    matches!(
        essence,
        "text/html" | "application/xhtml+xml" | "text/xml" | "application/xml" | "text/xsl"
    ) || essence.ends_with("+xml")
        || essence.starts_with("image/svg")
        || essence.contains("html")
}

/// Whether a browser shows this type as a media document (audio, video,
/// an image that is not SVG, an HLS playlist some browsers play).
fn is_media(essence: &str) -> bool {
    let media = essence.starts_with("video/")
        || essence.starts_with("audio/")
        || (essence.starts_with("image/") && !essence.contains("svg"));
    (media || crate::manifest::typed(Some(essence))) && !essence.contains("xml")
}

/// A Content-Type's type and subtype, lower case.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
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
        // Media documents are not sandboxed (they load their own URL
        // again), but allow no script either.
        for (t, sandboxed) in [
            ("video/mp4", false),
            ("audio/mpeg", false),
            ("image/png", false),
            ("application/vnd.apple.mpegurl", false),
            ("image/svg+xml", true),
            ("audio/x-foo+xml", true),
            ("text/plain", true),
            ("application/octet-stream", true),
        ] {
            let r = Inert::default().apply(answer(Some(t)));
            let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert_eq!(csp.starts_with("sandbox;"), sandboxed, "{t}: {csp}");
            assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"));
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
