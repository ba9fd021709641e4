//! Alerts: a gauge past its threshold, a non-finite loss (or a run that failed because the loss
//! diverged), a running session without updates for `stall_minutes`, a failed session. Shown in
//! the page; with `webhook` set, each newly raised alert is POSTed once as JSON.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::{Map, Value};
use so8t_store::Session;

use crate::config::DashboardConfig;
use crate::overview::live_status;

/// One alert of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// `threshold`, `nan`, `stalled` or `failed`.
    pub kind: &'static str,
    /// The gauge of a threshold alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<&'static str>,
    /// `red` (act now) or `orange` (look).
    pub level: &'static str,
    /// One line for people.
    pub message: String,
    /// Since when it holds (the reading's or the session's time), Unix ms.
    pub since_ms: i64,
}

fn label(gauge: &str) -> (&'static str, &'static str) {
    match gauge {
        "cpu_pct" => ("CPU", "%"),
        "ram_pct" => ("RAM", "%"),
        "vram_pct" => ("VRAM", "%"),
        "gpu_temp_c" => ("GPU temperature", "°C"),
        _ => ("GPU", "%"),
    }
}

/// The alerts of one run from its newest session and metrics row.
pub fn for_run(
    cfg: &DashboardConfig,
    s: &Session,
    latest: Option<&Map<String, Value>>,
    now_ms: i64,
) -> Vec<Alert> {
    let mut out = Vec::new();
    let status = live_status(s);
    let time = latest
        .and_then(|m| m.get("time_ms"))
        .and_then(Value::as_i64)
        .unwrap_or(s.updated_ms);
    if status == "running" {
        for g in ["cpu_pct", "ram_pct", "vram_pct", "gpu_temp_c"] {
            let v = latest
                .and_then(|m| m.get(&format!("gauge.{g}")))
                .and_then(Value::as_f64);
            if cfg.level(g, v) == "red" {
                let (name, unit) = label(g);
                let t = cfg.threshold(g).unwrap_or_default();
                out.push(Alert {
                    kind: "threshold",
                    metric: Some(g),
                    level: "red",
                    message: format!("{name} {:.1} {unit} ≥ {t} {unit}", v.unwrap_or_default()),
                    since_ms: time,
                });
            }
        }
        let idle_min = (now_ms - s.updated_ms) as f64 / 60_000.0;
        if idle_min >= cfg.stall_minutes {
            out.push(Alert {
                kind: "stalled",
                metric: None,
                level: "orange",
                message: format!(
                    "no progress for {idle_min:.0} min (step {} of {})",
                    s.step, s.total_steps
                ),
                since_ms: s.updated_ms,
            });
        }
    }
    let loss_bad = latest
        .map(|m| m.get("loss").is_some_and(|v| v.is_null()) && m.contains_key("step"))
        .unwrap_or(false);
    let err = s.error.clone().unwrap_or_default();
    let diverged = ["NaN", "inf", "diverged", "non-finite"]
        .iter()
        .any(|w| err.contains(w));
    if loss_bad || (status == "failed" && diverged) {
        out.push(Alert {
            kind: "nan",
            metric: None,
            level: "red",
            message: if diverged {
                format!("the loss is not finite: {err}")
            } else {
                "the newest loss is not a finite number".into()
            },
            since_ms: time,
        });
    }
    if status == "failed" {
        out.push(Alert {
            kind: "failed",
            metric: None,
            level: "red",
            message: if err.is_empty() {
                "the session failed".into()
            } else {
                format!("the session failed: {err}")
            },
            since_ms: s.ended_ms.unwrap_or(s.updated_ms),
        });
    }
    out
}

/// Remembers which alerts were already sent, so each is posted once while it holds.
#[derive(Debug, Default)]
pub struct Sent {
    raised: HashSet<String>,
}

impl Sent {
    fn key(run: &str, a: &Alert) -> String {
        format!("{run}\u{1f}{}\u{1f}{}", a.kind, a.metric.unwrap_or(""))
    }

    /// Marks an alert as not sent (its delivery failed): the next round tries again.
    pub fn unmark(&mut self, run: &str, a: &Alert) {
        self.raised.remove(&Self::key(run, a));
    }

    /// The alerts of `run` not sent yet (and forgets the ones that cleared).
    pub fn fresh<'a>(&mut self, run: &str, alerts: &'a [Alert]) -> Vec<&'a Alert> {
        let keys: Vec<String> = alerts.iter().map(|a| Self::key(run, a)).collect();
        let prefix = format!("{run}\u{1f}");
        self.raised
            .retain(|k| !k.starts_with(&prefix) || keys.contains(k));
        alerts
            .iter()
            .zip(keys)
            .filter_map(|(a, k)| self.raised.insert(k).then_some(a))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use so8t_store::Status;

    fn session(status: Status, updated_ms: i64, error: Option<&str>) -> Session {
        Session {
            id: "r-1".into(),
            run_id: "r".into(),
            kind: "sft".into(),
            config_hash: String::new(),
            started_ms: 0,
            updated_ms,
            ended_ms: None,
            status,
            step: 5,
            total_steps: 10,
            epoch: 0,
            best_loss: None,
            last_checkpoint_ms: None,
            resumed_from_step: None,
            pid: std::process::id(),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn raises_threshold_stall_nan_and_failed_alerts_once() {
        let cfg = DashboardConfig::default();
        let mut m = Map::new();
        m.insert("step".into(), json!(5));
        m.insert("time_ms".into(), json!(1000));
        m.insert("loss".into(), json!(2.0));
        m.insert("gauge.ram_pct".into(), json!(93.0));
        m.insert("gauge.cpu_pct".into(), json!(50.0));
        let s = session(Status::Running, 1000, None);
        let a = for_run(&cfg, &s, Some(&m), 2000);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!((a[0].kind, a[0].metric), ("threshold", Some("ram_pct")));
        let a = for_run(&cfg, &s, Some(&m), 1000 + 11 * 60_000);
        assert!(a.iter().any(|x| x.kind == "stalled"));
        m.insert("loss".into(), Value::Null);
        assert!(for_run(&cfg, &s, Some(&m), 2000)
            .iter()
            .any(|x| x.kind == "nan"));
        let f = session(
            Status::Failed,
            1000,
            Some("the gradient norm is NaN: the loss diverged"),
        );
        let a = for_run(&cfg, &f, None, 2000);
        let kinds: Vec<_> = a.iter().map(|x| x.kind).collect();
        assert_eq!(kinds, ["nan", "failed"]);

        let mut sent = Sent::default();
        assert_eq!(sent.fresh("r", &a).len(), 2);
        assert_eq!(sent.fresh("r", &a).len(), 0);
        assert_eq!(sent.fresh("r", &a[1..]).len(), 0);
        assert_eq!(
            sent.fresh("r", &a).len(),
            1,
            "a cleared alert is sent again"
        );
    }
}
