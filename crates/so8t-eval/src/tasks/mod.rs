//! Benchmark tasks read from local JSONL files in the public datasets' own shapes, turned into
//! the requests lm-eval would send: log-likelihood of choices (MMLU, HellaSwag) or generation
//! until a stop string (GSM8K, the four-class task).

mod four_class;
mod gsm8k;
mod hellaswag;
mod jcommonsenseqa;
mod mmlu;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

pub use four_class::{four_class_system_prompt, parse_four_class};
pub use gsm8k::{gsm8k_exact_match, gsm8k_extract_flexible, gsm8k_extract_strict, INVALID};
pub use hellaswag::hellaswag_preprocess;

/// Which benchmark a task file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskKind {
    /// MMLU-style multiple choice: `question`, `choices`, `answer` (index), optional `subject`.
    Mmlu,
    /// HellaSwag: `activity_label`, `ctx` (or `ctx_a` + `ctx_b`), `endings`, `label`.
    Hellaswag,
    /// GSM8K: `question`, `answer` ending in `#### N`.
    Gsm8k,
    /// The four-class safety task: so8t's unified records (`instruction`, `four_class_label`).
    FourClass,
    /// JCommonsenseQA (Japanese): `question`, `choice0`…`choice4`, `label`.
    JCommonsenseQa,
}

impl TaskKind {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Mmlu => "mmlu",
            TaskKind::Hellaswag => "hellaswag",
            TaskKind::Gsm8k => "gsm8k",
            TaskKind::FourClass => "four_class",
            TaskKind::JCommonsenseQa => "jcommonsenseqa",
        }
    }

    /// The metrics this task reports, the headline first.
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            TaskKind::Mmlu => &["acc"],
            TaskKind::Hellaswag | TaskKind::JCommonsenseQa => &["acc", "acc_norm"],
            TaskKind::Gsm8k => &["exact_match", "exact_match_flexible"],
            TaskKind::FourClass => &["acc", "macro_f1"],
        }
    }
}

impl FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "mmlu" | "multiple_choice" | "mc" => TaskKind::Mmlu,
            "jcommonsenseqa" | "jcqa" => TaskKind::JCommonsenseQa,
            "hellaswag" => TaskKind::Hellaswag,
            "gsm8k" => TaskKind::Gsm8k,
            "four_class" | "fourclass" | "safety" => TaskKind::FourClass,
            other => {
                return Err(format!(
                    "unknown task {other:?} (expected mmlu, hellaswag, gsm8k, four_class or \
                     jcommonsenseqa)"
                ))
            }
        })
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A task on the command line:
/// `KIND=FILE[,fewshot=FILE][,num_fewshot=N][,max_tokens=N][,name=NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The task's name in results (default: the kind's name).
    pub name: String,
    /// The benchmark.
    pub kind: TaskKind,
    /// The items.
    pub path: PathBuf,
    /// Few-shot examples (GSM8K: the first `num_fewshot` records, lm-eval's `first_n`).
    pub fewshot: Option<PathBuf>,
    /// Few-shot examples to use (default: all in the few-shot file, at most 5 for GSM8K).
    pub num_fewshot: Option<usize>,
    /// Most generated tokens per item (GSM8K: 256, four-class: 512 by default).
    pub max_tokens: Option<usize>,
}

impl FromStr for TaskSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("task {s:?}: expected KIND=FILE[,fewshot=FILE]"))?;
        let kind: TaskKind = kind.parse()?;
        let mut parts = rest.split(',');
        let path = PathBuf::from(parts.next().unwrap_or_default());
        if path.as_os_str().is_empty() {
            return Err(format!("task {s:?}: the file is missing"));
        }
        let mut spec = TaskSpec {
            name: kind.name().to_string(),
            kind,
            path,
            fewshot: None,
            num_fewshot: None,
            max_tokens: None,
        };
        for p in parts {
            match p.split_once('=') {
                Some(("fewshot", f)) => spec.fewshot = Some(PathBuf::from(f)),
                Some(("num_fewshot", n)) => {
                    spec.num_fewshot = Some(n.parse().map_err(|_| {
                        format!("task {s:?}: num_fewshot must be a number, got {n:?}")
                    })?)
                }
                Some(("max_tokens", n)) => {
                    spec.max_tokens =
                        Some(n.parse().ok().filter(|&n: &usize| n > 0).ok_or_else(|| {
                            format!("task {s:?}: max_tokens must be a positive number, got {n:?}")
                        })?)
                }
                Some(("name", n)) if !n.is_empty() => spec.name = n.to_string(),
                _ => {
                    return Err(format!(
                        "task {s:?}: unknown option {p:?} (expected fewshot=FILE, \
                         num_fewshot=N, max_tokens=N or name=NAME)"
                    ))
                }
            }
        }
        Ok(spec)
    }
}

/// A bad task file, with the line.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record is not what the task needs.
    #[error("{path}:{line}: {msg}")]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The file has no records.
    #[error("{0}: no records")]
    Empty(PathBuf),
}

/// What the model is asked for one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Score each `context + continuation` by log-likelihood.
    Choice {
        /// The prompt.
        context: String,
        /// The continuations (with lm-eval's target delimiter, a leading space).
        continuations: Vec<String>,
        /// The choices' lengths for `acc_norm` (characters of the choice text, as lm-eval).
        norm_lens: Vec<usize>,
        /// The right continuation.
        gold: usize,
    },
    /// Generate greedily until a stop string.
    Generate {
        /// A plain prompt, or a chat (role, content) rendered with the model's template.
        prompt: Prompt,
        /// Stop strings.
        until: Vec<String>,
        /// Most tokens.
        max_tokens: usize,
        /// What the answer is checked against.
        gold: Gold,
    },
}

