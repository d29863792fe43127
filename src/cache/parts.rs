//! What a response body is made of (literal bytes and media ranges) and
//! whom it is for (the player's address, when its request arrived, its
//! connection's file pieces).

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::store::outbox::Outbox;

/// An inclusive byte range `[start, end]` of a media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: u64,
    pub end: u64,
}

/// One part of a body: literal bytes (multipart framing) or a media range.
pub(crate) enum BodyPart {
    Literal(Bytes),
    Range(Span),
}

/// Who a body is for: the player's address (for its title session),
/// when its request arrived (for the time to its first byte) and, when
/// its connection sends chunk files itself, where their pieces go.
#[derive(Debug, Clone)]
pub(crate) struct Player {
    pub addr: Option<IpAddr>,
    pub since: Instant,
    pub outbox: Option<Outbox>,
}

impl Player {
    /// A body spool reads for itself (warming): no address, from now.
    pub fn none() -> Player {
        Player {
            addr: None,
            since: Instant::now(),
            outbox: None,
        }
    }
}
