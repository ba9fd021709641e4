//! The server's shared state: settings, the runs folder, the running statistics cache (bounded),
//! and the blocking readers the routes call on tokio's blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::DashboardConfig;
use crate::discover::{self, Catalog};
use crate::metrics::StatAcc;
use crate::overview::{self, live_status, Live};
use crate::{now_ms, Error, Result};

/// Most runs whose statistics are kept between requests (a few hundred bytes each).
const STATS_CACHE: usize = 512;

/// Everything the routes share.
pub struct AppState {
    /// Settings.
    pub cfg: DashboardConfig,
    /// Serve the page from this folder instead of the embedded copy (development).
    pub static_dir: Option<PathBuf>,
    stats: Mutex<HashMap<PathBuf, StatAcc>>,
    /// Run-list lines of finished runs, by database file stamp (a run that did not change is
    /// not opened again).
    lines: Mutex<HashMap<PathBuf, (Stamp, i64, Value)>>,
}

/// Size and modification time of `run.db` and its WAL: changes whenever the database does.
type Stamp = [(u64, u128); 2];

fn stamp(dir: &Path) -> Stamp {
    let one = |name: &str| {
        std::fs::metadata(dir.join(name)).map_or((0, 0), |m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            (m.len(), t)
        })
    };
    [one(so8t_store::DB_FILE), one("run.db-wal")]
}

impl AppState {
    /// New state over `cfg.runs_dir`.
    pub fn new(cfg: DashboardConfig, static_dir: Option<PathBuf>) -> Self {
        Self {
            cfg,
            static_dir,
            stats: Mutex::new(HashMap::new()),
            lines: Mutex::new(HashMap::new()),
        }
    }

    /// Runs and pipelines below the runs folder, found now.
    pub fn catalog(&self) -> Catalog {
        discover::scan(&self.cfg.runs_dir, self.cfg.scan_depth)
    }

    /// The folder of run `id`, or `NotFound`.
    pub fn run_dir(&self, id: &str) -> Result<PathBuf> {
        let dir = discover::resolve(&self.cfg.runs_dir, id)
            .ok_or_else(|| Error::NotFound(format!("{id:?} is not a run id")))?;
        if !dir.join(so8t_store::DB_FILE).is_file() {
            return Err(Error::NotFound(format!(
                "no run {id:?} in {} (unknown id, or the run was removed)",
                self.cfg.runs_dir.display()
            )));
        }
        Ok(dir)
    }

    /// The folder of run `id` and its database, opened read-only.
    pub fn open_run(&self, id: &str) -> Result<(PathBuf, so8t_store::Store)> {
        let dir = self.run_dir(id)?;
        let store = overview::open(&dir)?;
        Ok((dir, store))
    }

    /// The folder of pipeline `id`, or `NotFound`.
    pub fn pipeline_dir(&self, id: &str) -> Result<PathBuf> {
        let dir = discover::resolve(&self.cfg.runs_dir, id)
            .ok_or_else(|| Error::NotFound(format!("{id:?} is not a pipeline id")))?;
        if !dir.join("pipeline.json").is_file() {
            return Err(Error::NotFound(format!("no pipeline {id:?}")));
        }
        Ok(dir)
    }

