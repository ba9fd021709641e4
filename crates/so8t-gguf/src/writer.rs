//! The streaming GGUF writer. [`GgufWriter::create`] lays out every tensor from its dims and
//! type alone, writes header, metadata, tensor infos and padding, and then takes the tensors'
//! bytes one at a time, in order; memory use is the metadata plus the one tensor the caller
//! holds. [`GgufWriter::finish`] fsyncs and renames the temporary `PATH.tmp-PID` into place, so
//! a crash never leaves a half-written file at `PATH`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::{
    align_up, encode_str, Value, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, KEY_ALIGNMENT,
    MAX_DIMS,
};
use crate::quant::GgmlType;

/// llama.cpp refuses tensor names of `GGML_MAX_NAME` (64) bytes or more.
pub const MAX_TENSOR_NAME: usize = 63;

/// A tensor to be written: its name, dims (GGUF order, `ne0` first) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor name.
    pub name: String,
    /// Dimensions, `ne0` (a row's length) first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
}

impl TensorSpec {
    /// A spec.
    pub fn new(name: impl Into<String>, dims: Vec<u64>, ty: GgmlType) -> Self {
        TensorSpec {
            name: name.into(),
            dims,
            ty,
        }
    }
}

/// What [`GgufWriter::finish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    /// The final path.
    pub path: PathBuf,
    /// File size in bytes.
    pub bytes: u64,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
}

/// Which tensor [`GgufWriter::write_tensor`] gets: by index or by name.
#[derive(Debug, Clone, Copy)]
pub enum TensorRef<'a> {
    /// Position in the spec list.
    Index(usize),
    /// Tensor name.
    Name(&'a str),
}

impl From<usize> for TensorRef<'_> {
    fn from(i: usize) -> Self {
        TensorRef::Index(i)
    }
}

impl<'a> From<&'a str> for TensorRef<'a> {
    fn from(s: &'a str) -> Self {
        TensorRef::Name(s)
    }
}

impl<'a> From<&'a String> for TensorRef<'a> {
    fn from(s: &'a String) -> Self {
        TensorRef::Name(s)
    }
}

/// One tensor's place in the file.
#[derive(Debug, Clone)]
struct Planned {
    name: String,
    n_bytes: u64,
    /// Offset in the data section.
    offset: u64,
}

/// A buffered file that hashes and counts what passes through it.
struct HashingFile {
    out: BufWriter<File>,
    hasher: Sha256,
    written: u64,
}

impl HashingFile {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, pos: u64) -> std::io::Result<()> {
        const ZEROS: [u8; 256] = [0; 256];
        while self.written < pos {
            let n = (pos - self.written).min(ZEROS.len() as u64) as usize;
            self.put(&ZEROS[..n])?;
        }
        Ok(())
    }
}

/// A GGUF file being written. Dropped before [`finish`](Self::finish), it removes its temporary
/// file.
pub struct GgufWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    file: Option<HashingFile>,
    plan: Vec<Planned>,
    next: usize,
    /// Bytes of tensor `next` written so far by [`GgufWriter::write_tensor_part`].
    partial: u64,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("path", &self.path)
            .field("tensors", &self.plan.len())
            .field("next", &self.next)
            .finish()
    }
}

/// The data-section layout of `tensors`: (n_bytes, offset) each, and the section's size.
fn layout(path: &Path, tensors: &[TensorSpec], alignment: u64) -> Result<(Vec<(u64, u64)>, u64)> {
    let bad = |msg: String| Error::Format {
        path: path.to_path_buf(),
        offset: 0,
        msg,
    };
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(tensors.len());
    let mut running = 0u64;
    for t in tensors {
        if t.name.is_empty() || t.name.len() > MAX_TENSOR_NAME {
            return Err(bad(format!(
                "tensor name '{}' must have 1 to {MAX_TENSOR_NAME} bytes (llama.cpp's limit)",
                t.name
            )));
        }
        if !names.insert(t.name.as_str()) {
            return Err(bad(format!("duplicate tensor name '{}'", t.name)));
        }
        if t.dims.len() > MAX_DIMS {
            return Err(bad(format!(
                "tensor '{}' has {} dims, at most {MAX_DIMS} allowed",
                t.name,
                t.dims.len()
            )));
        }
        let n = t
            .dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| bad(format!("dims {:?} of tensor '{}' overflow", t.dims, t.name)))?;
        let ne0 = t.dims.first().copied().unwrap_or(1);
        if ne0 % t.ty.block_size() as u64 != 0 {
            return Err(bad(format!(
                "tensor '{}' is {} with rows of {ne0}, not a multiple of the block size {}",
                t.name,
                t.ty,
                t.ty.block_size()
            )));
        }
        let n_bytes = (n / t.ty.block_size() as u64)
            .checked_mul(t.ty.type_size() as u64)
            .ok_or_else(|| bad(format!("tensor '{}' is too large", t.name)))?;
        out.push((n_bytes, running));
        running = running
            .checked_add(n_bytes)
            .and_then(|e| align_up(e, alignment))
            .ok_or_else(|| bad("the data section size overflows".into()))?;
    }
    Ok((out, running))
}

