//! Row mapping between the structs of this crate and the tables of `run.db`.

use rusqlite::{params, Row};

use crate::{json_text, json_value, now_ms, Metric, Session, Status, SystemSample};

pub(crate) const SESSION_SELECT: &str =
    "SELECT id, run_id, kind, config_hash, started_ms, updated_ms, \
    ended_ms, status, step, total_steps, epoch, best_loss, last_checkpoint_ms, \
    resumed_from_step, pid, error FROM sessions";

pub(crate) fn session_from_row(r: &Row) -> rusqlite::Result<Session> {
    let status: String = r.get(7)?;
    Ok(Session {
        id: r.get(0)?,
        run_id: r.get(1)?,
        kind: r.get(2)?,
        config_hash: r.get(3)?,
        started_ms: r.get(4)?,
        updated_ms: r.get(5)?,
        ended_ms: r.get(6)?,
        status: Status::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                7,
                rusqlite::types::Type::Text,
                format!("unknown session status {status:?}").into(),
            )
        })?,
        step: r.get::<_, i64>(8)? as u64,
        total_steps: r.get::<_, i64>(9)? as u64,
        epoch: r.get::<_, i64>(10)? as u64,
        best_loss: r.get(11)?,
        last_checkpoint_ms: r.get(12)?,
        resumed_from_step: r.get::<_, Option<i64>>(13)?.map(|s| s as u64),
        pid: r.get(14)?,
        error: r.get(15)?,
    })
}

pub(crate) fn insert_session(tx: &rusqlite::Transaction, s: &Session) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO sessions (id, run_id, kind, config_hash, started_ms, updated_ms, ended_ms,
             status, step, total_steps, epoch, best_loss, last_checkpoint_ms, resumed_from_step,
             pid, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            s.id,
            s.run_id,
            s.kind,
            s.config_hash,
            s.started_ms,
            s.updated_ms,
            s.ended_ms,
            s.status.as_str(),
            s.step as i64,
            s.total_steps as i64,
            s.epoch as i64,
            s.best_loss,
            s.last_checkpoint_ms,
            s.resumed_from_step.map(|x| x as i64),
            s.pid,
            s.error,
        ],
    )?;
    Ok(())
}

pub(crate) fn update_session(tx: &rusqlite::Transaction, s: &Session) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE sessions SET updated_ms = ?2, ended_ms = ?3, status = ?4, step = ?5,
             total_steps = ?6, epoch = ?7, best_loss = ?8, last_checkpoint_ms = ?9, error = ?10
         WHERE id = ?1",
        params![
            s.id,
            now_ms(),
            s.ended_ms,
            s.status.as_str(),
            s.step as i64,
            s.total_steps as i64,
            s.epoch as i64,
            s.best_loss,
            s.last_checkpoint_ms,
            s.error,
        ],
    )?;
    Ok(())
}

pub(crate) fn insert_metric(
    tx: &rusqlite::Transaction,
    session_id: &str,
    m: &Metric,
) -> rusqlite::Result<()> {
    let s = &m.system;
    tx.execute(
        "INSERT OR REPLACE INTO metrics (step, session_id, time_ms, loss, ce, pet, orth, alpha,
             pet_lambda, phase, lr, grad_norm, tokens, tokens_per_s, loss_smooth, in_transition,
             cpu_pct, rss_bytes, ram_used_bytes, ram_total_bytes, gpu_util_pct, vram_used_bytes,
             vram_total_bytes, gpu_temp_c, extra)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
             ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
        params![
            m.step as i64,
            session_id,
            m.time_ms,
            m.loss,
            m.ce,
            m.pet,
            m.orth,
            m.alpha,
            m.pet_lambda,
            m.phase,
            m.lr,
            m.grad_norm,
            m.tokens as i64,
            m.tokens_per_s,
            m.loss_smooth,
            m.in_transition,
            s.cpu_pct,
            s.rss_bytes.map(|x| x as i64),
            s.ram_used_bytes.map(|x| x as i64),
            s.ram_total_bytes.map(|x| x as i64),
            s.gpu_util_pct,
            s.vram_used_bytes.map(|x| x as i64),
            s.vram_total_bytes.map(|x| x as i64),
            s.gpu_temp_c,
            json_text(&m.extra),
        ],
    )?;
    Ok(())
}

pub(crate) fn metric_from_row(r: &Row) -> rusqlite::Result<Metric> {
    let u = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|x| x as u64))
    };
    Ok(Metric {
        step: r.get::<_, i64>(0)? as u64,
        time_ms: r.get(1)?,
        loss: r.get(2)?,
        ce: r.get(3)?,
        pet: r.get(4)?,
        orth: r.get(5)?,
        alpha: r.get(6)?,
        pet_lambda: r.get(7)?,
        phase: r.get(8)?,
        lr: r.get(9)?,
        grad_norm: r.get(10)?,
        tokens: r.get::<_, i64>(11)? as u64,
        tokens_per_s: r.get(12)?,
        loss_smooth: r.get(13)?,
        in_transition: r.get(14)?,
        system: SystemSample {
            cpu_pct: r.get(15)?,
            rss_bytes: u(16)?,
            ram_used_bytes: u(17)?,
            ram_total_bytes: u(18)?,
            gpu_util_pct: r.get(19)?,
            vram_used_bytes: u(20)?,
            vram_total_bytes: u(21)?,
            gpu_temp_c: r.get(22)?,
        },
        extra: json_value(r.get(23)?),
    })
}
