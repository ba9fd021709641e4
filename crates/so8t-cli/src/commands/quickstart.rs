//! `so8t quickstart`: the whole flow available so far, on the bundled tiny model.
//!
//! Creates the tiny Phi-3 model (random weights, BPE tokenizer trained on the embedded corpus,
//! Phi-3.5 chat template), random SO(8) gates, chats with the gated model, bakes the gates into
//! `o_proj` and shows that the baked model answers the same. Later stages (data, training,
//! export, serving, evaluation) join this command as their issues land.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use so8t_model::bake::{bake, BakeOptions};
use so8t_model::generate::{generate, GenerateRequest, SamplingParams};
use so8t_model::init::{init_model, InitOptions, Preset};
use so8t_model::so8::{RotationMethod, So8Gates};
use so8t_model::{Arch, Message, Model, TextTokenizer};

/// `quickstart`.
#[derive(clap::Args)]
pub struct QuickstartArgs {
    /// Working folder (created; reused files are overwritten).
    #[arg(long, default_value = "so8t-quickstart")]
    pub out: PathBuf,
    /// Seed for weights and gates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn step(n: usize, what: &str) {
    eprintln!("\n== [{n}/5] {what}");
}

/// Runs `quickstart`.
pub fn run(a: QuickstartArgs) -> Result<()> {
    let model_dir = a.out.join("model");
    let gates_path = a.out.join("gates.safetensors");
    let baked_dir = a.out.join("baked");
    let dev = Device::Cpu;
    let alpha = (5f64.sqrt() - 1.0) / 2.0; // φ⁻¹ ≈ 0.618, between the schedule's ends

    step(
        1,
        "model init: tiny Phi-3 with a BPE tokenizer and the Phi-3.5 chat template",
    );
    let opts = InitOptions {
        arch: Arch::Phi3,
        preset: Preset::Tiny,
        seed: a.seed,
        tokenizer_corpus: vec![],
        dtype: None,
    };
    let cfg = init_model(&opts, &model_dir)?;
    eprintln!(
        "   {} ({} layers, hidden {}, vocab {})",
        model_dir.display(),
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.vocab_size
    );

    step(
        2,
        "SO(8) gates on every layer (init scale 0.3 so that they visibly act)",
    );
    let layers: Vec<usize> = (0..cfg.num_hidden_layers).collect();
    let gates = So8Gates::random(
        &layers,
        cfg.attn_out_dim(),
        0.3,
        a.seed,
        RotationMethod::Exp,
        &dev,
    )?;
    gates.save(&gates_path)?;
    for (l, d) in gates.diagnostics()? {
        eprintln!(
            "   layer {l}: max|RᵀR − I| = {:.1e}, max|det R − 1| = {:.1e}",
            d.max_orth_err, d.max_det_err
        );
    }

    step(3, "chat with the gated model (greedy)");
    let model = Model::load(&model_dir, DType::F32, &dev)?;
    let tok = TextTokenizer::from_dir(&model_dir)?;
    let mats = gates.matrices(&Tensor::new(alpha as f32, &dev)?, cfg.num_hidden_layers)?;
    let msgs = [
        Message::new("system", "You are a careful assistant."),
        Message::new("user", "日本の首都はどこですか？"),
    ];
    let prompt = tok.encode(&tok.apply_chat_template(&msgs, true)?, false)?;
    let chat = |m: &Model, g: Option<&so8t_model::so8::GateMatrices>| {
        generate(
            GenerateRequest {
                model: m,
                tokenizer: &tok,
                prompt: &prompt,
                params: SamplingParams::greedy(16),
                gates: g,
            },
            |_| {},
        )
    };
    let gated = chat(&model, Some(&mats))?;
    eprintln!(
        "   {} prompt tokens -> {:?} (random weights: the text is noise)",
        prompt.len(),
        gated.text
    );

    step(4, "bake the gates into o_proj");
    let report = bake(
        &model_dir,
        &baked_dir,
        &BakeOptions {
            gates: gates_path.clone(),
            alpha,
            layers: None,
            method: RotationMethod::Exp,
            adapter: None,
            check_prompts: vec![prompt.clone()],
        },
    )?;
    let diff = report
        .check_max_abs_diff
        .first()
        .copied()
        .unwrap_or(f64::NAN);
    eprintln!(
        "   {} -> max |logits(baked) − logits(gated)| = {diff:.2e}",
        baked_dir.display()
    );
    ensure!(diff < 1e-4, "bake changed the logits by {diff}");

    step(
        5,
        "the baked model (no gates) answers exactly as the gated one",
    );
    let baked = Model::load(&baked_dir, DType::F32, &dev)?;
    let plain = chat(&baked, None)?;
    ensure!(
        plain.tokens == gated.tokens,
        "baked model diverged: {:?} vs {:?}",
        plain.tokens,
        gated.tokens
    );
    eprintln!("   same {} tokens", plain.tokens.len());
    eprintln!("\nquickstart done: {}", a.out.display());
    Ok(())
}
