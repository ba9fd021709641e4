//! One entry point, [`open`], for every input format of `so8t data`: JSON Lines, JSON, CSV/TSV,
//! Parquet, Arrow IPC (`.arrow`), and folders (a Hugging Face `save_to_disk` `Dataset` or
//! `DatasetDict`, or any folder of data files such as a hub snapshot).
//!
//! Everything streams: a reader holds one line, one CSV record, one Parquet row group or one
//! Arrow record batch at a time, so memory does not grow with the file. Rows come out as JSON
//! objects with their 1-based line/row number, and every error names the file and the line, row
//! or byte offset.
//!
//! Hugging Face `ClassLabel` columns are stored as integers; the readers translate them to their
//! names using `dataset_info.json` beside an `.arrow` file or the `huggingface` key of the
//! Arrow/Parquet schema metadata, so a label column reads the same whatever format it came in.

mod arrow;
mod csv;
mod parquet;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::jsonl::{read_json, JsonlReader};

/// The row iterator of a [`RowSource`].
pub type Rows = Box<dyn Iterator<Item = Result<(usize, Value)>> + Send>;

/// Rows of one input, as JSON objects with a 1-based row/line number.
pub struct RowSource {
    /// `(line or row number, object)`, or an error naming the file and line/row. Row numbers
    /// restart at 1 in each file of a folder.
    pub rows: Rows,
    /// Column names when the format has a schema/header (CSV header, Parquet/Arrow schema), else
    /// None. For a folder, the columns of its first file.
    pub columns: Option<Vec<String>>,
    /// Total input size in bytes (sum over data files for folders), for progress bars.
    pub total_bytes: u64,
    /// Bytes consumed so far (best effort: exact for JSONL/CSV, per row group / record batch for
    /// Parquet/Arrow, all at once for `.json`), shared with the iterator; equal to
    /// `total_bytes` once the iterator has returned `None`.
    pub consumed: Arc<AtomicU64>,
}

impl std::fmt::Debug for RowSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowSource")
            .field("columns", &self.columns)
            .field("total_bytes", &self.total_bytes)
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

/// The formats [`open`] reads, for error messages.
const SUPPORTED: &str = ".jsonl, .ndjson, .json, .csv, .tsv, .tab, .parquet, .arrow, or a folder \
     (Hugging Face save_to_disk Dataset/DatasetDict, or a folder of .parquet/.arrow/.jsonl/.csv files)";

/// Opens a file or folder by its extension (case-insensitive) or, for a folder, its contents:
/// `dataset_dict.json` (every split, in the listed order), `state.json` (its `_data_files`, in
/// order), or else every `.parquet`, `.arrow`, `.jsonl`, `.ndjson`, `.csv`, `.tsv` and `.tab`
/// file below it, sorted by path (hidden entries, `.json` files and symlinked folders are
/// skipped). Files of a folder are opened one after the other as the rows are read.
pub fn open(path: &Path) -> Result<RowSource> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return open_dir(path);
    }
    let kind = Kind::of(path).ok_or_else(|| {
        let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
        Error::Config(format!(
            "{}: unsupported input format {:?}; expected {SUPPORTED}",
            path.display(),
            ext.unwrap_or_default()
        ))
    })?;
    let consumed = Arc::new(AtomicU64::new(0));
    let progress = Progress {
        shared: consumed.clone(),
        base: 0,
        size: meta.len(),
    };
    let (columns, rows) = open_file(path, kind, progress)?;
    Ok(RowSource {
        rows,
        columns,
        total_bytes: meta.len(),
        consumed,
    })
}

/// A file format, known by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jsonl,
    Json,
    Csv,
    Tsv,
    Parquet,
    Arrow,
}

impl Kind {
    fn of(path: &Path) -> Option<Kind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "jsonl" | "ndjson" => Kind::Jsonl,
            "json" => Kind::Json,
            "csv" => Kind::Csv,
            "tsv" | "tab" => Kind::Tsv,
            "parquet" => Kind::Parquet,
            "arrow" => Kind::Arrow,
            _ => return None,
        })
    }
}

/// Where a reader reports its byte count: `shared = base + bytes read in this file`.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    shared: Arc<AtomicU64>,
    base: u64,
    size: u64,
}

impl Progress {
    /// Records that `local` bytes of this file have been consumed.
    pub(crate) fn set(&self, local: u64) {
        self.shared.store(self.base + local, Ordering::Relaxed);
    }

