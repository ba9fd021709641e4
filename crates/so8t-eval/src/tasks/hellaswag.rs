//! HellaSwag as lm-eval prompts it: `activity_label: ctx` (both cleaned of WikiHow's bracket
//! artifacts), scored on each ending; `acc_norm` divides by the ending's length in characters.

use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;

use super::{read_jsonl, Item, Query, Rec, TaskError};

/// lm-eval's `preprocess`: trim, ` [title]` → `. `, drop `[…]`, `  ` → ` ` (once, like
/// Python's `str.replace` on non-overlapping pairs).
pub fn hellaswag_preprocess(text: &str) -> String {
    static BRACKETS: OnceLock<Regex> = OnceLock::new();
    let re = BRACKETS.get_or_init(|| Regex::new(r"\[.*?\]").expect("valid regex"));
    let t = text.trim().replace(" [title]", ". ");
    re.replace_all(&t, "").replace("  ", " ")
}

/// Python's `str.capitalize`: the first character upper case, the rest lower case.
fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

pub(super) fn load(path: &Path) -> Result<Vec<Item>, TaskError> {
    read_jsonl(path)?
        .iter()
        .map(|(line, map)| {
            let r = Rec {
                path,
                line: *line,
                map,
            };
            let label = r.str("activity_label")?;
            let ctx = match (map.get("ctx_a"), map.get("ctx_b")) {
                (Some(_), Some(_)) => {
                    format!("{} {}", r.str("ctx_a")?, capitalize(r.str("ctx_b")?))
                }
                _ => r.str("ctx")?.to_string(),
            };
            let endings = r.strings("endings")?;
            if endings.len() < 2 {
                return Err(r.err(format!(
                    "field `endings`: expected at least 2, got {}",
                    endings.len()
                )));
            }
            let gold = r.index("label", endings.len())?;
            let choices: Vec<String> = endings.iter().map(|e| hellaswag_preprocess(e)).collect();
            Ok(Item {
                id: r.id(),
                query: Query::Choice {
                    context: hellaswag_preprocess(&format!("{label}: {ctx}")),
                    norm_lens: choices.iter().map(|c| c.chars().count()).collect(),
                    continuations: choices.iter().map(|c| format!(" {c}")).collect(),
                    gold,
                },
            })
        })
        .collect()
}
