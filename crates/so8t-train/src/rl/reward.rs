//! The reward of one sampled answer (spec §8): +`correct` when the class parsed from the final
//! answer is the prompt's label, a format term (every thinking part present and well-formed,
//! exactly one `分類:` line), a penalty when thinking leaks into the final answer, and a penalty
//! when the answer ran out of tokens. Each term is reported on its own. The function is
//! pluggable: `reward.command` hands every sample to an external program instead.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde::{Deserialize, Serialize};
use so8t_data::think::{parse, ThinkFormat, ANSWER_HEADING, STEPS_HEADING};
use so8t_data::Label;

use crate::error::{Error, Result};

/// The thinking aspects of the `tags` format, in order.
pub const ASPECTS: [&str; 6] = ["task", "safety", "logic", "ethics", "practical", "creative"];

/// `reward:` in `rl.yaml`: the weight of every term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// Added when the parsed class is the label.
    pub correct: f64,
    /// Added when a class was parsed but is not the label (usually 0 or negative).
    pub wrong: f64,
    /// Added when the format is right (see [`format_ok`]).
    pub format: f64,
    /// Subtracted when thinking leaks into the final answer.
    pub leak_penalty: f64,
    /// Subtracted when the answer hit `rollout.max_new_tokens` without ending.
    pub overlength_penalty: f64,
    /// An external scorer (program and arguments) used instead of the terms above: it gets one
    /// JSON object per line on stdin (`prompt`, `completion`, `label`, `truncated`, `tokens`) and
    /// answers each with a line holding a number or `{"reward": x, "terms": {…}}`.
    pub command: Vec<String>,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            correct: 1.0,
            wrong: 0.0,
            format: 0.2,
            leak_penalty: 0.5,
            overlength_penalty: 0.2,
            command: vec![],
        }
    }
}

/// One sampled answer to score.
#[derive(Debug, Clone, Serialize)]
pub struct Sample<'a> {
    /// The prompt as text.
    pub prompt: &'a str,
    /// The generated text (without the stop token).
    pub completion: &'a str,
    /// The record's class.
    pub label: Label,
    /// True if generation hit the token budget before a stop token.
    pub truncated: bool,
    /// Generated tokens.
    pub tokens: usize,
}

/// The reward of one sample, term by term (`total` is their sum).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardTerms {
    /// The sum of the terms.
    pub total: f64,
    /// The class term (`correct`, `wrong` or 0 when no class could be parsed).
    pub class: f64,
    /// The format term.
    pub format: f64,
    /// The leak penalty (≤ 0).
    pub leak: f64,
    /// The over-length penalty (≤ 0).
    pub overlength: f64,
    /// Whether the parsed class is the label.
    pub correct: bool,
    /// Whether a class was parsed at all.
    pub parsed: bool,
}

/// The final answer of a completion in either format, if it has one.
pub fn final_text(completion: &str, format: ThinkFormat) -> Option<String> {
    if let Ok(p) = parse(completion) {
        return Some(p.final_text);
    }
    match format {
        // Lenient: the last <final>…</final> even when the thinking is malformed.
        ThinkFormat::Tags => {
            let start = completion.rfind("<final>")? + "<final>".len();
            let end = completion[start..].find("</final>")? + start;
            Some(completion[start..end].to_string())
        }
        ThinkFormat::Steps => completion
            .split_once(ANSWER_HEADING)
            .map(|(_, a)| a.trim_start_matches('\n').to_string()),
    }
}

/// True if the completion is well-formed in `format`: it parses; in `tags`, the six thinking
/// parts appear once each in order, none empty; in `steps`, there is thinking; and the whole
/// completion has exactly one `分類:` line, inside the final answer, with a valid class.
pub fn format_ok(completion: &str, format: ThinkFormat) -> bool {
    let Ok(p) = parse(completion) else {
        return false;
    };
    if p.format != format || p.class.is_none() {
        return false;
    }
    let parts_ok = match format {
        ThinkFormat::Tags => {
            p.thinking.len() == ASPECTS.len()
                && p.thinking
                    .iter()
                    .zip(ASPECTS)
                    .all(|((a, body), want)| a == want && !body.trim().is_empty())
        }
        ThinkFormat::Steps => !p.thinking.is_empty(),
    };
    let is_class_line = |l: &str| {
        let l = l.trim_start();
        l.starts_with("分類:") || l.starts_with("分類：")
    };
    let class_lines = p.final_text.lines().filter(|l| is_class_line(l)).count()
        + p.thinking
            .iter()
            .map(|(_, body)| body.lines().filter(|l| is_class_line(l)).count())
            .sum::<usize>();
    parts_ok && class_lines == 1
}

