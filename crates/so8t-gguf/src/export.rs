//! HF folder → GGUF files (F32 / F16 / BF16 / Q8_0 / Q4_K_M) in one pass: each source tensor
//! is read once (positioned reads, large tensors in slices of rows), converted to f32, permuted
//! where llama.cpp wants it, and quantized for every requested file in parallel while the next
//! slice is read and the previous encodings are written; files are streamed (a slice or two in
//! memory), written atomically, checksummed, and each gets an Ollama Modelfile.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use so8t_model::Config;

use crate::arch::{permute_rows, plan, Source, TensorPlan};
use crate::error::{Error, Result};
use crate::format::{Value, ValueType};
use crate::meta::Meta;
use crate::modelfile::{modelfile, ModelfileSpec, RoleFormat};
use crate::quant::{self, FileType, GgmlType};
use crate::source::SourceTensors;
use crate::writer::{GgufWriter, TensorSpec};

/// An output flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quant {
    /// Every tensor f32.
    F32,
    /// Matrices f16, vectors f32.
    F16,
    /// Matrices bf16, vectors f32.
    Bf16,
    /// Matrices Q8_0 (F16 where a row is not a multiple of 32), vectors f32.
    Q8_0,
    /// llama.cpp's Q4_K_M mix.
    Q4KM,
}

impl Quant {
    /// Parses `f32`, `f16`, `bf16`, `q8_0`, `q4_k_m` (any case).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Self::F32,
            "f16" => Self::F16,
            "bf16" => Self::Bf16,
            "q8_0" => Self::Q8_0,
            "q4_k_m" => Self::Q4KM,
            o => {
                return Err(Error::Export(format!(
                    "unknown quantization {o:?}: expected f32, f16, bf16, q8_0 or q4_k_m"
                )))
            }
        })
    }

    /// The lowercase name used in file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Q8_0 => "q8_0",
            Self::Q4KM => "q4_k_m",
        }
    }

    /// llama.cpp's file type (`general.file_type`, `llama_ftype`).
    pub fn file_type(self) -> FileType {
        match self {
            Self::F32 => FileType::AllF32,
            Self::F16 => FileType::MostlyF16,
            Self::Bf16 => FileType::MostlyBF16,
            Self::Q8_0 => FileType::MostlyQ8_0,
            Self::Q4KM => FileType::MostlyQ4_K_M,
        }
    }
}

/// Progress callback: (tensors done, total, source bytes done, total).
pub type ProgressFn = Box<dyn Fn(usize, usize, u64, u64) + Sync>;

/// What to export.
pub struct ExportOptions {
    /// The HF model folder.
    pub model: PathBuf,
    /// The output folder (created).
    pub out: PathBuf,
    /// The files to write.
    pub quants: Vec<Quant>,
    /// Base of the file names (`NAME-f16.gguf`) and of the Ollama model names.
    pub name: String,
    /// SYSTEM for the Modelfiles.
    pub system: Option<String>,
    /// llama.cpp pre-tokenizer name instead of the detected one.
    pub tokenizer_pre: Option<String>,
    /// Called after each tensor.
    pub progress: Option<ProgressFn>,
}

/// One written file.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedFile {
    /// Its flavour.
    pub quant: Quant,
    /// The GGUF file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its sha256.
    pub sha256: String,
    /// The Ollama Modelfile next to it.
    pub modelfile: PathBuf,
    /// The Ollama model name (`{name}_{quant}:latest`).
    pub ollama_name: String,
}

/// What [`export`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The files.
    pub files: Vec<ExportedFile>,
    /// Parameters of the model.
    pub parameters: u64,
    /// Wall seconds.
    pub seconds: f64,
}

