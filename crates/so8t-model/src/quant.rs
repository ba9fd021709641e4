//! A frozen base in 8 bits (QLoRA-style `base_dtype: int8`): every linear layer's weight is
//! replaced by llama.cpp Q8_0 blocks (32 weights per block, an f16 scale d = max|w|/127 and
//! 32 i8 q = round(w/d); 34 bytes instead of 128 in f32) and dequantized layer by layer on the
//! fly (see [`crate::LinearWeight`]). LoRA adapters and SO(8) gates stay f32 and train as before.
//!
//! Not quantized: the token embedding, `lm_head` and the RMSNorm weights (they stay in the
//! model's dtype), and linears whose input width is not a multiple of 32 (counted in
//! [`QuantStats::kept_dense`]). The conversion happens after [`Model::load`](crate::Model::load),
//! so a process still peaks at the dense model's size while loading.
//!
//! Reading a quantized model's dense weights ([`Linear::merged_weight`](crate::Linear::merged_weight),
//! [`Model::named_tensors`](crate::Model::named_tensors), [`crate::lora::merge`]) dequantizes
//! them: the values are the 8-bit approximation, not the original checkpoint's. The bake reads
//! the original safetensors files and is not affected.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};

use crate::error::Result;
use crate::linear::LinearWeight;
use crate::model::Model;

/// Weights per Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;

/// What [`quantize_base`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuantStats {
    /// Linear layers now held in Q8_0 (including any that already were).
    pub quantized: usize,
    /// Linear layers left dense because their input width is not a multiple of 32.
    pub kept_dense: Vec<String>,
    /// Bytes of all linear weights before.
    pub bytes_before: usize,
    /// Bytes of all linear weights after.
    pub bytes_after: usize,
}

/// Converts every linear layer's frozen base weight to Q8_0 (dropping the dense tensor) when
/// its input width is a multiple of 32; others stay dense and are listed in the result.
/// Idempotent. LoRA adapters already attached are kept and still apply.
pub fn quantize_base(model: &mut Model) -> Result<QuantStats> {
    let mut st = QuantStats::default();
    for lin in model.linears_mut() {
        st.bytes_before += lin.weight.storage_bytes();
        match &lin.weight {
            LinearWeight::Q8_0 { .. } => st.quantized += 1,
            LinearWeight::Dense(_) if lin.in_features() % Q8_0_BLOCK != 0 => {
                st.kept_dense.push(lin.name.clone());
            }
            LinearWeight::Dense(w) => {
                let q = QTensor::quantize(w, GgmlDType::Q8_0)?;
                lin.weight = LinearWeight::Q8_0 {
                    q: Arc::new(q),
                    dtype: w.dtype(),
                };
                st.quantized += 1;
            }
        }
        st.bytes_after += lin.weight.storage_bytes();
    }
    tracing::info!(
        "quantized {} linear weights to Q8_0 ({} kept dense): {:.1} MiB -> {:.1} MiB",
        st.quantized,
        st.kept_dense.len(),
        st.bytes_before as f64 / (1 << 20) as f64,
        st.bytes_after as f64 / (1 << 20) as f64
    );
    Ok(st)
}
