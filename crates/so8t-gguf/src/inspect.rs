//! Human-readable summaries of GGUF files ([`inspect`]) and a deep check of one ([`verify`]):
//! the reader's structure checks, the data of every tensor (float values finite, block scales
//! of quantized types finite, quantized weights finite once decoded by `quant::dequantize`) and the file's sha256 against a sibling `manifest.json` or
//! `SHA256SUMS`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::Value;
use crate::quant::GgmlType;
use crate::reader::{GgufFile, TensorInfo};

/// Arrays longer than this are abbreviated by [`inspect`].
const SHOWN_ITEMS: usize = 8;
/// Strings longer than this (in chars) are cut by [`inspect`].
const SHOWN_CHARS: usize = 120;

fn short_str(s: &str) -> String {
    if s.chars().count() > SHOWN_CHARS {
        let cut: String = s.chars().take(SHOWN_CHARS).collect();
        format!("{cut:?}… ({} bytes)", s.len())
    } else {
        format!("{s:?}")
    }
}

/// A value as [`inspect`] shows it: strings cut, arrays of more than 8 elements as
/// `[49152 strings: "<|endoftext|>", …]`.
pub fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => short_str(s),
        Value::Array(t, items) => {
            let shown: Vec<String> = items.iter().take(SHOWN_ITEMS).map(show_value).collect();
            if items.len() > SHOWN_ITEMS {
                let kind = match t {
                    crate::format::ValueType::String => "strings".to_string(),
                    crate::format::ValueType::Array => "arrays".to_string(),
                    t => format!("{t}"),
                };
                format!("[{} {kind}: {}, …]", items.len(), shown.join(", "))
            } else {
                format!("[{}]", shown.join(", "))
            }
        }
        v => v.to_string(),
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A report of `file`: header, metadata (long arrays abbreviated), a table of tensors (name,
/// type, dims, bytes, offset) and totals per type.
pub fn inspect(file: &GgufFile) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "file:        {}", file.path().display());
    let _ = writeln!(
        s,
        "GGUF v{}, {} ({}), alignment {}, data at byte {}",
        file.version(),
        human_bytes(file.file_len()),
        file.file_len(),
        file.alignment(),
        file.data_offset()
    );
    let _ = writeln!(s, "\nmetadata ({} keys):", file.metadata_entries().len());
    let width = file
        .metadata_entries()
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (k, v) in file.metadata_entries() {
        let ty = match v {
            Value::Array(t, _) => format!("{t}[]"),
            v => v.value_type().to_string(),
        };
        let _ = writeln!(s, "  {k:width$}  {ty:9} {}", show_value(v));
    }
    let tensors = file.tensors();
    let _ = writeln!(s, "\ntensors ({}):", tensors.len());
    let nw = tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        s,
        "  {:nw$}  {:5}  {:22}  {:>12}  {:>12}",
        "name", "type", "dims", "bytes", "offset"
    );
    let mut per_type: BTreeMap<GgmlType, (usize, u64, u64)> = BTreeMap::new();
    for t in tensors {
        let dims = format!("{:?}", t.dims);
        let _ = writeln!(
            s,
            "  {:nw$}  {:5}  {:22}  {:>12}  {:>12}",
            t.name,
            t.ty.name(),
            dims,
            t.n_bytes,
            file.data_offset() + t.offset
        );
        let e = per_type.entry(t.ty).or_default();
        e.0 += 1;
        e.1 += t.n_elements;
        e.2 += t.n_bytes;
    }
    let _ = writeln!(s, "\ntotals per type:");
    let (mut n, mut w, mut b) = (0, 0, 0);
    for (ty, (count, weights, bytes)) in &per_type {
        let _ = writeln!(
            s,
            "  {:5}  {count:5} tensors  {weights:>14} weights  {:>12}  ({:.2} bits/weight)",
            ty.name(),
            human_bytes(*bytes),
            *bytes as f64 * 8.0 / (*weights).max(1) as f64
        );
        n += count;
        w += weights;
        b += bytes;
    }
    let _ = writeln!(
        s,
        "  all    {n:5} tensors  {w:>14} weights  {:>12}",
        human_bytes(b)
    );
    s
}

/// Where a checksum of the file was found and whether it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumCheck {
    /// The `manifest.json` or `SHA256SUMS` that lists the file.
    pub source: PathBuf,
    /// The sha256 listed there.
    pub expected: String,
    /// Whether it equals the file's.
    pub matches: bool,
}

