//! RL rollouts on the embedded tiny model: a row of a left-padded batch samples what it samples
//! alone with the same seed; seeds make answers reproducible; `min_new` keeps stop tokens out of
//! an answer's first tokens; `max_new` truncates.

mod common;

use candle_core::{DType, Device};
use so8t_model::generate::SamplingParams;
use so8t_model::Model;
use so8t_train::rl::rollout::{sample, Budget, Response};

fn params() -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        repeat_penalty: 1.0,
        ..SamplingParams::default()
    }
}

#[test]
fn batched_rows_match_single_rows_and_budgets_hold() {
    let t = tempfile::tempdir().unwrap();
    let model = Model::load(&common::tiny_model(t.path()), DType::F32, &Device::Cpu).unwrap();
    let prompts: Vec<Vec<u32>> = vec![(10..40).collect(), vec![5, 6, 7], (100..112).collect()];
    let seeds = [11, 22, 33];
    // A quarter of the vocabulary stops an answer: unconstrained answers end early.
    let stops: Vec<u32> = (0..512).filter(|i| i % 4 == 1).collect();
    let free = Budget {
        min_new: 0,
        max_new: 24,
        stop_ids: &stops,
    };
    let go = |p: &[Vec<u32>], s: &[u64], b: Budget| -> Vec<Response> {
        sample(&model, None, p, &params(), s, b).unwrap()
    };
    let batch = go(&prompts, &seeds, free);
    for (r, p) in prompts.iter().enumerate() {
        let alone = go(std::slice::from_ref(p), &seeds[r..=r], free);
        assert_eq!(alone[0], batch[r], "row {r} differs from its batch row");
    }
    assert_eq!(
        go(&prompts, &seeds, free),
        batch,
        "same seeds, other answers"
    );
    assert_ne!(go(&prompts, &[12, 23, 34], free), batch, "seeds ignored");
    let lens: Vec<usize> = batch.iter().map(|a| a.tokens.len()).collect();
    assert!(
        lens.iter().any(|&n| n < 8),
        "answers did not stop early: {lens:?}"
    );
    for a in &batch {
        assert_eq!(a.truncated, !stops.contains(a.tokens.last().unwrap()));
    }

    // min_new: no stop token among the first 8; max_new: exactly at most 24, marked truncated.
    let held = go(&prompts, &seeds, Budget { min_new: 8, ..free });
    for a in &held {
        assert!(a.tokens.len() >= 8, "{:?}", a.tokens);
        assert!(
            a.tokens[..8].iter().all(|t| !stops.contains(t)),
            "{:?}",
            a.tokens
        );
        assert!(a.tokens.len() <= 24);
        assert_eq!(
            a.truncated,
            a.tokens.len() == 24 && !stops.contains(&a.tokens[23])
        );
    }
    let fixed = go(
        &prompts,
        &seeds,
        Budget {
            min_new: 24,
            ..free
        },
    );
    assert!(fixed.iter().all(|a| a.tokens.len() == 24 && a.truncated));
}
