//! Arrow IPC `.arrow` files: the stream format (what Hugging Face `datasets` writes in
//! `save_to_disk` folders and its cache) and the file format (`ARROW1` magic). One record batch
//! is decoded at a time and converted to JSON objects here (no `arrow-json`), for strings,
//! integers, floats (16/32/64), booleans, null, lists, structs and dictionary-encoded values of
//! those. `ClassLabel` ids become names, from `dataset_info.json` beside the file or else the
//! `huggingface` schema metadata.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_ipc::reader::{FileReader, StreamReader};
use arrow_schema::{ArrowError, DataType};
use serde_json::{Map, Number, Value};

use super::{corrupt, guard, ClassLabels, Progress, Rows};
use crate::error::{Error, Result};

type Batches = Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>;

/// Opens an Arrow IPC file (stream or file format); returns its column names and its rows
/// (1-based over the file).
pub(crate) fn open(path: &Path, progress: Progress) -> Result<(Vec<String>, Rows)> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = progress.size();
    let mut head = [0u8; 6];
    let head_len = read_at(&mut file, 0, &mut head).map_err(|e| Error::io(path, e))?;
    let is_file_format = head_len == 6 && &head == b"ARROW1";
    if !is_file_format && size >= 8 {
        // A stream ends with an end-of-stream marker: 0xFFFFFFFF 0x00000000 (or, before Arrow
        // 0.15, 0x00000000 alone). Checking it catches a file cut at a message boundary, which
        // the stream reader would take for a shorter, valid stream.
        let mut tail = [0u8; 8];
        read_at(&mut file, size - 8, &mut tail).map_err(|e| Error::io(path, e))?;
        let modern = head[..4] == [0xff; 4];
        let ok = if modern {
            tail == [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]
        } else {
            tail[4..] == [0; 4]
        };
        if !ok {
            return Err(corrupt(
                path,
                format!(
                    "not an Arrow IPC file or truncated (no end-of-stream marker in the last \
                     bytes of {size})"
                ),
            ));
        }
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    let reader = Counting {
        inner: BufReader::with_capacity(1 << 20, file),
        pos: 0,
        progress: progress.clone(),
    };
    let opened = guard(|| -> std::result::Result<_, ArrowError> {
        Ok(if is_file_format {
            let r = FileReader::try_new(reader, None)?;
            (r.schema(), Box::new(r) as Batches)
        } else {
            let r = StreamReader::try_new(reader, None)?;
            (r.schema(), Box::new(r) as Batches)
        })
    });
    let (schema, batches) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            return Err(corrupt(
                path,
                format!("not an Arrow IPC file or truncated ({e})"),
            ))
        }
        Err(msg) => return Err(corrupt(path, format!("not an Arrow IPC file ({msg})"))),
    };
    for field in schema.fields() {
        if !supported(field.data_type()) {
            return Err(Error::Config(format!(
                "{}: column {:?} has Arrow type {}, which is not supported; supported: strings, \
                 integers, floats, booleans, null, and lists, structs or dictionaries of those",
                path.display(),
                field.name(),
                field.data_type()
            )));
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let labels = match ClassLabels::from_dataset_info(dir)? {
        Some(l) if !l.is_empty() => l,
        _ => schema
            .metadata()
            .get("huggingface")
            .map(|m| ClassLabels::from_hf_metadata(m))
            .unwrap_or_default(),
    };
    let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
    let rows = ArrowRows {
        path: path.to_path_buf(),
        batches,
        pending: Vec::new().into_iter(),
        row: 0,
        labels,
        progress,
        done: false,
    };
    Ok((columns, Box::new(rows)))
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    file.seek(SeekFrom::Start(offset))?;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Returns true if and only if [`column_to_json`] converts this type.
fn supported(dt: &DataType) -> bool {
    use DataType::*;
    match dt {
        Null | Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64
        | Float16 | Float32 | Float64 | Utf8 | LargeUtf8 | Utf8View => true,
        List(f) | LargeList(f) => supported(f.data_type()),
        Struct(fields) => fields.iter().all(|f| supported(f.data_type())),
        Dictionary(_, values) => supported(values),
        _ => false,
    }
}

/// A reader that records how far it has read (and seeked) in `progress`.
struct Counting<R> {
    inner: R,
    pos: u64,
    progress: Progress,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        self.progress.set(self.pos);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        self.progress.set(self.pos);
        Ok(self.pos)
    }
}

struct ArrowRows {
    path: PathBuf,
    batches: Batches,
    pending: std::vec::IntoIter<Value>,
    /// Rows yielded so far.
    row: usize,
    labels: ClassLabels,
    progress: Progress,
    done: bool,
}

impl ArrowRows {
    fn err(&self, line: usize, msg: String) -> Error {
        Error::Record {
            path: self.path.clone(),
            line,
            column: 0,
            msg,
        }
    }
}

impl Iterator for ArrowRows {
    type Item = Result<(usize, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(mut value) = self.pending.next() {
                self.row += 1;
                if let Err(msg) = self.labels.apply(&mut value) {
                    return Some(Err(self.err(self.row, msg)));
                }
                return Some(Ok((self.row, value)));
            }
            if self.done {
                return None;
            }
            let next = guard(|| self.batches.next()).and_then(|b| match b {
                Some(Ok(batch)) => batch_to_json(&batch).map(Some),
                Some(Err(e)) => Err(e.to_string()),
                None => Ok(None),
            });
            match next {
                Ok(Some(rows)) => self.pending = rows.into_iter(),
                Ok(None) => {
                    self.done = true;
                    self.progress.finish();
                    return None;
                }
                Err(msg) => {
                    self.done = true;
                    let at = self.progress.local();
                    let msg = format!("corrupt or truncated Arrow IPC data near byte {at}: {msg}");
                    return Some(Err(self.err(self.row + 1, msg)));
                }
            }
        }
    }
}