/// The result of [`verify`].
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The file.
    pub path: PathBuf,
    /// GGUF version.
    pub version: u32,
    /// File size.
    pub bytes: u64,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Number of tensors.
    pub tensors: usize,
    /// Tensors whose data were checked (all but integer types).
    pub checked_tensors: usize,
    /// Checksums found next to the file.
    pub checksums: Vec<ChecksumCheck>,
    /// Every problem found, each naming the tensor and the byte offset.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// No problems found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: GGUF v{}, {} bytes, {} tensors ({} data-checked), sha256 {}",
            self.path.display(),
            self.version,
            self.bytes,
            self.tensors,
            self.checked_tensors,
            self.sha256
        )?;
        for c in &self.checksums {
            writeln!(
                f,
                "  checksum in {}: {}",
                c.source.display(),
                if c.matches { "matches" } else { "MISMATCH" }
            )?;
        }
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        write!(f, "{}", if self.is_ok() { "OK" } else { "FAILED" })
    }
}

/// Byte offsets (within a block) of the f16 scales of each block type, and f32 ones.
fn block_scales(ty: GgmlType) -> (&'static [usize], &'static [usize]) {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => (&[0], &[]),
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => (&[0, 2], &[]),
        Q2_K => (&[80, 82], &[]),
        Q3_K => (&[108], &[]),
        Q6_K => (&[208], &[]),
        Q8_K => (&[], &[0]),
        _ => (&[], &[]),
    }
}

/// Counts non-finite values of a tensor's data: (count, index of the first bad element or
/// block, unit name); None for types with nothing to check.
fn check_data(ty: GgmlType, bytes: &[u8]) -> Option<(u64, Option<u64>, &'static str)> {
    fn scan<const N: usize>(
        bytes: &[u8],
        bad: impl Fn([u8; N]) -> bool + Sync,
    ) -> (u64, Option<u64>) {
        let chunks = bytes.chunks_exact(N);
        let mut count = 0u64;
        let mut first = None;
        for (i, c) in chunks.enumerate() {
            if bad(c.try_into().expect("chunks_exact gives N bytes")) {
                count += 1;
                first.get_or_insert(i as u64);
            }
        }
        (count, first)
    }
    let (count, first) = match ty {
        GgmlType::F32 => scan::<4>(bytes, |b| !f32::from_le_bytes(b).is_finite()),
        GgmlType::F64 => scan::<8>(bytes, |b| !f64::from_le_bytes(b).is_finite()),
        GgmlType::F16 => scan::<2>(bytes, |b| !f16::from_le_bytes(b).is_finite()),
        GgmlType::BF16 => scan::<2>(bytes, |b| !bf16::from_le_bytes(b).is_finite()),
        ty => {
            let (h, s) = block_scales(ty);
            if h.is_empty() && s.is_empty() {
                return None;
            }
            let mut count = 0u64;
            let mut first = None;
            for (i, block) in bytes.chunks_exact(ty.type_size()).enumerate() {
                let bad_h = h
                    .iter()
                    .any(|&o| !f16::from_le_bytes([block[o], block[o + 1]]).is_finite());
                let bad_s = s.iter().any(|&o| {
                    let v = [block[o], block[o + 1], block[o + 2], block[o + 3]];
                    !f32::from_le_bytes(v).is_finite()
                });
                if bad_h || bad_s {
                    count += 1;
                    first.get_or_insert(i as u64);
                }
            }
            return Some((count, first, "blocks with a non-finite scale"));
        }
    };
    Some((count, first, "non-finite values"))
}

/// Dequantizes a quantized tensor a chunk of blocks at a time (memory independent of its size)
/// and counts non-finite weights: (count, index of the first bad block); None when the quant
/// module cannot decode the type.
fn check_dequantized(ty: GgmlType, bytes: &[u8]) -> Option<(u64, Option<u64>)> {
    const BLOCKS: usize = 1024;
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let mut count = 0u64;
    let mut first = None;
    for (c, chunk) in bytes.chunks(BLOCKS * ts).enumerate() {
        let w = crate::quant::dequantize(ty, chunk, chunk.len() / ts * bs).ok()?;
        for (i, v) in w.iter().enumerate() {
            if !v.is_finite() {
                count += 1;
                first.get_or_insert((c * BLOCKS + i / bs) as u64);
            }
        }
    }
    Some((count, first))
}

