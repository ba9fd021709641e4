//! The bake of spec §1: merge LoRA into the base weights, then fold each gated layer's blend
//! matrices into `o_proj` (W' = W · blockdiag(M)), and write a plain HF model folder.
//!
//! Tensors are streamed one at a time in their file layout (shards stay shards), so a model
//! larger than memory can be baked; untouched tensors are copied bit for bit. The folded
//! weights are computed in f64 and cast once to the checkpoint's dtype.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::config::Config;
use crate::error::{read_json, Error, Result};
use crate::io::{write_safetensors_streaming, PendingTensor};
use crate::lora::{self, LoraConfig};
use crate::model::{Forward, Model};
use crate::so8::{fold_into_weight, LayerSelection, RotationMethod, So8Gates};
use crate::weights::Weights;

/// Files copied unchanged from the source folder when present.
pub const SIDE_FILES: [&str; 9] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "added_tokens.json",
    "model.safetensors.index.json",
];

/// What to bake.
#[derive(Debug, Clone)]
pub struct BakeOptions {
    /// Gates file (`layers.{i}.generator`).
    pub gates: PathBuf,
    /// Blend α.
    pub alpha: f64,
    /// Layers whose gates are baked. Default all layers the file has.
    pub layers: Option<LayerSelection>,
    /// Exponential or Cayley rotations.
    pub method: RotationMethod,
    /// Optional PEFT adapter folder, merged first.
    pub adapter: Option<PathBuf>,
    /// Prompts (token ids) for the self-check; empty skips it.
    pub check_prompts: Vec<Vec<u32>>,
}

/// What the bake did.
#[derive(Debug, Clone)]
pub struct BakeReport {
    /// Layers folded.
    pub layers: Vec<usize>,
    /// Number of LoRA adapters merged.
    pub merged_adapters: usize,
    /// Weight files written.
    pub files: Vec<PathBuf>,
    /// Max |logits(baked) − logits(gated)| per check prompt (f32 compute).
    pub check_max_abs_diff: Vec<f64>,
}

fn candle_dtype(d: safetensors::Dtype) -> Option<DType> {
    Some(match d {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        safetensors::Dtype::F64 => DType::F64,
        _ => return None,
    })
}

/// LoRA deltas s·B·A (f64) by module path.
fn adapter_deltas(dir: &Path) -> Result<BTreeMap<String, Tensor>> {
    let cfg_path = dir.join("adapter_config.json");
    let cfg: LoraConfig =
        serde_json::from_value(read_json(&cfg_path)?).map_err(|e| Error::Config {
            path: cfg_path.clone(),
            msg: e.to_string(),
        })?;
    let w = Weights::from_files(&[dir.join("adapter_model.safetensors")])?;
    let mut out = BTreeMap::new();
    for name in w.names() {
        let Some(module) = name
            .strip_prefix("base_model.model.")
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
        else {
            continue;
        };
        let (_, scale) = cfg.rank_and_scale(module);
        let a = w.get_any(&name, DType::F64, &Device::Cpu)?;
        let bn = lora::peft_name(module, 'B');
        let b = w.get_any(&bn, DType::F64, &Device::Cpu)?;
        if b.dim(1)? != a.dim(0)? {
            return Err(Error::ShapeMismatch {
                path: w.file_of(&bn).to_path_buf(),
                name: bn,
                expected: vec![b.dim(0)?, a.dim(0)?],
                got: b.dims().to_vec(),
            });
        }
        out.insert(module.to_string(), (b.matmul(&a)? * scale)?);
    }
    Ok(out)
}

/// Copies the [`SIDE_FILES`] `model_dir` has (config, tokenizer, chat template) into `out_dir`,
/// each atomically.
pub(crate) fn copy_side_files(model_dir: &Path, out_dir: &Path) -> Result<()> {
    for f in SIDE_FILES {
        let src = model_dir.join(f);
        if src.exists() {
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            crate::io::write_atomic(&out_dir.join(f), |w| w.write_all(&bytes))?;
        }
    }
    Ok(())
}

