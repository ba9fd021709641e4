//! The error type of `so8t-train`.

/// Errors of the trainer. Messages start lowercase and name the setting or tensor at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range; `field` is its name as written in a config file
    /// (e.g. `alpha.width`, `pet.transition_start`).
    #[error("invalid {field}: {msg}")]
    Invalid {
        /// The offending setting.
        field: String,
        /// What is wrong and what is expected.
        msg: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The model core failed.
    #[error(transparent)]
    Model(#[from] so8t_model::Error),
    /// Reading training data failed.
    #[error(transparent)]
    Data(#[from] so8t_data::Error),
}

impl Error {
    /// An [`Error::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            msg: msg.into(),
        }
    }
}

impl From<so8t_store::Error> for Error {
    /// The run database failed: reported against the run folder (the message names the file).
    fn from(e: so8t_store::Error) -> Self {
        Error::invalid("run_dir", e.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
