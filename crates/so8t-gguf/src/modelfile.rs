//! Ollama `Modelfile`s (spec §7): FROM the GGUF, the chat template translated into Ollama's Go
//! template, the sampling parameters, the stop strings and an optional SYSTEM.
//!
//! The translation reads the Jinja template's behaviour rather than its source: it renders
//! conversations with marker contents and takes, per role, the text before and after a
//! message, plus the generation prompt. Any template that frames each message independently
//! (Phi-3/3.5, ChatML, Llama-3, …) translates exactly; [`RoleFormat::render`] re-renders a
//! conversation from the parts so callers can check the translation against the Jinja source.

use so8t_model::{ChatTemplate, Message};

use crate::error::{Error, Result};

pub use crate::modelfile_parse::{
    param_kind, parse, ModelfileError, ModelfileMessage, ParamKind, ParamValue, ParsedModelfile,
    KNOWN_PARAMETERS,
};

/// How each message is framed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleFormat {
    /// Text at the very start of a conversation (before the first message), BOS excluded.
    pub start: String,
    /// Before / after a system message.
    pub system: (String, String),
    /// Before / after a user message.
    pub user: (String, String),
    /// Before / after an assistant message.
    pub assistant: (String, String),
    /// What `add_generation_prompt` appends.
    pub generation: String,
    /// What the template appends without `add_generation_prompt` (e.g. the EOS text).
    pub end: String,
}

const S: &str = "\u{E000}sys\u{E000}";
const U1: &str = "\u{E000}u1\u{E000}";
const A1: &str = "\u{E000}a1\u{E000}";
const U2: &str = "\u{E000}u2\u{E000}";
const A2: &str = "\u{E000}a2\u{E000}";

fn between<'a>(text: &'a str, a: &str, b: &str) -> Option<&'a str> {
    let i = text.find(a)? + a.len();
    let j = text[i..].find(b)? + i;
    Some(&text[i..j])
}

impl RoleFormat {
    /// Reads the framing from `t` by rendering marker conversations.
    pub fn derive(t: &ChatTemplate) -> Result<Self> {
        let m = |r: &str, c: &str| Message::new(r, c);
        let full = t.render(
            &[
                m("system", S),
                m("user", U1),
                m("assistant", A1),
                m("user", U2),
                m("assistant", A2),
            ],
            false,
        )?;
        let prompt = t.render(&[m("system", S), m("user", U1)], false)?;
        // Rendered with add_generation_prompt = false, each ends with `end`; with true, the
        // generation prompt replaces it.
        let gen = t.render(&[m("system", S), m("user", U1)], true)?;
        let bad = |what: &str| {
            Error::Export(format!(
                "the chat template cannot be translated to an Ollama template: {what}"
            ))
        };
        let before_sys = full
            .split(S)
            .next()
            .ok_or_else(|| bad("no system message"))?;
        let start = before_sys.strip_prefix(&t.bos_token).unwrap_or(before_sys);
        let after = |text: &str, marker: &str, what: &str| -> Result<String> {
            text.split(marker)
                .nth(1)
                .map(str::to_string)
                .ok_or_else(|| bad(what))
        };
        let x1 = after(&full, A2, "assistant messages are not rendered")?; // as + end
        let x2 = after(&prompt, U1, "user messages are not rendered")?; // us + end
        let x3 = after(&gen, U1, "user messages are not rendered")?; // us + generation
        let x4 = between(&full, A1, U2).ok_or_else(|| bad("messages out of order"))?; // as + up
        let x5 = between(&full, U1, A1).ok_or_else(|| bad("messages out of order"))?; // us + ap
                                                                                      // The closing text `end`: nothing or the EOS text (what templates append), else the
                                                                                      // shortest one that leaves consistent message suffixes.
        let try_end = |end: &str| {
            let (asst_suffix, user_suffix) = (x1.strip_suffix(end)?, x2.strip_suffix(end)?);
            (x4.starts_with(asst_suffix)
                && x5.starts_with(user_suffix)
                && x3.starts_with(user_suffix))
            .then(|| {
                (
                    end.to_string(),
                    asst_suffix.to_string(),
                    user_suffix.to_string(),
                )
            })
        };
        let split = ["", t.eos_token.as_str()]
            .into_iter()
            .find_map(try_end)
            .or_else(|| {
                (0..=x1.len().min(x2.len())).find_map(|n| try_end(x1.get(x1.len() - n..)?))
            });
        let (end, asst_suffix, user_suffix) =
            split.ok_or_else(|| bad("messages end differently mid-conversation"))?;
        let generation = x3[user_suffix.len()..].to_string();
        let user_prefix = x4[asst_suffix.len()..].to_string();
        let asst_prefix = x5[user_suffix.len()..].to_string();
        let s_to_u = between(&full, S, U1).ok_or_else(|| bad("messages out of order"))?;
        let sys_suffix = s_to_u
            .strip_suffix(user_prefix.as_str())
            .ok_or_else(|| bad("user messages start differently after the system message"))?
            .to_string();
        // The system prefix is what precedes S beyond a conversation-level start; without a
        // second system message both are one string, kept as the system prefix.
        let f = RoleFormat {
            start: String::new(),
            system: (start.to_string(), sys_suffix),
            user: (user_prefix, user_suffix),
            assistant: (asst_prefix, asst_suffix),
            generation,
            end,
        };
        if f.render(
            &[
                m("system", S),
                m("user", U1),
                m("assistant", A1),
                m("user", U2),
                m("assistant", A2),
            ],
            false,
        ) != full.strip_prefix(&t.bos_token).unwrap_or(&full)
        {
            return Err(bad("per-message framing does not reproduce the template"));
        }
        Ok(f)
    }

