//! The tensor losses equal the per-token formulas of `advantage` on random inputs.

use candle_core::{Device, Tensor};

use super::advantage::{clipped_policy_loss, clipped_value_loss, k3_kl};
use super::loss::*;

/// Deterministic pseudo-random numbers in [lo, hi).
fn rand(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn t(v: &[f32], n: usize, r: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), (n, r), &Device::Cpu).unwrap()
}

const N: usize = 3;
const R: usize = 5;

fn mask() -> Vec<f32> {
    // Answers of 5, 3 and 1 tokens.
    let lens = [5, 3, 1];
    (0..N * R)
        .map(|i| if i % R < lens[i / R] { 1.0 } else { 0.0 })
        .collect()
}

#[test]
fn ppo_loss_is_the_masked_mean_of_the_token_formulas() {
    let logp = rand(N * R, 1, -3.0, -0.1);
    let old = rand(N * R, 2, -3.0, -0.1);
    let adv = rand(N * R, 3, -2.0, 2.0);
    let val = rand(N * R, 4, -1.0, 1.0);
    let old_val = rand(N * R, 5, -1.0, 1.0);
    let ret = rand(N * R, 6, -1.0, 1.5);
    let ent = rand(N * R, 7, 0.0, 2.0);
    let m = mask();
    let out = TokenOutputs {
        logp: t(&logp, N, R),
        entropy: Some(t(&ent, N, R)),
        values: Some(t(&val, N, R)),
    };
    let b = PpoBatch {
        old_logp: &t(&old, N, R),
        old_values: &t(&old_val, N, R),
        advantages: &t(&adv, N, R),
        returns: &t(&ret, N, R),
        mask: &t(&m, N, R),
    };
    let (loss, st) = ppo_loss(&out, &b, Norm::of(b.mask).unwrap(), 0.2, 0.3, 0.5, 0.01).unwrap();
    let count: f64 = m.iter().map(|&x| x as f64).sum();
    let mean =
        |f: &dyn Fn(usize) -> f64| (0..N * R).map(|i| f(i) * m[i] as f64).sum::<f64>() / count;
    let pg =
        mean(&|i| clipped_policy_loss((logp[i] as f64 - old[i] as f64).exp(), adv[i] as f64, 0.2));
    let vf = mean(&|i| clipped_value_loss(val[i] as f64, old_val[i] as f64, ret[i] as f64, 0.3));
    let e = mean(&|i| ent[i] as f64);
    let want = pg + 0.5 * vf - 0.01 * e;
    let got = loss.to_scalar::<f32>().unwrap() as f64;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    assert!((st.policy - pg).abs() < 1e-5 && (st.value - vf).abs() < 1e-5);
    let akl = mean(&|i| {
        let lr = logp[i] as f64 - old[i] as f64;
        lr.exp() - 1.0 - lr
    });
    assert!(
        (st.approx_kl - akl).abs() < 1e-5,
        "{} vs {akl}",
        st.approx_kl
    );
    let cf = mean(&|i| {
        f64::from(u8::from(
            (((logp[i] - old[i]) as f64).exp() - 1.0).abs() > 0.2,
        ))
    });
    assert!((st.clip_fraction - cf).abs() < 1e-6);
}

#[test]
fn grpo_loss_averages_tokens_per_answer_then_answers() {
    let logp = rand(N * R, 11, -3.0, -0.1);
    let old = rand(N * R, 12, -3.0, -0.1);
    let refp = rand(N * R, 13, -3.0, -0.1);
    let adv = rand(N, 14, -1.5, 1.5);
    let m = mask();
    let out = TokenOutputs {
        logp: t(&logp, N, R),
        entropy: None,
        values: None,
    };
    let b = GrpoBatch {
        old_logp: &t(&old, N, R),
        ref_logp: &t(&refp, N, R),
        advantages: &Tensor::from_vec(adv.clone(), N, &Device::Cpu).unwrap(),
        mask: &t(&m, N, R),
    };
    let beta = 0.04;
    let (loss, st) = grpo_loss(&out, &b, Norm::of(b.mask).unwrap(), 0.2, beta, 0.0).unwrap();
    let mut want = 0.0;
    let mut kl = 0.0;
    for (a, &adv_a) in adv.iter().enumerate() {
        let (mut s, mut k, mut n) = (0.0, 0.0, 0.0);
        for j in 0..R {
            let i = a * R + j;
            if m[i] == 0.0 {
                continue;
            }
            let ratio = (logp[i] as f64 - old[i] as f64).exp();
            let k3 = k3_kl(logp[i] as f64, refp[i] as f64);
            s += clipped_policy_loss(ratio, adv_a as f64, 0.2) + beta * k3;
            k += k3;
            n += 1.0;
        }
        want += s / n / N as f64;
        kl += k / n / N as f64;
    }
    let got = loss.to_scalar::<f32>().unwrap() as f64;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    assert!((st.kl - kl).abs() < 1e-5);
}