    /// `/api/runs`.
    pub fn runs(&self) -> Value {
        let cat = self.catalog();
        let mut runs: Vec<(i64, Value)> = cat
            .runs
            .iter()
            .map(|r| self.cached_line(&r.id, &r.path, r.pipeline.as_deref()))
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.0));
        let pipelines: Vec<Value> = cat
            .pipelines
            .iter()
            .map(|p| match so8t_pipeline::status::status(&p.path) {
                Ok(s) => json!({"id": p.id, "path": p.path.display().to_string(),
                    "name": s.name, "status": s.status, "error": s.error}),
                Err(e) => json!({"id": p.id, "path": p.path.display().to_string(),
                    "name": p.id, "status": "unreadable", "error": e}),
            })
            .collect();
        json!({"runs": runs.into_iter().map(|r| r.1).collect::<Vec<_>>(), "pipelines": pipelines})
    }

    /// A run's line of `/api/runs`, from the cache when its database did not change since a
    /// finished (not running) state was read.
    fn cached_line(&self, id: &str, dir: &Path, pipeline: Option<&str>) -> (i64, Value) {
        let st = stamp(dir);
        if let Some((s, key, v)) = self.lines.lock().ok().and_then(|m| m.get(dir).cloned()) {
            if s == st && v["id"] == id && v["pipeline"].as_str() == pipeline {
                return (key, v);
            }
        }
        let (key, v) = run_line(id, dir, pipeline, (st[0].1 / 1_000_000) as i64);
        if let Ok(mut m) = self.lines.lock() {
            if v["status"] != "running" {
                if m.len() >= 4 * STATS_CACHE {
                    m.clear();
                }
                m.insert(dir.to_path_buf(), (st, key, v.clone()));
            } else {
                m.remove(dir);
            }
        }
        (key, v)
    }

    /// `/api/run` (and with `live`, a live update): the overview of one run. `with_stats: false`
    /// leaves the statistics out unless they are cached already (a pass over every row otherwise).
    pub fn overview(&self, id: &str, with_stats: bool, live: Option<Live>) -> Result<Value> {
        let dir = self.run_dir(id)?;
        let cached = self.stats.lock().ok().and_then(|m| m.get(&dir).cloned());
        if !with_stats && cached.is_none() {
            return overview::overview(id, &dir, &self.cfg, None, live, now_ms());
        }
        let mut acc = cached.unwrap_or_default();
        let out = overview::overview(id, &dir, &self.cfg, Some(&mut acc), live, now_ms())?;
        if let Ok(mut m) = self.stats.lock() {
            if m.len() >= STATS_CACHE && !m.contains_key(&dir) {
                m.clear();
            }
            m.insert(dir, acc);
        }
        Ok(out)
    }

    /// The alerts of every readable run (runs without alerts too, with an empty list).
    pub fn alerts(&self) -> Vec<(String, Vec<crate::alerts::Alert>)> {
        let now = now_ms();
        self.catalog()
            .runs
            .iter()
            .filter_map(|r| {
                let store = overview::open(&r.path).ok()?;
                let s = store.latest_session().ok()??;
                let latest = overview::latest(store.connection()).ok()?;
                let a = crate::alerts::for_run(&self.cfg, &s, latest.as_ref(), now);
                Some((r.id.clone(), a))
            })
            .collect()
    }
}

/// One line of `/api/runs` and its sort key (the session's last update; for an unreadable
/// database `mtime_ms`, its file's modification time).
fn run_line(id: &str, dir: &Path, pipeline: Option<&str>, mtime_ms: i64) -> (i64, Value) {
    let read = overview::open(dir).and_then(|store| {
        store
            .latest_session()
            .map_err(|e| Error::Unreadable(e.to_string()))
    });
    let v = match read {
        Ok(Some(s)) => {
            return (
                s.updated_ms,
                json!({"id": id, "path": dir.display().to_string(), "kind": s.kind,
                "status": live_status(&s),
                "started_ms": s.started_ms, "updated_ms": s.updated_ms, "step": s.step,
                "total_steps": s.total_steps, "pipeline": pipeline, "error": s.error}),
            )
        }
        Ok(None) => json!({"id": id, "path": dir.display().to_string(), "status": "unreadable",
            "pipeline": pipeline, "error": "no session yet (training has not started)"}),
        Err(e) => json!({"id": id, "path": dir.display().to_string(), "status": "unreadable",
            "pipeline": pipeline, "error": e.to_string()}),
    };
    (mtime_ms, v)
}

/// Posts newly raised alerts to the webhook every refresh interval, forever.
pub async fn post_alerts(state: Arc<AppState>) {
    let Some(url) = state.cfg.webhook.clone() else {
        return;
    };
    let client = reqwest::Client::new();
    let mut sent = crate::alerts::Sent::default();
    let every = Duration::from_secs(state.cfg.refresh_interval);
    loop {
        let s = state.clone();
        let all = tokio::task::spawn_blocking(move || s.alerts())
            .await
            .unwrap_or_default();
        for (run, alerts) in &all {
            let fresh: Vec<crate::alerts::Alert> =
                sent.fresh(run, alerts).into_iter().cloned().collect();
            for a in fresh {
                let body = json!({"source": "so8t-dashboard", "run": run, "alert": a});
                let r = client
                    .post(&url)
                    .json(&body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                if let Err(e) = r {
                    tracing::warn!("alert webhook {url}: {e} (tried again next round)");
                    sent.unmark(run, &a);
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
