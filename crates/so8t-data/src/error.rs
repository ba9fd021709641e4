//! The error type of `so8t-data`: every variant says which file, line (and column) and why.

use std::path::PathBuf;

/// Errors of dataset reading and processing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// I/O on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record at a line (1-based) is invalid; `column` is 0 when unknown.
    #[error("{path}:{line}{}: {msg}", if *column > 0 { format!(":{column}") } else { String::new() })]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based line (or record number for non-line formats).
        line: usize,
        /// 1-based column, 0 if unknown.
        column: usize,
        /// What is wrong and what was expected.
        msg: String,
    },
    /// A configuration value is invalid.
    #[error("{0}")]
    Config(String),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
