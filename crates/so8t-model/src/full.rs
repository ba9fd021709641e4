//! Full fine-tuning: every weight of the model (embeddings, norms, linears, `lm_head`) as a
//! trainable variable, and the trained model written back as a plain HF folder.
//!
//! The model's frozen-weight kernels step aside by themselves: a linear whose weight is a `Var`
//! takes the plain matmul (gradient for W too), a norm with a `Var` scale the composed one.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Var};

use crate::bake::copy_side_files;
use crate::error::{Error, Result};
use crate::linear::LinearWeight;
use crate::Model;

fn var_of(t: &candle_core::Tensor) -> Result<Var> {
    Ok(Var::from_tensor(t)?)
}

/// Turns every weight of `model` into a trainable `Var` (in place) and returns them by HF name.
/// Tied embeddings are one variable (`model.embed_tokens.weight`) used in both places. The model
/// must be f32, without LoRA adapters and with dense (not Q8_0) weights.
pub fn make_trainable(model: &mut Model) -> Result<BTreeMap<String, Var>> {
    if model.dtype() != DType::F32 {
        return Err(Error::Lora(format!(
            "full fine-tuning needs f32 weights, the model is loaded as {:?}",
            model.dtype()
        )));
    }
    let mut vars = BTreeMap::new();
    let embed = var_of(&model.embed_tokens)?;
    model.embed_tokens = embed.as_tensor().clone();
    if model.cfg.tie_word_embeddings {
        model.lm_head = embed.as_tensor().clone();
    } else {
        let head = var_of(&model.lm_head)?;
        model.lm_head = head.as_tensor().clone();
        vars.insert("lm_head.weight".to_string(), head);
    }
    vars.insert("model.embed_tokens.weight".to_string(), embed);
    for (i, l) in model.layers.iter_mut().enumerate() {
        for (name, norm) in [
            ("input_layernorm", &mut l.input_layernorm),
            ("post_attention_layernorm", &mut l.post_attention_layernorm),
        ] {
            let v = var_of(&norm.weight)?;
            norm.weight = v.as_tensor().clone();
            vars.insert(format!("model.layers.{i}.{name}.weight"), v);
        }
    }
    let norm = var_of(&model.norm.weight)?;
    model.norm.weight = norm.as_tensor().clone();
    vars.insert("model.norm.weight".to_string(), norm);
    for lin in model.linears_mut() {
        if lin.lora.is_some() {
            return Err(Error::Lora(format!(
                "{}: full fine-tuning of a model with a LoRA adapter attached",
                lin.name
            )));
        }
        let LinearWeight::Dense(w) = &lin.weight else {
            return Err(Error::Lora(format!(
                "{}: full fine-tuning needs dense weights, this one is Q8_0",
                lin.name
            )));
        };
        let v = var_of(w)?;
        lin.weight = LinearWeight::Dense(v.as_tensor().clone());
        vars.insert(format!("{}.weight", lin.name), v);
        if let Some(b) = &lin.bias {
            let v = var_of(b)?;
            lin.bias = Some(v.as_tensor().clone());
            vars.insert(format!("{}.bias", lin.name), v);
        }
    }
    Ok(vars)
}

/// Writes `model`'s current weights (LoRA merged) as `out_dir/model.safetensors` in `dtype`,
/// with the side files (config, tokenizer, chat template) copied from `base_dir`: an HF folder
/// that [`Model::load`], `so8t bake` and the GGUF exporter read like any other.
pub fn save_model(model: &Model, base_dir: &Path, out_dir: &Path, dtype: DType) -> Result<()> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut tensors = BTreeMap::new();
    for (name, t) in model.named_tensors()? {
        tensors.insert(name, t.to_dtype(dtype)?);
    }
    crate::io::write_safetensors(&out_dir.join("model.safetensors"), &tensors)?;
    copy_side_files(base_dir, out_dir)
}
