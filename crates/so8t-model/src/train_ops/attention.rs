//! Self-attention of one layer in training as one op: rotary embedding of q and k, the scaled
//! scores `S = (s·Q_rot) K_rotᵀ + mask`, the row softmax `P`, and `Y = P V`, from the
//! projections' outputs `[B, T, heads·hd]` to the input of `o_proj` in the same layout. The
//! composed graph records about fifteen ops here (transposes to heads-first and back, two
//! rotary ops, the scale, two matmuls, the mask addition, the softmax) and keeps the
//! `[B, heads, T, S]` scores and probabilities alive until the backward pass; this op keeps only
//! each row's softmax max and 1/sum and recomputes `P` per head in the backward pass:
//! `dV = Pᵀ dY`, `dP = dY Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ_rot = s·dS K_rot`,
//! `dK_rot = dSᵀ (s·Q_rot)`, and the rotations undone by rotating by −θ. Heads sharing a kv head
//! (grouped-query attention) add their dK and dV.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, exp, gemm_serial, multiversion, F32View, Mat};

/// Heads and sizes of one attention op.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    /// Query heads.
    pub(crate) heads: usize,
    /// Key/value heads (divides `heads`).
    pub(crate) kv_heads: usize,
    /// Width of one head.
    pub(crate) head_dim: usize,
}

