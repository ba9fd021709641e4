//! Where answers come from: the serve engine in this process, or a server speaking OpenAI's or
//! Ollama's API. Every backend answers the two request kinds lm-eval has: log-likelihoods of
//! continuations and greedy generation until a stop string.

mod http;
mod local;

pub use http::{HttpBackend, HttpFlavor};
pub use local::LocalBackend;

use crate::tasks::Prompt;

/// A backend failure for one request (the run records it for the item and goes on).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// The log-likelihood of one continuation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loglikelihood {
    /// Sum of the continuation tokens' log-probabilities.
    pub logprob: f64,
    /// Whether every continuation token was the most likely one.
    pub greedy: bool,
    /// Continuation tokens.
    pub tokens: usize,
}

/// A generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The text, cut before the first stop string.
    pub text: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub tokens: usize,
}

/// A model to evaluate.
pub trait Backend: Send + Sync {
    /// What it is, for reports (a path with its sha256, or a URL and model name).
    fn describe(&self) -> String;

    /// Log-likelihoods of each `context + continuation` (lm-eval's `loglikelihood`: trailing
    /// spaces of the context move to the continuation; the pair is tokenized whole and split
    /// at the context's token count).
    fn loglikelihood(
        &self,
        context: &str,
        continuations: &[String],
    ) -> Result<Vec<Loglikelihood>, BackendError>;

    /// Greedy generation of at most `max_tokens` tokens, cut at the first of `until`.
    fn generate(
        &self,
        prompt: &Prompt,
        until: &[String],
        max_tokens: usize,
    ) -> Result<Generation, BackendError>;
}

/// lm-eval's context/continuation split: trailing whitespace of the context goes to the
/// continuation.
pub fn move_trailing_spaces(context: &str, continuation: &str) -> (String, String) {
    let trimmed = context.trim_end();
    let moved = &context[trimmed.len()..];
    (trimmed.to_string(), format!("{moved}{continuation}"))
}

/// Cuts `text` before the first stop string; true when one was found.
pub fn cut_at_stop(text: &mut String, until: &[String]) -> bool {
    let first = until
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min();
    match first {
        Some(i) => {
            text.truncate(i);
            true
        }
        None => false,
    }
}
