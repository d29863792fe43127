//! A DASH manifest's outline: every representation with the files it
//! plays from (its `SegmentTemplate` expanded, its `SegmentList`, or its
//! single file with `SegmentBase`), resolved through the `BaseURL`s above
//! it. Pure. A dynamic manifest's templates without a timeline name
//! segments by the clock, which an outline does not follow: those
//! representations list their initialization sections only.

use quick_xml::events::Event;
use quick_xml::Reader;
use url::Url;

use super::outline::{push_file, Carries, Outline, Role, Stream, MAX_FILES};

/// Deepest element nesting read; a DASH manifest needs about eight.
const MAX_DEPTH: usize = 32;

/// An element, with what an outline reads of it.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// `base` joined with this element's first `BaseURL`, if any.
    fn base(&self, base: &Url) -> Url {
        self.child("BaseURL")
            .and_then(|b| base.join(b.text.trim()).ok())
            .unwrap_or_else(|| base.clone())
    }
}

fn parse(body: &str) -> Result<Node, String> {
    let mut reader = Reader::from_str(body);
    let mut stack: Vec<Node> = Vec::new();
    let bad = |e: &dyn std::fmt::Display| format!("the DASH manifest is not well-formed XML: {e}");
    let node = |e: &quick_xml::events::BytesStart| -> Result<Node, String> {
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| bad(&e))?;
            let key = a.key.local_name().as_ref().to_owned();
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| bad(&e))?
                .into_owned();
            attrs.push((key, value));
        }
        Ok(Node {
            name: e.local_name().as_ref().to_owned(),
            attrs,
            ..Node::default()
        })
    };
    loop {
        match reader.read_event().map_err(|e| bad(&e))? {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("the DASH manifest nests deeper than {MAX_DEPTH}"));
                }
                stack.push(node(&e)?);
            }
            Event::Empty(e) => {
                let n = node(&e)?;
                match stack.last_mut() {
                    Some(top) => top.children.push(n),
                    None => return finish(n),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let raw: &str = &t;
                    top.text
                        .push_str(&quick_xml::escape::unescape(raw).map_err(|e| bad(&e))?);
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&c);
                }
            }
            Event::End(_) => {
                let n = stack.pop().expect("an End follows a Start");
                match stack.last_mut() {
                    Some(top) => top.children.push(n),
                    None => return finish(n),
                }
            }
            Event::Eof => return Err("the manifest has no MPD root element".into()),
            _ => {}
        }
    }
}

fn finish(root: Node) -> Result<Node, String> {
    if root.name == "MPD" {
        Ok(root)
    } else {
        Err("the manifest has no MPD root element".into())
    }
}

/// The manifest's representations and their files, resolved against
/// `base` (its final URL); an error says why it cannot be read.
pub(crate) fn outline(body: &str, base: &Url) -> Result<Outline, String> {
    let mpd = parse(body)?;
    let dynamic = mpd.attr("type") == Some("dynamic");
    let total = mpd
        .attr("mediaPresentationDuration")
        .and_then(super::dash::iso_duration);
    let base = mpd.base(base);
    let mut out = Outline {
        duration_secs: total,
        ..Outline::default()
    };
    let mut count = 0usize;
    let periods: Vec<&Node> = mpd.children("Period").collect();
    // A period lasts its `duration`, or until the next one starts, or
    // (the last) until the presentation ends.
    let starts: Vec<Option<f64>> = periods
        .iter()
        .map(|p| p.attr("start").and_then(super::dash::iso_duration))
        .collect();
    for (pi, period) in periods.iter().enumerate() {
        let length = period
            .attr("duration")
            .and_then(super::dash::iso_duration)
            .or_else(
                || match (starts[pi], starts.get(pi + 1).copied().flatten()) {
                    (Some(a), Some(b)) => Some(b - a),
                    (start, None) => total.map(|t| t - start.unwrap_or(0.0)),
                    _ => None,
                },
            );
        let pbase = period.base(&base);
        for (ai, set) in period.children("AdaptationSet").enumerate() {
            let abase = set.base(&pbase);
            for rep in set.children("Representation") {
                if count >= MAX_FILES {
                    out.truncated = true;
                    return Ok(out);
                }
                let rbase = rep.base(&abase);
                let mut files = Vec::new();
                let ctx = Context {
                    rep,
                    levels: [Some(rep), Some(set), Some(period)],
                    base: &rbase,
                    length,
                    dynamic,
                };
                if !ctx.files(&mut files, &mut count) {
                    out.truncated = true;
                }
                out.streams.push(Stream {
                    playlist: None,
                    carries: carries(set, rep),
                    bandwidth: rep.attr("bandwidth").and_then(|b| b.parse().ok()),
                    group: Some(format!("{pi}/{ai}")),
                    audio: None,
                    subtitles: None,
                    period: pi,
                    files,
                });
            }
        }
    }
    Ok(out)
}

