//! The container walkers, on fixtures made by ffmpeg and on arbitrary
//! bytes.

// A single index range is the expected answer in most tests.
#![allow(clippy::single_range_in_vec_init)]

use std::time::Duration;

use super::mkv::*;
use super::scan::*;
use super::sniff::*;
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Where `pattern` last occurs: found by a plain byte search, not by
/// the parser under test.
fn rfind(file: &[u8], pattern: &[u8]) -> u64 {
    let i = file.windows(pattern.len()).rposition(|w| w == pattern);
    i.expect("pattern in fixture") as u64
}

/// The `moov` box, found by searching for its type: (start, end).
fn moov(file: &[u8]) -> (u64, u64) {
    let start = rfind(file, b"moov") - 4;
    let i = start as usize;
    let size = u32::from_be_bytes(file[i..i + 4].try_into().unwrap());
    (start, start + u64::from(size))
}

fn about_two_seconds(d: Option<Duration>) -> bool {
    // Within one frame at 25 frames a second.
    d.is_some_and(|d| d.abs_diff(Duration::from_secs(2)) <= Duration::from_millis(40))
}

/// What every answer must keep, whatever the input.
fn assert_sane(l: &Layout, head: usize, size: u64) {
    let mut total = 0;
    for (i, r) in l.index.iter().enumerate() {
        assert!(r.start < r.end && r.end <= size, "{r:?} outside 0..{size}");
        assert!(r.start >= head as u64, "{r:?} overlaps the head 0..{head}");
        if let Some(next) = l.index.get(i + 1) {
            assert!(r.end < next.start, "{r:?} and {next:?} not sorted apart");
        }
        total += r.end - r.start;
    }
    assert!(total <= MAX_INDEX_BYTES && l.index.len() <= MAX_RANGES);
    if let Some(m) = &l.more {
        assert!(
            m.range.start < m.range.end && m.range.end <= size,
            "{:?}",
            m.range
        );
        assert!(m.scan.steps < MAX_STEPS);
    }
}

#[test]
fn mp4_with_moov_at_the_end() {
    let file = fixture("tail.mp4");
    let size = file.len() as u64;
    let (start, end) = moov(&file);
    assert_eq!(end, size, "the fixture ends with its moov");
    assert!(start > 16 << 10, "the moov lies beyond the heads tried");
    // The mdat header is in each head: its size tells where moov is.
    for head in [64, 4096, 16 << 10] {
        let l = sniff(&file[..head], size);
        assert_sane(&l, head, size);
        assert_eq!(l.kind, Kind::Mp4);
        assert_eq!(l.index, vec![start..size], "head {head}");
        assert!(l.more.is_none() && !l.fragmented && l.duration.is_none());
    }
    // The index region alone gives the duration.
    assert!(about_two_seconds(duration(&file[start as usize..])));
    // With the whole file in hand there is nothing left to fetch.
    let l = sniff(&file, size);
    assert!(l.index.is_empty() && l.more.is_none());
    assert!(about_two_seconds(l.duration));
    assert!(about_two_seconds(duration(&file)));
}

#[test]
fn mp4_with_moov_first() {
    let file = fixture("faststart.mp4");
    let size = file.len() as u64;
    let (start, end) = moov(&file);
    assert!(start < 64 && end > 1024 && end < 4096);
    let l = sniff(&file[..4096], size);
    assert_sane(&l, 4096, size);
    assert_eq!(
        (l.kind, l.index.is_empty(), l.more),
        (Kind::Mp4, true, None)
    );
    assert!(about_two_seconds(l.duration));
    // A head that cuts the moov: the rest of it is the index.
    let l = sniff(&file[..1024], size);
    assert_eq!(l.index, vec![1024..end]);
    assert!(
        about_two_seconds(l.duration),
        "mvhd comes first in the moov"
    );
}

#[test]
fn fragmented_mp4_keeps_its_index_in_front() {
    let file = fixture("fragmented.mp4");
    let size = file.len() as u64;
    assert!(
        rfind(&file, b"mfra") > 4096,
        "an mfra at the end, not reported"
    );
    let l = sniff(&file[..4096], size);
    assert_sane(&l, 4096, size);
    assert_eq!(l.kind, Kind::Mp4);
    assert!(l.fragmented && l.index.is_empty() && l.more.is_none());
    // An empty moov does not know the duration.
    assert_eq!(l.duration, None);
}

