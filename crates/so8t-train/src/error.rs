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
    /// The device ran out of memory in a phase of a step; `advice` names the settings that
    /// shrink it.
    #[error("out of device memory during {phase}; {advice}")]
    OutOfMemory {
        /// What was running (e.g. `the rollouts`).
        phase: String,
        /// The settings to lower.
        advice: String,
        /// The error the device reported (printed after the advice by error chains).
        source: Box<Error>,
    },
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

/// Whether `e` is the device reporting that it is out of memory (CUDA's
/// `CUDA_ERROR_OUT_OF_MEMORY`, a failed allocation).
fn is_out_of_memory(e: &Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("out_of_memory") || text.contains("out of memory")
}

/// Turns an out-of-memory failure of `phase` into [`Error::OutOfMemory`] with `advice`; other
/// errors pass unchanged.
pub fn explain_oom(e: Error, phase: &str, advice: &str) -> Error {
    if matches!(e, Error::OutOfMemory { .. }) || !is_out_of_memory(&e) {
        return e;
    }
    Error::OutOfMemory {
        phase: phase.into(),
        advice: advice.into(),
        source: Box::new(e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_gets_advice_and_other_errors_pass() {
        let oom = Error::Candle(candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        ));
        let e = explain_oom(oom, "the rollouts", "lower rollout.max_new_tokens");
        let text = e.to_string();
        assert_eq!(
            text,
            "out of device memory during the rollouts; lower rollout.max_new_tokens"
        );
        let cause = std::error::Error::source(&e).map(|c| c.to_string());
        assert!(
            cause.is_some_and(|c| c.contains("CUDA_ERROR_OUT_OF_MEMORY")),
            "the device's error is the source"
        );
        // Explained once, not twice.
        let again = explain_oom(e, "the update", "x").to_string();
        assert_eq!(again, text);
        let other = explain_oom(Error::invalid("a", "b"), "the rollouts", "x").to_string();
        assert_eq!(other, "invalid a: b");
    }
}
