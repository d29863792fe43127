//! A title's outline: what one playlist or manifest names, as files and
//! streams, so the cache can tell which media form one title and a
//! prefetch can fetch a whole rendition. Pure; `hls::outline` and
//! `mpd::outline` fill it.

use url::Url;

/// Most files one playlist or manifest may name in its outline; past it
/// the outline is cut (and says so). A 4 MiB HLS playlist names fewer; a
/// DASH template could name billions.
pub(crate) const MAX_FILES: usize = 100_000;

/// What a file is to its title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Segment,
    /// A decryption key (`EXT-X-KEY`, `EXT-X-SESSION-KEY`).
    Key,
    /// An initialization section (`EXT-X-MAP`, DASH `Initialization`).
    Init,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Segment => "segment",
            Role::Key => "key",
            Role::Init => "init",
        }
    }
}

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carries {
    /// Video, or audio and video: an HLS variant, a DASH video
    /// representation.
    Video,
    Audio,
    Subtitles,
    /// Trick-play streams (`EXT-X-I-FRAME-STREAM-INF`, DASH trick mode).
    IFrames,
}

/// One rendition of a title.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stream {
    /// Its own playlist (HLS); None when its files are listed here (DASH).
    pub playlist: Option<Url>,
    pub carries: Carries,
    pub bandwidth: Option<u64>,
    /// The group it belongs to: an HLS rendition's `GROUP-ID`, a DASH
    /// adaptation set.
    pub group: Option<String>,
    /// The audio and subtitle groups an HLS variant plays with.
    pub audio: Option<String>,
    pub subtitles: Option<String>,
    /// The DASH period it belongs to (0 for HLS).
    pub period: usize,
    /// Its files, when the outline lists them (DASH).
    pub files: Vec<(Url, Role)>,
}

impl Stream {
    /// The stream's name in its title: its playlist's URL, or (DASH) its
    /// first file's.
    pub fn name(&self) -> Option<&Url> {
        self.playlist
            .as_ref()
            .or_else(|| self.files.first().map(|(u, _)| u))
    }
}

/// What one playlist or manifest names.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Outline {
    /// Renditions (an HLS master's variants and renditions, a DASH
    /// manifest's representations).
    pub streams: Vec<Stream>,
    /// Files the playlist names itself (an HLS media playlist's segments,
    /// keys and initialization sections; a master's session keys), each
    /// once, in order.
    pub files: Vec<(Url, Role)>,
    /// How long it plays, when it says (the sum of an HLS media
    /// playlist's segments, a DASH `mediaPresentationDuration`).
    pub duration_secs: Option<f64>,
    /// Files past `MAX_FILES` were left out.
    pub truncated: bool,
}

impl Outline {
    /// How many files it names, its streams' included.
    pub fn file_count(&self) -> usize {
        self.files.len() + self.streams.iter().map(|s| s.files.len()).sum::<usize>()
    }

    /// The streams `choice` picks, with what they play with: for each
    /// period, the video streams chosen (all of them for `All`), the HLS
    /// renditions of the audio and subtitle groups those use, and from
    /// every other group (DASH audio and text sets) the stream chosen the
    /// same way. Trick-play streams only for `All`. Without video streams
    /// (an audio-only master), the audio streams are chosen among.
    pub fn choose(&self, choice: Variant) -> Vec<&Stream> {
        if choice == Variant::All {
            return self.streams.iter().collect();
        }
        let mut out: Vec<&Stream> = Vec::new();
        let periods = self
            .streams
            .iter()
            .map(|s| s.period)
            .max()
            .map_or(0, |p| p + 1);
        for period in 0..periods {
            let here: Vec<&Stream> = self.streams.iter().filter(|s| s.period == period).collect();
            let lead = if here.iter().any(|s| s.carries == Carries::Video) {
                Carries::Video
            } else {
                Carries::Audio
            };
            let leads: Vec<&Stream> = here
                .iter()
                .copied()
                .filter(|s| s.carries == lead && (lead == Carries::Video || s.group.is_none()))
                .collect();
            let leads = if leads.is_empty() {
                // Audio-only, all in groups (DASH): the groups below pick.
                Vec::new()
            } else {
                vec![pick(&leads, choice)]
            };
            // The HLS groups the chosen variants play with.
            let named: Vec<&str> = leads
                .iter()
                .flat_map(|s| [s.audio.as_deref(), s.subtitles.as_deref()])
                .flatten()
                .collect();
            out.extend(leads.iter().copied());
            let mut groups: Vec<&str> = Vec::new();
            for s in &here {
                if s.carries == Carries::IFrames || (s.carries == lead && s.group.is_none()) {
                    continue;
                }
                if s.carries == Carries::Video && lead == Carries::Video {
                    continue; // other video streams: not chosen
                }
                let Some(g) = s.group.as_deref() else {
                    continue;
                };
                if groups.contains(&g) {
                    continue;
                }
                groups.push(g);
                let members: Vec<&Stream> = here
                    .iter()
                    .copied()
                    .filter(|m| m.group.as_deref() == Some(g) && m.carries == s.carries)
                    .collect();
                if s.playlist.is_some() {
                    // HLS: a rendition group the chosen variants use, whole.
                    if named.contains(&g) {
                        out.extend(members);
                    }
                } else {
                    // DASH: one stream of each other set.
                    out.push(pick(&members, choice));
                }
            }
        }
        out
    }
}

