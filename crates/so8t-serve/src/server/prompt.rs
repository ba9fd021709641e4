//! Turning a chat or a prompt into token ids: the Modelfile's Go template when there is one,
//! else the model's own Jinja chat template, else the plain text.

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::models::LoadedModel;
use crate::template::{TemplateData, TemplateMessage};

/// A chat message as both APIs send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    #[serde(default)]
    pub content: String,
}

fn with_system(
    model: &LoadedModel,
    messages: &[ChatMessage],
    system: Option<&str>,
) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    let sys = system.map(str::to_string).or_else(|| model.system.clone());
    if let Some(s) = sys {
        if !messages.iter().any(|m| m.role == "system") {
            out.push(ChatMessage {
                role: "system".into(),
                content: s,
            });
        }
    }
    out.extend(messages.iter().cloned());
    out
}

/// Renders a conversation for generation (the assistant's turn comes next).
pub fn render_chat(
    model: &LoadedModel,
    messages: &[ChatMessage],
    system: Option<&str>,
) -> Result<String, ApiError> {
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(ApiError::bad_field(
                &format!("messages[{i}].role"),
                format!(
                    "unknown role {:?} (expected system, user, assistant or tool)",
                    m.role
                ),
            ));
        }
    }
    let msgs = with_system(model, messages, system);
    if let Some(t) = &model.template {
        let data = TemplateData {
            system: msgs
                .iter()
                .filter(|m| m.role == "system")
                .map(|m| m.content.clone())
                .collect::<Vec<_>>()
                .join("\n"),
            prompt: msgs
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(|m| m.content.clone())
                .unwrap_or_default(),
            response: String::new(),
            messages: msgs
                .iter()
                .map(|m| TemplateMessage {
                    role: m.role.clone(),
                    content: m.content.clone(),
                })
                .collect(),
            tools: Vec::new(),
        };
        return t
            .render(&data)
            .map_err(|e| ApiError::internal(format!("model {}: template: {e}", model.name)));
    }
    if model.tokenizer.chat_template.is_some() {
        return model
            .tokenizer
            .apply_chat_template(&msgs, true)
            .map_err(|e| ApiError::bad(format!("model {}: chat template: {e}", model.name)));
    }
    Ok(msgs
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Token ids of rendered text: BOS is added when the model wants one and the text does not
/// already start with it.
pub fn tokenize(model: &LoadedModel, text: &str) -> Result<Vec<u32>, ApiError> {
    let tok = &model.tokenizer;
    let has_bos = tok
        .bos_token
        .as_deref()
        .is_some_and(|b| !b.is_empty() && text.starts_with(b));
    tok.encode(text, !has_bos)
        .map_err(|e| ApiError::bad(format!("tokenizing the prompt: {e}")))
}
