//! so8t-data: four-class safety datasets → unified records → /think SFT chats → training
//! examples (spec §4). Being built in slices; see the crate's modules.
#![warn(missing_docs)]

pub mod collect;
pub mod dedup;
mod error;
pub mod jsonl;
mod label;
pub mod neardup;
pub mod pii;
pub mod progress;
pub mod readers;
mod record;
pub mod shuffle;
pub mod split;
pub mod think;
pub mod tokenize;

pub use error::{Error, Result};

/// The bundled four-class sample (`examples/data/sample_four_class.jsonl`, 440 records, EN/JA),
/// used by the quickstart and `builtin:sample` training data.
pub const SAMPLE_FOUR_CLASS: &str = include_str!("../../../examples/data/sample_four_class.jsonl");
pub use label::Label;
pub use record::{FieldMap, Lang, Record};
