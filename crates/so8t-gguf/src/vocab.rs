//! Tokenizer metadata for GGUF from an HF folder's `tokenizer.json` (+ `tokenizer_config.json`,
//! `config.json`), the way llama.cpp's converter writes it:
//!
//! - byte-level BPE → `tokenizer.ggml.model = gpt2`: tokens, token types, merges, and the
//!   pre-tokenizer name whose regexes llama.cpp uses (`gpt-2`, `smollm`, `llama-bpe`, `qwen2`);
//! - SentencePiece-style BPE (byte fallback, `▁` spaces; Llama 2, Phi-3) → `llama`: tokens,
//!   scores (merge priority: −rank of the merge that makes the token) and token types (normal,
//!   unknown, control, user-defined, unused, byte);
//!
//! plus BOS / EOS / UNK / PAD ids, `add_bos_token`, `add_eos_token`, `add_space_prefix` and
//! `tokenizer.chat_template`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;

use so8t_model::Config;

use crate::error::{Error, Result};
use crate::meta::Meta;

/// llama.cpp's token types.
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

fn read(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Export(format!("{}: not valid JSON: {e}", path.display())))
}

/// One `added_tokens` entry.
struct Added {
    id: usize,
    content: String,
    special: bool,
}

/// The kind of vocabulary in a `tokenizer.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// Byte-level BPE (GPT-2 style): `gpt2`.
    Gpt2,
    /// SentencePiece-style BPE with byte fallback: `llama`.
    SentencePiece,
}

fn mentions(v: &Json, needle: &str) -> bool {
    v.to_string().contains(needle)
}

/// Which vocabulary `tok` (a parsed `tokenizer.json`) holds.
pub fn vocab_kind(tok: &Json, origin: &Path) -> Result<VocabKind> {
    let model = &tok["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(Error::Export(format!(
            "{}: tokenizer model {:?}: so8t exports BPE vocabularies (byte-level or SentencePiece-style)",
            origin.display(),
            model["type"]
        )));
    }
    let spm = model["byte_fallback"].as_bool() == Some(true)
        || mentions(&tok["pre_tokenizer"], "Metaspace")
        || mentions(&tok["normalizer"], "\u{2581}");
    Ok(if spm {
        VocabKind::SentencePiece
    } else {
        VocabKind::Gpt2
    })
}

/// llama.cpp's pre-tokenizer name for a byte-level BPE `tokenizer.json`, chosen by the shape of
/// its pre-tokenizer (llama.cpp then applies the same split regexes).
pub fn gpt2_pre(tok: &Json, origin: &Path) -> Result<&'static str> {
    let pre = &tok["pre_tokenizer"];
    let kind = |v: &Json| v["type"].as_str().unwrap_or("").to_string();
    let steps: Vec<Json> = match kind(pre).as_str() {
        "Sequence" => pre["pretokenizers"].as_array().cloned().unwrap_or_default(),
        _ => vec![pre.clone()],
    };
    let names: Vec<String> = steps.iter().map(kind).collect();
    let byte_level_regex = |v: &Json| kind(v) == "ByteLevel" && v["use_regex"] != false;
    let split_regex = |v: &Json| v["pattern"]["Regex"].as_str().unwrap_or("").to_string();
    match names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["ByteLevel"] if byte_level_regex(&steps[0]) => return Ok("gpt-2"),
        ["Digits", "ByteLevel"]
            if steps[0]["individual_digits"] == true && byte_level_regex(&steps[1]) =>
        {
            return Ok("smollm")
        }
        ["Split", "ByteLevel"] if steps[1]["use_regex"] == false => {
            let re = split_regex(&steps[0]);
            if re.contains("\\p{N}{1,3}") && re.starts_with("(?i:'s|'t|'re|'ve|'m|'ll|'d)") {
                return Ok("llama-bpe");
            }
            if re.contains("\\p{N}|") && re.starts_with("(?i:'s|'t|'re|'ve|'m|'ll|'d)") {
                return Ok("qwen2");
            }
        }
        _ => {}
    }
    Err(Error::Export(format!(
        "{}: pre-tokenizer {names:?} is not one llama.cpp is known to reproduce; \
         name it with --tokenizer-pre (e.g. gpt-2, llama-bpe, qwen2, smollm)",
        origin.display()
    )))
}

