//! `so8t quickstart`: the whole flow available so far, on the bundled tiny model.
//!
//! Creates the tiny Phi-3 model (random weights, BPE tokenizer trained on the embedded corpus,
//! Phi-3.5 chat template); turns the bundled four-class sample into unified records, a split,
//! /think chats and packed training rows; fine-tunes it (LoRA + SO(8) gates, α annealing, PET)
//! in a run folder, chats with the trained model, bakes adapter and gates into a plain model and
//! shows that it answers the same. Later stages (export, serving, evaluation) join this command
//! as their issues land.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
use so8t_train::config::TrainConfig;
use so8t_train::run::{run as train, RunOptions, Session};

/// `quickstart`.
#[derive(clap::Args)]
pub struct QuickstartArgs {
    /// Working folder (created; reused files are overwritten).
    #[arg(long, default_value = "so8t-quickstart")]
    pub out: PathBuf,
    /// Seed for weights, adapters, gates and data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Optimizer steps of the training step.
    #[arg(long, default_value_t = 30)]
    pub train_steps: u64,
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

/// Step 5: SO8T fine-tuning (examples/train-tiny.yaml, shortened) in `run_dir`.
fn train_steps(a: &QuickstartArgs, model_dir: &Path, run_dir: &Path) -> Result<Session> {
    step(
        5,
        "train: LoRA + SO(8) gates with α annealing, CE + λ(phase)·PET + L_orth, checkpoints",
    );
    let mut cfg = TrainConfig::from_yaml(
        include_str!("../../../../examples/train-tiny.yaml"),
        Path::new("."),
        "examples/train-tiny.yaml",
    )?;
    cfg.model = model_dir.to_path_buf();
    cfg.data.train = a.out.join("data/think_train.jsonl");
    cfg.training.max_steps = a.train_steps;
    cfg.training.seed = a.seed;
    cfg.validate()?;
    // A run folder of an earlier quickstart with other settings is replaced.
    if run_dir.exists() {
        std::fs::remove_dir_all(run_dir)?;
    }
    let mut first = None;
    let session = train(RunOptions {
        config: cfg,
        run_dir: run_dir.to_path_buf(),
        stop_after: None,
        interrupt: Arc::new(AtomicBool::new(false)),
        on_step: Some(Box::new(move |m, s| {
            let f = *first.get_or_insert(m.loss);
            if m.step == 1 || m.step % 10 == 0 || m.step == s.total_steps {
                eprintln!(
                    "   step {:>3}/{}: loss {:.4} (first {f:.4}) ce {:.4} α {:.3} λ {:.2} ({})",
                    m.step,
                    s.total_steps,
                    m.loss,
                    m.ce,
                    m.alpha,
                    m.pet_lambda,
                    m.phase.as_str()
                );
            }
        })),
    })?;
    eprintln!(
        "   {} at step {}, best loss {:.4}; see `so8t train status {dir}`",
        session.status.as_str(),
        session.step,
        session.best_loss.unwrap_or(f64::NAN),
        dir = run_dir.display()
    );
    Ok(session)
}

/// Runs `quickstart`.
pub fn run(a: QuickstartArgs) -> Result<()> {
    let model_dir = a.out.join("model");
    let baked_dir = a.out.join("baked");
    let dev = Device::Cpu;
    let alpha = so8t_train::schedule::PHI_INV_SQ;

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

    let run_dir = a.out.join("run");
    train_steps(&a, &model_dir, &run_dir)?;
    let bake_info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("final/bake.json"))?)?;
    let alpha = bake_info["alpha"].as_f64().unwrap_or(alpha);
    let gates = So8Gates::load(
        &run_dir.join("final/gates.safetensors"),
        cfg.attn_out_dim(),
        cfg.num_hidden_layers,
        &dev,
    )?;
    for (l, d) in gates.diagnostics()? {
        eprintln!(
            "   trained gate of layer {l}: max|RᵀR − I| = {:.1e}, max|det R − 1| = {:.1e}",
            d.max_orth_err, d.max_det_err
        );
    }
    step(
        6,
        "chat with the trained model: gates at the final α, LoRA adapter (greedy)",
    );
    let mut model = Model::load(&model_dir, DType::F32, &dev)?;
    so8t_model::lora::load(&mut model, &run_dir.join("final/adapter"))?;
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
        "   {} prompt tokens -> {:?} (a tiny random model after a few steps: still noise)",
        prompt.len(),
        gated.text
    );

    step(7, "bake: merge the adapter and fold the gates into o_proj");
    let report = bake(
        &model_dir,
        &baked_dir,
        &BakeOptions {
            gates: run_dir.join("final/gates.safetensors"),
            alpha,
            layers: None,
            method: RotationMethod::Exp,
            adapter: Some(run_dir.join("final/adapter")),
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
