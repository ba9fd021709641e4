//! One forward pass over a batch of tokens from any number of sequences: every matrix product
//! runs once for the whole batch (each weight row is read once and met by every token), split
//! over the team by output rows; attention is split by (token, head).

use super::config::{EngineConfig, RopeStyle};
use super::kv::SeqCache;
use super::team::{SharedMut, Team};
use super::weights::{ModelWeights, QTensor, QkvWeights, UpWeights};
use crate::kernels::{self, ActType};

/// One token of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEntry {
    /// Index of its sequence's cache in the `caches` slice given to [`forward`].
    pub cache: usize,
    /// The token id.
    pub token: u32,
    /// Its position in the sequence.
    pub pos: usize,
    /// Whether logits are wanted for it.
    pub logits: bool,
}

/// Reusable buffers of the forward pass.
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    gate_up: Vec<f32>,
    ff: Vec<f32>,
    tmp: Vec<f32>,
    acts: ActBufs,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Quantized copies of one input, one buffer per activation type (kept to reuse allocations).
#[derive(Default)]
struct ActBufs(Vec<(ActType, Vec<u8>)>);

/// What a forward pass returns.
#[derive(Default)]
pub struct ForwardOut {
    /// Logits (`vocab` values) of each entry with `logits`, in batch order.
    pub logits: Vec<f32>,
    /// Final-normed hidden states of every entry (`n_embd` each), when asked for.
    pub hidden: Vec<f32>,
}

const TOKEN_TILE: usize = 32;
const ROW_TILE: usize = 64;

/// `out[i·stride + offset + r] = dot(w[r], acts[i])` for `n` activation rows, split over the
/// team by weight rows.
#[allow(clippy::too_many_arguments)]
fn matmul(
    team: &Team,
    w: &QTensor,
    acts: &[u8],
    row_bytes: usize,
    n: usize,
    out: &mut [f32],
    stride: usize,
    offset: usize,
) {
    debug_assert!(offset + w.rows <= stride && out.len() >= n * stride);
    let rows = w.rows;
    let wrb = w.row_bytes();
    let dst = SharedMut::new(out);
    let members = team.size();
    team.run(&|m| {
        let (a, b) = Team::share(rows, m, members);
        if a == b {
            return;
        }
        let bytes = &w.bytes()[a * wrb..b * wrb];
        if n == 1 {
            // SAFETY: rows a..b of the single output row belong to this member only.
            let o = unsafe { dst.slice(offset + a, b - a) };
            kernels::vec_dot_rows(w.ty, w.cols, bytes, b - a, &acts[..row_bytes], o);
            return;
        }
        let mut tmp = vec![0f32; ROW_TILE * TOKEN_TILE];
        for r0 in (a..b).step_by(ROW_TILE) {
            let r1 = (r0 + ROW_TILE).min(b);
            let nr = r1 - r0;
            for t0 in (0..n).step_by(TOKEN_TILE) {
                let tn = TOKEN_TILE.min(n - t0);
                let chunk = &acts[t0 * row_bytes..(t0 + tn) * row_bytes];
                let wr = &bytes[(r0 - a) * wrb..(r1 - a) * wrb];
                kernels::mat_mul(w.ty, w.cols, wr, nr, chunk, tn, &mut tmp[..tn * nr], nr);
                for i in 0..tn {
                    let base = (t0 + i) * stride + offset + r0;
                    for (k, v) in tmp[i * nr..(i + 1) * nr].iter().enumerate() {
                        // SAFETY: rows r0..r1 belong to this member only; indices are in bounds.
                        unsafe { dst.write(base + k, *v) };
                    }
                }
            }
        }
    });
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss: f32 = kernels::dot_f32(xr, xr) / d as f32;
        let s = 1.0 / (ss + eps).sqrt();
        for ((o, &xv), &wv) in or.iter_mut().zip(xr).zip(w) {
            *o = xv * s * wv;
        }
    }
}

impl ActBufs {
    /// Converts `x` (rows of `cols`) into activation type `at`; returns the bytes and row size.
    fn quantize(&mut self, team: &Team, x: &[f32], cols: usize, at: ActType) -> (&[u8], usize) {
        let rb = kernels::act_row_bytes(at, cols);
        let n = x.len() / cols;
        let slot = match self.0.iter().position(|(a, _)| *a == at) {
            Some(i) => i,
            None => {
                self.0.push((at, Vec::new()));
                self.0.len() - 1
            }
        };
        let buf = &mut self.0[slot].1;
        buf.resize(n * rb, 0);
        if n >= 8 && team.size() > 1 {
            let dst = SharedMut::new(buf);
            let members = team.size();
            team.run(&|m| {
                let (a, b) = Team::share(n, m, members);
                for i in a..b {
                    // SAFETY: row i belongs to this member only.
                    let o = unsafe { dst.slice(i * rb, rb) };
                    kernels::quantize_act_row(at, &x[i * cols..(i + 1) * cols], o);
                }
            });
        } else {
            for (i, o) in buf.chunks_exact_mut(rb).enumerate() {
                kernels::quantize_act_row(at, &x[i * cols..(i + 1) * cols], o);
            }
        }
        (buf, rb)
    }

