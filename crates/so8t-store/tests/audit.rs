//! The audit log: a chain that verifies, and every kind of tampering reported at the right row.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use so8t_store::audit::{
    row_hash, sha256_hex, sidecar_path, verify, AuditEntry, AuditLog, AuditReport, ProblemKind,
    GENESIS_HASH,
};

fn entry(i: usize) -> AuditEntry {
    AuditEntry {
        time_ms: 1_700_000_000_000 + i as i64,
        request_id: format!("req-{i}"),
        user_id: (!i.is_multiple_of(3)).then(|| format!("user-{}", i % 5)),
        model: "so8t-phi35".into(),
        endpoint: ["/api/chat", "/v1/chat/completions"][i % 2].into(),
        thinking_sha256: sha256_hex(format!("thinking {i}").as_bytes()),
        final_sha256: sha256_hex(format!("final {i}").as_bytes()),
        class: (i % 4 != 1).then(|| ["ALLOW", "ESCALATION", "DENY", "REFUSE"][i % 4].into()),
        latency_ms: 12.5 + i as f64,
        thinking_text: i
            .is_multiple_of(7)
            .then(|| format!("思考 {i} <think-task>")),
    }
}

/// A log of `n` rows in a fresh folder.
fn log_with(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = AuditLog::open(&path).unwrap();
    for i in 1..=n {
        let row = log.append(&entry(i)).unwrap();
        assert_eq!(row.id, i as i64);
    }
    drop(log);
    (dir, path)
}

/// Copies the log (database and sidecar) to a new folder.
fn copy(path: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("audit.db");
    std::fs::copy(path, &to).unwrap();
    std::fs::copy(sidecar_path(path), sidecar_path(&to)).unwrap();
    (dir, to)
}

/// Runs `sql` on a copy of the log and verifies it.
fn tamper(path: &Path, sql: &str) -> AuditReport {
    let (_dir, to) = copy(path);
    let c = Connection::open(&to).unwrap();
    c.execute_batch(sql).unwrap();
    drop(c);
    verify(&to).unwrap()
}

fn kinds(r: &AuditReport) -> Vec<(ProblemKind, i64)> {
    r.problems.iter().map(|p| (p.kind, p.id)).collect()
}

#[test]
fn intact_chain_verifies() {
    let (_dir, path) = log_with(50);
    let r = verify(&path).unwrap();
    assert!(r.is_ok(), "{:?}", r.problems);
    assert_eq!(r.rows, 50);
    let log = AuditLog::open(&path).unwrap();
    let rows = log.rows(0, 100).unwrap();
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0].prev_hash, GENESIS_HASH);
    let mut prev = GENESIS_HASH.to_string();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.id, i as i64 + 1);
        assert_eq!(row.entry, entry(i + 1));
        assert_eq!(row.prev_hash, prev);
        assert_eq!(row.row_hash, row_hash(&prev, &row.entry));
        prev = row.row_hash.clone();
    }
    assert_eq!(r.head_hash, prev);
    assert_eq!(log.head().unwrap(), (50, prev.clone()));
    let side = std::fs::read_to_string(sidecar_path(&path)).unwrap();
    assert_eq!(side, format!("so8t-audit-head v1\nrows 50\nhash {prev}\n"));
    // Paging.
    let page = log.rows(10, 5).unwrap();
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
    assert!(log.rows(50, 10).unwrap().is_empty());
    // Reopening continues the chain.
    drop(log);
    let log = AuditLog::open(&path).unwrap();
    let row = log.append(&entry(51)).unwrap();
    assert_eq!((row.id, row.prev_hash.as_str()), (51, prev.as_str()));
    drop(log);
    assert!(verify(&path).unwrap().is_ok());
}

#[test]
fn empty_log_verifies() {
    let (_dir, path) = log_with(0);
    let r = verify(&path).unwrap();
    assert!(r.is_ok(), "{:?}", r.problems);
    assert_eq!((r.rows, r.head_hash.as_str()), (0, GENESIS_HASH));
}

#[test]
fn encoding_keeps_field_boundaries() {
    let a = entry(1);
    let mut b = a.clone();
    b.model = format!("{}{}", a.model, &a.endpoint[..1]);
    b.endpoint = a.endpoint[1..].to_string();
    assert_ne!(row_hash(GENESIS_HASH, &a), row_hash(GENESIS_HASH, &b));
    let mut c = a.clone();
    c.user_id = None;
    let mut d = a.clone();
    d.user_id = Some(String::new());
    assert_ne!(row_hash(GENESIS_HASH, &c), row_hash(GENESIS_HASH, &d));
    assert_ne!(row_hash(GENESIS_HASH, &a), row_hash(&"1".repeat(64), &a));
}

