//! Timing the engine the way `llama-bench` times llama.cpp: prompt processing as one forward
//! pass over `P` tokens, token generation as `N` single-token passes, in process (no HTTP, no
//! sampling), repeated `R` times. `so8t bench infer` prints it.

use std::time::Instant;

use super::{BatchEntry, EngineError, ForwardOut, Runner};

/// What to time.
#[derive(Debug, Clone, Copy)]
pub struct BenchSpec {
    /// Prompt tokens of the prompt-processing test (0: skip it).
    pub prompt: usize,
    /// Generated tokens of the generation test (0: skip it).
    pub generate: usize,
    /// Repetitions of each test.
    pub reps: usize,
}

/// Tokens/s of each repetition of one test.
#[derive(Debug, Clone, Default)]
pub struct Rates(pub Vec<f64>);

impl Rates {
    /// Mean (what llama-bench reports as `avg_ts`); 0 without samples.
    pub fn mean(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().sum::<f64>() / self.0.len() as f64
    }

    /// Sample standard deviation (`stddev_ts`); 0 with fewer than two samples.
    pub fn stddev(&self) -> f64 {
        let n = self.0.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.0.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64).sqrt()
    }

    /// The fastest repetition.
    pub fn best(&self) -> f64 {
        self.0.iter().copied().fold(0.0, f64::max)
    }
}

/// Results of [`run`].
#[derive(Debug, Clone, Default)]
pub struct BenchResult {
    /// Prompt processing tokens/s.
    pub prompt: Rates,
    /// Generation tokens/s.
    pub generate: Rates,
}

/// A token id that is valid in any vocabulary of at least 1,100 entries and varies with the
/// position (the rate does not depend on which tokens they are).
fn token_at(pos: usize, vocab: usize) -> u32 {
    ((pos * 7919) % 1000 + 100).min(vocab.saturating_sub(1)) as u32
}

/// Times `spec` on `runner` after one untimed warm-up of each test. Generation starts after a
/// one-token prompt, as llama-bench's `tg` test does, and asks for logits at every step.
pub fn run(runner: &mut Runner, spec: BenchSpec) -> Result<BenchResult, EngineError> {
    let model = runner.model.clone();
    let vocab = model.cfg.vocab;
    let entry = |pos: usize, logits: bool| BatchEntry {
        cache: 0,
        token: token_at(pos, vocab),
        pos,
        logits,
    };
    let mut out = ForwardOut::default();
    let mut result = BenchResult::default();
    for rep in 0..=spec.reps {
        if spec.prompt > 0 {
            let mut cache = model.new_cache();
            let batch: Vec<BatchEntry> = (0..spec.prompt)
                .map(|pos| entry(pos, pos + 1 == spec.prompt))
                .collect();
            let t = Instant::now();
            runner.forward(&mut [&mut cache], &batch, false, &mut out)?;
            let rate = spec.prompt as f64 / t.elapsed().as_secs_f64();
            if rep > 0 {
                result.prompt.0.push(rate);
            }
        }
        if spec.generate > 0 {
            let mut cache = model.new_cache();
            runner.forward(&mut [&mut cache], &[entry(0, true)], false, &mut out)?;
            let t = Instant::now();
            for pos in 1..=spec.generate {
                runner.forward(&mut [&mut cache], &[entry(pos, true)], false, &mut out)?;
            }
            let rate = spec.generate as f64 / t.elapsed().as_secs_f64();
            if rep > 0 {
                result.generate.0.push(rate);
            }
        }
    }
    Ok(result)
}

/// How far one runner's logits are from another's on the same tokens.
#[derive(Debug, Clone, Default)]
pub struct Agreement {
    /// Positions compared.
    pub positions: usize,
    /// Largest `max |Δlogit| / max |logit|` of a position.
    pub max_rel: f64,
    /// Mean of that over positions.
    pub mean_rel: f64,
    /// Share of positions whose most likely token is the same.
    pub top1: f64,
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]))
        .unwrap_or(0)
}

/// Compares `runner`'s logits with `reference`'s on `tokens` tokens: the first half of them as
/// one prompt pass, the rest one token a pass (so both the prompt and the decoding paths of
/// `runner` are checked against `reference`'s single pass).
pub fn agreement(
    runner: &mut Runner,
    reference: &mut Runner,
    tokens: usize,
) -> Result<Agreement, EngineError> {
    let model = runner.model.clone();
    let vocab = model.cfg.vocab;
    let ids: Vec<u32> = (0..tokens).map(|p| token_at(p, vocab)).collect();
    let want = reference.logits_all(&ids)?;
    let mut got = Vec::with_capacity(want.len());
    // LongRoPE: the long factors when the reference's single pass picks them.
    let mut cache = model.cache_for(tokens);
    let mut out = ForwardOut::default();
    let prompt = tokens.div_ceil(2);
    let batch: Vec<BatchEntry> = (0..prompt)
        .map(|pos| BatchEntry {
            cache: 0,
            token: ids[pos],
            pos,
            logits: true,
        })
        .collect();
    runner.forward(&mut [&mut cache], &batch, false, &mut out)?;
    got.extend_from_slice(&out.logits);
    for (pos, &token) in ids.iter().enumerate().skip(prompt) {
        let e = BatchEntry {
            cache: 0,
            token,
            pos,
            logits: true,
        };
        runner.forward(&mut [&mut cache], &[e], false, &mut out)?;
        got.extend_from_slice(&out.logits);
    }
    let mut a = Agreement {
        positions: tokens,
        ..Agreement::default()
    };
    let mut same = 0usize;
    for (g, w) in got.chunks_exact(vocab).zip(want.chunks_exact(vocab)) {
        let scale = w
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()))
            .max(f32::MIN_POSITIVE);
        let d = g.iter().zip(w).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let rel = (d / scale) as f64;
        a.max_rel = a.max_rel.max(rel);
        a.mean_rel += rel / tokens as f64;
        same += (argmax(g) == argmax(w)) as usize;
    }
    a.top1 = same as f64 / tokens as f64;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_statistics() {
        let r = Rates(vec![10.0, 20.0, 30.0]);
        assert_eq!(r.mean(), 20.0);
        assert_eq!(r.stddev(), 10.0);
        assert_eq!(r.best(), 30.0);
        assert_eq!(Rates::default().mean(), 0.0);
        assert_eq!(Rates(vec![5.0]).stddev(), 0.0);
    }
}
