//! Text generation: KV-cached decoding, seeded sampling (temperature, top-k, top-p, repeat
//! penalty), stop tokens, stop strings and a token budget, with incremental text output.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::model::{Forward, Model};
use crate::so8::GateMatrices;
use crate::tokenizer::TextTokenizer;

/// Sampling and stopping settings (defaults as llama.cpp / Ollama: greedy off, T = 0.8).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy. Default 0.8.
    pub temperature: f64,
    /// Nucleus sampling mass; `1.0` disables. Default 0.95.
    pub top_p: f64,
    /// Keep the k most likely tokens; `0` disables. Default 40.
    pub top_k: usize,
    /// Penalty for tokens seen in the last `repeat_last_n`; `1.0` disables. Default 1.0.
    pub repeat_penalty: f32,
    /// Window of the repeat penalty. Default 64.
    pub repeat_last_n: usize,
    /// RNG seed. Default 299792458.
    pub seed: u64,
    /// Maximum new tokens. Default 256.
    pub max_tokens: usize,
    /// Extra token ids that end generation (the tokenizer's stop ids are always used).
    pub stop_token_ids: Vec<u32>,
    /// Strings that end generation; the text is cut before them.
    pub stop_strings: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 299_792_458,
            max_tokens: 256,
            stop_token_ids: vec![],
            stop_strings: vec![],
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with a token budget.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            max_tokens,
            ..Self::default()
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was produced.
    StopToken(u32),
    /// A stop string appeared.
    StopString(String),
    /// `max_tokens` reached.
    Length,
}

/// Picks next tokens from logits.
pub struct Sampler {
    params: SamplingParams,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = rand::rngs::StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// The next token given the last-position logits and the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let mut l: Vec<f32> = logits.to_vec();
        if p.repeat_penalty != 1.0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut seen: Vec<u32> = history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(x) = l.get_mut(t as usize) {
                    *x = if *x > 0.0 {
                        *x / p.repeat_penalty
                    } else {
                        *x * p.repeat_penalty
                    };
                }
            }
        }
        let argmax = || {
            l.iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |b, (i, &x)| {
                    if x > b.1 {
                        (i, x)
                    } else {
                        b
                    }
                })
                .0 as u32
        };
        if p.temperature <= 0.0 {
            return argmax();
        }
        let mut idx: Vec<usize> = (0..l.len()).filter(|&i| l[i].is_finite()).collect();
        if idx.is_empty() {
            return argmax();
        }
        // Candidates by falling logit where top-k / top-p need an order: top-k selects its k in
        // linear time and sorts only those; without either every candidate stays, in any order
        // (a full sort of a 49k vocabulary per token was a third of an RL rollout's time).
        let desc = |a: &usize, b: &usize| l[*b].total_cmp(&l[*a]);
        if p.top_k > 0 && idx.len() > p.top_k {
            idx.select_nth_unstable_by(p.top_k - 1, desc);
            idx.truncate(p.top_k);
            idx.sort_by(desc);
        } else if p.top_p < 1.0 {
            idx.sort_by(desc);
        }
        let max = idx.iter().map(|&i| l[i]).fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| ((l[i] as f64 - max) / p.temperature).exp())
            .collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (k, x) in probs.iter().enumerate() {
                cum += x;
                if cum >= p.top_p {
                    keep = k + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|x| *x /= s);
        }
        let r: f64 = self.rng.gen();
        let mut cum = 0.0;
        for (k, x) in probs.iter().enumerate() {
            cum += x;
            if r < cum {
                return idx[k] as u32;
            }
        }
        idx[idx.len() - 1] as u32
    }
}

/// Turns a growing token list into text deltas: holds back incomplete UTF-8 and any tail
/// that could still become a stop string.
pub struct TextStream {
    emitted: usize,
    stops: Vec<String>,
}

impl TextStream {
    /// A stream that watches for `stops`.
    pub fn new(stops: Vec<String>) -> Self {
        Self { emitted: 0, stops }
    }

