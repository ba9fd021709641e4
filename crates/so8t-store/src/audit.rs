//! The audit log of /think requests (spec §5): one row per request, in a hash chain that makes
//! tampering evident.
//!
//! # Format
//!
//! A SQLite database (WAL, `synchronous = FULL`, schema version [`AUDIT_SCHEMA_VERSION`] in
//! `PRAGMA user_version`) with a table `audit` (one row per request, ids 1, 2, 3, …) and a
//! one-row table `audit_head` (row count and head hash), and beside it a sidecar file
//! `<db>.head` ([`sidecar_path`]) holding the same head as text:
//! `so8t-audit-head v1\nrows {n}\nhash {hex}\n`.
//!
//! Each row stores `prev_hash` (the previous row's `row_hash`; 64 zeros for the first row) and
//! `row_hash` = hex SHA-256 of the canonical encoding ([`row_hash`]): the domain tag
//! `so8t-audit-v1`, then `prev_hash` and every field of [`AuditEntry`] in declaration order,
//! each encoded as
//! - text: its length in bytes as 8-byte big-endian, then its UTF-8 bytes;
//! - optional text: one byte 0 (absent) or 1 (present) followed by the text;
//! - `i64`: 8 bytes big-endian two's complement; `f64`: its IEEE-754 bits, 8 bytes big-endian;
//!
//! so field boundaries cannot shift. The row id is not hashed: a row's place is the one its
//! `prev_hash` links it to, and [`verify`] reports a row whose id disagrees with its place.
//!
//! [`AuditLog::append`] computes the row and updates `audit_head` in one `BEGIN IMMEDIATE`
//! transaction (appends from several connections or processes serialize on SQLite's write lock)
//! and, while holding that lock, replaces the sidecar atomically (temp file, fsync, rename, fsync
//! of the folder) before committing.
//!
//! # Threat model
//!
//! Detected, by [`verify`], when done by someone who cannot (or does not) rewrite the rest of the
//! chain, the head record and the sidecar consistently:
//! - an edited field of a row (its hash no longer matches: [`ProblemKind::Edited`]);
//! - a deleted row in the middle (an id gap, or a `prev_hash` that links to no row:
//!   [`ProblemKind::Deleted`]);
//! - deleted rows at the end (the head record or the sidecar counts more rows than the chain:
//!   [`ProblemKind::Truncated`]);
//! - rows moved or renumbered (their id disagrees with their place in the chain:
//!   [`ProblemKind::Reordered`]);
//! - an edited head record or sidecar ([`ProblemKind::Head`]).
//!
//! Not detected: the chain is keyless SHA-256, so anyone who can write the database and the
//! sidecar can recompute every hash after a change (or rebuild the whole log) undetected; deleting
//! the database together with the sidecar; rows forged through [`AuditLog::append`] itself.
//! Against such an attacker, copy [`AuditReport::head_hash`] (or the sidecar) regularly to a
//! place the server cannot write: any later change to rows up to that point breaks it. The log
//! proves integrity, not confidentiality: it stores hashes of the thinking and the final text and
//! the thinking itself only when the operator enables it ([`AuditEntry::thinking_text`]).
//!
//! A crash between the sidecar's rename and the commit leaves the sidecar one row ahead, which
//! [`verify`] reports like a truncation (it cannot tell them apart). [`verify`] reads the sidecar
//! before the database, so appends running meanwhile leave it behind, which is accepted.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

/// The audit database's schema version (`PRAGMA user_version`).
pub const AUDIT_SCHEMA_VERSION: i64 = 1;

/// The `prev_hash` of the first row: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const DOMAIN: &str = "so8t-audit-v1";
const SIDECAR_MAGIC: &str = "so8t-audit-head v1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    id              INTEGER PRIMARY KEY,
    time_ms         INTEGER NOT NULL,
    request_id      TEXT NOT NULL,
    user_id         TEXT,
    model           TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    thinking_sha256 TEXT NOT NULL,
    final_sha256    TEXT NOT NULL,
    class           TEXT,
    latency_ms      REAL NOT NULL,
    thinking_text   TEXT,
    prev_hash       TEXT NOT NULL,
    row_hash        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    rows      INTEGER NOT NULL,
    head_hash TEXT NOT NULL
);
";

