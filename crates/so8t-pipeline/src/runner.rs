//! Runs the steps in order under the pipeline folder's lock: a finished step whose inputs are
//! unchanged and whose outputs still hash as recorded is skipped; any other step runs in a
//! staging folder that replaces its output folder only when it succeeds; a failing step is
//! retried with backoff and then stops the pipeline. Notifications go out at the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::PipelineConfig;
use crate::envcheck;
use crate::journal::{
    hash_and_sync_tree, hash_parts, hash_tree, now_ms, outputs_hash, Journal, Loaded, StepRecord,
    StepStatus,
};
use crate::lock::PidLock;
use crate::notify::{self, Event};
use crate::steps::{steps, Ctx};
use crate::watch::sleep_unless_stopped;
use crate::{registry, PipelineError};

/// What a step reports, saved in its output folder (and hashed with it).
pub const INFO: &str = "info.json";
/// The copy of the config the pipeline runs (what `--resume` without `--config` uses).
pub const CONFIG_COPY: &str = "pipeline.yaml";
/// The lock file.
pub const LOCK: &str = "pipeline.lock";

/// How to run.
pub struct RunOptions {
    /// The configuration.
    pub config: PipelineConfig,
    /// Its folder (relative paths in it start there).
    pub cfg_dir: PathBuf,
    /// The pipeline folder.
    pub dir: PathBuf,
    /// Set by SIGINT/SIGTERM.
    pub interrupt: Arc<AtomicBool>,
    /// Progress lines.
    pub log: crate::steps::Log,
    /// Record the pipeline for power-on resume while it is unfinished.
    pub register: bool,
}

/// What a finished run did.
#[derive(Debug)]
pub struct Outcome {
    /// Steps that ran.
    pub ran: Vec<String>,
    /// Steps skipped (unchanged).
    pub skipped: Vec<String>,
    /// The A/B report (Markdown).
    pub report: Option<PathBuf>,
    /// The journal at the end.
    pub journal: Journal,
}

/// Runs (or resumes) the pipeline in `o.dir`.
pub fn run(o: RunOptions) -> Result<Outcome, PipelineError> {
    let dir = &o.dir;
    std::fs::create_dir_all(dir.join("steps")).map_err(|e| PipelineError::io(dir, e))?;
    let _lock = PidLock::acquire(&dir.join(LOCK), "a pipeline")?;
    let yaml = serde_yaml_ng::to_string(&o.config).map_err(|e| PipelineError::Config {
        path: dir.join(CONFIG_COPY),
        msg: e.to_string(),
    })?;
    let copy = format!(
        "# The config this pipeline runs (cfg_dir: {}); `so8t pipeline run --dir DIR --resume` reads it.\n{yaml}",
        o.cfg_dir.display()
    );
    so8t_model::io::write_string_atomic(&dir.join(CONFIG_COPY), &copy)
        .map_err(|e| PipelineError::step("config", e))?;
    let (mut journal, loaded) = Journal::load(dir)?;
    if let Loaded::Damaged(aside, why) = &loaded {
        (o.log)(&format!(
            "warning: the journal was damaged ({why}); moved to {}; every step is checked again",
            aside.display()
        ));
    }
    let all = steps();
    journal.name = o.config.name.clone();
    journal.status = "running".into();
    journal.pid = std::process::id();
    journal.started_ms = now_ms();
    journal.finished_ms = 0;
    journal.error = None;
    journal.order = all.iter().map(|s| s.name.to_string()).collect();
    journal.save(dir)?;
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    if o.register {
        let e = registry::Entry {
            kind: "pipeline".into(),
            dir: abs.clone(),
            args: vec![
                "pipeline".into(),
                "run".into(),
                "--dir".into(),
                abs.display().to_string(),
                "--resume".into(),
            ],
            registered_unix: (now_ms() / 1000) as u64,
        };
        if let Err(e) = registry::register(e) {
            tracing::warn!("could not register the pipeline for power-on resume: {e}");
        }
    }
    let ctx = Ctx {
        cfg: &o.config,
        cfg_dir: o.cfg_dir.clone(),
        dir: dir.clone(),
        interrupt: Arc::clone(&o.interrupt),
        log: Arc::clone(&o.log),
    };
    let started = Instant::now();
    let result = run_steps(&ctx, &all, &mut journal);
    journal.finished_ms = now_ms();
    journal.status = match &result {
        Ok(_) => "completed",
        Err(_) if o.interrupt.load(Ordering::SeqCst) => "interrupted",
        Err(_) => "failed",
    }
    .into();
    journal.error = result.as_ref().err().map(|e| e.to_string());
    let status = journal.status.clone();
    let report = journal.report(dir);
    journal.save(dir)?;
    if status == "completed" && o.register {
        if let Err(e) = registry::unregister(&abs) {
            tracing::warn!("could not unregister the pipeline: {e}");
        }
    }
    if status != "interrupted" {
        let ev = Event {
            title: format!("so8t pipeline {}: {status}", o.config.name),
            status: status.clone(),
            message: match &result {
                Ok(_) => format!("finished in {:.0} s", started.elapsed().as_secs_f64()),
                Err(e) => e.to_string(),
            },
            dir: abs,
            report: report.clone(),
            duration_s: started.elapsed().as_secs_f64(),
        };
        for out in notify::send(&o.config.notify, &ev) {
            if !out.ok {
                (o.log)(&format!("notification {}: {}", out.notifier, out.detail));
            }
        }
    }
    let (ran, skipped) = result?;
    Ok(Outcome {
        ran,
        skipped,
        report,
        journal,
    })
}

