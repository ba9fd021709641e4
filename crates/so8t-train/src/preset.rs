//! Named starting points for `train.yaml` (`preset: fast`): the seeds' two training configs.
//! A preset's values are laid under the file's own, key by key, so a file names only what it
//! changes.

use serde_yaml_ng::Value;

use crate::error::{Error, Result};

/// The presets by name, as YAML.
pub const PRESETS: [(&str, &str); 2] = [
    (
        // The seed's full config for a 12 GB GPU: 3 epochs, sequences of 2048, LoRA rank 64,
        // gates on every layer, batch 1 × 16 accumulated, 8-bit frozen base.
        "standard",
        "
data: { max_seq_len: 2048, packing: true }
so8t: { layer_indices: all }
lora: { r: 64, alpha: 128, dropout: 0.05 }
optimizer: { lr: 2.0e-4, warmup_steps: 100, lr_scheduler: cosine }
training: { epochs: 3, max_steps: 0, batch_size: 1, gradient_accumulation_steps: 16, base_dtype: int8 }
checkpoint: { every_minutes: 3, keep_rolling: 5 }
",
    ),
    (
        // The seed's fast config (70–80 % less time): 1 epoch, sequences of 1024, rank 32, gates
        // on 8 layers spread over the depth, fewer checkpoints.
        "fast",
        "
data: { max_seq_len: 1024, packing: true }
so8t: { layer_indices: 'spread:8' }
lora: { r: 32, alpha: 64, dropout: 0.05 }
optimizer: { lr: 2.0e-4, warmup_steps: 50, lr_scheduler: cosine }
training: { epochs: 1, max_steps: 0, batch_size: 1, gradient_accumulation_steps: 16, base_dtype: int8 }
checkpoint: { every_minutes: 10, keep_rolling: 3 }
",
    ),
];

/// Lays `over` onto `under`: mappings merge key by key, anything else replaces.
pub(crate) fn merge(under: Value, over: Value) -> Value {
    match (under, over) {
        (Value::Mapping(mut a), Value::Mapping(b)) => {
            for (k, v) in b {
                let merged = match a.remove(&k) {
                    Some(old) => merge(old, v),
                    None => v,
                };
                a.insert(k, merged);
            }
            Value::Mapping(a)
        }
        (_, over) => over,
    }
}

/// If the document names a `preset`, returns it with the preset's values laid under its own
/// (and the `preset` key removed); otherwise None. `origin` names the file in errors.
pub fn apply(text: &str, origin: &str) -> Result<Option<Value>> {
    let doc: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| Error::invalid("config", format!("{origin}: {e}")))?;
    let Value::Mapping(mut map) = doc else {
        return Ok(None);
    };
    let Some(name) = map.remove("preset") else {
        return Ok(None);
    };
    let Some(name) = name.as_str() else {
        return Err(Error::invalid(
            "preset",
            format!("{origin}: expected a preset name"),
        ));
    };
    let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
    let Some((_, yaml)) = PRESETS.iter().find(|(n, _)| *n == name) else {
        return Err(Error::invalid(
            "preset",
            format!(
                "{origin}: unknown preset {name:?}; presets: {}",
                names.join(", ")
            ),
        ));
    };
    let base: Value = serde_yaml_ng::from_str(yaml).expect("built-in presets parse");
    Ok(Some(merge(base, Value::Mapping(map))))
}
