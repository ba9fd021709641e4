//! The unified record every reader produces, and the field mapping from source columns to it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::label::Label;

/// A four-class record in so8t's unified schema (one JSON object per line in `collect`'s output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Stable id (the source's, or `file:line`).
    pub id: String,
    /// Where it came from (the source's `source` field, or the file name).
    pub source: String,
    /// The request text.
    pub instruction: String,
    /// Extra context for the request (may be empty).
    #[serde(default)]
    pub input: String,
    /// A reference answer (may be empty).
    #[serde(default)]
    pub output: String,
    /// A system prompt (may be empty).
    #[serde(default)]
    pub system: String,
    /// The four-class label.
    pub four_class_label: Label,
    /// `ja` or `en`, guessed from the text.
    pub lang: Lang,
}

/// Language guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Japanese: kana or kanji make up a noticeable share of the letters.
    Ja,
    /// Anything else (treated as English).
    En,
}

impl Lang {
    /// Guesses JA when at least 10 % of the letters are kana or CJK ideographs.
    pub fn guess(text: &str) -> Lang {
        let (mut ja, mut letters) = (0usize, 0usize);
        for c in text.chars() {
            if c.is_alphabetic() {
                letters += 1;
                if matches!(c as u32, 0x3040..=0x30FF | 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xFF66..=0xFF9D)
                {
                    ja += 1;
                }
            }
        }
        if letters > 0 && ja * 10 >= letters {
            Lang::Ja
        } else {
            Lang::En
        }
    }
}

/// Which source fields fill which record field: the first name present wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldMap {
    /// The request text (default: text, instruction, prompt, question).
    pub text: Vec<String>,
    /// Extra context (default: input, context).
    pub input: Vec<String>,
    /// Reference answer (default: output, response, answer).
    pub output: Vec<String>,
    /// System prompt (default: system).
    pub system: Vec<String>,
    /// Label (default: four_class_label, label, class).
    pub label: Vec<String>,
    /// Id (default: id).
    pub id: Vec<String>,
    /// Source (default: source).
    pub source: Vec<String>,
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Default for FieldMap {
    fn default() -> Self {
        Self {
            text: names(&["text", "instruction", "prompt", "question"]),
            input: names(&["input", "context"]),
            output: names(&["output", "response", "answer"]),
            system: names(&["system"]),
            label: names(&["four_class_label", "label", "class"]),
            id: names(&["id"]),
            source: names(&["source"]),
        }
    }
}

impl FieldMap {
    /// Applies `field=name` overrides such as `text=question` (the named field then comes first).
    pub fn with_override(mut self, spec: &str) -> Result<Self, String> {
        let (field, name) = spec.split_once('=').ok_or_else(|| {
            format!("field mapping {spec:?}: expected FIELD=SOURCE_NAME, e.g. text=question")
        })?;
        let slot = match field.trim() {
            "text" | "instruction" => &mut self.text,
            "input" => &mut self.input,
            "output" => &mut self.output,
            "system" => &mut self.system,
            "label" => &mut self.label,
            "id" => &mut self.id,
            "source" => &mut self.source,
            other => {
                return Err(format!(
                    "field mapping {spec:?}: unknown field {other:?}, expected text, input, output, system, label, id or source"
                ))
            }
        };
        slot.insert(0, name.trim().to_string());
        Ok(self)
    }

