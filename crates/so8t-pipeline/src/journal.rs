//! The state journal `pipeline.json`: per step its status, the hash of its inputs, the files it
//! wrote (with their sha256), attempts, times and errors. Written atomically and checksummed: a
//! journal that does not parse or whose checksum is wrong is set aside and the steps are redone
//! (never trusted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
pub use so8t_store::audit::{sha256_file, sha256_hex};
pub use so8t_store::now_ms;

use crate::PipelineError;

/// The journal's file name in the pipeline folder.
pub const JOURNAL: &str = "pipeline.json";

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not started (or reset).
    Pending,
    /// Started and not finished (or killed while running).
    Running,
    /// Finished; its outputs are recorded.
    Done,
    /// Failed after its retries.
    Failed,
}

/// One file a step wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the step's output folder.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 (hex).
    pub sha256: String,
}

/// The record of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Status.
    pub status: StepStatus,
    /// sha256 of the step's inputs (its config section and its upstream steps' outputs).
    pub inputs_hash: String,
    /// sha256 over the outputs (what downstream steps hash as their input).
    pub outputs_hash: String,
    /// The files in `steps/NAME/`.
    pub outputs: Vec<OutputFile>,
    /// Attempts made in the last run of the step.
    pub attempts: u32,
    /// Unix milliseconds of the last start.
    pub started_ms: i64,
    /// Unix milliseconds of the end (0 while running).
    pub finished_ms: i64,
    /// The last error.
    pub error: Option<String>,
    /// What the step reports (counts, metrics, model names).
    pub info: serde_json::Value,
}

/// The journal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// The pipeline's name.
    pub name: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    /// PID of the process that last wrote it.
    pub pid: u32,
    /// Unix milliseconds of the current run's start.
    pub started_ms: i64,
    /// Unix milliseconds of the end (0 while running).
    pub finished_ms: i64,
    /// The last error.
    pub error: Option<String>,
    /// Steps in order of the pipeline.
    pub order: Vec<String>,
    /// Step records by name.
    pub steps: BTreeMap<String, StepRecord>,
}

/// The first line of the file: the sha256 of the JSON text after it.
const HEADER: &str = "so8t-journal-v1 sha256=";

/// How [`Journal::load`] found the journal.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    /// No journal: a new pipeline.
    New,
    /// A valid journal.
    Valid,
    /// A damaged one, moved to the given path; every step is redone.
    Damaged(PathBuf, String),
}

