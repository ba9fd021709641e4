//! CSV and TSV: a header row is required; every record becomes an object of strings keyed by
//! the header. Quoted fields (with commas, tabs or newlines inside), a UTF-8 BOM and CRLF line
//! ends are handled by the `csv` crate; TSV uses the same quoting rules with a tab delimiter.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::{Progress, Rows};
use crate::error::{Error, Result};

/// Opens a delimited file; returns its header and its rows, numbered by the file line on which
/// each record starts (the header is line 1).
pub(crate) fn open(path: &Path, delimiter: u8, progress: Progress) -> Result<(Vec<String>, Rows)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let lines = Arc::new(Mutex::new(LineIndex::default()));
    let tap = NewlineTap {
        inner: file,
        pos: 0,
        lines: lines.clone(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(tap);
    let header = reader
        .byte_headers()
        .map_err(|e| csv_error(path, e))?
        .clone();
    let record_err = |line: u64, msg: String| Error::Record {
        path: path.to_path_buf(),
        line: line as usize,
        column: 0,
        msg,
    };
    let line = header
        .position()
        .map_or(1, |p| lock(&lines).line_at(p.byte()) as u64);
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(record_err(
            line,
            "expected a header row naming the columns".into(),
        ));
    }
    let mut columns: Vec<String> = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let name = std::str::from_utf8(name).map_err(|e| {
            record_err(
                line,
                format!(
                    "header field {} is not valid UTF-8 (byte {} of the field)",
                    i + 1,
                    e.valid_up_to() + 1
                ),
            )
        })?;
        if columns.iter().any(|c| c == name) {
            return Err(record_err(
                line,
                format!("column {name:?} appears twice in the header"),
            ));
        }
        columns.push(name.to_string());
    }
    let rows = CsvRows {
        path: path.to_path_buf(),
        reader,
        columns: columns.clone(),
        record: csv::ByteRecord::new(),
        lines,
        progress,
        done: false,
    };
    Ok((columns, Box::new(rows)))
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map_or(0, |p| p.line() as usize);
    match e.into_kind() {
        csv::ErrorKind::Io(e) => Error::io(path, e),
        other => Error::Record {
            path: path.to_path_buf(),
            line,
            column: 0,
            msg: format!("{:?}", other),
        },
    }
}

struct CsvRows {
    path: PathBuf,
    reader: csv::Reader<NewlineTap<File>>,
    columns: Vec<String>,
    record: csv::ByteRecord,
    lines: Arc<Mutex<LineIndex>>,
    progress: Progress,
    done: bool,
}

impl CsvRows {
    fn row(&self, line: usize) -> Result<Value> {
        let err = |msg: String| Error::Record {
            path: self.path.clone(),
            line,
            column: 0,
            msg,
        };
        if self.record.len() != self.columns.len() {
            return Err(err(format!(
                "expected {} fields ({}), found {}",
                self.columns.len(),
                self.columns.join(", "),
                self.record.len()
            )));
        }
        let mut obj = Map::with_capacity(self.columns.len());
        for (i, (name, bytes)) in self.columns.iter().zip(self.record.iter()).enumerate() {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                err(format!(
                    "field {} ({name}) is not valid UTF-8 (byte {} of the field)",
                    i + 1,
                    e.valid_up_to() + 1
                ))
            })?;
            obj.insert(name.clone(), Value::String(text.to_string()));
        }
        Ok(Value::Object(obj))
    }
}

impl Iterator for CsvRows {
    type Item = Result<(usize, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let more = self.reader.read_byte_record(&mut self.record);
        self.progress.set(self.reader.position().byte());
        match more {
            Ok(true) => {
                let line = self
                    .record
                    .position()
                    .map_or(0, |p| lock(&self.lines).line_at(p.byte()));
                Some(self.row(line).map(|v| (line, v)))
            }
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => {
                // An I/O error will not go away; a parse error is local to one record.
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    self.done = true;
                }
                Some(Err(csv_error(&self.path, e)))
            }
        }
    }
}

/// The offsets of the `\r` and `\n` bytes read but not yet passed, to number lines ourselves:
/// the `csv` crate's `Position` of a record points at the end of the previous record's line
/// terminator (before any blank lines), and its line count lags by one after a CRLF.
#[derive(Debug, Default)]
struct LineIndex {
    ends: VecDeque<(u64, u8)>,
    newlines_before: usize,
}

impl LineIndex {
    /// The 1-based line of the first byte at or after `byte` that is not `\r` or `\n`. Calls
    /// must come with non-decreasing offsets.
    fn line_at(&mut self, byte: u64) -> usize {
        let mut next = byte;
        while let Some(&(at, b)) = self.ends.front() {
            if at > next {
                break;
            }
            if at == next {
                next += 1;
            }
            self.newlines_before += usize::from(b == b'\n');
            self.ends.pop_front();
        }
        self.newlines_before + 1
    }
}

fn lock(lines: &Mutex<LineIndex>) -> std::sync::MutexGuard<'_, LineIndex> {
    lines.lock().unwrap_or_else(|e| e.into_inner())
}

/// Passes bytes through, noting where the line ends are.
struct NewlineTap<R> {
    inner: R,
    pos: u64,
    lines: Arc<Mutex<LineIndex>>,
}

impl<R: Read> Read for NewlineTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut lines = lock(&self.lines);
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                lines.ends.push_back((self.pos + i as u64, b));
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}