impl GgufWriter {
    /// Starts `path.tmp-PID`: validates the metadata (non-empty unique keys, homogeneous
    /// arrays, `general.alignment` a power-of-two `u32`) and the tensors (unique names of at
    /// most 63 bytes, at most 4 dims, rows a whole number of blocks), and writes everything
    /// before the tensor data.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: Vec<(String, Value)>,
        tensors: Vec<TensorSpec>,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bad = |msg: String| Error::Format {
            path: path.clone(),
            offset: 0,
            msg,
        };
        let mut keys = std::collections::HashSet::new();
        let mut alignment = DEFAULT_ALIGNMENT;
        for (k, v) in &metadata {
            if k.is_empty() {
                return Err(bad("a metadata key is empty".into()));
            }
            if !keys.insert(k.as_str()) {
                return Err(bad(format!("duplicate metadata key '{k}'")));
            }
            if let Some((at, want, got)) = v.check_homogeneous() {
                return Err(bad(format!(
                    "metadata '{k}': element {at:?} is a {got} in an array of {want}"
                )));
            }
            if k == KEY_ALIGNMENT {
                match v {
                    Value::U32(a) if a.is_power_of_two() => alignment = u64::from(*a),
                    _ => {
                        return Err(bad(format!(
                            "{KEY_ALIGNMENT} must be a u32 power of two, not {} {v}",
                            v.value_type()
                        )))
                    }
                }
            }
        }
        let (sizes, _) = layout(&path, &tensors, alignment)?;

