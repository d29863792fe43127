//! HLS playlists (RFC 8216): what one says about itself (VOD or live,
//! target duration), and the same playlist with every URI in it pointing
//! back at spool. Pure functions, tested on many playlist shapes.
//!
//! URIs are the lines that are not tags or comments (segments, variant
//! streams) and the `URI="…"` attribute of any tag (`EXT-X-KEY`,
//! `EXT-X-MAP`, `EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF`,
//! `EXT-X-SESSION-KEY`, `EXT-X-PART`, `EXT-X-PRELOAD-HINT`, ...). Each is
//! resolved against the playlist's final URL (RFC 3986, after redirects)
//! and spelled by the caller; URIs that are not http(s) (`skd://`, `data:`)
//! stay as they are.

use url::Url;

use super::outline::{push_file, Carries, Outline, Role, Stream, MAX_FILES};

/// What a media or master playlist says about how long it stays valid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HlsInfo {
    /// `#EXT-X-ENDLIST` or `#EXT-X-PLAYLIST-TYPE:VOD`: it never changes.
    pub vod: bool,
    /// Variant streams (`#EXT-X-STREAM-INF`): a master playlist.
    pub master: bool,
    /// `#EXT-X-TARGETDURATION`, seconds.
    pub target_duration: Option<f64>,
}

impl HlsInfo {
    /// Whether the playlist can change: a media playlist without an end.
    pub fn live(&self) -> bool {
        !self.vod && !self.master
    }
}

/// Whether `body` starts like an HLS playlist (`#EXTM3U`, after a BOM or
/// blank space).
pub(crate) fn sniff(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    start.is_some_and(|i| body[i..].starts_with(b"#EXTM3U"))
}

/// What `body` says about itself.
pub(crate) fn info(body: &str) -> HlsInfo {
    let mut info = HlsInfo {
        vod: false,
        master: false,
        target_duration: None,
    };
    for line in body.lines().map(str::trim) {
        if line == "#EXT-X-ENDLIST" || line == "#EXT-X-PLAYLIST-TYPE:VOD" {
            info.vod = true;
        } else if line.starts_with("#EXT-X-STREAM-INF") {
            info.master = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            info.target_duration = v.trim().parse().ok().filter(|d: &f64| d.is_finite());
        }
    }
    info
}

/// `body` with every URI resolved against `base` and, when it is http(s),
/// replaced by `spell(uri)`. Line endings become `\n`.
pub(crate) fn rewrite(body: &str, base: &Url, spell: &dyn Fn(&Url) -> String) -> String {
    let mut out = String::with_capacity(body.len() + body.len() / 2);
    let body = body.strip_prefix('\u{FEFF}').unwrap_or(body);
    for line in body.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            out.push_str(line);
        } else if trimmed.starts_with('#') {
            match rewrite_tag(trimmed, base, spell) {
                Some(tag) => out.push_str(&tag),
                None => out.push_str(line),
            }
        } else {
            out.push_str(&respell(trimmed, base, spell).unwrap_or_else(|| trimmed.to_owned()));
        }
        out.push('\n');
    }
    out
}

/// One URI, resolved and spelled; None when it is not http(s) or does not
/// parse (it is left as it is).
fn respell(uri: &str, base: &Url, spell: &dyn Fn(&Url) -> String) -> Option<String> {
    let u = base.join(uri).ok()?;
    matches!(u.scheme(), "http" | "https").then(|| spell(&u))
}

/// A tag line with its `URI` attribute spelled; None when it has none.
fn rewrite_tag(line: &str, base: &Url, spell: &dyn Fn(&Url) -> String) -> Option<String> {
    if !line.starts_with("#EXT") {
        return None;
    }
    let (name, attrs) = line.split_once(':')?;
    let attrs = attributes(attrs)?;
    let uri = attrs.iter().position(|(k, _)| *k == "URI")?;
    let value = attrs[uri].1.strip_prefix('"')?.strip_suffix('"')?;
    let new = respell(value, base, spell)?;
    let mut out = format!("{name}:");
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if i == uri {
            out.push_str(&format!("URI=\"{new}\""));
        } else {
            out.push_str(&format!("{k}={v}"));
        }
    }
    Some(out)
}

