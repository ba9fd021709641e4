//! The source tensors of an HF folder, read with positioned reads rather than memory maps: a
//! mapped file's pages count towards the exporter's resident memory as they are touched (the
//! whole model by the end), read pages stay in the OS cache instead. One tensor is in memory at
//! a time.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{Error, Result};

/// Bytes read from the file at a time.
const READ_SLICE: usize = 8 << 20;

/// Where one tensor lies.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: String,
    shape: Vec<usize>,
    start: u64,
    end: u64,
}

/// The safetensors files of a model folder (`model.safetensors` or a sharded index).
pub struct SourceTensors {
    files: Vec<(PathBuf, File)>,
    entries: HashMap<String, Entry>,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl SourceTensors {
    /// Opens the folder's safetensors files and reads their headers.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| io(&index, e))?;
            let v: Json = serde_json::from_str(&text)
                .map_err(|e| Error::Export(format!("{}: {e}", index.display())))?;
            let mut shards: Vec<String> = v["weight_map"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (i, path) in names.into_iter().enumerate() {
            let f = File::open(&path).map_err(|e| io(&path, e))?;
            let mut len = [0u8; 8];
            f.read_exact_at(&mut len, 0).map_err(|e| io(&path, e))?;
            let n = u64::from_le_bytes(len);
            let size = f.metadata().map_err(|e| io(&path, e))?.len();
            if n > size.saturating_sub(8) || n > 100 << 20 {
                return Err(Error::Export(format!(
                    "{}: safetensors header of {n} bytes does not fit the file",
                    path.display()
                )));
            }
            let mut head = vec![0u8; n as usize];
            f.read_exact_at(&mut head, 8).map_err(|e| io(&path, e))?;
            let h: Json = serde_json::from_slice(&head)
                .map_err(|e| Error::Export(format!("{}: header: {e}", path.display())))?;
            for (name, t) in h.as_object().into_iter().flatten() {
                if name == "__metadata__" {
                    continue;
                }
                let off = t["data_offsets"].as_array();
                let (Some(a), Some(b)) = (
                    off.and_then(|o| o.first()).and_then(Json::as_u64),
                    off.and_then(|o| o.get(1)).and_then(Json::as_u64),
                ) else {
                    return Err(Error::Export(format!(
                        "{}: {name}: no data_offsets",
                        path.display()
                    )));
                };
                let (start, end) = (8 + n + a, 8 + n + b);
                if start > end || end > size {
                    return Err(Error::Export(format!(
                        "{}: {name}: data {start}..{end} lies outside the file of {size} bytes",
                        path.display()
                    )));
                }
                entries.insert(
                    name.clone(),
                    Entry {
                        file: i,
                        dtype: t["dtype"].as_str().unwrap_or("").to_string(),
                        shape: t["shape"]
                            .as_array()
                            .map(|s| {
                                s.iter()
                                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        start,
                        end,
                    },
                );
            }
            files.push((path, f));
        }
        Ok(Self { files, entries })
    }

    /// Whether the folder holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The shape of `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The values of `name` as f32 (F32, F16, BF16 or F64 sources).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.read_f32_range(name, 0..usize::MAX)
    }

    /// Values `range` (in row-major element order, clipped to the tensor) of `name` as f32.
    pub fn read_f32_range(&self, name: &str, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| Error::Export(format!("tensor {name} is missing")))?;
        let (path, f) = &self.files[e.file];
        let count: usize = e.shape.iter().product();
        let width = match e.dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            "F64" => 8,
            other => {
                return Err(Error::Export(format!(
                    "{}: {name}: dtype {other} cannot be exported (expected F32, F16, BF16, F64)",
                    path.display()
                )))
            }
        };
        if (e.end - e.start) as usize != count * width {
            return Err(Error::Export(format!(
                "{}: {name}: {} bytes for {count} {} values",
                path.display(),
                e.end - e.start,
                e.dtype
            )));
        }
        let (first, last) = (range.start.min(count), range.end.min(count));
        let n_values = last.saturating_sub(first);
        let end = e.start + (last * width) as u64;
        // Read and convert in slices, so that the raw bytes of a large tensor are never all in
        // memory beside its f32 values.
        let mut out: Vec<f32> = Vec::with_capacity(n_values);
        let mut raw = vec![0u8; (READ_SLICE / width * width).min(n_values * width)];
        let mut at = e.start + (first * width) as u64;
        while at < end {
            let n = raw.len().min((end - at) as usize);
            let buf = &mut raw[..n];
            f.read_exact_at(buf, at).map_err(|x| io(path, x))?;
            at += n as u64;
            match width {
                4 => out.extend(
                    buf.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ),
                8 => out.extend(
                    buf.chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
                ),
                _ if e.dtype == "F16" => out.extend(
                    buf.chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
                ),
                _ => out.extend(
                    buf.chunks_exact(2)
                        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                ),
            }
        }
        Ok(out)
    }
}
