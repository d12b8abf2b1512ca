//! The collector's HTTP side: the JSON API (same shapes as the CLI's
//! `--format json`) and a health check.

use crate::query;
use crate::state::Fleet;
use crate::view;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub fn router(fleet: Fleet) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{name}", get(node))
        .merge(crate::web::routes())
        .with_state(fleet)
}

fn status_error(s: tonic::Status) -> Response {
    let code = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(serde_json::json!({ "error": s.message() }))).into_response()
}

async fn nodes(State(fleet): State<Fleet>) -> Response {
    match query::list(&fleet).await {
        Ok(list) => Json(view::nodes(&list)).into_response(),
        Err(s) => status_error(s),
    }
}

async fn node(State(fleet): State<Fleet>, Path(name): Path<String>) -> Response {
    match query::get(&fleet, name).await {
        Ok(d) => Json(view::NodeDetailView::from(&d)).into_response(),
        Err(s) => status_error(s),
    }
}
