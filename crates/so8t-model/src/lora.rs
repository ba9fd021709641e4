//! LoRA adapters in PEFT's on-disk format (`adapter_config.json` + `adapter_model.safetensors`
//! with `base_model.model.<module>.lora_{A,B}.weight` names): attach, load, save and merge.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{read_json, Error, Result};
use crate::linear::LoraAdapter;
use crate::model::Model;
use crate::weights::Weights;

/// LoRA settings, named as in PEFT's `LoraConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scaling numerator (`scale = lora_alpha / r`).
    pub lora_alpha: f64,
    /// Dropout on the adapter input while training.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Module names (`qkv_proj`, `o_proj`, …), `"all-linear"`, or a regex string.
    pub target_modules: TargetModules,
    /// rsLoRA: `scale = lora_alpha / sqrt(r)`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Per-module rank overrides (key = module-name suffix).
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides (key = module-name suffix).
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
}

/// PEFT's `target_modules`: a list of names or one string (`all-linear` or a full-match regex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module-name suffixes.
    List(Vec<String>),
    /// `all-linear` or a regex matched against the full module path.
    Pattern(String),
}

fn suffix_match(name: &str, key: &str) -> bool {
    name == key || name.ends_with(&format!(".{key}"))
}

impl LoraConfig {
    /// A config with rank `r`, alpha and target module names.
    pub fn new(r: usize, lora_alpha: f64, targets: &[&str]) -> Self {
        Self {
            r,
            lora_alpha,
            lora_dropout: 0.0,
            target_modules: TargetModules::List(targets.iter().map(|s| s.to_string()).collect()),
            use_rslora: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
        }
    }

    /// True if and only if the module at `path` (e.g. `model.layers.0.self_attn.o_proj`) is targeted.
    pub fn targets(&self, path: &str) -> Result<bool> {
        Ok(match &self.target_modules {
            TargetModules::List(l) => l.iter().any(|t| suffix_match(path, t)),
            TargetModules::Pattern(p) if p == "all-linear" => true,
            TargetModules::Pattern(p) => regex::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| Error::Lora(format!("target_modules regex {p:?}: {e}")))?
                .is_match(path),
        })
    }

    /// Rank and scale for one module, honouring rank/alpha patterns and rsLoRA.
    pub fn rank_and_scale(&self, path: &str) -> (usize, f64) {
        let r = self
            .rank_pattern
            .iter()
            .find(|(k, _)| suffix_match(path, k))
            .map(|(_, &v)| v)
            .unwrap_or(self.r);
        let a = self
            .alpha_pattern
            .iter()
            .find(|(k, _)| suffix_match(path, k))
            .map(|(_, &v)| v)
            .unwrap_or(self.lora_alpha);
        let scale = if self.use_rslora {
            a / (r as f64).sqrt()
        } else {
            a / r as f64
        };
        (r, scale)
    }
}

/// PEFT's tensor name for a module's A or B matrix.
pub fn peft_name(module: &str, which: char) -> String {
    format!("base_model.model.{module}.lora_{which}.weight")
}

/// Attaches fresh adapters to every targeted linear: A ~ U(−1/√in, 1/√in) (PEFT's Kaiming
/// init), B = 0, both f32 `Var`s. Returns the trainable variables by PEFT name.
pub fn attach(model: &mut Model, cfg: &LoraConfig, seed: u64) -> Result<BTreeMap<String, Var>> {
    use rand::{Rng, SeedableRng};
    if cfg.r == 0 {
        return Err(Error::Lora("rank r must be at least 1".into()));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let device = model.device().clone();
    let mut vars = BTreeMap::new();
    let mut any = false;
    for lin in model.linears_mut() {
        if !cfg.targets(&lin.name)? {
            continue;
        }
        any = true;
        let (r, scale) = cfg.rank_and_scale(&lin.name);
        let (out, inp) = (lin.out_features(), lin.in_features());
        let bound = 1.0 / (inp as f64).sqrt();
        let a: Vec<f32> = (0..r * inp)
            .map(|_| rng.gen_range(-bound..bound) as f32)
            .collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (r, inp), &device)?)?;
        let b = Var::zeros((out, r), DType::F32, &device)?;
        lin.lora = Some(LoraAdapter {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale,
            dropout: cfg.lora_dropout as f32,
        });
        vars.insert(peft_name(&lin.name, 'A'), a);
        vars.insert(peft_name(&lin.name, 'B'), b);
    }
    if !any {
        return Err(Error::Lora(format!(
            "target_modules {:?} match no linear layer of this model (e.g. {})",
            cfg.target_modules,
            model
                .linears()
                .first()
                .map(|l| l.name.as_str())
                .unwrap_or("")
        )));
    }
    Ok(vars)
}