    /// Applies a mapping file (TOML): each key is a record field (`text`, `input`, `output`,
    /// `system`, `label`, `id`, `source`) and its value a source column name or a list of names
    /// tried in order, before the defaults. `what` names the file in errors.
    ///
    /// ```toml
    /// text = ["question", "prompt_ja"]
    /// label = "safety_class"
    /// ```
    pub fn with_toml(mut self, text: &str, what: &str) -> Result<Self, String> {
        let table: toml::Table = text.parse().map_err(|e| format!("{what}: {e}"))?;
        for (key, value) in &table {
            let names: Vec<String> = match value {
                toml::Value::String(s) => vec![s.clone()],
                toml::Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("{what}: `{key}` must list strings"))?,
                other => {
                    return Err(format!(
                        "{what}: `{key}` must be a column name or a list of names, found {}",
                        other.type_str()
                    ))
                }
            };
            for name in names.iter().rev() {
                self = self
                    .with_override(&format!("{key}={name}"))
                    .map_err(|e| format!("{what}: {e}"))?;
            }
        }
        Ok(self)
    }

    /// Builds a record from a JSON object. `fallback_id` / `fallback_source` are used when the
    /// object has none. Errors say which field is missing or what was expected.
    pub fn to_record(
        &self,
        obj: &Value,
        fallback_id: &str,
        fallback_source: &str,
    ) -> Result<Record, String> {
        let o = obj
            .as_object()
            .ok_or_else(|| format!("expected a JSON object, got {}", kind(obj)))?;
        let get = |keys: &[String]| keys.iter().find_map(|k| o.get(k).filter(|v| !v.is_null()));
        let text = |keys: &[String], what: &str| -> Result<String, String> {
            match get(keys) {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
                Some(v) => Err(format!("field `{what}` is {}, expected text", kind(v))),
            }
        };
        let instruction = text(&self.text, "text")?;
        if instruction.trim().is_empty() {
            return Err(format!(
                "empty text: none of the fields {:?} holds any text",
                self.text
            ));
        }
        let label_v = get(&self.label)
            .ok_or_else(|| format!("no label: none of the fields {:?} is present", self.label))?;
        let four_class_label = Label::from_json(label_v).ok_or_else(|| {
            format!("unknown label {label_v}, expected ALLOW, ESCALATION (or ESCALATE), DENY, REFUSE or an id 0-3")
        })?;
        let input = text(&self.input, "input")?;
        let id = text(&self.id, "id")?;
        let source = text(&self.source, "source")?;
        let lang = Lang::guess(&format!("{instruction} {input}"));
        Ok(Record {
            id: if id.is_empty() {
                fallback_id.to_string()
            } else {
                id
            },
            source: if source.is_empty() {
                fallback_source.to_string()
            } else {
                source
            },
            instruction,
            input,
            output: text(&self.output, "output")?,
            system: text(&self.system, "system")?,
            four_class_label,
            lang,
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_default_and_overridden_fields() {
        let m = FieldMap::default();
        let r = m
            .to_record(
                &json!({"question": "日本の首都は？", "answer": "東京", "label": 0}),
                "f:1",
                "f",
            )
            .unwrap();
        assert_eq!(
            (
                r.instruction.as_str(),
                r.output.as_str(),
                r.four_class_label,
                r.lang
            ),
            ("日本の首都は？", "東京", Label::Allow, Lang::Ja)
        );
        assert_eq!((r.id.as_str(), r.source.as_str()), ("f:1", "f"));
        let m = FieldMap::default()
            .with_override("text=body")
            .unwrap()
            .with_override("label=cls")
            .unwrap();
        let r = m
            .to_record(
                &json!({"body": "Hi", "text": "ignored", "cls": "escalate"}),
                "x",
                "y",
            )
            .unwrap();
        assert_eq!(
            (r.instruction.as_str(), r.four_class_label, r.lang),
            ("Hi", Label::Escalation, Lang::En)
        );
        assert!(FieldMap::default().with_override("nope").is_err());
        assert!(FieldMap::default()
            .with_override("colour=x")
            .unwrap_err()
            .contains("unknown field"));
    }

    #[test]
    fn explains_bad_records() {
        let m = FieldMap::default();
        assert!(m
            .to_record(&json!({"text": "  ", "label": "DENY"}), "", "")
            .unwrap_err()
            .contains("empty text"));
        assert!(m
            .to_record(&json!({"text": "x"}), "", "")
            .unwrap_err()
            .contains("no label"));
        assert!(m
            .to_record(&json!({"text": "x", "label": "BLOCK"}), "", "")
            .unwrap_err()
            .contains("unknown label \"BLOCK\""));
        assert!(m
            .to_record(&json!({"text": ["x"], "label": 1}), "", "")
            .unwrap_err()
            .contains("an array"));
        assert!(m
            .to_record(&json!([1]), "", "")
            .unwrap_err()
            .contains("expected a JSON object"));
    }
}