/// The rows of one record batch as JSON objects.
fn batch_to_json(batch: &RecordBatch) -> std::result::Result<Vec<Value>, String> {
    let schema = batch.schema();
    let mut rows: Vec<Map<String, Value>> = (0..batch.num_rows()).map(|_| Map::new()).collect();
    for (field, col) in schema.fields().iter().zip(batch.columns()) {
        let values =
            column_to_json(col.as_ref()).map_err(|m| format!("column {:?}: {m}", field.name()))?;
        for (row, v) in rows.iter_mut().zip(values) {
            row.insert(field.name().clone(), v);
        }
    }
    Ok(rows.into_iter().map(Value::Object).collect())
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Every value of an array as JSON (null where the array is null).
fn column_to_json(col: &dyn Array) -> std::result::Result<Vec<Value>, String> {
    fn each<T>(
        col: &dyn Array,
        len: usize,
        get: impl Fn(usize) -> T,
        to: impl Fn(T) -> Value,
    ) -> Vec<Value> {
        (0..len)
            .map(|i| {
                if col.is_null(i) {
                    Value::Null
                } else {
                    to(get(i))
                }
            })
            .collect()
    }
    let n = col.len();
    let num = |x: i64| Value::from(x);
    let unum = |x: u64| Value::from(x);
    Ok(match col.data_type() {
        DataType::Null => vec![Value::Null; n],
        DataType::Boolean => {
            let a = col.as_boolean();
            each(col, n, |i| a.value(i), Value::Bool)
        }
        DataType::Int8 => {
            let a = col.as_primitive::<Int8Type>();
            each(col, n, |i| i64::from(a.value(i)), num)
        }
        DataType::Int16 => {
            let a = col.as_primitive::<Int16Type>();
            each(col, n, |i| i64::from(a.value(i)), num)
        }
        DataType::Int32 => {
            let a = col.as_primitive::<Int32Type>();
            each(col, n, |i| i64::from(a.value(i)), num)
        }
        DataType::Int64 => {
            let a = col.as_primitive::<Int64Type>();
            each(col, n, |i| a.value(i), num)
        }
        DataType::UInt8 => {
            let a = col.as_primitive::<UInt8Type>();
            each(col, n, |i| u64::from(a.value(i)), unum)
        }
        DataType::UInt16 => {
            let a = col.as_primitive::<UInt16Type>();
            each(col, n, |i| u64::from(a.value(i)), unum)
        }
        DataType::UInt32 => {
            let a = col.as_primitive::<UInt32Type>();
            each(col, n, |i| u64::from(a.value(i)), unum)
        }
        DataType::UInt64 => {
            let a = col.as_primitive::<UInt64Type>();
            each(col, n, |i| a.value(i), unum)
        }
        DataType::Float16 => {
            let a = col.as_primitive::<Float16Type>();
            each(col, n, |i| a.value(i).to_f64(), float)
        }
        DataType::Float32 => {
            let a = col.as_primitive::<Float32Type>();
            each(col, n, |i| f64::from(a.value(i)), float)
        }
        DataType::Float64 => {
            let a = col.as_primitive::<Float64Type>();
            each(col, n, |i| a.value(i), float)
        }
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            each(col, n, |i| a.value(i), Value::from)
        }
        DataType::LargeUtf8 => {
            let a = col.as_string::<i64>();
            each(col, n, |i| a.value(i), Value::from)
        }
        DataType::Utf8View => {
            let a = col.as_string_view();
            each(col, n, |i| a.value(i), Value::from)
        }
        DataType::List(f) | DataType::LargeList(f) => {
            if !supported(f.data_type()) {
                return Err(format!("unsupported list item type {}", f.data_type()));
            }
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                if col.is_null(i) {
                    out.push(Value::Null);
                    continue;
                }
                let items = match col.data_type() {
                    DataType::List(_) => col.as_list::<i32>().value(i),
                    _ => col.as_list::<i64>().value(i),
                };
                out.push(Value::Array(column_to_json(items.as_ref())?));
            }
            out
        }
        DataType::Struct(_) => {
            let s = col.as_struct();
            let mut rows: Vec<Map<String, Value>> = (0..n).map(|_| Map::new()).collect();
            for (name, child) in s.column_names().into_iter().zip(s.columns()) {
                let values = column_to_json(child.as_ref())?;
                for (row, v) in rows.iter_mut().zip(values) {
                    row.insert(name.to_string(), v);
                }
            }
            rows.into_iter()
                .enumerate()
                .map(|(i, r)| {
                    if col.is_null(i) {
                        Value::Null
                    } else {
                        Value::Object(r)
                    }
                })
                .collect()
        }
        DataType::Dictionary(_, _) => {
            let d = col
                .as_any_dictionary_opt()
                .ok_or("dictionary array without dictionary")?;
            let values = column_to_json(d.values().as_ref())?;
            let keys = d.normalized_keys();
            (0..n)
                .map(|i| {
                    if col.is_null(i) {
                        Value::Null
                    } else {
                        values.get(keys[i]).cloned().unwrap_or(Value::Null)
                    }
                })
                .collect()
        }
        other => return Err(format!("unsupported Arrow type {other}")),
    })
}