#[test]
fn every_edited_field_is_reported_at_its_row() {
    let (_dir, path) = log_with(50);
    let edits = [
        "time_ms = time_ms + 1",
        "request_id = request_id || 'x'",
        "user_id = COALESCE(user_id, '') || 'x'",
        "user_id = NULL",
        "model = 'other'",
        "endpoint = endpoint || '/'",
        "thinking_sha256 = final_sha256",
        "final_sha256 = thinking_sha256",
        "class = CASE WHEN class = 'DENY' THEN 'ALLOW' ELSE 'DENY' END",
        "latency_ms = latency_ms + 0.001",
        "thinking_text = COALESCE(thinking_text, '') || 'x'",
        "prev_hash = '1111111111111111111111111111111111111111111111111111111111111111'",
        "row_hash = '2222222222222222222222222222222222222222222222222222222222222222'",
    ];
    for set in edits {
        for id in [1, 2, 21, 25, 49, 50] {
            if set == "user_id = NULL" && entry(id).user_id.is_none() {
                continue;
            }
            let r = tamper(&path, &format!("UPDATE audit SET {set} WHERE id = {id}"));
            assert_eq!(
                kinds(&r),
                [(ProblemKind::Edited, id as i64)],
                "{set} on row {id}: {:?}",
                r.problems
            );
        }
    }
}

#[test]
fn deleted_middle_row() {
    let (_dir, path) = log_with(50);
    let r = tamper(&path, "DELETE FROM audit WHERE id = 25");
    assert_eq!(kinds(&r), [(ProblemKind::Deleted, 25)], "{:?}", r.problems);
    assert_eq!(r.rows, 49);
    // Deleted, then the later rows renumbered to close the gap.
    let r = tamper(
        &path,
        "DELETE FROM audit WHERE id = 25; UPDATE audit SET id = -id WHERE id > 25;
         UPDATE audit SET id = -id - 1 WHERE id < 0;",
    );
    let k = kinds(&r);
    assert_eq!(k[0], (ProblemKind::Deleted, 25), "{:?}", r.problems);
    assert!(k
        .iter()
        .all(|&(kind, id)| kind != ProblemKind::Reordered || id == 25));
    assert!(
        k.contains(&(ProblemKind::Truncated, 50)),
        "{:?}",
        r.problems
    );
    // The first row.
    let r = tamper(&path, "DELETE FROM audit WHERE id = 1");
    assert_eq!(kinds(&r), [(ProblemKind::Deleted, 1)], "{:?}", r.problems);
}

#[test]
fn deleted_last_rows() {
    let (_dir, path) = log_with(50);
    let r = tamper(&path, "DELETE FROM audit WHERE id = 50");
    assert_eq!(
        kinds(&r),
        [(ProblemKind::Truncated, 50), (ProblemKind::Truncated, 50)],
        "{:?}",
        r.problems
    );
    let r = tamper(&path, "DELETE FROM audit WHERE id > 45");
    assert_eq!(
        kinds(&r),
        [(ProblemKind::Truncated, 46), (ProblemKind::Truncated, 46)]
    );
    // Also fixing the head record leaves the sidecar.
    let (_d, head) = copy(&path);
    let log = AuditLog::open(&head).unwrap();
    let h49 = log.rows(48, 1).unwrap()[0].row_hash.clone();
    drop(log);
    let c = Connection::open(&head).unwrap();
    c.execute_batch(&format!(
        "DELETE FROM audit WHERE id = 50; UPDATE audit_head SET rows = 49, head_hash = '{h49}'"
    ))
    .unwrap();
    drop(c);
    let r = verify(&head).unwrap();
    assert_eq!(
        kinds(&r),
        [(ProblemKind::Truncated, 50)],
        "{:?}",
        r.problems
    );
    assert!(r.problems[0].what.contains("sidecar"));
}

#[test]
fn swapped_rows() {
    let (_dir, path) = log_with(50);
    let swap = |a: i64, b: i64| {
        format!(
            "UPDATE audit SET id = -1 WHERE id = {a}; UPDATE audit SET id = {a} WHERE id = {b};
             UPDATE audit SET id = {b} WHERE id = -1;"
        )
    };
    let r = tamper(&path, &swap(10, 20));
    assert_eq!(
        kinds(&r),
        [(ProblemKind::Reordered, 10), (ProblemKind::Reordered, 20)],
        "{:?}",
        r.problems
    );
    let r = tamper(&path, &swap(30, 31));
    assert_eq!(
        kinds(&r),
        [(ProblemKind::Reordered, 30), (ProblemKind::Reordered, 31)],
        "{:?}",
        r.problems
    );
    let r = tamper(&path, &swap(1, 50));
    assert_eq!(
        kinds(&r),
        [(ProblemKind::Reordered, 1), (ProblemKind::Reordered, 50)],
        "{:?}",
        r.problems
    );
}

