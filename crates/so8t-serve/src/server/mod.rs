//! The HTTP server: Ollama's `/api/*` and OpenAI's `/v1/*` over the engine, with bearer-token
//! auth, optional CORS, request size and queue limits, graceful shutdown, hidden thinking and an
//! audit row per generation.

pub mod error;
pub mod models;
pub mod ollama;
mod openai;
pub mod prompt;
pub mod textgen;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use so8t_store::audit::AuditLog;

use error::ApiError;
use models::Models;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Required `Authorization: Bearer` token, if any.
    pub token: Option<String>,
    /// Origins allowed by CORS (`*` for any); empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Pass thinking through (operator flag). Off by default.
    pub show_thinking: bool,
    /// Store the thinking text in the audit log (operator flag). Off by default.
    pub store_thinking: bool,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Header carrying the user id for the audit log.
    pub user_header: String,
    /// The audit database (None: no audit log).
    pub audit_path: Option<PathBuf>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            token: None,
            cors_origins: Vec::new(),
            show_thinking: false,
            store_thinking: false,
            max_body: 8 << 20,
            user_header: "x-user-id".into(),
            audit_path: None,
        }
    }
}

/// Shared state of all handlers.
pub struct AppState {
    /// Settings.
    pub opts: ServeOptions,
    /// Models.
    pub models: Arc<Models>,
    /// The audit log.
    pub audit: Option<Arc<Mutex<AuditLog>>>,
}

impl AppState {
    /// The caller's user id, from the configured header (`x-user-id` by default).
    pub fn user_id(&self, h: &axum::http::HeaderMap) -> Option<String> {
        h.get(self.opts.user_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// The version `/api/version` reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(tok) = &st.opts.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), tok.as_bytes()));
        if !ok && req.method() != Method::OPTIONS {
            let flavor = error::Flavor::of_path(req.uri().path());
            return ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
                .flavor(flavor)
                .into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn cors(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .filter(|o| st.opts.cors_origins.iter().any(|a| a == "*" || a == o))
        .map(str::to_string);
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = if preflight && allowed.is_some() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    if let Some(o) = allowed.and_then(|o| HeaderValue::from_str(&o).ok()) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
    }
    resp
}

/// Rewrites the framework's own plain-text errors (413 body too large, 405, …) as JSON errors
/// of the route's API family.
async fn json_errors(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let flavor = error::Flavor::of_path(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let msg = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than {} bytes (--max-body)",
            st.opts.max_body
        ),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_string(),
        s => s.canonical_reason().unwrap_or("error").to_string(),
    };
    ApiError::new(status, msg).flavor(flavor).into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.opts.max_body;
    Router::new()
        .route("/", get(|| async { "so8t is running" }))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/generate", post(ollama::generate))
        .route("/api/chat", post(ollama::chat))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/create", post(ollama::create))
        .route("/api/copy", post(ollama::copy))
        .route("/api/delete", axum::routing::delete(ollama::delete))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

/// Opens the audit log and builds the shared state.
pub fn state(opts: ServeOptions, models: Models) -> Result<Arc<AppState>, String> {
    let audit = match &opts.audit_path {
        Some(p) => Some(Arc::new(Mutex::new(
            AuditLog::open(p).map_err(|e| e.to_string())?,
        ))),
        None => None,
    };
    Ok(Arc::new(AppState {
        opts,
        models: Arc::new(models),
        audit,
    }))
}

/// Serves until `shutdown` resolves; requests in flight finish first.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let models = state.models.clone();
    let reaper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            models.expire();
        }
    });
    let r = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    reaper.abort();
    r
}
