//! Tokenizers from GGUF metadata: a GGUF file alone (no HF folder) gives a
//! [`so8t_model::TextTokenizer`] that tokenizes and detokenizes like llama.cpp.
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE with the vocabulary's merges, split by the
//!   regexes llama.cpp uses for the `tokenizer.ggml.pre` name;
//! - `"llama"`: SentencePiece-style (`▁` for spaces, a prepended `▁` per text piece when
//!   `add_space_prefix`, `<0xNN>` byte fallback), its score-greedy merging expressed as BPE
//!   merges ranked by the score of the token they make.
//!
//! Control, user-defined and unknown tokens are matched in the text before anything else (as
//! llama.cpp's `tokenize(..., parse_special = true)`), `encode(text, true)` adds BOS (and EOS)
//! exactly when llama.cpp would, `decode(ids, false)` is llama.cpp's `token_to_piece(special =
//! true)` of each id concatenated and `decode(ids, true)` the same with `special = false`
//! (control and unknown tokens dropped). Stop ids are llama.cpp's end-of-generation set.

mod build;
mod pre;

use so8t_gguf::{GgufFile, Value, ValueType};
use so8t_model::{ChatTemplate, TextTokenizer};

/// Why a GGUF file's metadata does not describe a tokenizer so8t can build.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required key is absent.
    #[error("GGUF metadata key `{key}` is missing (expected {expected})")]
    Missing {
        /// The metadata key.
        key: String,
        /// What the key should hold.
        expected: &'static str,
    },
    /// A key holds a value of the wrong type.
    #[error("GGUF metadata key `{key}` holds {found}, expected {expected}")]
    WrongType {
        /// The metadata key.
        key: String,
        /// What the key should hold.
        expected: &'static str,
        /// What it holds.
        found: String,
    },
    /// A per-token array is shorter than `tokenizer.ggml.tokens`.
    #[error(
        "GGUF metadata key `{key}` has {found} entries, expected at least {expected} \
         (one per token of `tokenizer.ggml.tokens`)"
    )]
    Length {
        /// The metadata key.
        key: String,
        /// The number of tokens.
        expected: usize,
        /// The number of entries.
        found: usize,
    },
    /// `tokenizer.ggml.model` names a tokenizer so8t does not build.
    #[error(
        "GGUF metadata key `tokenizer.ggml.model` is {0:?}, expected \"gpt2\" (byte-level BPE) \
         or \"llama\" (SentencePiece)"
    )]
    UnsupportedModel(String),
    /// A key's value is unusable for another reason.
    #[error("GGUF metadata key `{key}`: {msg}")]
    Invalid {
        /// The metadata key.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// The `tokenizers` crate refused the assembled tokenizer.
    #[error("building the tokenizer from GGUF metadata: {0}")]
    Build(String),
}

/// Key names.
const MODEL: &str = "tokenizer.ggml.model";
const PRE: &str = "tokenizer.ggml.pre";
const TOKENS: &str = "tokenizer.ggml.tokens";
const TYPES: &str = "tokenizer.ggml.token_type";
const SCORES: &str = "tokenizer.ggml.scores";
const MERGES: &str = "tokenizer.ggml.merges";
const TEMPLATE: &str = "tokenizer.chat_template";

/// llama.cpp's token attributes (`llama_token_attr`).
pub(crate) mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

/// Which of llama.cpp's tokenizers the file asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `gpt2`: byte-level BPE.
    Bpe,
    /// `llama`: SentencePiece.
    Spm,
}

/// The vocabulary as llama.cpp holds it after loading.
pub(crate) struct Vocab {
    pub kind: Kind,
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u32>,
    /// `(left, right)` merges in rank order (BPE only).
    pub merges: Vec<(String, String)>,
    pub pre: pre::PreSpec,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub eog: Vec<u32>,
}

