//! The error type of `so8t-gguf`.

use std::path::PathBuf;

/// Errors of GGUF reading, writing, quantization and export. Messages name the file, the byte
/// offset, the key or the tensor at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A GGUF file is malformed at `offset`.
    #[error("{path}: at byte {offset}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem.
        offset: u64,
        /// What is wrong and what was expected.
        msg: String,
    },
    /// A quantizer or dequantizer cannot handle the input.
    #[error("{0}")]
    Quant(String),
    /// A model folder cannot be exported.
    #[error("{0}")]
    Export(String),
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The model core failed (reading the HF folder).
    #[error(transparent)]
    Model(#[from] so8t_model::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
