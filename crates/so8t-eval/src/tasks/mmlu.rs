//! MMLU-style multiple choice, as lm-eval's `mmlu` tasks prompt it (zero-shot): the subject's
//! description, the question, the lettered choices, `Answer:`, scored on ` A` … ` D`.

use std::path::Path;

use super::{read_jsonl, Item, Query, Rec, TaskError};

const LETTERS: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];

/// lm-eval's MMLU prompt for one question.
pub(super) fn prompt(subject: Option<&str>, question: &str, choices: &[String]) -> String {
    let mut s = String::new();
    if let Some(sub) = subject.filter(|s| !s.is_empty()) {
        s.push_str(&format!(
            "The following are multiple choice questions (with answers) about {}.\n\n",
            sub.replace('_', " ")
        ));
    }
    s.push_str(question.trim());
    for (l, c) in LETTERS.iter().zip(choices) {
        s.push_str(&format!("\n{l}. {c}"));
    }
    s.push_str("\nAnswer:");
    s
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
            let question = r.str("question")?;
            let choices = r.strings("choices")?;
            if choices.len() < 2 || choices.len() > LETTERS.len() {
                return Err(r.err(format!(
                    "field `choices`: expected 2 to {} choices, got {}",
                    LETTERS.len(),
                    choices.len()
                )));
            }
            let gold = r.index("answer", choices.len())?;
            let subject = map.get("subject").and_then(|v| v.as_str());
            Ok(Item {
                id: r.id(),
                query: Query::Choice {
                    context: prompt(subject, question, &choices),
                    continuations: LETTERS[..choices.len()]
                        .iter()
                        .map(|l| format!(" {l}"))
                        .collect(),
                    norm_lens: vec![1; choices.len()],
                    gold,
                },
            })
        })
        .collect()
}
