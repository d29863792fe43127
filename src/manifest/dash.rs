//! DASH manifests (ISO/IEC 23009-1): whether one is static or dynamic, and
//! the manifest with its URLs pointing back at spool. Pure functions.
//!
//! Relative references need no rewriting when the manifest's own address
//! names its upstream directory (the `/p/` and directory-signed forms);
//! the manifest is given an MPD-level `BaseURL` that says so whatever form
//! it was opened with, so relative `SegmentTemplate`s and `SegmentURL`s
//! below it resolve through spool. Every `BaseURL` is resolved through the
//! ones above it (against the manifest's final URL at the top) and
//! spelled whole: players differ in how they chain relative `BaseURL`s
//! (ffmpeg drops a root-relative one above a relative one), so none is
//! left to chain. Absolute URLs (`Location`, the `media`,
//! `initialization`, `index`, `sourceURL` and `xlink:href` attributes)
//! are rewritten.

use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};
use url::Url;

/// Attributes that hold a URL (or a URL template).
const URL_ATTRIBUTES: [&str; 5] = [
    "media",
    "initialization",
    "index",
    "sourceURL",
    "xlink:href",
];

/// Elements whose text is a URL.
const URL_ELEMENTS: [&str; 2] = ["BaseURL", "Location"];

/// What a manifest says about how long it stays valid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DashInfo {
    /// `type="dynamic"`: a live manifest that changes.
    pub dynamic: bool,
    /// `minimumUpdatePeriod`, seconds.
    pub minimum_update_period: Option<f64>,
}

/// Whether `body` looks like a DASH manifest: an `<MPD` element near its
/// start.
pub(crate) fn sniff(body: &[u8]) -> bool {
    let head = &body[..body.len().min(4096)];
    head.windows(4).any(|w| w == b"<MPD")
}

/// The root element's `type` and `minimumUpdatePeriod`.
pub(crate) fn info(body: &str) -> DashInfo {
    let mut reader = Reader::from_str(body);
    let mut info = DashInfo {
        dynamic: false,
        minimum_update_period: None,
    };
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                if e.local_name().as_ref() == "MPD" {
                    for a in e.attributes().flatten() {
                        let v: &str = &a.value;
                        match a.key.as_ref() {
                            "type" => info.dynamic = v == "dynamic",
                            "minimumUpdatePeriod" => info.minimum_update_period = iso_duration(v),
                            _ => {}
                        }
                    }
                }
                return info;
            }
            Ok(Event::Eof) | Err(_) => return info,
            Ok(_) => {}
        }
    }
}

/// An ISO 8601 duration as DASH uses it (`PT2S`, `PT1M30.5S`, `P1DT2H`):
/// seconds.
pub(super) fn iso_duration(s: &str) -> Option<f64> {
    let rest = s.trim().strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut total = 0.0;
    for (part, units) in [
        (date, &[('D', 86400.0)][..]),
        (time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let (_, unit) = units.iter().find(|(u, _)| *u == c)?;
                total += num.parse::<f64>().ok()? * unit;
                num.clear();
            }
        }
        if !num.is_empty() {
            return None;
        }
    }
    Some(total)
}

