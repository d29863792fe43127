//! The admin API's titles: `GET /api/titles` (a page of titles and lone
//! files), `GET /api/titles/{id}` (one title and its parts), pinning by
//! id or by URL. URLs are shown with their query redacted.

use http::StatusCode;
use warp::reply::Response;

use super::error::{json, json_error as error, status_of};
use crate::cache::admin::redacted;
use crate::cache::Cache;
use crate::store::summary::{PageQuery, Sort};
use crate::store::titles::{PartSummary, TitleSummary};

/// Most rows one page holds.
const MAX_PAGE: u64 = 1000;

/// A page's query string: `q` (a part of the URL, its query left out),
/// `sort` (recent, size, cached, url), `offset`, `limit` (at most 1000);
/// only `offset` and `limit` unless `sorted`. The page, and whether any
/// parameter was given; an error says which one is wrong.
pub(super) fn page_query(query: &str, sorted: bool) -> Result<(PageQuery, bool), String> {
    let mut q = PageQuery {
        search: None,
        sort: Sort::Recent,
        offset: 0,
        limit: 100,
    };
    let mut given = false;
    let number = |k: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{k} must be a whole number, not {v:?}"))
    };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        given = true;
        match &*k {
            "q" if sorted => q.search = Some(v.into_owned()).filter(|s| !s.is_empty()),
            "sort" if sorted => {
                q.sort = Sort::parse(&v)
                    .ok_or_else(|| format!("sort is recent, size, cached or url, not {v:?}"))?
            }
            "offset" => q.offset = number("offset", &v)?,
            "limit" => q.limit = number("limit", &v)?.clamp(1, MAX_PAGE),
            other if sorted => {
                return Err(format!(
                    "unknown parameter {other:?} (q, sort, offset, limit)"
                ))
            }
            other => return Err(format!("unknown parameter {other:?} (offset, limit)")),
        }
    }
    Ok((q, given))
}

fn shown(mut t: TitleSummary) -> TitleSummary {
    t.url = redacted(&t.url);
    t
}

fn shown_part(mut p: PartSummary) -> PartSummary {
    p.url = redacted(&p.url);
    p.stream = p.stream.as_deref().map(redacted);
    p
}

/// `GET /api/titles`.
pub(super) async fn page(cache: &Cache, q: PageQuery) -> Response {
    let (offset, limit) = (q.offset, q.limit);
    match cache.titles().page(q).await {
        Ok((rows, total)) => json(
            StatusCode::OK,
            &serde_json::json!({
                "titles": rows.into_iter().map(shown).collect::<Vec<_>>(),
                "total": total,
                "offset": offset,
                "limit": limit,
            }),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `GET /api/titles/{id}`: the title and a page of its parts.
pub(super) async fn one(cache: &Cache, id: i64, q: PageQuery) -> Response {
    let titles = cache.titles();
    let row = match titles.title(id).await {
        Ok(Some(t)) => t,
        Ok(None) => return error(StatusCode::NOT_FOUND, &format!("no title {id}")),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    match titles.parts(id, q.offset, q.limit).await {
        Ok(parts) => json(
            StatusCode::OK,
            &serde_json::json!({
                "title": shown(row),
                "parts": parts.into_iter().map(shown_part).collect::<Vec<_>>(),
                "offset": q.offset,
                "limit": q.limit,
            }),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `POST /api/titles/{id}/pin` and `/unpin`.
pub(super) async fn pin_id(cache: &Cache, id: i64, pinned: bool) -> Response {
    let titles = cache.titles();
    match titles.pin_title(id, pinned).await {
        Ok(true) => answer(cache, id).await,
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no title {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `POST /api/media/{id}/pin` and `/unpin`: the title of a media (a
/// file no playlist names becomes one).
pub(super) async fn pin_media(cache: &Cache, id: i64, pinned: bool) -> Response {
    match cache.titles().pin_media(id, pinned).await {
        Ok(Some(t)) => answer(cache, t).await,
        Ok(None) => error(StatusCode::NOT_FOUND, &format!("no media {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `POST /api/pin` and `/api/unpin` with `{"url": "..."}`: the title the
/// URL is (or is a part of), or a cached file, which becomes a title.
pub(super) async fn pin_url(cache: &Cache, body: &[u8], pinned: bool) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        url: String,
    }
    let req: Req = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("send {{\"url\": \"http(s)://...\"}}: {e}"),
            )
        }
    };
    let url = match crate::upstream::parse_url(&req.url) {
        Ok(u) => u,
        Err(e) => return error(status_of(&e), &e.to_string()),
    };
    match cache.titles().pin(&url, pinned).await {
        Ok(Some(id)) => answer(cache, id).await,
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no title or cached media has this URL: play or prefetch it first",
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn answer(cache: &Cache, id: i64) -> Response {
    match cache.titles().title(id).await {
        Ok(Some(t)) => json(StatusCode::OK, &serde_json::json!({ "title": shown(t) })),
        Ok(None) => error(StatusCode::NOT_FOUND, &format!("no title {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
