//! `so8t data think`: four-class records → /think SFT chats (spec §4), and the parser that reads
//! an assistant text back into (thinking, final answer, class).
//!
//! The thinking is derived from facts about the record (what kind of request, which domain, its
//! class and why, what a useful answer does; see [`facts`]) in the record's language; the final
//! answer starts with the machine-readable line `分類: CLASS`.

pub mod facts;
mod phrases;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use so8t_model::{ChatTemplate, Message, TextTokenizer, PHI35_TEMPLATE};

use crate::error::{Error, Result};
use crate::label::Label;
use crate::record::{FieldMap, Lang, Record};

pub use phrases::{ASPECTS, STEP_TITLES};

use rayon::prelude::*;

/// Records built and rendered per parallel batch.
const BATCH: usize = 2048;

/// The heading of the thinking part in the `steps` format.
pub const STEPS_HEADING: &str = "# 思考ステップ";
/// The heading of the final answer in the `steps` format.
pub const ANSWER_HEADING: &str = "# 最終回答";
/// The prefix of the classification line that opens every final answer.
pub const CLASS_PREFIX: &str = "分類: ";

/// The assistant format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThinkFormat {
    /// `# 思考ステップ` … `# 最終回答` ….
    Steps,
    /// `<think-task>` … `<think-creative>` + `<final>`.
    Tags,
}

impl std::str::FromStr for ThinkFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "steps" => Ok(ThinkFormat::Steps),
            "tags" => Ok(ThinkFormat::Tags),
            other => Err(format!("unknown format {other:?}; expected steps or tags")),
        }
    }
}

/// One /think SFT record (a line of `data think`'s output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThinkRecord {
    /// The source record's id.
    pub id: String,
    /// The source record's source.
    pub source: String,
    /// The class.
    pub four_class_label: Label,
    /// The record's language.
    pub lang: Lang,
    /// The assistant format.
    pub format: ThinkFormat,
    /// system, user, assistant (OpenAI chat format).
    pub messages: Vec<Message>,
    /// The chat rendered with the model's chat template (no generation prompt).
    pub text: String,
}

/// An assistant text split back into its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Which format it was in.
    pub format: ThinkFormat,
    /// (step title or tag aspect, text), in order.
    pub thinking: Vec<(String, String)>,
    /// The final answer, including its `分類:` line.
    pub final_text: String,
    /// The class from the `分類:` line, if there is a valid one.
    pub class: Option<Label>,
}

/// The thinking text of a record in a format (no headings or final answer).
pub fn thinking_text(rec: &Record, format: ThinkFormat) -> String {
    thinking_of(&facts::Facts::of(rec), format)
}

fn thinking_of(f: &facts::Facts, format: ThinkFormat) -> String {
    let parts = phrases::thinking(f);
    match format {
        ThinkFormat::Steps => parts
            .iter()
            .zip(STEP_TITLES)
            .enumerate()
            .map(|(i, (text, (en, ja)))| {
                let title = if f.lang == Lang::Ja { ja } else { en };
                format!("{}. {title}: {text}", i + 1)
            })
            .collect::<Vec<_>>()
            .join("\n"),
        ThinkFormat::Tags => parts
            .iter()
            .zip(ASPECTS)
            .map(|(text, a)| format!("<think-{a}>{text}</think-{a}>"))
            .collect(),
    }
}

/// The final answer: the `分類:` line, then the record's own answer (ALLOW with one, and any class
/// whose record carries an answer) or the class's template answer in the record's language.
pub fn final_answer(rec: &Record) -> String {
    final_of(rec, &facts::Facts::of(rec))
}

fn final_of(rec: &Record, f: &facts::Facts) -> String {
    let body = if rec.output.trim().is_empty() {
        phrases::default_answer(f)
    } else {
        rec.output.trim().to_string()
    };
    format!("{CLASS_PREFIX}{}\n{body}", rec.four_class_label.name())
}

/// The whole assistant message of a record.
pub fn assistant_text(rec: &Record, format: ThinkFormat) -> String {
    let f = facts::Facts::of(rec);
    let thinking = thinking_of(&f, format);
    let answer = final_of(rec, &f);
    match format {
        ThinkFormat::Steps => format!("{STEPS_HEADING}\n{thinking}\n\n{ANSWER_HEADING}\n{answer}"),
        ThinkFormat::Tags => format!("{thinking}<final>{answer}</final>"),
    }
}

