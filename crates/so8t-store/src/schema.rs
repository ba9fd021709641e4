//! The tables of `run.db` and their migrations (`PRAGMA user_version`).

use std::path::Path;

use rusqlite::Connection;

use crate::{Error, Result};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

const V1: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id                 TEXT PRIMARY KEY,
    run_id             TEXT NOT NULL,
    kind               TEXT NOT NULL,
    config_hash        TEXT NOT NULL,
    started_ms         INTEGER NOT NULL,
    updated_ms         INTEGER NOT NULL,
    ended_ms           INTEGER,
    status             TEXT NOT NULL
                       CHECK (status IN ('running', 'completed', 'interrupted', 'failed')),
    step               INTEGER NOT NULL,
    total_steps        INTEGER NOT NULL,
    epoch              INTEGER NOT NULL,
    best_loss          REAL,
    last_checkpoint_ms INTEGER,
    resumed_from_step  INTEGER,
    pid                INTEGER NOT NULL,
    error              TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    step             INTEGER PRIMARY KEY,
    session_id       TEXT NOT NULL,
    time_ms          INTEGER NOT NULL,
    loss             REAL NOT NULL,
    ce               REAL NOT NULL,
    pet              REAL NOT NULL,
    orth             REAL NOT NULL,
    alpha            REAL NOT NULL,
    pet_lambda       REAL NOT NULL,
    phase            TEXT NOT NULL,
    lr               REAL NOT NULL,
    grad_norm        REAL NOT NULL,
    tokens           INTEGER NOT NULL,
    tokens_per_s     REAL NOT NULL,
    loss_smooth      REAL,
    in_transition    INTEGER NOT NULL DEFAULT 0,
    cpu_pct          REAL,
    rss_bytes        INTEGER,
    ram_used_bytes   INTEGER,
    ram_total_bytes  INTEGER,
    gpu_util_pct     REAL,
    vram_used_bytes  INTEGER,
    vram_total_bytes INTEGER,
    gpu_temp_c       REAL,
    extra            TEXT
);
CREATE TABLE IF NOT EXISTS checkpoints (
    path       TEXT PRIMARY KEY,
    step       INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('rolling', 'final', 'emergency')),
    created_ms INTEGER NOT NULL,
    bytes      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms    INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    step       INTEGER,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    data       TEXT
);
CREATE INDEX IF NOT EXISTS events_step ON events (step);
";

/// Version 2: evaluation runs (`so8t eval --run-dir`) and their per-item results.
const V2: &str = "
CREATE TABLE IF NOT EXISTS eval_runs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms  INTEGER NOT NULL,
    label    TEXT NOT NULL,
    model    TEXT NOT NULL,
    summary  TEXT NOT NULL,
    settings TEXT
);
CREATE TABLE IF NOT EXISTS eval_items (
    run_id  INTEGER NOT NULL REFERENCES eval_runs (id),
    task    TEXT NOT NULL,
    item_id TEXT NOT NULL,
    correct INTEGER NOT NULL,
    result  TEXT NOT NULL,
    PRIMARY KEY (run_id, task, item_id)
);
";

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn version(conn: &Connection, path: &Path) -> Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite(path))
}

/// Creates the tables of a new database or upgrades an older one (1 → 2 adds the eval
/// tables); refuses one written by a newer so8t.
pub fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let v = version(conn, path)?;
    let missing = match v {
        0 => format!("{V1} {V2}"),
        1 => V2.to_string(),
        _ => return check(v, path),
    };
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {missing} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))
    .map_err(sqlite(path))
}

/// Checks that a database opened read-only has a schema this build reads (an older version 1
/// reads too; it has no eval tables until a writer opens it).
pub fn check_version(conn: &Connection, path: &Path) -> Result<()> {
    match version(conn, path)? {
        1 => Ok(()),
        v => check(v, path),
    }
}

fn check(v: i64, path: &Path) -> Result<()> {
    if v != SCHEMA_VERSION {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            msg: format!(
                "run database schema version {v}; this so8t reads version {SCHEMA_VERSION}"
            ),
        });
    }
    Ok(())
}
