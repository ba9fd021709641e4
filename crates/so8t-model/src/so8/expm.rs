//! Dense f64 matrix helpers for the 8×8 SO(8) blocks: skew-symmetric generators, the matrix
//! exponential (per-block scaling and squaring with a Taylor core), its Fréchet derivative
//! (for the backward pass), the Cayley map and its gradient.
//!
//! These are the slow, obvious reference implementations; the tensor op in `gate.rs` calls them.

/// Number of free parameters of one 8×8 skew-symmetric block (strict upper triangle).
pub const GEN: usize = 28;

/// A row-major n×n matrix.
pub type Mat = Vec<f64>;

/// The (i, j), i < j pairs in row-major order: the layout of a generator row.
pub fn upper_pairs() -> [(usize, usize); GEN] {
    let mut out = [(0, 0); GEN];
    let mut k = 0;
    for i in 0..8 {
        for j in i + 1..8 {
            out[k] = (i, j);
            k += 1;
        }
    }
    out
}

/// A = U − Uᵀ from the 28 strict-upper-triangle entries of U.
pub fn skew_from_generator(g: &[f64]) -> Mat {
    let mut a = vec![0.0; 64];
    for (k, (i, j)) in upper_pairs().iter().enumerate() {
        a[i * 8 + j] = g[k];
        a[j * 8 + i] = -g[k];
    }
    a
}

/// Gradient with respect to the generator, given the gradient with respect to A.
pub fn generator_grad(da: &[f64]) -> [f64; GEN] {
    let mut g = [0.0; GEN];
    for (k, (i, j)) in upper_pairs().iter().enumerate() {
        g[k] = da[i * 8 + j] - da[j * 8 + i];
    }
    g
}

/// C = A·B for n×n matrices.
pub fn matmul(a: &[f64], b: &[f64], n: usize) -> Mat {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            if aik == 0.0 {
                continue;
            }
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

/// Aᵀ.
pub fn transpose(a: &[f64], n: usize) -> Mat {
    let mut t = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            t[j * n + i] = a[i * n + j];
        }
    }
    t
}

/// The identity.
pub fn eye(n: usize) -> Mat {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = 1.0;
    }
    m
}

fn norm1(a: &[f64], n: usize) -> f64 {
    (0..n)
        .map(|j| (0..n).map(|i| a[i * n + j].abs()).sum::<f64>())
        .fold(0.0, f64::max)
}

/// exp(A) by scaling and squaring: A is scaled by 2^−s so that ‖A/2^s‖₁ ≤ 1/2 (s chosen for this
/// matrix alone), the Taylor series is summed until its terms vanish in f64, then squared s times.
pub fn expm(a: &[f64], n: usize) -> Mat {
    let norm = norm1(a, n);
    let s = if norm > 0.5 {
        (norm / 0.5).log2().ceil() as i32
    } else {
        0
    };
    let scale = 0.5f64.powi(s);
    let b: Mat = a.iter().map(|x| x * scale).collect();
    let mut result = eye(n);
    let mut term = eye(n);
    for k in 1..=30 {
        term = matmul(&term, &b, n);
        let inv = 1.0 / k as f64;
        term.iter_mut().for_each(|t| *t *= inv);
        let mut biggest: f64 = 0.0;
        for (r, t) in result.iter_mut().zip(&term) {
            *r += t;
            biggest = biggest.max(t.abs());
        }
        if biggest < 1e-18 {
            break;
        }
    }
    for _ in 0..s {
        result = matmul(&result, &result, n);
    }
    result
}

/// The Fréchet derivative L(A, E) of exp at A in direction E: the top-right block of
/// exp([[A, E], [0, A]]).
pub fn expm_frechet(a: &[f64], e: &[f64], n: usize) -> Mat {
    let m = 2 * n;
    let mut big = vec![0.0; m * m];
    for i in 0..n {
        for j in 0..n {
            big[i * m + j] = a[i * n + j];
            big[(i + n) * m + (j + n)] = a[i * n + j];
            big[i * m + (j + n)] = e[i * n + j];
        }
    }
    let x = expm(&big, m);
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            l[i * n + j] = x[i * m + (j + n)];
        }
    }
    l
}

/// Inverse by Gauss–Jordan with partial pivoting. `None` if singular.
pub fn inverse(a: &[f64], n: usize) -> Option<Mat> {
    let mut m = a.to_vec();
    let mut inv = eye(n);
    for c in 0..n {
        let p = (c..n).max_by(|&x, &y| m[x * n + c].abs().total_cmp(&m[y * n + c].abs()))?;
        if m[p * n + c].abs() < 1e-300 {
            return None;
        }
        if p != c {
            for j in 0..n {
                m.swap(p * n + j, c * n + j);
                inv.swap(p * n + j, c * n + j);
            }
        }
        let d = 1.0 / m[c * n + c];
        for j in 0..n {
            m[c * n + j] *= d;
            inv[c * n + j] *= d;
        }
        for r in 0..n {
            if r != c {
                let f = m[r * n + c];
                if f != 0.0 {
                    for j in 0..n {
                        m[r * n + j] -= f * m[c * n + j];
                        inv[r * n + j] -= f * inv[c * n + j];
                    }
                }
            }
        }
    }
    Some(inv)
}

