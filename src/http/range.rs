//! Byte-range requests (RFC 9110 §14).
//!
//! Parsing is a pure function of the header value and the representation's
//! size so that every rule is covered by the table of tests below. The HTTP
//! layer decides what to do with the outcome (200, 206, 416).

/// An inclusive byte range `[start, end]`, already clipped to the
/// representation's size, so `end < size` and `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// The `Content-Range` value for this range (RFC 9110 §14.4).
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, size)
    }
}

/// What a `Range` header asks for, judged against the representation's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: unknown unit or invalid syntax. RFC 9110 §14.2 lets a
    /// server ignore such a header, and players expect the whole body then.
    Ignore,
    /// At least one range is satisfiable; unsatisfiable ones are dropped.
    Ranges(Vec<ByteRange>),
    /// Syntactically valid, but no range overlaps the representation
    /// (RFC 9110 §15.5.17): answer 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parses a `Range` header value against a representation of `size` bytes.
/// A header with more than `max_ranges` ranges is ignored (RFC 9110 §14.2
/// lets a server ignore a request it finds abusive: the whole body is
/// sent). Overlapping and adjacent ranges are coalesced (§14.6 allows it),
/// so a response never holds a byte twice: `0-,0-,0-` is one range.
pub fn parse(header: &str, size: u64, max_ranges: usize) -> RangeRequest {
    let header = header.trim();
    // The unit is case-insensitive (RFC 9110 §14.1).
    let Some(eq) = header.find('=') else {
        return RangeRequest::Ignore;
    };
    if !header[..eq].trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Ignore;
    }
    let specs: Vec<&str> = header[eq + 1..]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if specs.is_empty() || specs.len() > max_ranges {
        return RangeRequest::Ignore;
    }
    let mut ranges = Vec::with_capacity(specs.len());
    for spec in specs {
        match parse_spec(spec) {
            None => return RangeRequest::Ignore,
            Some(spec) => {
                if let Some(r) = spec.resolve(size) {
                    ranges.push(r);
                }
            }
        }
    }
    if size == 0 {
        // A zero-length representation has no byte to point at; a 200 with
        // an empty body serves every player better than a 416 loop.
        return RangeRequest::Ignore;
    }
    if ranges.is_empty() {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Ranges(coalesce(ranges))
    }
}

/// Merges ranges that overlap or touch. The merged range takes the place of
/// the first of its members; the others keep the order they were asked in
/// (§14.6: parts in request order, except those coalesced).
fn coalesce(ranges: Vec<ByteRange>) -> Vec<ByteRange> {
    let touches = |a: ByteRange, b: ByteRange| {
        a.start <= b.end.saturating_add(1) && b.start <= a.end.saturating_add(1)
    };
    let mut out: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        // Every kept range the new one reaches, directly or through the
        // ranges it absorbs.
        let mut merged = r;
        let mut members: Vec<usize> = Vec::new();
        loop {
            let found = members.len();
            for (i, o) in out.iter().enumerate() {
                if !members.contains(&i) && touches(merged, *o) {
                    merged = ByteRange {
                        start: merged.start.min(o.start),
                        end: merged.end.max(o.end),
                    };
                    members.push(i);
                }
            }
            if members.len() == found {
                break;
            }
        }
        let Some(&at) = members.iter().min() else {
            out.push(merged);
            continue;
        };
        out = out
            .into_iter()
            .enumerate()
            .filter_map(|(i, o)| match (i == at, members.contains(&i)) {
                (true, _) => Some(merged),
                (false, true) => None,
                (false, false) => Some(o),
            })
            .collect();
    }
    out
}

/// The span a valid `Range` header asks for when that does not depend on
/// the size (no suffix ranges): the lowest first byte, and the highest last
/// byte when every range is closed. A cold media starts its first download
/// there, before its size is known.
pub fn first_span(header: &str) -> Option<(u64, Option<u64>)> {
    let (unit, specs) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut span: Option<(u64, Option<u64>)> = None;
    for spec in specs.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match parse_spec(spec)? {
            Spec::Int { first, last } => {
                span = Some(match span {
                    None => (first, last),
                    Some((a, b)) => (a.min(first), b.zip(last).map(|(b, l)| b.max(l))),
                });
            }
            Spec::Suffix(_) => return None,
        }
    }
    span
}

/// One `range-spec` before it meets the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last` or `first-` (last = None).
    Int { first: u64, last: Option<u64> },
    /// `-length`.
    Suffix(u64),
}