    /// Given the full decoded text so far, returns the new safe-to-show text and, if a stop
    /// string appeared, the stop string (the text is then final, cut before it).
    pub fn push(&mut self, text: &str, finished: bool) -> (String, Option<String>) {
        if let Some((pos, s)) = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()).map(|p| (p, s.clone())))
            .min_by_key(|(p, _)| *p)
        {
            let out = text.get(self.emitted..pos).unwrap_or("").to_string();
            self.emitted = pos.max(self.emitted);
            return (out, Some(s));
        }
        let mut safe = text.len();
        if text.ends_with('\u{FFFD}') && !finished {
            safe = text.trim_end_matches('\u{FFFD}').len();
        }
        if !finished {
            for s in &self.stops {
                for k in (1..s.len()).rev() {
                    if s.is_char_boundary(k) && text[..safe].ends_with(&s[..k]) {
                        safe = safe.min(text[..safe].len() - k);
                        break;
                    }
                }
            }
        }
        let out = text.get(self.emitted..safe).unwrap_or("").to_string();
        self.emitted = self.emitted.max(safe);
        (out, None)
    }
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated token ids (without the prompt; a final stop token is included).
    pub tokens: Vec<u32>,
    /// Generated text (stop token and stop string removed).
    pub text: String,
    /// Why it stopped.
    pub stop: StopReason,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Seconds spent on the prompt (prefill).
    pub prefill_secs: f64,
    /// Seconds spent producing tokens after the first.
    pub decode_secs: f64,
}

/// Everything one generation needs.
pub struct GenerateRequest<'a> {
    /// The model.
    pub model: &'a Model,
    /// Its tokenizer.
    pub tokenizer: &'a TextTokenizer,
    /// Prompt token ids.
    pub prompt: &'a [u32],
    /// Sampling and stopping.
    pub params: SamplingParams,
    /// Optional SO(8) gates.
    pub gates: Option<&'a GateMatrices>,
}