/// True if thinking leaks into the final answer: a thinking tag or the thinking heading inside
/// it, or a whole thinking part (24 characters or more) repeated in it word for word. (Answers
/// may share a phrase with their thinking, e.g. the alternative they offer.)
pub fn leaks(completion: &str, final_answer: &str) -> bool {
    if final_answer.contains("<think") || final_answer.contains("</think") {
        return true;
    }
    if final_answer.contains(STEPS_HEADING) {
        return true;
    }
    let Ok(p) = parse(completion) else {
        return false;
    };
    p.thinking.iter().any(|(_, body)| {
        let body = body.trim();
        body.chars().count() >= 24 && final_answer.contains(body)
    })
}

/// The built-in four-class reward of one sample.
pub fn four_class(s: &Sample<'_>, format: ThinkFormat, w: &RewardConfig) -> RewardTerms {
    let fin = final_text(s.completion, format);
    let class = fin.as_deref().and_then(so8t_data::think::parse_class);
    let correct = class == Some(s.label);
    let class_term = match class {
        Some(_) if correct => w.correct,
        Some(_) => w.wrong,
        None => 0.0,
    };
    let format_term = if format_ok(s.completion, format) {
        w.format
    } else {
        0.0
    };
    let leak = match &fin {
        Some(f) if leaks(s.completion, f) => -w.leak_penalty,
        _ => 0.0,
    };
    let overlength = if s.truncated {
        -w.overlength_penalty
    } else {
        0.0
    };
    RewardTerms {
        total: class_term + format_term + leak + overlength,
        class: class_term,
        format: format_term,
        leak,
        overlength,
        correct,
        parsed: class.is_some(),
    }
}

/// A reward function: the built-in four-class terms or an external program.
pub enum Scorer {
    /// [`four_class`] with these weights.
    FourClass(ThinkFormat, RewardConfig),
    /// `reward.command`.
    External(External),
}

impl Scorer {
    /// The scorer `cfg` asks for.
    pub fn new(cfg: &RewardConfig, format: ThinkFormat) -> Result<Self> {
        if cfg.command.is_empty() {
            Ok(Self::FourClass(format, cfg.clone()))
        } else {
            Ok(Self::External(External::spawn(&cfg.command)?))
        }
    }

    /// Scores one sample.
    pub fn score(&mut self, s: &Sample<'_>) -> Result<RewardTerms> {
        match self {
            Self::FourClass(f, w) => Ok(four_class(s, *f, w)),
            Self::External(e) => e.score(s),
        }
    }
}

/// A running external scorer (one process for the whole run).
pub struct External {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl External {
    fn spawn(command: &[String]) -> Result<Self> {
        let name = command.join(" ");
        let err = |msg: String| Error::invalid("reward.command", msg);
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("{name}: {e}")))?;
        let stdin = child.stdin.take().ok_or_else(|| err(name.clone()))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| err(name.clone()))?);
        Ok(Self {
            name,
            child,
            stdin,
            stdout,
        })
    }

    fn score(&mut self, s: &Sample<'_>) -> Result<RewardTerms> {
        let err = |msg: String| Error::invalid("reward.command", format!("{}: {msg}", self.name));
        let mut line = serde_json::json!({
            "prompt": s.prompt,
            "completion": s.completion,
            "label": s.label.name(),
            "truncated": s.truncated,
            "tokens": s.tokens,
        })
        .to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|_| self.stdin.flush())
            .map_err(|e| err(format!("writing to it: {e}")))?;
        let mut answer = String::new();
        let n = self
            .stdout
            .read_line(&mut answer)
            .map_err(|e| err(format!("reading from it: {e}")))?;
        if n == 0 {
            return Err(err("it exited without answering".into()));
        }
        let v: serde_json::Value = serde_json::from_str(answer.trim())
            .map_err(|e| err(format!("answer {:?} is not JSON: {e}", answer.trim())))?;
        let total = v
            .as_f64()
            .or_else(|| v.get("reward").and_then(|r| r.as_f64()))
            .filter(|x| x.is_finite())
            .ok_or_else(|| {
                err(format!(
                    "answer {:?}: expected a number or {{\"reward\": x}}",
                    answer.trim()
                ))
            })?;
        let term = |k: &str| v.pointer(&format!("/terms/{k}")).and_then(|x| x.as_f64());
        Ok(RewardTerms {
            total,
            class: term("class").unwrap_or(total),
            format: term("format").unwrap_or(0.0),
            leak: term("leak").unwrap_or(0.0),
            overlength: term("overlength").unwrap_or(0.0),
            correct: v.get("correct").and_then(|c| c.as_bool()).unwrap_or(false),
            parsed: true,
        })
    }
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