    /// The bytes and row size of the last conversion into `at`.
    fn get(&self, at: ActType, cols: usize) -> (&[u8], usize) {
        let buf = self
            .0
            .iter()
            .find(|(a, _)| *a == at)
            .map_or(&[][..], |(_, b)| b);
        (buf, kernels::act_row_bytes(at, cols))
    }
}

/// Products of `src` (rows of `ws[0].cols`) with several matrices, written side by side into
/// `out` (each row: `ws[0]`'s outputs, then `ws[1]`'s, …). `src` is quantized once per
/// activation type.
fn project(team: &Team, acts: &mut ActBufs, src: &[f32], ws: &[&QTensor], out: &mut Vec<f32>) {
    let cols = ws[0].cols;
    let n = src.len() / cols;
    let stride: usize = ws.iter().map(|w| w.rows).sum();
    out.resize(n * stride, 0.0);
    let mut done: Option<ActType> = None;
    let mut offset = 0;
    for w in ws {
        let at = kernels::act_type(w.ty).expect("validated at load");
        let (bytes, rb) = if done == Some(at) {
            acts.get(at, cols)
        } else {
            done = Some(at);
            acts.quantize(team, src, cols, at)
        };
        matmul(team, w, bytes, rb, n, out, stride, offset);
        offset += w.rows;
    }
}

fn rope_tables(
    cfg: &EngineConfig,
    caches: &[&mut SeqCache],
    batch: &[BatchEntry],
    s: &mut Scratch,
) {
    let half = cfg.rope.dim / 2;
    s.cos.resize(batch.len() * half, 0.0);
    s.sin.resize(batch.len() * half, 0.0);
    for (i, e) in batch.iter().enumerate() {
        let freqs = match (&cfg.rope.long, caches[e.cache].long_rope) {
            (Some((long, _)), true) => long,
            _ => &cfg.rope.inv_freq,
        };
        for (j, f) in freqs.iter().enumerate() {
            let a = e.pos as f64 * *f as f64;
            s.cos[i * half + j] = (a.cos() * cfg.rope.mscale as f64) as f32;
            s.sin[i * half + j] = (a.sin() * cfg.rope.mscale as f64) as f32;
        }
    }
}

