//! Benchmarks and the paired A/B test (spec §7): task loaders in lm-eval's shapes, backends (the
//! serve engine in process, an OpenAI- or Ollama-compatible server), scoring, paired statistics
//! and reports.

pub mod ab;
pub mod backend;
pub mod report;
pub mod run;
pub mod score;
pub mod stats;
pub mod suite;
pub mod tasks;