fn meta_value(m: Meta) -> Value {
    match m {
        Meta::Str(s) => Value::String(s),
        Meta::U32(x) => Value::U32(x),
        Meta::I32(x) => Value::I32(x),
        Meta::F32(x) => Value::F32(x),
        Meta::Bool(b) => Value::Bool(b),
        Meta::StrArray(v) => Value::Array(
            ValueType::String,
            v.into_iter().map(Value::String).collect(),
        ),
        Meta::I32Array(v) => Value::Array(ValueType::I32, v.into_iter().map(Value::I32).collect()),
        Meta::F32Array(v) => Value::Array(ValueType::F32, v.into_iter().map(Value::F32).collect()),
    }
}

/// `135M`, `3.8B`: llama.cpp's size label.
pub fn size_label(params: u64) -> String {
    let p = params as f64;
    if p >= 1e9 {
        format!("{:.1}B", p / 1e9)
    } else if p >= 1e6 {
        format!("{:.0}M", p / 1e6)
    } else {
        format!("{:.0}K", p / 1e3)
    }
}

/// The storage type of every planned tensor in flavour `q` (Q4_K_M: llama.cpp's mix rules).
fn tensor_types(q: Quant, tensors: &[TensorPlan], mix: &quant::mix::MixContext) -> Vec<GgmlType> {
    if q == Quant::Q4KM {
        let dims: Vec<(String, Vec<usize>)> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.iter().rev().copied().collect()))
            .collect();
        let refs: Vec<(&str, &[usize])> = dims
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        return quant::mix::q4_k_m_plan(mix, &refs);
    }
    // Vectors stay f32; matrices take the file type's base type, or llama.cpp's fallback when
    // a row is not a whole number of its blocks.
    let base = q.file_type().default_type();
    tensors
        .iter()
        .map(|t| {
            if t.is_matrix() {
                quant::mix::fallback_type(base, t.row_len())
            } else {
                GgmlType::F32
            }
        })
        .collect()
}

/// Values per slice of a large tensor that the export reads, quantizes and writes at a time.
const SLICE_VALUES: usize = 1 << 24;

/// The row ranges a planned tensor is exported in: slices of about [`SLICE_VALUES`] values
/// for a tensor read straight from the source, all rows at once for one that is computed or
/// whose rows llama.cpp permutes (those are small).
fn slices(t: &TensorPlan) -> Vec<Range<usize>> {
    let row_len = t.row_len().max(1);
    let rows = t.shape.iter().product::<usize>() / row_len;
    let sliceable = matches!(
        t.source,
        Source::Hf {
            permute_heads: None,
            ..
        }
    );
    if !sliceable || rows == 0 {
        return std::iter::once(0..rows).collect();
    }
    let step = (SLICE_VALUES / row_len).max(1);
    (0..rows)
        .step_by(step)
        .map(|r| r..(r + step).min(rows))
        .collect()
}

/// The f32 values of rows `rows` of a planned tensor (a range from [`slices`]).
fn load(w: &SourceTensors, t: &TensorPlan, rows: Range<usize>) -> Result<Vec<f32>> {
    match &t.source {
        Source::Values(v) => Ok(v.clone()),
        Source::Hf {
            name,
            permute_heads: Some(h),
        } => permute_rows(&w.read_f32(name)?, t.shape[0], t.shape[1], *h),
        Source::Hf {
            name,
            permute_heads: None,
        } => w.read_f32_range(name, rows.start * t.row_len()..rows.end * t.row_len()),
    }
}

/// An output file being written: its flavour, its writer and the tensors' storage types.
type Output = (Quant, GgufWriter, Vec<GgmlType>);

/// One slice of rows of tensor `tensor` in f32, `last` for the tensor's final slice.
struct Slice {
    tensor: usize,
    last: bool,
    data: Vec<f32>,
}

