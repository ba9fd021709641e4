//! Memory-mapped safetensors weights of an HF model folder: `model.safetensors`, or shards listed
//! in `model.safetensors.index.json`. Every tensor access checks name, dtype and shape and says
//! which file is at fault.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorView};
use safetensors::{Dtype, SafeTensors};

use crate::error::{read_json, Error, Result};

/// One memory-mapped safetensors file with its parsed header.
struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    meta: Metadata,
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingFile {
                    path: path.to_path_buf(),
                    what: "safetensors weights".into(),
                }
            } else {
                Error::io(path, e)
            }
        })?;
        // SAFETY: the file is opened read-only; so8t never writes to its inputs. As with every
        // mmap, a concurrent truncation by another process would be undefined behaviour.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::Safetensors {
            path: path.to_path_buf(),
            msg,
        };
        if mmap.len() < 8 {
            return Err(bad(format!(
                "file is {} bytes, too short for the 8-byte header length",
                mmap.len()
            )));
        }
        check_not_truncated(&mmap[..]).map_err(bad)?;
        let (header_len, meta) =
            SafeTensors::read_metadata(&mmap[..]).map_err(|e| bad(format!("{e}")))?;
        let need = 8 + header_len + meta.data_len();
        if mmap.len() < need {
            return Err(bad(format!(
                "truncated: header declares {} data bytes ending at byte {need}, but the file has {} bytes",
                meta.data_len(),
                mmap.len()
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            header_len,
            meta,
        })
    }

    fn view(&self, name: &str) -> Option<Result<TensorView<'_>>> {
        let info = self.meta.info(name)?;
        let (start, end) = info.data_offsets;
        let base = 8 + self.header_len;
        let data = &self.mmap[base + start..base + end];
        Some(
            TensorView::new(info.dtype, info.shape.clone(), data).map_err(|e| Error::Safetensors {
                path: self.path.clone(),
                msg: format!("tensor `{name}`: {e}"),
            }),
        )
    }
}

/// Explains a truncated file before the safetensors parser reports a generic error.
fn check_not_truncated(bytes: &[u8]) -> std::result::Result<(), String> {
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(n8);
    let len = bytes.len() as u64;
    if n > len.saturating_sub(8) {
        return Err(format!(
            "truncated: the header claims {n} bytes after byte 8, but the file has only {len} bytes"
        ));
    }
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n as usize]) else {
        return Ok(()); // the parser explains malformed JSON itself
    };
    let end = header
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    if 8 + n + end > len {
        return Err(format!(
            "truncated: tensors end at byte {}, but the file has only {len} bytes",
            8 + n + end
        ));
    }
    Ok(())
}

/// The weights of a model: one or more safetensors files, looked up by tensor name.
pub struct Weights {
    files: Vec<MappedFile>,
    /// tensor name → index into `files`.
    index: HashMap<String, usize>,
    /// What to call the weights in errors (the single file or the index).
    origin: PathBuf,
}

/// Shard index file (`model.safetensors.index.json`).
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Weights {
    /// Opens the weights of an HF model folder (single file or sharded index).
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let idx: ShardIndex = read_json(&index)?;
            let mut shards: Vec<&String> = idx.weight_map.values().collect();
            shards.sort();
            shards.dedup();
            let mut files = Vec::new();
            let mut file_of = HashMap::new();
            for s in shards {
                let p = dir.join(s);
                if !p.exists() {
                    return Err(Error::MissingFile {
                        path: p,
                        what: format!("shard listed in {}", index.display()),
                    });
                }
                file_of.insert(s.clone(), files.len());
                files.push(MappedFile::open(&p)?);
            }
            let mut map = HashMap::new();
            for (name, shard) in &idx.weight_map {
                let i = file_of[shard];
                if files[i].meta.info(name).is_none() {
                    return Err(Error::MissingTensor {
                        path: files[i].path.clone(),
                        name: name.clone(),
                        hint: format!(" (listed there by {})", index.display()),
                    });
                }
                map.insert(name.clone(), i);
            }
            Ok(Self {
                files,
                index: map,
                origin: index,
            })
        } else if single.exists() {
            Self::from_files(&[single])
        } else {
            Err(Error::MissingFile {
                path: single,
                what: "model weights (model.safetensors or model.safetensors.index.json)".into(),
            })
        }
    }

    /// Opens explicit safetensors files; a name in several files resolves to the first.
    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for p in paths {
            let f = MappedFile::open(p)?;
            for name in f.meta.tensors().keys() {
                index.entry(name.clone()).or_insert(files.len());
            }
            files.push(f);
        }
        let origin = paths.first().cloned().unwrap_or_default();
        Ok(Self {
            files,
            index,
            origin,
        })
    }

    /// True if and only if the weights hold a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index.keys().cloned().collect();
        v.sort();
        v
    }

    /// Shape and dtype of a tensor without loading it.
    pub fn info(&self, name: &str) -> Option<(Vec<usize>, Dtype)> {
        let f = &self.files[*self.index.get(name)?];
        let i = f.meta.info(name)?;
        Some((i.shape.clone(), i.dtype))
    }

    /// The file a tensor lives in (for messages).
    pub fn file_of(&self, name: &str) -> &Path {
        self.index
            .get(name)
            .map(|&i| self.files[i].path.as_path())
            .unwrap_or(&self.origin)
    }

    /// Loads a tensor, converted to `dtype`, without a shape check.
    pub fn get_any(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let Some(&i) = self.index.get(name) else {
            return Err(Error::MissingTensor {
                path: self.origin.clone(),
                name: name.to_string(),
                hint: String::new(),
            });
        };
        let f = &self.files[i];
        let view = f.view(name).expect("index built from metadata")?;
        match view.dtype() {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 => {}
            other => {
                return Err(Error::UnsupportedDtype {
                    path: f.path.clone(),
                    name: name.to_string(),
                    got: format!("{other:?}"),
                })
            }
        }
        let t = view.load(device)?;
        Ok(if t.dtype() == dtype {
            t
        } else {
            t.to_dtype(dtype)?
        })
    }

    /// Loads a tensor and checks that its shape is `expected`.
    pub fn get(
        &self,
        name: &str,
        expected: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if let Some((shape, _)) = self.info(name) {
            if shape != expected {
                return Err(Error::ShapeMismatch {
                    path: self.file_of(name).to_path_buf(),
                    name: name.to_string(),
                    expected: expected.to_vec(),
                    got: shape,
                });
            }
        }
        self.get_any(name, dtype, device)
    }
}