/// What a representation carries, by its set's or its own content type,
/// MIME type, codecs, or trick-mode property.
fn carries(set: &Node, rep: &Node) -> Carries {
    let trick = set
        .children("EssentialProperty")
        .chain(rep.children("EssentialProperty"))
        .any(|p| p.attr("schemeIdUri") == Some("http://dashif.org/guidelines/trickmode"));
    if trick {
        return Carries::IFrames;
    }
    let says = |n: &Node| {
        n.attr("contentType")
            .or_else(|| {
                n.attr("mimeType")
                    .map(|m| m.split('/').next().unwrap_or(""))
            })
            .map(str::to_owned)
    };
    match says(rep).or_else(|| says(set)).as_deref() {
        Some("audio") => Carries::Audio,
        Some("text") => Carries::Subtitles,
        Some("application") => {
            let codecs = rep.attr("codecs").or(set.attr("codecs")).unwrap_or("");
            if ["stpp", "wvtt", "ttml"].iter().any(|c| codecs.contains(c)) {
                Carries::Subtitles
            } else {
                Carries::Video
            }
        }
        _ => Carries::Video,
    }
}

/// One representation and what it inherits.
struct Context<'a> {
    rep: &'a Node,
    /// Where segment information is looked for, nearest first.
    levels: [Option<&'a Node>; 3],
    base: &'a Url,
    /// How long its period lasts, seconds.
    length: Option<f64>,
    dynamic: bool,
}

impl Context<'_> {
    /// An attribute of the nearest `element` (of the representation, its
    /// set, its period) that has it.
    fn inherited(&self, element: &str, attr: &str) -> Option<&str> {
        self.levels
            .iter()
            .flatten()
            .filter_map(|n| n.child(element))
            .find_map(|e| e.attr(attr))
    }

    /// The nearest `element`'s child `name`, if any level has one.
    fn inherited_child(&self, element: &str, name: &str) -> Option<&Node> {
        self.levels
            .iter()
            .flatten()
            .filter_map(|n| n.child(element))
            .find_map(|e| e.child(name))
    }

    fn has(&self, element: &str) -> bool {
        self.levels
            .iter()
            .flatten()
            .any(|n| n.child(element).is_some())
    }

    fn push(&self, files: &mut Vec<(Url, Role)>, count: &mut usize, uri: &str, role: Role) -> bool {
        match self.base.join(uri.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => push_file(files, count, u, role),
            _ => true,
        }
    }

    /// Its files; false when the outline filled up.
    fn files(&self, files: &mut Vec<(Url, Role)>, count: &mut usize) -> bool {
        if self.has("SegmentTemplate") {
            return self.template(files, count);
        }
        if self.has("SegmentList") {
            if let Some(init) = self.inherited_child("SegmentList", "Initialization") {
                if let Some(src) = init.attr("sourceURL") {
                    if !self.push(files, count, src, Role::Init) {
                        return false;
                    }
                }
            }
            let list = self
                .levels
                .iter()
                .flatten()
                .find_map(|n| n.child("SegmentList"));
            for s in list.into_iter().flat_map(|l| l.children("SegmentURL")) {
                let ok = match s.attr("media") {
                    Some(m) => self.push(files, count, m, Role::Segment),
                    // No `media`: the representation's own file, by range.
                    None => push_file(files, count, self.base.clone(), Role::Segment),
                };
                if !ok {
                    return false;
                }
            }
            return true;
        }
        // One file (SegmentBase, or nothing said): the BaseURL itself.
        if let Some(src) = self
            .inherited_child("SegmentBase", "Initialization")
            .and_then(|i| i.attr("sourceURL"))
        {
            if !self.push(files, count, src, Role::Init) {
                return false;
            }
        }
        if self.base.path().ends_with('/') {
            return true; // names a directory, not a file
        }
        push_file(files, count, self.base.clone(), Role::Segment)
    }

    /// A `SegmentTemplate`'s files: its initialization and every segment
    /// its timeline or its duration names over the period.
    fn template(&self, files: &mut Vec<(Url, Role)>, count: &mut usize) -> bool {
        let id = self.rep.attr("id").unwrap_or("");
        let bandwidth = self.rep.attr("bandwidth").unwrap_or("0");
        let fill = |t: &str, number: u64, time: u64| expand(t, id, bandwidth, number, time);
        if let Some(init) = self.inherited("SegmentTemplate", "initialization") {
            if !self.push(files, count, &fill(init, 0, 0), Role::Init) {
                return false;
            }
        }
        let Some(media) = self.inherited("SegmentTemplate", "media") else {
            return true;
        };
        let number = |a: &str| {
            self.inherited("SegmentTemplate", a)
                .and_then(|v| v.parse::<u64>().ok())
        };
        let start = number("startNumber").unwrap_or(1);
        let timescale = number("timescale").filter(|t| *t > 0).unwrap_or(1);
        let end = self.length.map(|l| (l.max(0.0) * timescale as f64) as u64);
        if let Some(timeline) = self.inherited_child("SegmentTemplate", "SegmentTimeline") {
            let mut n = start;
            let mut t = 0u64;
            let ss: Vec<&Node> = timeline.children("S").collect();
            for (i, s) in ss.iter().enumerate() {
                let num = |a: &str| s.attr(a).and_then(|v| v.parse::<i64>().ok());
                if let Some(at) = num("t") {
                    t = at.max(0) as u64;
                }
                let Some(d) = num("d").filter(|d| *d > 0).map(|d| d as u64) else {
                    continue;
                };
                let r = num("r").unwrap_or(0);
                // r = -1: repeat until the next S's time or the period's end.
                let until = ss
                    .get(i + 1)
                    .and_then(|next| next.attr("t").and_then(|v| v.parse::<u64>().ok()))
                    .or(end);
                let repeats = if r < 0 {
                    match until {
                        Some(u) => u.saturating_sub(t).div_ceil(d),
                        None => 1,
                    }
                } else {
                    r as u64 + 1
                };
                for _ in 0..repeats {
                    if !self.push(files, count, &fill(media, n, t), Role::Segment) {
                        return false;
                    }
                    n += 1;
                    t = t.saturating_add(d);
                }
            }
            return true;
        }
        if self.dynamic {
            return true; // numbered by the clock
        }
        let (Some(d), Some(end)) = (number("duration").filter(|d| *d > 0), end) else {
            return true;
        };
        let segments = end.div_ceil(d);
        for i in 0..segments {
            if !self.push(files, count, &fill(media, start + i, i * d), Role::Segment) {
                return false;
            }
        }
        true
    }
}