type Ran = (Vec<String>, Vec<String>);

fn run_steps(
    ctx: &Ctx<'_>,
    all: &[crate::steps::Step],
    journal: &mut Journal,
) -> Result<Ran, PipelineError> {
    let (mut ran, mut skipped) = (Vec::new(), Vec::new());
    let n = all.len();
    for (i, step) in all.iter().enumerate() {
        let perr = |msg: String| PipelineError::step(step.name, msg);
        let mut parts = vec![step.name.to_string(), (step.config)(ctx.cfg).to_string()];
        for d in step.deps {
            let rec = journal
                .steps
                .get(*d)
                .ok_or_else(|| perr(format!("step {d} has not run")))?;
            parts.push(format!("{d}={}", rec.outputs_hash));
        }
        parts.extend((step.external)(ctx).map_err(perr)?);
        let inputs_hash = hash_parts(&parts);
        let out = ctx.out(step.name);
        if let Some(rec) = journal.steps.get(step.name) {
            if rec.status == StepStatus::Done && rec.inputs_hash == inputs_hash {
                let same = hash_tree(&out).is_ok_and(|files| files == rec.outputs);
                if same && (step.still_valid)(ctx, &rec.info) {
                    (ctx.log)(&format!(
                        "== [{}/{n}] {}: unchanged, skipped",
                        i + 1,
                        step.name
                    ));
                    skipped.push(step.name.to_string());
                    continue;
                }
                (ctx.log)(&format!(
                    "   {}: its outputs changed since it finished (damaged or edited): redoing it",
                    step.name
                ));
            }
        }
        (ctx.log)(&format!(
            "\n== [{}/{n}] {}: {}",
            i + 1,
            step.name,
            step.what
        ));
        envcheck::before(ctx, step.name)
            .map_err(|m| PipelineError::Env(format!("{}: {m}", step.name)))?;
        let mut rec = StepRecord {
            status: StepStatus::Running,
            inputs_hash,
            outputs_hash: String::new(),
            outputs: Vec::new(),
            attempts: 0,
            started_ms: now_ms(),
            finished_ms: 0,
            error: None,
            info: Value::Null,
        };
        let staging = ctx
            .dir
            .join("steps")
            .join(format!(".{}.partial", step.name));
        loop {
            rec.attempts += 1;
            journal.put(&ctx.dir, step.name, &rec)?;
            let t0 = Instant::now();
            match attempt(ctx, step, &staging, &out) {
                Ok((info, files)) => {
                    rec.status = StepStatus::Done;
                    rec.outputs_hash = outputs_hash(&files);
                    rec.outputs = files;
                    rec.info = info;
                    rec.error = None;
                    rec.finished_ms = now_ms();
                    journal.put(&ctx.dir, step.name, &rec)?;
                    (ctx.log)(&format!("   done in {:.1} s", t0.elapsed().as_secs_f64()));
                    ran.push(step.name.to_string());
                    break;
                }
                Err(e) => {
                    let interrupted = ctx.interrupt.load(Ordering::SeqCst);
                    if !interrupted && rec.attempts <= ctx.cfg.retries {
                        rec.error = Some(e.clone());
                        let wait = ctx.cfg.backoff_secs * 2f64.powi(rec.attempts as i32 - 1);
                        (ctx.log)(&format!(
                            "   attempt {} failed: {e}; retrying in {wait:.0} s",
                            rec.attempts
                        ));
                        if sleep_unless_stopped(Duration::from_secs_f64(wait), &ctx.interrupt) {
                            continue;
                        }
                    }
                    if interrupted || ctx.interrupt.load(Ordering::SeqCst) {
                        rec.error = Some(format!("interrupted: {e}"));
                        journal.put(&ctx.dir, step.name, &rec)?;
                        return Err(perr(format!("interrupted ({e}); resume with --resume")));
                    }
                    rec.error = Some(e.clone());
                    rec.status = StepStatus::Failed;
                    rec.finished_ms = now_ms();
                    journal.put(&ctx.dir, step.name, &rec)?;
                    return Err(perr(format!("failed after {} attempts: {e}", rec.attempts)));
                }
            }
        }
    }
    Ok((ran, skipped))
}