#[test]
fn edited_head_record_and_sidecar() {
    let (_dir, path) = log_with(50);
    let r = tamper(
        &path,
        &format!("UPDATE audit_head SET head_hash = '{GENESIS_HASH}'"),
    );
    assert_eq!(kinds(&r), [(ProblemKind::Head, 50)], "{:?}", r.problems);
    let r = tamper(&path, "UPDATE audit_head SET rows = 48");
    assert_eq!(kinds(&r), [(ProblemKind::Head, 49)], "{:?}", r.problems);
    let r = tamper(&path, "UPDATE audit_head SET rows = 51");
    assert_eq!(
        kinds(&r),
        [(ProblemKind::Truncated, 51)],
        "{:?}",
        r.problems
    );

    let (_d, to) = copy(&path);
    let side = sidecar_path(&to);
    let text = std::fs::read_to_string(&side).unwrap();
    let hash = text.lines().nth(2).unwrap().strip_prefix("hash ").unwrap();
    std::fs::write(&side, text.replace(hash, &"3".repeat(64))).unwrap();
    let r = verify(&to).unwrap();
    assert_eq!(kinds(&r), [(ProblemKind::Head, 50)], "{:?}", r.problems);
    std::fs::write(&side, text.replace("rows 50", "rows 52")).unwrap();
    assert_eq!(kinds(&verify(&to).unwrap()), [(ProblemKind::Truncated, 51)]);
    std::fs::write(&side, "garbage").unwrap();
    assert_eq!(kinds(&verify(&to).unwrap()), [(ProblemKind::Head, 0)]);
    std::fs::remove_file(&side).unwrap();
    assert_eq!(kinds(&verify(&to).unwrap()), [(ProblemKind::Head, 0)]);
}

#[test]
fn inserted_copy_is_reported() {
    let (_dir, path) = log_with(20);
    let r = tamper(
        &path,
        "INSERT INTO audit SELECT 21, time_ms, request_id, user_id, model, endpoint,
             thinking_sha256, final_sha256, class, latency_ms, thinking_text, prev_hash, row_hash
         FROM audit WHERE id = 7",
    );
    assert_eq!(
        kinds(&r),
        [(ProblemKind::Reordered, 21)],
        "{:?}",
        r.problems
    );
}

#[test]
fn thinking_text_only_when_given() {
    let (_dir, path) = log_with(0);
    let log = AuditLog::open(&path).unwrap();
    let mut e = entry(1);
    e.thinking_text = None;
    let a = log.append(&e).unwrap();
    e.thinking_text = Some("秘密の思考".into());
    let b = log.append(&e).unwrap();
    let rows = log.rows(0, 10).unwrap();
    assert_eq!(rows[0].entry.thinking_text, None);
    assert_eq!(rows[1].entry.thinking_text.as_deref(), Some("秘密の思考"));
    assert_eq!((rows[0].clone(), rows[1].clone()), (a, b));
    let c = Connection::open(&path).unwrap();
    let stored: Option<String> = c
        .query_row("SELECT thinking_text FROM audit WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, None);
    // Latency must be finite.
    e.latency_ms = f64::NAN;
    let err = log.append(&e).unwrap_err().to_string();
    assert!(err.contains("latency_ms"), "{err}");
    drop(log);
    assert!(verify(&path).unwrap().is_ok());
}

#[test]
fn concurrent_appends_form_one_chain() {
    let (_dir, path) = log_with(0);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let log = AuditLog::open(&path).unwrap();
                (0..25)
                    .map(|i| log.append(&entry(t * 100 + i)).unwrap().id)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=100).collect::<Vec<_>>());
    let r = verify(&path).unwrap();
    assert!(r.is_ok(), "{:?}", r.problems);
    assert_eq!(r.rows, 100);
    let log = AuditLog::open(&path).unwrap();
    let mut ids: Vec<String> = log
        .rows(0, 1000)
        .unwrap()
        .into_iter()
        .map(|r| r.entry.request_id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let err = verify(&missing).unwrap_err().to_string();
    assert!(err.contains("nope.db"), "{err}");
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7")
        .unwrap();
    let err = AuditLog::open(&other).err().unwrap().to_string();
    assert!(
        err.contains("other.db") && err.contains("version 7"),
        "{err}"
    );
}
