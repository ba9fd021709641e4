//! What `show` reports about a GGUF (family, parameter size, quantization, metadata as JSON)
//! and the typed parameters of a model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as J};
use so8t_gguf::modelfile::{param_kind, ParamKind, ParamValue};
use so8t_gguf::{GgufFile, Value};

/// `ollama show`'s details.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ModelDetails {
    /// The model this one was created FROM (a store name), if any.
    pub parent_model: String,
    /// `gguf`.
    pub format: String,
    /// `general.architecture`.
    pub family: String,
    /// The families.
    pub families: Vec<String>,
    /// Parameter count as Ollama prints it (`134.52M`, `3.8B`).
    pub parameter_size: String,
    /// `Q8_0`, `Q4_K_M`, `F16`, …
    pub quantization_level: String,
}

/// Ollama's `format.HumanNumber`: `134.52M`, `3.8B`, `7B`.
pub fn human_number(n: u64) -> String {
    let f = n as f64;
    let fmt = |x: f64, unit: &str, prec: usize| {
        if x == x.floor() {
            format!("{x:.0}{unit}")
        } else {
            format!("{x:.prec$}{unit}")
        }
    };
    if n >= 1_000_000_000_000 {
        fmt(f / 1e12, "T", 1)
    } else if n >= 1_000_000_000 {
        fmt(f / 1e9, "B", 1)
    } else if n >= 1_000_000 {
        fmt(f / 1e6, "M", 2)
    } else if n >= 1_000 {
        fmt(f / 1e3, "K", 2)
    } else {
        n.to_string()
    }
}

/// llama.cpp's `llama_ftype` names by id.
fn file_type_name(id: u64) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}

/// Parameters (sum of tensor elements).
pub fn parameter_count(f: &GgufFile) -> u64 {
    f.tensors().iter().map(|t| t.n_elements).sum()
}

/// `general.file_type`'s name, else the type holding most bytes among matrices.
pub fn quantization_level(f: &GgufFile) -> String {
    if let Some(n) = f
        .metadata("general.file_type")
        .and_then(Value::as_u64)
        .and_then(file_type_name)
    {
        return n.to_string();
    }
    let mut bytes: BTreeMap<&str, u64> = BTreeMap::new();
    for t in f.tensors().iter().filter(|t| t.dims.len() >= 2) {
        *bytes.entry(t.ty.name()).or_default() += t.n_bytes;
    }
    bytes
        .into_iter()
        .max_by_key(|(_, b)| *b)
        .map_or_else(|| "unknown".to_string(), |(n, _)| n.to_string())
}

/// The details of a GGUF.
pub fn details(f: &GgufFile) -> ModelDetails {
    let family = f
        .metadata("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    ModelDetails {
        parent_model: String::new(),
        format: "gguf".into(),
        families: if family.is_empty() {
            vec![]
        } else {
            vec![family.clone()]
        },
        family,
        parameter_size: human_number(parameter_count(f)),
        quantization_level: quantization_level(f),
    }
}

fn to_json(v: &Value) -> J {
    match v {
        Value::String(s) => J::from(s.as_str()),
        Value::Bool(b) => J::from(*b),
        Value::Array(_, items) => J::Array(items.iter().map(to_json).collect()),
        Value::F32(x) => serde_json::Number::from_f64(f64::from(*x)).map_or(J::Null, J::Number),
        Value::F64(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        v => v
            .as_i64()
            .map(J::from)
            .or_else(|| v.as_u64().map(J::from))
            .unwrap_or(J::Null),
    }
}

/// The GGUF metadata as a JSON map, like Ollama's `model_info`: arrays of more than 5 items
/// become `null`, and `general.parameter_count` is added.
pub fn model_info(f: &GgufFile) -> Map<String, J> {
    let mut out = Map::new();
    for (k, v) in f.metadata_entries() {
        let j = match v {
            Value::Array(_, items) if items.len() > 5 => J::Null,
            v => to_json(v),
        };
        out.insert(k.clone(), j);
    }
    out.entry("general.parameter_count")
        .or_insert_with(|| J::from(parameter_count(f)));
    out
}

/// A model's sampling and runtime parameters (the params layer), typed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelParams {
    /// Stop strings.
    pub stop: Vec<String>,
    /// Temperature.
    pub temperature: Option<f32>,
    /// Top-k.
    pub top_k: Option<u32>,
    /// Top-p.
    pub top_p: Option<f32>,
    /// Min-p.
    pub min_p: Option<f32>,
    /// Random seed.
    pub seed: Option<i64>,
    /// Context length.
    pub num_ctx: Option<u32>,
    /// Most tokens to generate (-1: unlimited).
    pub num_predict: Option<i64>,
    /// Repetition penalty.
    pub repeat_penalty: Option<f32>,
    /// Tokens the repetition penalty looks back.
    pub repeat_last_n: Option<i64>,
    /// Presence penalty.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Tokens kept when the context shifts.
    pub num_keep: Option<i64>,
    /// CPU threads.
    pub num_thread: Option<u32>,
    /// Every other parameter, as stored.
    pub other: BTreeMap<String, J>,
}

