//! Reading Ollama `Modelfile`s: [`parse`] turns the text into a [`ParsedModelfile`] and
//! [`ParsedModelfile::to_text`] writes one back (the output parses to the same value).
//!
//! The syntax follows Ollama's `docs/modelfile.md`:
//!
//! * one instruction per line: `FROM`, `TEMPLATE`, `SYSTEM`, `PARAMETER name value`, `ADAPTER`,
//!   `LICENSE`, `MESSAGE role content`; keywords are case-insensitive;
//! * a line whose first non-blank character is `#` is a comment;
//! * a value is the rest of the line (trimmed), or `"…"` (JSON escapes: `\"`, `\\`, `\n`,
//!   `\t`, `\uXXXX`, …; may span lines), or `"""…"""` (raw, may span lines; only `\"` is an
//!   escape, for `"`, so that `\"\"\"` — what [`crate::modelfile::modelfile`] writes — stands for
//!   `"""`).
//!
//! Rules: exactly one `FROM`; `TEMPLATE`/`SYSTEM` given twice keep the last; `PARAMETER stop`
//! accumulates, any other parameter given twice keeps the last value (in its first position);
//! `LICENSE`, `ADAPTER` and `MESSAGE` accumulate. Parameter values are checked against the type
//! Ollama gives them (integer, float, bool, string).

use std::fmt;

/// A Modelfile error, with the 1-based line it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Modelfile line {line}: {msg}")]
pub struct ModelfileError {
    /// 1-based line number (of the instruction; for an unterminated quote, of its opening).
    pub line: usize,
    /// What is wrong and what was expected.
    pub msg: String,
}

/// The type of a known `PARAMETER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A signed integer.
    Int,
    /// A number.
    Float,
    /// `true` / `false` (also Go's `1`, `t`, `TRUE`, `0`, `f`, `FALSE`, …).
    Bool,
    /// Text (`stop`, repeatable).
    Str,
}

/// Ollama's runtime options that a Modelfile may set, with their types.
pub const KNOWN_PARAMETERS: &[(&str, ParamKind)] = &[
    ("num_ctx", ParamKind::Int),
    ("num_batch", ParamKind::Int),
    ("num_gpu", ParamKind::Int),
    ("main_gpu", ParamKind::Int),
    ("num_thread", ParamKind::Int),
    ("num_keep", ParamKind::Int),
    ("num_predict", ParamKind::Int),
    ("seed", ParamKind::Int),
    ("top_k", ParamKind::Int),
    ("repeat_last_n", ParamKind::Int),
    ("mirostat", ParamKind::Int),
    ("num_gqa", ParamKind::Int),
    ("temperature", ParamKind::Float),
    ("top_p", ParamKind::Float),
    ("min_p", ParamKind::Float),
    ("typical_p", ParamKind::Float),
    ("tfs_z", ParamKind::Float),
    ("repeat_penalty", ParamKind::Float),
    ("presence_penalty", ParamKind::Float),
    ("frequency_penalty", ParamKind::Float),
    ("mirostat_tau", ParamKind::Float),
    ("mirostat_eta", ParamKind::Float),
    ("penalize_newline", ParamKind::Bool),
    ("use_mmap", ParamKind::Bool),
    ("use_mlock", ParamKind::Bool),
    ("numa", ParamKind::Bool),
    ("low_vram", ParamKind::Bool),
    ("f16_kv", ParamKind::Bool),
    ("vocab_only", ParamKind::Bool),
    ("stop", ParamKind::Str),
];

/// The type of parameter `name` (None: not a parameter Ollama knows).
pub fn param_kind(name: &str) -> Option<ParamKind> {
    KNOWN_PARAMETERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
}

/// A typed parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// Integer.
    Int(i64),
    /// Number.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Text.
    Str(String),
}

impl ParamValue {
    /// Parses `text` as a value of `kind` (None when it is not one).
    pub fn parse(kind: ParamKind, text: &str) -> Option<Self> {
        let t = text.trim();
        match kind {
            ParamKind::Int => t.parse().ok().map(ParamValue::Int),
            ParamKind::Float => t
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(ParamValue::Float),
            ParamKind::Bool => match t {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(ParamValue::Bool(true)),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(ParamValue::Bool(false)),
                _ => None,
            },
            ParamKind::Str => Some(ParamValue::Str(text.to_string())),
        }
    }