/// A template with its identifiers filled (ISO/IEC 23009-1 5.3.9.4.4):
/// `$RepresentationID$`, `$Number$`, `$Bandwidth$`, `$Time$` (each with an
/// optional `%0Nd` width), `$$`. An unknown identifier stays as written.
fn expand(template: &str, id: &str, bandwidth: &str, number: u64, time: u64) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('$') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let ident = &after[..j];
        let (name, format) = ident.split_once('%').unwrap_or((ident, ""));
        let width = format
            .strip_prefix('0')
            .and_then(|f| f.strip_suffix('d'))
            .and_then(|w| w.parse::<usize>().ok())
            .unwrap_or(0)
            .min(32);
        let padded = |v: u64| format!("{v:0width$}");
        match name {
            "" => out.push('$'),
            "RepresentationID" => out.push_str(id),
            "Number" => out.push_str(&padded(number)),
            "Time" => out.push_str(&padded(time)),
            "Bandwidth" => out.push_str(&padded(bandwidth.parse().unwrap_or(0))),
            _ => {
                out.push('$');
                out.push_str(ident);
                out.push('$');
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://o.lan/film/manifest.mpd?k=1").unwrap()
    }

    fn paths(files: &[(Url, Role)]) -> Vec<String> {
        files.iter().map(|(u, _)| u.path().to_owned()).collect()
    }

    #[test]
    fn template_identifiers() {
        assert_eq!(
            expand("c-$RepresentationID$-$Number%05d$.m4s", "v0", "1", 7, 0),
            "c-v0-00007.m4s"
        );
        assert_eq!(
            expand("$Time$_$Bandwidth$$$x", "a", "800", 0, 90),
            "90_800$x"
        );
        assert_eq!(expand("$Unknown$-$Number$", "a", "0", 3, 0), "$Unknown$-3");
        assert_eq!(expand("open$Number", "a", "0", 3, 0), "open$Number");
    }

    /// The shape ffmpeg's dash muxer writes with `-use_timeline 0`.
    #[test]
    fn numbered_template_over_the_presentation() {
        let body = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT9.5S">
  <Period id="0" start="PT0.0S">
    <AdaptationSet id="0" contentType="video">
      <Representation id="0" mimeType="video/mp4" bandwidth="800000">
        <SegmentTemplate timescale="1000000" duration="2000000" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1"/>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio">
      <Representation id="1" mimeType="audio/mp4" bandwidth="128000">
        <SegmentTemplate timescale="1000000" duration="2000000" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;
        let o = outline(body, &base()).unwrap();
        assert_eq!(o.duration_secs, Some(9.5));
        assert_eq!(o.streams.len(), 2);
        let v = &o.streams[0];
        assert_eq!((v.carries, v.bandwidth), (Carries::Video, Some(800_000)));
        assert_eq!(
            paths(&v.files),
            [
                "/film/init-stream0.m4s",
                "/film/chunk-stream0-00001.m4s",
                "/film/chunk-stream0-00002.m4s",
                "/film/chunk-stream0-00003.m4s",
                "/film/chunk-stream0-00004.m4s",
                "/film/chunk-stream0-00005.m4s",
            ]
        );
        assert_eq!(v.files[0].1, Role::Init);
        assert_eq!(o.streams[1].carries, Carries::Audio);
        assert_eq!(o.streams[1].files.len(), 6);
    }

    #[test]
    fn timeline_with_repeats_and_inherited_template() {
        let body = r#"<MPD type="static" mediaPresentationDuration="PT10S">
  <BaseURL>https://cdn.lan/assets/</BaseURL>
  <Period duration="PT10S">
    <AdaptationSet mimeType="video/mp4">
      <SegmentTemplate timescale="10" media="$RepresentationID$/$Time$.m4s" initialization="$RepresentationID$/init.mp4">
        <SegmentTimeline><S t="0" d="20" r="2"/><S d="10"/><S d="30" r="-1"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="hi" bandwidth="2000"/>
      <Representation id="lo" bandwidth="1000"><BaseURL>low/</BaseURL></Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;
        let o = outline(body, &base()).unwrap();
        assert_eq!(
            paths(&o.streams[0].files),
            [
                "/assets/hi/init.mp4",
                "/assets/hi/0.m4s",
                "/assets/hi/20.m4s",
                "/assets/hi/40.m4s",
                "/assets/hi/60.m4s",
                "/assets/hi/70.m4s"
            ]
        );
        assert_eq!(o.streams[0].files[1].0.host_str(), Some("cdn.lan"));
        assert_eq!(o.streams[1].files[1].0.path(), "/assets/low/lo/0.m4s");
    }

    #[test]
    fn segment_list_and_segment_base() {
        let body = r#"<MPD type="static" mediaPresentationDuration="PT4S"><Period>
  <AdaptationSet contentType="video">
    <Representation id="a" bandwidth="1">
      <SegmentList duration="2"><Initialization sourceURL="a/init.mp4"/>
        <SegmentURL media="a/1.m4s"/><SegmentURL media="a/2.m4s"/></SegmentList>
    </Representation>
  </AdaptationSet>
  <AdaptationSet mimeType="audio/mp4">
    <Representation id="b" bandwidth="2"><BaseURL>audio.mp4</BaseURL>
      <SegmentBase indexRange="0-99"><Initialization range="0-50"/></SegmentBase></Representation>
  </AdaptationSet>
  <AdaptationSet mimeType="application/mp4" codecs="stpp">
    <Representation id="c" bandwidth="3"><BaseURL>subs.mp4</BaseURL></Representation>
  </AdaptationSet>
</Period></MPD>"#;
        let o = outline(body, &base()).unwrap();
        assert_eq!(
            paths(&o.streams[0].files),
            ["/film/a/init.mp4", "/film/a/1.m4s", "/film/a/2.m4s"]
        );
        assert_eq!(paths(&o.streams[1].files), ["/film/audio.mp4"]);
        assert_eq!(o.streams[1].carries, Carries::Audio);
        assert_eq!(o.streams[2].carries, Carries::Subtitles);
        assert_eq!(o.file_count(), 5);
    }

    #[test]
    fn live_and_hostile_manifests() {
        let live = r#"<MPD type="dynamic"><Period><AdaptationSet contentType="video"><Representation id="v" bandwidth="1">
<SegmentTemplate duration="2" media="$Number$.m4s" initialization="init.mp4"/></Representation></AdaptationSet></Period></MPD>"#;
        let o = outline(live, &base()).unwrap();
        assert_eq!(
            paths(&o.streams[0].files),
            ["/film/init.mp4"],
            "numbered by the clock: not listed"
        );

        let huge = r#"<MPD type="static" mediaPresentationDuration="P9999D"><Period><AdaptationSet><Representation id="v">
<SegmentTemplate duration="1" media="$Number$.m4s"/></Representation></AdaptationSet></Period></MPD>"#;
        let o = outline(huge, &base()).unwrap();
        assert_eq!(o.file_count(), MAX_FILES);
        assert!(o.truncated);

        let timeline = r#"<MPD type="static"><Period><AdaptationSet><Representation id="v">
<SegmentTemplate media="$Time$.m4s"><SegmentTimeline><S t="0" d="1" r="999999999"/></SegmentTimeline></SegmentTemplate>
</Representation></AdaptationSet></Period></MPD>"#;
        assert!(outline(timeline, &base()).unwrap().truncated);

        assert!(outline("<html/>", &base()).is_err());
        assert!(outline("<MPD><Period>", &base()).is_err());
        let deep = format!("<MPD>{}", "<a>".repeat(100));
        assert!(outline(&deep, &base()).unwrap_err().contains("deeper"));
    }
}
