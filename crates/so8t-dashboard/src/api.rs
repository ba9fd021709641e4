//! The routes: the page at `/`, its files under `/assets/`, the JSON API under `/api/`
//! (`docs/dashboard-api.md`). Every reader runs on the blocking pool; every error is a JSON
//! `{"error": …}` with a fitting status, and the server goes on.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::state::AppState;
use crate::{metrics, pipeline, Error};

type Shared = Arc<AppState>;
type Params = Query<HashMap<String, String>>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::BadRequest(_) | Error::Config { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound(_) | Error::Gone(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// Runs `f` on the blocking pool (SQLite and file reads).
pub async fn blocking<T: Send + 'static>(
    state: &Shared,
    f: impl FnOnce(&AppState) -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    let s = state.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| Error::Sql(format!("reader task failed: {e}")))?
}

/// A required query parameter.
pub fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> crate::Result<&'a str> {
    q.get(name)
        .map(String::as_str)
        .ok_or_else(|| Error::BadRequest(format!("missing query parameter {name:?}")))
}

/// An optional numeric query parameter.
pub fn num<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
) -> crate::Result<Option<T>> {
    match q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| Error::BadRequest(format!("{name}={s:?} is not a valid number"))),
    }
}

/// The whole router over `state`.
pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/api/config", get(config))
        .route("/api/runs", get(runs))
        .route("/api/run", get(run))
        .route("/api/run/metrics", get(run_metrics))
        .route("/api/run/csv", get(run_csv))
        .route("/api/run/verify", get(run_verify))
        .route("/api/compare", get(compare))
        .route("/api/pipeline", get(pipeline_overview))
        .route("/api/pipeline/file", get(pipeline_file))
        .route("/api/alerts", get(alerts))
        .route("/api/stream", get(crate::stream::stream))
        .fallback(|| async { Error::NotFound("no such API route".into()) })
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(crate::assets::index))
        .route("/assets/{name}", get(crate::assets::asset))
        .merge(api)
        .with_state(state)
}

async fn auth(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let Some(token) = state.cfg.token.as_deref() else {
        return next.run(req).await;
    };
    let header_ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token);
    let query_ok = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.strip_prefix("token=").is_some_and(|t| t == token))
    });
    if header_ok || query_ok {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "this dashboard needs a token: open it as /?token=TOKEN"})),
        )
            .into_response()
    }
}

async fn config(State(state): State<Shared>) -> Json<Value> {
    let c = &state.cfg;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "runs_dir": c.runs_dir.display().to_string(),
        "refresh_secs": c.refresh_interval,
        "thresholds": {"gpu_temp_c": c.gpu_temp_warning, "cpu_pct": c.cpu_usage_warning,
            "ram_pct": c.memory_usage_warning, "vram_pct": c.gpu_memory_usage_warning},
        "caution_ratio": c.caution_ratio,
        "stall_minutes": c.stall_minutes,
        "max_points": c.max_points,
        "series": metrics::series_names().collect::<Vec<_>>(),
    }))
}

async fn runs(State(state): State<Shared>) -> crate::Result<Json<Value>> {
    blocking(&state, |s| Ok(s.runs())).await.map(Json)
}

async fn run(State(state): State<Shared>, Query(q): Params) -> crate::Result<Json<Value>> {
    let id = param(&q, "run")?.to_string();
    let with_stats = q.get("stats").is_none_or(|v| v != "0" && v != "false");
    blocking(&state, move |s| s.overview(&id, with_stats, None))
        .await
        .map(Json)
}

async fn run_metrics(State(state): State<Shared>, Query(q): Params) -> crate::Result<Json<Value>> {
    let id = param(&q, "run")?.to_string();
    let series = metrics::parse_series(q.get("series").map_or("loss", String::as_str))?;
    let points = num::<usize>(&q, "points")?
        .unwrap_or(state.cfg.max_points)
        .clamp(1, 20_000);
    let (from, to, after) = (num(&q, "from")?, num(&q, "to")?, num::<u64>(&q, "after")?);
    let c = blocking(&state, move |s| {
        let (_, store) = s.open_run(&id)?;
        let conn = store.connection();
        let c = match after {
            Some(a) => metrics::after(conn, &series, a, 5000)?,
            None => metrics::downsample(conn, &series, points, from, to)?,
        };
        let mut v = serde_json::to_value(&c).unwrap_or(Value::Null);
        v["run"] = json!(id);
        Ok(v)
    })
    .await?;
    Ok(Json(c))
}

