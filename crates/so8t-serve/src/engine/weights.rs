//! The engine's weights: 2-D matrices kept in their storage type (GGUF blocks read straight from
//! the memory map, or an HF folder's f32/f16/bf16 bytes) and the small f32 norm vectors.

use std::path::Path;
use std::sync::Arc;

use so8t_gguf::{GgmlType, GgufFile, TensorInfo};
use so8t_model::{Arch, Config, Weights};

use super::config::EngineConfig;
use super::EngineError;
use crate::kernels;

enum Bytes {
    Gguf {
        file: Arc<GgufFile>,
        start: usize,
        len: usize,
    },
    Owned(Vec<u8>),
}

/// A matrix of `rows` rows of `cols` weights each, stored row after row in type `ty`.
pub struct QTensor {
    /// The tensor's name in its file.
    pub name: String,
    /// Storage type.
    pub ty: GgmlType,
    /// Rows (output features).
    pub rows: usize,
    /// Weights per row (input features).
    pub cols: usize,
    /// LoRA adapters added to this matrix's products ([`super::lora`]).
    pub lora: Vec<super::lora::LoraPair>,
    row_bytes: usize,
    data: Bytes,
}

impl QTensor {
    /// A view of the GGUF tensor `name` (1-D tensors are one row).
    pub(crate) fn gguf(f: &Arc<GgufFile>, name: &str) -> Result<Self, EngineError> {
        let bad = |msg: String| EngineError::Model {
            path: f.path().to_path_buf(),
            msg: format!("tensor `{name}`: {msg}"),
        };
        let info: &TensorInfo = f.tensor(name).ok_or_else(|| bad("missing".into()))?;
        let cols = info.dims.first().copied().unwrap_or(1) as usize;
        let rows = info.dims.iter().skip(1).product::<u64>() as usize;
        let bs = info.ty.block_size();
        if !cols.is_multiple_of(bs) {
            return Err(bad(format!(
                "rows of {cols} are not a multiple of {}'s block of {bs}",
                info.ty.name()
            )));
        }
        let row_bytes = cols / bs * info.ty.type_size();
        if rows * row_bytes != info.n_bytes as usize {
            return Err(bad(format!(
                "{} bytes, expected {}",
                info.n_bytes,
                rows * row_bytes
            )));
        }
        Ok(Self {
            name: name.into(),
            ty: info.ty,
            rows,
            cols,
            lora: Vec::new(),
            row_bytes,
            data: Bytes::Gguf {
                file: f.clone(),
                start: (f.data_offset() + info.offset) as usize,
                len: rows * row_bytes,
            },
        })
    }

    /// An in-memory matrix.
    pub fn owned(name: &str, ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Self {
        let row_bytes = cols / ty.block_size() * ty.type_size();
        assert_eq!(data.len(), rows * row_bytes, "{name}: wrong byte count");
        Self {
            name: name.into(),
            ty,
            rows,
            cols,
            lora: Vec::new(),
            row_bytes,
            data: Bytes::Owned(data),
        }
    }

    /// All bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            Bytes::Gguf { file, start, len } => &file.bytes()[*start..*start + *len],
            Bytes::Owned(v) => v,
        }
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Bytes of one row.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.bytes()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Row `r` as f32.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        kernels::dequantize_row(self.ty, self.row(r), out)
    }

    /// All values as f32 (for small vectors).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut v = vec![0f32; self.rows * self.cols];
        for (r, chunk) in v.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, chunk);
        }
        v
    }

    /// Bytes in memory or mapped.
    pub fn size_bytes(&self) -> usize {
        self.rows * self.row_bytes
    }
}

/// The query/key/value projections.
#[allow(clippy::large_enum_variant)] // one per layer; boxing buys nothing
pub enum QkvWeights {
    /// One matrix `[q; k; v]` (Phi-3).
    Fused(QTensor),
    /// Three matrices (Llama).
    Split(QTensor, QTensor, QTensor),
}

/// The gate and up projections of the MLP.
#[allow(clippy::large_enum_variant)] // one per layer; boxing buys nothing
pub enum UpWeights {
    /// One matrix `[gate; up]` (Phi-3).
    Fused(QTensor),
    /// Two matrices (Llama).
    Split(QTensor, QTensor),
}

/// One decoder layer.
pub struct LayerWeights {
    /// RMSNorm before attention.
    pub attn_norm: Vec<f32>,
    /// Q, K, V.
    pub qkv: QkvWeights,
    /// Attention output projection.
    pub wo: QTensor,
    /// RMSNorm before the MLP.
    pub ffn_norm: Vec<f32>,
    /// Gate and up.
    pub up: UpWeights,
    /// Down projection.
    pub down: QTensor,
}

/// A whole model's weights.
pub struct ModelWeights {
    /// Token embedding (`vocab` rows).
    pub tok_embd: QTensor,
    /// Layers in order.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm.
    pub norm: Vec<f32>,
    /// Output projection; `None` when tied to the embedding.
    pub output: Option<QTensor>,
}

impl ModelWeights {
    /// The matrix that produces logits.
    pub fn output(&self) -> &QTensor {
        self.output.as_ref().unwrap_or(&self.tok_embd)
    }

