//! The `tokenizers::Tokenizer` that reproduces llama.cpp's tokenizer for a [`Vocab`].

use std::collections::HashMap;

use serde_json::{json, Value as Json};
use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    Tokenizer,
};

use super::{attr, Kind, TokenizerError, Vocab};

/// At most this many unused tokens get a decoder rule that renders them as nothing.
const MAX_SILENT: usize = 4096;

fn build_err(what: &str, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(format!("{what}: {e}"))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, v: Json) -> Result<T, TokenizerError> {
    serde_json::from_value(v).map_err(|e| build_err(what, e))
}

/// SentencePiece's merge order as BPE merges: every split of a token into two vocabulary
/// entries, ranked by the token's score (highest first; llama.cpp merges the best-scoring
/// adjacent pair, the leftmost among equals).
fn spm_merges(v: &Vocab, ids: &HashMap<&str, u32>) -> Vec<(String, String)> {
    let mut found: Vec<(f32, u32, usize)> = Vec::new();
    for (id, t) in v.tokens.iter().enumerate() {
        for (k, _) in t.char_indices().skip(1) {
            if ids.contains_key(&t[..k]) && ids.contains_key(&t[k..]) {
                found.push((v.scores[id], id as u32, k));
            }
        }
    }
    found.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
    });
    found
        .into_iter()
        .map(|(_, id, k)| {
            let t = &v.tokens[id as usize];
            (t[..k].to_string(), t[k..].to_string())
        })
        .collect()
}

/// Escapes `s` for an Oniguruma regex.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if c.is_ascii_punctuation() || c == ' ' {
            out.push('\\');
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// Assembles the tokenizer.
pub(crate) fn build(v: &Vocab) -> Result<Tokenizer, TokenizerError> {
    let ids: HashMap<&str, u32> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let (merges, dropped) = match v.kind {
        Kind::Spm => (spm_merges(v, &ids), 0),
        Kind::Bpe => {
            let mut dropped = 0usize;
            let kept = v
                .merges
                .iter()
                .filter(|(a, b)| {
                    let ok = ids.contains_key(a.as_str())
                        && ids.contains_key(b.as_str())
                        && ids.contains_key(format!("{a}{b}").as_str());
                    dropped += usize::from(!ok);
                    ok
                })
                .cloned()
                .collect();
            (kept, dropped)
        }
    };
    if dropped > 0 {
        tracing::warn!(
            "GGUF `tokenizer.ggml.merges`: {dropped} merges name pieces outside the vocabulary; \
             ignored"
        );
    }
    let vocab: BpeVocab = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(v.pre.ignore_merges && v.kind == Kind::Bpe);
    if v.kind == Kind::Spm {
        model = model.byte_fallback(true);
        if let Some(u) = v.unk {
            model = model.unk_token(v.tokens[u as usize].clone());
        }
    }
    let model = model.build().map_err(|e| build_err("BPE model", e))?;
    let mut tok = Tokenizer::new(model);

    // Text pieces between special tokens.
    match v.kind {
        Kind::Spm => {
            let mut steps = vec![];
            if v.add_space_prefix {
                steps.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
            }
            steps.push(
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            );
            let n: NormalizerWrapper = from_json(
                "normalizer",
                json!({"type": "Sequence", "normalizers": steps}),
            )?;
            tok.with_normalizer(Some(n));
        }
        Kind::Bpe => {
            let mut steps: Vec<Json> = v
                .pre
                .regexes
                .iter()
                .map(|r| {
                    json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated",
                           "invert": false})
                })
                .collect();
            steps.push(json!({"type": "ByteLevel", "add_prefix_space": false,
                              "trim_offsets": false, "use_regex": false}));
            let p: PreTokenizerWrapper = from_json(
                "pre-tokenizer",
                json!({"type": "Sequence", "pretokenizers": steps}),
            )?;
            tok.with_pre_tokenizer(Some(p));
        }
    }

    // Decoding: llama.cpp's token_to_piece. Unused / undefined tokens render as nothing.
    let silent: Vec<&str> = v
        .attrs
        .iter()
        .enumerate()
        .filter(|(_, &a)| {
            a & (attr::NORMAL | attr::CONTROL | attr::UNKNOWN | attr::USER_DEFINED | attr::BYTE)
                == 0
        })
        .map(|(i, _)| v.tokens[i].as_str())
        .collect();
    let mut steps = vec![];
    if !silent.is_empty() && silent.len() <= MAX_SILENT {
        let alt: Vec<String> = silent.iter().map(|t| escape(t)).collect();
        let re = format!("\\A(?:{})\\z", alt.join("|"));
        steps.push(json!({"type": "Replace", "pattern": {"Regex": re}, "content": ""}));
    } else if !silent.is_empty() {
        tracing::warn!(
            "{} unused tokens: decoding shows their text (llama.cpp shows nothing)",
            silent.len()
        );
    }
    match v.kind {
        Kind::Spm => {
            steps.push(
                json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            );
            steps.push(json!({"type": "ByteFallback"}));
            steps.push(json!({"type": "Fuse"}));
        }
        Kind::Bpe => steps.push(json!({"type": "ByteLevel", "add_prefix_space": false,
                                       "trim_offsets": false, "use_regex": false})),
    }
    let d: DecoderWrapper = from_json("decoder", json!({"type": "Sequence", "decoders": steps}))?;
    tok.with_decoder(Some(d));

    // BOS / EOS as llama.cpp adds them with add_special.
    let bos = v.bos.filter(|_| v.add_bos);
    let eos = v.eos.filter(|_| v.add_eos);
    if bos.is_some() || eos.is_some() {
        let mut special = serde_json::Map::new();
        let mut piece = |id: u32| {
            let t = &v.tokens[id as usize];
            special.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
            json!({"SpecialToken": {"id": t, "type_id": 0}})
        };
        let mut single = vec![];
        single.extend(bos.map(&mut piece));
        single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        single.extend(eos.map(&mut piece));
        let mut pair = single.clone();
        pair.extend(bos.map(&mut piece));
        pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
        pair.extend(eos.map(&mut piece));
        let p: PostProcessorWrapper = from_json(
            "post-processor",
            json!({"type": "TemplateProcessing", "single": single, "pair": pair,
                   "special_tokens": special}),
        )?;
        tok.with_post_processor(Some(p));
    }

    // Control, unknown and user-defined tokens are matched in the raw text first.
    let added: Vec<AddedToken> = v
        .attrs
        .iter()
        .enumerate()
        .filter(|(_, &a)| a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
        .map(|(i, &a)| {
            AddedToken::from(
                v.tokens[i].clone(),
                a & (attr::CONTROL | attr::UNKNOWN) != 0,
            )
            .normalized(false)
            .lstrip(a & attr::LSTRIP != 0)
            .rstrip(a & attr::RSTRIP != 0)
        })
        .collect();
    tok.add_special_tokens(&added);
    Ok(tok)
}
