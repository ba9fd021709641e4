// Fused training kernels of so8t (forward and backward), compiled to PTX by build.rs when the
// `cuda` feature is on and loaded by src/cuda_ops.rs. Each element-wise chain that the composed
// candle graph runs as several kernels (and keeps several intermediates of for the backward pass)
// is one kernel here; sums are accumulated in f32 whatever the storage type.
//
// Storage types: float (suffix _f32) and __nv_bfloat16 (suffix _bf16). Rows are contiguous.
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  __syncthreads();  // warp_sums may still be read by a previous call
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = lane < warps ? warp_sums[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

__device__ __forceinline__ float block_max(float v) {
  __shared__ float warp_max[32];
  __syncthreads();
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = lane < warps ? warp_max[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

// ---- RMSNorm: y = w · x / sqrt(mean(x²) + eps), one block per row -------------------------
template <typename T>
__device__ void rmsnorm_fwd(const T* x, const T* w, T* y, int cols, float eps) {
  const T* xr = x + (size_t)blockIdx.x * cols;
  T* yr = y + (size_t)blockIdx.x * cols;
  float ss = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    float v = to_f(xr[i]);
    ss += v * v;
  }
  const float r = rsqrtf(block_sum(ss) / cols + eps);
  for (int i = threadIdx.x; i < cols; i += blockDim.x) yr[i] = from_f<T>(to_f(xr[i]) * r * to_f(w[i]));
}

// dx = r · (g − n · mean(g · n)) with g = dy · w, n = x · r (w is frozen: no dw).
template <typename T>
__device__ void rmsnorm_bwd(const T* dy, const T* x, const T* w, T* dx, int cols, float eps) {
  const size_t off = (size_t)blockIdx.x * cols;
  float ss = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    float v = to_f(x[off + i]);
    ss += v * v;
  }
  const float r = rsqrtf(block_sum(ss) / cols + eps);
  float gn = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x)
    gn += to_f(dy[off + i]) * to_f(w[i]) * to_f(x[off + i]) * r;
  const float mean_gn = block_sum(gn) / cols;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    const float g = to_f(dy[off + i]) * to_f(w[i]);
    const float n = to_f(x[off + i]) * r;
    dx[off + i] = from_f<T>(r * (g - n * mean_gn));
  }
}

// ---- masked softmax over the last dim (attention probabilities), one warp per row ----------
// x: scores [rows, cols]; mask: additive f32 [mask_rows, cols] or null; row r of x uses mask row
// (r / (heads·t)) % mask_batch · t + r % t, i.e. the mask [B|1, 1, t, cols] broadcast over heads.
// A row is 2–8 KB, so its second and third reads come from L1; no block-wide synchronization.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

template <typename T>
__device__ void softmax_fwd(const T* x, const float* mask, T* y, int rows, int cols, int heads,
                            int t, int mask_batch) {
  const size_t r = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= (size_t)rows) return;
  const int lane = threadIdx.x & 31;
  const T* xr = x + r * cols;
  T* yr = y + r * cols;
  const float* mr = nullptr;
  if (mask) {
    const size_t b = (r / ((size_t)heads * t)) % mask_batch;
    mr = mask + (b * t + r % t) * cols;
  }
  float mx = -INFINITY;
  for (int i = lane; i < cols; i += 32) mx = fmaxf(mx, to_f(xr[i]) + (mr ? mr[i] : 0.f));
  mx = warp_max(mx);
  float s = 0.f;
  for (int i = lane; i < cols; i += 32) s += __expf(to_f(xr[i]) + (mr ? mr[i] : 0.f) - mx);
  const float inv = 1.f / warp_sum(s);
  for (int i = lane; i < cols; i += 32)
    yr[i] = from_f<T>(__expf(to_f(xr[i]) + (mr ? mr[i] : 0.f) - mx) * inv);
}

// dx = y · (dy − Σ dy·y), one warp per row.
template <typename T>
__device__ void softmax_bwd(const T* dy, const T* y, T* dx, int rows, int cols) {
  const size_t r = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= (size_t)rows) return;
  const int lane = threadIdx.x & 31;
  const size_t off = r * cols;
  float s = 0.f;
  for (int i = lane; i < cols; i += 32) s += to_f(dy[off + i]) * to_f(y[off + i]);
  s = warp_sum(s);
  for (int i = lane; i < cols; i += 32)
    dx[off + i] = from_f<T>(to_f(y[off + i]) * (to_f(dy[off + i]) - s));
}

