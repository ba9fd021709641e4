//! Benchmarks and the paired A/B test (spec §7): task loaders, metrics, statistics and reports.

pub mod stats;