fn added_tokens(tok: &Json) -> Vec<Added> {
    tok["added_tokens"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some(Added {
                        id: t["id"].as_u64()? as usize,
                        content: t["content"].as_str()?.to_string(),
                        special: t["special"].as_bool().unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `"a b"` or `["a", "b"]` merges as llama.cpp's `"a b"` strings.
fn merges(tok: &Json) -> Vec<String> {
    tok["model"]["merges"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| match x {
                    Json::String(s) => Some(s.clone()),
                    Json::Array(p) if p.len() == 2 => {
                        Some(format!("{} {}", p[0].as_str()?, p[1].as_str()?))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A token id named in `tokenizer_config.json` (`"<s>"` or `{"content": "<s>"}`).
fn special_id(cfg: &Json, key: &str, ids: &HashMap<String, usize>) -> Option<usize> {
    let v = &cfg[key];
    let s = v.as_str().or_else(|| v["content"].as_str())?;
    ids.get(s).copied()
}

/// Everything `tokenizer.*` for the HF folder `dir` of the model `cfg` (special ids fall back to
/// its `config.json` values), with the chat template of `chat_template` (the folder's, already
/// loaded by the caller); `pre_override` replaces the detected pre-tokenizer name.
pub fn vocab_metadata(
    dir: &Path,
    cfg: &Config,
    chat_template: Option<&str>,
    pre_override: Option<&str>,
) -> Result<Vec<(String, Meta)>> {
    let vocab_size = cfg.vocab_size;
    let tok_path = dir.join("tokenizer.json");
    let tok = read(&tok_path)?;
    let cfg_path = dir.join("tokenizer_config.json");
    let tcfg = if cfg_path.exists() {
        read(&cfg_path)?
    } else {
        Json::Null
    };
    let kind = vocab_kind(&tok, &tok_path)?;
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    if let Some(v) = tok["model"]["vocab"].as_object() {
        for (t, id) in v {
            let id = id.as_u64().unwrap_or(u64::MAX) as usize;
            if id >= vocab_size {
                return Err(Error::Export(format!(
                    "{}: token {t:?} has id {id}, beyond the model's vocab_size {vocab_size}",
                    tok_path.display()
                )));
            }
            tokens[id] = Some(t.clone());
            ids.insert(t.clone(), id);
        }
    }
    let added = added_tokens(&tok);
    for a in &added {
        if a.id < vocab_size {
            tokens[a.id] = Some(a.content.clone());
            ids.insert(a.content.clone(), a.id);
        }
    }
    let unk = tok["model"]["unk_token"]
        .as_str()
        .and_then(|u| ids.get(u).copied());
    let mut types = vec![token_type::NORMAL; vocab_size];
    for (i, t) in tokens.iter().enumerate() {
        if t.is_none() {
            types[i] = token_type::UNUSED;
        } else if kind == VocabKind::SentencePiece {
            let s = t.as_deref().unwrap_or("");
            if s.len() == 6 && s.starts_with("<0x") && s.ends_with('>') {
                types[i] = token_type::BYTE;
            }
        }
    }
    for a in &added {
        // Byte-fallback pieces stay BYTE even when tokenizer.json lists them as added tokens
        // (llama.cpp would otherwise decode a generated byte as nothing).
        if a.id < vocab_size && types[a.id] != token_type::BYTE {
            types[a.id] = if a.special {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
        }
    }
    if let Some(u) = unk {
        types[u] = token_type::UNKNOWN;
    }
    let merges = merges(&tok);
    let token_strings: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| t.clone().unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    let mut out: Vec<(String, Meta)> = Vec::new();
    match kind {
        VocabKind::Gpt2 => {
            let pre = match pre_override {
                Some(p) => p.to_string(),
                None => gpt2_pre(&tok, &tok_path)?.to_string(),
            };
            out.push(("tokenizer.ggml.model".into(), Meta::Str("gpt2".into())));
            out.push(("tokenizer.ggml.pre".into(), Meta::Str(pre)));
            out.push((
                "tokenizer.ggml.tokens".into(),
                Meta::StrArray(token_strings),
            ));
            out.push(("tokenizer.ggml.token_type".into(), Meta::I32Array(types)));
            out.push(("tokenizer.ggml.merges".into(), Meta::StrArray(merges)));
        }
        VocabKind::SentencePiece => {
            // Merge priority as a score: the token made by merge r scores −r; others 0.
            let mut scores = vec![0f32; vocab_size];
            for (r, m) in merges.iter().enumerate() {
                let joined: String = m.split(' ').collect();
                if let Some(&id) = ids.get(&joined) {
                    if scores[id] == 0.0 {
                        scores[id] = -(r as f32) - 1.0;
                    }
                }
            }
            for a in &added {
                if a.id < vocab_size {
                    scores[a.id] = -1000.0;
                }
            }
            let prefix = mentions(&tok["normalizer"], "Prepend")
                || (mentions(&tok["pre_tokenizer"], "Metaspace")
                    && !mentions(&tok["pre_tokenizer"], "\"never\""));
            out.push(("tokenizer.ggml.model".into(), Meta::Str("llama".into())));
            out.push((
                "tokenizer.ggml.pre".into(),
                Meta::Str(pre_override.unwrap_or("default").into()),
            ));
            out.push((
                "tokenizer.ggml.tokens".into(),
                Meta::StrArray(token_strings),
            ));
            out.push(("tokenizer.ggml.scores".into(), Meta::F32Array(scores)));
            out.push(("tokenizer.ggml.token_type".into(), Meta::I32Array(types)));
            out.push(("tokenizer.ggml.add_space_prefix".into(), Meta::Bool(prefix)));
        }
    }
    // Special ids: tokenizer_config.json first, then config.json.
    for (key, cfg_key, from_model) in [
        ("bos_token_id", "bos_token", cfg.bos_token_id),
        (
            "eos_token_id",
            "eos_token",
            cfg.eos_token_ids.first().copied(),
        ),
        ("unknown_token_id", "unk_token", unk.map(|u| u as u32)),
        ("padding_token_id", "pad_token", cfg.pad_token_id),
    ] {
        let id = special_id(&tcfg, cfg_key, &ids).or(from_model.map(|x| x as usize));
        if let Some(id) = id.filter(|&i| i < vocab_size) {
            out.push((format!("tokenizer.ggml.{key}"), Meta::U32(id as u32)));
        }
    }
    for key in ["add_bos_token", "add_eos_token"] {
        if let Some(b) = tcfg[key].as_bool() {
            out.push((format!("tokenizer.ggml.{key}"), Meta::Bool(b)));
        }
    }
    if let Some(ct) = chat_template {
        out.push(("tokenizer.chat_template".into(), Meta::Str(ct.to_string())));
    }
    Ok(out)
}
