//! `so8t quickstart`: the whole flow available so far, on the bundled tiny model.
//!
//! Creates the tiny Phi-3 model (random weights, BPE tokenizer trained on the embedded corpus,
//! Phi-3.5 chat template); turns the bundled four-class sample into unified records, a split,
//! /think chats and packed training rows; makes random SO(8) gates, chats with the gated model,
//! bakes the gates into `o_proj` and shows that the baked model answers the same. Later stages
//! (training, export, serving, evaluation) join this command as their issues land.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use so8t_data::collect::{collect, CollectOptions};
use so8t_data::split::{split, SplitOptions};
use so8t_data::think::{think, Renderer, ThinkFormat, ThinkOptions};
use so8t_data::tokenize::{tokenize, training_template, TokenizeOptions};
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
    eprintln!("\n== [{n}/8] {what}");
}

/// Steps 2–4: bundled sample → records + split → /think chats → packed training rows.
fn data_steps(out: &Path, model_dir: &Path) -> Result<()> {
    let data = out.join("data");
    std::fs::create_dir_all(&data)?;
    let sample = data.join("sample_four_class.jsonl");
    so8t_model::io::write_string_atomic(&sample, so8t_data::SAMPLE_FOUR_CLASS)?;
    step(
        2,
        "data collect + split: the bundled four-class sample (PII scrubbed, duplicates dropped)",
    );
    let records = data.join("records.jsonl");
    let c = collect(&CollectOptions::new(vec![sample], records.clone()))?;
    eprintln!(
        "   read {}, wrote {} ({} duplicates, {} near-duplicates, PII {:?}); per class {:?}",
        c.read, c.written, c.duplicates, c.near_duplicates, c.pii, c.per_class
    );
    let sp = split(&SplitOptions {
        input: records,
        out_dir: data.join("split"),
        ratios: [0.8, 0.1, 0.1],
        seed: 42,
    })?;
    let sizes: Vec<String> = sp
        .per_split
        .iter()
        .map(|(k, v)| format!("{k} {}", v.values().sum::<u64>()))
        .collect();
    eprintln!("   split: {}", sizes.join(", "));
    step(
        3,
        "data think: /think chats in the tags format, rendered with the Phi-3.5 template",
    );
    let chats = data.join("think_train.jsonl");
    let renderer = Renderer::phi35()?;
    let t = think(
        &ThinkOptions {
            inputs: vec![data.join("split/train.jsonl")],
            output: chats.clone(),
            format: ThinkFormat::Tags,
            system: None,
            map: Default::default(),
            progress: None,
        },
        &renderer,
    )?;
    let first = std::fs::read_to_string(&chats)?;
    let first: serde_json::Value = serde_json::from_str(first.lines().next().unwrap_or("{}"))?;
    eprintln!(
        "   {} chats; the first:\n{}",
        t.written,
        first["text"].as_str().unwrap_or("")
    );
    step(
        4,
        "data tokenize: assistant-only labels, packed rows of 4096 tokens",
    );
    let tok = TextTokenizer::from_dir(model_dir)?;
    let template = training_template(&tok)?;
    let k = tokenize(
        &TokenizeOptions {
            inputs: vec![chats],
            output: data.join("train_tokens.jsonl"),
            max_seq_len: 4096,
            train_on_prompt: false,
            pack: true,
            seed: Some(42),
            keep_cut_class: false,
            progress: None,
        },
        &tok,
        &template,
    )?;
    eprintln!(
        "   {} examples in {} rows, {} tokens ({} trained), fill {:.1} %",
        k.examples,
        k.rows,
        k.tokens,
        k.label_tokens,
        100.0 * k.fill
    );
    Ok(())
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

    data_steps(&a.out, &model_dir)?;

    step(
        5,
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

    step(6, "chat with the gated model (greedy)");
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

    step(7, "bake the gates into o_proj");
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
        8,
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