/// Builds the tokenizer a GGUF file describes: `tokenizer.ggml.model` = `"gpt2"` (byte-level
/// BPE: tokens, merges, the `tokenizer.ggml.pre` pre-tokenizer) or `"llama"` (SentencePiece:
/// tokens, scores, token types, `<0xNN>` byte fallback), the BOS / EOS / UNK / EOT ids,
/// `tokenizer.ggml.add_bos_token` / `add_eos_token` and `tokenizer.chat_template`.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<TextTokenizer, TokenizerError> {
    let vocab = read_vocab(file)?;
    let inner = build::build(&vocab)?;
    let mut tok = TextTokenizer::from_tokenizer(inner);
    let text = |id: Option<u32>| id.map(|i| vocab.tokens[i as usize].clone());
    tok.bos_token = text(vocab.bos);
    tok.eos_token = text(vocab.eos);
    tok.stop_token_ids = vocab.eog.clone();
    if let Some(v) = file.metadata(TEMPLATE) {
        let src = v.as_str().ok_or_else(|| wrong(TEMPLATE, "a string", v))?;
        let t = ChatTemplate::new(
            src,
            tok.bos_token.as_deref().unwrap_or(""),
            tok.eos_token.as_deref().unwrap_or(""),
        )
        .map_err(|e| TokenizerError::Invalid {
            key: TEMPLATE.into(),
            msg: e.to_string(),
        })?;
        tok.chat_template = Some(t);
    }
    Ok(tok)
}

fn describe(v: &Value) -> String {
    match v {
        Value::Array(t, items) => format!("an array of {} {}", items.len(), t.name()),
        v => format!("a {}", v.value_type().name()),
    }
}

fn wrong(key: &str, expected: &'static str, v: &Value) -> TokenizerError {
    TokenizerError::WrongType {
        key: key.into(),
        expected,
        found: describe(v),
    }
}

fn missing(key: &str, expected: &'static str) -> TokenizerError {
    TokenizerError::Missing {
        key: key.into(),
        expected,
    }
}

fn strings<'a>(file: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>, TokenizerError> {
    let Some(v) = file.metadata(key) else {
        return Ok(None);
    };
    match v {
        Value::Array(ValueType::String, _) => Ok(v.as_strings()),
        Value::Array(_, items) if items.is_empty() => Ok(Some(vec![])),
        _ => Err(wrong(key, "an array of strings", v)),
    }
}

/// A per-token numeric array of at least `n` entries.
fn numbers<T>(
    file: &GgufFile,
    key: &str,
    n: usize,
    expected: &'static str,
    conv: impl Fn(&Value) -> Option<T>,
) -> Result<Option<Vec<T>>, TokenizerError> {
    let Some(v) = file.metadata(key) else {
        return Ok(None);
    };
    let items = v.as_array().ok_or_else(|| wrong(key, expected, v))?;
    let out: Vec<T> = items
        .iter()
        .map(&conv)
        .collect::<Option<_>>()
        .ok_or_else(|| wrong(key, expected, v))?;
    if out.len() < n {
        return Err(TokenizerError::Length {
            key: key.into(),
            expected: n,
            found: out.len(),
        });
    }
    Ok(Some(out))
}

fn flag(file: &GgufFile, key: &str) -> Result<Option<bool>, TokenizerError> {
    match file.metadata(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| wrong(key, "a bool", v)),
    }
}

/// A special token id: the key's value when in range (a warning otherwise), else `default`
/// when in range.
fn special_id(
    file: &GgufFile,
    name: &str,
    default: Option<u32>,
    n: usize,
) -> Result<Option<u32>, TokenizerError> {
    let key = format!("tokenizer.ggml.{name}");
    let default = default.filter(|&d| (d as usize) < n);
    let Some(v) = file.metadata(&key) else {
        return Ok(default);
    };
    let id = v
        .as_u64()
        .ok_or_else(|| wrong(&key, "an unsigned integer token id", v))?;
    if id as usize >= n {
        tracing::warn!("GGUF `{key}` = {id} is beyond the {n} tokens; using {default:?}");
        return Ok(default);
    }
    Ok(Some(id as u32))
}