    /// Records that the whole file has been consumed.
    pub(crate) fn finish(&self) {
        self.set(self.size);
    }

    /// Bytes of this file consumed so far, as last recorded.
    pub(crate) fn local(&self) -> u64 {
        self.shared
            .load(Ordering::Relaxed)
            .saturating_sub(self.base)
    }

    /// The file's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

fn open_file(path: &Path, kind: Kind, progress: Progress) -> Result<(Option<Vec<String>>, Rows)> {
    match kind {
        Kind::Jsonl => {
            let f = File::open(path).map_err(|e| Error::io(path, e))?;
            let reader = CountingBufRead {
                inner: BufReader::with_capacity(1 << 20, f),
                pos: 0,
                progress,
            };
            Ok((None, Box::new(JsonlReader::with_reader(path, reader))))
        }
        Kind::Json => {
            let rows = read_json(path)?;
            progress.finish();
            Ok((None, Box::new(rows.into_iter().map(Ok))))
        }
        Kind::Csv => csv::open(path, b',', progress).map(|(c, r)| (Some(c), r)),
        Kind::Tsv => csv::open(path, b'\t', progress).map(|(c, r)| (Some(c), r)),
        Kind::Parquet => parquet::open(path, progress).map(|(c, r)| (Some(c), r)),
        Kind::Arrow => arrow::open(path, progress).map(|(c, r)| (Some(c), r)),
    }
}

/// A `BufRead` that counts the bytes its user has consumed (exact, unlike counting what the
/// buffer pulled from the file).
struct CountingBufRead<R> {
    inner: R,
    pos: u64,
    progress: Progress,
}

impl<R: BufRead> Read for CountingBufRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.advance(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingBufRead<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.advance(amt);
    }
}

impl<R> CountingBufRead<R> {
    fn advance(&mut self, n: usize) {
        self.pos += n as u64;
        self.progress.set(self.pos);
    }
}

fn open_dir(dir: &Path) -> Result<RowSource> {
    let files = if dir.join("dataset_dict.json").is_file() {
        let dict = read_json_value(&dir.join("dataset_dict.json"))?;
        let splits = string_list(&dict, "splits").ok_or_else(|| {
            Error::Config(format!(
                "{}: expected {{\"splits\": [\"train\", ...]}}",
                dir.join("dataset_dict.json").display()
            ))
        })?;
        let mut files = Vec::new();
        for split in splits {
            files.extend(dataset_files(&dir.join(split))?);
        }
        files
    } else if dir.join("state.json").is_file() {
        dataset_files(dir)?
    } else {
        let mut files = Vec::new();
        walk(dir, &mut files)?;
        files.sort();
        files
    };
    if files.is_empty() {
        return Err(Error::Config(format!(
            "{}: no data files found; expected {SUPPORTED}",
            dir.display()
        )));
    }
    let consumed = Arc::new(AtomicU64::new(0));
    let mut pending = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for path in files {
        let size = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        let kind = Kind::of(&path).ok_or_else(|| {
            Error::Config(format!(
                "{}: unsupported input format; expected {SUPPORTED}",
                path.display()
            ))
        })?;
        let progress = Progress {
            shared: consumed.clone(),
            base: total,
            size,
        };
        total += size;
        pending.push((path, kind, progress));
    }
    let mut pending = pending.into_iter();
    let (path, kind, progress) = pending.next().expect("files is not empty");
    let (columns, first) = open_file(&path, kind, progress)?;
    Ok(RowSource {
        rows: Box::new(Chain {
            current: Some(first),
            pending,
        }),
        columns,
        total_bytes: total,
        consumed,
    })
}

/// The data files of a `save_to_disk` Dataset folder, from its `state.json`.
fn dataset_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let state_path = dir.join("state.json");
    let state = read_json_value(&state_path)?;
    let names: Option<Vec<&str>> = state
        .get("_data_files")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|f| f.get("filename")?.as_str()).collect());
    let names = names.ok_or_else(|| {
        Error::Config(format!(
            "{}: expected \"_data_files\": [{{\"filename\": \"data-00000-of-00001.arrow\"}}, ...]",
            state_path.display()
        ))
    })?;
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ty = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if ty.is_dir() {
            walk(&path, out)?;
        } else if (ty.is_file() || (ty.is_symlink() && path.is_file()))
            && Kind::of(&path).is_some_and(|k| k != Kind::Json)
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Rows of several files, each opened when the previous one is exhausted.
struct Chain<I> {
    current: Option<Rows>,
    pending: I,
}

