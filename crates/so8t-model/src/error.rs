//! The error type of `so8t-model`: every variant says what failed, where, and what was expected.

use std::path::PathBuf;

/// Errors of the model core. Messages start lowercase and name the file / tensor at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // === Files and folders ===
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A required file is missing from a model folder.
    #[error("{path}: file not found ({what})")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file is needed for.
        what: String,
    },
    /// A JSON file could not be parsed.
    #[error("{path}: line {line}, column {column}: {msg}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        msg: String,
    },
    /// A configuration value is invalid or unsupported.
    #[error("{path}: {msg}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong and what was expected.
        msg: String,
    },

    // === Tensors and weights ===
    /// A safetensors file is malformed or truncated.
    #[error("{path}: invalid safetensors file: {msg}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A tensor the model needs is not in the weights.
    #[error("{path}: tensor `{name}` not found{hint}")]
    MissingTensor {
        /// The file (or folder / index) searched.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Extra hint (may be empty).
        hint: String,
    },
    /// A tensor has the wrong shape.
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A tensor has a dtype so8t cannot use.
    #[error("{path}: tensor `{name}` has dtype {got}, expected one of f32, f16, bf16")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// The dtype found.
        got: String,
    },

    // === SO(8) gates, LoRA ===
    /// The gate configuration is invalid.
    #[error("so8 gate: {0}")]
    Gate(String),
    /// A LoRA adapter is invalid.
    #[error("lora: {0}")]
    Lora(String),

    // === Tokenizer, templates, generation ===
    /// Tokenizer load or encode/decode failure.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Chat template failure.
    #[error("chat template: {0}")]
    Template(String),
    /// A device name is unknown or the device cannot be opened.
    #[error("device: {0}")]
    Device(String),
    /// Invalid generation request.
    #[error("generation: {0}")]
    Generation(String),
    /// Hub download failure.
    #[error("hub: {0}")]
    Hub(String),

    // === Wrapped ===
    /// An error from candle (tensor maths).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a serde_json error with the path and its line/column.
    pub fn json(path: impl Into<PathBuf>, e: &serde_json::Error) -> Self {
        Error::Json {
            path: path.into(),
            line: e.line(),
            column: e.column(),
            msg: e.to_string(),
        }
    }

    /// A config error on `path`.
    pub fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// Reads and parses a JSON file, with errors naming the file, line and column.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile {
                path: path.to_path_buf(),
                what: "required JSON file".into(),
            }
        } else {
            Error::io(path, e)
        }
    })?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, &e))
}
