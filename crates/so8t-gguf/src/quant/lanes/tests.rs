//! The lane searches against the scalar references, byte for byte, on weights chosen to reach
//! every branch: flat, all-zero, one-signed, tiny, huge, outliers, exact half-way levels.

use super::super::kquants::{
    q4_k_blocks, q5_k_blocks, quantize_q4_k, quantize_q5_k, LaneFit, ScalarFit,
};
use super::super::q6_k::{q6_k_blocks, quantize_q6_k, LaneFit16, ScalarFit16};
use super::Portable;

/// xorshift64* uniform in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Super-blocks of 256 weights, each 16-weight run drawn from one of many shapes.
fn awkward_weights(blocks: usize) -> Vec<f32> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut out = Vec::with_capacity(blocks * 256);
    for b in 0..blocks {
        for part in 0..16 {
            let kind = (b * 7 + part * 3) % 12;
            for i in 0..16 {
                let u = rng.next();
                out.push(match kind {
                    0 => u * 0.05,
                    1 => u.abs() * 0.02 + 0.001,
                    2 => -(u.abs() * 0.03),
                    3 => 0.0,
                    4 => 0.125,
                    5 => -0.25,
                    6 => u * 1e-18,
                    7 => u * 3.0e4,
                    8 if i == 5 => 40.0 * u.signum(),
                    8 => u * 0.01,
                    9 => (u * 8.0).round() / 8.0,
                    10 => -(u.abs() * 0.03) * (i % 2) as f32,
                    _ => u * u * u,
                });
            }
        }
    }
    out
}

/// Compares the scalar fit, the portable lanes and the dispatched quantizer (AVX2 lanes here).
fn check(
    size: usize,
    scalar: fn(&[f32], &mut [u8]),
    lanes: fn(&[f32], &mut [u8]),
    public: fn(&[f32], &mut [u8]),
) {
    let x = awkward_weights(96);
    let n = x.len() / 256;
    let run = |f: fn(&[f32], &mut [u8])| {
        let mut out = vec![0u8; n * size];
        f(&x, &mut out);
        out
    };
    let (reference, portable, dispatched) = (run(scalar), run(lanes), run(public));
    for b in 0..n {
        let r = b * size..(b + 1) * size;
        assert_eq!(
            portable[r.clone()],
            reference[r.clone()],
            "block {b}, portable lanes"
        );
        assert_eq!(
            dispatched[r.clone()],
            reference[r],
            "block {b}, dispatched lanes"
        );
    }
}

#[test]
fn q4_k_lanes_equal_the_scalar_search() {
    check(
        144,
        q4_k_blocks::<ScalarFit>,
        q4_k_blocks::<LaneFit<Portable>>,
        quantize_q4_k,
    );
}

#[test]
fn q5_k_lanes_equal_the_scalar_search() {
    check(
        176,
        q5_k_blocks::<ScalarFit>,
        q5_k_blocks::<LaneFit<Portable>>,
        quantize_q5_k,
    );
}

#[test]
fn q6_k_lanes_equal_the_scalar_search() {
    check(
        210,
        q6_k_blocks::<ScalarFit16>,
        q6_k_blocks::<LaneFit16<Portable>>,
        quantize_q6_k,
    );
}