    /// Renders `messages` from the parts (BOS excluded), as the Go template does.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> String {
        let mut out = self.start.clone();
        for msg in messages {
            let (pre, post) = match msg.role.as_str() {
                "system" => &self.system,
                "assistant" => &self.assistant,
                _ => &self.user,
            };
            out.push_str(pre);
            out.push_str(&msg.content);
            out.push_str(post);
        }
        let last_is_assistant = messages.last().is_some_and(|m| m.role == "assistant");
        if !add_generation_prompt {
            out.push_str(&self.end);
        } else if !last_is_assistant {
            out.push_str(&self.generation);
        }
        out
    }

    /// Ollama's Go template for this framing (messages API: `.Messages`, `.Role`, `.Content`).
    pub fn go_template(&self) -> String {
        let esc = |s: &str| s.replace("{{", "{{ \"{{\" }}");
        // One line: text between actions is output exactly (no `{{-` trimming, which would eat
        // the newlines of the framing).
        format!(
            "{start}{{{{ range $i, $_ := .Messages }}}}\
             {{{{ $last := eq (len (slice $.Messages $i)) 1 }}}}\
             {{{{ if eq .Role \"system\" }}}}{sp}{{{{ .Content }}}}{ss}\
             {{{{ else if eq .Role \"user\" }}}}{up}{{{{ .Content }}}}{us}\
             {{{{ if $last }}}}{gen}{{{{ end }}}}\
             {{{{ else if eq .Role \"assistant\" }}}}{ap}{{{{ .Content }}}}\
             {{{{ if not $last }}}}{as_}{{{{ end }}}}\
             {{{{ end }}}}{{{{ end }}}}",
            start = esc(&self.start),
            sp = esc(&self.system.0),
            ss = esc(&self.system.1),
            up = esc(&self.user.0),
            us = esc(&self.user.1),
            gen = esc(&self.generation),
            ap = esc(&self.assistant.0),
            as_ = esc(&self.assistant.1),
        )
    }

    /// Stop strings: the end of an assistant message, the role openers, and the EOS text.
    pub fn stops(&self, eos: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in [
            self.assistant.1.trim(),
            self.user.0.trim(),
            self.assistant.0.trim(),
            eos.unwrap_or("").trim(),
        ] {
            if !s.is_empty() && !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        }
        out
    }
}

/// What goes into a Modelfile.
#[derive(Debug, Clone)]
pub struct ModelfileSpec<'a> {
    /// The GGUF file (relative to the Modelfile or absolute).
    pub from: &'a str,
    /// The framing (None: no TEMPLATE, Ollama uses the GGUF's `tokenizer.chat_template`).
    pub roles: Option<&'a RoleFormat>,
    /// Stop strings.
    pub stops: &'a [String],
    /// SYSTEM prompt.
    pub system: Option<&'a str>,
}

fn quoted(s: &str) -> String {
    format!("\"\"\"{}\"\"\"", s.replace("\"\"\"", "\\\"\\\"\\\""))
}

/// The Modelfile text (spec §7 parameters: temperature 0.7, top_p 0.9, top_k 40, num_ctx 4096).
pub fn modelfile(spec: &ModelfileSpec<'_>) -> String {
    let mut out = format!("FROM {}\n", spec.from);
    if let Some(r) = spec.roles {
        out.push_str(&format!("TEMPLATE {}\n", quoted(&r.go_template())));
    }
    if let Some(s) = spec.system {
        out.push_str(&format!("SYSTEM {}\n", quoted(s)));
    }
    for (k, v) in [
        ("temperature", "0.7"),
        ("top_p", "0.9"),
        ("top_k", "40"),
        ("num_ctx", "4096"),
    ] {
        out.push_str(&format!("PARAMETER {k} {v}\n"));
    }
    for s in spec.stops {
        out.push_str(&format!(
            "PARAMETER stop {}\n",
            serde_json::Value::from(s.as_str())
        ));
    }
    out
}