/// The manifest with an MPD-level `BaseURL` pointing at spool and every
/// absolute URL spelled. `base` is the manifest's final URL; `spell` gives
/// spool's URL for an upstream file or directory (a URL ending in `/`).
/// An error says why the manifest cannot be read.
pub(crate) fn rewrite(
    body: &str,
    base: &Url,
    spell: &dyn Fn(&Url) -> String,
) -> Result<String, String> {
    let has_top_base = top_level_base(body)?;
    let mut reader = Reader::from_str(body);
    let mut writer = Writer::new(Vec::with_capacity(body.len() + 256));
    let mut depth = 0usize;
    // Inside a URL element: its name, depth, and its raw (escaped) text.
    let mut inside: Option<(String, usize, String)> = None;
    // The base URL inside each open element, the document's first: what
    // it inherited, and its own first `BaseURL` once read.
    let mut scopes: Vec<(Url, Option<Url>)> = vec![(base.clone(), None)];
    let scope = |scopes: &[(Url, Option<Url>)]| {
        let (inherited, own) = scopes.last().expect("the document's scope");
        own.clone().unwrap_or_else(|| inherited.clone())
    };
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("the DASH manifest is not well-formed XML: {e}"))?;
        let w = |writer: &mut Writer<Vec<u8>>, ev: Event| {
            writer
                .write_event(ev)
                .map_err(|e| format!("cannot write the manifest: {e}"))
        };
        if let Some((_, _, text)) = inside.as_mut() {
            match &ev {
                Event::Text(t) => {
                    text.push_str(t);
                    continue;
                }
                Event::GeneralRef(r) => {
                    text.push('&');
                    text.push_str(r);
                    text.push(';');
                    continue;
                }
                Event::CData(c) => {
                    text.push_str(&quick_xml::escape::escape(&**c));
                    continue;
                }
                Event::End(_) => {
                    let (name, at, raw) = inside.take().expect("inside");
                    let value = quick_xml::escape::unescape(&raw)
                        .map_err(|e| format!("bad text in <{name}>: {e}"))?;
                    let trimmed = value.trim();
                    // The element's own scope is on top, its parent's
                    // below. A BaseURL resolves through the ones above it
                    // (what its parent inherited), a Location against the
                    // manifest.
                    let parent = scopes.len().saturating_sub(2);
                    let against = match name.as_str() {
                        "BaseURL" => scopes[parent].0.clone(),
                        _ => base.clone(),
                    };
                    let resolved = against
                        .join(trimmed)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https"));
                    if let (Some(u), "BaseURL") = (&resolved, name.as_str()) {
                        scopes[parent].1.get_or_insert_with(|| u.clone());
                    }
                    let _ = at;
                    let new = resolved
                        .map(|u| spell(&u))
                        .unwrap_or_else(|| trimmed.to_owned());
                    w(&mut writer, Event::Text(BytesText::new(&new)))?;
                }
                _ => {}
            }
        }
        match ev {
            Event::Eof => break,
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_owned();
                let is_mpd = depth == 0 && name == "MPD";
                w(
                    &mut writer,
                    Event::Start(respell_attributes(&e, base, spell)?),
                )?;
                depth += 1;
                let inherited = scope(&scopes);
                scopes.push((inherited, None));
                if URL_ELEMENTS.contains(&name.as_str()) {
                    inside = Some((name, depth - 1, String::new()));
                }
                if is_mpd && !has_top_base {
                    let dir = spell(&crate::signing::directory_of(base));
                    w(&mut writer, Event::Start(BytesStart::new("BaseURL")))?;
                    w(&mut writer, Event::Text(BytesText::new(&dir)))?;
                    w(
                        &mut writer,
                        Event::End(quick_xml::events::BytesEnd::new("BaseURL")),
                    )?;
                }
            }
            Event::Empty(e) => {
                w(
                    &mut writer,
                    Event::Empty(respell_attributes(&e, base, spell)?),
                )?;
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                if scopes.len() > 1 {
                    scopes.pop();
                }
                w(&mut writer, Event::End(e))?;
            }
            other => w(&mut writer, other)?,
        }
    }
    String::from_utf8(writer.into_inner()).map_err(|e| format!("not UTF-8: {e}"))
}

/// Whether the root `MPD` element has a `BaseURL` child of its own.
fn top_level_base(body: &str) -> Result<bool, String> {
    let mut reader = Reader::from_str(body);
    let mut depth = 0usize;
    let mut root = false;
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("the DASH manifest is not well-formed XML: {e}"))?
        {
            Event::Start(e) => {
                if depth == 0 {
                    root = e.local_name().as_ref() == "MPD";
                } else if depth == 1 && e.local_name().as_ref() == "BaseURL" {
                    return Ok(true);
                }
                depth += 1;
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => break,
            _ => {}
        }
    }
    if root {
        Ok(false)
    } else {
        Err("the manifest has no MPD root element".into())
    }
}

