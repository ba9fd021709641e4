//! Synthetic run folders (a real `run.db` with the documented schema, written through
//! `so8t-store`) for the dashboard's demo, tests and the scale benchmark: a decaying loss with
//! noise, the PET phases, a sigmoid α, a cosine learning rate, machine readings, checkpoints and a
//! phase-transition event. `so8t dashboard synth` writes them.

use std::path::Path;

use rusqlite::params;
use serde_json::json;
use so8t_store::{Checkpoint, Session, Status, Store};

use crate::{Error, Result};

/// What to write.
#[derive(Debug, Clone)]
pub struct SynthRun {
    /// Optimizer steps recorded.
    pub steps: u64,
    /// Steps the run is meant to take (≥ `steps`).
    pub total_steps: u64,
    /// Session state.
    pub status: Status,
    /// Noise seed.
    pub seed: u64,
    /// Milliseconds between steps.
    pub step_ms: i64,
    /// Start time, Unix ms.
    pub started_ms: i64,
}

fn sql(dir: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Sql(format!("{}: {e}", dir.display()))
}

/// The loss of step `s` (without noise): what tests compare against.
pub fn loss_at(s: u64, total: u64) -> f64 {
    2.0 + 6.0 * (-(s as f64) / (total as f64 / 8.0).max(1.0)).exp()
}

/// A cheap deterministic noise in [-0.5, 0.5).
fn noise(seed: u64, s: u64) -> f64 {
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(s.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}

/// Writes run folder `dir` (created; must not hold a run yet).
pub fn write_run(dir: &Path, spec: &SynthRun) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if dir.join(so8t_store::DB_FILE).exists() {
        return Err(Error::BadRequest(format!(
            "{} already holds a run",
            dir.display()
        )));
    }
    let run_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let mut store = Store::open(dir).map_err(|e| Error::Unreadable(e.to_string()))?;
    let t0 = spec.started_ms;
    let end = t0 + spec.steps as i64 * spec.step_ms;
    let session = Session {
        id: format!("{run_id}-{t0}"),
        run_id,
        kind: "sft".into(),
        config_hash: "synthetic".into(),
        started_ms: t0,
        updated_ms: end,
        ended_ms: (spec.status != Status::Running).then_some(end),
        status: spec.status,
        step: spec.steps,
        total_steps: spec.total_steps.max(spec.steps),
        epoch: 0,
        best_loss: Some(loss_at(spec.steps, spec.total_steps) - 0.05),
        last_checkpoint_ms: Some(end),
        resumed_from_step: None,
        pid: std::process::id(),
        error: (spec.status == Status::Failed).then(|| "synthetic failure".to_string()),
    };
    store
        .begin_session(&session)
        .map_err(|e| Error::Unreadable(e.to_string()))?;
    let conn = store.connection();
    let e = sql(dir);
    let tx = conn.unchecked_transaction().map_err(&e)?;
    {
        let mut st = tx
            .prepare(
                "INSERT INTO metrics (step, session_id, time_ms, loss, ce, pet, orth, alpha, \
                 pet_lambda, phase, lr, grad_norm, tokens, tokens_per_s, loss_smooth, \
                 in_transition, cpu_pct, rss_bytes, ram_used_bytes, ram_total_bytes, \
                 gpu_util_pct, vram_used_bytes, vram_total_bytes, gpu_temp_c, extra) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, NULL)",
            )
            .map_err(&e)?;
        let total = spec.total_steps.max(1) as f64;
        for s in 1..=spec.steps {
            let f = s as f64 / total;
            let n = noise(spec.seed, s);
            let ce = loss_at(s, spec.total_steps) + 0.2 * n;
            let (phase, lam) = match f {
                f if f < 0.2 => ("exploration", 0.01),
                f if f < 0.6 => ("transition", 0.05),
                _ => ("stabilization", 0.1),
            };
            let pet = lam * 0.5;
            let orth = 1e-4 * (1.0 + n);
            let alpha = 1.0 - 0.618 / (1.0 + (-(f - 0.5) * 12.0).exp());
            let lr = 2e-4 * 0.5 * (1.0 + (std::f64::consts::PI * f).cos());
            let gb = 1u64 << 30;
            st.execute(params![
                s,
                session.id,
                t0 + s as i64 * spec.step_ms,
                ce + pet + orth,
                ce,
                pet,
                orth,
                alpha,
                lam,
                phase,
                lr,
                1.0 + n.abs(),
                4096,
                3000.0 + 400.0 * n,
                loss_at(s, spec.total_steps),
                ((0.30..0.35).contains(&f)) as i64,
                55.0 + 20.0 * n,
                (2 * gb) as i64,
                (10 * gb) as i64,
                (24 * gb) as i64,
                90.0 + 8.0 * n,
                (18 * gb) as i64,
                (24 * gb) as i64,
                66.0 + 4.0 * n,
            ])
            .map_err(&e)?;
        }
    }
    tx.commit().map_err(&e)?;
    let step_of = |frac: f64| ((spec.steps as f64 * frac) as u64).max(1);
    // (a short run has fewer distinct checkpoint steps)
    let mut steps: Vec<u64> = [0.6, 0.8, 1.0].iter().map(|&fr| step_of(fr)).collect();
    steps.dedup();
    let ckpts: Vec<Checkpoint> = steps
        .into_iter()
        .map(|step| Checkpoint {
            step,
            kind: "rolling".into(),
            path: format!("checkpoints/step-{step:08}-rolling"),
            created_ms: t0 + step as i64 * spec.step_ms,
            bytes: 1 << 20,
        })
        .collect();
    store
        .set_checkpoints(&ckpts)
        .map_err(|e| Error::Unreadable(e.to_string()))?;
    let (a, b) = (step_of(0.30), step_of(0.35));
    store
        .add_event(
            &session.id,
            Some(b),
            "phase_transition",
            &format!("loss regime change over steps {a}-{b} (steeper)"),
            Some(json!({"start": a, "end": b, "direction": "steeper", "peak_z": 4.2})),
        )
        .map_err(|e| Error::Unreadable(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_bounded_and_deterministic() {
        for s in 0..1000 {
            let n = noise(3, s);
            assert!((-0.5..0.5).contains(&n));
            assert_eq!(n, noise(3, s));
        }
        assert_ne!(noise(3, 1), noise(4, 1));
    }
}
