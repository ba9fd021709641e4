//! One item asked and scored: the per-item record every run writes (JSONL) and the A/B test
//! pairs on.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::tasks::{
    gsm8k_exact_match, gsm8k_extract_flexible, gsm8k_extract_strict, parse_four_class, Gold, Item,
    Query, TaskKind,
};

/// The result of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// The task's name.
    pub task: String,
    /// The item's id.
    pub id: String,
    /// The benchmark (`mmlu`, `hellaswag`, `gsm8k`, `four_class`, `jcommonsenseqa`; empty in
    /// results written before this field existed).
    #[serde(default)]
    pub kind: String,
    /// Right by the task's headline metric (`acc`, strict `exact_match`, four-class accuracy).
    pub correct: bool,
    /// HellaSwag: right by `acc_norm`; GSM8K: right by the flexible extraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_alt: Option<bool>,
    /// The gold choice or class id (GSM8K: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold: Option<usize>,
    /// The predicted choice or class id (`None` for an unparseable class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pred: Option<usize>,
    /// Log-likelihood of each choice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loglikelihoods: Vec<f64>,
    /// Whether each choice was the greedy continuation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub greedy: Vec<bool>,
    /// The generated text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// GSM8K: the strict and flexible extractions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<(String, String)>,
    /// Seconds the backend took.
    pub latency_s: f64,
    /// Tokens scored or generated.
    pub tokens: usize,
    /// The backend's error, after retries (the item counts as wrong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Asks `backend` one item and scores the answer.
pub fn score_item(task: &str, kind: TaskKind, item: &Item, backend: &dyn Backend) -> ItemResult {
    let t0 = Instant::now();
    let mut r = ItemResult {
        task: task.to_string(),
        id: item.id.clone(),
        kind: kind.name().to_string(),
        correct: false,
        correct_alt: None,
        gold: None,
        pred: None,
        loglikelihoods: Vec::new(),
        greedy: Vec::new(),
        output: None,
        extracted: None,
        latency_s: 0.0,
        tokens: 0,
        error: None,
    };
    match &item.query {
        Query::Choice {
            context,
            continuations,
            norm_lens,
            gold,
        } => {
            r.gold = Some(*gold);
            match backend.loglikelihood(context, continuations) {
                Ok(lls) => {
                    r.loglikelihoods = lls.iter().map(|l| l.logprob).collect();
                    r.greedy = lls.iter().map(|l| l.greedy).collect();
                    r.tokens = lls.iter().map(|l| l.tokens).sum();
                    let pred = argmax(&r.loglikelihoods);
                    r.pred = Some(pred);
                    r.correct = pred == *gold;
                    if matches!(kind, TaskKind::Hellaswag | TaskKind::JCommonsenseQa) {
                        let norm: Vec<f64> = r
                            .loglikelihoods
                            .iter()
                            .zip(norm_lens)
                            .map(|(l, &n)| l / n.max(1) as f64)
                            .collect();
                        r.correct_alt = Some(argmax(&norm) == *gold);
                    }
                }
                Err(e) => r.error = Some(e.to_string()),
            }
        }
        Query::Generate {
            prompt,
            until,
            max_tokens,
            gold,
        } => match backend.generate(prompt, until, *max_tokens) {
            Ok(g) => {
                r.tokens = g.tokens;
                match gold {
                    Gold::Answer(answer) => {
                        let strict = gsm8k_extract_strict(&g.text);
                        let flexible = gsm8k_extract_flexible(&g.text);
                        r.correct = gsm8k_exact_match(&strict, answer);
                        r.correct_alt = Some(gsm8k_exact_match(&flexible, answer));
                        r.extracted = Some((strict, flexible));
                    }
                    Gold::Class(c) => {
                        r.gold = Some(*c);
                        r.pred = parse_four_class(&g.text);
                        r.correct = r.pred == Some(*c);
                    }
                }
                r.output = Some(g.text);
            }
            Err(e) => {
                r.error = Some(e.to_string());
                if let Gold::Class(c) = gold {
                    r.gold = Some(*c);
                }
            }
        },
    }
    r.latency_s = t0.elapsed().as_secs_f64();
    r
}