/// Attention of `q` [B, T, heads·hd], `k` and `v` [B, T, kv_heads·hd] (f32 on the CPU) with
/// rotary tables `cos`/`sin` ([T, rot/2], or [B, T, rot/2] for packed rows; the first `rot`
/// dims of each head rotate, the rest pass) and an additive `mask` [B|1, 1, T, T].
pub(crate) fn attention_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    mask: Option<&Tensor>,
    shape: AttentionShape,
) -> candle_core::Result<Tensor> {
    let (b, t, _) = q.dims3()?;
    let (table_rows, half) = match cos.dims() {
        &[tt, h] if tt == t => (1, h),
        &[bb, tt, h] if tt == t && bb == b => (b, h),
        d => candle_core::bail!("attention: rotary table {d:?} does not fit [{b}, {t}, ..]"),
    };
    if 2 * half > shape.head_dim
        || shape.kv_heads == 0
        || !shape.heads.is_multiple_of(shape.kv_heads)
    {
        candle_core::bail!("attention: {shape:?} with a rotary width of {}", 2 * half)
    }
    let mask = match mask {
        Some(m) => match m.dims() {
            &[r, 1, tt, ss] if (r == 1 || r == b) && tt == t && ss == t => {
                Some((m.to_dtype(DType::F32)?.contiguous()?, r))
            }
            d => candle_core::bail!("attention: mask {d:?} does not fit [{b}, 1, {t}, {t}]"),
        },
        None => None,
    };
    let op = Attention {
        shape,
        rope: Rope {
            cos: cos.to_dtype(DType::F32)?.contiguous()?,
            sin: sin.to_dtype(DType::F32)?.contiguous()?,
            table_rows,
            t,
            half,
        },
        mask,
        stats: Mutex::new(Vec::new()),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// Rotary tables: pair (x_j, x_{j+half}) of position p rotates by θ_{p,j}.
struct Rope {
    /// cos θ [table_rows, T, half] (f32, contiguous).
    cos: Tensor,
    /// sin θ, shaped as `cos`.
    sin: Tensor,
    table_rows: usize,
    t: usize,
    half: usize,
}

impl Rope {
    /// Rotates the T rows of one head of batch row `bi` (row i of `src` at `i·stride`) into
    /// `dst` [T, hd] times `scale`; `sign` −1 rotates by −θ (the transpose).
    #[allow(clippy::too_many_arguments)]
    fn rotate(
        &self,
        tables: &Tables<'_>,
        dst: &mut [f32],
        src: &[f32],
        stride: usize,
        bi: usize,
        sign: f32,
        scale: f32,
    ) {
        let (half, hd) = (self.half, dst.len() / self.t);
        let table = if self.table_rows == 1 { 0 } else { bi };
        for (i, d) in dst.chunks_exact_mut(hd).enumerate() {
            let x = &src[i * stride..i * stride + hd];
            let base = (table * self.t + i) * half;
            let (c, s) = (
                &tables.cos[base..base + half],
                &tables.sin[base..base + half],
            );
            for j in 0..half {
                let (x1, x2, sj) = (x[j], x[j + half], sign * s[j]);
                d[j] = (x1 * c[j] - x2 * sj) * scale;
                d[j + half] = (x2 * c[j] + x1 * sj) * scale;
            }
            for j in 2 * half..hd {
                d[j] = x[j] * scale;
            }
        }
    }
}

/// The values of the rotary tables and the mask, read once per pass.
struct Tables<'a> {
    cos: &'a [f32],
    sin: &'a [f32],
    mask: Option<&'a [f32]>,
}

struct Attention {
    shape: AttentionShape,
    rope: Rope,
    /// Additive mask [rows, 1, T, T] (f32, contiguous) and its rows (1 or B).
    mask: Option<(Tensor, usize)>,
    /// Per (batch row, head, query): softmax max and 1/sum, from the forward pass.
    stats: Mutex<Vec<[f32; 2]>>,
}

multiversion! {
    /// Row softmax of `s` [T, T] + `mask` in place; writes each row's max and 1/sum.
    fn softmax_rows(s: &mut [f32], mask: Option<&[f32]>, stats: &mut [[f32; 2]]) {
        let t = stats.len();
        for (i, (row, st)) in s.chunks_exact_mut(t).zip(stats.iter_mut()).enumerate() {
            if let Some(m) = mask {
                for (x, &m) in row.iter_mut().zip(&m[i * t..i * t + t]) {
                    *x += m;
                }
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for x in row.iter_mut() {
                *x = exp(*x - max);
                sum += *x;
            }
            let inv = 1.0 / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
            *st = [max, inv];
        }
    }
}

multiversion! {
    /// `P` from the scores `s` [T, T] (+ mask) and the saved stats, in place.
    fn probabilities(s: &mut [f32], mask: Option<&[f32]>, stats: &[[f32; 2]]) {
        let t = stats.len();
        for (i, (row, &[max, inv])) in s.chunks_exact_mut(t).zip(stats).enumerate() {
            if let Some(m) = mask {
                for (x, &m) in row.iter_mut().zip(&m[i * t..i * t + t]) {
                    *x += m;
                }
            }
            for x in row.iter_mut() {
                *x = exp(*x - max) * inv;
            }
        }
    }
}

multiversion! {
    /// `dS = P ⊙ (dP − rowsum(P ⊙ dP))` in place of `dp` [T, T].
    fn softmax_grad(dp: &mut [f32], p: &[f32], t: usize) {
        for (d, p) in dp.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
            let dot: f32 = d.iter().zip(p).map(|(d, p)| d * p).sum();
            for (d, &p) in d.iter_mut().zip(p) {
                *d = p * (*d - dot);
            }
        }
    }
}

impl Attention {
    fn dims(
        &self,
        ql: &[usize],
        kl: &[usize],
        vl: &[usize],
    ) -> candle_core::Result<(usize, usize)> {
        let AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
        } = self.shape;
        match (ql, kl, vl) {
            (&[b, t, qw], &[bk, tk, kw], &[bv, tv, vw])
                if qw == heads * hd
                    && kw == kv_heads * hd
                    && vw == kw
                    && (bk, tk, bv, tv) == (b, t, b, t)
                    && t == self.rope.t =>
            {
                Ok((b, t))
            }
            _ => candle_core::bail!(
                "attention: q {ql:?}, k {kl:?}, v {vl:?} do not fit {:?} at T = {}",
                self.shape,
                self.rope.t
            ),
        }
    }

    /// Views of the rotary tables and the mask, for [`Tables`].
    fn views(&self) -> candle_core::Result<(F32View<'_>, F32View<'_>, Option<F32View<'_>>)> {
        let mask = self
            .mask
            .as_ref()
            .map(|(m, _)| F32View::of(m))
            .transpose()?;
        Ok((
            F32View::of(&self.rope.cos)?,
            F32View::of(&self.rope.sin)?,
            mask,
        ))
    }

    /// The mask rows of batch row `bi`.
    fn mask_of<'a>(&self, tables: &Tables<'a>, bi: usize, t: usize) -> Option<&'a [f32]> {
        let rows = self.mask.as_ref().map_or(1, |(_, r)| *r);
        let r = if rows == 1 { 0 } else { bi };
        tables.mask.map(|m| &m[r * t * t..(r + 1) * t * t])
    }

    /// (batch row, kv head, T·hd offsets) of head task `task`, and its rotated, scaled q and
    /// rotated k [T, hd].
    fn rotated(
        &self,
        tables: &Tables<'_>,
        q: &[f32],
        k: &[f32],
        task: usize,
        t: usize,
    ) -> (usize, usize, Vec<f32>, Vec<f32>) {
        let AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
        } = self.shape;
        let (bi, h) = (task / heads, task % heads);
        let g = h / (heads / kv_heads);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut qr = vec![0f32; t * hd];
        let mut kr = vec![0f32; t * hd];
        let (qw, kw) = (heads * hd, kv_heads * hd);
        let rope = &self.rope;
        rope.rotate(
            tables,
            &mut qr,
            &q[bi * t * qw + h * hd..],
            qw,
            bi,
            1.0,
            scale,
        );
        rope.rotate(
            tables,
            &mut kr,
            &k[bi * t * kw + g * hd..],
            kw,
            bi,
            1.0,
            1.0,
        );
        (bi, g, qr, kr)
    }
}

