//! The so8t model core: Phi-3 / Llama causal LMs on candle, loaded from Hugging Face folders,
//! with SO(8) rotation gates before `o_proj`, LoRA adapters in PEFT's format, and an exact bake
//! that folds the gates into `o_proj`.
//!
//! # Example
//! ```no_run
//! use so8t_model::{Model, Forward};
//! use candle_core::{Device, DType, Tensor};
//! let model = Model::load("model-dir".as_ref(), DType::F32, &Device::Cpu)?;
//! let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
//! let logits = model.forward(&ids, Forward::default())?; // [1, 3, vocab]
//! # Ok::<(), so8t_model::Error>(())
//! ```
#![warn(missing_docs)]

pub mod bake;
mod cache;
mod chat_template;
pub mod composite;
mod config;
pub mod device;
pub mod dropout;
mod error;
pub mod full;
pub mod fused;
pub mod generate;
pub mod hub;
pub mod init;
pub mod io;
mod layer;
mod linear;
pub mod lora;
pub mod loss;
mod mask;
mod matvec;
mod model;
pub mod quant;
mod rope;
pub mod so8;
mod tokenizer;
mod train_ops;
mod weights;

pub use cache::Cache;
pub use chat_template::{civil, ChatTemplate, Message, PHI35_TEMPLATE};
pub use config::{Arch, Config, RopeConfig, RopeScaling};
pub use error::{read_json, Error, Result};
pub use layer::{Attention, DecoderLayer, Mlp, Qkv, RmsNorm, Up};
pub use linear::{Linear, LinearWeight, LoraAdapter};
pub use mask::AttentionMask;
pub use model::{Forward, Model, Prepared};
pub use rope::RotaryEmbedding;
pub use tokenizer::TextTokenizer;
pub use weights::Weights;