/// The chat of a record: system (`system` if given, else the record's own, else the default for
/// the format and language), user (instruction, then the input after a blank line), assistant.
pub fn chat(rec: &Record, format: ThinkFormat, system: Option<&str>) -> Vec<Message> {
    let system = system
        .map(str::to_string)
        .filter(|s| !s.is_empty())
        .or_else(|| Some(rec.system.clone()).filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| {
            phrases::default_system(format == ThinkFormat::Tags, rec.lang).to_string()
        });
    let user = if rec.input.trim().is_empty() {
        rec.instruction.trim().to_string()
    } else {
        format!("{}\n\n{}", rec.instruction.trim(), rec.input.trim())
    };
    vec![
        Message::new("system", &system),
        Message::new("user", &user),
        Message::new("assistant", &assistant_text(rec, format)),
    ]
}

/// Reads the class from a final answer: the first line starting with `分類:` (or `分類：`).
pub fn parse_class(final_text: &str) -> Option<Label> {
    final_text.lines().find_map(|l| {
        let l = l.trim();
        let rest = l
            .strip_prefix("分類:")
            .or_else(|| l.strip_prefix("分類："))?;
        Label::parse(rest.trim())
    })
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<(&'a str, &'a str)> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some((
        &text[start..start + len],
        &text[start + len + close.len()..],
    ))
}

/// Splits an assistant text in either format into its parts; errors say what is missing.
pub fn parse(assistant: &str) -> Result<Parsed, String> {
    let t = assistant.trim();
    if t.starts_with("<think-") {
        let mut thinking = Vec::new();
        let mut rest = t;
        while let Some(r) = rest.trim_start().strip_prefix("<think-") {
            let end = r
                .find('>')
                .ok_or_else(|| "unterminated <think-…> tag".to_string())?;
            let aspect = &r[..end];
            let close = format!("</think-{aspect}>");
            let (body, after) = between(r, ">", &close)
                .ok_or_else(|| format!("<think-{aspect}> is not closed by {close}"))?;
            thinking.push((aspect.to_string(), body.to_string()));
            rest = after;
        }
        let (final_text, after) = between(rest, "<final>", "</final>")
            .ok_or_else(|| "no <final>…</final> after the thinking tags".to_string())?;
        if !after.trim().is_empty() {
            return Err("text after </final>".into());
        }
        return Ok(Parsed {
            format: ThinkFormat::Tags,
            thinking,
            class: parse_class(final_text),
            final_text: final_text.to_string(),
        });
    }
    let body = t
        .strip_prefix(STEPS_HEADING)
        .ok_or_else(|| format!("expected {STEPS_HEADING:?} or <think-…> at the start"))?;
    let (steps, final_text) = body
        .split_once(&format!("\n{ANSWER_HEADING}\n"))
        .ok_or_else(|| format!("no {ANSWER_HEADING:?} heading"))?;
    let thinking = steps
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let l = l.trim();
            let l = l
                .split_once(". ")
                .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
                .map_or(l, |(_, r)| r);
            match l.split_once(": ") {
                Some((title, text)) => (title.to_string(), text.to_string()),
                None => (String::new(), l.to_string()),
            }
        })
        .collect();
    Ok(Parsed {
        format: ThinkFormat::Steps,
        thinking,
        class: parse_class(final_text),
        final_text: final_text.to_string(),
    })
}

/// The chat template the `text` field is rendered with.
pub struct Renderer {
    template: ChatTemplate,
}

impl Renderer {
    /// The built-in Phi-3.5 template (`bos` `<s>`, `eos` `<|endoftext|>`).
    pub fn phi35() -> Result<Self> {
        ChatTemplate::new(PHI35_TEMPLATE, "<s>", "<|endoftext|>")
            .map(|template| Renderer { template })
            .map_err(|e| Error::Config(format!("built-in Phi-3.5 template: {e}")))
    }

    /// The template of a model folder (its tokenizer config or `chat_template.jinja`).
    pub fn from_model_dir(dir: &std::path::Path) -> Result<Self> {
        let tok = TextTokenizer::from_dir(dir)
            .map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
        let template = tok.chat_template.ok_or_else(|| {
            Error::Config(format!(
                "{}: the model folder has no chat template",
                dir.display()
            ))
        })?;
        Ok(Renderer { template })
    }