// ---- SwiGLU of the fused gate_up output: h = silu(g) · u, gu = [g | u] per row ----------
template <typename T>
__device__ void swiglu_fwd(const T* gu, T* h, size_t n, int inter) {
  for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
    const size_t row = k / inter, i = k % inter;
    const float g = to_f(gu[row * 2 * inter + i]), u = to_f(gu[row * 2 * inter + inter + i]);
    h[k] = from_f<T>(g / (1.f + __expf(-g)) * u);
  }
}

// dgu = [dh · u · σ(g)(1 + g(1 − σ(g))) | dh · silu(g)]
template <typename T>
__device__ void swiglu_bwd(const T* dh, const T* gu, T* dgu, size_t n, int inter) {
  for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
    const size_t row = k / inter, i = k % inter;
    const float g = to_f(gu[row * 2 * inter + i]), u = to_f(gu[row * 2 * inter + inter + i]);
    const float sg = 1.f / (1.f + __expf(-g)), d = to_f(dh[k]);
    dgu[row * 2 * inter + i] = from_f<T>(d * u * sg * (1.f + g * (1.f - sg)));
    dgu[row * 2 * inter + inter + i] = from_f<T>(d * g * sg);
  }
}

// ---- rotary embedding (rotate-half), x [b, heads, t, d], cos/sin f32 [cos_b, t, half] -------
// rot = 2·half ≤ d leading dims rotate, the rest passes; sign −1 rotates back (the backward).
template <typename T>
__device__ void rope(const T* x, const float* cos, const float* sin, T* y, size_t n, int heads,
                     int t, int d, int half, int cos_b, float sign) {
  for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
    const int j = k % d;
    const size_t rowi = k / d;  // (b·heads + h)·t + pos
    const int pos = rowi % t;
    const size_t b = rowi / ((size_t)heads * t);
    if (j >= 2 * half) {
      y[k] = x[k];
      continue;
    }
    const int i = j < half ? j : j - half;
    const size_t ci = ((cos_b > 1 ? b : 0) * t + pos) * half + i;
    const float c = cos[ci], s = sign * sin[ci];
    const size_t base = k - j;
    const float x1 = to_f(x[base + i]), x2 = to_f(x[base + i + half]);
    y[k] = from_f<T>(j < half ? x1 * c - x2 * s : x2 * c + x1 * s);
  }
}

// ---- cross-entropy rows: loss[r] = w[r] · (logsumexp(x_r) − x_r[tg[r]]), one block per row -----
// Rows with w = 0 cost nothing; the backward writes dx = g[r]·w[r]·(softmax(x_r) − onehot(tg[r])).
template <typename T>
__device__ void ce_fwd(const T* x, const unsigned* tg, const float* w, float* loss, int cols) {
  const size_t r = blockIdx.x;
  const float wr = w[r];
  if (wr == 0.f) {
    if (threadIdx.x == 0) loss[r] = 0.f;
    return;
  }
  const T* xr = x + r * cols;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) mx = fmaxf(mx, to_f(xr[i]));
  mx = block_max(mx);
  float s = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) s += expf(to_f(xr[i]) - mx);
  s = block_sum(s);
  if (threadIdx.x == 0) loss[r] = wr * (mx + logf(s) - to_f(xr[tg[r]]));
}

template <typename T>
__device__ void ce_bwd(const T* x, const unsigned* tg, const float* w, const float* g, T* dx,
                       int cols) {
  const size_t r = blockIdx.x;
  const float c = g[r] * w[r];
  T* dr = dx + r * cols;
  if (c == 0.f) {
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dr[i] = from_f<T>(0.f);
    return;
  }
  const T* xr = x + r * cols;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) mx = fmaxf(mx, to_f(xr[i]));
  mx = block_max(mx);
  float s = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) s += expf(to_f(xr[i]) - mx);
  const float lse = mx + logf(block_sum(s));
  const int t = (int)tg[r];
  for (int i = threadIdx.x; i < cols; i += blockDim.x)
    dr[i] = from_f<T>(c * (expf(to_f(xr[i]) - lse) - (i == t ? 1.f : 0.f)));
}

// ---- SO(8) gate: y[r, 8b+i] = Σ_j M_b[i][j] z[r, 8b+j] (transpose: M_b[j][i]), M f32 ------------
template <typename T>
__device__ void gate_apply(const T* z, const float* m, T* y, size_t n, int width, int transpose) {
  for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
    const int col = k % width, b = col >> 3, i = col & 7;
    const float* mb = m + (size_t)b * 64;
    const size_t base = k - i;
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc += (transpose ? mb[j * 8 + i] : mb[i * 8 + j]) * to_f(z[base + j]);
    y[k] = from_f<T>(acc);
  }
}