/// A generation prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Raw text.
    Text(String),
    /// Chat messages (role, content), rendered with the model's chat template.
    Chat(Vec<(String, String)>),
}

/// The reference of a generation item.
#[derive(Debug, Clone, PartialEq)]
pub enum Gold {
    /// GSM8K: the dataset's full answer (ending in `#### N`).
    Answer(String),
    /// Four-class: the label id 0–3.
    Class(usize),
}

/// One benchmark item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Stable id within the task (the record's `id`, else its 1-based line).
    pub id: String,
    /// The request.
    pub query: Query,
}

/// A JSONL record: its 1-based line and its object.
pub(crate) type Line = (usize, serde_json::Map<String, Value>);

/// Reads the JSONL records of `path`.
pub(crate) fn read_jsonl(path: &Path) -> Result<Vec<Line>, TaskError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| TaskError::Record {
            path: path.to_path_buf(),
            line: i + 1,
            msg: format!("not JSON: {e}"),
        })?;
        match v {
            Value::Object(m) => out.push((i + 1, m)),
            other => {
                return Err(TaskError::Record {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg: format!("expected a JSON object, got {}", kind_of(&other)),
                })
            }
        }
    }
    if out.is_empty() {
        return Err(TaskError::Empty(path.to_path_buf()));
    }
    Ok(out)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Field access with errors naming the file, line and field.
pub(crate) struct Rec<'a> {
    pub path: &'a Path,
    pub line: usize,
    pub map: &'a serde_json::Map<String, Value>,
}

impl Rec<'_> {
    pub fn err(&self, msg: String) -> TaskError {
        TaskError::Record {
            path: self.path.to_path_buf(),
            line: self.line,
            msg,
        }
    }

    pub fn get(&self, field: &str) -> Result<&Value, TaskError> {
        self.map
            .get(field)
            .ok_or_else(|| self.err(format!("field `{field}` is missing")))
    }

    pub fn str(&self, field: &str) -> Result<&str, TaskError> {
        let v = self.get(field)?;
        v.as_str().ok_or_else(|| {
            self.err(format!(
                "field `{field}`: expected a string, got {}",
                kind_of(v)
            ))
        })
    }

    pub fn strings(&self, field: &str) -> Result<Vec<String>, TaskError> {
        let v = self.get(field)?;
        let arr = v.as_array().ok_or_else(|| {
            self.err(format!(
                "field `{field}`: expected an array of strings, got {}",
                kind_of(v)
            ))
        })?;
        arr.iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    self.err(format!(
                        "field `{field}[{i}]`: expected a string, got {}",
                        kind_of(x)
                    ))
                })
            })
            .collect()
    }

    /// An index (integer, or a string of digits as HellaSwag writes `label`) below `n`.
    pub fn index(&self, field: &str, n: usize) -> Result<usize, TaskError> {
        let v = self.get(field)?;
        let i = match v {
            Value::Number(x) => x.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| self.err(format!("field `{field}`: expected an index, got {v}")))?;
        if i as usize >= n {
            return Err(self.err(format!(
                "field `{field}` = {i} is out of range: there are {n} choices (0..{})",
                n.saturating_sub(1)
            )));
        }
        Ok(i as usize)
    }

    /// The record's id: its `id` field (string or number), else the line number.
    pub fn id(&self) -> String {
        match self.map.get("id").or_else(|| self.map.get("ind")) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => format!("line{}", self.line),
        }
    }
}

/// Loads a task's items (all of them; see [`sample`] for `--limit`).
pub fn load(spec: &TaskSpec) -> Result<Vec<Item>, TaskError> {
    let items = match spec.kind {
        TaskKind::Mmlu => mmlu::load(&spec.path)?,
        TaskKind::Hellaswag => hellaswag::load(&spec.path)?,
        TaskKind::Gsm8k => {
            let shots = match &spec.fewshot {
                Some(f) => gsm8k::load_fewshot(f, spec.num_fewshot.unwrap_or(5))?,
                None => Vec::new(),
            };
            gsm8k::load(&spec.path, &shots)?
        }
        TaskKind::FourClass => four_class::load(&spec.path)?,
        TaskKind::JCommonsenseQa => jcommonsenseqa::load(&spec.path)?,
    };
    let mut items = items;
    if let Some(n) = spec.max_tokens {
        for it in &mut items {
            if let Query::Generate { max_tokens, .. } = &mut it.query {
                *max_tokens = n;
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for it in &items {
        if !seen.insert(it.id.as_str()) {
            return Err(TaskError::Record {
                path: spec.path.clone(),
                line: 0,
                msg: format!(
                    "item id {:?} appears twice (ids pair the A/B results)",
                    it.id
                ),
            });
        }
    }
    Ok(items)
}

/// `limit` items chosen with a seeded shuffle (all of them, in file order, without a limit or
/// when the limit covers the file).
pub fn sample(items: Vec<Item>, limit: Option<usize>, seed: u64) -> Vec<Item> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    match limit {
        Some(n) if n < items.len() => {
            let mut idx: Vec<usize> = (0..items.len()).collect();
            idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let mut keep: Vec<usize> = idx[..n].to_vec();
            keep.sort_unstable();
            let mut items: Vec<Option<Item>> = items.into_iter().map(Some).collect();
            keep.into_iter().filter_map(|i| items[i].take()).collect()
        }
        _ => items,
    }
}