impl ModelParams {
    /// Reads a params layer's JSON object; values of the wrong type go to `other`.
    pub fn from_json(map: &Map<String, J>) -> Self {
        let mut p = ModelParams::default();
        for (k, v) in map {
            let f = v.as_f64().map(|x| x as f32);
            let i = v.as_i64();
            let u = v.as_u64().and_then(|x| u32::try_from(x).ok());
            let used = match k.as_str() {
                "stop" => match v {
                    J::Array(a) => {
                        p.stop = a
                            .iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect();
                        true
                    }
                    J::String(s) => {
                        p.stop = vec![s.clone()];
                        true
                    }
                    _ => false,
                },
                "temperature" => f.map(|x| p.temperature = Some(x)).is_some(),
                "top_k" => u.map(|x| p.top_k = Some(x)).is_some(),
                "top_p" => f.map(|x| p.top_p = Some(x)).is_some(),
                "min_p" => f.map(|x| p.min_p = Some(x)).is_some(),
                "seed" => i.map(|x| p.seed = Some(x)).is_some(),
                "num_ctx" => u.map(|x| p.num_ctx = Some(x)).is_some(),
                "num_predict" => i.map(|x| p.num_predict = Some(x)).is_some(),
                "repeat_penalty" => f.map(|x| p.repeat_penalty = Some(x)).is_some(),
                "repeat_last_n" => i.map(|x| p.repeat_last_n = Some(x)).is_some(),
                "presence_penalty" => f.map(|x| p.presence_penalty = Some(x)).is_some(),
                "frequency_penalty" => f.map(|x| p.frequency_penalty = Some(x)).is_some(),
                "num_keep" => i.map(|x| p.num_keep = Some(x)).is_some(),
                "num_thread" => u.map(|x| p.num_thread = Some(x)).is_some(),
                _ => false,
            };
            if !used {
                p.other.insert(k.clone(), v.clone());
            }
        }
        p
    }
}

/// A params-layer JSON object → Modelfile `PARAMETER`s (known names only, `stop` expanded).
pub fn params_to_modelfile(map: &Map<String, J>) -> Vec<(String, ParamValue)> {
    let mut out = Vec::new();
    for (k, v) in map {
        let Some(kind) = param_kind(k) else { continue };
        let items: Vec<&J> = match v {
            J::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for item in items {
            let pv = match (kind, item) {
                (ParamKind::Str, J::String(s)) => ParamValue::Str(s.clone()),
                (ParamKind::Int, J::Number(n)) => match n.as_i64() {
                    Some(i) => ParamValue::Int(i),
                    None => continue,
                },
                (ParamKind::Float, J::Number(n)) => ParamValue::Float(n.as_f64().unwrap_or(0.0)),
                (ParamKind::Bool, J::Bool(b)) => ParamValue::Bool(*b),
                _ => continue,
            };
            out.push((k.clone(), pv));
        }
    }
    out
}

/// Ollama's `parameters` text: one `name value` line per value, names padded to 30, strings
/// quoted.
pub fn params_text(map: &Map<String, J>) -> String {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let mut lines = Vec::new();
    for k in keys {
        let items: Vec<&J> = match &map[k] {
            J::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in items {
            lines.push(format!("{k:<30} {v}"));
        }
    }
    lines.join("\n")
}
