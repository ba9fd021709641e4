//! Parquet, through the `parquet` crate's row API (no Arrow bridge): the footer is read when
//! the file is opened, then one row group at a time is decoded, each row becoming a JSON object
//! (strings, integers, floats, booleans, null, lists, structs; dates, times and decimals as
//! strings). Only uncompressed and Snappy column chunks are read (what pyarrow and Hugging Face
//! `datasets` write by default); other codecs are refused when the file is opened.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::{Field, Row};
use serde_json::{Map, Number, Value};

use super::{corrupt, guard, ClassLabels, Progress, Rows};
use crate::error::{Error, Result};

/// Opens a Parquet file; returns its top-level column names and its rows (1-based over the
/// file).
pub(crate) fn open(path: &Path, progress: Progress) -> Result<(Vec<String>, Rows)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = match guard(|| SerializedFileReader::new(file)) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Err(corrupt(
                path,
                format!("not a Parquet file or truncated ({e})"),
            ))
        }
        Err(msg) => return Err(corrupt(path, format!("not a Parquet file ({msg})"))),
    };
    let meta = reader.metadata();
    let mut row_group_ends = Vec::with_capacity(meta.num_row_groups());
    let mut rows_so_far = 0u64;
    for (g, rg) in meta.row_groups().iter().enumerate() {
        let mut end = 0u64;
        for col in rg.columns() {
            match col.compression() {
                Compression::UNCOMPRESSED | Compression::SNAPPY => {}
                other => {
                    return Err(Error::Config(format!(
                        "{}: column {} (row group {g}) is compressed with {}, which this build \
                         does not read; supported: uncompressed, Snappy (re-save the file with \
                         compression=\"snappy\")",
                        path.display(),
                        col.column_path(),
                        codec_name(other)
                    )))
                }
            }
            let (start, len) = col.byte_range();
            end = end.max(start + len);
        }
        rows_so_far += rg.num_rows().max(0) as u64;
        row_group_ends.push((rows_so_far, end));
    }
    let columns = meta
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let labels = meta
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .find(|kv| kv.key == "huggingface")
        .and_then(|kv| kv.value.as_deref())
        .map(ClassLabels::from_hf_metadata)
        .unwrap_or_default();
    let rows = ParquetRows {
        path: path.to_path_buf(),
        iter: RowIter::from_file_into(Box::new(reader)),
        row: 0,
        row_group_ends,
        group: 0,
        labels,
        progress,
        done: false,
    };
    Ok((columns, Box::new(rows)))
}

fn codec_name(c: Compression) -> &'static str {
    match c {
        Compression::UNCOMPRESSED => "no compression",
        Compression::SNAPPY => "Snappy",
        Compression::GZIP(_) => "GZIP",
        Compression::LZO => "LZO",
        Compression::BROTLI(_) => "Brotli",
        Compression::LZ4 => "LZ4",
        Compression::ZSTD(_) => "ZSTD",
        Compression::LZ4_RAW => "LZ4_RAW",
    }
}

struct ParquetRows {
    path: PathBuf,
    iter: RowIter<'static>,
    /// Rows yielded so far.
    row: u64,
    /// Per row group: (rows up to and including it, byte offset where its data ends).
    row_group_ends: Vec<(u64, u64)>,
    /// Row group of the next row.
    group: usize,
    labels: ClassLabels,
    progress: Progress,
    done: bool,
}

impl ParquetRows {
    fn err(&self, msg: String) -> Error {
        let start = self
            .group
            .checked_sub(1)
            .map_or(4, |g| self.row_group_ends[g].1);
        Error::Record {
            path: self.path.clone(),
            line: self.row as usize + 1,
            column: 0,
            msg: format!(
                "corrupt Parquet data in row group {} (data from byte {start}): {msg}",
                self.group
            ),
        }
    }
}

impl Iterator for ParquetRows {
    type Item = Result<(usize, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let row = match guard(|| self.iter.next()) {
            Ok(Some(Ok(row))) => row,
            Ok(None) => {
                self.done = true;
                self.progress.finish();
                return None;
            }
            Ok(Some(Err(e))) => {
                self.done = true;
                return Some(Err(self.err(e.to_string())));
            }
            Err(msg) => {
                self.done = true;
                return Some(Err(self.err(msg)));
            }
        };
        self.row += 1;
        while let Some(&(rows, end)) = self.row_group_ends.get(self.group) {
            if self.row < rows {
                break;
            }
            self.progress.set(end);
            self.group += 1;
        }
        let line = self.row as usize;
        let mut value = match row_to_json(&row) {
            Ok(v) => v,
            Err(msg) => return Some(Err(self.record_err(line, msg))),
        };
        if let Err(msg) = self.labels.apply(&mut value) {
            return Some(Err(self.record_err(line, msg)));
        }
        Some(Ok((line, value)))
    }
}

impl ParquetRows {
    fn record_err(&self, line: usize, msg: String) -> Error {
        Error::Record {
            path: self.path.clone(),
            line,
            column: 0,
            msg,
        }
    }
}

fn row_to_json(row: &Row) -> std::result::Result<Value, String> {
    let mut obj = Map::with_capacity(row.len());
    for (name, field) in row.get_column_iter() {
        let v = field_to_json(field).map_err(|msg| format!("column {name:?}: {msg}"))?;
        obj.insert(name.clone(), v);
    }
    Ok(Value::Object(obj))
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn field_to_json(field: &Field) -> std::result::Result<Value, String> {
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => (*n).into(),
        Field::Short(n) => (*n).into(),
        Field::Int(n) => (*n).into(),
        Field::Long(n) => (*n).into(),
        Field::UByte(n) => (*n).into(),
        Field::UShort(n) => (*n).into(),
        Field::UInt(n) => (*n).into(),
        Field::ULong(n) => (*n).into(),
        Field::Float16(x) => float(f64::from(*x)),
        Field::Float(x) => float(f64::from(*x)),
        Field::Double(x) => float(*x),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => return Err("binary value that is not UTF-8 text is not supported".into()),
        },
        Field::Group(row) => row_to_json(row)?,
        Field::ListInternal(list) => Value::Array(
            list.elements()
                .iter()
                .map(field_to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Field::MapInternal(map) => {
            let mut obj = Map::new();
            for (k, v) in map.entries() {
                let key = match k {
                    Field::Str(s) => s.clone(),
                    other => other.to_string(),
                };
                obj.insert(key, field_to_json(v)?);
            }
            Value::Object(obj)
        }
        // Decimal, Date, TimeMillis/Micros, TimestampMillis/Micros: their display form.
        other => Value::String(other.to_string()),
    })
}