impl Journal {
    /// Reads `dir/pipeline.json`. A damaged journal is renamed to `pipeline.json.damaged-N`
    /// and an empty journal returned, with the reason.
    pub fn load(dir: &Path) -> Result<(Self, Loaded), PipelineError> {
        let path = dir.join(JOURNAL);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Self::default(), Loaded::New))
            }
            Err(e) => return Err(PipelineError::io(&path, e)),
        };
        let why = match parse(&text) {
            Ok(j) => return Ok((j, Loaded::Valid)),
            Err(why) => why,
        };
        let mut n = 1;
        let aside = loop {
            let p = dir.join(format!("{JOURNAL}.damaged-{n}"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        std::fs::rename(&path, &aside).map_err(|e| PipelineError::io(&path, e))?;
        Ok((Self::default(), Loaded::Damaged(aside, why)))
    }

    /// Writes the journal atomically (temp file, fsync, rename, fsync dir).
    pub fn save(&self, dir: &Path) -> Result<(), PipelineError> {
        let body = serde_json::to_string_pretty(self)
            .map_err(|e| PipelineError::step("journal", e))?
            + "\n";
        let text = format!("{HEADER}{}\n{body}", sha256_hex(body.as_bytes()));
        so8t_model::io::write_string_atomic(&dir.join(JOURNAL), &text)
            .map_err(|e| PipelineError::step("journal", e))
    }

    /// Records `rec` as step `name`'s and saves the journal.
    pub fn put(&mut self, dir: &Path, name: &str, rec: &StepRecord) -> Result<(), PipelineError> {
        self.steps.insert(name.to_string(), rec.clone());
        self.save(dir)
    }

    /// The A/B report of a finished `ab` step (its `info.report`, in `dir/steps/ab/`).
    pub fn report(&self, dir: &Path) -> Option<PathBuf> {
        let ab = self
            .steps
            .get("ab")
            .filter(|r| r.status == StepStatus::Done)?;
        Some(dir.join("steps/ab").join(ab.info["report"].as_str()?))
    }
}

/// The journal in `text` if its header's checksum matches the JSON after it (the checksum is of
/// the bytes, so no float formatting can disturb it).
fn parse(text: &[u8]) -> Result<Journal, String> {
    let nl = text
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&text[..nl]).map_err(|_| "the header is not text")?;
    let want = header.strip_prefix(HEADER).ok_or("not a journal header")?;
    let body = &text[nl + 1..];
    if sha256_hex(body) != want {
        return Err("its checksum does not match its contents".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("not a valid journal: {e}"))
}

/// Reads a journal without touching the file (for status): `Err` says why it is unusable.
pub fn read(dir: &Path) -> Result<Option<Journal>, String> {
    match std::fs::read(dir.join(JOURNAL)) {
        Ok(t) => parse(&t).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", dir.join(JOURNAL).display())),
    }
}

/// Every file under `dir` (sorted, relative, `/`-separated) with its size and sha256.
pub fn hash_tree(dir: &Path) -> std::io::Result<Vec<OutputFile>> {
    walk_tree(dir, false)
}

/// [`hash_tree`] that also fsyncs every file and folder it reads (one pass over a step's new
/// outputs makes them durable and records them).
pub fn hash_and_sync_tree(dir: &Path) -> std::io::Result<Vec<OutputFile>> {
    walk_tree(dir, true)
}

/// One hash of a whole folder (of [`hash_tree`]'s list).
pub fn tree_hash(dir: &Path) -> std::io::Result<String> {
    Ok(outputs_hash(&hash_tree(dir)?))
}

fn walk_tree(dir: &Path, sync: bool) -> std::io::Result<Vec<OutputFile>> {
    fn walk(root: &Path, rel: &str, sync: bool, out: &mut Vec<OutputFile>) -> std::io::Result<()> {
        let here = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let mut entries: Vec<_> = std::fs::read_dir(&here)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(root, &r, sync, out)?;
            } else if ft.is_file() {
                let p = e.path();
                if sync {
                    std::fs::File::open(&p)?.sync_all()?;
                }
                out.push(OutputFile {
                    size: std::fs::metadata(&p)?.len(),
                    sha256: sha256_file(&p)?,
                    path: r,
                });
            }
        }
        if sync {
            std::fs::File::open(&here)?.sync_all()?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", sync, &mut out)?;
    Ok(out)
}

/// One hash over a list of output files (their paths and sha256s, as [`hash_parts`]).
pub fn outputs_hash(files: &[OutputFile]) -> String {
    let parts: Vec<&str> = files
        .iter()
        .flat_map(|f| [f.path.as_str(), f.sha256.as_str()])
        .collect();
    hash_parts(&parts)
}

/// sha256 of several strings (each followed by a NUL).
pub fn hash_parts<S: AsRef<str>>(parts: &[S]) -> String {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p.as_ref().as_bytes());
        bytes.push(0);
    }
    sha256_hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tampered_or_torn_journal_is_set_aside() {
        let d = tempfile::tempdir().unwrap();
        let mut j = Journal {
            name: "x".into(),
            ..Default::default()
        };
        j.order.push("data".into());
        j.save(d.path()).unwrap();
        let (back, how) = Journal::load(d.path()).unwrap();
        assert_eq!((back, how), (j.clone(), Loaded::Valid));
        // Edit a value but keep valid JSON: the checksum catches it.
        let p = d.path().join(JOURNAL);
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"x\"", "\"y\"");
        std::fs::write(&p, text).unwrap();
        let (back, how) = Journal::load(d.path()).unwrap();
        assert_eq!(back, Journal::default());
        assert!(matches!(how, Loaded::Damaged(ref a, _) if a.ends_with("pipeline.json.damaged-1")));
        // A torn write (half a file).
        j.save(d.path()).unwrap();
        let text = std::fs::read(&p).unwrap();
        std::fs::write(&p, &text[..text.len() / 2]).unwrap();
        let (_, how) = Journal::load(d.path()).unwrap();
        assert!(matches!(how, Loaded::Damaged(ref a, _) if a.ends_with("pipeline.json.damaged-2")));
        assert!(!p.exists());
    }
}
