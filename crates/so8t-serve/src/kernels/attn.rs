//! Attention kernels over a KV cache laid out as rows of `stride` floats (one row per position,
//! a head's `hd` values at a fixed offset): the scores of one query against `n` keys, and the
//! weighted sum of `n` values. The AVX2 versions take four keys per step (one horizontal sum
//! for four scores) and keep up to 32 output values in registers across all positions.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `out[p] = scale · (q · keys[p·stride .. p·stride + q.len()])` for `p < out.len()`.
pub fn scores(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    if let Some(n) = out.len().checked_sub(1) {
        assert!(
            keys.len() >= n * stride + hd,
            "kernels: {} keys of {hd} at stride {stride} need {} floats, got {}",
            out.len(),
            n * stride + hd,
            keys.len()
        );
    }
    #[cfg(target_arch = "x86_64")]
    if super::use_avx2() {
        // SAFETY: AVX2+FMA present; every key row is in bounds (checked above).
        return unsafe { scores_avx2(q, keys.as_ptr(), stride, scale, out) };
    }
    for (p, o) in out.iter_mut().enumerate() {
        *o = scale * super::scalar::dot_f32(q, &keys[p * stride..p * stride + hd]);
    }
}

/// `out = Σ_p w[p] · values[p·stride .. p·stride + out.len()]` (`out` is overwritten).
pub fn weighted_sum(w: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    let hd = out.len();
    if let Some(n) = w.len().checked_sub(1) {
        assert!(
            values.len() >= n * stride + hd,
            "kernels: {} values of {hd} at stride {stride} need {} floats, got {}",
            w.len(),
            n * stride + hd,
            values.len()
        );
    }
    #[cfg(target_arch = "x86_64")]
    if super::use_avx2() {
        // SAFETY: AVX2+FMA present; every value row is in bounds (checked above).
        return unsafe { weighted_sum_avx2(w, values.as_ptr(), stride, out) };
    }
    out.fill(0.0);
    for (p, &wp) in w.iter().enumerate() {
        let v = &values[p * stride..p * stride + hd];
        for (o, &x) in out.iter_mut().zip(v) {
            *o = wp.mul_add(x, *o);
        }
    }
}

/// # Safety
/// AVX2 and FMA present; `keys + p·stride` holds `q.len()` floats for every `p < out.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_avx2(q: &[f32], keys: *const f32, stride: usize, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    let h8 = hd / 8 * 8;
    let n = out.len();
    let tail = |k: *const f32| -> f32 { (h8..hd).map(|j| q[j] * *k.add(j)).sum() };
    let mut p = 0;
    while p + 4 <= n {
        let k = [0, 1, 2, 3].map(|i| keys.add((p + i) * stride));
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut j = 0;
        while j < h8 {
            let x = _mm256_loadu_ps(q.as_ptr().add(j));
            for i in 0..4 {
                acc[i] = _mm256_fmadd_ps(x, _mm256_loadu_ps(k[i].add(j)), acc[i]);
            }
            j += 8;
        }
        // Four horizontal sums at once: [s0 s1 s2 s3].
        let a = _mm256_hadd_ps(
            _mm256_hadd_ps(acc[0], acc[1]),
            _mm256_hadd_ps(acc[2], acc[3]),
        );
        let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let mut v = [0f32; 4];
        _mm_storeu_ps(v.as_mut_ptr(), s);
        for i in 0..4 {
            out[p + i] = scale * (v[i] + tail(k[i]));
        }
        p += 4;
    }
    while p < n {
        let k = keys.add(p * stride);
        let mut acc = _mm256_setzero_ps();
        let mut j = 0;
        while j < h8 {
            acc = _mm256_fmadd_ps(
                _mm256_loadu_ps(q.as_ptr().add(j)),
                _mm256_loadu_ps(k.add(j)),
                acc,
            );
            j += 8;
        }
        out[p] = scale * (super::avx2::hsum_ps(acc) + tail(k));
        p += 1;
    }
}

/// # Safety
/// AVX2 and FMA present; `values + p·stride` holds `out.len()` floats for every `p < w.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_sum_avx2(w: &[f32], values: *const f32, stride: usize, out: &mut [f32]) {
    let hd = out.len();
    let mut c = 0;
    // 32 outputs (four registers) per pass over the positions.
    while c + 32 <= hd {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (p, &wp) in w.iter().enumerate() {
            let x = _mm256_set1_ps(wp);
            let v = values.add(p * stride + c);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(x, _mm256_loadu_ps(v.add(8 * i)), *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * i), *a);
        }
        c += 32;
    }
    while c + 8 <= hd {
        let mut acc = _mm256_setzero_ps();
        for (p, &wp) in w.iter().enumerate() {
            acc = _mm256_fmadd_ps(
                _mm256_set1_ps(wp),
                _mm256_loadu_ps(values.add(p * stride + c)),
                acc,
            );
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(c), acc);
        c += 8;
    }
    for j in c..hd {
        let mut s = 0f32;
        for (p, &wp) in w.iter().enumerate() {
            s = wp.mul_add(*values.add(p * stride + j), s);
        }
        out[j] = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn scores_and_weighted_sums_match_f64() {
        for hd in [8, 12, 64, 72, 96, 100, 128] {
            for n in [1, 3, 4, 5, 17, 64] {
                let stride = 3 * hd + 5;
                let (q, kv, w) = (data(hd, 1), data(n * stride, 2), data(n, 3));
                let mut s = vec![0f32; n];
                scores(&q, &kv, stride, 0.125, &mut s);
                let mut o = vec![f32::NAN; hd];
                weighted_sum(&w, &kv, stride, &mut o);
                for p in 0..n {
                    let r: f64 = (0..hd)
                        .map(|j| q[j] as f64 * kv[p * stride + j] as f64)
                        .sum();
                    assert!(
                        (s[p] as f64 - 0.125 * r).abs() < 1e-5,
                        "hd {hd} n {n} p {p}"
                    );
                }
                for j in 0..hd {
                    let r: f64 = (0..n)
                        .map(|p| w[p] as f64 * kv[p * stride + j] as f64)
                        .sum();
                    assert!((o[j] as f64 - r).abs() < 1e-5, "hd {hd} n {n} j {j}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "need")]
    fn short_cache_is_refused() {
        let mut s = vec![0f32; 3];
        scores(&[0.0; 8], &[0.0; 20], 8, 1.0, &mut s);
    }
}