        let mut head = Vec::new();
        head.extend_from_slice(&GGUF_MAGIC);
        head.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in &metadata {
            encode_str(k, &mut head);
            head.extend_from_slice(&v.value_type().id().to_le_bytes());
            v.encode(&mut head);
        }
        for (t, &(_, offset)) in tensors.iter().zip(&sizes) {
            encode_str(&t.name, &mut head);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
        }
        let data_offset = align_up(head.len() as u64, alignment).expect("a header fits in u64");

        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        let tmp_path = path.with_file_name(name);
        let file = File::create(&tmp_path).map_err(|source| Error::Io {
            path: tmp_path.clone(),
            source,
        })?;
        let mut w = GgufWriter {
            path,
            tmp_path,
            file: Some(HashingFile {
                out: BufWriter::with_capacity(1 << 20, file),
                hasher: Sha256::new(),
                written: 0,
            }),
            plan: tensors
                .into_iter()
                .zip(sizes)
                .map(|(t, (n_bytes, offset))| Planned {
                    name: t.name,
                    n_bytes,
                    offset,
                })
                .collect(),
            next: 0,
            partial: 0,
            alignment,
            data_offset,
        };
        w.io(|f| {
            f.put(&head)?;
            f.pad_to(data_offset)
        })?;
        Ok(w)
    }

    fn io(&mut self, op: impl FnOnce(&mut HashingFile) -> std::io::Result<()>) -> Result<()> {
        let f = self.file.as_mut().expect("the file is open until finish");
        op(f).map_err(|source| Error::Io {
            path: self.tmp_path.clone(),
            source,
        })
    }

    fn written(&self) -> u64 {
        self.file.as_ref().map_or(0, |f| f.written)
    }

    fn bad(&self, msg: String) -> Error {
        Error::Format {
            path: self.path.clone(),
            offset: self.written(),
            msg,
        }
    }

    /// Where the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The alignment in use.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The name of the tensor [`write_tensor`](Self::write_tensor) expects next (None when all
    /// are written).
    pub fn next_tensor(&self) -> Option<&str> {
        self.plan.get(self.next).map(|p| p.name.as_str())
    }

    /// The byte size each tensor must have, in order.
    pub fn tensor_sizes(&self) -> impl Iterator<Item = (&str, u64)> {
        self.plan.iter().map(|p| (p.name.as_str(), p.n_bytes))
    }

    /// Writes the bytes of the next tensor (named or indexed by `which`, which must be the next
    /// one in spec order), then the padding up to the next tensor.
    pub fn write_tensor<'a>(
        &mut self,
        which: impl Into<TensorRef<'a>>,
        bytes: &[u8],
    ) -> Result<()> {
        let which = which.into();
        let p = self.check_next(which)?;
        if self.partial > 0 || p.n_bytes != bytes.len() as u64 {
            let after = match self.partial {
                0 => String::new(),
                n => format!(" after {n} written in parts"),
            };
            return Err(self.bad(format!(
                "tensor '{}' must have {} bytes, got {}{after}",
                p.name,
                p.n_bytes,
                bytes.len()
            )));
        }
        self.write_tensor_part(which, bytes)
    }

    /// Writes the next piece of the next tensor's bytes (`which` names that tensor); once its
    /// pieces add up to its size, the padding up to the following tensor. Lets a large tensor
    /// be produced and written a slice of rows at a time.
    pub fn write_tensor_part<'a>(
        &mut self,
        which: impl Into<TensorRef<'a>>,
        bytes: &[u8],
    ) -> Result<()> {
        let p = self.check_next(which.into())?;
        let (n_bytes, offset) = (p.n_bytes, p.offset);
        let done = self.partial + bytes.len() as u64;
        if done > n_bytes {
            return Err(self.bad(format!(
                "tensor '{}' must have {n_bytes} bytes, got {done}",
                p.name
            )));
        }
        let start = self.data_offset + offset;
        let end = align_up(start + n_bytes, self.alignment).expect("checked in create");
        let complete = done == n_bytes;
        debug_assert_eq!(self.written(), start + self.partial);
        self.io(|f| {
            f.put(bytes)?;
            if complete {
                f.pad_to(end)?;
            }
            Ok(())
        })?;
        if complete {
            self.next += 1;
            self.partial = 0;
        } else {
            self.partial = done;
        }
        Ok(())
    }

    /// The plan of the next tensor, when `which` names it.
    fn check_next(&self, which: TensorRef<'_>) -> Result<&Planned> {
        let Some(p) = self.plan.get(self.next) else {
            return Err(self.bad(format!(
                "{which:?}: all {} tensors are written",
                self.plan.len()
            )));
        };
        let matches = match which {
            TensorRef::Index(i) => i == self.next,
            TensorRef::Name(n) => n == p.name,
        };
        if !matches {
            return Err(self.bad(format!(
                "{which:?} written out of order: tensor #{} '{}' comes next",
                self.next, p.name
            )));
        }
        Ok(p)
    }

    /// Checks that every tensor was written, flushes and fsyncs the file, renames it into place
    /// and fsyncs the folder.
    pub fn finish(mut self) -> Result<FileSummary> {
        if let Some(p) = self.plan.get(self.next) {
            return Err(self.bad(format!(
                "finish before all tensors are written: {} of {}, next '{}'",
                self.next,
                self.plan.len(),
                p.name
            )));
        }
        let f = self.file.take().expect("the file is open until finish");
        let (bytes, hasher) = (f.written, f.hasher);
        if let Err(e) = Self::commit(f.out, &self.tmp_path, &self.path) {
            let _ = std::fs::remove_file(&self.tmp_path);
            return Err(e);
        }
        let sha256 = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(FileSummary {
            path: self.path.clone(),
            bytes,
            sha256,
        })
    }
}

impl GgufWriter {
    /// Flush, fsync, rename `tmp` to `path`, fsync the folder.
    fn commit(out: BufWriter<File>, tmp: &Path, path: &Path) -> Result<()> {
        let io = |p: &Path| {
            let path = p.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let file = out.into_inner().map_err(|e| io(tmp)(e.into_error()))?;
        file.sync_all().map_err(io(tmp))?;
        drop(file);
        std::fs::rename(tmp, path).map_err(io(path))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}