    /// Renders a chat (no generation prompt when `add_generation_prompt` is false).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.template
            .render(messages, add_generation_prompt)
            .map_err(|e| Error::Config(format!("chat template: {e}")))
    }
}

/// What `data think` reads and writes.
#[derive(Debug, Clone)]
pub struct ThinkOptions {
    /// Input files (collect's output, or records in any format the readers take).
    pub inputs: Vec<PathBuf>,
    /// The output JSONL (written atomically).
    pub output: PathBuf,
    /// The assistant format.
    pub format: ThinkFormat,
    /// A system prompt for every chat (default: the record's own, else a built-in one).
    pub system: Option<String>,
    /// Field mapping of the inputs.
    pub map: FieldMap,
    /// Where to report bytes read, for a progress bar.
    pub progress: Option<std::sync::Arc<crate::progress::Progress>>,
}

/// Counts of a `data think` run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ThinkStats {
    /// Records written.
    pub written: u64,
    /// Written per class.
    pub per_class: BTreeMap<String, u64>,
    /// Written per language.
    pub per_lang: BTreeMap<String, u64>,
}

/// Builds the /think record of a unified record.
pub fn think_record(
    rec: &Record,
    format: ThinkFormat,
    system: Option<&str>,
    renderer: &Renderer,
) -> Result<ThinkRecord> {
    let messages = chat(rec, format, system);
    let text = renderer.render(&messages, false)?;
    Ok(ThinkRecord {
        id: rec.id.clone(),
        source: rec.source.clone(),
        four_class_label: rec.four_class_label,
        lang: rec.lang,
        format,
        messages,
        text,
    })
}

/// Runs `data think`: streams the inputs, writes one chat per record. Any bad record is an error
/// naming file:line (run `data collect --skip-bad` first to filter).
pub fn think(opts: &ThinkOptions, renderer: &Renderer) -> Result<ThinkStats> {
    crate::collect::refuse_output_among_inputs(&opts.inputs, &opts.output)?;
    let mut stats = ThinkStats::default();
    let mut failure = None;
    let res = so8t_model::io::write_atomic(&opts.output, |w: &mut dyn Write| {
        let mut run = || -> Result<()> {
            for path in &opts.inputs {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("input")
                    .to_string();
                let src = crate::readers::open(path)?;
                if let Some(p) = &opts.progress {
                    p.add_total(src.total_bytes);
                }
                let mut seen = 0;
                let mut rows = src.rows;
                loop {
                    let batch: Vec<_> = rows.by_ref().take(BATCH).collect();
                    if batch.is_empty() {
                        break;
                    }
                    if let Some(p) = &opts.progress {
                        let now = src.consumed.load(std::sync::atomic::Ordering::Relaxed);
                        p.add_done(now - seen);
                        seen = now;
                    }
                    // Build and render on all cores; write in input order.
                    let done: Vec<Result<(Label, Lang, String)>> = batch
                        .into_par_iter()
                        .map(|item| {
                            let (line, v) = item?;
                            let rec = opts
                                .map
                                .to_record(&v, &format!("{stem}:{line}"), &stem)
                                .map_err(|msg| Error::Record {
                                    path: path.clone(),
                                    line,
                                    column: 0,
                                    msg,
                                })?;
                            let tr =
                                think_record(&rec, opts.format, opts.system.as_deref(), renderer)?;
                            let json = serde_json::to_string(&tr)
                                .map_err(|e| Error::io(&opts.output, e.into()))?;
                            Ok((rec.four_class_label, rec.lang, json))
                        })
                        .collect();
                    for item in done {
                        let (label, lang, json) = item?;
                        w.write_all(json.as_bytes())
                            .and_then(|_| w.write_all(b"\n"))
                            .map_err(|e| Error::io(&opts.output, e))?;
                        stats.written += 1;
                        *stats.per_class.entry(label.name().into()).or_default() += 1;
                        let lang = if lang == Lang::Ja { "ja" } else { "en" };
                        *stats.per_lang.entry(lang.into()).or_default() += 1;
                    }
                }
            }
            Ok(())
        };
        run().map_err(|e| {
            failure = Some(e);
            std::io::Error::other("think")
        })
    });
    if let Some(e) = failure {
        return Err(e);
    }
    res.map_err(|e| Error::Config(e.to_string()))?;
    Ok(stats)
}