fn check_tensor(file: &GgufFile, t: &TensorInfo) -> Option<Option<String>> {
    let bytes = file.tensor_bytes(t);
    let (mut count, mut first, mut what) = check_data(t.ty, bytes)?;
    if count == 0 && t.ty.block_size() > 1 {
        if let Some((c, f)) = check_dequantized(t.ty, bytes) {
            (count, first, what) = (c, f, "non-finite dequantized weights");
        }
    }
    Some((count > 0).then(|| {
        let unit = t.ty.type_size() as u64;
        format!(
            "tensor '{}' ({}): {count} {what}, the first at byte {}",
            t.name,
            t.ty,
            file.data_offset() + t.offset + first.unwrap_or(0) * unit
        )
    }))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 listed for `name` in `manifest.json` next to it: `{"files": [{"path"|"name"|
/// "file": name, "sha256": hex}]}` or `{name: hex}` or `{name: {"sha256": hex}}`.
fn manifest_sha(manifest: &serde_json::Value, name: &str) -> Option<String> {
    use serde_json::Value as J;
    let entry_sha = |e: &J| e.get("sha256").and_then(J::as_str).map(str::to_owned);
    let matches_name = |e: &J| {
        ["path", "name", "file"].iter().any(|k| {
            e.get(k)
                .and_then(J::as_str)
                .is_some_and(|p| p == name || Path::new(p).file_name() == Some(name.as_ref()))
        })
    };
    if let Some(files) = manifest.get("files") {
        if let Some(list) = files.as_array() {
            return list.iter().find(|e| matches_name(e)).and_then(entry_sha);
        }
        if let Some(map) = files.as_object() {
            return map
                .get(name)
                .and_then(|e| e.as_str().map(str::to_owned).or_else(|| entry_sha(e)));
        }
    }
    let e = manifest.get(name)?;
    e.as_str().map(str::to_owned).or_else(|| entry_sha(e))
}

/// The sha256 listed for `name` in a `SHA256SUMS` text (`HEX  NAME` or `HEX *NAME` lines).
fn sums_sha(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (sha, rest) = l.trim().split_once(char::is_whitespace)?;
        let file = rest.trim_start().trim_start_matches('*');
        (file == name || Path::new(file).file_name() == Some(name.as_ref()))
            .then(|| sha.to_ascii_lowercase())
    })
}

fn listed_checksums(path: &Path) -> Result<Vec<(PathBuf, String)>> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    let manifest = dir.join("manifest.json");
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest).map_err(|source| Error::Io {
            path: manifest.clone(),
            source,
        })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: manifest.clone(),
            offset: 0,
            msg: format!("not JSON: {e}"),
        })?;
        if let Some(sha) = manifest_sha(&json, name) {
            out.push((manifest, sha.to_ascii_lowercase()));
        }
    }
    let sums = dir.join("SHA256SUMS");
    if sums.is_file() {
        let text = std::fs::read_to_string(&sums).map_err(|source| Error::Io {
            path: sums.clone(),
            source,
        })?;
        if let Some(sha) = sums_sha(&text, name) {
            out.push((sums, sha));
        }
    }
    Ok(out)
}

/// Opens `path` with every structure check of [`GgufFile::open`] (an `Err` when one fails),
/// then checks the data of every tensor (F32, F16, BF16, F64 values finite; the f16/f32 block
/// scales of quantized types finite, and their weights finite after `quant::dequantize` for
/// the types it decodes), hashes the file and compares the hash with a sibling
/// `manifest.json` or `SHA256SUMS` that lists it. Data and checksum problems are listed in the
/// report.
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport> {
    let path = path.as_ref();
    let file = GgufFile::open(path)?;
    let results: Vec<Option<Option<String>>> = file
        .tensors()
        .par_iter()
        .map(|t| check_tensor(&file, t))
        .collect();
    let checked_tensors = results.iter().filter(|r| r.is_some()).count();
    let mut problems: Vec<String> = results.into_iter().flatten().flatten().collect();

    let mut hasher = Sha256::new();
    for chunk in file.bytes().chunks(1 << 24) {
        hasher.update(chunk);
    }
    let sha256 = hex(&hasher.finalize());
    let checksums: Vec<ChecksumCheck> = listed_checksums(path)?
        .into_iter()
        .map(|(source, expected)| ChecksumCheck {
            matches: expected == sha256,
            source,
            expected,
        })
        .collect();
    for c in checksums.iter().filter(|c| !c.matches) {
        problems.push(format!(
            "sha256 {} differs from {} listed in {}",
            sha256,
            c.expected,
            c.source.display()
        ));
    }
    Ok(VerifyReport {
        path: path.to_path_buf(),
        version: file.version(),
        bytes: file.file_len(),
        sha256,
        tensors: file.tensors().len(),
        checked_tensors,
        checksums,
        problems,
    })
}