/// The scores `q_r k_rᵀ` [T, T] of one head (q_r already scaled).
fn scores(qr: &[f32], kr: &[f32], t: usize, hd: usize) -> Vec<f32> {
    let mut s = vec![0f32; t * t];
    gemm_serial(
        &mut s,
        Mat::new(qr, t, hd),
        Mat::new(kr, t, hd).t(),
        1.0,
        false,
    );
    s
}

/// Adds per-head blocks [tasks][T, hd] into the [B, T, heads·hd] layout; with `group` > 1,
/// `group` consecutive tasks add into one head (query heads that share a kv head).
fn scatter(dst: &mut [f32], blocks: &[Vec<f32>], heads: usize, t: usize, hd: usize, group: usize) {
    let width = heads * hd;
    for (task, blk) in blocks.iter().enumerate() {
        let (bi, h) = (task / (heads * group), (task % (heads * group)) / group);
        for i in 0..t {
            let d = &mut dst[(bi * t + i) * width + h * hd..][..hd];
            for (d, s) in d.iter_mut().zip(&blk[i * hd..(i + 1) * hd]) {
                *d += s;
            }
        }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "train-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, t) = self.dims(ql.dims(), kl.dims(), vl.dims())?;
        let AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
        } = self.shape;
        let op = self.name();
        let (q, k, v) = (
            cpu_slice(op, qs, ql)?,
            cpu_slice(op, ks, kl)?,
            cpu_slice(op, vs, vl)?,
        );
        let (cos, sin, mask) = self.views()?;
        let tables = Tables {
            cos: &cos,
            sin: &sin,
            mask: mask.as_deref(),
        };
        let kw = kv_heads * hd;
        let mut stats = vec![[0f32; 2]; b * heads * t];
        let outs: Vec<Vec<f32>> = stats
            .par_chunks_mut(t)
            .enumerate()
            .map(|(task, st)| {
                let (bi, g, qr, kr) = self.rotated(&tables, q, k, task, t);
                let mut s = scores(&qr, &kr, t, hd);
                softmax_rows(&mut s, self.mask_of(&tables, bi, t), st);
                let vg = Mat::strided(&v[bi * t * kw + g * hd..], t, hd, kw);
                let mut y = vec![0f32; t * hd];
                gemm_serial(&mut y, Mat::new(&s, t, t), vg, 1.0, false);
                y
            })
            .collect();
        let mut y = vec![0f32; b * t * heads * hd];
        scatter(&mut y, &outs, heads, t, hd, 1);
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
        Ok((CpuStorage::F32(y), Shape::from((b, t, heads * hd))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, t) = self.dims(q.dims(), k.dims(), v.dims())?;
        let AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
        } = self.shape;
        let (qw, kw) = (heads * hd, kv_heads * hd);
        let group = heads / kv_heads;
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if stats.len() != b * heads * t {
            candle_core::bail!("attention: backward pass without a forward pass")
        }
        let scale = 1.0 / (hd as f32).sqrt();
        // Per head: (dQ, dK, dV) [T, hd] each, dK and dV still to be summed per kv head.
        let (qc, kc, vc, dyc) = (
            q.contiguous()?,
            k.contiguous()?,
            v.contiguous()?,
            dy.contiguous()?,
        );
        let (qv, kv, vv, dyv) = (
            F32View::of(&qc)?,
            F32View::of(&kc)?,
            F32View::of(&vc)?,
            F32View::of(&dyc)?,
        );
        let (qs, ks, vs, dys): (&[f32], &[f32], &[f32], &[f32]) = (&qv, &kv, &vv, &dyv);
        let (cos, sin, mask) = self.views()?;
        let tables = Tables {
            cos: &cos,
            sin: &sin,
            mask: mask.as_deref(),
        };
        let per_head: Vec<[Vec<f32>; 3]> = stats
            .par_chunks(t)
            .enumerate()
            .map(|(task, st)| {
                let (bi, g, qr, kr) = self.rotated(&tables, qs, ks, task, t);
                let h = task % heads;
                let mut p = scores(&qr, &kr, t, hd);
                probabilities(&mut p, self.mask_of(&tables, bi, t), st);
                let dyh = Mat::strided(&dys[bi * t * qw + h * hd..], t, hd, qw);
                let vg = Mat::strided(&vs[bi * t * kw + g * hd..], t, hd, kw);
                let mut dv = vec![0f32; t * hd];
                gemm_serial(&mut dv, Mat::new(&p, t, t).t(), dyh, 1.0, false);
                let mut ds = vec![0f32; t * t];
                gemm_serial(&mut ds, dyh, vg.t(), 1.0, false);
                softmax_grad(&mut ds, &p, t);
                let (mut dqr, mut dkr) = (vec![0f32; t * hd], vec![0f32; t * hd]);
                let (ds, qr, kr) = (
                    Mat::new(&ds, t, t),
                    Mat::new(&qr, t, hd),
                    Mat::new(&kr, t, hd),
                );
                gemm_serial(&mut dqr, ds, kr, 1.0, false);
                gemm_serial(&mut dkr, ds.t(), qr, 1.0, false);
                let (mut dq, mut dk) = (vec![0f32; t * hd], vec![0f32; t * hd]);
                self.rope
                    .rotate(&tables, &mut dq, &dqr, hd, bi, -1.0, scale);
                self.rope.rotate(&tables, &mut dk, &dkr, hd, bi, -1.0, 1.0);
                [dq, dk, dv]
            })
            .collect();
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; b * t * qw],
            vec![0f32; b * t * kw],
            vec![0f32; b * t * kw],
        );
        let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
        for [q, k, v] in per_head {
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        scatter(&mut dq, &qs, heads, t, hd, 1);
        scatter(&mut dk, &ks, kv_heads, t, hd, group);
        scatter(&mut dv, &vs, kv_heads, t, hd, group);
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// (B, T, heads, kv heads, hd, rotary half, packed tables).
    const B: usize = 2;
    const T: usize = 5;
    const SHAPE: AttentionShape = AttentionShape {
        heads: 4,
        kv_heads: 2,
        head_dim: 6,
    };
    const HALF: usize = 2; // 4 of 6 dims rotate, 2 pass

    fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|i| ((i as f64 * 0.37 + seed as f64 * 1.7).sin() * 43758.5453).fract() * scale)
            .collect()
    }

    /// Straightforward f64 attention with the same conventions, for B·T rows.
    fn reference(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        cos: &[f64],
        sin: &[f64],
        mask: &[f64],
    ) -> Vec<f64> {
        let AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
        } = SHAPE;
        let rot = |x: &[f64], bi: usize, i: usize| -> Vec<f64> {
            let mut y = x.to_vec();
            let base = (bi * T + i) * HALF;
            for j in 0..HALF {
                let (c, s) = (cos[base + j], sin[base + j]);
                y[j] = x[j] * c - x[j + HALF] * s;
                y[j + HALF] = x[j + HALF] * c + x[j] * s;
            }
            y
        };
        let mut out = vec![0f64; B * T * heads * hd];
        for bi in 0..B {
            for h in 0..heads {
                let g = h / (heads / kv_heads);
                for i in 0..T {
                    let qi = rot(&q[(bi * T + i) * heads * hd + h * hd..][..hd], bi, i);
                    let mut s: Vec<f64> = (0..T)
                        .map(|j| {
                            let kj = rot(&k[(bi * T + j) * kv_heads * hd + g * hd..][..hd], bi, j);
                            let dot: f64 = qi.iter().zip(&kj).map(|(a, b)| a * b).sum();
                            dot / (hd as f64).sqrt() + mask[(bi * T + i) * T + j]
                        })
                        .collect();
                    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    s.iter_mut().for_each(|x| *x = (*x - m).exp());
                    let sum: f64 = s.iter().sum();
                    for j in 0..T {
                        for d in 0..hd {
                            out[(bi * T + i) * heads * hd + h * hd + d] +=
                                s[j] / sum * v[(bi * T + j) * kv_heads * hd + g * hd + d];
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn attention_op_matches_an_f64_reference_and_its_finite_differences() -> candle_core::Result<()>
    {
        let AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
        } = SHAPE;
        let dev = Device::Cpu;
        let (nq, nk) = (B * T * heads * hd, B * T * kv_heads * hd);
        let (q, k, v) = (values(nq, 1, 2.0), values(nk, 2, 2.0), values(nk, 3, 1.0));
        let (cos, sin): (Vec<f64>, Vec<f64>) = (0..B * T * HALF)
            .map(|i| ((i as f64 * 0.3).cos(), (i as f64 * 0.3).sin()))
            .unzip();
        // Causal, and row 1 packed as two sequences of 3 and 2.
        let mut mask = vec![0f64; B * T * T];
        for bi in 0..B {
            for i in 0..T {
                for j in 0..T {
                    let other_seq = bi == 1 && (i < 3) != (j < 3);
                    if j > i || other_seq {
                        mask[(bi * T + i) * T + j] = f64::from(f32::MIN);
                    }
                }
            }
        }
        let f32t = |x: &[f64], shape: &[usize]| {
            Tensor::from_vec(x.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape, &dev)
        };
        let qv = Var::from_tensor(&f32t(&q, &[B, T, heads * hd])?)?;
        let kv = Var::from_tensor(&f32t(&k, &[B, T, kv_heads * hd])?)?;
        let vv = Var::from_tensor(&f32t(&v, &[B, T, kv_heads * hd])?)?;
        let y = attention_cpu(
            qv.as_tensor(),
            kv.as_tensor(),
            vv.as_tensor(),
            &f32t(&cos, &[B, T, HALF])?,
            &f32t(&sin, &[B, T, HALF])?,
            Some(&f32t(&mask, &[B, 1, T, T])?),
            SHAPE,
        )?;
        let want = reference(&q, &k, &v, &cos, &sin, &mask);
        let got = y.flatten_all()?.to_vec1::<f32>()?;
        for (g, w) in got.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "forward {g} vs {w}");
        }
        // L = Σ c ⊙ y: gradients against central differences of the f64 reference.
        let c = values(nq, 9, 1.0);
        let loss = (&y * f32t(&c, &[B, T, heads * hd])?)?.sum_all()?;
        let grads = loss.backward()?;
        let l = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
            reference(q, k, v, &cos, &sin, &mask)
                .iter()
                .zip(&c)
                .map(|(a, b)| a * b)
                .sum()
        };
        let eps = 1e-6;
        for (which, var, n) in [(0, &qv, nq), (1, &kv, nk), (2, &vv, nk)] {
            let g = grads
                .get(var)
                .expect("gradient")
                .flatten_all()?
                .to_vec1::<f32>()?;
            for idx in 0..n {
                let mut ins = [q.clone(), k.clone(), v.clone()];
                ins[which][idx] += eps;
                let up = l(&ins[0], &ins[1], &ins[2]);
                ins[which][idx] -= 2.0 * eps;
                let down = l(&ins[0], &ins[1], &ins[2]);
                let fd = (up - down) / (2.0 * eps);
                assert!(
                    (f64::from(g[idx]) - fd).abs() < 2e-4 * fd.abs().max(1.0),
                    "input {which}, element {idx}: {} vs {fd}",
                    g[idx]
                );
            }
        }
        Ok(())
    }
}