const SELECT: &str = "SELECT id, time_ms, request_id, user_id, model, endpoint, thinking_sha256,
    final_sha256, class, latency_ms, thinking_text, prev_hash, row_hash FROM audit";

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// SQLite failed on `path` while doing `what`.
    #[error("{path}: {what}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A file operation on `path` failed while doing `what`.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database or an entry is not usable.
    #[error("{path}: {msg}")]
    Invalid {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

/// `Result` with [`AuditError`].
pub type Result<T, E = AuditError> = std::result::Result<T, E>;

/// What one /think request leaves in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Time of the request, Unix ms.
    pub time_ms: i64,
    /// Request id.
    pub request_id: String,
    /// The user, when known.
    pub user_id: Option<String>,
    /// Model id.
    pub model: String,
    /// Endpoint, e.g. `/api/chat`.
    pub endpoint: String,
    /// Hex SHA-256 of the thinking text ([`sha256_hex`]).
    pub thinking_sha256: String,
    /// Hex SHA-256 of the final text.
    pub final_sha256: String,
    /// Parsed class (`ALLOW`, `ESCALATION`, `DENY`, `REFUSE`), if any.
    pub class: Option<String>,
    /// Latency in ms (finite).
    pub latency_ms: f64,
    /// The thinking itself: only when the operator enables storing it.
    pub thinking_text: Option<String>,
}

/// A stored row: the entry and its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// Row id (1-based, consecutive).
    pub id: i64,
    /// The entry.
    pub entry: AuditEntry,
    /// The previous row's hash ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This row's hash ([`row_hash`]).
    pub row_hash: String,
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Hex SHA-256 of a file, read in 1 MiB pieces (a model file never sits in memory whole).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of a row after `prev_hash` (see the module docs for the encoding).
pub fn row_hash(prev_hash: &str, e: &AuditEntry) -> String {
    fn text(h: &mut Sha256, s: &str) {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    fn opt(h: &mut Sha256, s: &Option<String>) {
        match s {
            None => h.update([0u8]),
            Some(s) => {
                h.update([1u8]);
                text(h, s);
            }
        }
    }
    let mut h = Sha256::new();
    text(&mut h, DOMAIN);
    text(&mut h, prev_hash);
    h.update(e.time_ms.to_be_bytes());
    text(&mut h, &e.request_id);
    opt(&mut h, &e.user_id);
    text(&mut h, &e.model);
    text(&mut h, &e.endpoint);
    text(&mut h, &e.thinking_sha256);
    text(&mut h, &e.final_sha256);
    opt(&mut h, &e.class);
    h.update(e.latency_ms.to_bits().to_be_bytes());
    opt(&mut h, &e.thinking_text);
    hex(&h.finalize())
}

/// The sidecar of the database at `db`: `<db>.head`.
pub fn sidecar_path(db: &Path) -> PathBuf {
    let mut s = OsString::from(db.as_os_str());
    s.push(".head");
    PathBuf::from(s)
}

fn row_from(r: &rusqlite::Row) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: r.get(0)?,
        entry: AuditEntry {
            time_ms: r.get(1)?,
            request_id: r.get(2)?,
            user_id: r.get(3)?,
            model: r.get(4)?,
            endpoint: r.get(5)?,
            thinking_sha256: r.get(6)?,
            final_sha256: r.get(7)?,
            class: r.get(8)?,
            latency_ms: r.get(9)?,
            thinking_text: r.get(10)?,
        },
        prev_hash: r.get(11)?,
        row_hash: r.get(12)?,
    })
}

/// An open audit log (one connection; open one per thread).
pub struct AuditLog {
    conn: Connection,
    path: PathBuf,
}

impl AuditLog {
    /// Opens the log at `path`, creating it (and its sidecar) when missing.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(sqlite(path, "opening"))?;
        let log = Self {
            conn,
            path: path.to_path_buf(),
        };
        let setup = |c: &Connection| -> rusqlite::Result<()> {
            c.busy_timeout(Duration::from_secs(30))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")
        };
        setup(&log.conn).map_err(sqlite(path, "setting up"))?;
        let tx = log.begin("creating the schema")?;
        let v = version(&tx).map_err(sqlite(path, "reading the schema version"))?;
        if v == 0 {
            tx.execute_batch(SCHEMA)
                .and_then(|_| {
                    tx.execute(
                        "INSERT INTO audit_head (one, rows, head_hash) VALUES (1, 0, ?1)",
                        [GENESIS_HASH],
                    )
                })
                .and_then(|_| tx.pragma_update(None, "user_version", AUDIT_SCHEMA_VERSION))
                .map_err(sqlite(path, "creating the schema"))?;
            write_sidecar(path, 0, GENESIS_HASH)?;
        } else {
            check_version(v, path)?;
        }
        tx.commit().map_err(sqlite(path, "creating the schema"))?;
        Ok(log)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn begin(&self, what: &'static str) -> Result<Transaction<'_>> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(sqlite(&self.path, what))
    }

