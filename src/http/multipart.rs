//! `multipart/byteranges` framing (RFC 9110 §14.6).

use bytes::Bytes;

use super::range::ByteRange;
use crate::cache::body::{BodyPart, Span};

/// The content type, the parts to send, and the exact total length of a
/// multipart answer to several ranges.
pub(crate) fn multipart(
    ranges: &[ByteRange],
    content_type: &str,
    size: u64,
) -> (String, Vec<BodyPart>, u64) {
    let boundary = format!("spool-{:016x}", rand::random::<u64>());
    let mut parts = Vec::new();
    let mut length = 0u64;
    for r in ranges {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
            r.content_range(size)
        );
        length += head.len() as u64 + r.len();
        parts.push(BodyPart::Literal(Bytes::from(head)));
        parts.push(BodyPart::Range(span(r)));
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    length += tail.len() as u64;
    parts.push(BodyPart::Literal(Bytes::from(tail)));
    (
        format!("multipart/byteranges; boundary={boundary}"),
        parts,
        length,
    )
}

pub(crate) fn span(r: &ByteRange) -> Span {
    Span {
        start: r.start,
        end: r.end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_length_is_exact() {
        let ranges = [
            ByteRange { start: 0, end: 9 },
            ByteRange { start: 20, end: 24 },
        ];
        let (ctype, parts, length) = multipart(&ranges, "video/mp4", 100);
        assert!(ctype.starts_with("multipart/byteranges; boundary=spool-"));
        let total: u64 = parts
            .iter()
            .map(|p| match p {
                BodyPart::Literal(b) => b.len() as u64,
                BodyPart::Range(r) => r.end - r.start + 1,
            })
            .sum();
        assert_eq!(total, length);
        assert_eq!(parts.len(), 5);
    }
}
