//! Atomic file writes and a streaming safetensors writer.
//!
//! Every state write goes to a temporary file in the same folder, is fsynced, renamed over the
//! target and the folder fsynced, so a crash leaves either the old file or the new one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Writes a file atomically: `write` fills a temp file that replaces `path` only when complete.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let f = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(path, e))
}

/// Writes a string atomically.
pub fn write_string_atomic(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |w| w.write_all(text.as_bytes()))
}

fn dtype_name(d: DType) -> Result<&'static str> {
    Ok(match d {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F64 => "F64",
        DType::U32 => "U32",
        DType::I64 => "I64",
        DType::U8 => "U8",
        other => {
            return Err(Error::Generation(format!(
                "cannot write dtype {other:?} to safetensors"
            )))
        }
    })
}

/// Little-endian bytes of a tensor (any device), in its own dtype.
pub fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F64 => t
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F16 => t
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::BF16 => t
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U32 => t
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I64 => t
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U8 => t.to_vec1::<u8>()?,
        other => {
            return Err(Error::Generation(format!(
                "cannot serialize dtype {other:?}"
            )))
        }
    })
}

/// A tensor to be written: its header entry and a way to produce its bytes when its turn comes.
pub struct PendingTensor<'a> {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Produces the tensor (called once, in name order, while writing).
    pub produce: Box<dyn FnMut() -> Result<Tensor> + 'a>,
}

/// Writes a safetensors file atomically, producing one tensor at a time so that a model larger
/// than memory can be rewritten. Tensors are stored in name order, header padded to 8 bytes.
pub fn write_safetensors_streaming(
    path: &Path,
    mut tensors: Vec<PendingTensor<'_>>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut offset = 0usize;
    for t in &tensors {
        let n: usize = t.shape.iter().product::<usize>() * t.dtype.size_in_bytes();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype_name(t.dtype)?, "shape": t.shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut hbytes = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap_or_default();
    while !hbytes.len().is_multiple_of(8) {
        hbytes.push(b' ');
    }
    let mut failure: Option<Error> = None;
    let res = write_atomic(path, |w| {
        w.write_all(&(hbytes.len() as u64).to_le_bytes())?;
        w.write_all(&hbytes)?;
        for t in tensors.iter_mut() {
            let produced = (t.produce)().and_then(|x| {
                if x.dims() != t.shape.as_slice() || x.dtype() != t.dtype {
                    return Err(Error::ShapeMismatch {
                        path: path.to_path_buf(),
                        name: t.name.clone(),
                        expected: t.shape.clone(),
                        got: x.dims().to_vec(),
                    });
                }
                tensor_bytes(&x)
            });
            match produced {
                Ok(b) => w.write_all(&b)?,
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("tensor production failed"));
                }
            }
        }
        Ok(())
    });
    if let Some(e) = failure {
        return Err(e);
    }
    res
}

/// Writes in-memory tensors to a safetensors file atomically.
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let pending = tensors
        .iter()
        .map(|(n, t)| {
            let t = t.clone();
            PendingTensor {
                name: n.clone(),
                dtype: t.dtype(),
                shape: t.dims().to_vec(),
                produce: Box::new(move || Ok(t.clone())),
            }
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors_streaming(path, pending, &meta)
}