/// An attribute list (RFC 8216 §4.2): `NAME=VALUE` pairs separated by
/// commas, values quoted strings (which may hold commas) or not. None when
/// `s` is not one (e.g. `#EXTINF:10.0,title`).
fn attributes(s: &str) -> Option<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return None;
        }
        let end = if let Some(quoted) = after.strip_prefix('"') {
            1 + quoted.find('"')? + 1
        } else {
            after.find(',').unwrap_or(after.len())
        };
        out.push((name, &after[..end]));
        rest = &after[end..];
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.trim().is_empty() => break,
            None => return None,
        }
    }
    Some(out)
}

/// What a tag names.
enum Named {
    File(Url, Role),
    Stream(Box<Stream>),
}

/// What `body` names: a master's variants and renditions (and session
/// keys), a media playlist's segments, keys and initialization sections
/// (each once, in order), resolved against `base`; URIs that are not
/// http(s) are left out. A media playlist's duration is the sum of its
/// `#EXTINF`s.
pub(crate) fn outline(body: &str, base: &Url) -> Outline {
    let mut out = Outline::default();
    let mut count = 0usize;
    let mut duration = 0.0f64;
    let mut segments = 0usize;
    // The `#EXT-X-STREAM-INF` waiting for its URI line.
    let mut pending: Option<Stream> = None;
    let resolve = |uri: &str| {
        base.join(uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
    };
    for line in body.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            let Some(url) = resolve(line) else {
                pending = None;
                continue;
            };
            if let Some(mut s) = pending.take() {
                s.playlist = Some(url);
                if count < MAX_FILES {
                    count += 1;
                    out.streams.push(s);
                } else {
                    out.truncated = true;
                }
            } else {
                segments += 1;
                if !push_file(&mut out.files, &mut count, url, Role::Segment) {
                    out.truncated = true;
                }
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("#EXTINF:") {
            let secs = v.split(',').next().unwrap_or("").trim();
            if let Ok(d) = secs.parse::<f64>() {
                if d.is_finite() && d >= 0.0 {
                    duration += d;
                }
            }
            continue;
        }
        let Some((name, attrs)) = line.split_once(':') else {
            continue;
        };
        let Some(attrs) = attributes(attrs) else {
            continue;
        };
        let get = |k: &str| {
            attrs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.trim_matches('"'))
        };
        let bandwidth = get("BANDWIDTH").and_then(|b| b.parse().ok());
        let uri = get("URI").and_then(resolve);
        let stream = |carries, group: Option<&str>| Stream {
            playlist: None,
            carries,
            bandwidth,
            group: group.map(str::to_owned),
            audio: get("AUDIO").map(str::to_owned),
            subtitles: get("SUBTITLES").map(str::to_owned),
            period: 0,
            files: Vec::new(),
        };
        let file = match name {
            "#EXT-X-STREAM-INF" => {
                pending = Some(stream(Carries::Video, None));
                None
            }
            "#EXT-X-I-FRAME-STREAM-INF" => uri.map(|u| {
                let mut s = stream(Carries::IFrames, None);
                s.playlist = Some(u);
                Named::Stream(Box::new(s))
            }),
            "#EXT-X-MEDIA" => {
                let carries = match get("TYPE") {
                    Some("AUDIO") => Some(Carries::Audio),
                    Some("SUBTITLES") => Some(Carries::Subtitles),
                    Some("VIDEO") => Some(Carries::Video),
                    _ => None,
                };
                match (carries, uri) {
                    (Some(c), Some(u)) => {
                        let mut s = stream(c, get("GROUP-ID"));
                        s.audio = None;
                        s.subtitles = None;
                        s.playlist = Some(u);
                        Some(Named::Stream(Box::new(s)))
                    }
                    _ => None,
                }
            }
            "#EXT-X-KEY" | "#EXT-X-SESSION-KEY" => uri.map(|u| Named::File(u, Role::Key)),
            "#EXT-X-MAP" => uri.map(|u| Named::File(u, Role::Init)),
            _ => None,
        };
        match file {
            Some(Named::File(u, role)) => {
                let kept = push_file(&mut out.files, &mut count, u, role);
                out.truncated |= !kept;
            }
            Some(Named::Stream(s)) if count < MAX_FILES => {
                count += 1;
                out.streams.push(*s);
            }
            Some(Named::Stream(_)) => out.truncated = true,
            None => {}
        }
    }
    if segments > 0 {
        out.duration_secs = Some(duration);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spell(u: &Url) -> String {
        format!("/x/{}", u.as_str().replace("://", "/"))
    }

    fn base() -> Url {
        Url::parse("http://o.lan:81/show/hls/index.m3u8?k=1").unwrap()
    }

    #[test]
    fn media_playlist_segments_relative_and_absolute() {
        let body = "#EXTM3U\r\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg000.ts\n#EXTINF:4.0, a title, with commas\n../other/seg001.ts?t=2\n#EXTINF:4.0,\n/root/seg002.ts\n#EXTINF:4.0,\nhttps://cdn.example/s/seg003.ts\n\n#EXT-X-ENDLIST\n";
        let out = rewrite(body, &base(), &spell);
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n/x/http/o.lan:81/show/hls/seg000.ts\n#EXTINF:4.0, a title, with commas\n/x/http/o.lan:81/show/other/seg001.ts?t=2\n#EXTINF:4.0,\n/x/http/o.lan:81/root/seg002.ts\n#EXTINF:4.0,\n/x/https/cdn.example/s/seg003.ts\n\n#EXT-X-ENDLIST\n"
        );
        let i = info(body);
        assert!(i.vod && !i.master && !i.live());
        assert_eq!(i.target_duration, Some(4.0));
    }

    #[test]
    fn master_playlist_variants_and_media_attributes() {
        let body = r#"#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English, main",DEFAULT=YES,URI="audio/en.m3u8"
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="cc1",INSTREAM-ID="CC1"
#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS="avc1.4d401f,mp4a.40.2",AUDIO="aud"
low/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2560000
http://other.lan/hi/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI="low/iframe.m3u8"
#EXT-X-SESSION-KEY:METHOD=AES-128,URI="https://keys.lan/k"
"#;
        let out = rewrite(body, &base(), &spell);
        assert!(out.contains(r#"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English, main",DEFAULT=YES,URI="/x/http/o.lan:81/show/hls/audio/en.m3u8""#), "{out}");
        assert!(out.contains("\n#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID=\"cc\",NAME=\"cc1\",INSTREAM-ID=\"CC1\"\n"));
        assert!(out.contains("\n#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS=\"avc1.4d401f,mp4a.40.2\",AUDIO=\"aud\"\n/x/http/o.lan:81/show/hls/low/index.m3u8\n"));
        assert!(out.contains("\n/x/http/other.lan/hi/index.m3u8\n"));
        assert!(out.contains(r#"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI="/x/http/o.lan:81/show/hls/low/iframe.m3u8""#));
        assert!(out.contains(r#"#EXT-X-SESSION-KEY:METHOD=AES-128,URI="/x/https/keys.lan/k""#));
        let i = info(body);
        assert!(i.master && !i.live());
    }

    #[test]
    fn key_and_map_attributes_and_foreign_schemes() {
        let body = "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"720@0\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin?id=3\",IV=0x0123\n#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://key-id\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\n#EXT-X-KEY:METHOD=NONE\n#EXTINF:6,\nseg7.m4s\n";
        let out = rewrite(body, &base(), &spell);
        assert!(
            out.contains(
                "#EXT-X-MAP:URI=\"/x/http/o.lan:81/show/hls/init.mp4\",BYTERANGE=\"720@0\"\n"
            ),
            "{out}"
        );
        assert!(out.contains(
            "#EXT-X-KEY:METHOD=AES-128,URI=\"/x/http/o.lan:81/show/hls/key.bin?id=3\",IV=0x0123\n"
        ));
        assert!(out.contains("URI=\"skd://key-id\""), "other schemes stay");
        assert!(out.contains("#EXT-X-KEY:METHOD=NONE\n"));
        let i = info(body);
        assert!(i.live());
        assert_eq!(i.target_duration, Some(6.0));
    }

    #[test]
    fn odd_lines_stay_as_they_are() {
        let body = "\u{FEFF}#EXTM3U\n# a comment with URI=\"x\"\n#EXTINF:10.0,URI=\"not an attribute list\"\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:00Z\nseg 1.ts\n";
        let out = rewrite(body, &base(), &spell);
        assert!(
            out.starts_with("#EXTM3U\n# a comment with URI=\"x\"\n"),
            "{out}"
        );
        assert!(out.contains("#EXTINF:10.0,URI=\"not an attribute list\"\n"));
        assert!(out.contains("#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:00Z\n"));
        assert!(
            out.contains("/x/http/o.lan:81/show/hls/seg%201.ts\n"),
            "{out}"
        );
        assert!(info(body).vod);
    }

    #[test]
    fn outline_of_a_master() {
        let body = r#"#EXTM3U
#EXT-X-SESSION-KEY:METHOD=AES-128,URI="https://keys.lan/k"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="en",URI="audio/en.m3u8"
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="cc1",INSTREAM-ID="CC1"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="en",URI="subs/en.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=1280000,AUDIO="aud",SUBTITLES="subs"
low/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2560000,AUDIO="aud"
http://other.lan/hi/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=1
skd://not-fetchable
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI="low/iframe.m3u8"
"#;
        let o = outline(body, &base());
        let s: Vec<(&str, Carries, Option<u64>)> = o
            .streams
            .iter()
            .map(|s| {
                (
                    s.playlist.as_ref().unwrap().as_str(),
                    s.carries,
                    s.bandwidth,
                )
            })
            .collect();
        assert_eq!(
            s,
            [
                (
                    "http://o.lan:81/show/hls/audio/en.m3u8",
                    Carries::Audio,
                    None
                ),
                (
                    "http://o.lan:81/show/hls/subs/en.m3u8",
                    Carries::Subtitles,
                    None
                ),
                (
                    "http://o.lan:81/show/hls/low/index.m3u8",
                    Carries::Video,
                    Some(1_280_000)
                ),
                (
                    "http://other.lan/hi/index.m3u8",
                    Carries::Video,
                    Some(2_560_000)
                ),
                (
                    "http://o.lan:81/show/hls/low/iframe.m3u8",
                    Carries::IFrames,
                    Some(86_000)
                ),
            ]
        );
        assert_eq!(o.streams[2].audio.as_deref(), Some("aud"));
        assert_eq!(o.streams[2].subtitles.as_deref(), Some("subs"));
        assert_eq!(o.streams[0].group.as_deref(), Some("aud"));
        assert_eq!(
            o.files,
            [(Url::parse("https://keys.lan/k").unwrap(), Role::Key)]
        );
        assert_eq!(o.duration_secs, None);
    }

    #[test]
    fn outline_of_a_media_playlist() {
        let body = "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\"\n#EXTINF:6.0,\nseg0.m4s\n#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\"\n#EXTINF:5.5,a title\nseg1.m4s\n#EXT-X-BYTERANGE:100@0\n#EXTINF:2,\nall.ts\n#EXT-X-BYTERANGE:100@100\n#EXTINF:2,\nall.ts\n#EXT-X-ENDLIST\n";
        let o = outline(body, &base());
        let files: Vec<(&str, Role)> = o.files.iter().map(|(u, r)| (u.path(), *r)).collect();
        assert_eq!(
            files,
            [
                ("/show/hls/init.mp4", Role::Init),
                ("/show/hls/key.bin", Role::Key),
                ("/show/hls/seg0.m4s", Role::Segment),
                ("/show/hls/seg1.m4s", Role::Segment),
                ("/show/hls/all.ts", Role::Segment),
            ]
        );
        assert!(o.streams.is_empty());
        assert_eq!(o.duration_secs, Some(15.5));
        assert!(!o.truncated);
    }

    #[test]
    fn outline_is_bounded() {
        let mut body = String::from("#EXTM3U\n");
        for i in 0..MAX_FILES + 10 {
            body.push_str(&format!("#EXTINF:1,\ns{i}.ts\n"));
        }
        let o = outline(&body, &base());
        assert_eq!(o.files.len(), MAX_FILES);
        assert!(o.truncated);
    }

    #[test]
    fn sniffing() {
        assert!(sniff(b"#EXTM3U\n"));
        assert!(sniff(b"\xEF\xBB\xBF\r\n #EXTM3U\n"));
        assert!(!sniff(b"<MPD>"));
        assert!(!sniff(b""));
        assert!(!sniff(b"seg.ts\n#EXTM3U"));
    }

    #[test]
    fn attribute_lists() {
        assert_eq!(
            attributes(r#"A=1,B="x,y",C=0x1F"#),
            Some(vec![("A", "1"), ("B", "\"x,y\""), ("C", "0x1F")])
        );
        assert_eq!(attributes("10.0,title"), None);
        assert_eq!(attributes(r#"A="unterminated"#), None);
        assert_eq!(attributes(r#"A="x"junk"#), None);
    }
}
