//! One run's overview: the session, progress and ETA, the newest metrics, gauges with their
//! warning levels, statistics, phase transitions, checkpoints (with a cheap integrity check),
//! events, evaluations and alerts — everything the page shows except the curves.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Map, Value};
use so8t_store::{Session, Status, Store};

use crate::alerts::{self, Alert};
use crate::config::DashboardConfig;
use crate::metrics::StatAcc;
use crate::{Error, Result};

/// The gauges, in display order.
pub const GAUGES: &[&str] = &[
    "cpu_pct",
    "ram_pct",
    "gpu_util_pct",
    "vram_pct",
    "gpu_temp_c",
];

/// Opens a run's database read-only; errors say what is wrong with it.
pub fn open(dir: &Path) -> Result<Store> {
    if !dir.is_dir() {
        return Err(Error::Gone(format!(
            "{}: the run folder is gone",
            dir.display()
        )));
    }
    let store = Store::open_read_only(dir).map_err(|e| Error::Unreadable(e.to_string()))?;
    // A half-written or foreign file opens fine; the first query tells.
    store
        .connection()
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get::<_, i64>(0))
        .map_err(|e| {
            Error::Unreadable(format!(
                "{}: not a readable run database ({e})",
                store.path().display()
            ))
        })?;
    Ok(store)
}

/// The session's status as people should read it: `running` whose process is gone is
/// `interrupted`.
pub fn live_status(s: &Session) -> &'static str {
    if s.status == Status::Running && !so8t_store::system::process_alive(s.pid) {
        "interrupted"
    } else {
        s.status.as_str()
    }
}

/// The session as JSON with its live status.
pub fn session_json(s: &Session) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("status".into(), json!(live_status(s)));
    }
    v
}

fn sql(e: rusqlite::Error) -> Error {
    Error::Sql(e.to_string())
}

/// The newest metrics row as JSON (scalar fields and the gauges), or None before step 1.
pub fn latest(conn: &Connection) -> Result<Option<Map<String, Value>>> {
    // The gauges are series of their own (RAM and VRAM as percentages).
    let mut gauges = String::new();
    for g in GAUGES {
        gauges.push_str(&crate::metrics::expr(g)?);
        gauges.push_str(", ");
    }
    conn.query_row(
        &format!(
            "SELECT step, time_ms, loss, ce, pet, orth, alpha, pet_lambda, phase, lr, grad_norm, \
             tokens, tokens_per_s, loss_smooth, {gauges}extra \
             FROM metrics ORDER BY step DESC LIMIT 1"
        ),
        [],
        |r| {
            let mut m = Map::new();
            let num = |i: usize| -> rusqlite::Result<Value> {
                Ok(r.get::<_, Option<f64>>(i)?
                    .filter(|v| v.is_finite())
                    .map_or(Value::Null, |v| json!(v)))
            };
            m.insert("step".into(), json!(r.get::<_, u64>(0)?));
            m.insert("time_ms".into(), json!(r.get::<_, i64>(1)?));
            for (i, k) in [
                (2, "loss"),
                (3, "ce"),
                (4, "pet"),
                (5, "orth"),
                (6, "alpha"),
                (7, "pet_lambda"),
            ] {
                m.insert(k.into(), num(i)?);
            }
            m.insert("phase".into(), json!(r.get::<_, String>(8)?));
            for (i, k) in [
                (9, "lr"),
                (10, "grad_norm"),
                (11, "tokens"),
                (12, "tokens_per_s"),
                (13, "loss_smooth"),
            ] {
                m.insert(k.into(), num(i)?);
            }
            for (i, k) in GAUGES.iter().enumerate() {
                m.insert(format!("gauge.{k}"), num(14 + i)?);
            }
            let extra: Option<String> = r.get(19)?;
            m.insert(
                "extra".into(),
                extra
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or(Value::Null),
            );
            Ok(m)
        },
    )
    .optional()
    .map_err(sql)
}