/// Rows `lo..hi` of an `[N, R]` tensor.
fn rows(x: &Tensor, lo: usize, hi: usize) -> Tensor {
    x.narrow(0, lo, hi - lo).unwrap()
}

/// Split into micro-batches (rows 0..2 and 2..3) with the whole batch's `Norm`, the losses and
/// statistics of the parts add up to those of the batch in one piece, for PPO and GRPO.
#[test]
fn micro_batches_with_the_whole_norm_add_up_to_the_whole() {
    let v = |seed| t(&rand(N * R, seed, -2.0, -0.1), N, R);
    let (logp, old, refp, val, old_val, ret, ent, adv_t) =
        (v(21), v(22), v(23), v(24), v(25), v(26), v(27), v(28));
    let adv = Tensor::from_vec(rand(N, 29, -1.5, 1.5), N, &Device::Cpu).unwrap();
    let m = t(&mask(), N, R);
    let norm = Norm::of(&m).unwrap();
    let ppo = |lo, hi| {
        let out = TokenOutputs {
            logp: rows(&logp, lo, hi),
            entropy: Some(rows(&ent, lo, hi)),
            values: Some(rows(&val, lo, hi)),
        };
        let b = PpoBatch {
            old_logp: &rows(&old, lo, hi),
            old_values: &rows(&old_val, lo, hi),
            advantages: &rows(&adv_t, lo, hi),
            returns: &rows(&ret, lo, hi),
            mask: &rows(&m, lo, hi),
        };
        ppo_loss(&out, &b, norm, 0.2, 0.3, 0.5, 0.01).unwrap()
    };
    let grpo = |lo, hi| {
        let out = TokenOutputs {
            logp: rows(&logp, lo, hi),
            entropy: Some(rows(&ent, lo, hi)),
            values: None,
        };
        let b = GrpoBatch {
            old_logp: &rows(&old, lo, hi),
            ref_logp: &rows(&refp, lo, hi),
            advantages: &adv.narrow(0, lo, hi - lo).unwrap(),
            mask: &rows(&m, lo, hi),
        };
        grpo_loss(&out, &b, norm, 0.2, 0.04, 0.01).unwrap()
    };
    type Loss<'a> = &'a dyn Fn(usize, usize) -> (Tensor, UpdateStats);
    for (name, f) in [("ppo", &ppo as Loss), ("grpo", &grpo as Loss)] {
        let (whole, w) = f(0, N);
        let (a, sa) = f(0, 2);
        let (b, sb) = f(2, N);
        let num = |x: &Tensor| x.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (num(&a) + num(&b) - num(&whole)).abs() < 1e-5,
            "{name} loss"
        );
        for (what, x, y, z) in [
            ("policy", sa.policy, sb.policy, w.policy),
            ("value", sa.value, sb.value, w.value),
            ("entropy", sa.entropy, sb.entropy, w.entropy),
            ("kl", sa.kl, sb.kl, w.kl),
            ("approx_kl", sa.approx_kl, sb.approx_kl, w.approx_kl),
            ("clip", sa.clip_fraction, sb.clip_fraction, w.clip_fraction),
        ] {
            assert!((x + y - z).abs() < 1e-5, "{name} {what}: {x} + {y} vs {z}");
        }
        // The parts differ (the split is not trivially one-sided).
        assert!(num(&a).abs() > 1e-6 && num(&b).abs() > 1e-6, "{name}");
    }
}

#[test]
fn the_layout_aligns_answers() {
    let rows: Vec<(&[u32], &[u32])> = vec![(&[5, 6, 7], &[8, 9]), (&[4], &[3, 2, 1])];
    let l = Layout::new(&rows, 3, 3, &Device::Cpu).unwrap();
    assert_eq!(
        l.ids.to_vec2::<u32>().unwrap(),
        vec![vec![5, 6, 7, 8, 9, 0], vec![0, 0, 4, 3, 2, 1]]
    );
    assert_eq!(
        l.attention.to_vec2::<u32>().unwrap(),
        vec![vec![1, 1, 1, 1, 1, 0], vec![0, 0, 1, 1, 1, 1]]
    );
    assert_eq!(
        l.mask.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 1.0, 0.0], vec![1.0, 1.0, 1.0]]
    );
}