/// Bakes `model_dir` + gates (+ adapter) into `out_dir`, a standard HF folder without gates.
pub fn bake(model_dir: &Path, out_dir: &Path, opts: &BakeOptions) -> Result<BakeReport> {
    let same = match (model_dir.canonicalize(), out_dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(Error::config(
            out_dir,
            "the output folder is the input model folder; so8t never overwrites its inputs",
        ));
    }
    let cfg = Config::from_file(model_dir)?;
    let weights = Weights::from_model_dir(model_dir)?;
    let gates = So8Gates::load(
        &opts.gates,
        cfg.attn_out_dim(),
        cfg.num_hidden_layers,
        &Device::Cpu,
    )?;
    let mut gates = match &opts.layers {
        Some(sel) => gates.select(sel, cfg.num_hidden_layers)?,
        None => gates,
    };
    gates.method = opts.method;
    for g in gates.generators.values_mut() {
        *g = g.to_dtype(DType::F64)?;
    }
    let alpha = Tensor::new(opts.alpha, &Device::Cpu)?;
    let mats = gates.matrices(&alpha, cfg.num_hidden_layers)?;
    let deltas = match &opts.adapter {
        Some(a) => adapter_deltas(a)?,
        None => BTreeMap::new(),
    };
    for module in deltas.keys() {
        if !weights.contains(&format!("{module}.weight")) {
            return Err(Error::MissingTensor {
                path: opts.adapter.clone().unwrap_or_default(),
                name: format!("{module}.weight"),
                hint: " (the adapter targets a module the base model does not have)".into(),
            });
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;

    // Group tensors by the file they live in, so the output keeps the input's sharding.
    let mut by_file: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for name in weights.names() {
        by_file
            .entry(weights.file_of(&name).to_path_buf())
            .or_default()
            .push(name);
    }
    let mut files = Vec::new();
    for (src, names) in by_file {
        let file_name = src
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| "model.safetensors".into());
        let mut pending = Vec::new();
        for name in names {
            let (shape, st_dtype) = weights.info(&name).expect("name from the index");
            let dtype = candle_dtype(st_dtype).ok_or_else(|| Error::UnsupportedDtype {
                path: src.clone(),
                name: name.clone(),
                got: format!("{st_dtype:?}"),
            })?;
            let module = name.strip_suffix(".weight").unwrap_or(&name).to_string();
            let delta = deltas.get(&module).cloned();
            let gate = module
                .strip_prefix("model.layers.")
                .and_then(|r| r.strip_suffix(".self_attn.o_proj"))
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|l| mats.layers.get(l).cloned().flatten());
            let w = &weights;
            let tensor_name = name.clone();
            let produce: Box<dyn FnMut() -> Result<Tensor>> = if delta.is_none() && gate.is_none() {
                Box::new(move || w.get_any(&name, dtype, &Device::Cpu))
            } else {
                Box::new(move || {
                    let mut t = w.get_any(&name, DType::F64, &Device::Cpu)?;
                    if let Some(d) = &delta {
                        t = (t + d)?;
                    }
                    if let Some(m) = &gate {
                        t = fold_into_weight(&t, m)?;
                    }
                    Ok(t.to_dtype(dtype)?)
                })
            };
            pending.push(PendingTensor {
                name: tensor_name,
                dtype,
                shape,
                produce,
            });
        }
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let out = out_dir.join(&file_name);
        write_safetensors_streaming(&out, pending, &meta)?;
        files.push(out);
    }
    copy_side_files(model_dir, out_dir)?;
    let layers: Vec<usize> = gates.generators.keys().copied().collect();
    let manifest = serde_json::json!({
        "so8t_bake": 1,
        "source": model_dir.display().to_string(),
        "gates": opts.gates.display().to_string(),
        "alpha": opts.alpha,
        "layers": layers,
        "method": format!("{:?}", opts.method).to_lowercase(),
        "adapter": opts.adapter.as_ref().map(|a| a.display().to_string()),
    });
    crate::io::write_string_atomic(&out_dir.join("so8t_bake.json"), &format!("{manifest:#}\n"))?;

    let check_max_abs_diff = if opts.check_prompts.is_empty() {
        vec![]
    } else {
        self_check(model_dir, out_dir, opts)?
    };
    Ok(BakeReport {
        layers,
        merged_adapters: deltas.len(),
        files,
        check_max_abs_diff,
    })
}

/// Logits of the gated source model vs the baked folder, both computed in f32 on the CPU.
fn self_check(model_dir: &Path, out_dir: &Path, opts: &BakeOptions) -> Result<Vec<f64>> {
    let dev = Device::Cpu;
    let gated_logits = {
        let mut model = Model::load(model_dir, DType::F32, &dev)?;
        if let Some(a) = &opts.adapter {
            lora::load(&mut model, a)?;
        }
        let n = model.cfg.num_hidden_layers;
        let mut gates = So8Gates::load(&opts.gates, model.cfg.attn_out_dim(), n, &dev)?;
        if let Some(sel) = &opts.layers {
            gates = gates.select(sel, n)?;
        }
        gates.method = opts.method;
        let mats = gates.matrices(&Tensor::new(opts.alpha as f32, &dev)?, n)?;
        opts.check_prompts
            .iter()
            .map(|p| {
                let ids = Tensor::new(p.as_slice(), &dev)?.unsqueeze(0)?;
                model.forward(
                    &ids,
                    Forward {
                        gates: Some(&mats),
                        ..Default::default()
                    },
                )
            })
            .collect::<Result<Vec<_>>>()?
    };
    let baked = Model::load(out_dir, DType::F32, &dev)?;
    opts.check_prompts
        .iter()
        .zip(gated_logits)
        .map(|(p, g)| {
            let ids = Tensor::new(p.as_slice(), &dev)?.unsqueeze(0)?;
            let b = baked.forward(&ids, Forward::default())?;
            Ok((b - g)?
                .abs()?
                .max_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?)
        })
        .collect()
}