#[test]
fn matroska_and_webm_cues_at_the_end() {
    for name in ["video.mkv", "video.webm"] {
        let file = fixture(name);
        let size = file.len() as u64;
        let cues = rfind(&file, &[0x1C, 0x53, 0xBB, 0x6B]);
        assert!(
            cues > 16 << 10,
            "{name}: the Cues lie beyond the heads tried"
        );
        for head in [1024, 4096, 16 << 10] {
            let l = sniff(&file[..head], size);
            assert_sane(&l, head, size);
            assert_eq!(l.kind, Kind::Matroska, "{name}");
            // The Cues are last: listed position to the end.
            assert_eq!(l.index, vec![cues..size], "{name}, head {head}");
            assert!(l.more.is_none() && !l.fragmented);
            assert!(about_two_seconds(l.duration), "{name}: {:?}", l.duration);
        }
        assert!(about_two_seconds(duration(&file)), "{name}");
        let l = sniff(&file, size);
        assert!(l.index.is_empty() && l.more.is_none(), "{name}");
    }
}

#[test]
fn a_head_too_short_asks_for_more() {
    // MP4: the ftyp is cut, so where the mdat starts is unknown.
    let file = fixture("tail.mp4");
    let size = file.len() as u64;
    let (start, _) = moov(&file);
    let l = sniff(&file[..20], size);
    assert_eq!((l.kind, l.index.is_empty()), (Kind::Mp4, true));
    let more = l.more.expect("a follow-up read");
    assert_eq!(more.range, 32..32 + MORE_BYTES);
    let r = more.range.start as usize..more.range.end as usize;
    let l = resume(&more, &file[r], size);
    assert_eq!(l.index, [start..size]);
    assert_eq!(l.more, None);

    // Matroska: the EBML header is cut.
    let file = fixture("video.webm");
    let size = file.len() as u64;
    let cues = rfind(&file, &[0x1C, 0x53, 0xBB, 0x6B]);
    let l = sniff(&file[..30], size);
    assert_eq!(l.kind, Kind::Matroska);
    let more = l.more.expect("a follow-up read");
    assert_eq!(more.range, 0..MORE_BYTES);
    let l = resume(&more, &file[..MORE_BYTES as usize], size);
    assert_eq!(l.index, [cues..size]);
    assert_eq!(l.more, None);
    assert!(about_two_seconds(l.duration));

    // Matroska: the SeekHead is cut; then the elements it lists
    // before the Clusters are beyond the head.
    let file = fixture("video.mkv");
    let size = file.len() as u64;
    let cues = rfind(&file, &[0x1C, 0x53, 0xBB, 0x6B]);
    let seekhead = rfind(&file[..100], &[0x11, 0x4D, 0x9B, 0x74]);
    let l = sniff(&file[..80], size);
    let more = l.more.expect("the rest of the SeekHead");
    assert_eq!(more.range.start, seekhead);
    assert!(more.range.end > 80 && more.range.end < 200);
    let r = more.range.start as usize..more.range.end as usize;
    let l = resume(&more, &file[r.clone()], size);
    assert_sane(&l, r.end, size);
    let more = l.more.expect("a walk on to the first Cluster");
    assert_eq!(more.range.start, r.end as u64);
    let r = more.range.start as usize..more.range.end as usize;
    let l = resume(&more, &file[r], size);
    assert_eq!(l.index, [cues..size]);
    assert_eq!(l.more, None);
    assert!(about_two_seconds(l.duration));

    // Nothing yet, or too little to tell.
    let l = sniff(&[], size);
    assert_eq!(l.kind, Kind::Unknown);
    assert_eq!(l.more.map(|m| m.range), Some(0..MORE_BYTES));
    assert_eq!(sniff(b"plain text, not media", size).more, None);
}

/// An MP4 box header.
fn mp4box(kind: &[u8; 4], size: u32) -> Vec<u8> {
    [&size.to_be_bytes()[..], kind].concat()
}

