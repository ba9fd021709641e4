//! Curves out of the `metrics` table: named series as SQL expressions, raw rows after a step for
//! live appending, CSV export and summary statistics. Downsampling is in [`crate::downsample`].

use std::fmt::Write as _;

use rusqlite::{params, Connection};

pub use crate::downsample::downsample;
use serde::Serialize;

use crate::{Error, Result};

/// The fixed series and the SQL expression of each.
const SERIES: &[(&str, &str)] = &[
    ("loss", "loss"),
    ("ce", "ce"),
    ("pet", "pet"),
    ("orth", "orth"),
    ("loss_smooth", "loss_smooth"),
    ("alpha", "alpha"),
    ("pet_lambda", "pet_lambda"),
    ("lr", "lr"),
    ("grad_norm", "grad_norm"),
    ("tokens", "tokens"),
    ("tokens_per_s", "tokens_per_s"),
    ("in_transition", "in_transition"),
    ("cpu_pct", "cpu_pct"),
    (
        "ram_pct",
        "100.0 * ram_used_bytes / NULLIF(ram_total_bytes, 0)",
    ),
    ("rss_mb", "rss_bytes / 1048576.0"),
    ("gpu_util_pct", "gpu_util_pct"),
    (
        "vram_pct",
        "100.0 * vram_used_bytes / NULLIF(vram_total_bytes, 0)",
    ),
    ("gpu_temp_c", "gpu_temp_c"),
];

/// The series of RL runs (`so8t rl`): numeric keys of each step's `extra` JSON, by name.
const RL_SERIES: &[&str] = &[
    "reward",
    "reward_smooth",
    "reward_class",
    "reward_format",
    "reward_leak",
    "reward_overlength",
    "accuracy",
    "parsed",
    "kl",
    "beta",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "answer_tokens",
];

/// Every named series (the fixed ones, then the RL ones), in display order.
pub fn series_names() -> impl Iterator<Item = &'static str> {
    SERIES
        .iter()
        .map(|(n, _)| *n)
        .chain(RL_SERIES.iter().copied())
}

/// The series a run whose session is of `kind` has: the fixed ones, plus the RL ones for `rl`.
pub fn run_series(kind: &str) -> Vec<String> {
    let rl: &[&str] = if kind == "rl" { RL_SERIES } else { &[] };
    SERIES
        .iter()
        .map(|(n, _)| *n)
        .chain(rl.iter().copied())
        .map(str::to_string)
        .collect()
}

/// The SQL expression of a series name: a fixed one, an RL one or `extra.KEY` (a numeric key of
/// the `extra` JSON). `Err` says what names exist.
pub fn expr(name: &str) -> Result<String> {
    if let Some((_, e)) = SERIES.iter().find(|(n, _)| *n == name) {
        return Ok((*e).to_string());
    }
    if RL_SERIES.contains(&name) {
        return Ok(format!("json_extract(extra, '$.{name}')"));
    }
    if let Some(key) = name.strip_prefix("extra.") {
        let ok = !key.is_empty()
            && key.len() <= 64
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            return Ok(format!("json_extract(extra, '$.{key}')"));
        }
    }
    Err(Error::BadRequest(format!(
        "unknown series {name:?}; known: {}, extra.KEY",
        series_names().collect::<Vec<_>>().join(", ")
    )))
}

/// Parses `a,b,c` into validated series names (at least one, at most 32).
pub fn parse_series(list: &str) -> Result<Vec<String>> {
    let names: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() || names.len() > 32 {
        return Err(Error::BadRequest(
            "series: give 1 to 32 comma-separated names".into(),
        ));
    }
    for n in &names {
        expr(n)?;
    }
    Ok(names)
}

/// One series' values per bucket.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Values {
    /// Mean of each bucket (the value itself for raw rows).
    pub mean: Vec<Option<f64>>,
    /// Minimum of each bucket (omitted for raw rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<Vec<Option<f64>>>,
    /// Maximum of each bucket (omitted for raw rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<Vec<Option<f64>>>,
}