// dM_b[i][j] += Σ_r dy[r, 8b+i] · z[r, 8b+j] over rows [blockIdx.y·chunk, +chunk); block b =
// blockIdx.x, 64 threads (i, j); dm f32 [nb, 8, 8], zeroed by the caller.
template <typename T>
__device__ void gate_grad(const T* dy, const T* z, float* dm, int rows, int width, int chunk) {
  const int b = blockIdx.x, i = threadIdx.x >> 3, j = threadIdx.x & 7;
  const int r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  float acc = 0.f;
  for (int r = r0; r < r1; ++r) {
    const size_t off = (size_t)r * width + b * 8;
    acc += to_f(dy[off + i]) * to_f(z[off + j]);
  }
  atomicAdd(dm + b * 64 + threadIdx.x, acc);
}

// ---- attention heads: token-major [B, T, (nq + nk + nv)·hd] <-> head-first [B, n, T, hd] ------
// The first nq heads are q (rotated, times q_scale), the next nk are k (rotated), the last nv pass.
// Rotation as in `rope` above (pairs (i, i + half), i < half; sign −1 rotates back). `split` reads
// the token-major rows (coalesced) and writes each head's row; `merge` is its transpose.
template <typename T>
__device__ __forceinline__ float rotated(const T* row, int d, int half, const float* cs,
                                         const float* sn, float sign) {
  if (d >= 2 * half) return to_f(row[d]);
  const int i = d < half ? d : d - half;
  const float c = cs[i], s = sign * sn[i];
  const float x1 = to_f(row[i]), x2 = to_f(row[i + half]);
  return d < half ? x1 * c - x2 * s : x2 * c + x1 * s;
}

// One block per token row (b, t); its threads walk the row's columns, so the token-major side is
// read or written contiguously and the head-first side in runs of hd; 32-bit index arithmetic.
template <typename T>
__device__ void heads_split(const T* x, const float* cos, const float* sin, T* q, T* k, T* v, int B,
                            int t, int nq, int nk, int nv, int hd, int half, int cos_b,
                            float q_scale, float sign) {
  const int w = (nq + nk + nv) * hd;
  const unsigned bt = blockIdx.x, pos = bt % t, b = bt / t;
  const T* xr = x + (size_t)bt * w;
  const size_t ci = ((size_t)(cos_b > 1 ? b : 0) * t + pos) * half;
  for (int c = threadIdx.x; c < w; c += blockDim.x) {
    const int h = c / hd, d = c - h * hd;
    const T* row = xr + h * hd;
    if (h < nq) {
      q[(((size_t)b * nq + h) * t + pos) * hd + d] =
          from_f<T>(rotated(row, d, half, cos + ci, sin + ci, sign) * q_scale);
    } else if (h < nq + nk) {
      k[(((size_t)b * nk + h - nq) * t + pos) * hd + d] =
          from_f<T>(rotated(row, d, half, cos + ci, sin + ci, sign));
    } else {
      v[(((size_t)b * nv + h - nq - nk) * t + pos) * hd + d] = row[d];
    }
  }
}

template <typename T>
__device__ void heads_merge(const T* q, const T* k, const T* v, const float* cos, const float* sin,
                            T* x, int B, int t, int nq, int nk, int nv, int hd, int half, int cos_b,
                            float q_scale, float sign) {
  const int w = (nq + nk + nv) * hd;
  const unsigned bt = blockIdx.x, pos = bt % t, b = bt / t;
  T* xr = x + (size_t)bt * w;
  const size_t ci = ((size_t)(cos_b > 1 ? b : 0) * t + pos) * half;
  for (int c = threadIdx.x; c < w; c += blockDim.x) {
    const int h = c / hd, d = c - h * hd;
    float val;
    if (h < nq) {
      val = rotated(q + (((size_t)b * nq + h) * t + pos) * hd, d, half, cos + ci, sin + ci, sign) * q_scale;
    } else if (h < nq + nk) {
      val = rotated(k + (((size_t)b * nk + h - nq) * t + pos) * hd, d, half, cos + ci, sin + ci, sign);
    } else {
      val = to_f(v[(((size_t)b * nv + h - nq - nk) * t + pos) * hd + d]);
    }
    xr[c] = from_f<T>(val);
  }
}

// ---- AdamW (PyTorch semantics) on an f32 parameter, moments f32, gradient T ---------------------
// out = [p'; m'; v'] (3·n floats); m, v null on the first step (zero moments).
template <typename T>
__device__ void adamw(const float* p, const T* g, const float* m, const float* v, float* out,
                      size_t n, float lr, float b1, float b2, float eps, float decay, float bc1,
                      float bc2, float gscale) {
  for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
    const float gi = to_f(g[k]) * gscale;
    const float mk = (m ? b1 * m[k] : 0.f) + (1.f - b1) * gi;
    const float vk = (v ? b2 * v[k] : 0.f) + (1.f - b2) * gi * gi;
    const float pk = p[k] * (1.f - lr * decay);
    out[k] = pk - lr * ((mk / bc1) / (sqrtf(vk / bc2) + eps));
    out[n + k] = mk;
    out[2 * n + k] = vk;
  }
}

