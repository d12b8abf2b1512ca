//! The web page at `/`: the reachability matrix as a heat map that polls
//! `/api/v1/matrix` and `/api/v1/nodes` and updates in place, or shows the
//! matrix "as of" a moment (`/api/v1/matrix?at=`, fetched once; cell
//! details ask `/api/v1/why` with the same `at`). A cell's details draw its
//! last 24 hours from `/api/v1/history` as a strip of coloured intervals.
//! Above the map a summary line (nodes connected, failing and degraded
//! cells, the top causes of the first 20 problem cells, asked of
//! `/api/v1/why` a few at a time); beside it the failing and degraded cells,
//! each opening its details; a node's name opens its facts
//! (`/api/v1/nodes/NAME`) and recent events (`/api/v1/events?node=NAME`).
//! The cells are sized to fit the window.
//!
//! Plain HTML, JS and CSS compiled into the binary: no build step, no external
//! resource, so it works offline and on an air-gapped fleet. Assets are served
//! with `Cache-Control: no-cache` and an `ETag`: a browser keeps its copy but
//! revalidates it on every load, so a new collector never runs stale JS, and
//! an unchanged asset costs a 304.

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::LazyLock;

/// One embedded file of the page.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
    /// Strong validator derived from the body (and the collector version).
    pub etag: String,
}

/// Only this origin: the page loads nothing from anywhere else, runs no
/// inline script and cannot be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Browsers may keep the asset but must ask again before using it.
const CACHE: &str = "no-cache";

const FILES: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("index.html")),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("style.css"),
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(path, content_type, body)| Asset {
            path,
            content_type,
            body,
            etag: etag(env!("CARGO_PKG_VERSION"), body),
        })
        .collect()
});

/// The page's routes, for the HTTP server to `.merge()`; they use no state.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = Router::new();
    for path in FILES.map(|(path, _, _)| path) {
        router = router.route(path, get(move |headers: HeaderMap| serve(path, headers)));
    }
    router
}

/// The embedded asset at `path`, if there is one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

async fn serve(path: &'static str, headers: HeaderMap) -> Response {
    match asset(path) {
        Some(a) => respond(a, headers.get(IF_NONE_MATCH)),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The response for `asset`: 304 when the browser's copy is current.
pub fn respond(asset: &Asset, if_none_match: Option<&HeaderValue>) -> Response {
    let etag = HeaderValue::from_str(&asset.etag).unwrap_or(HeaderValue::from_static("\"0\""));
    let common = [
        (CACHE_CONTROL, HeaderValue::from_static(CACHE)),
        (ETAG, etag),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    if if_none_match.is_some_and(|v| etag_matches(v.as_bytes(), &asset.etag)) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let kind = [
        (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
    ];
    (StatusCode::OK, common, kind, asset.body).into_response()
}

/// `"<16 hex digits>"`: FNV-1a 64 of the version and the body. Not a
/// security hash; it only has to change when the file does.
pub fn etag(version: &str, body: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in version.bytes().chain([0]).chain(body.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

/// Whether an `If-None-Match` header names `etag` (a list, `*`, or weak
/// validators, which compare equal for GET per RFC 9110).
pub fn etag_matches(header: &[u8], etag: &str) -> bool {
    let Ok(header) = std::str::from_utf8(header) else {
        return false;
    };
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

#[cfg(test)]
mod tests;
