//! `so8t pipeline status`: the journal's steps with state and durations, the running step's
//! progress (training: step, total and ETA from the run's session), and whether the owner lives.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::journal::{now_ms, StepStatus};
use crate::lock::{pid_alive, read_pid};
use crate::runner::LOCK;

/// One step's line.
#[derive(Debug, Serialize)]
pub struct StepLine {
    /// Name.
    pub name: String,
    /// `pending`, `running`, `done`, `failed`.
    pub status: String,
    /// Seconds it took (or has been running).
    pub seconds: Option<f64>,
    /// Attempts of its last run.
    pub attempts: u32,
    /// Its last error.
    pub error: Option<String>,
    /// Progress of a running step, e.g. training `{"step": 40, "total": 300, "eta_s": 12}`.
    pub progress: Option<Value>,
}

/// The pipeline's status.
#[derive(Debug, Serialize)]
pub struct PipelineStatus {
    /// The folder.
    pub dir: String,
    /// The pipeline's name.
    pub name: String,
    /// `running`, `completed`, `failed`, `interrupted` (`running` whose process is gone reads
    /// `interrupted`), or `new`.
    pub status: String,
    /// The process holding the lock, if alive.
    pub pid: Option<u32>,
    /// The last error.
    pub error: Option<String>,
    /// Steps in order.
    pub steps: Vec<StepLine>,
    /// The A/B report once written.
    pub report: Option<String>,
}

fn training_progress(run_dir: &Path) -> Option<Value> {
    let s = so8t_store::Session::read_json(run_dir).ok()?;
    let done = s.step.saturating_sub(s.resumed_from_step.unwrap_or(0));
    let eta = (done > 0).then(|| {
        (s.updated_ms - s.started_ms) as f64 / 1000.0 / done as f64
            * s.total_steps.saturating_sub(s.step) as f64
    });
    Some(serde_json::json!({"step": s.step, "total": s.total_steps, "eta_s": eta}))
}

/// Reads the status of the pipeline in `dir` (never modifies it).
pub fn status(dir: &Path) -> Result<PipelineStatus, String> {
    let path = dir.join(crate::journal::JOURNAL);
    let journal = crate::journal::read(dir)
        .map_err(|why| format!("{}: damaged journal ({why})", path.display()))?
        .unwrap_or_default();
    let pid = read_pid(&dir.join(LOCK)).filter(|&p| pid_alive(p));
    let mut st = journal.status.clone();
    if st.is_empty() {
        st = "new".into();
    } else if st == "running" && pid.is_none() {
        st = "interrupted".into();
    }
    let now = now_ms();
    let mut steps = Vec::new();
    for name in &journal.order {
        let rec = journal.steps.get(name);
        let status = match rec.map(|r| r.status) {
            None => "pending",
            Some(StepStatus::Pending) => "pending",
            Some(StepStatus::Running) if pid.is_none() => "interrupted",
            Some(StepStatus::Running) => "running",
            Some(StepStatus::Done) => "done",
            Some(StepStatus::Failed) => "failed",
        };
        let seconds = rec.map(|r| {
            let end = if r.finished_ms > 0 {
                r.finished_ms
            } else {
                now
            };
            (end - r.started_ms).max(0) as f64 / 1000.0
        });
        let progress = if name == "train" && status != "done" {
            std::fs::read_dir(dir.join("work"))
                .ok()
                .and_then(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().starts_with("train-"))
                        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
                })
                .and_then(|e| training_progress(&e.path()))
        } else {
            None
        };
        steps.push(StepLine {
            name: name.clone(),
            status: status.into(),
            seconds,
            attempts: rec.map_or(0, |r| r.attempts),
            error: rec.and_then(|r| r.error.clone()),
            progress,
        });
    }
    let report = journal.report(dir).map(|p| p.display().to_string());
    Ok(PipelineStatus {
        dir: dir.display().to_string(),
        name: journal.name.clone(),
        status: st,
        pid,
        error: journal.error.clone(),
        steps,
        report,
    })
}