/// Curves of several series over one step range.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Curves {
    /// The series, in request order.
    pub series: Vec<String>,
    /// Steps per bucket (1: raw rows).
    pub bucket: u64,
    /// Rows in the range.
    pub total: u64,
    /// First step of the range.
    pub from: u64,
    /// Last step of the range.
    pub to: u64,
    /// The last step of each bucket.
    pub step: Vec<u64>,
    /// The time of each bucket's last step, Unix ms.
    pub time_ms: Vec<i64>,
    /// Values by series name.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// More rows existed than were returned (raw mode only).
    pub truncated: bool,
    /// Whole-run statistics of each series (mean, min, max, last), from the same pass, when
    /// the curves cover the whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<serde_json::Map<String, serde_json::Value>>,
}

pub(crate) fn sql(e: rusqlite::Error) -> Error {
    Error::Sql(e.to_string())
}

/// First step, last step and row count of the run.
pub fn extent(conn: &Connection) -> Result<(u64, u64, u64)> {
    conn.query_row(
        "SELECT COALESCE(MIN(step), 0), COALESCE(MAX(step), 0), COUNT(*) FROM metrics",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .map_err(sql)
}

/// Raw rows after `after` (at most `limit`; `truncated` when more exist).
pub fn after(conn: &Connection, series: &[String], after: u64, limit: usize) -> Result<Curves> {
    let q = select(series, "WHERE step > ?1 ORDER BY step LIMIT ?2")?;
    let mut st = conn.prepare(&q).map_err(sql)?;
    let mut out = Curves {
        series: series.to_vec(),
        bucket: 1,
        from: after + 1,
        ..Default::default()
    };
    let mut cols: Vec<Vec<Option<f64>>> = vec![Vec::new(); series.len()];
    let mut rows = st.query(params![after, limit as i64 + 1]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        if out.step.len() == limit {
            out.truncated = true;
            break;
        }
        out.step.push(r.get(0).map_err(sql)?);
        out.time_ms.push(r.get(1).map_err(sql)?);
        for (i, c) in cols.iter_mut().enumerate() {
            c.push(num(r, 2 + i));
        }
    }
    out.total = out.step.len() as u64;
    out.to = out.step.last().copied().unwrap_or(after);
    for (name, mean) in series.iter().zip(cols) {
        out.values.insert(
            name.clone(),
            json(&Values {
                mean,
                ..Default::default()
            }),
        );
    }
    Ok(out)
}

pub(crate) fn fill_empty(out: &mut Curves) {
    for name in &out.series {
        out.values.insert(name.clone(), json(&Values::default()));
    }
}

/// Column `i` of a row as a finite number (REAL or INTEGER), else None — read without
/// rusqlite's conversion machinery, which dominates long scans.
pub(crate) fn num(r: &rusqlite::Row, i: usize) -> Option<f64> {
    match r.get_ref(i) {
        Ok(rusqlite::types::ValueRef::Real(v)) => finite(Some(v)),
        Ok(rusqlite::types::ValueRef::Integer(v)) => Some(v as f64),
        _ => None,
    }
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

pub(crate) fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Writes every raw row of `from..=to` as CSV (`step,time_ms,<series…>`) into `out`.
pub fn csv(
    conn: &Connection,
    series: &[String],
    from: Option<u64>,
    to: Option<u64>,
    out: &mut String,
) -> Result<u64> {
    let q = select(series, "WHERE step BETWEEN ?1 AND ?2 ORDER BY step")?;
    let mut st = conn.prepare(&q).map_err(sql)?;
    out.push_str("step,time_ms");
    for s in series {
        out.push(',');
        out.push_str(s);
    }
    out.push('\n');
    let mut n = 0;
    let mut rows = st
        .query(params![from.unwrap_or(0), to.unwrap_or(i64::MAX as u64)])
        .map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let step: u64 = r.get(0).map_err(sql)?;
        let t: i64 = r.get(1).map_err(sql)?;
        let _ = write!(out, "{step},{t}");
        for i in 0..series.len() {
            out.push(',');
            if let Some(v) = num(r, 2 + i) {
                let _ = write!(out, "{v}");
            }
        }
        out.push('\n');
        n += 1;
    }
    Ok(n)
}

/// Mean, minimum, maximum and last value of one series.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Stat {
    /// Mean over the rows with a reading.
    pub mean: Option<f64>,
    /// Smallest reading.
    pub min: Option<f64>,
    /// Largest reading.
    pub max: Option<f64>,
    /// The newest step's reading.
    pub last: Option<f64>,
}

