//! The collector's HTTP side: the JSON API (same shapes as the CLI's
//! `--format json`), the web page, Prometheus metrics and a health check.

use crate::probe::JsonDetail;
use crate::query;
use crate::state::Fleet;
use crate::trust::{Denied, Peer, Trust};
use crate::view;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use reachmap_tls::Role;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Clone)]
pub struct HttpState {
    pub fleet: Fleet,
    /// Per-pair series in /metrics only up to this many cells.
    pub metrics_pair_cap: usize,
}

/// The cookie the web page keeps its token in.
const COOKIE: &str = "reachmap_token";
const LOGIN_PAGE: &str = include_str!("web/login.html");

/// Everything but `/healthz` and `/login` needs a viewer: a client
/// certificate, `Authorization: Bearer TOKEN`, or the web page's cookie.
pub fn router(fleet: Fleet, trust: Arc<Trust>, metrics_pair_cap: usize) -> axum::Router {
    let state = HttpState {
        fleet,
        metrics_pair_cap,
    };
    let guarded = axum::Router::new()
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{name}", get(node))
        .route("/api/v1/matrix", get(matrix))
        .route("/api/v1/why", get(why))
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/collectors", get(collectors))
        .route("/api/v1/events", get(events))
        .route("/api/v1/history", get(history))
        .route("/metrics", get(metrics))
        .merge(crate::web::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            trust.clone(),
            authenticate,
        ))
        .with_state(state);
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .with_state(trust)
        .merge(guarded)
}

/// `/metrics` alone, without authentication, for `--metrics-listen`.
pub fn metrics_router(fleet: Fleet, metrics_pair_cap: usize) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .with_state(HttpState {
            fleet,
            metrics_pair_cap,
        })
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

async fn authenticate(
    State(trust): State<Arc<Trust>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|c| &c.0);
    let headers = request.headers();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::trust::bearer)
        .map(str::to_string)
        .or_else(|| cookie_token(headers));
    let what = request.uri().path().to_string();
    let verdict = trust
        .caller(peer, token.as_deref())
        .and_then(|c| trust.allow(&c, Role::Viewer, &what));
    match verdict {
        Ok(()) => next.run(request).await,
        Err(Denied::Unauthenticated(m)) => {
            let page = request.method() == axum::http::Method::GET
                && !what.starts_with("/api/")
                && what != "/metrics";
            if page {
                axum::response::Redirect::to("/login").into_response()
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"reachmap\"")],
                    Json(serde_json::json!({ "error": m })),
                )
                    .into_response()
            }
        }
        Err(Denied::Forbidden(m)) => (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({ "error": m })),
        )
            .into_response(),
    }
}

async fn login_page() -> Response {
    axum::response::Html(LOGIN_PAGE).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Takes an API token once and keeps it in an HttpOnly, Secure,
/// SameSite=Strict cookie until it expires.
async fn login(State(trust): State<Arc<Trust>>, axum::Form(f): axum::Form<LoginForm>) -> Response {
    let token = f.token.trim();
    let Some(expires) = trust.api_token_expires(token) else {
        let page = LOGIN_PAGE.replace(
            "<!--error-->",
            "<p class=\"error\" id=\"login-error\">That token is not a valid viewer or operator token.</p>",
        );
        return (StatusCode::UNAUTHORIZED, axum::response::Html(page)).into_response();
    };
    let cookie = format!(
        "{COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        (expires - crate::trust::now_unix()).max(0)
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_string()),
        ],
    )
        .into_response()
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct WhyQuery {
    src: String,
    dst: String,
    port: Option<u16>,
    /// A past moment (RFC 3339, "10m ago").
    at: Option<String>,
}

/// A time parameter: RFC 3339, "10m ago", "1h"; 0 when absent.
fn moment(name: &str, text: Option<&str>) -> Result<i64, tonic::Status> {
    crate::cli::when::parse_or_now(text, std::time::SystemTime::now())
        .map_err(|e| tonic::Status::invalid_argument(format!("{name}: {e}")))
}

/// `/api/v1/why?src=A&dst=B[&port=P][&at=TIME]`: the same JSON as
/// `reachmap why --format json`.
async fn why(State(st): State<HttpState>, Query(q): Query<WhyQuery>) -> Response {
    let port = q
        .port
        .filter(|p| *p != 0)
        .unwrap_or(reachmap_proto::DEFAULT_PROBE_PORT);
    let at = match moment("at", q.at.as_deref()) {
        Ok(a) => a,
        Err(s) => return status_error(s),
    };
    match query::why_at_or_now(&st.fleet, q.src, q.dst, port, at).await {
        Ok(e) => Json(e).into_response(),
        Err(s) => status_error(s),
    }
}