    /// Checks every matrix's shape against `cfg` and that the kernels support its type.
    pub fn validate(&self, cfg: &EngineConfig, path: &Path) -> Result<(), EngineError> {
        let (d, q, kv, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let mut checks: Vec<(&QTensor, usize, usize)> = vec![(&self.tok_embd, cfg.vocab, d)];
        if let Some(o) = &self.output {
            checks.push((o, cfg.vocab, d));
        }
        for l in &self.layers {
            match &l.qkv {
                QkvWeights::Fused(t) => checks.push((t, q + 2 * kv, d)),
                QkvWeights::Split(a, b, c) => {
                    checks.extend([(a, q, d), (b, kv, d), (c, kv, d)]);
                }
            }
            checks.push((&l.wo, d, q));
            match &l.up {
                UpWeights::Fused(t) => checks.push((t, 2 * ff, d)),
                UpWeights::Split(a, b) => checks.extend([(a, ff, d), (b, ff, d)]),
            }
            checks.push((&l.down, d, ff));
            for (n, v) in [("attn_norm", &l.attn_norm), ("ffn_norm", &l.ffn_norm)] {
                if v.len() != d {
                    return Err(EngineError::Model {
                        path: path.into(),
                        msg: format!("{n}: {} values, expected {d}", v.len()),
                    });
                }
            }
        }
        for (t, rows, cols) in checks {
            if (t.rows, t.cols) != (rows, cols) {
                return Err(EngineError::Model {
                    path: path.into(),
                    msg: format!(
                        "tensor `{}` is {}×{}, expected {rows}×{cols}",
                        t.name, t.rows, t.cols
                    ),
                });
            }
            if kernels::act_type(t.ty).is_none() {
                return Err(EngineError::Model {
                    path: path.into(),
                    msg: format!("tensor `{}`: type {} is not supported", t.name, t.ty.name()),
                });
            }
        }
        Ok(())
    }

    /// Maps the tensors of a llama.cpp-style GGUF file.
    pub fn from_gguf(f: &Arc<GgufFile>, cfg: &EngineConfig) -> Result<Self, EngineError> {
        let t = |n: &str| QTensor::gguf(f, n);
        let norm = |n: &str| t(n).map(|x| x.to_f32());
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let qkv = if f.tensor(&n("attn_qkv")).is_some() {
                QkvWeights::Fused(t(&n("attn_qkv"))?)
            } else {
                QkvWeights::Split(t(&n("attn_q"))?, t(&n("attn_k"))?, t(&n("attn_v"))?)
            };
            let up = if f.tensor(&n("ffn_gate")).is_some() {
                UpWeights::Split(t(&n("ffn_gate"))?, t(&n("ffn_up"))?)
            } else {
                UpWeights::Fused(t(&n("ffn_up"))?)
            };
            layers.push(LayerWeights {
                attn_norm: norm(&n("attn_norm"))?,
                qkv,
                wo: t(&n("attn_output"))?,
                ffn_norm: norm(&n("ffn_norm"))?,
                up,
                down: t(&n("ffn_down"))?,
            });
        }
        let w = Self {
            tok_embd: t("token_embd.weight")?,
            layers,
            norm: norm("output_norm.weight")?,
            output: match f.tensor("output.weight") {
                Some(_) => Some(t("output.weight")?),
                None => None,
            },
        };
        w.validate(cfg, f.path())?;
        Ok(w)
    }

    /// Reads an HF folder's safetensors (f32, f16 or bf16 kept as they are).
    pub fn from_hf(dir: &Path, cfg: &Config, ecfg: &EngineConfig) -> Result<Self, EngineError> {
        let w = Weights::from_model_dir(dir).map_err(EngineError::Hf)?;
        let t = |n: &str| hf_tensor(&w, n);
        let norm = |n: &str| t(n).map(|x| x.to_f32());
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let n = |s: &str| format!("model.layers.{l}.{s}.weight");
            let (qkv, up) = match cfg.arch {
                Arch::Phi3 => (
                    QkvWeights::Fused(t(&n("self_attn.qkv_proj"))?),
                    UpWeights::Fused(t(&n("mlp.gate_up_proj"))?),
                ),
                Arch::Llama => (
                    QkvWeights::Split(
                        t(&n("self_attn.q_proj"))?,
                        t(&n("self_attn.k_proj"))?,
                        t(&n("self_attn.v_proj"))?,
                    ),
                    UpWeights::Split(t(&n("mlp.gate_proj"))?, t(&n("mlp.up_proj"))?),
                ),
            };
            layers.push(LayerWeights {
                attn_norm: norm(&n("input_layernorm"))?,
                qkv,
                wo: t(&n("self_attn.o_proj"))?,
                ffn_norm: norm(&n("post_attention_layernorm"))?,
                up,
                down: t(&n("mlp.down_proj"))?,
            });
        }
        let output = if !cfg.tie_word_embeddings && w.contains("lm_head.weight") {
            Some(t("lm_head.weight")?)
        } else {
            None
        };
        let mw = Self {
            tok_embd: t("model.embed_tokens.weight")?,
            layers,
            norm: norm("model.norm.weight")?,
            output,
        };
        mw.validate(ecfg, dir)?;
        Ok(mw)
    }
}

fn hf_tensor(w: &Weights, name: &str) -> Result<QTensor, EngineError> {
    use candle_core::DType;
    use safetensors::Dtype;
    let (shape, dt) = w.info(name).ok_or_else(|| EngineError::Model {
        path: w.file_of(name).to_path_buf(),
        msg: format!("tensor `{name}` is missing"),
    })?;
    let (ty, want) = match dt {
        Dtype::BF16 => (GgmlType::BF16, DType::BF16),
        Dtype::F16 => (GgmlType::F16, DType::F16),
        _ => (GgmlType::F32, DType::F32),
    };
    let t = w
        .get_any(name, want, &candle_core::Device::Cpu)
        .map_err(EngineError::Hf)?;
    let bytes = so8t_model::io::tensor_bytes(&t).map_err(EngineError::Hf)?;
    let cols = *shape.last().unwrap_or(&1);
    let rows = shape.iter().rev().skip(1).product::<usize>();
    Ok(QTensor::owned(name, ty, rows, cols, bytes))
}
