//! Kernel tests: the scalar dots against an f64 reference on dequantized data, the AVX2 dots
//! against the scalar ones, quantized dots against exact ones, multi-row against single-row, and
//! the activation and dequantization formats against so8t-gguf's reference code.

use so8t_gguf::quant::{dequantize, f32_to_f16_bits, quantize};

use super::*;

/// xorshift64* generator (deterministic, no dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Values with a random scale per 32 and a few outliers.
    fn values(&mut self, n: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(n);
        let mut s = 1.0;
        for i in 0..n {
            if i % 32 == 0 {
                s = 0.05 + 2.0 * (self.unit() + 1.0);
            }
            let mut x = self.unit() * s;
            if self.next().is_multiple_of(97) {
                x *= 6.0;
            }
            v.push(x);
        }
        v
    }
}

fn sizes(w: GgmlType) -> &'static [usize] {
    match wblock(w).0 {
        1 => &[1, 7, 16, 33, 576, 1000],
        32 => &[32, 64, 96, 576, 1536],
        _ => &[256, 512, 1536],
    }
}

/// A weight row of `cols` and the exact f32 weights it stands for (the input of the quantizer,
/// or for types so8t-gguf cannot quantize, random blocks and their decoding).
fn weights(w: GgmlType, cols: usize, rng: &mut Rng) -> (Vec<u8>, Vec<f32>) {
    let x = rng.values(cols);
    if let Ok(b) = quantize(w, &x) {
        return (b, x);
    }
    let (bs, ts) = wblock(w);
    let mut b: Vec<u8> = (0..cols / bs * ts).map(|_| rng.next() as u8).collect();
    let f16 = |v: f32| f32_to_f16_bits(v).to_le_bytes();
    for blk in b.chunks_exact_mut(ts) {
        let d = f16(0.01 + 0.05 * (rng.unit() + 1.0));
        let m = f16(-0.3 * (rng.unit() + 1.0));
        let (dpos, mpos) = match w {
            GgmlType::Q4_1 | GgmlType::Q5_1 => (0, Some(2)),
            GgmlType::Q2_K => (80, Some(82)),
            GgmlType::Q3_K => (108, None),
            other => panic!("no random blocks for {other}"),
        };
        blk[dpos..dpos + 2].copy_from_slice(&d);
        if let Some(p) = mpos {
            let m = if w == GgmlType::Q2_K { f16(0.02) } else { m };
            blk[p..p + 2].copy_from_slice(&m);
        }
    }
    let exact = dequantize(w, &b, cols).unwrap();
    (b, exact)
}

/// Decodes an activation row.
fn deq_act(a: ActType, b: &[u8], cols: usize) -> Vec<f32> {
    match a {
        ActType::F32 => dequantize(GgmlType::F32, b, cols).unwrap(),
        ActType::F16 => dequantize(GgmlType::F16, b, cols).unwrap(),
        ActType::BF16 => dequantize(GgmlType::BF16, b, cols).unwrap(),
        ActType::Q8_0 => dequantize(GgmlType::Q8_0, b, cols).unwrap(),
        ActType::Q8_K => dequantize(GgmlType::Q8_K, b, cols).unwrap(),
        ActType::Q8_1 => b
            .chunks_exact(36)
            .flat_map(|blk| {
                let d = act::f16(blk, 0);
                blk[4..].iter().map(move |&q| q as i8 as f32 * d)
            })
            .collect(),
    }
}

fn quant_act(a: ActType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; act_row_bytes(a, x.len())];
    quantize_act_row(a, x, &mut out);
    out
}

/// (Σ w·a in f64, Σ |w·a|).
fn ref_dot(w: &[f32], a: &[f32]) -> (f64, f64) {
    w.iter().zip(a).fold((0.0, 0.0), |(s, m), (&p, &q)| {
        let t = p as f64 * q as f64;
        (s + t, m + t.abs())
    })
}

fn each_case(mut f: impl FnMut(GgmlType, usize, &mut Rng)) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for w in SUPPORTED {
        for &cols in sizes(w) {
            for _ in 0..3 {
                f(w, cols, &mut rng);
            }
        }
    }
}

