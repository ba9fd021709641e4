//! One forward pass over a batch of tokens from any number of sequences: every matrix product
//! runs once for the whole batch (each weight row is read once and met by every token), split
//! over the team by output rows; attention is split by (token, head).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::config::{EngineConfig, RopeStyle};
use super::kv::SeqCache;
use super::team::{SharedMut, Shares, Team};
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

/// One matrix of a [`matmul`]: its weights, the activations in its format and where its
/// outputs go within each output row.
struct Segment<'a> {
    w: &'a QTensor,
    acts: &'a [u8],
    row_bytes: usize,
    offset: usize,
}

/// `out[i·stride + seg.offset + r] = dot(seg.w[r], seg.acts[i])` for `n` activation rows and
/// every segment, in one team job (a layer's q/k/v or gate/up products cost one dispatch).
///
/// One token (generation, bound by memory bandwidth): the segments' rows laid end to end are
/// cut into [`Shares`], so each member streams through its own part of memory in order and
/// finishes by taking chunks off the end of a slower member's part. Several tokens
/// (prompt processing, bound by compute): tiles of rows that members claim from a shared
/// counter, so a member slowed by a busy core does not hold the others up.
fn matmul(team: &Team, segs: &[Segment], n: usize, out: &mut [f32], stride: usize) {
    let dst = SharedMut::new(out);
    let members = team.size();
    let total_rows: usize = segs.iter().map(|s| s.w.rows).sum();
    debug_assert!(segs.iter().all(|s| s.offset + s.w.rows <= stride) && out.len() >= n * stride);
    if n == 1 {
        // Chunks of about 32 KiB of weights, whole groups of eight rows.
        let chunk = (32 * 1024 / segs[0].w.row_bytes().max(1)).max(8) / 8 * 8;
        let shares = Shares::new(total_rows, chunk, members);
        team.run(&|m| {
            while let Some((mut a, b)) = shares.next(m) {
                let mut seg_start = 0;
                for seg in segs {
                    let seg_end = seg_start + seg.w.rows;
                    if a < b && a < seg_end {
                        let (r0, r1) = (a - seg_start, b.min(seg_end) - seg_start);
                        let wrb = seg.w.row_bytes();
                        let wr = &seg.w.bytes()[r0 * wrb..r1 * wrb];
                        // SAFETY: rows r0..r1 of this segment belong to this chunk only.
                        let o = unsafe { dst.slice(seg.offset + r0, r1 - r0) };
                        let act = &seg.acts[..seg.row_bytes];
                        kernels::vec_dot_rows(seg.w.ty, seg.w.cols, wr, r1 - r0, act, o);
                        a = r1 + seg_start;
                    }
                    seg_start = seg_end;
                }
            }
        });
        return;
    }
    let mut first = Vec::with_capacity(segs.len() + 1);
    first.push(0);
    for s in segs {
        first.push(first.last().unwrap() + s.w.rows.div_ceil(ROW_TILE));
    }
    let total = *first.last().unwrap();
    let next = AtomicUsize::new(0);
    team.run(&|_| {
        let mut tmp = vec![0f32; ROW_TILE * TOKEN_TILE];
        loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= total {
                return;
            }
            let si = first.partition_point(|&f| f <= c) - 1;
            let (seg, w) = (&segs[si], segs[si].w);
            let wrb = w.row_bytes();
            let r0 = (c - first[si]) * ROW_TILE;
            let r1 = (r0 + ROW_TILE).min(w.rows);
            let nr = r1 - r0;
            let wr = &w.bytes()[r0 * wrb..r1 * wrb];
            for t0 in (0..n).step_by(TOKEN_TILE) {
                let tn = TOKEN_TILE.min(n - t0);
                let chunk = &seg.acts[t0 * seg.row_bytes..(t0 + tn) * seg.row_bytes];
                kernels::mat_mul(w.ty, w.cols, wr, nr, chunk, tn, &mut tmp[..tn * nr], nr);
                for i in 0..tn {
                    let base = (t0 + i) * stride + seg.offset + r0;
                    // SAFETY: rows r0..r1 of this segment belong to this tile only.
                    let o = unsafe { dst.slice(base, nr) };
                    o.copy_from_slice(&tmp[i * nr..(i + 1) * nr]);
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
    /// Converts `x` (rows of `cols`) into activation type `at` (read back with [`Self::get`]).
    fn quantize(&mut self, team: &Team, x: &[f32], cols: usize, at: ActType) {
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
    let types: Vec<ActType> = ws
        .iter()
        .map(|w| kernels::act_type(w.ty).expect("validated at load"))
        .collect();
    for (i, &at) in types.iter().enumerate() {
        if !types[..i].contains(&at) {
            acts.quantize(team, src, cols, at);
        }
    }
    let mut offset = 0;
    let segs: Vec<Segment> = ws
        .iter()
        .zip(&types)
        .map(|(w, &at)| {
            let (bytes, row_bytes) = acts.get(at, cols);
            let seg = Segment {
                w,
                acts: bytes,
                row_bytes,
                offset,
            };
            offset += w.rows;
            seg
        })
        .collect();
    matmul(team, &segs, n, out, stride);
    // LoRA adapters: out += s·B·(A·x), per matrix and token.
    let mut offset = 0;
    for w in ws {
        for pair in &w.lora {
            for (x, o) in src.chunks_exact(cols).zip(out.chunks_exact_mut(stride)) {
                pair.apply(x, &mut o[offset..offset + w.rows]);
            }
        }
        offset += w.rows;
    }
}

/// cos and sin of every entry's rotary angles (`rope.dim / 2` each, times LongRoPE's factor),
/// with the long frequencies for sequences that use them.
pub(super) fn rope_tables(
    cfg: &EngineConfig,
    caches: &[&mut SeqCache],
    batch: &[BatchEntry],
    cos: &mut Vec<f32>,
    sin: &mut Vec<f32>,
) {
    let half = cfg.rope.dim / 2;
    cos.resize(batch.len() * half, 0.0);
    sin.resize(batch.len() * half, 0.0);
    for (i, e) in batch.iter().enumerate() {
        let freqs = match (&cfg.rope.long, caches[e.cache].long_rope) {
            (Some((long, _)), true) => long,
            _ => &cfg.rope.inv_freq,
        };
        for (j, f) in freqs.iter().enumerate() {
            let a = e.pos as f64 * *f as f64;
            cos[i * half + j] = (a.cos() * cfg.rope.mscale as f64) as f32;
            sin[i * half + j] = (a.sin() * cfg.rope.mscale as f64) as f32;
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
    rope_tables(cfg, caches, batch, &mut s.cos, &mut s.sin);
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

/// Causal attention of every (token, head) of the batch over its sequence's cache; `qkv` holds
/// `[q; k; v]` per token, the result goes to `att` (`q_dim` per token). A job's cost grows with
/// its token's position, so members claim small runs of jobs from a shared counter, the latest
/// positions first: the last jobs to go are the cheapest, and no member waits long for another.
fn attention(
    cfg: &EngineConfig,
    team: &Team,
    layer: usize,
    caches: &[&mut SeqCache],
    batch: &[BatchEntry],
    qkv: &[f32],
    att: &mut [f32],
) {
    const CLAIM: usize = 4;
    let (hd, qd, kvd) = (cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
    let stride = qd + 2 * kvd;
    let out = SharedMut::new(att);
    let group = cfg.n_head / cfg.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let jobs = batch.len() * cfg.n_head;
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(batch[i].pos));
    let next = AtomicUsize::new(0);
    team.run(&|_| {
        let mut scores = Vec::new();
        loop {
            let first = next.fetch_add(CLAIM, Ordering::Relaxed);
            if first >= jobs {
                return;
            }
            for job in first..(first + CLAIM).min(jobs) {
                let (i, h) = (order[job / cfg.n_head], job % cfg.n_head);
                let e = &batch[i];
                let c = &*caches[e.cache];
                let q = &qkv[i * stride + h * hd..i * stride + (h + 1) * hd];
                let kv_off = (h / group) * hd;
                let n = e.pos + 1;
                scores.resize(n, 0.0);
                kernels::attn::scores(q, &c.k[layer][kv_off..], kvd, scale, &mut scores);
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0f32;
                for sc in scores.iter_mut() {
                    *sc = (*sc - max).exp();
                    sum += *sc;
                }
                let inv = 1.0 / sum;
                scores.iter_mut().for_each(|x| *x *= inv);
                // SAFETY: (i, h) belongs to this job only.
                let o = unsafe { out.slice(i * qd + h * hd, hd) };
                kernels::attn::weighted_sum(&scores, &c.v[layer][kv_off..], kvd, o);
            }
        }
    });
}
