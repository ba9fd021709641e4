//! `so8t bake`: fold SO(8) gates (and LoRA) into o_proj, then check the result.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use so8t_model::bake::{bake, BakeOptions};
use so8t_model::TextTokenizer;

/// `bake`.
#[derive(clap::Args)]
pub struct BakeArgs {
    /// A finished training run: its `final/` gives the base model, gates, α, rotation map and
    /// adapter (the other flags override).
    #[arg(long, conflicts_with_all = ["model", "gates"])]
    pub run: Option<PathBuf>,
    /// The base model folder.
    #[arg(long, required_unless_present = "run")]
    pub model: Option<PathBuf>,
    /// Gates file (`layers.{i}.generator` [H/8, 28]).
    #[arg(long, required_unless_present = "run")]
    pub gates: Option<PathBuf>,
    /// Blend α.
    #[arg(long, required_unless_present = "run")]
    pub alpha: Option<f64>,
    /// Layers to bake: `all` or a list (default: every layer in the gates file).
    #[arg(long)]
    pub layers: Option<String>,
    /// Rotation map: exp or cayley (default: the run's, else exp).
    #[arg(long)]
    pub method: Option<String>,
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

/// Fills the model, gates, α, rotation map and adapter from `RUN/final/bake.json`.
fn from_run(a: &mut BakeArgs, run: &Path) -> Result<()> {
    let plan = so8t_train::run::final_bake(run)?;
    a.model = Some(plan.base_model);
    a.gates = Some(plan.gates.with_context(|| {
        format!(
            "{}: the run trained no SO(8) gates: nothing to bake",
            run.join("final").join("bake.json").display()
        )
    })?);
    a.alpha = a.alpha.or(Some(plan.alpha));
    a.method = a.method.take().or(Some(plan.method));
    a.adapter = a.adapter.take().or(plan.adapter);
    Ok(())
}

/// Runs `bake`.
pub fn run(mut a: BakeArgs) -> Result<()> {
    if let Some(r) = a.run.clone() {
        from_run(&mut a, &r)?;
    }
    let (Some(model), Some(gates), Some(alpha)) = (a.model.clone(), a.gates.clone(), a.alpha)
    else {
        anyhow::bail!("--model, --gates and --alpha are needed (or --run DIR)");
    };
    let check_prompts = if a.no_check {
        vec![]
    } else {
        match TextTokenizer::from_dir(&model) {
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
        gates,
        alpha,
        layers: a.layers.as_deref().map(str::parse).transpose()?,
        method: a.method.as_deref().unwrap_or("exp").parse()?,
        adapter: a.adapter.clone(),
        check_prompts,
    };
    let report =
        bake(&model, &a.out, &opts).with_context(|| format!("baking {}", model.display()))?;
    eprintln!(
        "baked layers {:?} at alpha {} ({} LoRA adapters merged) into {}",
        report.layers,
        alpha,
        report.merged_adapters,
        a.out.display()
    );
    for (i, d) in report.check_max_abs_diff.iter().enumerate() {
        println!("check prompt {i}: max |logits(baked) - logits(gated)| = {d:.3e}");
    }
    Ok(())
}