    /// Appends `e` after the current head; returns the stored row.
    pub fn append(&self, e: &AuditEntry) -> Result<AuditRow> {
        if !e.latency_ms.is_finite() {
            return Err(AuditError::Invalid {
                path: self.path.clone(),
                msg: format!("latency_ms {} is not finite", e.latency_ms),
            });
        }
        let mut entry = e.clone();
        entry.latency_ms += 0.0; // -0.0 becomes 0.0, as SQLite would store it
        let what = "appending an audit row";
        let tx = self.begin(what)?;
        let (rows, prev) = read_head(&tx).map_err(sqlite(&self.path, "reading the head record"))?;
        let row = AuditRow {
            id: rows + 1,
            row_hash: row_hash(&prev, &entry),
            prev_hash: prev,
            entry,
        };
        let x = &row.entry;
        tx.execute(
            "INSERT INTO audit (id, time_ms, request_id, user_id, model, endpoint,
                 thinking_sha256, final_sha256, class, latency_ms, thinking_text, prev_hash,
                 row_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                row.id,
                x.time_ms,
                x.request_id,
                x.user_id,
                x.model,
                x.endpoint,
                x.thinking_sha256,
                x.final_sha256,
                x.class,
                x.latency_ms,
                x.thinking_text,
                row.prev_hash,
                row.row_hash
            ],
        )
        .and_then(|_| {
            tx.execute(
                "UPDATE audit_head SET rows = ?1, head_hash = ?2 WHERE one = 1",
                params![row.id, row.row_hash],
            )
        })
        .map_err(sqlite(&self.path, what))?;
        write_sidecar(&self.path, row.id as u64, &row.row_hash)?;
        tx.commit().map_err(sqlite(&self.path, what))?;
        Ok(row)
    }

    /// Rows with an id above `after_id`, at most `limit`, by id.
    pub fn rows(&self, after_id: i64, limit: usize) -> Result<Vec<AuditRow>> {
        let lim = limit.min(i64::MAX as usize) as i64;
        let mut st = self
            .conn
            .prepare_cached(&format!("{SELECT} WHERE id > ?1 ORDER BY id LIMIT ?2"))
            .map_err(sqlite(&self.path, "reading rows"))?;
        let rows = st
            .query_map(params![after_id, lim], row_from)
            .and_then(|rows| rows.collect())
            .map_err(sqlite(&self.path, "reading rows"));
        rows
    }

    /// The head record: row count and the last row's hash.
    pub fn head(&self) -> Result<(u64, String)> {
        let (rows, hash) =
            read_head(&self.conn).map_err(sqlite(&self.path, "reading the head record"))?;
        Ok((rows as u64, hash))
    }
}

fn sqlite<'a>(path: &'a Path, what: &'static str) -> impl Fn(rusqlite::Error) -> AuditError + 'a {
    move |source| AuditError::Sqlite {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl Fn(std::io::Error) -> AuditError + 'a {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn read_head(c: &Connection) -> rusqlite::Result<(i64, String)> {
    let sql = "SELECT rows, head_hash FROM audit_head WHERE one = 1";
    c.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
}

fn version(c: &Connection) -> rusqlite::Result<i64> {
    c.pragma_query_value(None, "user_version", |r| r.get(0))
}

fn check_version(v: i64, path: &Path) -> Result<()> {
    if v == AUDIT_SCHEMA_VERSION {
        return Ok(());
    }
    Err(AuditError::Invalid {
        path: path.to_path_buf(),
        msg: format!("audit schema version {v}; this so8t reads version {AUDIT_SCHEMA_VERSION}"),
    })
}

/// Replaces the sidecar atomically: temp file, fsync, rename, fsync of the folder.
fn write_sidecar(db: &Path, rows: u64, hash: &str) -> Result<()> {
    let path = sidecar_path(db);
    let mut tmp = OsString::from(path.as_os_str());
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let text = format!("{SIDECAR_MAGIC}\nrows {rows}\nhash {hash}\n");
    let mut f = File::create(&tmp).map_err(io(&tmp, "creating the head sidecar"))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp, "writing the head sidecar"))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io(&path, "replacing the head sidecar"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "syncing the folder of the head sidecar"))?;
    Ok(())
}

