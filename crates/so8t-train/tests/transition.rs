//! Phase-transition detection: a drop in a noisy plateau is found where it happens; stationary
//! noise and a smooth decay give no transition; the detector replays identically.

use so8t_train::transition::{Direction, TransitionDetector};

/// Gaussian noise from a seeded generator (SplitMix64 + Box–Muller).
fn noise(seed: u64, n: usize, sd: f64) -> Vec<f64> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next().max(1e-12), next());
            sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect()
}

fn run(losses: &[f64]) -> Vec<so8t_train::transition::Transition> {
    let mut d = TransitionDetector::for_run(losses.len() as u64);
    let mut out = Vec::new();
    for (i, &l) in losses.iter().enumerate() {
        let o = d.observe(i as u64 + 1, l);
        out.extend(o.closed);
    }
    out.extend(d.finish());
    out
}

#[test]
fn a_drop_in_a_noisy_plateau_is_found_where_it_happens() {
    for seed in 0..20 {
        let n = noise(seed, 400, 0.02);
        let loss: Vec<f64> = (0..400)
            .map(|t| {
                let base = match t {
                    0..200 => 3.0,
                    200..220 => 3.0 - 2.0 * (t - 200) as f64 / 20.0,
                    _ => 1.0,
                };
                base + n[t]
            })
            .collect();
        let found = run(&loss);
        let hit: Vec<_> = found
            .iter()
            .filter(|t| t.start >= 195 && t.start <= 215)
            .collect();
        assert_eq!(hit.len(), 1, "seed {seed}: {found:?}");
        let t = hit[0];
        assert_eq!(t.direction, Direction::Steeper, "seed {seed}: {t:?}");
        assert!(t.end >= 215 && t.end <= 300, "seed {seed}: {t:?}");
        assert!(t.peak_z > 4.0, "seed {seed}: {t:?}");
        // Nothing else stands out in the flat parts beyond the occasional noise window.
        assert!(found.len() <= 2, "seed {seed}: {found:?}");
    }
}

#[test]
fn stationary_noise_and_a_smooth_decay_give_no_transition() {
    let mut windows = 0;
    for seed in 0..20 {
        let n = noise(100 + seed, 500, 0.05);
        let flat: Vec<f64> = n.iter().map(|x| 2.0 + x).collect();
        let decay: Vec<f64> = (0..500)
            .map(|t| 1.0 + 2.0 * (-(t as f64) / 150.0).exp() + n[t] * 0.2)
            .collect();
        let (f, d) = (run(&flat), run(&decay));
        windows += f.len() + d.len();
    }
    // 40 runs of 500 steps: noise does not make transitions.
    assert!(windows <= 1, "{windows} false transitions");
}

#[test]
fn replaying_the_history_gives_the_same_state() {
    let n = noise(7, 300, 0.02);
    let loss: Vec<f64> = (0..300)
        .map(|t| if t < 150 { 3.0 } else { 1.5 } + n[t])
        .collect();
    let mut a = TransitionDetector::for_run(300);
    let mut b = TransitionDetector::for_run(300);
    let mut from_a = Vec::new();
    for (i, &l) in loss.iter().enumerate() {
        from_a.push(a.observe(i as u64 + 1, l));
        if i == 160 {
            // "resume": a fresh detector fed the history up to here.
            for (j, &h) in loss[..=i].iter().enumerate() {
                b.observe(j as u64 + 1, h);
            }
        }
    }
    for (i, &l) in loss.iter().enumerate().skip(161) {
        assert_eq!(b.observe(i as u64 + 1, l), from_a[i]);
    }
}
