//! The pipeline's steps (seeds 001–004): data → think → base (model A) → train (model B) →
//! bake → export GGUF → import into the store → eval A → eval B → A/B report. Each step reads
//! the outputs of the steps before it and writes only into its own folder.

mod data;
mod eval;
mod model;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::Value;

use crate::config::PipelineConfig;

/// Where progress lines go.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// What every step sees.
pub struct Ctx<'a> {
    /// The configuration.
    pub cfg: &'a PipelineConfig,
    /// The folder relative paths of the config are taken from.
    pub cfg_dir: PathBuf,
    /// The pipeline folder.
    pub dir: PathBuf,
    /// Set by SIGINT/SIGTERM: long steps stop at a safe point (training: emergency checkpoint).
    pub interrupt: Arc<AtomicBool>,
    /// Where progress lines go.
    pub log: Log,
}

impl Ctx<'_> {
    /// The (finished) output folder of a step.
    pub fn out(&self, step: &str) -> PathBuf {
        self.dir.join("steps").join(step)
    }
    /// A path of the config, relative to its folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.cfg_dir.join(p)
        }
    }
    /// The model store's folder.
    pub fn store_dir(&self) -> PathBuf {
        match &self.cfg.store {
            Some(s) => self.resolve(s),
            None => so8t_serve::library::default_models_dir(None),
        }
    }
    /// Model A's folder (after the `base` step).
    pub fn base_model(&self) -> PathBuf {
        if self.cfg.base_model == model::BUILTIN_TINY {
            self.out("base").join("model")
        } else {
            self.resolve(Path::new(&self.cfg.base_model))
        }
    }
    /// Model names without the flavour: (A, B).
    pub fn model_names(&self) -> (String, String) {
        (
            format!("{}-base", self.cfg.name),
            format!("{}-so8t", self.cfg.name),
        )
    }
}

/// A step's body: writes into the staging folder, returns what it reports.
pub type StepFn = fn(&Ctx<'_>, &Path) -> Result<Value, String>;

/// One step of the pipeline.
pub struct Step {
    /// Its name (and its folder's).
    pub name: &'static str,
    /// One line on what it does.
    pub what: &'static str,
    /// Steps whose outputs it reads.
    pub deps: &'static [&'static str],
    /// The part of the config it depends on.
    pub config: fn(&PipelineConfig) -> Value,
    /// Fingerprints of inputs outside the pipeline folder (dataset files, a base model folder).
    pub external: fn(&Ctx<'_>) -> Result<Vec<String>, String>,
    /// The body.
    pub run: StepFn,
    /// Checks, when the step is skipped, that what it made outside its folder is still there.
    pub still_valid: fn(&Ctx<'_>, &Value) -> bool,
}

fn no_external(_: &Ctx<'_>) -> Result<Vec<String>, String> {
    Ok(Vec::new())
}

fn always(_: &Ctx<'_>, _: &Value) -> bool {
    true
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// What the evaluations depend on (the `threads` setting does not change results).
fn eval_config(c: &PipelineConfig) -> Value {
    let e = &c.eval;
    json(&(e.four_class, &e.tasks, e.limit, e.seed, c.eval_quant()))
}

/// The steps in order.
pub fn steps() -> Vec<Step> {
    vec![
        Step {
            name: "data",
            what: "collect four-class records (PII scrubbed, duplicates dropped) and split them",
            deps: &[],
            config: |c| json(&c.data),
            external: data::fingerprint_inputs,
            run: data::collect_and_split,
            still_valid: always,
        },
        Step {
            name: "think",
            what: "/think chats of the train and test splits",
            deps: &["data"],
            config: |c| json(&(&c.data.think_format, &c.base_model)),
            external: model::fingerprint_base,
            run: data::think_chats,
            still_valid: always,
        },
        Step {
            name: "base",
            what: "model A, the base",
            deps: &["think"],
            config: |c| json(&(&c.base_model, c.data.tokenizer_vocab, model::init_seed(c))),
            external: model::fingerprint_base,
            run: model::base,
            still_valid: always,
        },
        Step {
            name: "train",
            what: "model B: SO8T fine-tuning (gates, α annealing, PET) in a resumable run",
            deps: &["think", "base"],
            config: |c| json(&(&c.train, &c.train_run)),
            external: model::fingerprint_train_run,
            run: model::train,
            still_valid: always,
        },
        Step {
            name: "bake",
            what: "fold the gates (and adapter) into o_proj",
            deps: &["train", "base"],
            config: |_| Value::Null,
            external: model::fingerprint_base,
            run: model::bake_step,
            still_valid: always,
        },
        Step {
            name: "export",
            what: "GGUF files and Modelfiles of A and B",
            deps: &["base", "bake"],
            config: |c| json(&(&c.export, &c.name)),
            external: model::fingerprint_base,
            run: model::export_step,
            still_valid: always,
        },
        Step {
            name: "import",
            what: "A and B into the model store as {name}_{quant}:latest",
            deps: &["export"],
            config: |c| json(&(&c.store, &c.name)),
            external: no_external,
            run: model::import_step,
            still_valid: model::import_still_valid,
        },
        Step {
            name: "eval-a",
            what: "benchmarks of model A",
            deps: &["think", "import"],
            config: eval_config,
            external: eval::fingerprint_tasks,
            run: |ctx, out| eval::eval_model(ctx, out, 'a'),
            still_valid: always,
        },
        Step {
            name: "eval-b",
            what: "benchmarks of model B",
            deps: &["think", "import"],
            config: eval_config,
            external: eval::fingerprint_tasks,
            run: |ctx, out| eval::eval_model(ctx, out, 'b'),
            still_valid: always,
        },
        Step {
            name: "ab",
            what: "paired A/B test and report",
            deps: &["eval-a", "eval-b"],
            config: |c| json(&(&c.ab, c.eval.seed)),
            external: no_external,
            run: eval::ab_step,
            still_valid: always,
        },
    ]
}

/// Copies a folder tree (files and folders only).
pub(crate) fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let ft = e.file_type()?;
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else if ft.is_file() {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}
