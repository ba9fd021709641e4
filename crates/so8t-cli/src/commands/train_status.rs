//! `so8t train status RUN_DIR`: a run's session, progress, last metrics, checkpoints and
//! detected phase transitions, read from its database (`run.db`) — also while it trains.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use so8t_store::Store;

/// `2026-11-23 09:33:10 UTC` for Unix milliseconds.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = so8t_model::civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Prints the status of the run in `run_dir` (JSON with `json`).
pub fn status(run_dir: &Path, json_out: bool) -> Result<()> {
    let db = Store::open_read_only(run_dir)
        .with_context(|| format!("reading the run in {}", run_dir.display()))?;
    let sessions = db.sessions()?;
    let Some(s) = sessions.last() else {
        anyhow::bail!("{}: the run has no session yet", run_dir.display());
    };
    let checkpoints = db.checkpoints()?;
    let last = db
        .metrics(s.step.saturating_sub(1), 1)?
        .into_iter()
        .next_back();
    let transitions: Vec<_> = db
        .events(0)?
        .into_iter()
        .filter(|e| e.kind == "phase_transition")
        .collect();
    // A session left `running` by a process that is gone (killed, power loss, full disk).
    let stale =
        s.status == so8t_store::Status::Running && !so8t_store::system::process_alive(s.pid);
    if json_out {
        let out = json!({
            "run_dir": run_dir.display().to_string(),
            "session": s,
            "stale": stale,
            "sessions": sessions.len(),
            "last_metric": last,
            "checkpoints": checkpoints,
            "transitions": transitions,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("run          {}", run_dir.display());
    println!(
        "status       {}{} (session {}, pid {}{})",
        s.status.as_str(),
        if stale {
            " — but the process is gone: resume with --auto-resume"
        } else {
            ""
        },
        sessions.len(),
        s.pid,
        s.resumed_from_step
            .map_or(String::new(), |r| format!(", resumed at step {r}"))
    );
    if let Some(e) = &s.error {
        println!("error        {e}");
    }
    println!(
        "step         {}/{} · epoch {} · best loss {}",
        s.step,
        s.total_steps,
        s.epoch,
        s.best_loss.map_or("-".into(), |b| format!("{b:.4}"))
    );
    println!(
        "started      {}{}",
        utc(sessions[0].started_ms),
        s.last_checkpoint_ms
            .map_or(String::new(), |t| format!(" · last checkpoint {}", utc(t)))
    );
    if let Some(m) = &last {
        let x = |k: &str| {
            m.extra
                .as_ref()
                .and_then(|e| e.get(k))
                .and_then(|v| v.as_f64())
        };
        if let (Some(reward), Some(kl)) = (x("reward"), x("kl")) {
            // An RL step: its terms are in `extra`.
            println!(
                "last step    reward {reward:.4} (accuracy {:.2}, format {:.3}, leak {:.3}, over-length {:.3}) · kl {kl:.4} (β {:.4}) · loss {:.4} · α {:.4} · lr {:.2e} · grad {:.3} · {:.0} rollout tok/s",
                x("accuracy").unwrap_or(0.0),
                x("reward_format").unwrap_or(0.0),
                x("reward_leak").unwrap_or(0.0),
                x("reward_overlength").unwrap_or(0.0),
                x("beta").unwrap_or(0.0),
                m.loss, m.alpha, m.lr, m.grad_norm, m.tokens_per_s
            );
        } else {
            println!(
                "last step    loss {:.4} (ce {:.4}, pet {:.2e}, orth {:.2e}) · α {:.4} · λ {:.3} ({}) · lr {:.2e} · grad {:.3} · {:.0} tok/s",
                m.loss, m.ce, m.pet, m.orth, m.alpha, m.pet_lambda, m.phase, m.lr, m.grad_norm, m.tokens_per_s
            );
        }
        let sys = &m.system;
        let mut parts = Vec::new();
        if let Some(c) = sys.cpu_pct {
            parts.push(format!("CPU {c:.0}%"));
        }
        if let Some(r) = sys.rss_bytes {
            parts.push(format!("RSS {}", mib(r)));
        }
        if let Some(g) = sys.gpu_util_pct {
            parts.push(format!("GPU {g:.0}%"));
        }
        if let Some(v) = sys.vram_used_bytes {
            parts.push(format!("VRAM {}", mib(v)));
        }
        if let Some(t) = sys.gpu_temp_c {
            parts.push(format!("{t:.0} °C"));
        }
        if !parts.is_empty() {
            println!("machine      {}", parts.join(" · "));
        }
    }
    for c in &checkpoints {
        println!("checkpoint   {} ({}, {})", c.path, c.kind, mib(c.bytes));
    }
    for e in &transitions {
        println!("transition   {}", e.message);
    }
    Ok(())
}
