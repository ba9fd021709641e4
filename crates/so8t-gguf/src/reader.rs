//! The GGUF reader: [`GgufFile::open`] maps a file, parses header, metadata and tensor infos,
//! and validates the whole layout before it hands anything out, so that every accessor after it
//! is infallible. Each problem is an [`Error::Format`] naming the byte offset.
//!
//! Layout (little-endian, after llama.cpp's `ggml/src/gguf.cpp`): magic `GGUF`, `u32` version,
//! `u64` tensor count, `u64` metadata count; metadata as (string key, `u32` type, value);
//! tensor infos as (string name, `u32` n_dims, `u64` dims ne0 first, `u32` ggml type, `u64`
//! offset into the data section); padding to the alignment; the data section.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{
    align_up, Value, ValueType, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_MIN_VERSION, GGUF_VERSION,
    KEY_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS,
};
use crate::quant::GgmlType;

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in GGUF order: `ne0` (the contiguous one, a row's length) first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section (a multiple of the alignment).
    pub offset: u64,
    /// Number of weights (the product of `dims`).
    pub n_elements: u64,
    /// Bytes of the data.
    pub n_bytes: u64,
    /// Where this tensor's info starts in the file (for messages).
    pub info_offset: u64,
}

/// The bytes of an opened file: a memory map, or a buffer for [`GgufFile::from_bytes`].
enum Data {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Map(m) => m,
            Data::Owned(v) => v,
        }
    }
}

/// An opened, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    data: Data,
    version: u32,
    metadata: Vec<(String, Value)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

/// Size of the fixed header: magic, version, tensor count, metadata count.
const HEADER_LEN: usize = 24;

impl GgufFile {
    /// Maps and validates the GGUF file at `path`.
    ///
    /// The file must not be modified while the returned value lives (it is memory-mapped).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let data = if len == 0 {
            Data::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and lives inside `GgufFile`; the documented contract
            // is that the file is not truncated or rewritten while it is open (the writer
            // replaces files by renaming a new one into place, which leaves this map valid).
            Data::Map(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        Self::parse(path.to_path_buf(), data)
    }

