//! Streaming readers of JSON Lines and JSON files: one value at a time with its line number, so
//! a 10 GB file never has to fit in memory, and every error names file:line:column.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// Reads `{…}` objects line by line; blank lines are skipped. `R` is the buffered reader
/// underneath (a boxed one unless built with [`JsonlReader::with_reader`]).
pub struct JsonlReader<R = Box<dyn BufRead>> {
    path: PathBuf,
    reader: R,
    line: usize,
    buf: Vec<u8>,
}

impl JsonlReader {
    /// Opens a `.jsonl` file.
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self::new(
            path,
            Box::new(BufReader::with_capacity(1 << 20, f)),
        ))
    }

    /// Reads from any buffered reader; `path` names it in errors.
    pub fn new(path: &Path, reader: Box<dyn BufRead>) -> Self {
        Self::with_reader(path, reader)
    }
}

impl<R: BufRead> JsonlReader<R> {
    /// Reads from a concrete buffered reader (so the reader is `Send` when `R` is); `path` names
    /// it in errors.
    pub fn with_reader(path: &Path, reader: R) -> Self {
        Self {
            path: path.to_path_buf(),
            reader,
            line: 0,
            buf: Vec::new(),
        }
    }

    fn err(&self, column: usize, msg: String) -> Error {
        Error::Record {
            path: self.path.clone(),
            line: self.line,
            column,
            msg,
        }
    }
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    /// `(line, value)` or an error located at file:line:column.
    type Item = Result<(usize, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(Error::io(&self.path, e))),
            }
            self.line += 1;
            let text = match std::str::from_utf8(&self.buf) {
                Ok(t) => t,
                Err(e) => {
                    let col = String::from_utf8_lossy(&self.buf[..e.valid_up_to()])
                        .chars()
                        .count()
                        + 1;
                    return Some(Err(self.err(
                        col,
                        format!("invalid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
                    )));
                }
            };
            let text = text.trim_start_matches('\u{feff}').trim();
            if text.is_empty() {
                continue;
            }
            return Some(match serde_json::from_str::<Value>(text) {
                Ok(v) => Ok((self.line, v)),
                Err(e) => Err(self.err(e.column(), format!("malformed JSON: {e}"))),
            });
        }
    }
}

/// Reads a `.json` file holding an array of objects, an object of parallel columns
/// (`{"text": [...], "label": [...]}`), or one object; yields `(record number, value)`.
pub fn read_json(path: &Path) -> Result<Vec<(usize, Value)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let before = &bytes[..e.valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        Error::Record {
            path: path.to_path_buf(),
            line,
            column: col,
            msg: "invalid UTF-8".into(),
        }
    })?;
    let v: Value =
        serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| Error::Record {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            msg: format!("malformed JSON: {e}"),
        })?;
    Ok(match v {
        Value::Array(a) => a.into_iter().enumerate().map(|(i, x)| (i + 1, x)).collect(),
        Value::Object(o) if !o.is_empty() && o.values().all(|c| c.is_array()) => {
            let n = o
                .values()
                .map(|c| c.as_array().map_or(0, |a| a.len()))
                .max()
                .unwrap_or(0);
            (0..n)
                .map(|i| {
                    let row: serde_json::Map<String, Value> = o
                        .iter()
                        .map(|(k, c)| (k.clone(), c.get(i).cloned().unwrap_or(Value::Null)))
                        .collect();
                    (i + 1, Value::Object(row))
                })
                .collect()
        }
        other => vec![(1, other)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Vec<Result<(usize, Value)>> {
        JsonlReader::new(
            Path::new("d.jsonl"),
            Box::new(std::io::Cursor::new(bytes.to_vec())),
        )
        .collect()
    }

    #[test]
    fn reads_lines_and_skips_blanks() {
        let r = read(b"{\"a\":1}\n\n  \n{\"a\":2}\r\n{\"a\":3}");
        let lines: Vec<usize> = r.into_iter().map(|x| x.unwrap().0).collect();
        assert_eq!(lines, vec![1, 4, 5]);
    }

    #[test]
    fn malformed_lines_name_file_line_and_column() {
        let r = read(b"{\"a\":1}\n{\"a\": tru}\n");
        let e = r[1].as_ref().unwrap_err().to_string();
        assert!(e.starts_with("d.jsonl:2:"), "{e}");
        assert!(e.contains("malformed JSON"), "{e}");
        let r = read(b"{\"a\":\"ok\"}\n{\"a\":\"\xff\"}\n");
        let e = r[1].as_ref().unwrap_err().to_string();
        assert_eq!(e, "d.jsonl:2:7: invalid UTF-8 (byte 7 of the line)");
    }
}