/// Progress: percent, elapsed seconds of the session, ETA from the mean time of the session's
/// last (up to) 50 steps, and that mean step time.
pub fn progress(conn: &Connection, s: &Session, now_ms: i64) -> Result<Value> {
    let percent = if s.total_steps > 0 {
        100.0 * s.step as f64 / s.total_steps as f64
    } else {
        0.0
    };
    let end = s.ended_ms.unwrap_or(now_ms);
    let elapsed = (end - s.started_ms).max(0) as f64 / 1000.0;
    let mut st = conn
        .prepare(
            "SELECT step, time_ms FROM metrics WHERE session_id = ?1 ORDER BY step DESC LIMIT 50",
        )
        .map_err(sql)?;
    let rows: Vec<(u64, i64)> = st
        .query_map([&s.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(sql)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql)?;
    let step_time = match (rows.first(), rows.last()) {
        (Some(&(s1, t1)), Some(&(s0, t0))) if s1 > s0 => {
            Some((t1 - t0).max(0) as f64 / 1000.0 / (s1 - s0) as f64)
        }
        _ => None,
    };
    let eta = step_time
        .filter(|_| live_status(s) == "running")
        .map(|t| t * s.total_steps.saturating_sub(s.step) as f64);
    Ok(json!({"percent": percent, "elapsed_s": elapsed, "eta_s": eta, "step_time_s": step_time}))
}

/// The closed transitions of the loss (`phase_transition` events) and of the reward of an RL run
/// (`reward_transition`), each with `curve`: `loss` or `reward`.
fn transitions(conn: &Connection) -> Result<Vec<Value>> {
    let mut st = conn
        .prepare(
            "SELECT kind, data FROM events \
             WHERE kind IN ('phase_transition', 'reward_transition') ORDER BY id",
        )
        .map_err(sql)?;
    let rows = st
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, data) = row.map_err(sql)?;
        if let Some(mut v) = data.and_then(|s| serde_json::from_str::<Value>(&s).ok()) {
            if let Some(m) = v.as_object_mut() {
                let curve = if kind == "reward_transition" {
                    "reward"
                } else {
                    "loss"
                };
                m.insert("curve".into(), json!(curve));
            }
            out.push(v);
        }
    }
    Ok(out)
}

/// The newest `limit` events after id `after`, newest first.
pub fn events(conn: &Connection, after: i64, limit: usize) -> Result<Vec<Value>> {
    let mut st = conn
        .prepare(
            "SELECT id, time_ms, step, kind, message, data FROM events WHERE id > ?1 \
             ORDER BY id DESC LIMIT ?2",
        )
        .map_err(sql)?;
    let rows = st
        .query_map(rusqlite::params![after, limit as i64], |r| {
            let data: Option<String> = r.get(5)?;
            Ok(json!({
                "id": r.get::<_, i64>(0)?,
                "time_ms": r.get::<_, i64>(1)?,
                "step": r.get::<_, Option<i64>>(2)?,
                "kind": r.get::<_, String>(3)?,
                "message": r.get::<_, String>(4)?,
                "data": data.and_then(|s| serde_json::from_str::<Value>(&s).ok()),
            }))
        })
        .map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

/// Checks a checkpoint folder against its manifest (the trainer's own check): sizes only
/// (cheap), or with `full` every file's sha256. Returns `(check, problem)`.
pub fn check_checkpoint(dir: &Path, full: bool) -> (&'static str, Option<String>) {
    if !dir.is_dir() {
        return ("missing", None);
    }
    if !dir.join("manifest.json").is_file() {
        return ("no-manifest", None);
    }
    match so8t_train::checkpoint::check_manifest(dir, full) {
        Ok(()) => ("ok", None),
        Err(why) => ("damaged", Some(why)),
    }
}

fn keep_rolling(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("config.resolved.yaml")).ok()?;
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    v.get("checkpoint")?.get("keep_rolling")?.as_u64()
}

/// Most metric rows one live update carries (the page re-fetches the downsampled curve past it).
pub const LIVE_ROWS: usize = 5000;

