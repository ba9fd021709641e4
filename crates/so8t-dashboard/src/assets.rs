//! The page: `web/` (our own HTML, CSS and JavaScript, no third-party code) embedded in the
//! binary at build time, or read from a folder with `--static-dir` while developing it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Every file of the page: name under `/assets/` (the page itself is `index.html` at `/`),
/// content type, embedded contents.
pub const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/chart.js"),
    ),
    (
        "series.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/series.js"),
    ),
    (
        "panels.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/panels.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
];

fn serve(state: &AppState, name: &str) -> Response {
    let Some((_, ty, embedded)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let body = match &state.static_dir {
        Some(dir) => match std::fs::read_to_string(dir.join(name)) {
            Ok(s) => s,
            Err(e) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{}: {e}", dir.join(name).display()),
                )
                    .into_response()
            }
        },
        None => (*embedded).to_string(),
    };
    (
        [
            (header::CONTENT_TYPE, *ty),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index(State(state): State<Arc<AppState>>) -> Response {
    serve(&state, "index.html")
}

/// `GET /assets/{name}`.
pub async fn asset(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    serve(&state, &name)
}