/// One attempt: the step in a fresh staging folder that then replaces `out`.
fn attempt(
    ctx: &Ctx<'_>,
    step: &crate::steps::Step,
    staging: &Path,
    out: &Path,
) -> Result<(Value, Vec<crate::journal::OutputFile>), String> {
    fn io(p: &Path) -> impl Fn(std::io::Error) -> String + '_ {
        move |e| format!("{}: {e}", p.display())
    }
    if staging.exists() {
        std::fs::remove_dir_all(staging).map_err(io(staging))?;
    }
    std::fs::create_dir_all(staging).map_err(io(staging))?;
    let info = (step.run)(ctx, staging)?;
    test_hold(step.name);
    let text = serde_json::to_string_pretty(&info).map_err(|e| e.to_string())?;
    so8t_model::io::write_string_atomic(&staging.join(INFO), &(text + "\n"))
        .map_err(|e| e.to_string())?;
    // One pass hashes the outputs and makes them durable before the rename publishes them.
    let files = hash_and_sync_tree(staging).map_err(io(staging))?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    std::fs::rename(staging, out).map_err(io(out))?;
    if let Some(parent) = out.parent() {
        std::fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(io(parent))?;
    }
    Ok((info, files))
}

/// For crash tests: `SO8T_PIPELINE_TEST_HOLD=STEP:MS` waits MS milliseconds after STEP wrote
/// its staging folder and before it is published, so a test can kill the process there.
fn test_hold(step: &str) {
    let Ok(v) = std::env::var("SO8T_PIPELINE_TEST_HOLD") else {
        return;
    };
    for part in v.split(',') {
        if let Some((s, ms)) = part.split_once(':') {
            if s == step {
                if let Ok(ms) = ms.parse::<u64>() {
                    std::thread::sleep(Duration::from_millis(ms));
                }
            }
        }
    }
}
