//! What a run records about itself: the session, one metrics row per step (loss terms,
//! schedules, tokens/s, the machine's load, the smoothed loss and phase transitions), the
//! checkpoints on disk and events — in the run database (`run.db`, see `so8t-store`), mirrored
//! as plain text in `metrics.jsonl` and `session.json` for tools without SQLite.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use so8t_store::{now_ms, Metric, Session, Status, Store, SystemSampler};

use crate::checkpoint::{self, TrainState};
use crate::error::{Error, Result};
use crate::step::StepMetrics;
use crate::transition::{Transition, TransitionDetector};

/// The open records of a run.
pub struct RunLog {
    dir: PathBuf,
    store: Store,
    /// The session being written.
    pub session: Session,
    metrics_path: PathBuf,
    metrics: File,
    sampler: SystemSampler,
    detector: TransitionDetector,
    /// RL runs: a second detector on the reward curve.
    reward_detector: Option<TransitionDetector>,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::invalid("run_dir", format!("{}: {e}", path.display()))
}

impl RunLog {
    /// Opens the records of the run in `dir` at `state` (a fresh run or the restored checkpoint):
    /// starts a session, drops rows of steps after `state.step` (a resume recomputes them
    /// identically), rebuilds the transition detector from the loss history.
    pub fn start(
        dir: &Path,
        kind: &str,
        config_hash: &str,
        total_steps: u64,
        state: &TrainState,
        resumed: bool,
    ) -> Result<Self> {
        let mut store = Store::open(dir)?;
        let run_id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let started = now_ms();
        let session = Session {
            id: format!("{run_id}-{started}"),
            run_id,
            kind: kind.into(),
            config_hash: config_hash.into(),
            started_ms: started,
            updated_ms: started,
            ended_ms: None,
            status: Status::Running,
            step: state.step,
            total_steps,
            epoch: state.epoch,
            best_loss: state.best_loss,
            last_checkpoint_ms: resumed.then_some(state.created_unix_ms as i64),
            resumed_from_step: resumed.then_some(state.step),
            pid: std::process::id(),
            error: None,
        };
        store.begin_session(&session)?;
        store.truncate_after(state.step)?;
        // metrics.jsonl: keep the lines up to the restored step.
        let metrics_path = dir.join("metrics.jsonl");
        let kept: String = std::fs::read_to_string(&metrics_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= state.step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        so8t_model::io::write_string_atomic(&metrics_path, &kept)?;
        let metrics = std::fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .map_err(|e| io(&metrics_path, e))?;
        let mut detector = TransitionDetector::for_run(total_steps);
        for (i, &l) in state.loss_history.iter().enumerate() {
            detector.observe(i as u64 + 1, l);
        }
        let reward_detector = (kind == "rl").then(|| {
            let mut d = TransitionDetector::for_run(total_steps);
            for (i, r) in reward_history(state).into_iter().enumerate() {
                d.observe(i as u64 + 1, r);
            }
            d
        });
        let mut log = Self {
            dir: dir.to_path_buf(),
            store,
            session,
            metrics_path,
            metrics,
            sampler: SystemSampler::new(Duration::from_secs(1)),
            detector,
            reward_detector,
        };
        log.sync_checkpoints()?;
        let (kind, msg) = if resumed {
            (
                "resume",
                format!("resumed from the checkpoint of step {}", state.step),
            )
        } else {
            ("start", format!("started a run of {total_steps} steps"))
        };
        let pid = log.session.pid;
        log.event(Some(state.step), kind, &msg, Some(json!({ "pid": pid })))?;
        log.write_session_json()?;
        Ok(log)
    }

    /// Logs an event of this session.
    pub fn event(
        &mut self,
        step: Option<u64>,
        kind: &str,
        message: &str,
        data: Option<serde_json::Value>,
    ) -> Result<()> {
        self.store
            .add_event(&self.session.id, step, kind, message, data)?;
        Ok(())
    }

    fn write_session_json(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.session)
            .map_err(|e| Error::invalid("json", e.to_string()))?;
        so8t_model::io::write_string_atomic(&self.dir.join(Session::JSON_FILE), &(text + "\n"))?;
        Ok(())
    }