/// A live update's view of the overview (`/api/stream`): only the events and metric rows newer
/// than those already sent, and no session history.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    /// Events with an id above this one.
    pub events_after: i64,
    /// Metric rows of steps above this one (every series).
    pub rows_after: u64,
}

/// The overview of the run in `dir` (see `docs/dashboard-api.md`). `stats` carries the running
/// statistics between calls; with `None` the statistics are left out (`null`), which saves a
/// pass over every row when the caller gets them elsewhere (the page's first load takes them
/// from its whole-run curves).
pub fn overview(
    id: &str,
    dir: &Path,
    cfg: &DashboardConfig,
    stats: Option<&mut StatAcc>,
    live: Option<Live>,
    now_ms: i64,
) -> Result<Value> {
    let store = open(dir)?;
    let conn = store.connection();
    let sessions = store
        .sessions()
        .map_err(|e| Error::Unreadable(e.to_string()))?;
    let session = sessions
        .iter()
        .max_by_key(|s| s.started_ms)
        .cloned()
        .ok_or_else(|| Error::Unreadable(format!("{}: no session yet", dir.display())))?;
    let latest = latest(conn)?;
    let series = crate::metrics::run_series(&session.kind);
    let mut gauges = Map::new();
    let mut levels = Map::new();
    for g in GAUGES {
        let v = latest
            .as_ref()
            .and_then(|m| m.get(&format!("gauge.{g}")))
            .and_then(Value::as_f64);
        gauges.insert((*g).into(), json!(v));
        levels.insert((*g).into(), json!(cfg.level(g, v)));
    }
    let latest_json = latest.as_ref().map(|m| {
        let mut m = m.clone();
        m.retain(|k, _| !k.starts_with("gauge."));
        Value::Object(m)
    });
    let stats = match stats {
        Some(acc) => {
            let (_, last, _) = crate::metrics::extent(conn)?;
            if last < acc.step {
                *acc = StatAcc::default();
            }
            acc.extend(conn, &series)?;
            Value::Object(acc.stats())
        }
        None => Value::Null,
    };
    let checkpoints: Vec<Value> = store
        .checkpoints()
        .map_err(|e| Error::Unreadable(e.to_string()))?
        .into_iter()
        .map(|c| {
            let (check, problem) = check_checkpoint(&dir.join(&c.path), false);
            let mut v = serde_json::to_value(&c).unwrap_or(Value::Null);
            v["check"] = json!(check);
            if let Some(p) = problem {
                v["problem"] = json!(p);
            }
            v
        })
        .collect();
    let rolling = checkpoints
        .iter()
        .filter(|c| c["kind"] == "rolling" && c["check"] != "missing")
        .count();
    let evals = store.eval_runs().unwrap_or_default();
    let alerts: Vec<Alert> = alerts::for_run(cfg, &session, latest.as_ref(), now_ms);
    let mut out = json!({
        "id": id,
        "path": dir.display().to_string(),
        "session": session_json(&session),
        "series": series,
        "sessions": sessions.iter().map(session_json).collect::<Vec<_>>(),
        "progress": progress(conn, &session, now_ms)?,
        "latest": latest_json,
        "gauges": gauges,
        "levels": levels,
        "stats": stats,
        "transitions": transitions(conn)?,
        "checkpoints": checkpoints,
        "rolling": {"count": rolling, "keep": keep_rolling(dir)},
        "events": events(conn, live.map_or(0, |l| l.events_after), 200)?,
        "evals": evals.iter().map(|e| json!({
            "id": e.id, "time_ms": e.time_ms, "label": e.label, "model": e.model,
            "summary": e.summary, "settings": e.settings,
        })).collect::<Vec<_>>(),
        "alerts": alerts,
    });
    if let Some(l) = live {
        let rows = crate::metrics::after(conn, &series, l.rows_after, LIVE_ROWS)?;
        out["rows"] = serde_json::to_value(&rows).unwrap_or_default();
        if let Some(m) = out.as_object_mut() {
            m.remove("sessions");
        }
    }
    Ok(out)
}
