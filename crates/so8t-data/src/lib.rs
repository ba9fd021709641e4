//! so8t-data: four-class safety datasets → unified records → /think SFT chats → training
//! examples (spec §4). Being built in slices; see the crate's modules.
#![warn(missing_docs)]

mod error;
mod label;

pub use error::{Error, Result};
pub use label::Label;