#[test]
fn mp4_box_sizes_64_bit_and_to_the_end() {
    let ftyp = [mp4box(b"ftyp", 16), vec![0; 8]].concat();
    // A 64-bit mdat size: the moov starts right after 5 GB of media.
    let mdat = [mp4box(b"mdat", 1), 5_000_000_016u64.to_be_bytes().to_vec()].concat();
    let head = [ftyp.clone(), mdat, vec![0; 100]].concat();
    let moov = 16 + 5_000_000_016;
    let l = sniff(&head, moov + 3000);
    assert_eq!(l.index, vec![moov..moov + 3000]);
    // A moov far larger than MAX_INDEX_BYTES is fetched only so far.
    let l = sniff(&head, moov + (1 << 40));
    assert_eq!(l.index, vec![moov..moov + MAX_INDEX_BYTES]);
    // An mdat of size 0 runs to the end: no moov after it.
    let head = [ftyp.clone(), mp4box(b"mdat", 0), vec![0; 100]].concat();
    let l = sniff(&head, 1 << 30);
    assert_eq!((l.kind, l.index, l.more), (Kind::Mp4, vec![], None));
    // A large box other than mdat: what follows it must be looked at.
    let head = [ftyp, mp4box(b"free", 100_000), vec![0; 100]].concat();
    let l = sniff(&head, 1 << 30);
    assert!(l.index.is_empty());
    assert_eq!(l.more.map(|m| m.range), Some(100_016..100_016 + MORE_BYTES));
    // A box claiming fewer bytes than its own header ends the walk.
    let l = sniff(&[mp4box(b"ftyp", 4), vec![0; 100]].concat(), 1 << 30);
    assert_eq!((l.kind, l.index, l.more), (Kind::Unknown, vec![], None));
}

#[test]
fn mvhd_versions_and_timescale() {
    let mvhd = |version: u8, body: &[u8]| {
        let full = [&[version, 0, 0, 0][..], body].concat();
        let b = [mp4box(b"mvhd", 8 + full.len() as u32), full].concat();
        [mp4box(b"moov", 8 + b.len() as u32), b].concat()
    };
    // Version 0: 90 s at 1000 units a second.
    let v0 = [
        [0u8; 8].as_slice(),
        &1000u32.to_be_bytes(),
        &90_000u32.to_be_bytes(),
    ]
    .concat();
    assert_eq!(duration(&mvhd(0, &v0)), Some(Duration::from_secs(90)));
    // Version 1: 64-bit times, 2.5 s at 48 kHz.
    let v1 = [
        [0u8; 16].as_slice(),
        &48_000u32.to_be_bytes(),
        &120_000u64.to_be_bytes(),
    ]
    .concat();
    assert_eq!(duration(&mvhd(1, &v1)), Some(Duration::from_millis(2500)));
    // A zero timescale, an unknown (all ones) or cut duration: none.
    let zero = [
        [0u8; 8].as_slice(),
        &0u32.to_be_bytes(),
        &9u32.to_be_bytes(),
    ]
    .concat();
    assert_eq!(duration(&mvhd(0, &zero)), None);
    let unknown = [[0u8; 8].as_slice(), &1000u32.to_be_bytes(), &[0xFF; 4]].concat();
    assert_eq!(duration(&mvhd(0, &unknown)), None);
    assert_eq!(duration(&mvhd(1, &v1[..20])), None);
}

#[test]
fn matroska_info_duration_and_scale() {
    // Info { TimestampScale 1000 (µs), Duration 2500000.0 as f32 }.
    let mut info = vec![0x2A, 0xD7, 0xB1, 0x82, 0x03, 0xE8, 0x44, 0x89, 0x84];
    info.extend(2_500_000f32.to_be_bytes());
    let element = [
        &[0x15, 0x49, 0xA9, 0x66, 0x80 | info.len() as u8][..],
        &info,
    ]
    .concat();
    assert_eq!(duration(&element), Some(Duration::from_millis(2500)));
    // Without a scale, the default 1 ms; an 8-byte float.
    let mut info = vec![0x44, 0x89, 0x88];
    info.extend(1500f64.to_be_bytes());
    let element = [
        &[0x15, 0x49, 0xA9, 0x66, 0x80 | info.len() as u8][..],
        &info,
    ]
    .concat();
    assert_eq!(duration(&element), Some(Duration::from_millis(1500)));
    // NaN, negative: none.
    for bad in [f64::NAN, -1.0, f64::INFINITY] {
        let mut info = vec![0x44, 0x89, 0x88];
        info.extend(bad.to_be_bytes());
        let element = [&[0x15, 0x49, 0xA9, 0x66, 0x8B][..], &info].concat();
        assert_eq!(duration(&element), None);
    }
}

