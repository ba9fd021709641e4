//! The run database of so8t (`run_dir/run.db`, SQLite in WAL mode): the sessions of a run, one
//! metrics row per optimizer step (loss terms, schedules, throughput and the machine's load),
//! the checkpoints on disk and events (resume, phase transitions, errors).
//!
//! The trainer writes it; the dashboard and the pipeline read it, while training runs, through
//! [`Store::open_read_only`]. The schema is documented in `docs/formats/run-dir.md` and
//! versioned with `PRAGMA user_version` ([`SCHEMA_VERSION`]).
//!
//! Crash safety: every write is one transaction; WAL with `synchronous = NORMAL` never corrupts
//! the database on power loss but may lose the last few transactions, which the trainer
//! recomputes (rows after the restored checkpoint are deleted with [`Store::truncate_after`] and
//! rewritten identically).

pub mod audit;
mod eval;
mod rows;
mod schema;
pub mod system;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use rows::{
    insert_metric, insert_session, metric_from_row, session_from_row, update_session,
    SESSION_SELECT,
};
use serde::{Deserialize, Serialize};

pub use audit::{
    verify as verify_audit, AuditEntry, AuditError, AuditLog, AuditProblem, AuditReport, AuditRow,
    ProblemKind,
};
pub use eval::{EvalItem, EvalRun};
pub use schema::SCHEMA_VERSION;
pub use system::{SystemSample, SystemSampler};

/// The database file's name inside a run folder.
pub const DB_FILE: &str = "run.db";

/// Errors of the run database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite failed on `path`.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database is not one this version understands, or holds a bad value.
    #[error("{path}: {msg}")]
    Invalid {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The state of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The process is (or was, until it died) training.
    Running,
    /// The run reached its last step.
    Completed,
    /// Stopped early (signal, `--stop-after`, or the process died); resumable.
    Interrupted,
    /// Stopped by an error (see the session's `error`).
    Failed,
}

impl Status {
    /// The lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Interrupted => "interrupted",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "interrupted" => Some(Self::Interrupted),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One session: one process working on the run (a resume starts a new session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Session id (`{run id}-{start ms}`).
    pub id: String,
    /// The run (its folder's name).
    pub run_id: String,
    /// What kind of work: `sft` or `ppo`.
    pub kind: String,
    /// Hash of the resolved config.
    pub config_hash: String,
    /// Start, Unix ms.
    pub started_ms: i64,
    /// Last write, Unix ms.
    pub updated_ms: i64,
    /// End, Unix ms (None while running).
    pub ended_ms: Option<i64>,
    /// State.
    pub status: Status,
    /// Optimizer steps done in the run.
    pub step: u64,
    /// Optimizer steps of the run.
    pub total_steps: u64,
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Lowest step loss of the run so far.
    pub best_loss: Option<f64>,
    /// Time of the newest checkpoint, Unix ms.
    pub last_checkpoint_ms: Option<i64>,
    /// The step this session resumed from (None: it started the run).
    pub resumed_from_step: Option<u64>,
    /// Process id.
    pub pid: u32,
    /// Why the session failed.
    pub error: Option<String>,
}

impl Session {
    /// The copy of the current session a run folder holds for tools without SQLite.
    pub const JSON_FILE: &'static str = "session.json";

    /// Reads `run_dir/session.json`; `Err` names the file and what is wrong.
    pub fn read_json(run_dir: &Path) -> std::result::Result<Self, String> {
        let p = run_dir.join(Self::JSON_FILE);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    }
}

/// One optimizer step's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// 1-based step.
    pub step: u64,
    /// Wall time, Unix ms.
    pub time_ms: i64,
    /// Total loss.
    pub loss: f64,
    /// Cross-entropy term.
    pub ce: f64,
    /// λ·PET term.
    pub pet: f64,
    /// L_orth term.
    pub orth: f64,
    /// α of the step.
    pub alpha: f64,
    /// PET λ of the step.
    pub pet_lambda: f64,
    /// PET phase (`exploration`, `transition`, `stabilization`).
    pub phase: String,
    /// Learning rate.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Real tokens of the step.
    pub tokens: u64,
    /// Tokens per second over the step.
    pub tokens_per_s: f64,
    /// Smoothed loss (EMA) used by the phase-transition detector.
    pub loss_smooth: Option<f64>,
    /// Whether the step lies in a detected loss-regime transition.
    pub in_transition: bool,
    /// The machine's load when the step ended.
    pub system: SystemSample,
    /// Anything else (JSON object), e.g. PPO's reward and KL.
    pub extra: Option<serde_json::Value>,
}