    /// Logs a closed transition of the loss curve (event `phase_transition`, steps marked in the
    /// metrics) or of another curve (event `{curve}_transition`).
    fn transition_event(&mut self, t: &Transition, curve: &str) -> Result<()> {
        let kind = if curve == "loss" {
            self.store.mark_transition(t.start, t.end)?;
            "phase_transition".to_string()
        } else {
            format!("{curve}_transition")
        };
        let msg = format!(
            "{curve} regime changed over steps {}–{} ({}, peak {:.1}σ)",
            t.start,
            t.end,
            // A negative z is a slope turning down: for a loss a faster fall, for a reward a
            // slower rise (or a fall).
            match (t.direction, curve == "loss") {
                (crate::transition::Direction::Steeper, true) => "falling faster",
                (crate::transition::Direction::Flatter, true) => "flattening",
                (crate::transition::Direction::Steeper, false) => "rising slower",
                (crate::transition::Direction::Flatter, false) => "rising faster",
            },
            t.peak_z
        );
        let data = serde_json::to_value(t).ok();
        self.event(Some(t.end), &kind, &msg, data)
    }

    /// Writes one step: `line` to `metrics.jsonl`, `row` to the database, the session after
    /// `state`, and the loss transition that closed at this step (if any).
    fn record(
        &mut self,
        line: &serde_json::Value,
        row: &Metric,
        state: &TrainState,
        closed: Option<&Transition>,
    ) -> Result<()> {
        self.metrics
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| io(&self.metrics_path, e))?;
        self.session.step = state.step;
        self.session.epoch = state.epoch;
        self.session.best_loss = state.best_loss;
        self.store.record_step(&self.session, row)?;
        if let Some(t) = closed {
            self.transition_event(t, "loss")?;
        }
        self.write_session_json()
    }

    /// Records step `m` (taken in `elapsed`) and the loop state after it.
    pub fn step(&mut self, m: &StepMetrics, state: &TrainState, elapsed: Duration) -> Result<()> {
        let obs = self.detector.observe(m.step, m.loss);
        let tokens_per_s = m.tokens as f64 / elapsed.as_secs_f64().max(1e-9);
        let mut line =
            serde_json::to_value(m).map_err(|e| Error::invalid("json", e.to_string()))?;
        line["tokens_per_s"] = json!(tokens_per_s);
        line["loss_smooth"] = json!(obs.smooth);
        line["in_transition"] = json!(obs.in_transition);
        let row = Metric {
            step: m.step,
            time_ms: now_ms(),
            loss: m.loss,
            ce: m.ce,
            pet: m.pet,
            orth: m.orth,
            alpha: m.alpha,
            pet_lambda: m.pet_lambda,
            phase: m.phase.as_str().into(),
            lr: m.lr,
            grad_norm: m.grad_norm,
            tokens: m.tokens as u64,
            tokens_per_s,
            loss_smooth: Some(obs.smooth),
            in_transition: obs.in_transition,
            system: self.sampler.sample(),
            extra: (m.alpha_pull != 0.0).then(|| json!({ "alpha_pull": m.alpha_pull })),
        };
        self.record(&line, &row, state, obs.closed.as_ref())
    }

    /// Records RL step `m` (taken in `elapsed`) and the loop state after it: the loss columns
    /// hold the update's loss (no CE, PET), every RL term goes to `extra`; the reward curve has
    /// its own transition detector (events `reward_transition`).
    pub fn rl_step(
        &mut self,
        m: &crate::rl::step::RlMetrics,
        state: &TrainState,
        elapsed: Duration,
    ) -> Result<()> {
        let obs = self.detector.observe(m.step, m.loss);
        let reward_obs = self
            .reward_detector
            .as_mut()
            .map(|d| d.observe(m.step, m.reward));
        let tokens_per_s = m.tokens as f64 / m.rollout_secs.max(1e-9);
        let mut line =
            serde_json::to_value(m).map_err(|e| Error::invalid("json", e.to_string()))?;
        line["rollout_tokens_per_s"] = json!(tokens_per_s);
        line["step_secs"] = json!(elapsed.as_secs_f64());
        line["loss_smooth"] = json!(obs.smooth);
        line["in_transition"] = json!(obs.in_transition);
        line["reward_smooth"] = json!(reward_obs.as_ref().map(|o| o.smooth));
        // The columns' values are not repeated in `extra`.
        let mut extra = line.clone();
        if let Some(o) = extra.as_object_mut() {
            for k in ["step", "loss", "orth", "alpha", "lr", "grad_norm", "tokens"] {
                o.remove(k);
            }
        }
        let row = Metric {
            step: m.step,
            time_ms: now_ms(),
            loss: m.loss,
            ce: 0.0,
            pet: 0.0,
            orth: m.orth,
            alpha: m.alpha,
            pet_lambda: 0.0,
            phase: "rl".into(),
            lr: m.lr,
            grad_norm: m.grad_norm,
            tokens: m.tokens as u64,
            tokens_per_s,
            loss_smooth: Some(obs.smooth),
            in_transition: obs.in_transition,
            system: self.sampler.sample(),
            extra: Some(extra),
        };
        self.record(&line, &row, state, obs.closed.as_ref())?;
        match reward_obs.and_then(|o| o.closed) {
            Some(t) => self.transition_event(&t, "reward"),
            None => Ok(()),
        }
    }

    fn sync_checkpoints(&mut self) -> Result<()> {
        let list: Vec<so8t_store::Checkpoint> = checkpoint::list(&self.dir)?
            .into_iter()
            .map(|c| so8t_store::Checkpoint {
                step: c.step,
                kind: c.kind.as_str().into(),
                path: c
                    .dir
                    .strip_prefix(&self.dir)
                    .unwrap_or(&c.dir)
                    .display()
                    .to_string(),
                created_ms: std::fs::metadata(&c.dir)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64),
                bytes: c.bytes,
            })
            .collect();
        self.store.set_checkpoints(&list)?;
        Ok(())
    }

    /// Records a checkpoint just written to `path` for `state`.
    pub fn checkpoint(&mut self, state: &TrainState, path: &Path) -> Result<()> {
        self.metrics
            .sync_data()
            .map_err(|e| io(&self.metrics_path, e))?;
        self.session.last_checkpoint_ms = Some(state.created_unix_ms as i64);
        self.store.update_session(&self.session)?;
        self.sync_checkpoints()?;
        let rel = path
            .strip_prefix(&self.dir)
            .unwrap_or(path)
            .display()
            .to_string();
        self.event(
            Some(state.step),
            "checkpoint",
            &format!("{} checkpoint at step {}", state.kind.as_str(), state.step),
            Some(json!({ "path": rel, "kind": state.kind.as_str() })),
        )?;
        self.write_session_json()
    }

    /// Ends the session with `status` (and the error that ended it).
    pub fn finish(&mut self, status: Status, error: Option<String>) -> Result<()> {
        if status == Status::Completed {
            if let Some(t) = self.detector.finish() {
                self.transition_event(&t, "loss")?;
            }
            if let Some(t) = self.reward_detector.as_mut().and_then(|d| d.finish()) {
                self.transition_event(&t, "reward")?;
            }
        }
        self.session.status = status;
        self.session.ended_ms = Some(now_ms());
        self.session.error = error.clone();
        self.store.update_session(&self.session)?;
        let msg = match &error {
            Some(e) => format!("{} at step {}: {e}", status.as_str(), self.session.step),
            None => format!("{} at step {}", status.as_str(), self.session.step),
        };
        let step = self.session.step;
        self.event(Some(step), status.as_str(), &msg, None)?;
        self.metrics
            .sync_data()
            .map_err(|e| io(&self.metrics_path, e))?;
        self.write_session_json()
    }
}

/// The reward history an RL checkpoint keeps in `extra.reward_history` (empty otherwise).
pub fn reward_history(state: &TrainState) -> Vec<f64> {
    state
        .extra
        .as_ref()
        .and_then(|e| e.get("reward_history"))
        .and_then(|h| h.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default()
}
