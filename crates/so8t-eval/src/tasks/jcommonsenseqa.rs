//! JCommonsenseQA (JGLUE) multiple choice: `question`, `choice0` … `choice4`, `label`. The prompt
//! follows the JP LM Evaluation Harness's JCommonsenseQA template (`質問` / `選択肢` / `回答`);
//! each choice text is scored right after `回答:` (no delimiter, as Japanese has no word spaces),
//! `acc` and length-normalized `acc_norm` as for HellaSwag.

use std::path::Path;

use super::{read_jsonl, Item, Query, Rec, TaskError};

/// The prompt for one question.
pub(super) fn prompt(question: &str, choices: &[String]) -> String {
    let listed: Vec<String> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{i}.{c}"))
        .collect();
    format!(
        "質問:{}\n選択肢:{}\n回答:",
        question.trim(),
        listed.join(",")
    )
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
            let mut choices = Vec::new();
            while map.contains_key(&format!("choice{}", choices.len())) {
                choices.push(r.str(&format!("choice{}", choices.len()))?.to_string());
            }
            if choices.len() < 2 {
                return Err(r.err("fields `choice0`, `choice1`, …: at least two are needed".into()));
            }
            let gold = r.index("label", choices.len())?;
            let id = match map.get("q_id") {
                Some(serde_json::Value::Number(n)) => n.to_string(),
                Some(serde_json::Value::String(s)) => s.clone(),
                _ => r.id(),
            };
            Ok(Item {
                id,
                query: Query::Choice {
                    context: prompt(question, &choices),
                    norm_lens: choices.iter().map(|c| c.chars().count()).collect(),
                    continuations: choices,
                    gold,
                },
            })
        })
        .collect()
}
