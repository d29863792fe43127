//! Request bodies read whole, up to a limit: what the admin API and
//! `POST /sign` take in.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::StatusCode;

/// The request body, at most `limit` bytes; past it 413, and 400 when the
/// body cannot be read. Counted as it arrives, whatever Content-Length
/// said (or with none: a chunked body).
pub(crate) async fn read_limited<S, B>(body: S, limit: usize) -> Result<Bytes, (StatusCode, String)>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut out = BytesMut::new();
    while let Some(piece) = body.next().await {
        let mut piece = piece.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        })?;
        if out.len() + piece.remaining() > limit {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {limit} bytes"),
            ));
        }
        while piece.has_remaining() {
            let c = piece.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            piece.advance(n);
        }
    }
    Ok(out.freeze())
}
