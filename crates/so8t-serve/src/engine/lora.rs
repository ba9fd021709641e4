//! LoRA adapters applied at run time, as llama.cpp and Ollama apply a Modelfile's `ADAPTER`: a
//! GGUF adapter file (`general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`)
//! holds, for a base matrix `NAME.weight`, the pair `NAME.weight.lora_a` (rank × in) and
//! `NAME.weight.lora_b` (out × rank). The product becomes `W·x + s·B·(A·x)` with
//! `s = scale · alpha / rank` (`scale` when alpha is 0); the base weights stay as they are
//! (quantized or not), the pair is kept in f32.

use std::path::Path;
use std::sync::Arc;

use so8t_gguf::GgufFile;

use super::weights::{QTensor, QkvWeights, UpWeights};
use super::{EngineError, EngineModel, ModelFormat};

/// One adapter's low-rank pair for one matrix.
pub struct LoraPair {
    /// `A`, rank rows of `in` values.
    pub a: Vec<f32>,
    /// `B`, `out` rows of rank values.
    pub b: Vec<f32>,
    /// The rank.
    pub rank: usize,
    /// The factor on `B·(A·x)`.
    pub scale: f32,
}

impl LoraPair {
    /// `out[j] += scale · (B·(A·x))[j]` for one activation row `x`.
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        let cols = x.len();
        let t: Vec<f32> = self
            .a
            .chunks_exact(cols)
            .map(|row| self.scale * crate::kernels::dot_f32(row, x))
            .collect();
        for (o, brow) in out.iter_mut().zip(self.b.chunks_exact(self.rank)) {
            *o += crate::kernels::dot_f32(brow, &t);
        }
    }
}

/// Whether `f` is a LoRA adapter (`general.type = adapter`, `adapter.type = lora`); the error
/// says what it is instead. `so8t create` checks an ADAPTER with it before storing it.
pub fn check_adapter(f: &GgufFile) -> Result<(), String> {
    let get = |k: &str| f.metadata(k).and_then(|v| v.as_str()).unwrap_or("");
    if get("general.type") != "adapter" || get("adapter.type") != "lora" {
        return Err(format!(
            "not a LoRA adapter (general.type {:?}, adapter.type {:?}; expected \"adapter\" and \"lora\")",
            get("general.type"),
            get("adapter.type")
        ));
    }
    Ok(())
}

impl EngineModel {
    /// Applies the GGUF LoRA adapter at `path` with factor `scale` (Ollama's ADAPTER: 1.0);
    /// returns how many matrices it changes. Several adapters add up.
    pub fn apply_lora(&mut self, path: &Path, scale: f32) -> Result<usize, EngineError> {
        let bad = |msg: String| EngineError::Model {
            path: path.to_path_buf(),
            msg,
        };
        if self.format != ModelFormat::Gguf {
            return Err(bad(format!(
                "a GGUF LoRA adapter needs a GGUF base model; {} is an HF folder (merge the \
                 adapter with `so8t bake` or export the model to GGUF first)",
                self.path.display()
            )));
        }
        let f = Arc::new(GgufFile::open(path)?);
        check_adapter(&f).map_err(bad)?;
        let meta_str = |k: &str| f.metadata(k).and_then(|v| v.as_str()).unwrap_or("");
        let base_arch = self
            .gguf
            .as_ref()
            .and_then(|g| g.metadata("general.architecture"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let arch = meta_str("general.architecture");
        if !arch.is_empty() && arch != base_arch {
            return Err(bad(format!(
                "adapter for architecture {arch:?}, the model is {base_arch:?}"
            )));
        }
        let alpha = f
            .metadata("adapter.lora.alpha")
            .and_then(|v| v.as_f32())
            .unwrap_or(0.0);
        let mut by_name: Vec<&mut QTensor> = self.weights.matrices_mut();
        let mut applied = 0;
        for info in f.tensors() {
            let Some(base) = info.name.strip_suffix(".lora_a") else {
                if !info.name.ends_with(".lora_b") {
                    return Err(bad(format!(
                        "tensor `{}` is neither a `.lora_a` nor a `.lora_b`",
                        info.name
                    )));
                }
                continue;
            };
            let b_name = format!("{base}.lora_b");
            let read = |name: &str| -> Result<(Vec<f32>, usize, usize), EngineError> {
                let t = QTensor::gguf(&f, name)?;
                if crate::kernels::act_type(t.ty).is_none() {
                    return Err(bad(format!(
                        "tensor `{name}`: type {} is not supported",
                        t.ty.name()
                    )));
                }
                Ok((t.to_f32(), t.rows, t.cols))
            };
            let (a, a_rows, a_cols) = read(&info.name)?;
            if f.tensor(&b_name).is_none() {
                return Err(bad(format!("`{}` has no `{b_name}`", info.name)));
            }
            let (b, b_rows, b_cols) = read(&b_name)?;
            let w = by_name
                .iter_mut()
                .find(|w| w.name == base)
                .ok_or_else(|| bad(format!("`{base}` is not a matrix of the model")))?;
            if a_cols != w.cols || b_rows != w.rows || a_rows != b_cols || a_rows == 0 {
                return Err(bad(format!(
                    "`{base}` is {}×{} but the adapter's A is {a_rows}×{a_cols} and B \
                     {b_rows}×{b_cols} (expected rank×{} and {}×rank)",
                    w.rows, w.cols, w.cols, w.rows
                )));
            }
            let rank = a_rows;
            let s = if alpha != 0.0 {
                scale * alpha / rank as f32
            } else {
                scale
            };
            w.lora.push(LoraPair {
                a,
                b,
                rank,
                scale: s,
            });
            applied += 1;
        }
        if applied == 0 {
            return Err(bad("the adapter holds no `.lora_a` / `.lora_b` pair".into()));
        }
        Ok(applied)
    }
}

impl super::weights::ModelWeights {
    /// Every matrix a LoRA adapter may target (the embedding only when it is not tied).
    pub fn matrices_mut(&mut self) -> Vec<&mut QTensor> {
        let mut v: Vec<&mut QTensor> = Vec::new();
        for l in &mut self.layers {
            match &mut l.qkv {
                QkvWeights::Fused(t) => v.push(t),
                QkvWeights::Split(q, k, w) => v.extend([q, k, w]),
            }
            v.push(&mut l.wo);
            match &mut l.up {
                UpWeights::Fused(t) => v.push(t),
                UpWeights::Split(g, u) => v.extend([g, u]),
            }
            v.push(&mut l.down);
        }
        if let Some(o) = &mut self.output {
            v.push(o);
        }
        v
    }
}