/// `/api/v1/findings`: the same JSON as `reachmap findings --format json`.
async fn findings(State(st): State<HttpState>) -> Response {
    match query::findings(&st.fleet).await {
        Ok(r) => Json(r).into_response(),
        Err(s) => status_error(s),
    }
}

/// `/api/v1/collectors`: the same JSON as `reachmap collectors --format json`.
async fn collectors(State(st): State<HttpState>) -> Response {
    match query::collectors(&st.fleet).await {
        Ok(r) => {
            let views: Vec<crate::view::CollectorView> = r
                .collectors
                .iter()
                .map(|c| crate::view::CollectorView::of(c, r.now_unix_nanos))
                .collect();
            Json(views).into_response()
        }
        Err(s) => status_error(s),
    }
}

#[derive(serde::Deserialize)]
struct EventsParams {
    node: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// Comma-separated kinds.
    #[serde(rename = "type")]
    types: Option<String>,
    limit: Option<usize>,
}

/// `/api/v1/events[?node=N][&since=1h][&until=T][&type=a,b][&limit=N]`:
/// the same JSON as `reachmap events --format json`.
async fn events(State(st): State<HttpState>, Query(q): Query<EventsParams>) -> Response {
    let since = match moment("since", Some(q.since.as_deref().unwrap_or("1h"))) {
        Ok(t) => t,
        Err(s) => return status_error(s),
    };
    let until = match moment("until", q.until.as_deref()) {
        Ok(t) => t,
        Err(s) => return status_error(s),
    };
    let q = crate::store::read::EventsQuery {
        node: q.node.filter(|n| !n.is_empty()),
        since,
        until,
        types: q
            .types
            .map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        limit: q.limit.unwrap_or(0),
    };
    match crate::history::events(st.fleet.store(), q).await {
        Ok(r) => Json(view::EventsView::from(&r)).into_response(),
        Err(s) => status_error(s),
    }
}

#[derive(serde::Deserialize)]
struct HistoryParams {
    src: String,
    dst: String,
    port: Option<u16>,
    since: Option<String>,
    until: Option<String>,
}

/// `/api/v1/history?src=A&dst=B[&port=P][&since=24h][&until=T]`: the same
/// JSON as `reachmap history --format json`.
async fn history(State(st): State<HttpState>, Query(q): Query<HistoryParams>) -> Response {
    let since = match moment("since", Some(q.since.as_deref().unwrap_or("24h"))) {
        Ok(t) => t,
        Err(s) => return status_error(s),
    };
    let until = match moment("until", q.until.as_deref()) {
        Ok(t) => t,
        Err(s) => return status_error(s),
    };
    let port = q
        .port
        .filter(|p| *p != 0)
        .unwrap_or(reachmap_proto::DEFAULT_PROBE_PORT);
    match crate::history::history(&st.fleet, q.src, q.dst, port, since, until).await {
        Ok(r) => Json(view::HistoryView::new(
            &r,
            crate::state::unix_nanos(std::time::SystemTime::now()),
        ))
        .into_response(),
        Err(s) => status_error(s),
    }
}

#[derive(serde::Deserialize)]
struct MatrixQuery {
    port: Option<u16>,
    /// "summary" (the default) or "full".
    detail: Option<String>,
    /// A past moment (RFC 3339, "10m ago").
    at: Option<String>,
    /// Only cells from or to this zone.
    zone: Option<String>,
    src: Option<String>,
    dst: Option<String>,
    /// Only cells from / to the nodes of this zone (a zone pair drilled down).
    src_zone: Option<String>,
    dst_zone: Option<String>,
    /// Only cells in this state.
    state: Option<String>,
    /// "zones": the zone grid, and only the cells that are not ok.
    view: Option<String>,
}

/// Chunks of the matrix body handed to the connection at a time.
const MATRIX_CHUNK: usize = 256 * 1024;
/// Encoded chunks waiting for the connection: the encoder stays at most
/// this far ahead of the client.
const MATRIX_CHUNKS_AHEAD: usize = 16;