    /// The value as JSON (how Ollama's params layer stores it).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Int(i) => (*i).into(),
            ParamValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            ParamValue::Bool(b) => (*b).into(),
            ParamValue::Str(s) => s.as_str().into(),
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Str(s) => f.write_str(s),
        }
    }
}

/// A `MESSAGE role content` instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelfileMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A parsed Modelfile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedModelfile {
    /// `FROM`: a GGUF path, a model folder, or a model name.
    pub from: String,
    /// `ADAPTER`s (paths).
    pub adapters: Vec<String>,
    /// `TEMPLATE` (Go template source).
    pub template: Option<String>,
    /// `SYSTEM`.
    pub system: Option<String>,
    /// `PARAMETER`s in order (`stop` may repeat; other names appear once).
    pub parameters: Vec<(String, ParamValue)>,
    /// `LICENSE`s.
    pub licenses: Vec<String>,
    /// `MESSAGE`s.
    pub messages: Vec<ModelfileMessage>,
}

const ROLES: [&str; 3] = ["system", "user", "assistant"];

impl ParsedModelfile {
    /// The values of parameter `name` (several for `stop`).
    pub fn param<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ParamValue> + 'a {
        self.parameters
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Sets a parameter as a Modelfile line would (`stop` accumulates).
    pub fn set_param(&mut self, name: &str, value: ParamValue) {
        if name != "stop" {
            if let Some(slot) = self.parameters.iter_mut().find(|(n, _)| n == name) {
                slot.1 = value;
                return;
            }
        }
        self.parameters.push((name.to_string(), value));
    }

    /// The Modelfile text; [`parse`] of it gives back `self`.
    pub fn to_text(&self) -> String {
        let mut out = format!("FROM {}\n", quote(&self.from));
        for a in &self.adapters {
            out.push_str(&format!("ADAPTER {}\n", quote(a)));
        }
        if let Some(t) = &self.template {
            out.push_str(&format!("TEMPLATE {}\n", quote_block(t)));
        }
        if let Some(s) = &self.system {
            out.push_str(&format!("SYSTEM {}\n", quote_block(s)));
        }
        for (k, v) in &self.parameters {
            let v = match v {
                ParamValue::Str(s) => quote(s),
                v => v.to_string(),
            };
            out.push_str(&format!("PARAMETER {k} {v}\n"));
        }
        for l in &self.licenses {
            out.push_str(&format!("LICENSE {}\n", quote_block(l)));
        }
        for m in &self.messages {
            out.push_str(&format!("MESSAGE {} {}\n", m.role, quote(&m.content)));
        }
        out
    }
}

/// Whether `s` can be written bare (as the rest of a line).
fn bare_ok(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(['\n', '\r'])
        && s.trim() == s
        && !s.starts_with('"')
        && !s.starts_with('#')
}

/// `s` bare when possible, else quoted.
fn quote(s: &str) -> String {
    if bare_ok(s) {
        s.to_string()
    } else {
        quote_block(s)
    }
}

