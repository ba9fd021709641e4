//! so8t's serving side: a CPU inference engine that computes on GGUF's quantized blocks, the
//! model store (`~/.so8t`, like `~/.ollama`), and the pieces of the Ollama- and OpenAI-compatible
//! server, including the filter that keeps a model's thinking out of every response.
#![warn(missing_docs)]

pub mod engine;
pub mod kernels;
pub mod library;
pub mod scheduler;
pub mod server;
pub mod template;
pub mod think;
pub mod tokenizer;
