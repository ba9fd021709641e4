//! GGUF for so8t: a v3 reader and writer, llama.cpp's quantizers (F32, F16, BF16, Q8_0, Q5_0,
//! Q4_K, Q5_K, Q6_K and the Q4_K_M mix), and the export of an HF folder (Phi-3, Llama) into
//! GGUF files that llama.cpp and Ollama load.

pub mod arch;
mod error;
pub mod export;
pub mod format;
pub mod inspect;
pub mod meta;
pub mod modelfile;
mod modelfile_parse;
pub mod quant;
pub mod reader;
pub mod source;
pub mod vocab;
pub mod writer;

pub use error::{Error, Result};
pub use format::{Value, ValueType};
pub use inspect::{inspect, verify, VerifyReport};
pub use quant::GgmlType;
pub use reader::{GgufFile, TensorInfo};
pub use writer::{FileSummary, GgufWriter, TensorSpec};