async fn run_csv(State(state): State<Shared>, Query(q): Params) -> crate::Result<Response> {
    let id = param(&q, "run")?.to_string();
    let series = metrics::parse_series(q.get("series").map_or("loss", String::as_str))?;
    let (from, to) = (num(&q, "from")?, num(&q, "to")?);
    let name = format!("{}-{}.csv", id.replace('/', "_"), series.join("-"));
    let body = blocking(&state, move |s| {
        let (_, store) = s.open_run(&id)?;
        let mut out = String::new();
        metrics::csv(store.connection(), &series, from, to, &mut out)?;
        Ok(out)
    })
    .await?;
    let disposition = format!("attachment; filename=\"{}\"", name.replace('"', "_"));
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn run_verify(State(state): State<Shared>, Query(q): Params) -> crate::Result<Json<Value>> {
    let id = param(&q, "run")?.to_string();
    let path = param(&q, "path")?.to_string();
    blocking(&state, move |s| {
        let (dir, store) = s.open_run(&id)?;
        let known = store
            .checkpoints()
            .map_err(|e| Error::Unreadable(e.to_string()))?
            .into_iter()
            .any(|c| c.path == path);
        if !known {
            return Err(Error::NotFound(format!(
                "run {id:?} has no checkpoint {path:?}"
            )));
        }
        let (check, problem) = crate::overview::check_checkpoint(&dir.join(&path), true);
        Ok(json!({"path": path, "check": check, "problem": problem}))
    })
    .await
    .map(Json)
}

async fn compare(State(state): State<Shared>, Query(q): Params) -> crate::Result<Json<Value>> {
    let ids: Vec<String> = param(&q, "runs")?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if ids.is_empty() || ids.len() > 32 {
        return Err(Error::BadRequest(
            "runs: give 1 to 32 comma-separated run ids".into(),
        ));
    }
    let series = q.get("series").cloned().unwrap_or_else(|| "loss".into());
    metrics::expr(&series)?;
    let points = num::<usize>(&q, "points")?
        .unwrap_or(state.cfg.max_points)
        .clamp(1, 20_000);
    let name = series.clone();
    blocking(&state, move |s| {
        let runs: Vec<Value> = ids
            .iter()
            .map(|id| {
                let read = s.open_run(id).and_then(|(_, store)| {
                    metrics::downsample(
                        store.connection(),
                        std::slice::from_ref(&name),
                        points,
                        None,
                        None,
                    )
                });
                match read {
                    Ok(c) => {
                        let v = &c.values[&name];
                        json!({"run": id, "step": c.step, "bucket": c.bucket, "mean": v["mean"],
                            "min": v.get("min"), "max": v.get("max"), "error": null})
                    }
                    Err(e) => json!({"run": id, "error": e.to_string()}),
                }
            })
            .collect();
        Ok(json!({"series": series, "runs": runs}))
    })
    .await
    .map(Json)
}

async fn pipeline_overview(
    State(state): State<Shared>,
    Query(q): Params,
) -> crate::Result<Json<Value>> {
    let id = param(&q, "pipeline")?.to_string();
    blocking(&state, move |s| pipeline::overview(s, &id))
        .await
        .map(Json)
}

async fn pipeline_file(State(state): State<Shared>, Query(q): Params) -> crate::Result<Response> {
    let id = param(&q, "pipeline")?.to_string();
    let path = param(&q, "path")?.to_string();
    let (bytes, ty) = blocking(&state, move |s| pipeline::file(s, &id, &path)).await?;
    Ok(([(header::CONTENT_TYPE, ty)], bytes).into_response())
}

async fn alerts(State(state): State<Shared>) -> crate::Result<Json<Value>> {
    let all = blocking(&state, |s| Ok(s.alerts())).await?;
    let list: Vec<Value> = all
        .into_iter()
        .flat_map(|(run, a)| {
            a.into_iter().map(move |a| {
                let mut v = serde_json::to_value(&a).unwrap_or(Value::Null);
                v["run"] = json!(run);
                v
            })
        })
        .collect();
    Ok(Json(json!({"alerts": list})))
}