/// One checkpoint on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Step it was taken at.
    pub step: u64,
    /// `rolling`, `final` or `emergency`.
    pub kind: String,
    /// Folder, relative to the run folder.
    pub path: String,
    /// Time written, Unix ms.
    pub created_ms: i64,
    /// Total size in bytes.
    pub bytes: u64,
}

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing id (readers poll with [`Store::events`]`(after_id)`).
    pub id: i64,
    /// Time, Unix ms.
    pub time_ms: i64,
    /// Session that logged it.
    pub session_id: String,
    /// Step it belongs to (None: not tied to a step).
    pub step: Option<u64>,
    /// Short kind, e.g. `resume`, `checkpoint`, `phase_transition`, `interrupted`, `failed`.
    pub kind: String,
    /// One line for people.
    pub message: String,
    /// Details (JSON).
    pub data: Option<serde_json::Value>,
}

/// An open run database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

pub(crate) fn json_text(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

pub(crate) fn json_value(s: Option<String>) -> Option<serde_json::Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

impl Store {
    /// Opens (creating it and its schema when missing) `run_dir/run.db` for writing.
    pub fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|source| Error::Sqlite {
            path: path.clone(),
            source,
        })?;
        let store = Self { conn, path };
        store.sql(|c| {
            c.busy_timeout(Duration::from_secs(10))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.pragma_update(None, "foreign_keys", "ON")?;
            Ok(())
        })?;
        schema::migrate(&store.conn, &store.path)?;
        Ok(store)
    }

    /// Opens `run_dir/run.db` for reading while a trainer may be writing it.
    pub fn open_read_only(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(DB_FILE);
        if !path.exists() {
            return Err(Error::Invalid {
                path,
                msg: "no run database here (not a run folder, or training has not started)".into(),
            });
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| Error::Sqlite {
            path: path.clone(),
            source,
        })?;
        let store = Self { conn, path };
        store.sql(|c| c.busy_timeout(Duration::from_secs(10)))?;
        schema::check_version(&store.conn, &store.path)?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SQLite connection, for readers with queries of their own (the dashboard's
    /// downsampling); the schema is the documented one.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn sql<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(&self.conn).map_err(|source| Error::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    fn tx<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let wrap = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        let out = f(&tx).map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(out)
    }

    /// Starts `session`. Sessions still marked running whose process is gone (killed, power
    /// loss) become `interrupted`; a live one is an error (two trainers on one run).
    pub fn begin_session(&mut self, session: &Session) -> Result<()> {
        let running: Vec<(String, u32)> = self.sql(|c| {
            let mut st = c.prepare("SELECT id, pid FROM sessions WHERE status = 'running'")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        for (id, pid) in &running {
            if *pid != session.pid && system::process_alive(*pid) {
                return Err(Error::Invalid {
                    path: self.path.clone(),
                    msg: format!(
                        "session {id} (process {pid}) is still running on this run; stop it first"
                    ),
                });
            }
        }
        self.tx(|tx| {
            tx.execute(
                "UPDATE sessions SET status = 'interrupted', ended_ms = updated_ms
                 WHERE status = 'running'",
                [],
            )?;
            insert_session(tx, session)
        })
    }

    /// Writes the current state of `session` (status, step, best loss, …).
    pub fn update_session(&mut self, session: &Session) -> Result<()> {
        self.tx(|tx| update_session(tx, session))
    }

    /// Writes a step's metrics and the session's new state in one transaction.
    pub fn record_step(&mut self, session: &Session, m: &Metric) -> Result<()> {
        self.tx(|tx| {
            insert_metric(tx, &session.id, m)?;
            update_session(tx, session)
        })
    }

    /// Deletes the metrics and step-bound events after `step` (a resume from a checkpoint at
    /// `step` recomputes them).
    pub fn truncate_after(&mut self, step: u64) -> Result<()> {
        self.tx(|tx| {
            tx.execute("DELETE FROM metrics WHERE step > ?1", [step as i64])?;
            tx.execute(
                "DELETE FROM events WHERE step > ?1 AND kind = 'phase_transition'",
                [step as i64],
            )?;
            Ok(())
        })
    }

    /// Marks the metrics of steps `start..=end` as lying in a detected loss-regime transition.
    pub fn mark_transition(&mut self, start: u64, end: u64) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE metrics SET in_transition = 1 WHERE step BETWEEN ?1 AND ?2",
                [start as i64, end as i64],
            )?;
            Ok(())
        })
    }

    /// All sessions, oldest first.
    pub fn sessions(&self) -> Result<Vec<Session>> {
        self.sql(|c| {
            let mut st = c.prepare(&format!("{SESSION_SELECT} ORDER BY started_ms, rowid"))?;
            let rows = st.query_map([], session_from_row)?;
            rows.collect()
        })
    }

    /// The newest session.
    pub fn latest_session(&self) -> Result<Option<Session>> {
        self.sql(|c| {
            c.query_row(
                &format!("{SESSION_SELECT} ORDER BY started_ms DESC, rowid DESC LIMIT 1"),
                [],
                session_from_row,
            )
            .optional()
        })
    }

    /// Metrics of steps after `after_step`, at most `limit`, by step.
    pub fn metrics(&self, after_step: u64, limit: usize) -> Result<Vec<Metric>> {
        self.sql(|c| {
            let mut st = c.prepare(
                "SELECT step, time_ms, loss, ce, pet, orth, alpha, pet_lambda, phase, lr,
                        grad_norm, tokens, tokens_per_s, loss_smooth, in_transition,
                        cpu_pct, rss_bytes, ram_used_bytes, ram_total_bytes,
                        gpu_util_pct, vram_used_bytes, vram_total_bytes, gpu_temp_c, extra
                 FROM metrics WHERE step > ?1 ORDER BY step LIMIT ?2",
            )?;
            let rows = st.query_map(
                params![after_step as i64, limit.min(i64::MAX as usize) as i64],
                metric_from_row,
            )?;
            rows.collect()
        })
    }

    /// Replaces the checkpoint list with what is on disk now.
    pub fn set_checkpoints(&mut self, list: &[Checkpoint]) -> Result<()> {
        self.tx(|tx| {
            tx.execute("DELETE FROM checkpoints", [])?;
            for c in list {
                tx.execute(
                    "INSERT INTO checkpoints (path, step, kind, created_ms, bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![c.path, c.step as i64, c.kind, c.created_ms, c.bytes as i64],
                )?;
            }
            Ok(())
        })
    }

    /// The checkpoints on disk (as last recorded), by step.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.sql(|c| {
            let mut st = c.prepare(
                "SELECT step, kind, path, created_ms, bytes FROM checkpoints ORDER BY step, path",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Checkpoint {
                    step: r.get::<_, i64>(0)? as u64,
                    kind: r.get(1)?,
                    path: r.get(2)?,
                    created_ms: r.get(3)?,
                    bytes: r.get::<_, i64>(4)? as u64,
                })
            })?;
            rows.collect()
        })
    }

    /// Logs an event; returns its id.
    pub fn add_event(
        &mut self,
        session_id: &str,
        step: Option<u64>,
        kind: &str,
        message: &str,
        data: Option<serde_json::Value>,
    ) -> Result<i64> {
        let now = now_ms();
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO events (time_ms, session_id, step, kind, message, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    now,
                    session_id,
                    step.map(|s| s as i64),
                    kind,
                    message,
                    json_text(&data)
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Events with an id above `after_id`, oldest first.
    pub fn events(&self, after_id: i64) -> Result<Vec<Event>> {
        self.sql(|c| {
            let mut st = c.prepare(
                "SELECT id, time_ms, session_id, step, kind, message, data FROM events
                 WHERE id > ?1 ORDER BY id",
            )?;
            let rows = st.query_map([after_id], |r| {
                Ok(Event {
                    id: r.get(0)?,
                    time_ms: r.get(1)?,
                    session_id: r.get(2)?,
                    step: r.get::<_, Option<i64>>(3)?.map(|s| s as u64),
                    kind: r.get(4)?,
                    message: r.get(5)?,
                    data: json_value(r.get(6)?),
                })
            })?;
            rows.collect()
        })
    }
}
