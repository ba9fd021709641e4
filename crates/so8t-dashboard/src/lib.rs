//! `so8t dashboard`: a live web dashboard over the run store.
//!
//! The server (axum) reads run folders (`run.db`, SQLite in WAL mode, opened read-only) and
//! pipeline folders (`pipeline.json`) below one runs folder and serves a JSON API
//! (`docs/dashboard-api.md`), live updates by Server-Sent Events and the page itself, whose files
//! (`web/`, our own code, no third-party libraries) are embedded in the binary. It never writes a
//! run folder; a corrupted, half-written or vanished database is reported, never fatal.
//!
//! Layout: [`config`] (`dashboard.yaml`), [`discover`] (finding runs), [`metrics`] (series,
//! raw rows, CSV, statistics), [`downsample`] (buckets, on several cores), [`overview`] (one run's state), [`alerts`], [`pipeline`],
//! [`state`] (shared state and caches), [`api`] (routes), [`stream`] (SSE), [`assets`] (the page),
//! [`synth`] (synthetic runs for demos and the scale benchmark).

pub mod alerts;
pub mod api;
pub mod assets;
pub mod config;
pub mod discover;
pub mod downsample;
pub mod metrics;
pub mod overview;
pub mod pipeline;
pub mod state;
pub mod stream;
pub mod synth;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::DashboardConfig;
pub use state::AppState;

/// Errors of the dashboard; each becomes one HTTP status and a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `dashboard.yaml` could not be read or is invalid.
    #[error("{}: {msg}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A bad query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// No such run, pipeline or file.
    #[error("{0}")]
    NotFound(String),
    /// The run's folder or database disappeared.
    #[error("{0}")]
    Gone(String),
    /// The database cannot be read (corrupted, half-written, newer schema).
    #[error("{0}")]
    Unreadable(String),
    /// A query failed.
    #[error("run database query failed: {0}")]
    Sql(String),
    /// Binding or serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result with the dashboard's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    so8t_store::now_ms()
}

/// Binds `cfg.host:cfg.port` (port 0: any free port) and returns the address and a future that
/// serves until `shutdown` resolves. Alerts are posted to the webhook from a background task.
pub async fn bind(
    cfg: DashboardConfig,
    static_dir: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl std::future::Future<Output = Result<()>>)> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let state = Arc::new(AppState::new(cfg, static_dir));
    // Read the run list once now: finished runs are then answered from the cache, and the
    // page's first load does not wait for every database to be opened.
    let warm = state.clone();
    tokio::task::spawn_blocking(move || warm.runs());
    if state.cfg.webhook.is_some() {
        tokio::spawn(state::post_alerts(state.clone()));
    }
    let app = api::router(state);
    let fut = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Io)
    };
    Ok((local, fut))
}