fn apply_rope(cfg: &EngineConfig, head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cfg.rope.dim / 2;
    for j in 0..half {
        let (a, b) = match cfg.rope.style {
            RopeStyle::Neox => (j, j + half),
            RopeStyle::Interleaved => (2 * j, 2 * j + 1),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos[j] - x1 * sin[j];
        head[b] = x0 * sin[j] + x1 * cos[j];
    }
}

/// Runs the decoder over `batch`, appending keys/values to `caches` and filling `out`.
/// Positions must be in range of each cache (`pos ≤ cache.len` in batch order).
#[allow(clippy::too_many_arguments)] // the engine's one internal entry point; Runner wraps it
pub fn forward(
    cfg: &EngineConfig,
    w: &ModelWeights,
    team: &Team,
    s: &mut Scratch,
    caches: &mut [&mut SeqCache],
    batch: &[BatchEntry],
    want_hidden: bool,
    out: &mut ForwardOut,
) {
    let n = batch.len();
    let (d, hd) = (cfg.n_embd, cfg.head_dim);
    let (qd, kvd, ff) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    for e in batch {
        caches[e.cache].reserve(e.pos + 1);
    }
    s.x.resize(n * d, 0.0);
    for (i, e) in batch.iter().enumerate() {
        w.tok_embd
            .dequantize_row(e.token as usize, &mut s.x[i * d..(i + 1) * d]);
    }
    rope_tables(cfg, caches, batch, s);
    let half = cfg.rope.dim / 2;
    s.h.resize(n * d, 0.0);
    for (li, l) in w.layers.iter().enumerate() {
        rms_norm(&s.x, &l.attn_norm, cfg.eps, &mut s.h);
        // [q; k; v] per token, from one fused matrix or three written side by side.
        match &l.qkv {
            QkvWeights::Fused(t) => project(team, &mut s.acts, &s.h, &[t], &mut s.qkv),
            QkvWeights::Split(q, k, v) => project(team, &mut s.acts, &s.h, &[q, k, v], &mut s.qkv),
        }
        // RoPE on q and k, then keys/values into the caches.
        let stride = qd + 2 * kvd;
        for (i, e) in batch.iter().enumerate() {
            let (cos, sin) = (
                &s.cos[i * half..(i + 1) * half],
                &s.sin[i * half..(i + 1) * half],
            );
            let row = &mut s.qkv[i * stride..(i + 1) * stride];
            for head in row[..qd + kvd].chunks_exact_mut(hd) {
                apply_rope(cfg, head, cos, sin);
            }
            let c = &mut *caches[e.cache];
            c.k[li][e.pos * kvd..(e.pos + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
            c.v[li][e.pos * kvd..(e.pos + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
        }
        s.att.resize(n * qd, 0.0);
        attention(cfg, team, li, caches, batch, &s.qkv, &mut s.att);
        project(team, &mut s.acts, &s.att, &[&l.wo], &mut s.tmp);
        for (x, t) in s.x.iter_mut().zip(&s.tmp) {
            *x += t;
        }
        rms_norm(&s.x, &l.ffn_norm, cfg.eps, &mut s.h);
        // [gate; up] per token, then silu(gate)·up.
        match &l.up {
            UpWeights::Fused(t) => project(team, &mut s.acts, &s.h, &[t], &mut s.gate_up),
            UpWeights::Split(g, u) => project(team, &mut s.acts, &s.h, &[g, u], &mut s.gate_up),
        }
        s.ff.resize(n * ff, 0.0);
        for (o, gu) in
            s.ff.chunks_exact_mut(ff)
                .zip(s.gate_up.chunks_exact(2 * ff))
        {
            let (g, u) = gu.split_at(ff);
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        }
        project(team, &mut s.acts, &s.ff, &[&l.down], &mut s.tmp);
        for (x, t) in s.x.iter_mut().zip(&s.tmp) {
            *x += t;
        }
    }
    rms_norm(&s.x, &w.norm, cfg.eps, &mut s.h);
    if want_hidden {
        out.hidden.clear();
        out.hidden.extend_from_slice(&s.h);
    }
    let picked: Vec<usize> = (0..n).filter(|&i| batch[i].logits).collect();
    if picked.is_empty() {
        out.logits.clear();
        return;
    }
    s.tmp.clear();
    for &i in &picked {
        s.tmp.extend_from_slice(&s.h[i * d..(i + 1) * d]);
    }
    project(team, &mut s.acts, &s.tmp, &[w.output()], &mut out.logits);
}

/// Causal attention of every (token, head) of the batch over its sequence's cache, split over
/// the team; `qkv` holds `[q; k; v]` per token, the result goes to `att` (`q_dim` per token).
fn attention(
    cfg: &EngineConfig,
    team: &Team,
    layer: usize,
    caches: &[&mut SeqCache],
    batch: &[BatchEntry],
    qkv: &[f32],
    att: &mut [f32],
) {
    let (hd, qd, kvd) = (cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
    let stride = qd + 2 * kvd;
    let out = SharedMut::new(att);
    let members = team.size();
    let group = cfg.n_head / cfg.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    team.run(&|m| {
        let (a, b) = Team::share(batch.len() * cfg.n_head, m, members);
        let mut scores = Vec::new();
        for job in a..b {
            let (i, h) = (job / cfg.n_head, job % cfg.n_head);
            let e = &batch[i];
            let c = &*caches[e.cache];
            let q = &qkv[i * stride + h * hd..i * stride + (h + 1) * hd];
            let kv_off = (h / group) * hd;
            let (ks, vs) = (&c.k[layer], &c.v[layer]);
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for p in 0..=e.pos {
                let k = &ks[p * kvd + kv_off..p * kvd + kv_off + hd];
                let sc = kernels::dot_f32(q, k) * scale;
                max = max.max(sc);
                scores.push(sc);
            }
            let mut sum = 0f32;
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                sum += *sc;
            }
            // SAFETY: (i, h) belongs to this member only.
            let o = unsafe { out.slice(i * qd + h * hd, hd) };
            o.fill(0.0);
            for (p, sc) in scores.iter().enumerate() {
                let v = &vs[p * kvd + kv_off..p * kvd + kv_off + hd];
                kernels::axpy_f32(sc / sum, v, o);
            }
        }
    });
}
