//! Timing the engine the way `llama-bench` times llama.cpp: prompt processing as one forward
//! pass over `P` tokens, token generation as `N` single-token passes, in process (no HTTP, no
//! sampling), repeated `R` times. `so8t bench infer` prints it.

use std::time::Instant;

use super::{BatchEntry, ForwardOut, Runner};

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
pub fn run(runner: &mut Runner, spec: BenchSpec) -> BenchResult {
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
            runner.forward(&mut [&mut cache], &batch, false, &mut out);
            let rate = spec.prompt as f64 / t.elapsed().as_secs_f64();
            if rep > 0 {
                result.prompt.0.push(rate);
            }
        }
        if spec.generate > 0 {
            let mut cache = model.new_cache();
            runner.forward(&mut [&mut cache], &[entry(0, true)], false, &mut out);
            let t = Instant::now();
            for pos in 1..=spec.generate {
                runner.forward(&mut [&mut cache], &[entry(pos, true)], false, &mut out);
            }
            let rate = spec.generate as f64 / t.elapsed().as_secs_f64();
            if rep > 0 {
                result.generate.0.push(rate);
            }
        }
    }
    result
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