/// Loads a PEFT adapter folder onto the model (adapters in f32).
pub fn load(model: &mut Model, dir: &Path) -> Result<LoraConfig> {
    let cfg_path = dir.join("adapter_config.json");
    let raw: Value = read_json(&cfg_path)?;
    let bad = |m: String| Error::Config {
        path: cfg_path.clone(),
        msg: m,
    };
    if let Some(t) = raw.get("peft_type").and_then(|t| t.as_str()) {
        if t != "LORA" {
            return Err(bad(format!("peft_type is {t:?}, so8t loads LORA adapters")));
        }
    }
    for (k, what) in [
        ("use_dora", "DoRA"),
        ("fan_in_fan_out", "fan_in_fan_out (Conv1D) layouts"),
    ] {
        if raw.get(k).and_then(|v| v.as_bool()) == Some(true) {
            return Err(bad(format!("{what} is not supported")));
        }
    }
    let cfg: LoraConfig = serde_json::from_value(raw).map_err(|e| bad(e.to_string()))?;
    let weights_path = dir.join("adapter_model.safetensors");
    let w = Weights::from_files(std::slice::from_ref(&weights_path))?;
    let device = model.device().clone();
    let mut used = 0;
    for lin in model.linears_mut() {
        let (an, bn) = (peft_name(&lin.name, 'A'), peft_name(&lin.name, 'B'));
        if !w.contains(&an) && !w.contains(&bn) {
            continue;
        }
        let (r, scale) = cfg.rank_and_scale(&lin.name);
        let a = w.get(&an, &[r, lin.in_features()], DType::F32, &device)?;
        let b = w.get(&bn, &[lin.out_features(), r], DType::F32, &device)?;
        lin.lora = Some(LoraAdapter {
            a,
            b,
            scale,
            dropout: cfg.lora_dropout as f32,
        });
        used += 2;
    }
    let total = w.names().iter().filter(|n| n.contains(".lora_")).count();
    if used == 0 || used != total {
        return Err(Error::Safetensors {
            path: weights_path,
            msg: format!("{used} of {total} LoRA tensors match modules of this model; is the adapter for another base?"),
        });
    }
    Ok(cfg)
}

/// Saves the model's adapters as a PEFT folder (atomic writes).
pub fn save(model: &Model, cfg: &LoraConfig, dir: &Path, base_model: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors = BTreeMap::new();
    for lin in model.linears() {
        if let Some(l) = &lin.lora {
            tensors.insert(
                peft_name(&lin.name, 'A'),
                l.a.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
            );
            tensors.insert(
                peft_name(&lin.name, 'B'),
                l.b.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
            );
        }
    }
    if tensors.is_empty() {
        return Err(Error::Lora("the model has no LoRA adapters to save".into()));
    }
    crate::io::write_safetensors(&dir.join("adapter_model.safetensors"), &tensors)?;
    let mut v = serde_json::to_value(cfg).map_err(|e| Error::Lora(e.to_string()))?;
    if let Value::Object(o) = &mut v {
        for (k, x) in [
            ("peft_type", Value::from("LORA")),
            ("task_type", Value::from("CAUSAL_LM")),
            ("base_model_name_or_path", Value::from(base_model)),
            ("bias", Value::from("none")),
            ("fan_in_fan_out", Value::from(false)),
            ("inference_mode", Value::from(true)),
            ("init_lora_weights", Value::from(true)),
            ("use_dora", Value::from(false)),
            ("modules_to_save", Value::Null),
            ("layers_to_transform", Value::Null),
            ("layers_pattern", Value::Null),
            ("revision", Value::Null),
        ] {
            o.entry(k).or_insert(x);
        }
    }
    let text = serde_json::to_string_pretty(&v).map_err(|e| Error::Lora(e.to_string()))?;
    crate::io::write_string_atomic(&dir.join("adapter_config.json"), &text)
}

/// Folds every adapter into its base weight (W ← W + s·B·A in f32) and removes it. A Q8_0
/// base weight with an adapter is dequantized, so its merged weight is dense.
pub fn merge(model: &mut Model) -> Result<()> {
    for lin in model.linears_mut() {
        if lin.lora.is_some() {
            lin.weight = lin.merged_weight()?.into();
            lin.lora = None;
        }
    }
    Ok(())
}
