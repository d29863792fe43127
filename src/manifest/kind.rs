//! Telling a playlist or manifest from other media: by its name before
//! anything is fetched, by the origin's Content-Type, and by its first
//! bytes, which decide.

use url::Url;

use super::dash::{self, DashInfo};
use super::hls::{self, HlsInfo};
use super::mpd;
use super::outline::Outline;

/// HLS playlist types, the first the one spool answers with.
pub(crate) const HLS_TYPES: [&str; 4] = [
    "application/vnd.apple.mpegurl",
    "application/x-mpegurl",
    "audio/mpegurl",
    "audio/x-mpegurl",
];
/// The DASH manifest type.
pub(crate) const DASH_TYPE: &str = "application/dash+xml";

/// What a body named or typed like a playlist is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Hls(HlsInfo),
    Dash(DashInfo),
    /// Named like a playlist, but not one: served as it came.
    Other,
}

impl Kind {
    /// What `body` is, by its first bytes (HLS `#EXTM3U`, DASH `<MPD`).
    pub fn of(body: &[u8]) -> Kind {
        match std::str::from_utf8(body) {
            Ok(t) if hls::sniff(body) => Kind::Hls(hls::info(t)),
            Ok(t) if dash::sniff(body) => Kind::Dash(dash::info(t)),
            _ => Kind::Other,
        }
    }

    /// What `body` (of this kind, from `base`) names: its renditions and
    /// files. None for what is not a playlist, and for a DASH manifest
    /// that cannot be read.
    pub fn outline(&self, body: &[u8], base: &Url) -> Option<Outline> {
        let text = std::str::from_utf8(body).ok()?;
        match self {
            Kind::Hls(_) => Some(hls::outline(text, base)),
            Kind::Dash(_) => mpd::outline(text, base).ok(),
            Kind::Other => None,
        }
    }

    /// Whether it can change while it is played: a live playlist, a
    /// dynamic manifest (and what is not a playlist at all).
    pub fn live(&self) -> bool {
        match self {
            Kind::Hls(i) => i.live(),
            Kind::Dash(i) => i.dynamic,
            Kind::Other => true,
        }
    }
}

/// Whether a URL's name says playlist or manifest.
pub(crate) fn named(url: &Url) -> bool {
    crate::signing::is_playlist_name(url)
}

/// Whether a Content-Type says playlist or manifest.
pub(crate) fn typed(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    HLS_TYPES.contains(&essence.as_str()) || essence == DASH_TYPE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(typed(Some("application/vnd.apple.mpegurl")));
        assert!(typed(Some("Application/X-MpegURL; charset=utf-8")));
        assert!(typed(Some("application/dash+xml")));
        assert!(!typed(Some("video/mp2t")));
        assert!(!typed(None));
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(named(&u("http://h/a/index.M3U8?x=1")));
        assert!(named(&u("http://h/manifest.mpd")));
        assert!(!named(&u("http://h/seg.ts")));
    }

    #[test]
    fn kinds_by_first_bytes() {
        assert!(matches!(Kind::of(b"\xEF\xBB\xBF #EXTM3U\n"), Kind::Hls(_)));
        assert!(matches!(
            Kind::of(b"<?xml version=\"1.0\"?><MPD>"),
            Kind::Dash(_)
        ));
        assert!(matches!(Kind::of(b"\xff\xfe#EXTM3U"), Kind::Other));
        assert!(Kind::Other.live());
    }
}
