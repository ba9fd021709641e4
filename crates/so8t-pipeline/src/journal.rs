//! The state journal `pipeline.json`: per step its status, the hash of its inputs, the files it
//! wrote (with their sha256), attempts, times and errors. Written atomically and checksummed: a
//! journal that does not parse or whose checksum is wrong is set aside and the steps are redone
//! (never trusted).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    pub started_ms: u64,
    /// Unix milliseconds of the end (0 while running).
    pub finished_ms: u64,
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
    pub started_ms: u64,
    /// Unix milliseconds of the end (0 while running).
    pub finished_ms: u64,
    /// The last error.
    pub error: Option<String>,
    /// Steps in order of the pipeline.
    pub order: Vec<String>,
    /// Step records by name.
    pub steps: BTreeMap<String, StepRecord>,
}

/// The first line of the file: the sha256 of the JSON text after it.
const HEADER: &str = "so8t-journal-v1 sha256=";

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

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
        let body = serde_json::to_string_pretty(self).map_err(|e| PipelineError::Step {
            step: "journal".into(),
            msg: e.to_string(),
        })? + "\n";
        let text = format!("{HEADER}{}\n{body}", hex(&Sha256::digest(body.as_bytes())));
        so8t_model::io::write_string_atomic(&dir.join(JOURNAL), &text).map_err(|e| {
            PipelineError::Step {
                step: "journal".into(),
                msg: e.to_string(),
            }
        })
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
    if hex(&Sha256::digest(body)) != want {
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

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
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

/// Every file under `dir` (sorted, relative, `/`-separated) with its size and sha256.
pub fn hash_tree(dir: &Path) -> std::io::Result<Vec<OutputFile>> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<OutputFile>) -> std::io::Result<()> {
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
                walk(root, &r, out)?;
            } else if ft.is_file() {
                let p = e.path();
                out.push(OutputFile {
                    size: std::fs::metadata(&p)?.len(),
                    sha256: sha256_file(&p)?,
                    path: r,
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    Ok(out)
}

/// One hash over a list of output files.
pub fn outputs_hash(files: &[OutputFile]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(f.sha256.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())
}

/// sha256 of several strings (each followed by a NUL).
pub fn hash_parts<S: AsRef<str>>(parts: &[S]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_ref().as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
