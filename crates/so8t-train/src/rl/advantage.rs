//! The numbers of PPO and GRPO that do not need a model: generalized advantage estimation,
//! advantage whitening, GRPO's group-normalized advantages, the clipped surrogate and value
//! losses per token, and the adaptive KL coefficient. The tensor losses of [`super::loss`] are
//! tested against these.

/// GAE over one response (Schulman et al. 2016): `rewards[t]` and `values[t]` per token; the
/// episode ends after the last token (its next value is 0). Returns (advantages, returns), where
/// δₜ = rₜ + γ·vₜ₊₁ − vₜ, Aₜ = δₜ + γλ·Aₜ₊₁ and returnₜ = Aₜ + vₜ.
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lambda: f64) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len().min(values.len());
    let mut adv = vec![0.0; n];
    let mut next_adv = 0.0;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_value - values[t];
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv;
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// Whitens `x` in place over all its entries: (x − mean) / (std + 1e-8), with the population
/// standard deviation. `keep_mean` adds the mean back (TRL's `shift_mean=False`).
pub fn whiten(x: &mut [f64], keep_mean: bool) {
    if x.is_empty() {
        return;
    }
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let scale = 1.0 / (var.sqrt() + 1e-8);
    for v in x.iter_mut() {
        *v = (*v - mean) * scale + if keep_mean { mean } else { 0.0 };
    }
}

/// GRPO's advantages: `rewards` in consecutive groups of `group` samples of one prompt, each
/// reward normalized within its group, (r − mean) / (std + 1e-4), with the sample (n − 1)
/// standard deviation as DeepSeekMath and TRL use. A group whose rewards are all equal gets 0.
pub fn group_advantages(rewards: &[f64], group: usize) -> Vec<f64> {
    let group = group.max(1);
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group) {
        let n = g.len() as f64;
        let mean = g.iter().sum::<f64>() / n;
        let std = if g.len() > 1 {
            (g.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        out.extend(g.iter().map(|r| (r - mean) / (std + 1e-4)));
    }
    out
}

/// PPO's clipped surrogate loss of one token: max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε)).
pub fn clipped_policy_loss(ratio: f64, advantage: f64, eps: f64) -> f64 {
    let clipped = ratio.clamp(1.0 - eps, 1.0 + eps);
    (-advantage * ratio).max(-advantage * clipped)
}

/// PPO's clipped value loss of one token: ½·max((v − R)², (v_old + clip(v − v_old, ±c) − R)²).
pub fn clipped_value_loss(value: f64, old_value: f64, ret: f64, clip: f64) -> f64 {
    let clipped = old_value + (value - old_value).clamp(-clip, clip);
    0.5 * (value - ret).powi(2).max((clipped - ret).powi(2))
}

/// The k3 estimator of KL(π‖π_ref) per token used by GRPO: exp(r − p) − (r − p) − 1 with p, r the
/// policy's and the reference's log-probabilities of the sampled token (≥ 0, unbiased).
pub fn k3_kl(logp: f64, ref_logp: f64) -> f64 {
    let d = ref_logp - logp;
    d.exp() - d - 1.0
}

/// The adaptive KL coefficient of Ziegler et al. (2019): β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon)
/// after a batch of `n` samples whose mean KL was `kl`.
pub fn adapt_beta(beta: f64, kl: f64, target: f64, n: usize, horizon: f64) -> f64 {
    let err = (kl / target - 1.0).clamp(-0.2, 0.2);
    beta * (1.0 + err * n as f64 / horizon)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn gae_by_hand() {
        // γ = 0.9, λ = 0.5, r = [0, 0, 1], v = [0.5, 0.2, 0.4]:
        // δ2 = 1 − 0.4 = 0.6; δ1 = 0 + 0.9·0.4 − 0.2 = 0.16; δ0 = 0 + 0.9·0.2 − 0.5 = −0.32
        // A2 = 0.6; A1 = 0.16 + 0.45·0.6 = 0.43; A0 = −0.32 + 0.45·0.43 = −0.1265
        let (a, r) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.2, 0.4], 0.9, 0.5);
        close(&a, &[-0.1265, 0.43, 0.6]);
        close(&r, &[0.3735, 0.63, 1.0]);
        // λ = 1, γ = 1: advantages are returns-to-go minus the values.
        let (a, r) = gae(&[1.0, 2.0, 3.0], &[0.5, 0.5, 0.5], 1.0, 1.0);
        close(&a, &[5.5, 4.5, 2.5]);
        close(&r, &[6.0, 5.0, 3.0]);
        // λ = 0: one-step TD errors.
        let (a, _) = gae(&[1.0, 0.0], &[0.25, 0.5], 1.0, 0.0);
        close(&a, &[1.25, -0.5]);
    }

    #[test]
    fn whiten_by_hand() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        whiten(&mut x, false);
        // mean 2.5, population std √1.25
        let s = 1.25f64.sqrt() + 1e-8;
        close(&x, &[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]);
        let mut y = vec![1.0, 3.0];
        whiten(&mut y, true);
        close(&y, &[-1.0 / (1.0 + 1e-8) + 2.0, 1.0 / (1.0 + 1e-8) + 2.0]);
    }

    #[test]
    fn group_advantages_by_hand() {
        // Group [1, 0, 0, 1]: mean 0.5, sample std √(1/3); group [0, 0]: all equal → 0.
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0, 0.0, 0.0], 4);
        let s = (1.0f64 / 3.0).sqrt() + 1e-4;
        close(&a[..4], &[0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s]);
        let b = group_advantages(&[2.0, 2.0], 2);
        close(&b, &[0.0, 0.0]);
    }

    #[test]
    fn clipped_losses_by_hand() {
        // A > 0: the ratio's gain is capped at 1 + ε.
        assert!((clipped_policy_loss(1.5, 2.0, 0.2) - (-2.4)).abs() < 1e-12);
        assert!((clipped_policy_loss(0.5, 2.0, 0.2) - (-1.0)).abs() < 1e-12);
        // A < 0: the pessimistic (larger) loss wins.
        assert!((clipped_policy_loss(0.5, -1.0, 0.2) - 0.8).abs() < 1e-12);
        assert!((clipped_policy_loss(1.5, -1.0, 0.2) - 1.5).abs() < 1e-12);
        // Value: v = 2, v_old = 1, R = 1.5, c = 0.2 → max(0.25, 0.09)/2.
        assert!((clipped_value_loss(2.0, 1.0, 1.5, 0.2) - 0.125).abs() < 1e-12);
        // v moved towards R past the clip: the clipped (worse) one counts.
        assert!((clipped_value_loss(1.5, 1.0, 1.5, 0.2) - 0.5 * 0.09).abs() < 1e-12);
    }

    #[test]
    fn kl_and_beta_by_hand() {
        assert_eq!(k3_kl(-1.0, -1.0), 0.0);
        let d: f64 = 0.5;
        assert!((k3_kl(-1.0, -0.5) - (d.exp() - d - 1.0)).abs() < 1e-12);
        assert!(k3_kl(-0.2, -3.0) > 0.0);
        // KL twice the target: error clipped to +0.2, n/horizon = 0.1 → β·1.02.
        assert!((adapt_beta(0.1, 2.0, 1.0, 100, 1000.0) - 0.102).abs() < 1e-12);
        assert!((adapt_beta(0.1, 0.9, 1.0, 100, 1000.0) - 0.1 * (1.0 - 0.01)).abs() < 1e-12);
    }
}