impl<I: Iterator<Item = (PathBuf, Kind, Progress)>> Iterator for Chain<I> {
    type Item = Result<(usize, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(rows) = &mut self.current {
                if let Some(item) = rows.next() {
                    return Some(item);
                }
                self.current = None;
            }
            let (path, kind, progress) = self.pending.next()?;
            match open_file(&path, kind, progress.clone()) {
                Ok((_, rows)) => self.current = Some(rows),
                Err(e) => {
                    progress.finish();
                    return Some(Err(e));
                }
            }
        }
    }
}

fn read_json_value(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Record {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        msg: format!("malformed JSON: {e}"),
    })
}

fn string_list<'a>(v: &'a Value, key: &str) -> Option<Vec<&'a str>> {
    v.get(key)?.as_array()?.iter().map(Value::as_str).collect()
}

/// Hugging Face `ClassLabel` columns: name → (class names, whether the column is a list of
/// labels, as with `Sequence(ClassLabel(...))`).
#[derive(Debug, Default, Clone)]
pub(crate) struct ClassLabels(Vec<(String, Vec<String>, bool)>);

impl ClassLabels {
    /// From a `features` object of `dataset_info.json` or of the schema metadata.
    fn from_features(features: &Value) -> Self {
        fn names(f: &Value) -> Option<Vec<String>> {
            if f.get("_type")?.as_str()? != "ClassLabel" {
                return None;
            }
            let names = string_list(f, "names")?;
            Some(names.into_iter().map(String::from).collect())
        }
        let mut out = Vec::new();
        for (col, f) in features.as_object().into_iter().flatten() {
            if let Some(n) = names(f) {
                out.push((col.clone(), n, false));
            } else if let Some(n) = f
                .get("feature")
                .or_else(|| f.as_array().filter(|a| a.len() == 1).map(|a| &a[0]))
                .and_then(names)
            {
                out.push((col.clone(), n, true));
            }
        }
        ClassLabels(out)
    }

    /// From the value of the `huggingface` schema metadata key: `{"info": {"features": …}}`.
    pub(crate) fn from_hf_metadata(json: &str) -> Self {
        serde_json::from_str::<Value>(json)
            .ok()
            .and_then(|v| v.get("info")?.get("features").map(Self::from_features))
            .unwrap_or_default()
    }

    /// From a `dataset_info.json` in `dir`, if there is one.
    pub(crate) fn from_dataset_info(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("dataset_info.json");
        if !path.is_file() {
            return Ok(None);
        }
        let info = read_json_value(&path)?;
        Ok(info.get("features").map(Self::from_features))
    }

    /// Returns true if and only if no column is a `ClassLabel`.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replaces class ids by their names in `row` (-1, "no label", becomes null); strings are
    /// left alone. An id out of range is an error.
    pub(crate) fn apply(&self, row: &mut Value) -> std::result::Result<(), String> {
        for (col, names, in_list) in &self.0 {
            let Some(v) = row.get_mut(col.as_str()) else {
                continue;
            };
            let translate = |v: &mut Value| -> std::result::Result<(), String> {
                let Some(id) = v.as_i64() else {
                    return Ok(());
                };
                *v = match usize::try_from(id).ok().and_then(|i| names.get(i)) {
                    Some(name) => Value::String(name.clone()),
                    None if id == -1 => Value::Null,
                    None => {
                        return Err(format!(
                            "column {col:?}: class id {id} is out of range for its ClassLabel \
                             names [{}]",
                            names.join(", ")
                        ))
                    }
                };
                Ok(())
            };
            match (v, in_list) {
                (Value::Array(items), true) => items.iter_mut().try_for_each(translate)?,
                (v, false) => translate(v)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs a decoder step, turning a panic inside a third-party decoder (which fuzzing has found in
/// the past on corrupt input) into an error message instead of unwinding through the caller.
pub(crate) fn guard<T>(step: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        format!("decoder failed on corrupt input: {msg}")
    })
}

/// An error for a file whose bytes are not what they should be, as `path: msg`.
pub(crate) fn corrupt(path: &Path, msg: String) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
    )
}
