//! GSM8K as lm-eval's `gsm8k` task runs it: `Question: …\nAnswer:` after the few-shot examples,
//! greedy generation until `Question:`, then the strict (`#### N`) and flexible (last number)
//! extractions compared with the reference by exact match after lm-eval's regexes.

use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;

use super::{read_jsonl, Gold, Item, Prompt, Query, Rec, TaskError};

/// What lm-eval's regex filter returns when nothing matches.
pub const INVALID: &str = "[invalid]";

/// lm-eval's `generate_until` defaults for GSM8K.
const UNTIL: [&str; 3] = ["Question:", "</s>", "<|im_end|>"];
const MAX_GEN_TOKS: usize = 256;

fn re(cell: &'static OnceLock<Regex>, pat: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pat).expect("valid regex"))
}

/// The strict-match filter: the first `#### N`.
pub fn gsm8k_extract_strict(output: &str) -> String {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"#### (\-?[0-9\.\,]+)")
        .captures(output)
        .and_then(|c| c.get(1))
        .map_or_else(|| INVALID.to_string(), |m| m.as_str().to_string())
}

/// The flexible-extract filter: the last number-like match.
pub fn gsm8k_extract_flexible(output: &str) -> String {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
        .captures_iter(output)
        .last()
        .and_then(|c| c.get(1).or_else(|| c.get(2)))
        .map_or_else(|| INVALID.to_string(), |m| m.as_str().to_string())
}

/// lm-eval's `exact_match` for GSM8K: drop `,`, `$`, everything up to `#### ` and a final `.`
/// from both sides, compare case-insensitively.
pub fn gsm8k_exact_match(prediction: &str, reference: &str) -> bool {
    static R: [OnceLock<Regex>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let pats = [",", r"\$", r"(?s).*#### ", r"\.$"];
    let clean = |s: &str| {
        let mut s = s.to_string();
        for (cell, p) in R.iter().zip(pats) {
            s = re(cell, p).replace_all(&s, "").into_owned();
        }
        s.to_lowercase()
    };
    clean(prediction) == clean(reference)
}

fn question(q: &str) -> String {
    format!("Question: {q}\nAnswer:")
}

/// The first `n` few-shot examples as `Question: …\nAnswer: …` blocks.
pub(super) fn load_fewshot(path: &Path, n: usize) -> Result<Vec<String>, TaskError> {
    read_jsonl(path)?
        .iter()
        .take(n)
        .map(|(line, map)| {
            let r = Rec {
                path,
                line: *line,
                map,
            };
            Ok(format!(
                "{} {}",
                question(r.str("question")?),
                r.str("answer")?
            ))
        })
        .collect()
}

pub(super) fn load(path: &Path, shots: &[String]) -> Result<Vec<Item>, TaskError> {
    read_jsonl(path)?
        .iter()
        .map(|(line, map)| {
            let r = Rec {
                path,
                line: *line,
                map,
            };
            let answer = r.str("answer")?;
            if !answer.contains("####") {
                return Err(r.err("field `answer` must end in `#### N` (GSM8K's format)".into()));
            }
            let mut prompt = String::new();
            for s in shots {
                prompt.push_str(s);
                prompt.push_str("\n\n");
            }
            prompt.push_str(&question(r.str("question")?));
            Ok(Item {
                id: r.id(),
                query: Query::Generate {
                    prompt: Prompt::Text(prompt),
                    until: UNTIL.iter().map(|s| s.to_string()).collect(),
                    max_tokens: MAX_GEN_TOKS,
                    gold: Gold::Answer(answer.to_string()),
                },
            })
        })
        .collect()
}