/// `s` in `"""…"""` when that reads back exactly, else as a JSON string.
fn quote_block(s: &str) -> String {
    if !s.contains("\\\"") && !s.contains("\"\"\"") && !s.ends_with(['"', '\\']) {
        format!("\"\"\"{s}\"\"\"")
    } else {
        serde_json::Value::from(s).to_string()
    }
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
    line: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }
    fn word(&mut self) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(|c| !c.is_whitespace()) {
            self.bump();
        }
        &self.s[start..self.pos]
    }
    fn rest_of_line(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
        self.s[start..self.pos].trim().to_string()
    }

    /// A value: `"""…"""`, `"…"` or the rest of the line; then only blanks until the newline.
    fn value(&mut self, what: &str) -> Result<String, ModelfileError> {
        let line = self.line;
        let err = |msg: String| ModelfileError { line, msg };
        let v = if self.rest().starts_with("\"\"\"") {
            self.pos += 3;
            let mut out = String::new();
            loop {
                if self.rest().starts_with("\"\"\"") {
                    self.pos += 3;
                    break;
                }
                if self.rest().starts_with("\\\"") {
                    self.pos += 2;
                    out.push('"');
                    continue;
                }
                match self.bump() {
                    Some(c) => out.push(c),
                    None => return Err(err(format!("{what}: unterminated \"\"\" string"))),
                }
            }
            out
        } else if self.rest().starts_with('"') {
            let start = self.pos;
            self.bump();
            loop {
                match self.bump() {
                    Some('\\') => {
                        self.bump();
                    }
                    Some('"') => break,
                    Some(_) => {}
                    None => return Err(err(format!("{what}: unterminated \" string"))),
                }
            }
            let raw = self.s[start..self.pos]
                .replace('\n', "\\n")
                .replace('\r', "\\r")
                .replace('\t', "\\t");
            serde_json::from_str::<String>(&raw)
                .map_err(|e| err(format!("{what}: bad escape in quoted string: {e}")))?
        } else {
            let v = self.rest_of_line();
            if v.is_empty() {
                return Err(err(format!("{what} needs a value")));
            }
            return Ok(v);
        };
        let tail = self.rest_of_line();
        if !tail.is_empty() {
            return Err(ModelfileError {
                line: self.line,
                msg: format!("{what}: unexpected text {tail:?} after the closing quote"),
            });
        }
        Ok(v)
    }
}

/// Parses a Modelfile (see the module documentation for the syntax).
pub fn parse(text: &str) -> Result<ParsedModelfile, ModelfileError> {
    let mut c = Cursor {
        s: text,
        pos: 0,
        line: 1,
    };
    let mut out = ParsedModelfile::default();
    let mut from_line = None;
    loop {
        while c.peek().is_some_and(char::is_whitespace) {
            c.bump();
        }
        if c.peek().is_none() {
            break;
        }
        if c.peek() == Some('#') {
            c.rest_of_line();
            continue;
        }
        let line = c.line;
        let err = |msg: String| ModelfileError { line, msg };
        let keyword = c.word().to_ascii_lowercase();
        c.skip_blanks();
        match keyword.as_str() {
            "from" => {
                let v = c.value("FROM")?;
                if let Some(first) = from_line {
                    return Err(err(format!("a second FROM (the first is on line {first})")));
                }
                from_line = Some(line);
                out.from = v;
            }
            "adapter" => out.adapters.push(c.value("ADAPTER")?),
            "template" => out.template = Some(c.value("TEMPLATE")?),
            "system" => out.system = Some(c.value("SYSTEM")?),
            "license" => out.licenses.push(c.value("LICENSE")?),
            "parameter" => {
                let name = c.word().to_ascii_lowercase();
                if name.is_empty() {
                    return Err(err("PARAMETER needs a name and a value".into()));
                }
                c.skip_blanks();
                let kind = param_kind(&name).ok_or_else(|| {
                    err(format!(
                        "unknown PARAMETER {name:?} (known: {})",
                        KNOWN_PARAMETERS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                let raw = c.value(&format!("PARAMETER {name}"))?;
                let v = ParamValue::parse(kind, &raw).ok_or_else(|| {
                    let want = match kind {
                        ParamKind::Int => "an integer",
                        ParamKind::Float => "a number",
                        ParamKind::Bool => "true or false",
                        ParamKind::Str => "text",
                    };
                    err(format!("PARAMETER {name}: {raw:?} is not {want}"))
                })?;
                out.set_param(&name, v);
            }
            "message" => {
                let role = c.word().to_ascii_lowercase();
                if !ROLES.contains(&role.as_str()) {
                    return Err(err(format!(
                        "MESSAGE role {role:?}: expected system, user or assistant"
                    )));
                }
                c.skip_blanks();
                let content = c.value("MESSAGE")?;
                out.messages.push(ModelfileMessage { role, content });
            }
            other => {
                return Err(err(format!(
                    "unknown instruction {:?} (expected FROM, TEMPLATE, SYSTEM, PARAMETER, \
                     ADAPTER, LICENSE or MESSAGE)",
                    other.to_ascii_uppercase()
                )))
            }
        }
    }
    if from_line.is_none() {
        return Err(ModelfileError {
            line: c.line,
            msg: "no FROM instruction (every Modelfile needs one)".into(),
        });
    }
    Ok(out)
}
