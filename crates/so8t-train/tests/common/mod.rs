//! Shared helpers for the trainer's integration tests.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::Value;
use so8t_data::tokenize::Example;
use so8t_model::init::{init_model, InitOptions, Preset};
use so8t_model::lora::LoraConfig;
use so8t_model::Arch;
use so8t_train::batch::{make_batch, Batch};
use so8t_train::optim::{AdamWConfig, LrDecay};
use so8t_train::step::{GateConfig, StepConfig};
use so8t_train::{AlphaSchedule, PetSchedule};

#[path = "../../../so8t-model/tests/common/mod.rs"]
mod model_common;

pub use model_common::{fixture, reference};

/// The embedded tiny Phi-3 (seed 3) in `dir/tiny`.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("tiny");
    init_model(
        &InitOptions {
            arch: Arch::Phi3,
            preset: Preset::Tiny,
            seed: 3,
            tokenizer_corpus: vec![],
            dtype: None,
            vocab_size: None,
        },
        &model,
    )
    .unwrap();
    model
}

/// Gates on all layers, default α and PET, LoRA r 8 on qkv/o, AdamW lr 1e-2 at a constant
/// rate, clip 1, seed 7, over `total` steps.
pub fn step_config(total: u64) -> StepConfig {
    StepConfig {
        gates: GateConfig::default(),
        alpha: AlphaSchedule::default(),
        pet: Some(PetSchedule::default()),
        lora: Some(LoraConfig::new(8, 16.0, &["qkv_proj", "o_proj"])),
        optim: AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        },
        lr_decay: LrDecay::Constant,
        warmup_steps: 0,
        grad_clip: Some(1.0),
        total_steps: total,
        seed: 7,
        gradient_checkpointing: false,
        full_finetune: false,
    }
}

/// Two rows of a repeating pattern (a bigram table): `len` tokens, and its first `short`
/// tokens (padded).
pub fn pattern_batch(len: usize, short: usize) -> Batch {
    let ids: Vec<u32> = (0..len as u32).map(|i| 40 + (i % 6) * 7).collect();
    let row = |n: usize, id: &str| Example {
        labels: ids[..n].iter().map(|&x| x as i64).collect(),
        seq_lens: vec![n],
        ids: vec![id.into()],
        input_ids: ids[..n].to_vec(),
    };
    make_batch(&[row(len, "a"), row(short, "b")], &Device::Cpu).unwrap()
}

/// A JSON array of numbers as f64.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// A JSON matrix of integers as rows of u32.
pub fn int_rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_u64().expect("int") as u32)
                .collect()
        })
        .collect()
}

/// The fixtures that carry `losses` and `schedules`.
pub const FIXTURES: [&str; 3] = ["phi3-tiny", "llama-gqa-tiny", "phi3-longrope-tiny"];

/// |got − want| / |want|.
pub fn rel(got: f64, want: f64) -> f64 {
    ((got - want) / want).abs()
}