/// Streams the tensors, in slices of rows, through three overlapping stages: a reader thread
/// loads the next slice while the current one is quantized for every file (rayon), and one
/// thread per file writes and hashes the encodings. Rendezvous channels keep at most two slices
/// and two encodings per file in memory, so the peak stays far under one large tensor's f32
/// size. Returns the writers, every tensor written.
fn stream_tensors(
    weights: &SourceTensors,
    tensors: &[TensorPlan],
    outputs: Vec<Output>,
    progress: Option<&ProgressFn>,
) -> Result<Vec<(Quant, GgufWriter)>> {
    let total_bytes: u64 = tensors
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64 * 4)
        .sum();
    std::thread::scope(|s| {
        let (src_tx, src_rx) = mpsc::sync_channel::<Result<Slice>>(0);
        s.spawn(move || {
            for (i, t) in tensors.iter().enumerate() {
                let parts = slices(t);
                let n = parts.len();
                for (k, rows) in parts.into_iter().enumerate() {
                    let r = load(weights, t, rows).map(|data| Slice {
                        tensor: i,
                        last: k + 1 == n,
                        data,
                    });
                    let failed = r.is_err();
                    if src_tx.send(r).is_err() || failed {
                        return;
                    }
                }
            }
        });
        let mut sinks = Vec::new();
        let mut types = Vec::new();
        for (q, mut w, tys) in outputs {
            let (tx, rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(0);
            let handle = s.spawn(move || -> Result<GgufWriter> {
                for (i, bytes) in rx {
                    w.write_tensor_part(i, &bytes)?;
                }
                Ok(w)
            });
            types.push(tys);
            sinks.push((q, tx, handle));
        }
        let mut failure = None;
        let mut done_bytes = 0u64;
        'slices: for slice in src_rx.iter() {
            let Slice {
                tensor: i,
                last,
                data,
            } = match slice {
                Ok(s) => s,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let t = &tensors[i];
            let encoded: Result<Vec<Vec<u8>>> = types
                .par_iter()
                .map(|ty| quant::quantize_rows(ty[i], &data, t.row_len()))
                .collect();
            let encoded = match encoded {
                Ok(e) => e,
                Err(e) => {
                    failure = Some(Error::Export(format!("{}: {e}", t.name)));
                    break;
                }
            };
            for ((_, tx, _), bytes) in sinks.iter().zip(encoded) {
                if tx.send((i, bytes)).is_err() {
                    break 'slices; // that writer failed: its error comes from join below
                }
            }
            done_bytes += data.len() as u64 * 4;
            if let Some(cb) = progress {
                cb(
                    i + usize::from(last),
                    tensors.len(),
                    done_bytes,
                    total_bytes,
                );
            }
        }
        drop(src_rx); // a reader still loading stops at its next send
        let mut written = Vec::new();
        for (q, tx, handle) in sinks {
            drop(tx);
            match handle.join() {
                Ok(Ok(w)) => written.push((q, w)),
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(written),
        }
    })
}

/// Exports `opts.model` into `opts.out`.
pub fn export(opts: &ExportOptions) -> Result<ExportReport> {
    let start = Instant::now();
    if opts.quants.is_empty() {
        return Err(Error::Export("no output flavour requested".into()));
    }
    let cfg = Config::from_file(&opts.model.join("config.json"))?;
    let weights = SourceTensors::open(&opts.model)?;
    let p = plan(&cfg, weights.contains("lm_head.weight"))?;
    for t in &p.tensors {
        if let Source::Hf { name, .. } = &t.source {
            match weights.shape(name) {
                None => {
                    return Err(Error::Export(format!(
                        "{}: tensor {name} is missing",
                        opts.model.display()
                    )))
                }
                Some(shape) if shape != t.shape => {
                    return Err(Error::Export(format!(
                        "{}: tensor {name} has shape {shape:?}, the config implies {:?}",
                        opts.model.display(),
                        t.shape
                    )))
                }
                _ => {}
            }
        }
    }
    let params: u64 = p
        .tensors
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    // The tokenizer folder is read once: its chat template feeds the GGUF and the Modelfiles.
    let tok = so8t_model::TextTokenizer::from_dir(&opts.model).ok();
    let template = tok.as_ref().and_then(|t| t.chat_template.as_ref());
    let vocab = crate::vocab::vocab_metadata(
        &opts.model,
        &cfg,
        template.map(|t| t.source.as_str()),
        opts.tokenizer_pre.as_deref(),
    )?;
    let mix = quant::mix::MixContext::new(
        p.arch,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        !p.tensors.iter().any(|t| t.name == "output.weight"),
    );
    std::fs::create_dir_all(&opts.out).map_err(|source| Error::Io {
        path: opts.out.clone(),
        source,
    })?;
    let mut writers = Vec::new();
    for &q in &opts.quants {
        let mut md: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(p.arch.into())),
            ("general.type".into(), Value::String("model".into())),
            ("general.name".into(), Value::String(opts.name.clone())),
            ("general.basename".into(), Value::String(opts.name.clone())),
            (
                "general.size_label".into(),
                Value::String(size_label(params)),
            ),
            ("general.quantization_version".into(), Value::U32(2)),
            ("general.file_type".into(), Value::U32(q.file_type().id())),
        ];
        md.extend(p.metadata.iter().cloned().map(|(k, v)| (k, meta_value(v))));
        md.extend(vocab.iter().cloned().map(|(k, v)| (k, meta_value(v))));
        let types = tensor_types(q, &p.tensors, &mix);
        let specs: Vec<TensorSpec> = p
            .tensors
            .iter()
            .zip(&types)
            .map(|(t, &ty)| {
                let dims = t.shape.iter().rev().map(|&d| d as u64).collect();
                TensorSpec::new(t.name.clone(), dims, ty)
            })
            .collect();
        let path = opts.out.join(format!("{}-{}.gguf", opts.name, q.name()));
        writers.push((q, GgufWriter::create(&path, md, specs)?, types));
    }
    let writers = stream_tensors(&weights, &p.tensors, writers, opts.progress.as_ref())?;
    let roles = template.map(RoleFormat::derive).transpose()?;
    let eos = tok.as_ref().and_then(|t| t.eos_token.clone());
    let stops = roles
        .as_ref()
        .map(|r| r.stops(eos.as_deref()))
        .unwrap_or_default();
    let mut files = Vec::new();
    for (q, w) in writers {
        let s = w.finish()?;
        let file_name = s
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ollama_name = format!("{}_{}", opts.name, q.name());
        let mf_path = opts.out.join(format!("{ollama_name}.Modelfile"));
        let text = format!(
            "# ollama create {ollama_name}:latest -f {ollama_name}.Modelfile\n{}",
            modelfile(&ModelfileSpec {
                from: &format!("./{file_name}"),
                roles: roles.as_ref(),
                stops: &stops,
                system: opts.system.as_deref(),
            })
        );
        so8t_model::io::write_string_atomic(&mf_path, &text)?;
        files.push(ExportedFile {
            quant: q,
            path: s.path,
            bytes: s.bytes,
            sha256: s.sha256,
            modelfile: mf_path,
            ollama_name: format!("{ollama_name}:latest"),
        });
    }
    write_manifest(&opts.out, &files)?;
    Ok(ExportReport {
        files,
        parameters: params,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `SHA256SUMS` (the `sha256sum -c` format) and `manifest.json` beside the files.
fn write_manifest(out: &Path, files: &[ExportedFile]) -> Result<()> {
    let mut sums = String::new();
    for f in files {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        sums.push_str(&format!("{}  {name}\n", f.sha256));
    }
    so8t_model::io::write_string_atomic(&out.join("SHA256SUMS"), &sums)?;
    let json = serde_json::to_string_pretty(files).map_err(|e| Error::Export(e.to_string()))?;
    so8t_model::io::write_string_atomic(&out.join("manifest.json"), &(json + "\n"))?;
    Ok(())
}
