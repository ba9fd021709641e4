//! A subset of Go's `text/template`, enough for Ollama's chat templates (Modelfile
//! `TEMPLATE`s and the manifests' template layers).
//!
//! Supported: text; `{{ pipeline }}`; `{{-` / `-}}` whitespace trimming; comments
//! `{{/* … */}}`; `if` / `else if` / `else` / `end`; `range` (with `$i, $m :=`, `else`,
//! `break`, `continue`); `with` / `else with`; variables (`$x := …`, `$x = …`, `$`, `$.Field`,
//! `$x.Field`); fields `.A.B` and `(pipeline).Field`; string (`"…"`, `` `…` ``), number, bool
//! and `nil` literals; pipelines with `|`; functions `and or not eq ne lt le gt ge len index
//! slice printf print println html` and Ollama's `json` and `currentDate`. Not supported:
//! `define` / `template` / `block`, methods, and `call`.
//!
//! Data is JSON-like ([`serde_json::Value`]). [`TemplateData`] becomes Ollama's fields:
//! `.System .Prompt .Response .Suffix .Messages (.Role .Content .Thinking .ToolCalls .Images
//! .ToolName) .Tools .Think .ThinkLevel .IsThinkSet`. A field `.Name` of a JSON map also
//! matches the keys `name` and (for `.ToolCalls`) `tool_calls`, so tools in Ollama's JSON
//! shape read as Ollama's Go structs do (`.Function.Name`, `.Function.Parameters`). Maps
//! print as JSON (as Ollama's tool-call arguments do), slices as `[a b]`, nil as `<no value>`.

use serde::Serialize;
use serde_json::{json, Value};

mod eval;
mod funcs;
mod parse;

/// A template error: what is wrong and the byte offset in the template source (of the action
/// at fault when rendering).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: at byte {offset}: {msg}")]
pub struct TemplateError {
    /// Byte offset in the source.
    pub offset: usize,
    /// What is wrong.
    pub msg: String,
}

/// One chat message (`.Role`, `.Content`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TemplateMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl TemplateMessage {
    /// A message.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        TemplateMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What a chat template renders.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateData {
    /// `.System`.
    pub system: String,
    /// `.Prompt` (the last user message, for templates of the old single-turn style).
    pub prompt: String,
    /// `.Response` (the assistant text so far; usually empty).
    pub response: String,
    /// `.Messages`.
    pub messages: Vec<TemplateMessage>,
    /// `.Tools`: tools in Ollama's JSON shape (`{"type":"function","function":{…}}`).
    pub tools: Vec<Value>,
}

impl TemplateData {
    /// The data as the template sees it (Ollama's Go field names).
    pub fn to_value(&self) -> Value {
        let msgs: Vec<Value> = self
            .messages
            .iter()
            .map(|m| {
                json!({
                    "Role": m.role, "Content": m.content, "Thinking": "", "Images": [],
                    "ToolCalls": [], "ToolName": "",
                })
            })
            .collect();
        json!({
            "System": self.system, "Prompt": self.prompt, "Response": self.response,
            "Suffix": "", "Messages": msgs, "Tools": self.tools, "Think": false,
            "ThinkLevel": "", "IsThinkSet": false,
        })
    }
}

/// A parsed Go template.
#[derive(Debug, Clone)]
pub struct GoTemplate {
    source: String,
    nodes: Vec<parse::Node>,
}

impl GoTemplate {
    /// Parses `src`; errors (unclosed action, unknown function, missing `end`, …) carry the
    /// byte offset.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        Ok(GoTemplate {
            source: src.to_string(),
            nodes: parse::parse(src)?,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders with `data`.
    pub fn render(&self, data: &TemplateData) -> Result<String, TemplateError> {
        self.render_value(&data.to_value())
    }

    /// Renders with arbitrary JSON-like data as `.`.
    pub fn render_value(&self, data: &Value) -> Result<String, TemplateError> {
        let mut ex = eval::Exec::new(data);
        ex.run(&self.nodes, data)?;
        Ok(ex.out)
    }
}
