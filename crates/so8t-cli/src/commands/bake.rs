//! `so8t bake`: fold SO(8) gates (and LoRA) into o_proj, then check the result.

use std::path::PathBuf;

use anyhow::{Context, Result};
use so8t_model::bake::{bake, BakeOptions};
use so8t_model::TextTokenizer;

/// `bake`.
#[derive(clap::Args)]
pub struct BakeArgs {
    /// The base model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Gates file (`layers.{i}.generator` [H/8, 28]).
    #[arg(long)]
    pub gates: PathBuf,
    /// Blend α.
    #[arg(long)]
    pub alpha: f64,
    /// Layers to bake: `all` or a list (default: every layer in the gates file).
    #[arg(long)]
    pub layers: Option<String>,
    /// Rotation map: exp or cayley.
    #[arg(long, default_value = "exp")]
    pub method: String,
    /// PEFT LoRA adapter folder, merged before the gates are folded.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Output folder (a plain HF model folder).
    #[arg(long)]
    pub out: PathBuf,
    /// Skip the logits self-check (it loads the model twice in f32).
    #[arg(long)]
    pub no_check: bool,
}

const CHECK_PROMPTS: [&str; 3] = [
    "The capital of France is",
    "日本の首都は東京です。",
    "Rotation gates act on eight-dimensional blocks.",
];

/// Runs `bake`.
pub fn run(a: BakeArgs) -> Result<()> {
    let check_prompts = if a.no_check {
        vec![]
    } else {
        match TextTokenizer::from_dir(&a.model) {
            Ok(t) => CHECK_PROMPTS
                .iter()
                .map(|p| t.encode(p, true))
                .collect::<Result<Vec<_>, _>>()?,
            Err(_) => vec![
                vec![1, 2, 3, 4, 5, 6, 7, 8],
                vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3],
            ],
        }
    };
    let opts = BakeOptions {
        gates: a.gates.clone(),
        alpha: a.alpha,
        layers: a.layers.as_deref().map(str::parse).transpose()?,
        method: a.method.parse()?,
        adapter: a.adapter.clone(),
        check_prompts,
    };
    let report =
        bake(&a.model, &a.out, &opts).with_context(|| format!("baking {}", a.model.display()))?;
    eprintln!(
        "baked layers {:?} at alpha {} ({} LoRA adapters merged) into {}",
        report.layers,
        a.alpha,
        report.merged_adapters,
        a.out.display()
    );
    for (i, d) in report.check_max_abs_diff.iter().enumerate() {
        println!("check prompt {i}: max |logits(baked) - logits(gated)| = {d:.3e}");
    }
    Ok(())
}