/// Reads a sidecar: `(rows, hash)`, or why it is unusable.
fn read_sidecar(db: &Path) -> std::result::Result<(u64, String), String> {
    let path = sidecar_path(db);
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let bad = || format!("{}: not an audit head sidecar", path.display());
    if lines.next() != Some(SIDECAR_MAGIC) {
        return Err(bad());
    }
    let rows = lines
        .next()
        .and_then(|l| l.strip_prefix("rows "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    let hash = lines
        .next()
        .and_then(|l| l.strip_prefix("hash "))
        .ok_or_else(bad)?;
    Ok((rows, hash.to_string()))
}

/// What [`verify`] found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The row's content no longer matches its hash.
    Edited,
    /// Rows are missing before this id (an id gap, or a `prev_hash` that links to no row).
    Deleted,
    /// Rows at the end are missing: the head record or the sidecar counts more.
    Truncated,
    /// The row's id disagrees with its place in the chain (moved or renumbered).
    Reordered,
    /// The head record or the sidecar disagrees with the chain (or the sidecar is unreadable).
    Head,
}

/// One problem: the row id it concerns and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditProblem {
    /// The row (for `Deleted` and `Truncated`: the first missing id; 0: the log as a whole).
    pub id: i64,
    /// The kind of problem.
    pub kind: ProblemKind,
    /// Details for people.
    pub what: String,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Rows in the table.
    pub rows: u64,
    /// Everything wrong, by kind of check; empty when the log is intact.
    pub problems: Vec<AuditProblem>,
    /// The hash of the chain's last row ([`GENESIS_HASH`] when empty).
    pub head_hash: String,
}

impl AuditReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One row as [`verify`] sees it.
struct Seen {
    id: i64,
    prev: String,
    stored: String,
    computed: String,
}

/// Opens the log at `path` read-only and checks the chain, the head record and the sidecar.
pub fn verify(path: &Path) -> Result<AuditReport> {
    if !path.exists() {
        return Err(AuditError::Invalid {
            path: path.to_path_buf(),
            msg: "no audit log here".into(),
        });
    }
    let sidecar = read_sidecar(path);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite(path, "opening read-only"))?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(sqlite(path, "setting up"))?;
    let tx = Transaction::new_unchecked(&conn, TransactionBehavior::Deferred)
        .map_err(sqlite(path, "starting a read"))?;
    check_version(
        version(&tx).map_err(sqlite(path, "reading the version"))?,
        path,
    )?;
    let head = read_head(&tx).map_err(sqlite(path, "reading the head record"))?;
    let mut seen = Vec::new();
    {
        let mut st = tx
            .prepare(&format!("{SELECT} ORDER BY id"))
            .map_err(sqlite(path, "reading rows"))?;
        let mut rows = st.query([]).map_err(sqlite(path, "reading rows"))?;
        while let Some(r) = rows.next().map_err(sqlite(path, "reading rows"))? {
            let row = row_from(r).map_err(sqlite(path, "reading rows"))?;
            seen.push(Seen {
                id: row.id,
                computed: row_hash(&row.prev_hash, &row.entry),
                prev: row.prev_hash,
                stored: row.row_hash,
            });
        }
    }
    drop(tx);
    Ok(check_chain(&seen, head, sidecar))
}