/// A Matroska element with an 8-byte size.
fn element(id: &[u8], body: &[u8]) -> Vec<u8> {
    let size = (body.len() as u64 | 1 << 56).to_be_bytes();
    [id, &size, body].concat()
}

#[test]
fn matroska_seekhead_targets() {
    let seek = |id: &[u8], pos: u64| {
        let body = [
            element(&[0x53, 0xAB], id),
            element(&[0x53, 0xAC], &pos.to_be_bytes()),
        ];
        element(&[0x4D, 0xBB], &body.concat())
    };
    let seekhead = [
        seek(&[0x1C, 0x53, 0xBB, 0x6B], 100_000),    // Cues
        seek(&[0x1F, 0x43, 0xB6, 0x75], 50_000),     // a Cluster: not index
        seek(&[0x12, 0x54, 0xC3, 0x67], 100_500),    // Tags
        seek(&[0x10, 0x43, 0xA7, 0x70], 10_000_000), // beyond the Segment
    ]
    .concat();
    let info = [
        element(&[0x2A, 0xD7, 0xB1], &[0x0F, 0x42, 0x40]),
        element(&[0x44, 0x89], &60_000f64.to_be_bytes()),
    ]
    .concat();
    let head = [
        element(&EBML_MAGIC, &element(&[0x42, 0x82], b"webm")),
        [0x18, 0x53, 0x80, 0x67, 0x01, 0, 0, 0, 0, 0x03, 0x0D, 0x40].to_vec(), // 200_000
        element(&[0x11, 0x4D, 0x9B, 0x74], &seekhead),
        element(&[0x15, 0x49, 0xA9, 0x66], &info),
        [0x1F, 0x43, 0xB6, 0x75, 0x01, 0, 0, 0, 0, 0, 0xBF, 0x68].to_vec(), // 49_000
    ]
    .concat();
    let segment = rfind(&head, &[0x18, 0x53, 0x80, 0x67]) + 12;
    // The file runs on past the Segment's end.
    let size = segment + 200_000 + 5000;
    let l = sniff(&head, size);
    assert_sane(&l, head.len(), size);
    // Cues up to the Tags listed after them, Tags up to the Segment's end.
    assert_eq!(l.index, vec![segment + 100_000..segment + 200_000]);
    assert_eq!(l.duration, Some(Duration::from_secs(60)));
}

#[test]
fn cues_come_first_within_the_budget() {
    let seek = |id: &[u8], pos: u64| {
        let body = [
            element(&[0x53, 0xAB], id),
            element(&[0x53, 0xAC], &pos.to_be_bytes()),
        ];
        element(&[0x4D, 0xBB], &body.concat())
    };
    // Attachments of 20 MB before the Clusters, the Cues after them.
    let seekhead = [
        seek(&[0x19, 0x41, 0xA4, 0x69], 200),
        seek(&[0x1C, 0x53, 0xBB, 0x6B], 30_000_000),
    ]
    .concat();
    let mut head = [
        element(&EBML_MAGIC, &element(&[0x42, 0x82], b"matroska")),
        [
            0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ]
        .to_vec(),
        element(&[0x11, 0x4D, 0x9B, 0x74], &seekhead),
    ]
    .concat();
    let segment = rfind(&head, &[0x18, 0x53, 0x80, 0x67]) + 12;
    let void = segment as usize + 200 - head.len() - 9;
    head.extend(element(&[0xEC], &vec![0; void]));
    let size = segment + 30_001_000;
    let attachments = (20_000_000u64 | 1 << 56).to_be_bytes();
    head.extend([&[0x19, 0x41, 0xA4, 0x69][..], &attachments, &[0; 100]].concat());
    let l = sniff(&head, size);
    assert_sane(&l, head.len(), size);
    let cues = segment + 30_000_000;
    assert!(l.index.iter().any(|r| r.start == cues), "{:?}", l.index);
    // The walk goes on past the Attachments to find the first Cluster.
    let more = l.more.expect("a walk on to the Clusters");
    assert_eq!(more.range.start, segment + 200 + 12 + 20_000_000);
}