#define INSTANTIATE(T, S)                                                                         \
  extern "C" __global__ void rmsnorm_fwd_##S(const T* x, const T* w, T* y, int cols, float eps) { \
    rmsnorm_fwd<T>(x, w, y, cols, eps);                                                           \
  }                                                                                               \
  extern "C" __global__ void rmsnorm_bwd_##S(const T* dy, const T* x, const T* w, T* dx, int cols, \
                                             float eps) {                                         \
    rmsnorm_bwd<T>(dy, x, w, dx, cols, eps);                                                      \
  }                                                                                               \
  extern "C" __global__ void softmax_fwd_##S(const T* x, const float* mask, T* y, int rows,       \
                                             int cols, int heads, int t, int mask_batch) {        \
    softmax_fwd<T>(x, mask, y, rows, cols, heads, t, mask_batch);                                 \
  }                                                                                               \
  extern "C" __global__ void softmax_bwd_##S(const T* dy, const T* y, T* dx, int rows, int cols) { \
    softmax_bwd<T>(dy, y, dx, rows, cols);                                                        \
  }                                                                                               \
  extern "C" __global__ void swiglu_fwd_##S(const T* gu, T* h, size_t n, int inter) {             \
    swiglu_fwd<T>(gu, h, n, inter);                                                               \
  }                                                                                               \
  extern "C" __global__ void swiglu_bwd_##S(const T* dh, const T* gu, T* dgu, size_t n, int inter) { \
    swiglu_bwd<T>(dh, gu, dgu, n, inter);                                                         \
  }                                                                                               \
  extern "C" __global__ void rope_##S(const T* x, const float* cos, const float* sin, T* y,       \
                                      size_t n, int heads, int t, int d, int half, int cos_b,     \
                                      float sign) {                                               \
    rope<T>(x, cos, sin, y, n, heads, t, d, half, cos_b, sign);                                   \
  }                                                                                               \
  extern "C" __global__ void gate_apply_##S(const T* z, const float* m, T* y, size_t n, int width, \
                                            int transpose) {                                      \
    gate_apply<T>(z, m, y, n, width, transpose);                                                  \
  }                                                                                               \
  extern "C" __global__ void gate_grad_##S(const T* dy, const T* z, float* dm, int rows, int width, \
                                           int chunk) {                                           \
    gate_grad<T>(dy, z, dm, rows, width, chunk);                                                  \
  }                                                                                               \
  extern "C" __global__ void heads_split_##S(const T* x, const float* cos, const float* sin, T* q,  \
                                             T* k, T* v, int B, int t, int nq, int nk, int nv,    \
                                             int hd, int half, int cos_b, float q_scale,          \
                                             float sign) {                                        \
    heads_split<T>(x, cos, sin, q, k, v, B, t, nq, nk, nv, hd, half, cos_b, q_scale, sign);       \
  }                                                                                               \
  extern "C" __global__ void heads_merge_##S(const T* q, const T* k, const T* v, const float* cos, \
                                             const float* sin, T* x, int B, int t, int nq, int nk, \
                                             int nv, int hd, int half, int cos_b, float q_scale,  \
                                             float sign) {                                        \
    heads_merge<T>(q, k, v, cos, sin, x, B, t, nq, nk, nv, hd, half, cos_b, q_scale, sign);       \
  }                                                                                               \
  extern "C" __global__ void adamw_##S(const float* p, const T* g, const float* m, const float* v, \
                                       float* out, size_t n, float lr, float b1, float b2,        \
                                       float eps, float decay, float bc1, float bc2,              \
                                       float gscale) {                                            \
    adamw<T>(p, g, m, v, out, n, lr, b1, b2, eps, decay, bc1, bc2, gscale);                       \
  }                                                                                               \
  extern "C" __global__ void ce_fwd_##S(const T* x, const unsigned* tg, const float* w,           \
                                        float* loss, int cols) {                                  \
    ce_fwd<T>(x, tg, w, loss, cols);                                                              \
  }                                                                                               \
  extern "C" __global__ void ce_bwd_##S(const T* x, const unsigned* tg, const float* w,           \
                                        const float* g, T* dx, int cols) {                        \
    ce_bwd<T>(x, tg, w, g, dx, cols);                                                             \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__nv_bfloat16, bf16)