/// Token texts llama.cpp treats as end of generation (and forces to control type).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Texts llama.cpp recognises as EOT (when `eot_token_id` is absent) and FIM tokens: forced to
/// control type; the FIM pad / repo / separator tokens also end generation.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const FIM_CONTROL_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

fn read_vocab(file: &GgufFile) -> Result<Vocab, TokenizerError> {
    let model_v = file
        .metadata(MODEL)
        .ok_or_else(|| missing(MODEL, "the tokenizer kind, \"gpt2\" or \"llama\""))?;
    let model = model_v
        .as_str()
        .ok_or_else(|| wrong(MODEL, "a string (\"gpt2\" or \"llama\")", model_v))?;
    let kind = match model {
        "gpt2" => Kind::Bpe,
        "llama" => Kind::Spm,
        other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
    };
    let raw = strings(file, TOKENS)?.ok_or_else(|| missing(TOKENS, "the token texts"))?;
    let n = raw.len();
    if n == 0 {
        return Err(TokenizerError::Invalid {
            key: TOKENS.into(),
            msg: "the vocabulary is empty".into(),
        });
    }
    let mut tokens = Vec::with_capacity(n);
    let mut seen = std::collections::HashMap::with_capacity(n);
    for (i, t) in raw.into_iter().enumerate() {
        let t = if t.is_empty() {
            format!("[EMPTY_{i}]")
        } else {
            t.to_string()
        };
        if let Some(j) = seen.insert(t.clone(), i) {
            return Err(TokenizerError::Invalid {
                key: TOKENS.into(),
                msg: format!("token {t:?} appears twice (ids {j} and {i})"),
            });
        }
        tokens.push(t);
    }
    let scores = numbers(file, SCORES, n, "an array of f32 (or i32) scores", |v| {
        v.as_f32().or_else(|| v.as_i32().map(|x| x as f32))
    })?;
    if kind == Kind::Spm && scores.is_none() {
        tracing::warn!("GGUF has no `{SCORES}`: all SentencePiece merges tie");
    }
    let scores = scores.unwrap_or_else(|| vec![0.0; n]);
    let types = numbers(file, TYPES, n, "an array of i32 token types", Value::as_i32)?;
    let mut attrs: Vec<u32> = match types {
        None => vec![attr::NORMAL; n],
        Some(t) => t[..n]
            .iter()
            .map(|&t| match t {
                1 => attr::NORMAL,
                2 => attr::UNKNOWN,
                3 => attr::CONTROL,
                4 => attr::USER_DEFINED,
                5 => attr::UNUSED,
                6 => attr::BYTE,
                _ => 0,
            })
            .collect(),
    };

    let (mut merges, pre, mut add_bos, defaults) = match kind {
        Kind::Bpe => {
            let m = strings(file, MERGES)?
                .ok_or_else(|| missing(MERGES, "the BPE merges of a \"gpt2\" vocabulary"))?;
            let merges = m
                .into_iter()
                .filter_map(|w| {
                    let pos = w.char_indices().skip(1).find(|&(_, c)| c == ' ')?.0;
                    Some((w[..pos].to_string(), w[pos + 1..].to_string()))
                })
                .collect::<Vec<_>>();
            let pre = match file.metadata(PRE) {
                None => {
                    tracing::warn!("GGUF has no `{PRE}`: using llama.cpp's default pre-tokenizer");
                    pre::default_spec()
                }
                Some(v) => {
                    let name = v.as_str().ok_or_else(|| wrong(PRE, "a string", v))?;
                    pre::pre_spec(name).unwrap_or_else(|| {
                        tracing::warn!(
                            "GGUF `{PRE}` = {name:?} is not a pre-tokenizer so8t knows; \
                             using llama.cpp's default regexes (tokens may differ)"
                        );
                        pre::default_spec()
                    })
                }
            };
            let add_bos = pre.add_bos;
            (merges, pre, add_bos, [Some(11), Some(11), None])
        }
        Kind::Spm => (
            vec![],
            pre::default_spec(),
            true,
            [Some(1), Some(2), Some(0)],
        ),
    };
    merges.shrink_to_fit();
    let bos = special_id(file, "bos_token_id", defaults[0], n)?;
    let eos = special_id(file, "eos_token_id", defaults[1], n)?;
    let unk = special_id(file, "unknown_token_id", defaults[2], n)?;
    let eot = special_id(file, "eot_token_id", None, n)?;
    let eom = special_id(file, "eom_token_id", None, n)?;
    let fim_pad = special_id(file, "fim_pad_token_id", None, n)?;
    let fim_rep = special_id(file, "fim_rep_token_id", None, n)?;
    let fim_sep = special_id(file, "fim_sep_token_id", None, n)?;
    if let Some(b) = flag(file, "tokenizer.ggml.add_bos_token")? {
        add_bos = b;
    }
    let add_eos = flag(file, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let add_space_prefix = match kind {
        Kind::Spm => flag(file, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true),
        Kind::Bpe => false,
    };

    // Texts llama.cpp recognises: force control type, collect end-of-generation ids.
    let id_of = |t: &str| seen.get(t).map(|&i| i as u32);
    let mut eog: Vec<u32> = Vec::new();
    let by_text = |list: &[&str]| list.iter().filter_map(|t| id_of(t)).collect::<Vec<_>>();
    let mut force = by_text(FIM_CONTROL_TEXTS);
    if eot.is_none() {
        force.extend(by_text(EOT_TEXTS));
    }
    if eom.is_none() {
        force.extend(id_of("<|eom_id|>"));
    }
    for (given, texts) in [
        (fim_pad, FIM_PAD_TEXTS),
        (fim_rep, FIM_REP_TEXTS),
        (fim_sep, FIM_SEP_TEXTS),
    ] {
        match given {
            Some(id) => eog.push(id),
            None => {
                let found = by_text(texts);
                force.extend(&found);
                eog.extend(found);
            }
        }
    }
    for &i in &force {
        attrs[i as usize] |= attr::CONTROL;
    }
    for (i, a) in attrs.iter_mut().enumerate() {
        if *a & attr::CONTROL != 0 && tokens[i].contains("unused") {
            *a |= attr::UNUSED;
        }
    }
    for id in by_text(EOG_TEXTS) {
        eog.push(id);
        attrs[id as usize] |= attr::CONTROL;
    }
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(i) = id_of(t) {
            attrs[i as usize] = attr::USER_DEFINED;
        }
    }
    eog.extend(eos);
    eog.extend(eot);
    eog.extend(eom);
    eog.sort_unstable();
    eog.dedup();
    let has = |eog: &[u32], t: &str| eog.iter().any(|&i| tokens[i as usize] == t);
    let call = has(&eog, "<|call|>") || has(&eog, "<|calls|>");
    if call && (has(&eog, "<|return|>") || has(&eog, "<|flush|>")) {
        if let Some(end) = id_of("<|end|>").filter(|e| eog.contains(e)) {
            eog.retain(|&i| i != end);
            attrs[end as usize] = attr::USER_DEFINED;
        }
    }
    if has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>") {
        if let Some(s) = id_of("</s>").filter(|e| eog.contains(e)) {
            eog.retain(|&i| i != s);
            attrs[s as usize] = attr::NORMAL;
        }
    }
    // Phi-3: special tokens swallow the whitespace after them.
    let name = file
        .metadata("general.name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_lowercase();
    if name.contains("phi-3") || name.contains("phi3") {
        for (i, a) in attrs.iter_mut().enumerate() {
            let special = *a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0;
            if (special || tokens[i] == "</s>")
                && !["<unk>", "<s>", "<|endoftext|>"].contains(&tokens[i].as_str())
            {
                *a |= attr::RSTRIP;
            }
        }
    }
    Ok(Vocab {
        kind,
        tokens,
        scores,
        attrs,
        merges,
        pre,
        bos,
        eos,
        unk,
        add_bos,
        add_eos,
        add_space_prefix,
        eog,
    })
}