    /// Parses and validates a GGUF file held in memory; `path` only names it in errors.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(path.into(), Data::Owned(bytes))
    }

    fn parse(path: PathBuf, data: Data) -> Result<Self> {
        let parsed = Parser {
            buf: &data,
            pos: 0,
            path: &path,
        }
        .parse()?;
        Ok(GgufFile {
            path,
            data,
            version: parsed.version,
            metadata_index: parsed
                .metadata
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect(),
            metadata: parsed.metadata,
            tensor_index: parsed
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: parsed.tensors,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of the data section and of each tensor.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The file size in bytes.
    pub fn file_len(&self) -> u64 {
        self.data.len() as u64
    }

    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The metadata in file order.
    pub fn metadata_entries(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The metadata value of `key`.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this file. An info from another file whose range does not lie
    /// in this one gives an empty slice.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_offset.saturating_add(info.offset);
        let end = start.saturating_add(info.n_bytes);
        usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| self.data.get(s..e))
            .unwrap_or(&[])
    }
}

struct Parsed {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Parser<'a> {
    fn err(&self, offset: usize, msg: impl Into<String>) -> Error {
        Error::Format {
            path: self.path.to_path_buf(),
            offset: offset as u64,
            msg: msg.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let left = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= left => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(self.err(
                self.pos,
                format!(
                    "{} needs {n} bytes but the file ends after {left} ({} bytes in all)",
                    what(),
                    self.buf.len()
                ),
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        Ok(s.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let at = self.pos;
        let len = self.u64(&|| format!("the length of {}", what()))?;
        let bytes = self.take(len, &|| {
            format!("{} ({len}-byte string at byte {at})", what())
        })?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            self.err(
                at + 8 + e.utf8_error().valid_up_to(),
                format!("{} is not valid UTF-8", what()),
            )
        })
    }

    /// Refuses `count` items of at least `min` bytes each when they cannot fit in the rest.
    fn check_count(&self, at: usize, count: u64, min: usize, what: &str) -> Result<()> {
        let need = count.checked_mul(min as u64);
        if need.is_none_or(|n| n > self.remaining() as u64) {
            return Err(self.err(
                at,
                format!(
                    "{what} count {count} cannot fit: at least {min} bytes each, {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(())
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
        let what = || format!("the {ty} value of key '{key}'");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(&what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => {
                let at = self.pos;
                match self.array::<1>(&what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(self.err(at, format!("bool of key '{key}' is {b}, not 0 or 1")))
                    }
                }
            }
            ValueType::String => Value::String(self.string(&what)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(
                        self.pos,
                        format!("arrays of key '{key}' nest deeper than {MAX_ARRAY_DEPTH}"),
                    ));
                }
                let at = self.pos;
                let id = self.u32(&|| format!("the element type of array key '{key}'"))?;
                let elem = ValueType::from_id(id).ok_or_else(|| {
                    self.err(
                        at,
                        format!("unknown element type {id} of array key '{key}' (known: 0..=12)"),
                    )
                })?;
                let at = self.pos;
                let n = self.u64(&|| format!("the length of array key '{key}'"))?;
                self.check_count(at, n, elem.min_size(), &format!("array '{key}' element"))?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }

    fn parse(mut self) -> Result<Parsed> {
        let len = self.buf.len();
        let magic = self.take(4, &|| "the magic".into())?;
        if magic != GGUF_MAGIC {
            return Err(self.err(
                0,
                format!("magic is {magic:02x?}, not \"GGUF\" (47 47 55 46): not a GGUF file"),
            ));
        }
        let version = self.u32(&|| "the version".into())?;
        if version == 1 {
            return Err(self.err(
                4,
                "GGUF version 1 (32-bit counts) is not supported; re-save it with a current \
                 llama.cpp or gguf-py",
            ));
        }
        if version & 0xffff == 0 && version != 0 {
            return Err(self.err(
                4,
                "this is a big-endian GGUF file; only little-endian is supported",
            ));
        }
        if !(GGUF_MIN_VERSION..=GGUF_VERSION).contains(&version) {
            return Err(self.err(
                4,
                format!("unknown GGUF version {version} (this reader knows 2 and 3)"),
            ));
        }
        if len < HEADER_LEN {
            return Err(self.err(
                self.pos,
                format!("the header needs {HEADER_LEN} bytes, the file has {len}"),
            ));
        }
        let n_tensors = self.u64(&|| "the tensor count".into())?;
        let n_kv = self.u64(&|| "the metadata count".into())?;
        // A metadata entry takes at least key length + 1 key byte + type + 1 value byte; a
        // tensor info at least name length + 1 name byte + n_dims + type + offset.
        self.check_count(16, n_kv, 8 + 1 + 4 + 1, "metadata")?;
        self.check_count(8, n_tensors, 8 + 1 + 4 + 4 + 8, "tensor")?;

        let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n_kv as usize);
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut alignment_at = None;
        for i in 0..n_kv {
            let at = self.pos;
            let key = self.string(&|| format!("metadata key #{i}"))?;
            if key.is_empty() {
                return Err(self.err(at, format!("metadata key #{i} is empty")));
            }
            if let Some(&first) = seen.get(&key) {
                return Err(self.err(
                    at,
                    format!("duplicate metadata key '{key}' (first at byte {first})"),
                ));
            }
            let type_at = self.pos;
            let id = self.u32(&|| format!("the type of key '{key}'"))?;
            let ty = ValueType::from_id(id).ok_or_else(|| {
                self.err(
                    type_at,
                    format!("unknown metadata value type {id} of key '{key}' (known: 0..=12)"),
                )
            })?;
            let value_at = self.pos;
            let value = self.value(ty, &key, 0)?;
            if key == KEY_ALIGNMENT {
                alignment_at = Some((value_at, metadata.len()));
            }
            seen.insert(key.clone(), at);
            metadata.push((key, value));
        }

        let alignment = match alignment_at {
            None => DEFAULT_ALIGNMENT,
            Some((at, i)) => match metadata[i].1 {
                Value::U32(a) if a.is_power_of_two() => u64::from(a),
                Value::U32(a) => {
                    return Err(self.err(
                        at,
                        format!("{KEY_ALIGNMENT} is {a}, not a non-zero power of two"),
                    ))
                }
                ref v => {
                    return Err(self.err(
                        at,
                        format!("{KEY_ALIGNMENT} is a {}, not a u32", v.value_type()),
                    ))
                }
            },
        };

        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut offset_fields = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let at = self.pos;
            let name = self.string(&|| format!("the name of tensor #{i}"))?;
            if name.is_empty() {
                return Err(self.err(at, format!("tensor #{i} has an empty name")));
            }
            if let Some(&first) = names.get(&name) {
                return Err(self.err(
                    at,
                    format!("duplicate tensor name '{name}' (first at byte {first})"),
                ));
            }
            let dims_at = self.pos;
            let n_dims = self.u32(&|| format!("n_dims of tensor '{name}'"))?;
            if n_dims as usize > MAX_DIMS {
                return Err(self.err(
                    dims_at,
                    format!("tensor '{name}' has {n_dims} dimensions, at most {MAX_DIMS} allowed"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(self.u64(&|| format!("dimension {d} of tensor '{name}'"))?);
            }
            let n_elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| {
                    self.err(
                        dims_at,
                        format!(
                            "dims {dims:?} of tensor '{name}' overflow: the product is past 2^63"
                        ),
                    )
                })?;
            let type_at = self.pos;
            let id = self.u32(&|| format!("the type of tensor '{name}'"))?;
            let ty = GgmlType::from_id(id).ok_or_else(|| {
                self.err(
                    type_at,
                    format!("unknown ggml type id {id} of tensor '{name}'"),
                )
            })?;
            let ne0 = dims.first().copied().unwrap_or(1);
            if ne0 % ty.block_size() as u64 != 0 {
                return Err(self.err(
                    dims_at,
                    format!(
                        "tensor '{name}' is {ty} with rows of {ne0}, not a multiple of the \
                         block size {}",
                        ty.block_size()
                    ),
                ));
            }
            let n_bytes = (n_elements / ty.block_size() as u64)
                .checked_mul(ty.type_size() as u64)
                .ok_or_else(|| {
                    self.err(
                        dims_at,
                        format!("the byte size of tensor '{name}' overflows"),
                    )
                })?;
            let off_at = self.pos;
            let offset = self.u64(&|| format!("the data offset of tensor '{name}'"))?;
            if offset % alignment != 0 {
                return Err(self.err(
                    off_at,
                    format!(
                        "tensor '{name}' data offset {offset} is not a multiple of the \
                         alignment {alignment}"
                    ),
                ));
            }
            names.insert(name.clone(), at);
            offset_fields.push(off_at);
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                n_elements,
                n_bytes,
                info_offset: at as u64,
            });
        }

        let data_offset = align_up(self.pos as u64, alignment)
            .ok_or_else(|| self.err(self.pos, "the data section offset overflows"))?;
        if !tensors.is_empty() && data_offset > len as u64 {
            return Err(self.err(
                self.pos,
                format!(
                    "the data section would start at byte {data_offset} (aligned to \
                     {alignment}), past the end of the file ({len} bytes)"
                ),
            ));
        }
        let mut ranges = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.n_bytes));
            match (start, end) {
                (Some(s), Some(e)) if e <= len as u64 => ranges.push((s, e, i)),
                _ => {
                    return Err(self.err(
                        offset_fields[i],
                        format!(
                            "tensor '{}' data ({} bytes at data offset {}, file byte {}) runs \
                             past the end of the file ({len} bytes)",
                            t.name,
                            t.n_bytes,
                            t.offset,
                            data_offset.saturating_add(t.offset)
                        ),
                    ))
                }
            }
        }
        ranges.retain(|r| r.0 < r.1);
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            let ((s0, e0, i0), (s1, e1, i1)) = (w[0], w[1]);
            if s1 < e0 {
                return Err(self.err(
                    offset_fields[i1],
                    format!(
                        "tensor '{}' (bytes {s1}..{e1}) overlaps tensor '{}' (bytes {s0}..{e0})",
                        tensors[i1].name, tensors[i0].name
                    ),
                ));
            }
        }
        Ok(Parsed {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }
}