fn absolute(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The element with its absolute URL attributes spelled.
fn respell_attributes<'a>(
    e: &BytesStart<'a>,
    base: &Url,
    spell: &dyn Fn(&Url) -> String,
) -> Result<BytesStart<'a>, String> {
    let wanted = e
        .attributes()
        .flatten()
        .any(|a| URL_ATTRIBUTES.contains(&a.key.as_ref()) && absolute(&a.value));
    if !wanted {
        return Ok(e.clone());
    }
    let name = e.name().as_ref().to_owned();
    let mut out = BytesStart::new(name);
    for a in e.attributes() {
        let a = a.map_err(|e| format!("bad attribute in the manifest: {e}"))?;
        let key = a.key.as_ref().to_owned();
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("bad attribute in the manifest: {e}"))?
            .into_owned();
        let value = if URL_ATTRIBUTES.contains(&key.as_str()) && absolute(&value) {
            // Templates ($Number$, $RepresentationID$) pass through: `$`
            // is kept as it is in a URL path.
            base.join(value.trim())
                .ok()
                .map(|u| spell(&u))
                .unwrap_or(value)
        } else {
            value
        };
        out.push_attribute((key.as_str(), value.as_str()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spell(u: &Url) -> String {
        format!("/x/{}", u.as_str().replace("://", "/"))
    }

    fn base() -> Url {
        Url::parse("http://o.lan/show/dash/manifest.mpd").unwrap()
    }

    #[test]
    fn a_manifest_without_base_gets_one_at_mpd_level() {
        let body = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT6S">
  <Period id="0">
    <AdaptationSet contentType="video">
      <SegmentTemplate timescale="1000" initialization="init-$RepresentationID$.m4s" media="chunk-$RepresentationID$-$Number%05d$.m4s" startNumber="1"/>
      <Representation id="0" bandwidth="100000"/>
    </AdaptationSet>
  </Period>
</MPD>
"#;
        let out = rewrite(body, &base(), &spell).unwrap();
        assert!(
            out.contains(
                r#"mediaPresentationDuration="PT6S"><BaseURL>/x/http/o.lan/show/dash/</BaseURL>"#
            ),
            "{out}"
        );
        // Relative templates stay for the player to resolve.
        assert!(out.contains(r#"media="chunk-$RepresentationID$-$Number%05d$.m4s""#));
        assert!(out.starts_with(r#"<?xml version="1.0" encoding="utf-8"?>"#));
        assert_eq!(
            info(body),
            DashInfo {
                dynamic: false,
                minimum_update_period: None
            }
        );
    }

    /// ffmpeg's `-single_file` shape: a relative BaseURL per
    /// representation, no MPD-level one. Each is spelled whole (players
    /// chain a root-relative BaseURL above a relative one differently).
    #[test]
    fn representation_base_urls_are_spelled_whole() {
        let body = r#"<MPD type="static"><Period><AdaptationSet>
<Representation id="0"><BaseURL>manifest-stream0.mp4</BaseURL><SegmentList><Initialization range="0-814"/><SegmentURL mediaRange="815-2000"/></SegmentList></Representation>
<Representation id="1"><BaseURL>a/b.mp4</BaseURL><BaseURL>http://mirror.lan/b.mp4</BaseURL></Representation>
</AdaptationSet></Period></MPD>"#;
        let out = rewrite(body, &base(), &spell).unwrap();
        assert!(
            out.contains("<MPD type=\"static\"><BaseURL>/x/http/o.lan/show/dash/</BaseURL>"),
            "{out}"
        );
        assert!(
            out.contains("<BaseURL>/x/http/o.lan/show/dash/manifest-stream0.mp4</BaseURL>"),
            "{out}"
        );
        // A second BaseURL (another location of the same) resolves like
        // the first, not through it.
        assert!(out.contains("<BaseURL>/x/http/o.lan/show/dash/a/b.mp4</BaseURL><BaseURL>/x/http/mirror.lan/b.mp4</BaseURL>"), "{out}");
    }

    #[test]
    fn base_urls_absolute_and_relative() {
        let body = r#"<MPD type="dynamic" minimumUpdatePeriod="PT1M2.5S">
<BaseURL>media/</BaseURL>
<Location>https://o.lan/live/manifest.mpd?tok=a&amp;b=c</Location>
<Period xlink:href="http://remote.lan/period.xml"><BaseURL> http://cdn.lan/v/ </BaseURL>
<AdaptationSet><BaseURL>audio/</BaseURL>
<SegmentList><Initialization sourceURL="http://cdn.lan/v/init.mp4"/><SegmentURL media="seg1.m4s"/><SegmentURL media="https://cdn.lan/v/seg2.m4s" mediaRange="0-99"/></SegmentList>
<SegmentTemplate media="http://cdn.lan/t/$Number$.m4s"/>
</AdaptationSet></Period></MPD>"#;
        let out = rewrite(body, &base(), &spell).unwrap();
        assert!(
            out.contains("<BaseURL>/x/http/o.lan/show/dash/media/</BaseURL>"),
            "{out}"
        );
        assert_eq!(out.matches("<BaseURL>").count(), 3, "none added: {out}");
        assert!(
            out.contains("<Location>/x/https/o.lan/live/manifest.mpd?tok=a&amp;b=c</Location>"),
            "{out}"
        );
        assert!(out.contains(r#"<Period xlink:href="/x/http/remote.lan/period.xml">"#));
        assert!(out.contains("<BaseURL>/x/http/cdn.lan/v/</BaseURL>"));
        assert!(
            out.contains("<BaseURL>/x/http/cdn.lan/v/audio/</BaseURL>"),
            "a nested relative one, resolved through those above: {out}"
        );
        assert!(out.contains(r#"<Initialization sourceURL="/x/http/cdn.lan/v/init.mp4"/>"#));
        assert!(out.contains(r#"<SegmentURL media="seg1.m4s"/>"#));
        assert!(
            out.contains(r#"<SegmentURL media="/x/https/cdn.lan/v/seg2.m4s" mediaRange="0-99"/>"#)
        );
        assert!(
            out.contains(r#"<SegmentTemplate media="/x/http/cdn.lan/t/$Number$.m4s"/>"#),
            "{out}"
        );
        let i = info(body);
        assert!(i.dynamic);
        assert_eq!(i.minimum_update_period, Some(62.5));
    }

    #[test]
    fn not_a_manifest() {
        assert!(rewrite("<html><body/></html>", &base(), &spell).is_err());
        assert!(rewrite("<MPD><Period></MPD>", &base(), &spell).is_err());
        assert!(sniff(b"<?xml version=\"1.0\"?>\n<MPD xmlns=\"x\">"));
        assert!(!sniff(b"#EXTM3U"));
    }

    #[test]
    fn durations() {
        assert_eq!(iso_duration("PT2S"), Some(2.0));
        assert_eq!(iso_duration("P1DT1H"), Some(90000.0));
        assert_eq!(iso_duration("PT0.5S"), Some(0.5));
        assert_eq!(iso_duration("2S"), None);
        assert_eq!(iso_duration("PT2X"), None);
    }
}
