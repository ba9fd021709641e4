//! ggml tensor types as GGUF stores them: ids, block sizes and bytes per block (from ggml.h and
//! ggml-common.h of llama.cpp).

use crate::error::{Error, Result};

/// A ggml tensor type (the `ggml_type` id in a GGUF tensor info).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// 32 weights, f16 scale, 4-bit.
    Q4_0,
    /// 32 weights, f16 scale and min, 4-bit.
    Q4_1,
    /// 32 weights, f16 scale, 5-bit.
    Q5_0,
    /// 32 weights, f16 scale and min, 5-bit.
    Q5_1,
    /// 32 weights, f16 scale, 8-bit.
    Q8_0,
    /// 32 weights, f32 scale and sum, 8-bit (activations).
    Q8_1,
    /// 256-weight super-block, 2-bit.
    Q2_K,
    /// 256-weight super-block, 3-bit.
    Q3_K,
    /// 256-weight super-block, 4-bit (8 sub-blocks of 32, 6-bit scales and mins).
    Q4_K,
    /// 256-weight super-block, 5-bit.
    Q5_K,
    /// 256-weight super-block, 6-bit (16 sub-blocks of 16, 8-bit scales).
    Q6_K,
    /// 256-weight super-block, 8-bit (activations).
    Q8_K,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 64-bit float.
    F64,
    /// bfloat16.
    BF16,
}

/// Every type with (id, name, weights per block, bytes per block).
const TABLE: [(GgmlType, u32, &str, usize, usize); 20] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::BF16, 30, "BF16", 1, 2),
];

impl GgmlType {
    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        TABLE
            .iter()
            .find(|r| r.0 == self)
            .expect("every type is in the table")
    }

    /// The id stored in GGUF files.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// The type with this id (None for ids this build does not know).
    pub fn from_id(id: u32) -> Option<Self> {
        TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// llama.cpp's name (`Q4_K`, `F16`, …).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// The type named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        TABLE
            .iter()
            .find(|r| r.2.eq_ignore_ascii_case(name))
            .map(|r| r.0)
    }

    /// Weights per block.
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// Bytes of `n` weights; an error when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: u64) -> Result<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return Err(Error::Quant(format!(
                "{n} weights are not a whole number of {} blocks of {bs}",
                self.name()
            )));
        }
        Ok(n / bs * self.type_size() as u64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