/// The matrix is copied out of the state task (a plain memory copy) and
/// encoded on a blocking thread that hands the body over in chunks as it
/// goes: the first bytes leave at once, the encoding overlaps the transfer,
/// and the agents' results are not held up while a large matrix is written.
async fn matrix(State(st): State<HttpState>, Query(q): Query<MatrixQuery>) -> Response {
    let port = q.port.filter(|p| *p != 0);
    let detail = match q.detail.as_deref() {
        None | Some("summary") => JsonDetail::Summary,
        Some("full") => JsonDetail::Full,
        Some(other) => {
            return status_error(tonic::Status::invalid_argument(format!(
                "detail={other:?}: expected \"summary\" or \"full\""
            )));
        }
    };
    let at = match moment("at", q.at.as_deref()) {
        Ok(a) => a,
        Err(s) => return status_error(s),
    };
    let by_zone = match q.view.as_deref() {
        None | Some("cells") => false,
        Some("zones") => true,
        Some(other) => {
            return status_error(tonic::Status::invalid_argument(format!(
                "view={other:?}: expected \"cells\" or \"zones\""
            )));
        }
    };
    let state = match q
        .state
        .as_deref()
        .map(crate::select::Selection::state_named)
    {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return status_error(tonic::Status::invalid_argument(e)),
    };
    let sel = crate::select::Selection {
        port,
        zone: q.zone,
        src: q.src.filter(|s| !s.is_empty()),
        dst: q.dst.filter(|s| !s.is_empty()),
        src_zone: q.src_zone,
        dst_zone: q.dst_zone,
        state,
    };
    if sel.is_narrowed() || by_zone {
        return selected_matrix(&st.fleet, sel, by_zone, detail, at).await;
    }
    let copy = match query::matrix_copy(&st.fleet, at).await {
        Ok((m, _)) => m,
        Err(s) => return status_error(s),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(MATRIX_CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        copy.json_chunks(port, detail, MATRIX_CHUNK, |chunk| {
            tx.blocking_send(Bytes::from(chunk)).is_ok()
        });
    });
    let body = ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

/// A narrowed matrix or the zone view: small next to the whole matrix, so
/// encoded in one piece.
async fn selected_matrix(
    fleet: &Fleet,
    sel: crate::select::Selection,
    by_zone: bool,
    detail: JsonDetail,
    at: i64,
) -> Response {
    let (copy, zones, now) = match query::selected_copy(fleet, at).await {
        Ok(c) => c,
        Err(s) => return status_error(s),
    };
    let encoded = tokio::task::spawn_blocking(move || {
        let m = crate::encode::matrix_selected(&copy, &sel, &zones, by_zone, now);
        let v = crate::view::MatrixView::from(&m);
        match detail {
            JsonDetail::Full => serde_json::to_vec(&v),
            JsonDetail::Summary => serde_json::to_vec(&v.summary()),
        }
    })
    .await;
    match encoded {
        Ok(Ok(body)) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Ok(Err(e)) => status_error(tonic::Status::internal(e.to_string())),
        Err(e) => status_error(tonic::Status::internal(e.to_string())),
    }
}

async fn metrics(State(st): State<HttpState>) -> Response {
    let cap = st.metrics_pair_cap;
    let store = st.fleet.store().status();
    let text = st
        .fleet
        .read_matrix(move |m, nodes| {
            let figures: Vec<crate::metrics::NodeMetrics> = nodes
                .values()
                .map(|n| crate::metrics::NodeMetrics {
                    name: n.name.clone(),
                    connected: n.connected(),
                    clock_offset_seconds: n.clock.map(|c| c.offset_nanos as f64 / 1e9),
                    events_total: n.events_total,
                    dropped_events_total: n.dropped_events_total,
                    sources: n
                        .facts
                        .iter()
                        .flat_map(|f| f.sources.iter())
                        .map(|(k, h)| crate::metrics::SourceMetrics {
                            source: k.name(),
                            state: h.state.name(),
                            errors_total: h.errors_total,
                            restarts_total: h.restarts_total,
                        })
                        .collect(),
                })
                .collect();
            crate::metrics::render(&crate::metrics::MetricsInput {
                nodes: &figures,
                matrix: m,
                pair_cap: cap,
                store: Some(&store),
            })
        })
        .await;
    match text {
        Some(t) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            t,
        )
            .into_response(),
        None => status_error(tonic::Status::unavailable("collector is shutting down")),
    }
}

fn status_error(s: tonic::Status) -> Response {
    let code = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::OutOfRange => StatusCode::GONE,
        tonic::Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(serde_json::json!({ "error": s.message() }))).into_response()
}

async fn nodes(State(st): State<HttpState>) -> Response {
    match query::list(&st.fleet).await {
        Ok(list) => Json(view::nodes(&list)).into_response(),
        Err(s) => status_error(s),
    }
}

async fn node(State(st): State<HttpState>, Path(name): Path<String>) -> Response {
    match query::get(&st.fleet, name).await {
        Ok(d) => Json(view::NodeDetailView::from(&d)).into_response(),
        Err(s) => status_error(s),
    }
}