#[test]
fn bitrate() {
    assert_eq!(
        bytes_per_second(27_882, Duration::from_secs(2)),
        Some(13_941)
    );
    assert_eq!(bytes_per_second(1, Duration::ZERO), None);
    assert_eq!(
        bytes_per_second(u64::MAX, Duration::from_nanos(1)),
        Some(u64::MAX)
    );
}

/// Runs `sniff`, then every follow-up it asks for with `bytes`.
fn sniff_all(head: &[u8], size: u64, more: &[u8]) {
    let mut l = sniff(head, size);
    assert_sane(&l, head.len(), size);
    let _ = duration(head);
    let mut steps = 0;
    while let Some(m) = l.more.take() {
        steps += 1;
        assert!(steps <= MAX_STEPS, "follow-ups never end");
        l = resume(&m, more, size);
        assert_sane(&l, head.len(), size);
    }
}

fn seeds() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![]),
        Just(EBML_MAGIC.to_vec()),
        Just(b"\0\0\0\x10ftypisom\0\0\0\0".to_vec()),
        Just(b"\0\0\0\x01mdat".to_vec()),
    ]
}

proptest! {
    #[test]
    fn fuzz_sniff(
        seed in seeds(),
        tail in proptest::collection::vec(any::<u8>(), 0..600),
        more in proptest::collection::vec(any::<u8>(), 0..200),
        size in prop_oneof![0u64..5000, any::<u64>()],
    ) {
        let head = [seed, tail].concat();
        sniff_all(&head, size, &more);
        let _ = duration(&more);
    }

    /// Real files cut anywhere: the head, the follow-up reads and the
    /// index ranges together hold the whole real index.
    #[test]
    fn any_cut_of_a_real_file_finds_its_index(which in 0usize..4, cut in 1usize..30_000) {
        let name = ["tail.mp4", "faststart.mp4", "video.mkv", "video.webm"][which];
        let file = fixture(name);
        let size = file.len() as u64;
        let index = match which {
            0 | 1 => { let (s, e) = moov(&file); s..e }
            _ => rfind(&file, &[0x1C, 0x53, 0xBB, 0x6B])..size,
        };
        let cut = cut.min(file.len());
        let mut l = sniff(&file[..cut], size);
        let mut have = vec![0..cut as u64];
        while let Some(m) = l.more.take() {
            let r = m.range.start as usize..m.range.end as usize;
            have.push(m.range.clone());
            l = resume(&m, &file[r], size);
        }
        have.extend(l.index.iter().cloned());
        for byte in index.clone() {
            prop_assert!(have.iter().any(|r| r.contains(&byte)), "{name}: byte {byte} of {index:?} missing; cut {cut}, got {have:?}");
        }
    }

    /// Real files with bytes changed and cut at any length: the parser
    /// goes deep into these.
    #[test]
    fn fuzz_mutated_fixtures(
        which in 0usize..5,
        cut in 0usize..30_000,
        changes in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        size in prop_oneof![Just(None), (0u64..100_000).prop_map(Some), any::<u64>().prop_map(Some)],
    ) {
        let name = ["tail.mp4", "faststart.mp4", "fragmented.mp4", "video.mkv", "video.webm"][which];
        let mut file = fixture(name);
        let size = size.unwrap_or(file.len() as u64);
        file.truncate(cut.max(1));
        let n = file.len();
        for (at, byte) in changes {
            // Mostly in the headers at the start, where parsing happens.
            file[at % n.min(if at % 2 == 0 { 700 } else { n })] = byte;
        }
        sniff_all(&file, size, &file);
        let _ = duration(&file);
    }
}