/// The stream of `streams` (not empty) that `choice` names: the largest
/// bandwidth, the smallest, or the largest not above a figure (the
/// smallest when all are above it).
fn pick<'a>(streams: &[&'a Stream], choice: Variant) -> &'a Stream {
    let bw = |s: &&&Stream| s.bandwidth.unwrap_or(0);
    let best = || *streams.iter().max_by_key(bw).expect("not empty");
    let worst = || *streams.iter().min_by_key(bw).expect("not empty");
    match choice {
        Variant::Best | Variant::All => best(),
        Variant::Worst => worst(),
        Variant::Bandwidth(b) => streams
            .iter()
            .copied()
            .filter(|s| s.bandwidth.unwrap_or(0) <= b)
            .max_by_key(|s| s.bandwidth.unwrap_or(0))
            .unwrap_or_else(worst),
    }
}

/// Which renditions of a title a prefetch fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Best,
    Worst,
    All,
    /// The best not above this many bits a second.
    Bandwidth(u64),
}

impl std::str::FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Variant, String> {
        Ok(match s {
            "best" => Variant::Best,
            "worst" => Variant::Worst,
            "all" => Variant::All,
            n => Variant::Bandwidth(n.parse().map_err(|_| {
                format!(
                    "{n:?} is not a variant: best, worst, all or a bandwidth in bits per second"
                )
            })?),
        })
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Variant::Best => f.write_str("best"),
            Variant::Worst => f.write_str("worst"),
            Variant::All => f.write_str("all"),
            Variant::Bandwidth(b) => write!(f, "{b}"),
        }
    }
}

/// Adds `url` to `files` unless it is there already or the outline is
/// full; false when it was full.
pub(crate) fn push_file(
    files: &mut Vec<(Url, Role)>,
    count: &mut usize,
    url: Url,
    role: Role,
) -> bool {
    if *count >= MAX_FILES {
        return false;
    }
    if files.last().is_some_and(|(u, _)| *u == url)
        || files.iter().rev().take(8).any(|(u, _)| *u == url)
    {
        return true;
    }
    files.push((url, role));
    *count += 1;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, carries: Carries, bw: Option<u64>, group: Option<&str>) -> Stream {
        Stream {
            playlist: Some(Url::parse(&format!("http://o/{name}")).unwrap()),
            carries,
            bandwidth: bw,
            group: group.map(str::to_owned),
            audio: None,
            subtitles: None,
            period: 0,
            files: Vec::new(),
        }
    }

    fn names(v: Vec<&Stream>) -> Vec<String> {
        v.iter()
            .map(|s| s.name().unwrap().path()[1..].to_owned())
            .collect()
    }

    #[test]
    fn hls_master_choices_take_their_groups() {
        let mut lo = stream("lo", Carries::Video, Some(500_000), None);
        lo.audio = Some("aac".into());
        let mut hi = stream("hi", Carries::Video, Some(3_000_000), None);
        hi.audio = Some("aac".into());
        hi.subtitles = Some("subs".into());
        let o = Outline {
            streams: vec![
                lo,
                hi,
                stream("mid", Carries::Video, Some(1_000_000), None),
                stream("en", Carries::Audio, None, Some("aac")),
                stream("de", Carries::Audio, None, Some("aac")),
                stream("ac3", Carries::Audio, None, Some("surround")),
                stream("sub-en", Carries::Subtitles, None, Some("subs")),
                stream("iframes", Carries::IFrames, Some(90_000), None),
            ],
            ..Outline::default()
        };
        assert_eq!(names(o.choose(Variant::Best)), ["hi", "en", "de", "sub-en"]);
        assert_eq!(names(o.choose(Variant::Worst)), ["lo", "en", "de"]);
        assert_eq!(names(o.choose(Variant::Bandwidth(1_500_000))), ["mid"]);
        assert_eq!(names(o.choose(Variant::Bandwidth(10))), ["lo", "en", "de"]);
        assert_eq!(o.choose(Variant::All).len(), 8);
    }

    #[test]
    fn dash_choices_take_one_of_each_other_set() {
        let mut s = vec![
            stream("v1", Carries::Video, Some(1_000), Some("0")),
            stream("v2", Carries::Video, Some(2_000), Some("0")),
            stream("a1", Carries::Audio, Some(64), Some("1")),
            stream("a2", Carries::Audio, Some(128), Some("1")),
            stream("t", Carries::Subtitles, None, Some("2")),
        ];
        for x in &mut s {
            x.files = vec![(x.playlist.take().unwrap(), Role::Segment)];
        }
        let o = Outline {
            streams: s,
            ..Outline::default()
        };
        assert_eq!(names(o.choose(Variant::Best)), ["v2", "a2", "t"]);
        assert_eq!(names(o.choose(Variant::Worst)), ["v1", "a1", "t"]);
    }

    #[test]
    fn audio_only_masters_choose_among_audio() {
        let o = Outline {
            streams: vec![
                stream("a64", Carries::Audio, Some(64_000), None),
                stream("a256", Carries::Audio, Some(256_000), None),
            ],
            ..Outline::default()
        };
        assert_eq!(names(o.choose(Variant::Best)), ["a256"]);
        assert_eq!(names(o.choose(Variant::Worst)), ["a64"]);
    }

    #[test]
    fn variant_parses() {
        assert_eq!("best".parse(), Ok(Variant::Best));
        assert_eq!("all".parse(), Ok(Variant::All));
        assert_eq!("800000".parse(), Ok(Variant::Bandwidth(800_000)));
        assert!("fast"
            .parse::<Variant>()
            .unwrap_err()
            .contains("best, worst, all"));
    }
}
