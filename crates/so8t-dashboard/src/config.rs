//! `dashboard.yaml`: where the runs are, how often the page refreshes, the port, the four
//! warning thresholds of the seed's dashboard, and alerting. Every field is optional; command-line
//! flags override the file. Documented field by field in `docs/formats/dashboard-config.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The dashboard's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// The folder searched for run folders (`run.db`) and pipelines (`pipeline.json`).
    pub runs_dir: PathBuf,
    /// Seconds between live updates, 1–30 (the page's slider starts here).
    pub refresh_interval: u64,
    /// Address to bind; `127.0.0.1` keeps the dashboard on this machine.
    pub host: String,
    /// Port.
    pub port: u16,
    /// When set, every API request needs `Authorization: Bearer TOKEN` or `?token=TOKEN`.
    pub token: Option<String>,
    /// GPU temperature warning threshold, °C.
    pub gpu_temp_warning: f64,
    /// CPU use warning threshold, %.
    pub cpu_usage_warning: f64,
    /// RAM use warning threshold, %.
    pub memory_usage_warning: f64,
    /// VRAM use warning threshold, %.
    pub gpu_memory_usage_warning: f64,
    /// A gauge turns orange at this fraction of its threshold (red at the threshold).
    pub caution_ratio: f64,
    /// A running session without an update for this many minutes raises a `stalled` alert.
    pub stall_minutes: f64,
    /// Most points per curve sent to the page (the server downsamples longer runs).
    pub max_points: usize,
    /// Alerts are also POSTed as JSON to this URL (once when raised).
    pub webhook: Option<String>,
    /// How deep below `runs_dir` to look for runs and pipelines.
    pub scan_depth: usize,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            runs_dir: PathBuf::from("runs"),
            refresh_interval: 5,
            host: "127.0.0.1".into(),
            port: 8501,
            token: None,
            gpu_temp_warning: 75.0,
            cpu_usage_warning: 90.0,
            memory_usage_warning: 90.0,
            gpu_memory_usage_warning: 95.0,
            caution_ratio: 0.8,
            stall_minutes: 10.0,
            max_points: 1000,
            webhook: None,
            scan_depth: 4,
        }
    }
}

impl DashboardConfig {
    /// Reads a `dashboard.yaml`; errors name the file, the field and what was expected.
    /// A relative `runs_dir` is taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let mut cfg: Self = serde_path_to_error::deserialize(de).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: format!("{}: {}", e.path(), e.inner()),
        })?;
        if cfg.runs_dir.is_relative() {
            if let Some(dir) = path.parent() {
                cfg.runs_dir = dir.join(&cfg.runs_dir);
            }
        }
        cfg.validate().map_err(|msg| Error::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    /// Checks the ranges (also after flags were applied).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=30).contains(&self.refresh_interval) {
            return Err(format!(
                "refresh_interval: {} s is outside 1..=30",
                self.refresh_interval
            ));
        }
        for (name, v) in [
            ("gpu_temp_warning", self.gpu_temp_warning),
            ("cpu_usage_warning", self.cpu_usage_warning),
            ("memory_usage_warning", self.memory_usage_warning),
            ("gpu_memory_usage_warning", self.gpu_memory_usage_warning),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name}: {v} is not a non-negative number"));
            }
        }
        if !(self.caution_ratio > 0.0 && self.caution_ratio <= 1.0) {
            return Err(format!(
                "caution_ratio: {} is outside (0, 1]",
                self.caution_ratio
            ));
        }
        if !(self.stall_minutes.is_finite() && self.stall_minutes > 0.0) {
            return Err(format!(
                "stall_minutes: {} is not positive",
                self.stall_minutes
            ));
        }
        if !(10..=20_000).contains(&self.max_points) {
            return Err(format!(
                "max_points: {} is outside 10..=20000",
                self.max_points
            ));
        }
        if let Some(w) = &self.webhook {
            if !(w.starts_with("http://") || w.starts_with("https://")) {
                return Err(format!("webhook: {w:?} is not an http(s) URL"));
            }
        }
        Ok(())
    }

    /// The threshold of a gauge (`cpu_pct`, `ram_pct`, `vram_pct`, `gpu_temp_c`); GPU utilization
    /// has none (it is meant to be high).
    pub fn threshold(&self, gauge: &str) -> Option<f64> {
        match gauge {
            "cpu_pct" => Some(self.cpu_usage_warning),
            "ram_pct" => Some(self.memory_usage_warning),
            "vram_pct" => Some(self.gpu_memory_usage_warning),
            "gpu_temp_c" => Some(self.gpu_temp_warning),
            _ => None,
        }
    }

    /// `green`, `orange`, `red` for a reading of `gauge`, `none` without a reading.
    pub fn level(&self, gauge: &str, value: Option<f64>) -> &'static str {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            return "none";
        };
        match self.threshold(gauge) {
            Some(t) if v >= t => "red",
            Some(t) if v >= self.caution_ratio * t => "orange",
            _ => "green",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_thresholds() {
        let c = DashboardConfig::default();
        assert_eq!(c.level("gpu_temp_c", Some(74.9)), "orange");
        assert_eq!(c.level("gpu_temp_c", Some(75.0)), "red");
        assert_eq!(c.level("gpu_temp_c", Some(59.9)), "green");
        assert_eq!(c.level("cpu_pct", None), "none");
        assert_eq!(c.level("cpu_pct", Some(f64::NAN)), "none");
        assert_eq!(c.level("gpu_util_pct", Some(100.0)), "green");
    }

    #[test]
    fn yaml_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dashboard.yaml");
        std::fs::write(&p, "port: 8600\ngpu_temp_warning: hot\n").unwrap();
        let e = DashboardConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("gpu_temp_warning") && e.contains("dashboard.yaml"),
            "{e}"
        );
        std::fs::write(&p, "refresh_interval: 60\n").unwrap();
        let e = DashboardConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("1..=30"), "{e}");
        std::fs::write(&p, "colour: red\n").unwrap();
        let e = DashboardConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        std::fs::write(&p, "runs_dir: r\nport: 9000\nrefresh_interval: 2\n").unwrap();
        let c = DashboardConfig::load(&p).unwrap();
        assert_eq!((c.port, c.refresh_interval), (9000, 2));
        assert_eq!(c.runs_dir, dir.path().join("r"));
    }
}
