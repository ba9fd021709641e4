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
    ff: Vec<f32>,
    ff2: Vec<f32>,
    tmp: Vec<f32>,
    acts: Vec<(ActType, Vec<u8>)>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

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

/// `out[i][r] = dot(w[r], acts[i])` for `n` activation rows, split over the team by rows.
fn matmul(team: &Team, w: &QTensor, acts: &[u8], row_bytes: usize, n: usize, out: &mut [f32]) {
    debug_assert_eq!(out.len(), n * w.rows);
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
            let o = unsafe { dst.slice(a, b - a) };
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
                    for (k, v) in tmp[i * nr..(i + 1) * nr].iter().enumerate() {
                        // SAFETY: rows r0..r1 belong to this member only; indices are in bounds.
                        unsafe { dst.write((t0 + i) * rows + r0 + k, *v) };
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

impl Scratch {
    /// Converts `x` (`n` rows of `cols`) for weights of type `ty`; returns (act type, row bytes).
    fn quantize(
        &mut self,
        team: &Team,
        x: &[f32],
        cols: usize,
        ty: kernels::GgmlType,
    ) -> (usize, usize) {
        let at = kernels::act_type(ty).expect("validated at load");
        let rb = kernels::act_row_bytes(at, cols);
        let n = x.len() / cols;
        let slot = match self.acts.iter().position(|(a, _)| *a == at) {
            Some(i) => i,
            None => {
                self.acts.push((at, Vec::new()));
                self.acts.len() - 1
            }
        };
        let buf = &mut self.acts[slot].1;
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
        (slot, rb)
    }

    /// Clears cached activations (call when their source changes).
    fn invalidate(&mut self) {
        for (_, b) in &mut self.acts {
            b.clear();
        }
    }
}

/// Products of one input against several matrices, quantizing it once per activation type.
fn project(
    team: &Team,
    s: &mut Scratch,
    input_is_h: bool,
    ws: &[&QTensor],
    outs: &mut [&mut Vec<f32>],
) {
    let src = if input_is_h {
        std::mem::take(&mut s.h)
    } else {
        std::mem::take(&mut s.att)
    };
    let cols = ws[0].cols;
    let n = src.len() / cols;
    s.invalidate();
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        let slot = s
            .acts
            .iter()
            .position(|(a, b)| Some(*a) == kernels::act_type(w.ty) && !b.is_empty());
        let (slot, rb) = match slot {
            Some(i) => (i, kernels::act_row_bytes(s.acts[i].0, cols)),
            None => s.quantize(team, &src, cols, w.ty),
        };
        out.resize(n * w.rows, 0.0);
        matmul(team, w, &s.acts[slot].1, rb, n, out);
    }
    if input_is_h {
        s.h = src;
    } else {
        s.att = src;
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
        let mut qkv = std::mem::take(&mut s.qkv);
        match &l.qkv {
            QkvWeights::Fused(t) => project(team, s, true, &[t], &mut [&mut qkv]),
            QkvWeights::Split(q, k, v) => {
                let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
                project(team, s, true, &[q, k, v], &mut [&mut a, &mut b, &mut c]);
                qkv.resize(n * (qd + 2 * kvd), 0.0);
                for i in 0..n {
                    let row = &mut qkv[i * (qd + 2 * kvd)..(i + 1) * (qd + 2 * kvd)];
                    row[..qd].copy_from_slice(&a[i * qd..(i + 1) * qd]);
                    row[qd..qd + kvd].copy_from_slice(&b[i * kvd..(i + 1) * kvd]);
                    row[qd + kvd..].copy_from_slice(&c[i * kvd..(i + 1) * kvd]);
                }
            }
        }
        // RoPE on q and k, then keys/values into the caches.
        let stride = qd + 2 * kvd;
        for (i, e) in batch.iter().enumerate() {
            let (cos, sin) = (
                &s.cos[i * half..(i + 1) * half],
                &s.sin[i * half..(i + 1) * half],
            );
            let row = &mut qkv[i * stride..(i + 1) * stride];
            for head in row[..qd + kvd].chunks_exact_mut(hd) {
                apply_rope(cfg, head, cos, sin);
            }
            let c = &mut *caches[e.cache];
            c.k[li][e.pos * kvd..(e.pos + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
            c.v[li][e.pos * kvd..(e.pos + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
        }
        // Attention, split by (token, head).
        s.att.resize(n * qd, 0.0);
        {
            let att = SharedMut::new(&mut s.att);
            let caches_ro: Vec<&SeqCache> = caches.iter().map(|c| &**c).collect();
            let members = team.size();
            let group = cfg.n_head / cfg.n_head_kv;
            let scale = 1.0 / (hd as f32).sqrt();
            let qkv_ref = &qkv;
            team.run(&|m| {
                let (a, b) = Team::share(n * cfg.n_head, m, members);
                let mut scores = Vec::new();
                for job in a..b {
                    let (i, h) = (job / cfg.n_head, job % cfg.n_head);
                    let e = &batch[i];
                    let c = caches_ro[e.cache];
                    let q = &qkv_ref[i * stride + h * hd..i * stride + (h + 1) * hd];
                    let kvh = h / group;
                    let (ks, vs) = (&c.k[li], &c.v[li]);
                    scores.clear();
                    let mut max = f32::NEG_INFINITY;
                    for p in 0..=e.pos {
                        let k = &ks[p * kvd + kvh * hd..p * kvd + (kvh + 1) * hd];
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
                    let o = unsafe { att.slice(i * qd + h * hd, hd) };
                    o.fill(0.0);
                    for (p, sc) in scores.iter().enumerate() {
                        let v = &vs[p * kvd + kvh * hd..p * kvd + (kvh + 1) * hd];
                        kernels::axpy_f32(sc / sum, v, o);
                    }
                }
            });
        }
        s.qkv = qkv;
        let mut tmp = std::mem::take(&mut s.tmp);
        project(team, s, false, &[&l.wo], &mut [&mut tmp]);
        for (x, t) in s.x.iter_mut().zip(&tmp) {
            *x += t;
        }
        rms_norm(&s.x, &l.ffn_norm, cfg.eps, &mut s.h);
        let (mut g, mut u) = (std::mem::take(&mut s.ff), std::mem::take(&mut s.ff2));
        match &l.up {
            UpWeights::Fused(t) => {
                project(team, s, true, &[t], &mut [&mut g]);
                // [gate; up] per token → gate in g, up in u.
                u.resize(n * ff, 0.0);
                for i in 0..n {
                    u[i * ff..(i + 1) * ff].copy_from_slice(&g[i * 2 * ff + ff..(i + 1) * 2 * ff]);
                    g.copy_within(i * 2 * ff..i * 2 * ff + ff, i * ff);
                }
                g.truncate(n * ff);
            }
            UpWeights::Split(gt, ut) => project(team, s, true, &[gt, ut], &mut [&mut g, &mut u]),
        }
        for (gv, uv) in g.iter_mut().zip(&u) {
            *gv = *gv / (1.0 + (-*gv).exp()) * uv;
        }
        // The MLP input goes through `att`'s slot (project's second source).
        let att = std::mem::replace(&mut s.att, g);
        project(team, s, false, &[&l.down], &mut [&mut tmp]);
        s.ff = std::mem::replace(&mut s.att, att);
        s.ff2 = u;
        for (x, t) in s.x.iter_mut().zip(&tmp) {
            *x += t;
        }
        s.tmp = tmp;
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
    let mut h = Vec::with_capacity(picked.len() * d);
    for &i in &picked {
        h.extend_from_slice(&s.h[i * d..(i + 1) * d]);
    }
    let keep = std::mem::replace(&mut s.h, h);
    let mut logits = std::mem::take(&mut out.logits);
    project(team, s, true, &[w.output()], &mut [&mut logits]);
    out.logits = logits;
    s.h = keep;
}