impl Spec {
    fn resolve(self, size: u64) -> Option<ByteRange> {
        match self {
            // §14.1.2: a last-pos at or past the end is clipped.
            Spec::Int { first, last } if first < size => Some(ByteRange {
                start: first,
                end: last.map_or(size - 1, |l| l.min(size - 1)),
            }),
            Spec::Int { .. } => None,
            // §14.1.3: "-0" is unsatisfiable; a suffix longer than the
            // representation selects all of it.
            Spec::Suffix(0) => None,
            Spec::Suffix(n) if size > 0 => Some(ByteRange {
                start: size - n.min(size),
                end: size - 1,
            }),
            Spec::Suffix(_) => None,
        }
    }
}

fn parse_spec(spec: &str) -> Option<Spec> {
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return Some(Spec::Suffix(parse_pos(last)?));
    }
    let first = parse_pos(first)?;
    if last.is_empty() {
        return Some(Spec::Int { first, last: None });
    }
    let last = parse_pos(last)?;
    // §14.1.1: a last-pos below first-pos makes the whole header invalid.
    (last >= first).then_some(Spec::Int {
        first,
        last: Some(last),
    })
}

/// Digits only; values past u64::MAX saturate, which keeps absurd numbers
/// meaningful (past any real end) instead of overflowing.
fn parse_pos(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn table() {
        use RangeRequest::*;
        let size = 1000;
        let cases: Vec<(&str, RangeRequest)> = vec![
            ("bytes=0-499", Ranges(vec![r(0, 499)])),
            ("bytes=500-999", Ranges(vec![r(500, 999)])),
            ("bytes=500-", Ranges(vec![r(500, 999)])),
            ("bytes=-500", Ranges(vec![r(500, 999)])),
            ("bytes=-1", Ranges(vec![r(999, 999)])),
            ("bytes=0-0", Ranges(vec![r(0, 0)])),
            ("bytes=999-999", Ranges(vec![r(999, 999)])),
            // last-pos past the end is clipped
            ("bytes=900-5000", Ranges(vec![r(900, 999)])),
            ("bytes=0-18446744073709551615", Ranges(vec![r(0, 999)])),
            (
                "bytes=0-99999999999999999999999999",
                Ranges(vec![r(0, 999)]),
            ),
            // a suffix longer than the file selects the whole file
            ("bytes=-5000", Ranges(vec![r(0, 999)])),
            ("bytes=-99999999999999999999999", Ranges(vec![r(0, 999)])),
            // unit is case-insensitive, whitespace around specs tolerated
            ("BYTES=0-1", Ranges(vec![r(0, 1)])),
            ("bytes= 0-1 , 5-6", Ranges(vec![r(0, 1), r(5, 6)])),
            ("bytes=0-1,,5-6", Ranges(vec![r(0, 1), r(5, 6)])),
            // multi-range, kept in request order
            (
                "bytes=0-9,20-29,-10",
                Ranges(vec![r(0, 9), r(20, 29), r(990, 999)]),
            ),
            // unsatisfiable members are dropped when another one is fine
            ("bytes=2000-3000,0-1", Ranges(vec![r(0, 1)])),
            // unsatisfiable
            ("bytes=1000-", Unsatisfiable),
            ("bytes=1000-2000", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=18446744073709551615-", Unsatisfiable),
            ("bytes=99999999999999999999999-", Unsatisfiable),
            ("bytes=5000-6000,-0", Unsatisfiable),
            // invalid or unknown: ignored, the whole body is sent
            ("items=0-1", Ignore),
            ("bytes", Ignore),
            ("bytes=", Ignore),
            ("bytes=-", Ignore),
            ("bytes=a-b", Ignore),
            ("bytes=1-a", Ignore),
            ("bytes=+1-2", Ignore),
            ("bytes=5-4", Ignore),
            ("bytes=0-1,5-4", Ignore),
            ("bytes=0x10-20", Ignore),
            ("bytes=1--2", Ignore),
            ("bytes 0-1", Ignore),
            ("", Ignore),
        ];
        for (header, want) in cases {
            assert_eq!(parse(header, size, 16), want, "header {header:?}");
        }
    }

    #[test]
    fn too_many_ranges_are_ignored() {
        let max = 16;
        let many: Vec<String> = (0..=max).map(|i| format!("{0}-{0}", 2 * i)).collect();
        let header = format!("bytes={}", many.join(","));
        assert_eq!(parse(&header, 1000, max), RangeRequest::Ignore);
        let header = format!("bytes={}", many[..max].join(","));
        assert!(matches!(parse(&header, 1000, max), RangeRequest::Ranges(v) if v.len() == max));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_are_coalesced() {
        use RangeRequest::Ranges;
        let r = |start, end| ByteRange { start, end };
        let cases = [
            ("bytes=0-,0-,0-,0-", Ranges(vec![r(0, 999)])),
            ("bytes=0-9,10-19", Ranges(vec![r(0, 19)])),
            ("bytes=0-9,5-14,-1", Ranges(vec![r(0, 14), r(999, 999)])),
            // Request order kept for ranges not merged.
            (
                "bytes=50-59,0-9,20-29",
                Ranges(vec![r(50, 59), r(0, 9), r(20, 29)]),
            ),
            // A later range bridging two earlier ones merges all three.
            ("bytes=0-9,20-29,10-19", Ranges(vec![r(0, 29)])),
            ("bytes=40-49,0-9,5-45", Ranges(vec![r(0, 49)])),
            ("bytes=-500,0-", Ranges(vec![r(0, 999)])),
            ("bytes=0-9,11-19", Ranges(vec![r(0, 9), r(11, 19)])),
        ];
        for (header, want) in cases {
            assert_eq!(parse(header, 1000, 16), want, "header {header:?}");
        }
        // However many ranges, the bytes sent never exceed the size.
        let all = vec!["0-"; 16].join(",");
        let RangeRequest::Ranges(v) = parse(&format!("bytes={all}"), 1000, 16) else {
            panic!("ranges");
        };
        assert_eq!(v.iter().map(|r| r.len()).sum::<u64>(), 1000);
    }

    #[test]
    fn first_span_before_the_size_is_known() {
        assert_eq!(first_span("bytes=100-200"), Some((100, Some(200))));
        assert_eq!(first_span("bytes=100-"), Some((100, None)));
        assert_eq!(first_span("bytes=500-600, 100-200"), Some((100, Some(600))));
        assert_eq!(first_span("bytes=500-, 100-200"), Some((100, None)));
        assert_eq!(first_span("bytes=-100"), None);
        assert_eq!(first_span("bytes=0-1,-100"), None);
        assert_eq!(first_span("items=0-1"), None);
        assert_eq!(first_span("bytes=5-4"), None);
    }

    #[test]
    fn empty_representation_ignores_ranges() {
        assert_eq!(parse("bytes=0-", 0, 16), RangeRequest::Ignore);
        assert_eq!(parse("bytes=-5", 0, 16), RangeRequest::Ignore);
    }

    #[test]
    fn content_range_and_len() {
        let b = r(10, 19);
        assert_eq!(b.len(), 10);
        assert_eq!(b.content_range(100), "bytes 10-19/100");
    }

    // Property tests (a fuzzer on stable Rust): run with more cases by
    // scripts/fuzz. Whatever the header, the parser must not panic, and
    // what it returns must be within the size, ordered, coalesced and
    // never more bytes than the representation.
    proptest::proptest! {
        #[test]
        fn fuzz_range_parser(
            header in "(bytes|BYTES|items)?=?[-0-9, ]{0,40}|bytes=[0-9]{0,25}-[0-9]{0,25}(,[0-9]{0,5}-[0-9]{0,5}){0,20}|.{0,60}",
            size in proptest::prop_oneof![0u64..2000, proptest::num::u64::ANY],
            max in 1usize..32,
        ) {
            match parse(&header, size, max) {
                RangeRequest::Ranges(v) => {
                    proptest::prop_assert!(!v.is_empty() && v.len() <= max);
                    let mut total = 0u128;
                    for r in &v {
                        proptest::prop_assert!(r.start <= r.end && r.end < size);
                        total += u128::from(r.len());
                    }
                    proptest::prop_assert!(total <= u128::from(size));
                    for (i, a) in v.iter().enumerate() {
                        for b in &v[i + 1..] {
                            let apart = a.end.saturating_add(1) < b.start
                                || b.end.saturating_add(1) < a.start;
                            proptest::prop_assert!(apart, "{a:?} and {b:?} overlap or touch");
                        }
                    }
                }
                RangeRequest::Ignore | RangeRequest::Unsatisfiable => {}
            }
            if let Some((first, last)) = first_span(&header) {
                proptest::prop_assert!(last.is_none_or(|l| first <= l));
            }
        }
    }
}