/// The Cayley map (I − A/2)⁻¹(I + A/2). For skew-symmetric A, I − A/2 is always invertible.
pub fn cayley(a: &[f64], n: usize) -> Mat {
    let (x, y) = cayley_parts(a, n);
    let xi = inverse(&x, n).expect("I - A/2 is invertible for skew-symmetric A");
    matmul(&xi, &y, n)
}

fn cayley_parts(a: &[f64], n: usize) -> (Mat, Mat) {
    let id = eye(n);
    let x = id.iter().zip(a).map(|(i, a)| i - a / 2.0).collect();
    let y = id.iter().zip(a).map(|(i, a)| i + a / 2.0).collect();
    (x, y)
}

/// dL/dA of R = cayley(A) given G = dL/dR: ½ X⁻ᵀ G (R + I)ᵀ with X = I − A/2.
pub fn cayley_grad(a: &[f64], g: &[f64], n: usize) -> Mat {
    let (x, _) = cayley_parts(a, n);
    let xi = inverse(&x, n).expect("I - A/2 is invertible for skew-symmetric A");
    let r = cayley(a, n);
    let rpi: Mat = r.iter().zip(eye(n)).map(|(r, i)| r + i).collect();
    let t = matmul(&matmul(&transpose(&xi, n), g, n), &transpose(&rpi, n), n);
    t.into_iter().map(|v| v * 0.5).collect()
}

/// Determinant by LU with partial pivoting.
pub fn det(a: &[f64], n: usize) -> f64 {
    let mut m = a.to_vec();
    let mut d = 1.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&x, &y| m[x * n + c].abs().total_cmp(&m[y * n + c].abs()))
            .unwrap_or(c);
        if m[p * n + c] == 0.0 {
            return 0.0;
        }
        if p != c {
            for j in 0..n {
                m.swap(p * n + j, c * n + j);
            }
            d = -d;
        }
        d *= m[c * n + c];
        for r in c + 1..n {
            let f = m[r * n + c] / m[c * n + c];
            for j in c..n {
                m[r * n + j] -= f * m[c * n + j];
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn expm_of_skew_is_special_orthogonal() {
        let mut s = 7;
        for scale in [0.01, 0.3, 2.0, 10.0] {
            let g: Vec<f64> = (0..GEN).map(|_| lcg(&mut s) * scale).collect();
            let a = skew_from_generator(&g);
            for r in [expm(&a, 8), cayley(&a, 8)] {
                let rtr = matmul(&transpose(&r, 8), &r, 8);
                let err = rtr
                    .iter()
                    .zip(eye(8))
                    .map(|(x, i)| (x - i).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-12, "scale {scale}: |RᵀR − I| = {err}");
                assert!((det(&r, 8) - 1.0).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn expm_matches_known_2x2_rotation() {
        // exp([[0, θ], [−θ, 0]]) = [[cos θ, sin θ], [−sin θ, cos θ]]
        let t = 1.3;
        let r = expm(&[0.0, t, -t, 0.0], 2);
        let want = [t.cos(), t.sin(), -t.sin(), t.cos()];
        for (x, y) in r.iter().zip(want) {
            assert!((x - y).abs() < 1e-14);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut s = 3;
        let g: Vec<f64> = (0..GEN).map(|_| lcg(&mut s) * 0.7).collect();
        let w: Vec<f64> = (0..64).map(|_| lcg(&mut s)).collect(); // L = <W, R>
        for cay in [false, true] {
            let f = |g: &[f64]| {
                let a = skew_from_generator(g);
                let r = if cay { cayley(&a, 8) } else { expm(&a, 8) };
                r.iter().zip(&w).map(|(r, w)| r * w).sum::<f64>()
            };
            let a = skew_from_generator(&g);
            let da = if cay {
                cayley_grad(&a, &w, 8)
            } else {
                expm_frechet(&transpose(&a, 8), &w, 8)
            };
            let analytic = generator_grad(&da);
            for k in 0..GEN {
                let h = 1e-6;
                let mut gp = g.clone();
                gp[k] += h;
                let mut gm = g.clone();
                gm[k] -= h;
                let fd = (f(&gp) - f(&gm)) / (2.0 * h);
                assert!(
                    (fd - analytic[k]).abs() < 1e-7,
                    "cayley={cay} k={k}: fd {fd} vs {}",
                    analytic[k]
                );
            }
        }
    }
}
