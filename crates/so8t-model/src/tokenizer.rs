//! A model folder's tokenizer: `tokenizer.json` through the `tokenizers` crate, special tokens
//! and the chat template from `tokenizer_config.json` / `chat_template.jinja`, stop tokens from
//! `generation_config.json`.

use std::path::Path;

use serde_json::Value;

use crate::chat_template::ChatTemplate;
use crate::error::{read_json, Error, Result};

/// Tokenizer plus the special tokens and chat template a model folder declares.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// BOS token text, if declared.
    pub bos_token: Option<String>,
    /// EOS token text, if declared.
    pub eos_token: Option<String>,
    /// Token ids that end generation (EOS plus generation_config's and the template's end token).
    pub stop_token_ids: Vec<u32>,
    /// The chat template, if the folder has one.
    pub chat_template: Option<ChatTemplate>,
}

/// `"<s>"` or `{"content": "<s>", ...}` (an AddedToken) → `"<s>"`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

impl TextTokenizer {
    /// Loads the tokenizer files of an HF model folder. `tokenizer.json` is required; the
    /// others are optional.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::MissingFile {
                path,
                what: "tokenizer (so8t reads the HF fast-tokenizer format)".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = if cfg_path.exists() {
            read_json(&cfg_path)?
        } else {
            Value::Null
        };
        let bos_token = token_text(cfg.get("bos_token"));
        let eos_token = token_text(cfg.get("eos_token"));
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.exists() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?)
        } else {
            match cfg.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .or_else(|| list.first())
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                _ => None,
            }
        };
        let chat_template = source
            .map(|s| {
                ChatTemplate::new(
                    &s,
                    bos_token.as_deref().unwrap_or(""),
                    eos_token.as_deref().unwrap_or(""),
                )
                .map_err(|e| Error::Template(format!("{}: {e}", cfg_path.display())))
            })
            .transpose()?;
        let mut tok = Self {
            inner,
            bos_token,
            eos_token,
            stop_token_ids: vec![],
            chat_template,
        };
        let mut stops = Vec::new();
        if let Some(e) = tok.eos_token.as_deref().and_then(|e| tok.token_id(e)) {
            stops.push(e);
        }
        let gen = dir.join("generation_config.json");
        if gen.exists() {
            let g: Value = read_json(&gen)?;
            match g.get("eos_token_id") {
                Some(Value::Number(n)) => stops.extend(n.as_u64().map(|x| x as u32)),
                Some(Value::Array(a)) => {
                    stops.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32))
                }
                _ => {}
            }
        }
        // Chat models end a turn with a dedicated token; stop there too.
        for t in ["<|end|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>"] {
            if let Some(id) = tok.token_id(t) {
                stops.push(id);
            }
        }
        stops.sort_unstable();
        stops.dedup();
        tok.stop_token_ids = stops;
        Ok(tok)
    }

    /// Wraps a `tokenizers::Tokenizer` (no chat template, no stop tokens).
    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Self {
        Self {
            inner,
            bos_token: None,
            eos_token: None,
            stop_token_ids: vec![],
            chat_template: None,
        }
    }

    /// The underlying tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`; `add_special_tokens` runs the post-processor (e.g. adds BOS) as
    /// `tokenizer(text)` does in transformers.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Tokenizer(format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; `skip_special_tokens` drops special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer(format!("decode: {e}")))
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Renders a chat with the folder's template (error if it has none).
    pub fn apply_chat_template<M: serde::Serialize>(
        &self,
        messages: &[M],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let t = self.chat_template.as_ref().ok_or_else(|| {
            Error::Template("the model folder has no chat template (tokenizer_config.json `chat_template` or chat_template.jinja)".into())
        })?;
        t.render(messages, add_generation_prompt)
    }
}