/// Count, sum, minimum and maximum of the readings of one series (NULLs skipped), plus the
/// newest reading: a bucket of a curve, or a whole run's statistics.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Acc {
    sum: f64,
    n: u64,
    min: f64,
    max: f64,
    last: Option<f64>,
}

impl Acc {
    /// Adds the next row's reading.
    pub(crate) fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v {
            if self.n == 0 {
                (self.min, self.max) = (v, v);
            } else {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
            self.sum += v;
            self.n += 1;
        }
        self.last = v;
    }

    /// Adds the readings of the rows after this one's (`o` covers later steps).
    pub(crate) fn merge(&mut self, o: &Acc) {
        let last = o.last;
        if o.n > 0 {
            if self.n == 0 {
                *self = *o;
            } else {
                self.sum += o.sum;
                self.n += o.n;
                self.min = self.min.min(o.min);
                self.max = self.max.max(o.max);
            }
        }
        self.last = last;
    }

    /// Mean, min, max (None without readings) and the newest reading.
    pub(crate) fn stat(&self) -> Stat {
        let some = self.n > 0;
        Stat {
            mean: some.then(|| self.sum / self.n as f64),
            min: some.then_some(self.min),
            max: some.then_some(self.max),
            last: self.last,
        }
    }
}

/// `SELECT step, time_ms, <one expression per series> FROM metrics {tail}`.
pub(crate) fn select(series: &[String], tail: &str) -> Result<String> {
    let mut q = String::from("SELECT step, time_ms");
    for s in series {
        let _ = write!(q, ", {}", expr(s)?);
    }
    let _ = write!(q, " FROM metrics {tail}");
    Ok(q)
}

/// Running sums behind [`Stat`]s, extended with new rows only (cached per run by the server).
#[derive(Debug, Clone, Default)]
pub struct StatAcc {
    /// Highest step included.
    pub step: u64,
    names: Vec<String>,
    accs: Vec<Acc>,
}

impl StatAcc {
    /// Adds the rows after `self.step` for each of `names` (a different list starts over).
    pub fn extend(&mut self, conn: &Connection, names: &[String]) -> Result<()> {
        if self.names != names {
            *self = StatAcc {
                names: names.to_vec(),
                ..StatAcc::default()
            };
        }
        self.accs.resize(names.len(), Acc::default());
        let q = select(names, "WHERE step > ?1 ORDER BY step")?;
        let mut st = conn.prepare(&q).map_err(sql)?;
        let mut rows = st.query([self.step]).map_err(sql)?;
        while let Some(r) = rows.next().map_err(sql)? {
            self.step = r.get(0).map_err(sql)?;
            for (i, acc) in self.accs.iter_mut().enumerate() {
                acc.add(num(r, 2 + i));
            }
        }
        Ok(())
    }

    /// The statistics by series name.
    pub fn stats(&self) -> serde_json::Map<String, serde_json::Value> {
        self.names
            .iter()
            .zip(&self.accs)
            .map(|(name, acc)| (name.clone(), json(&acc.stat())))
            .collect()
    }
}