/// Generates from a prompt, calling `on_text` with each new piece of text.
pub fn generate(req: GenerateRequest<'_>, mut on_text: impl FnMut(&str)) -> Result<Generation> {
    let GenerateRequest {
        model,
        tokenizer,
        prompt,
        params,
        gates,
    } = req;
    if prompt.is_empty() {
        return Err(Error::Generation("the prompt is empty".into()));
    }
    let ctx = model.cfg.max_position_embeddings;
    if prompt.len() >= ctx {
        return Err(Error::Generation(format!(
            "the prompt has {} tokens, the model's context is {ctx}",
            prompt.len()
        )));
    }
    let mut stops = tokenizer.stop_token_ids.clone();
    stops.extend(&params.stop_token_ids);
    let mut sampler = Sampler::new(params.clone());
    let mut stream = TextStream::new(params.stop_strings.clone());
    let mut cache = Cache::new(model.cfg.num_hidden_layers);
    let mut history = prompt.to_vec();
    let mut tokens = Vec::new();
    let mut input = prompt.to_vec();
    let t0 = Instant::now();
    let mut prefill_secs = 0.0;
    let mut stop = StopReason::Length;
    let mut text = String::new();
    while tokens.len() < params.max_tokens && history.len() < ctx {
        if model.rope_switch_invalidates(cache.seq_len(), history.len()) {
            cache.clear();
            input = history.clone();
        }
        let ids = Tensor::new(input.as_slice(), model.device())?.unsqueeze(0)?;
        let logits = model.forward_last(
            &ids,
            Forward {
                cache: Some(&mut cache),
                gates,
                ..Default::default()
            },
        )?;
        let logits: Vec<f32> = logits
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec1()?;
        if tokens.is_empty() {
            prefill_secs = t0.elapsed().as_secs_f64();
        }
        let next = sampler.sample(&logits, &history);
        tokens.push(next);
        history.push(next);
        if stops.contains(&next) {
            stop = StopReason::StopToken(next);
            break;
        }
        let visible = &tokens[..];
        text = tokenizer.decode(visible, true)?;
        let (delta, hit) = stream.push(&text, false);
        if !delta.is_empty() {
            on_text(&delta);
        }
        if let Some(s) = hit {
            if let Some(p) = text.find(&s) {
                text.truncate(p);
            }
            stop = StopReason::StopString(s);
            return Ok(Generation {
                tokens,
                text,
                stop,
                prompt_tokens: prompt.len(),
                prefill_secs,
                decode_secs: t0.elapsed().as_secs_f64() - prefill_secs,
            });
        }
        input = vec![next];
    }
    let (delta, _) = stream.push(&text, true);
    if !delta.is_empty() {
        on_text(&delta);
    }
    Ok(Generation {
        tokens,
        text,
        stop,
        prompt_tokens: prompt.len(),
        prefill_secs,
        decode_secs: t0.elapsed().as_secs_f64() - prefill_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy(1));
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 1.9], &[]), 1);
    }

    #[test]
    fn repeat_penalty_demotes_seen_tokens() {
        let p = SamplingParams {
            repeat_penalty: 2.0,
            ..SamplingParams::greedy(1)
        };
        let mut s = Sampler::new(p);
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 1.9], &[1]), 3);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_are_reproducible() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams {
            top_k: 1,
            temperature: 1.0,
            ..Default::default()
        };
        let mut s = Sampler::new(p);
        let best = Sampler::new(SamplingParams::greedy(1)).sample(&logits, &[]);
        assert!((0..20).all(|_| s.sample(&logits, &[]) == best));
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
                ..Default::default()
            });
            (0..30).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // p ≈ [0.88, 0.12, ~0]: with top_p 0.5 only token 0 can come out.
        let logits = [4.0f32, 2.0, -20.0];
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.5,
            temperature: 1.0,
            top_k: 0,
            ..Default::default()
        });
        assert!((0..50).all(|_| s.sample(&logits, &[]) == 0));
    }

    /// Draw frequencies over 40,000 draws against the softmax at temperature `temp` restricted to
    /// `keep` (renormalized): each within 0.012.
    fn frequencies_match(logits: &[f32], params: SamplingParams, keep: &[usize]) {
        let temp = params.temperature;
        let mut s = Sampler::new(params);
        let n = 40_000;
        let mut count = vec![0usize; logits.len()];
        for _ in 0..n {
            count[s.sample(logits, &[]) as usize] += 1;
        }
        let w: Vec<f64> = (0..logits.len())
            .map(|i| {
                if keep.contains(&i) {
                    (logits[i] as f64 / temp).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let z: f64 = w.iter().sum();
        for i in 0..logits.len() {
            let got = count[i] as f64 / n as f64;
            assert!(
                (got - w[i] / z).abs() < 0.012,
                "token {i}: {got} vs {}",
                w[i] / z
            );
        }
    }

    #[test]
    fn draws_follow_the_softmax_and_top_k_keeps_the_k_largest() {
        let logits = [0.5f32, 2.0, -1.0, 1.0, 1.5, f32::NEG_INFINITY, 0.0];
        let all: Vec<usize> = (0..7).filter(|&i| i != 5).collect();
        let p = |top_k, temperature| SamplingParams {
            seed: 3,
            top_k,
            top_p: 1.0,
            temperature,
            repeat_penalty: 1.0,
            ..Default::default()
        };
        frequencies_match(&logits, p(0, 1.0), &all);
        frequencies_match(&logits, p(0, 0.7), &all);
        frequencies_match(&logits, p(3, 1.0), &[1, 4, 3]);
        frequencies_match(&logits, p(10, 1.3), &all);
    }

    #[test]
    fn text_stream_holds_back_stop_prefixes() {
        let mut st = TextStream::new(vec!["<|end|>".into()]);
        assert_eq!(st.push("Hello <|e", false), ("Hello ".into(), None));
        assert_eq!(st.push("Hello <|en", false), ("".into(), None));
        let (d, hit) = st.push("Hello <|end|> junk", false);
        assert_eq!((d.as_str(), hit.as_deref()), ("", Some("<|end|>")));
        let mut st = TextStream::new(vec!["STOP".into()]);
        assert_eq!(st.push("abc S", false).0, "abc ");
        assert_eq!(st.push("abc Sx", false).0, "Sx");
    }
}
