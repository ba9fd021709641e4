//! `so8t model info|logits|init`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use so8t_model::init::{init_model, InitOptions, Preset};
use so8t_model::so8::{LayerSelection, RotationMethod, So8Gates};
use so8t_model::{Arch, Config, Forward, TextTokenizer, Weights};

use super::{parse_ids, GateArgs, RuntimeArgs};

/// Model subcommands.
#[derive(clap::Subcommand)]
pub enum ModelCmd {
    /// Architecture, sizes, dtype and parameter count of an HF model folder.
    Info(InfoArgs),
    /// Logits at every position for token ids or a prompt (optionally gated).
    Logits(LogitsArgs),
    /// Create a deterministic random-init model folder with a trained BPE tokenizer.
    Init(InitArgs),
    /// Write random SO(8) generators (N(0, init_scale²)) for a model as a gates file.
    InitGates(InitGatesArgs),
}

/// `model init-gates`.
#[derive(clap::Args)]
pub struct InitGatesArgs {
    /// The model folder (for the width and layer count).
    #[arg(long)]
    pub model: PathBuf,
    /// Layers to gate: `all` or a list such as `0,1,4-7`.
    #[arg(long, default_value = "all")]
    pub layers: String,
    /// Standard deviation of the generator entries (spec default 0.05).
    #[arg(long, default_value_t = 0.05)]
    pub init_scale: f64,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output gates file (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

/// `model info`.
#[derive(clap::Args)]
pub struct InfoArgs {
    /// The model folder.
    pub dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `model logits`.
#[derive(clap::Args)]
pub struct LogitsArgs {
    /// The model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated token ids.
    #[arg(long, conflicts_with = "prompt", required_unless_present = "prompt")]
    pub ids: Option<String>,
    /// Text, tokenized with the folder's tokenizer (special tokens added as transformers does).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Print `{"logits": [[…vocab…] per position]}`.
    #[arg(long)]
    pub json: bool,
    /// A PEFT LoRA adapter folder to apply.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[command(flatten)]
    pub gate: GateArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `model init`.
#[derive(clap::Args)]
pub struct InitArgs {
    /// Layout: phi3 (fused projections) or llama.
    #[arg(long, default_value = "phi3")]
    pub arch: String,
    /// Size: tiny, small or phi3.5-mini.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Text files to train the tokenizer on (default: an embedded EN/JA corpus).
    #[arg(long, num_args = 1..)]
    pub tokenizer_corpus: Vec<PathBuf>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokenizer (and model) vocabulary size instead of the preset's (e.g. 2048 for a tiny
    /// model whose tokenizer is trained on the fine-tuning data).
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Weight dtype: f32, f16, bf16 (default f32; bf16 for phi3.5-mini).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs a model subcommand.
pub fn run(cmd: ModelCmd) -> Result<()> {
    match cmd {
        ModelCmd::Info(a) => info(a),
        ModelCmd::Logits(a) => logits(a),
        ModelCmd::Init(a) => init(a),
        ModelCmd::InitGates(a) => init_gates(a),
    }
}

fn info(a: InfoArgs) -> Result<()> {
    let cfg = Config::from_file(&a.dir)?;
    let w = Weights::from_model_dir(&a.dir)?;
    let mut params = 0usize;
    let mut dtypes = std::collections::BTreeMap::<String, usize>::new();
    for n in w.names() {
        if let Some((shape, dt)) = w.info(&n) {
            let c: usize = shape.iter().product();
            params += c;
            *dtypes.entry(format!("{dt:?}").to_lowercase()).or_default() += c;
        }
    }
    let tok = TextTokenizer::from_dir(&a.dir).ok();
    let v = serde_json::json!({
        "architecture": cfg.arch.hf_name(),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope": rope_name(&cfg.rope.scaling),
        "rope_theta": cfg.rope.theta,
        "sliding_window": cfg.sliding_window,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "parameters": params,
        "dtypes": dtypes,
        "tensors": w.names().len(),
        "tokenizer_vocab": tok.as_ref().map(|t| t.vocab_size()),
        "chat_template": tok.as_ref().map(|t| t.chat_template.is_some()),
        "so8_gate_blocks_per_layer": cfg.attn_out_dim().is_multiple_of(8).then_some(cfg.attn_out_dim() / 8),
    });
    if a.json {
        println!("{v:#}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for (k, x) in v.as_object().into_iter().flatten() {
        writeln!(
            out,
            "{k:<26} {}",
            if x.is_string() {
                x.as_str().unwrap_or("").to_string()
            } else {
                x.to_string()
            }
        )?;
    }
    writeln!(
        out,
        "{:<26} {:.3} M",
        "parameters (millions)",
        params as f64 / 1e6
    )?;
    Ok(())
}

fn logits(a: LogitsArgs) -> Result<()> {
    let mut model = a.runtime.load(&a.model)?;
    if let Some(dir) = &a.adapter {
        so8t_model::lora::load(&mut model, dir)
            .with_context(|| format!("loading adapter {}", dir.display()))?;
    }
    let ids = match (&a.ids, &a.prompt) {
        (Some(s), _) => parse_ids(s)?,
        (None, Some(p)) => TextTokenizer::from_dir(&a.model)?.encode(p, true)?,
        _ => bail!("give --ids or --prompt"),
    };
    if ids.is_empty() {
        bail!("no tokens to run");
    }
    let gates = a.gate.matrices(&model)?;
    let t = Tensor::new(ids.as_slice(), model.device())?.unsqueeze(0)?;
    let l = model
        .forward(
            &t,
            Forward {
                gates: gates.as_ref(),
                ..Default::default()
            },
        )?
        .squeeze(0)?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?;
    let rows: Vec<Vec<f32>> = l.to_vec2()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "input_ids": ids, "logits": rows }),
        )?;
        writeln!(out)?;
    } else {
        for (pos, (id, row)) in ids.iter().zip(&rows).enumerate() {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
            let top: Vec<String> = idx
                .iter()
                .take(5)
                .map(|&i| format!("{i}:{:.4}", row[i]))
                .collect();
            writeln!(out, "pos {pos:>4} token {id:>6}  top5 {}", top.join(" "))?;
        }
    }
    Ok(())
}

fn init(a: InitArgs) -> Result<()> {
    let arch = match a.arch.as_str() {
        "phi3" => Arch::Phi3,
        "llama" => Arch::Llama,
        o => bail!("unknown --arch {o:?}, expected phi3 or llama"),
    };
    let preset: Preset = a.preset.parse()?;
    let dtype = match a.dtype.as_deref() {
        None => None,
        Some("f32") => Some(DType::F32),
        Some("f16") => Some(DType::F16),
        Some("bf16") => Some(DType::BF16),
        Some(o) => bail!("unknown --dtype {o:?}, expected f32, f16 or bf16"),
    };
    let opts = InitOptions {
        arch,
        preset,
        seed: a.seed,
        tokenizer_corpus: a.tokenizer_corpus,
        dtype,
        vocab_size: a.vocab_size,
    };
    let cfg = init_model(&opts, &a.out).with_context(|| format!("creating {}", a.out.display()))?;
    eprintln!(
        "wrote {} ({}, {} layers, hidden {}, vocab {}, {:.2} M parameters)",
        a.out.display(),
        cfg.arch.hf_name(),
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.vocab_size,
        cfg.parameter_count() as f64 / 1e6
    );
    Ok(())
}

/// Writes random gates for the model's selected layers to `out`.
fn init_gates(a: InitGatesArgs) -> Result<()> {
    let cfg = Config::from_file(&a.model)?;
    let sel: LayerSelection = a.layers.parse()?;
    let layers = sel.resolve(cfg.num_hidden_layers)?;
    let gates = So8Gates::random(
        &layers,
        cfg.attn_out_dim(),
        a.init_scale,
        a.seed,
        RotationMethod::Exp,
        &Device::Cpu,
    )?;
    gates
        .save(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "wrote {}: generators [{}, 28] for layers {:?}",
        a.out.display(),
        cfg.attn_out_dim() / 8,
        layers
    );
    Ok(())
}

fn rope_name(s: &so8t_model::RopeScaling) -> &'static str {
    match s {
        so8t_model::RopeScaling::None => "default",
        so8t_model::RopeScaling::Linear { .. } => "linear",
        so8t_model::RopeScaling::Llama3 { .. } => "llama3",
        so8t_model::RopeScaling::LongRope { .. } => "longrope",
    }
}