fn check_chain(
    seen: &[Seen],
    head: (i64, String),
    sidecar: std::result::Result<(u64, String), String>,
) -> AuditReport {
    let mut problems = Vec::new();
    let mut problem = |id: i64, kind: ProblemKind, what: String| {
        problems.push(AuditProblem { id, kind, what });
    };
    let edited: Vec<bool> = seen.iter().map(|s| s.stored != s.computed).collect();
    let mut by_hash: HashMap<&str, usize> = HashMap::new();
    for (i, s) in seen.iter().enumerate() {
        by_hash.entry(s.stored.as_str()).or_insert(i);
    }
    for (i, s) in seen.iter().enumerate() {
        if edited[i] {
            by_hash.entry(s.computed.as_str()).or_insert(i);
        }
    }
    // Each row's place: one after the row its prev_hash names; a row linking to nothing (or in
    // a cycle) is an orphan and keeps its id as its place.
    let pred = |i: usize| -> Option<Option<usize>> {
        if seen[i].prev == GENESIS_HASH {
            return Some(None);
        }
        by_hash
            .get(seen[i].prev.as_str())
            .copied()
            .filter(|&j| j != i)
            .map(Some)
    };
    let mut place: Vec<Option<i64>> = vec![None; seen.len()];
    let mut orphan = vec![false; seen.len()];
    for start in 0..seen.len() {
        // Walk back to a row with a place, then number the walked rows forward; a cycle makes
        // the row where it closes an orphan, and the walk starts over.
        let mut path = Vec::new();
        let mut i = start;
        let mut base = loop {
            if let Some(p) = place[i] {
                break p;
            }
            if path.contains(&i) {
                orphan[i] = true;
                place[i] = Some(seen[i].id);
                path.clear();
                i = start;
                continue;
            }
            match pred(i) {
                Some(Some(j)) => {
                    path.push(i);
                    i = j;
                }
                Some(None) => {
                    place[i] = Some(1);
                    break 1;
                }
                None => {
                    orphan[i] = true;
                    place[i] = Some(seen[i].id);
                    break seen[i].id;
                }
            }
        };
        while let Some(k) = path.pop() {
            base += 1;
            place[k] = Some(base);
        }
    }
    let mut expected = 1;
    for (i, s) in seen.iter().enumerate() {
        let p = place[i].unwrap_or(s.id);
        if edited[i] {
            problem(
                s.id,
                ProblemKind::Edited,
                format!("row {} does not match its hash", s.id),
            );
        }
        let gap = s.id > expected;
        if gap {
            let what = format!("rows {expected}..={} are missing", s.id - 1);
            problem(expected, ProblemKind::Deleted, what);
        }
        expected = expected.max(s.id + 1);
        if orphan[i] && !edited[i] && !gap {
            let what = format!(
                "row {}'s prev_hash links to no row: the row before it was deleted or replaced",
                s.id
            );
            problem(s.id, ProblemKind::Deleted, what);
        } else if !orphan[i] && p != s.id {
            let what = format!("row {} holds the entry written as row {p}", s.id);
            problem(s.id, ProblemKind::Reordered, what);
        }
    }
    // The chain's rows by place (a row in its own place wins over a moved copy).
    let mut at: HashMap<i64, usize> = HashMap::new();
    for (i, s) in seen.iter().enumerate() {
        let p = place[i].unwrap_or(s.id);
        if p == s.id || !at.contains_key(&p) {
            at.insert(p, i);
        }
    }
    let tip = at.keys().copied().max().unwrap_or(0);
    let matches = |n: i64, hash: &str| match n {
        0 => hash == GENESIS_HASH,
        n => at
            .get(&n)
            .is_some_and(|&i| seen[i].stored == hash || seen[i].computed == hash),
    };
    let head_hash = at
        .get(&tip)
        .map_or(GENESIS_HASH.to_string(), |&i| seen[i].stored.clone());
    let mut check_head = |src: &str, n: i64, hash: &str, may_lag: bool| {
        if n > tip {
            let what = format!("the {src} counts {n} rows but the chain ends at row {tip}");
            problem(tip + 1, ProblemKind::Truncated, what);
        } else if n < tip && !may_lag {
            let what = format!("rows after {n} are not covered by the {src}");
            problem(n + 1, ProblemKind::Head, what);
        } else if !matches(n, hash) {
            let what = format!("the {src}'s hash differs from row {n}'s");
            problem(n, ProblemKind::Head, what);
        }
    };
    check_head("head record", head.0, &head.1, false);
    match &sidecar {
        Ok((n, hash)) => check_head("sidecar", *n as i64, hash, true),
        Err(e) => problem(0, ProblemKind::Head, format!("head sidecar unusable: {e}")),
    }
    AuditReport {
        rows: seen.len() as u64,
        problems,
        head_hash,
    }
}