#[test]
fn scalar_matches_f64_reference_on_dequantized_rows() {
    each_case(|w, cols, rng| {
        let (wb, _) = weights(w, cols, rng);
        let a = act_type(w).unwrap();
        let ab = quant_act(a, &rng.values(cols));
        let wd = dequantize(w, &wb, cols).unwrap();
        let (mut r, mag) = ref_dot(&wd, &deq_act(a, &ab, cols));
        if a == ActType::Q8_1 {
            // The min meets the block's stored sum s (f16 of d·Σq), as in llama.cpp.
            let ts = wblock(w).1;
            for (x, y) in wb.chunks_exact(ts).zip(ab.chunks_exact(36)) {
                let sq: i32 = y[4..].iter().map(|&q| q as i8 as i32).sum();
                let exact = act::f16(y, 0) as f64 * sq as f64;
                r += act::f16(x, 2) as f64 * (act::f16(y, 2) as f64 - exact);
            }
        }
        let got = scalar::vec_dot(w, cols, &wb, &ab) as f64;
        assert!(
            (got - r).abs() <= 1e-5 * mag + 1e-30,
            "{w} cols {cols}: scalar {got} vs reference {r} (Σ|terms| {mag})"
        );
    });
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_matches_scalar() {
    if !use_avx2() {
        eprintln!("no AVX2+FMA+F16C: skipped");
        return;
    }
    each_case(|w, cols, rng| {
        let (wb, _) = weights(w, cols, rng);
        let a = act_type(w).unwrap();
        let ab = quant_act(a, &rng.values(cols));
        let (_, mag) = ref_dot(&dequantize(w, &wb, cols).unwrap(), &deq_act(a, &ab, cols));
        let s = scalar::vec_dot(w, cols, &wb, &ab) as f64;
        let mut out = [0f32];
        // SAFETY: AVX2, FMA and F16C checked above; lengths are right.
        unsafe { avx2::dot_multi(w, cols, &wb, &ab, ab.len(), 1, &mut out) };
        assert!(
            (out[0] as f64 - s).abs() <= 1e-5 * mag + 1e-30,
            "{w} cols {cols}: avx2 {} vs scalar {s} (Σ|terms| {mag})",
            out[0]
        );
    });
}

/// Loose bound on |quantized dot − exact dot| / (‖w‖·‖x‖/√n) for each weight type.
fn loose_bound(w: GgmlType) -> f64 {
    match w {
        GgmlType::F32 => 1e-4,
        GgmlType::F16 => 0.01,
        GgmlType::BF16 => 0.05,
        GgmlType::Q8_0 => 0.06,
        GgmlType::Q6_K => 0.12,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 0.25,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => 0.5,
        _ => 1.0,
    }
}

#[test]
fn quantized_dot_is_close_to_exact_dot() {
    each_case(|w, cols, rng| {
        let (wb, exact_w) = weights(w, cols, rng);
        let x = rng.values(cols);
        let a = act_type(w).unwrap();
        let got = vec_dot(w, cols, &wb, &quant_act(a, &x)) as f64;
        let (r, _) = ref_dot(&exact_w, &x);
        let norm = |v: &[f32]| v.iter().map(|&t| (t as f64).powi(2)).sum::<f64>().sqrt();
        let scale = norm(&exact_w) * norm(&x) / (cols as f64).sqrt();
        assert!(
            (got - r).abs() <= loose_bound(w) * scale,
            "{w} cols {cols}: quantized {got} vs exact {r} (scale {scale})"
        );
    });
}

#[test]
fn multi_equals_single() {
    each_case(|w, cols, rng| {
        let (wb, _) = weights(w, cols, rng);
        let a = act_type(w).unwrap();
        let n = 1 + (rng.next() % 7) as usize;
        let acts: Vec<u8> = (0..n)
            .flat_map(|_| quant_act(a, &rng.values(cols)))
            .collect();
        let mut out = vec![f32::NAN; n + 1];
        vec_dot_multi(w, cols, &wb, &acts, n, &mut out);
        let st = act_row_bytes(a, cols);
        for (k, o) in out[..n].iter().enumerate() {
            let single = vec_dot(w, cols, &wb, &acts[k * st..(k + 1) * st]);
            assert_eq!(o.to_bits(), single.to_bits(), "{w} cols {cols} row {k}/{n}");
        }
        assert!(out[n].is_nan(), "{w}: wrote past n");
    });
}

#[test]
fn rows_match_scalar_per_row() {
    each_case(|w, cols, rng| {
        let n = 1 + (rng.next() % 19) as usize;
        let mut rows = Vec::new();
        for _ in 0..n {
            rows.extend(weights(w, cols, rng).0);
        }
        let a = act_type(w).unwrap();
        let ab = quant_act(a, &rng.values(cols));
        let mut out = vec![f32::NAN; n + 1];
        vec_dot_rows(w, cols, &rows, n, &ab, &mut out);
        let rb = weight_row_bytes(w, cols);
        let ad = deq_act(a, &ab, cols);
        for (r, o) in out[..n].iter().enumerate() {
            let row = &rows[r * rb..(r + 1) * rb];
            let (_, mag) = ref_dot(&dequantize(w, row, cols).unwrap(), &ad);
            let s = scalar::vec_dot(w, cols, row, &ab) as f64;
            assert!(
                (*o as f64 - s).abs() <= 1e-5 * mag + 1e-30,
                "{w} cols {cols} row {r}/{n}: rows {o} vs scalar {s}"
            );
        }
        assert!(out[n].is_nan(), "{w}: wrote past n");
    });
}

#[test]
fn mat_mul_matches_scalar() {
    each_case(|w, cols, rng| {
        let nrows = 1 + (rng.next() % 11) as usize;
        let nacts = 1 + (rng.next() % 7) as usize;
        let os = nrows + (rng.next() % 3) as usize;
        let mut rows = Vec::new();
        for _ in 0..nrows {
            rows.extend(weights(w, cols, rng).0);
        }
        let a = act_type(w).unwrap();
        let acts: Vec<u8> = (0..nacts)
            .flat_map(|_| quant_act(a, &rng.values(cols)))
            .collect();
        let mut out = vec![f32::NAN; nacts * os + 1];
        mat_mul(w, cols, &rows, nrows, &acts, nacts, &mut out, os);
        let (rb, ab) = (weight_row_bytes(w, cols), act_row_bytes(a, cols));
        for k in 0..nacts {
            let act = &acts[k * ab..(k + 1) * ab];
            let ad = deq_act(a, act, cols);
            for r in 0..nrows {
                let row = &rows[r * rb..(r + 1) * rb];
                let (_, mag) = ref_dot(&dequantize(w, row, cols).unwrap(), &ad);
                let s = scalar::vec_dot(w, cols, row, act) as f64;
                let o = out[k * os + r] as f64;
                assert!(
                    (o - s).abs() <= 1e-5 * mag + 1e-30,
                    "{w} cols {cols} row {r}/{nrows} act {k}/{nacts}: {o} vs scalar {s}"
                );
            }
            for pad in nrows..os {
                assert!(out[k * os + pad].is_nan(), "{w}: wrote into padding");
            }
        }
        assert!(out[nacts * os].is_nan());
    });
}

#[test]
fn q8_0_activations_match_so8t_gguf_bytes() {
    let mut rng = Rng(7);
    let mut x = rng.values(4096);
    // A block with exact halves (d = 1): ties round away from zero.
    for (j, v) in x[..32].iter_mut().enumerate() {
        *v = if j == 0 { 127.0 } else { j as f32 * 0.5 - 8.0 };
    }
    x[32..64].fill(0.0);
    // d = 1 again, values one float either side of the halves.
    let near =
        |v: f32, up: bool| f32::from_bits(if up { v.to_bits() + 1 } else { v.to_bits() - 1 });
    for (j, v) in x[64..96].iter_mut().enumerate() {
        let h = (j / 4) as f32 * 15.0 + 0.5;
        let sgn = if j % 2 == 0 { 1.0 } else { -1.0 };
        *v = sgn * if j == 0 { 127.0 } else { near(h, j % 4 < 2) };
    }
    for n in [32, 64, 96, 576, 4096] {
        let want = quantize(GgmlType::Q8_0, &x[..n]).unwrap();
        assert_eq!(quant_act(ActType::Q8_0, &x[..n]), want, "n {n}");
        let mut s = vec![0u8; want.len()];
        act::quantize(ActType::Q8_0, &x[..n], &mut s);
        assert_eq!(s, want, "scalar, n {n}");
    }
}

#[test]
fn q8_k_and_q8_1_activations_match_scalar_bytes() {
    let mut rng = Rng(13);
    let mut x = rng.values(2048);
    x[256..512].fill(0.0);
    x[600] = -40.0; // ties in magnitude: the first one wins
    x[700] = 40.0;
    x[1100] = 30.0;
    x[1101] = -30.0;
    for (j, v) in x[1536..1792].iter_mut().enumerate() {
        *v = if j == 0 {
            127.0
        } else {
            (j as f32 - 128.0) * 0.5
        }; // exact halves
    }
    for a in [ActType::Q8_K, ActType::Q8_1, ActType::Q8_0] {
        let mut s = vec![0u8; act_row_bytes(a, x.len())];
        act::quantize(a, &x, &mut s);
        assert_eq!(quant_act(a, &x), s, "{a:?}");
    }
}

#[test]
fn f16_activations_match_scalar_conversion() {
    let x = Rng(11).values(1003);
    let mut s = vec![0u8; 2006];
    act::quantize(ActType::F16, &x, &mut s);
    assert_eq!(quant_act(ActType::F16, &x), s);
    assert_eq!(
        quant_act(ActType::F16, &x),
        quantize(GgmlType::F16, &x).unwrap()
    );
}

#[test]
fn q8_k_and_q8_1_activations_follow_llama_cpp() {
    let mut rng = Rng(5);
    let mut x = rng.values(512);
    x[256..].iter_mut().for_each(|v| *v = -v.abs()); // largest magnitude negative
    x[300] = -50.0;
    let b = quant_act(ActType::Q8_K, &x);
    for (blk, xb) in b.chunks_exact(292).zip(x.chunks_exact(256)) {
        let d = act::f32_at(blk, 0);
        let (max, _) = xb.iter().fold((0f32, 0f32), |(m, a), &v| {
            if v.abs() > a {
                (v, v.abs())
            } else {
                (m, a)
            }
        });
        assert_eq!(d, 1.0 / (-127.0 / max));
        for g in 0..16 {
            let s: i32 = blk[4 + 16 * g..20 + 16 * g]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            assert_eq!(
                s,
                i16::from_le_bytes([blk[260 + 2 * g], blk[261 + 2 * g]]) as i32
            );
        }
    }
    let dx = deq_act(ActType::Q8_K, &b, 512);
    for (p, q) in dx.iter().zip(&x) {
        assert!((p - q).abs() <= 50.0 / 127.0 * 0.51 + 1e-6, "{p} vs {q}");
    }
    let b1 = quant_act(ActType::Q8_1, &x);
    let q0 = quantize(GgmlType::Q8_0, &x).unwrap();
    for ((p, q), xb) in b1
        .chunks_exact(36)
        .zip(q0.chunks_exact(34))
        .zip(x.chunks_exact(32))
    {
        assert_eq!(p[..2], q[..2]);
        assert_eq!(p[4..], q[2..]);
        let sum: i32 = p[4..].iter().map(|&v| v as i8 as i32).sum();
        let d = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        let s = f32_to_f16_bits(sum as f32 * d);
        assert_eq!(u16::from_le_bytes([p[2], p[3]]), s);
    }
}

#[test]
fn dequantize_row_matches_so8t_gguf() {
    each_case(|w, cols, rng| {
        let (wb, _) = weights(w, cols, rng);
        let mut out = vec![0f32; cols];
        dequantize_row(w, &wb, &mut out);
        let want = dequantize(w, &wb, cols).unwrap();
        assert!(
            out.iter()
                .zip(&want)
                .all(|(p, q)| p.to_bits() == q.to_bits()),
            "{w} cols {cols}"
        );
    });
}

#[test]
fn f32_helpers_match_scalar() {
    let mut rng = Rng(3);
    for n in [0, 1, 7, 8, 31, 64, 100, 1000] {
        let a = rng.values(n);
        let b = rng.values(n);
        let (r, mag) = ref_dot(&a, &b);
        assert!(
            (dot_f32(&a, &b) as f64 - r).abs() <= 1e-5 * mag + 1e-30,
            "dot n {n}"
        );
        assert!((scalar::dot_f32(&a, &b) as f64 - r).abs() <= 1e-5 * mag + 1e-30);
    }
    assert!(["avx2", "scalar"].contains(&backend()));
}

#[test]
fn act_types_and_sizes() {
    assert_eq!(act_type(GgmlType::Q4_K), Some(ActType::Q8_K));
    assert_eq!(act_type(GgmlType::Q5_1), Some(ActType::Q8_1));
    assert_eq!(act_type(GgmlType::Q8_1), None);
    assert_eq!(act_row_bytes(ActType::Q8_K, 512), 584);
    assert_eq!(act_row_bytes(ActType::Q8_0, 576), 18 * 34);
    for w in SUPPORTED {
        assert_eq!(wblock(w), (w.block_size(), w.type_size()), "{w}");
    }
}
