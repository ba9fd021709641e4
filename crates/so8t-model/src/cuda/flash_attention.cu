// Flash attention for training (forward and backward), compiled to PTX by build.rs when the
// `cuda` feature is on and launched by src/fused/flash.rs.
//
// bf16 q/k/v in the head-first layout [B, heads, T, HD] (q already rotated and scaled by 1/√HD,
// k rotated), grouped-query heads (query head h reads kv head h / (H / HKV)), f32 accumulation on
// the tensor cores (mma.sync m16n8k16). Every query row r attends to the keys of one window
// [lo_r, hi_r] (hi_r ≤ r): causal attention when no windows are given, else the windows of packed
// sequences, padding and sliding windows, which must be non-decreasing in r (both ends). A row
// whose window is empty gets zeros. The T×T scores never reach memory: the forward pass keeps the
// output and the log-sum-exp of each row, the backward pass recomputes the probabilities from them
// (FlashAttention-2's algorithm; the code is our own).
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with .bf16): g = lane / 4, t = lane % 4;
//   A (16×16, row-major): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16×8, k × n):      b0 = (k 2t..2t+1, n g), b1 = (k 2t+8..2t+9, n g)
//   C (16×8):             c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// so two neighbouring C tiles of a product are the A fragment of the next product (P·V).
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

// Shared-memory rows are padded by 8 elements: 16-byte aligned and free of bank conflicts for the
// fragment loads below.
#define PAD 8
#define LOG2E 1.4426950408889634f

__device__ __forceinline__ void mma_bf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8×8 matrices from shared memory, each transposed: lane l gives the address of row l % 8
// of matrix l / 8; register i gets the pair (rows 2t, 2t+1; column g) of matrix i.
__device__ __forceinline__ void ldsm_x4_trans(uint32_t* r, const bf16* p) {
  const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// Four 8×8 matrices from shared memory: register i gets the pair (row g; columns 2t, 2t+1) of
// matrix i.
__device__ __forceinline__ void ldsm_x4(uint32_t* r, const bf16* p) {
  const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// Asynchronous copies global → shared (cp.async): `bytes` bytes, or zeros where `valid` is false
// (src is then not read, but must still be an address of the tensor).
template <int BYTES>
__device__ __forceinline__ void cp_async(void* dst, const void* src, bool valid) {
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  const int n = valid ? BYTES : 0;
  if (BYTES == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n));
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(d), "l"(src), "n"(BYTES),
                 "r"(n));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// B fragments of two neighbouring 8-wide n-tiles (rows n0..n0+15 of a row-major [n][k] tile in
// shared memory, row stride `st`) at k-step kk: {b0, b1} of the first in r[0..1], of the second
// in r[2..3].
__device__ __forceinline__ void ldsm_b_pair(uint32_t* r, const bf16* tile, int st, int n0, int kk,
                                            int lane) {
  ldsm_x4(r, tile + (n0 + (lane >> 4) * 8 + (lane & 7)) * st + kk * 16 + ((lane >> 3) & 1) * 8);
}

// The A fragment of rows m0..m0+15 of a row-major [m][k] tile in shared memory at k-step kk.
__device__ __forceinline__ void ldsm_a(uint32_t* r, const bf16* tile, int st, int m0, int kk,
                                      int lane) {
  ldsm_x4(r, tile + (m0 + (lane & 7) + ((lane >> 3) & 1) * 8) * st + kk * 16 + (lane >> 4) * 8);
}

// B fragments of two neighbouring 8-wide n-tiles from a row-major [k][n] tile in shared memory
// (the transposed load): rows kk·16.. of the tile, columns n0..n0+15.
__device__ __forceinline__ void ldsm_b_pair_trans(uint32_t* r, const bf16* tile, int st, int n0,
                                                  int kk, int lane) {
  ldsm_x4_trans(r, tile + (kk * 16 + (lane & 15)) * st + n0 + (lane >> 4) * 8);
}

// Two 8×8 matrices, transposed (the addresses of lanes 0..15).
__device__ __forceinline__ void ldsm_x2_trans(uint32_t* r, const bf16* p) {
  const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(a));
}

__device__ __forceinline__ uint32_t ld32(const bf16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// The A fragment of a 16×16 block whose two 16×8 halves are the C tiles c0 (columns 0..7) and
// c1 (columns 8..15), rounded to bf16.
__device__ __forceinline__ void c_to_a(uint32_t* a, const float* c0, const float* c1) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

// ROWS rows of HD elements from global memory (row stride HD) into shared memory (row stride
// HD + PAD); rows from `valid` on are zeros.
template <int HD, int ROWS>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, int valid) {
  constexpr int CH = HD / 8;
  for (int i = threadIdx.x; i < ROWS * CH; i += blockDim.x) {
    const int r = i / CH, c = i % CH;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < valid) v = *reinterpret_cast<const uint4*>(g + (size_t)r * HD + c * 8);
    *reinterpret_cast<uint4*>(s + r * (HD + PAD) + c * 8) = v;
  }
}

// load_tile by cp.async (the caller commits and waits).
template <int HD, int ROWS>
__device__ __forceinline__ void load_tile_async(bf16* s, const bf16* g, int valid) {
  constexpr int CH = HD / 8;
  for (int i = threadIdx.x; i < ROWS * CH; i += blockDim.x) {
    const int r = i / CH, c = i % CH;
    const bool ok = r < valid;
    cp_async<16>(s + r * (HD + PAD) + c * 8, ok ? g + (size_t)r * HD + c * 8 : g, ok);
  }
}

// The A fragments (KS k-steps of 16) of rows r0 and r0 + 8 of a row-major [rows][HD] matrix in
// global memory; rows from T on are zeros.
template <int HD>
__device__ __forceinline__ void load_a_rows(uint32_t (*a)[4], const bf16* m, int r0, int T,
                                            int t4) {
  const int r1 = r0 + 8;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    const int c = kk * 16 + 2 * t4;
    a[kk][0] = r0 < T ? ld32(m + (size_t)r0 * HD + c) : 0u;
    a[kk][1] = r1 < T ? ld32(m + (size_t)r1 * HD + c) : 0u;
    a[kk][2] = r0 < T ? ld32(m + (size_t)r0 * HD + c + 8) : 0u;
    a[kk][3] = r1 < T ? ld32(m + (size_t)r1 * HD + c + 8) : 0u;
  }
}

// The window [lo, hi] of query row r (an empty one for rows past the end).
__device__ __forceinline__ void window_of(const int* win, int r, int T, int& lo, int& hi) {
  if (r >= T) {
    lo = 1;
    hi = 0;
  } else if (win) {
    lo = win[2 * r];
    hi = win[2 * r + 1];
  } else {
    lo = 0;
    hi = r;
  }
}

// ---- forward -------------------------------------------------------------------------------
// One block of 4 warps per (64 query rows, batch row × head); each warp owns 16 rows, walks the
// key tiles of 64 its block's windows reach, keeps the running max m, the running sum l and the
// output accumulator in registers. Writes o [B, H, T, HD] and lse = m + ln l [B, H, T].
template <int HD>
__device__ void flash_fwd(const bf16* __restrict__ q, const bf16* __restrict__ k,
                          const bf16* __restrict__ v, const int* __restrict__ win,
                          bf16* __restrict__ o, float* __restrict__ lse, int H, int HKV, int T) {
  constexpr int BR = 64, BC = 64, KS = HD / 16, NT = HD / 8, ST = HD + PAD;
  __shared__ __align__(16) bf16 Ks[BC * ST];
  __shared__ __align__(16) bf16 Vs[BC * ST];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int bh = blockIdx.y, b = bh / H, h = bh % H, kvh = h / (H / HKV);
  // The heaviest tiles (last rows: most keys) first.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BR;
  const bf16* qb = q + (size_t)bh * T * HD;
  const bf16* kb = k + ((size_t)b * HKV + kvh) * T * HD;
  const bf16* vb = v + ((size_t)b * HKV + kvh) * T * HD;
  const int* wb = win ? win + (size_t)b * T * 2 : nullptr;

  int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  int lo[2], hi[2];
  window_of(wb, rows[0], T, lo[0], hi[0]);
  window_of(wb, rows[1], T, lo[1], hi[1]);
  // The windows are non-decreasing: the block's first row starts lowest, its last ends highest.
  const int last = min(q0 + BR, T) - 1;
  const int kmin = wb ? wb[2 * q0] : 0;
  const int kmax = wb ? wb[2 * last + 1] : last;

  // K of the next tile loads while this one's P·V runs, V while its scores run.
  const int kstart = (max(kmin, 0) / BC) * BC;
  if (kstart <= kmax) load_tile_async<HD, BC>(Ks, kb + (size_t)kstart * HD, T - kstart);
  cp_async_commit();

  uint32_t qa[KS][4];
  load_a_rows<HD>(qa, qb, rows[0], T, t4);
  float acc[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int k0 = kstart; k0 <= kmax; k0 += BC) {
    cp_async_wait_all();
    __syncthreads();  // K ready; every warp done with the last P·V (V free)
    load_tile_async<HD, BC>(Vs, vb + (size_t)k0 * HD, T - k0);
    cp_async_commit();
    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
#pragma unroll
      for (int n = 0; n < 8; n += 2) {
        uint32_t kf[4];
        ldsm_b_pair(kf, Ks, ST, n * 8, kk, lane);
        mma_bf16(s[n], qa[kk], kf[0], kf[1]);
        mma_bf16(s[n + 1], qa[kk], kf[2], kf[3]);
      }
    }
    const bool inside = lo[0] <= k0 && k0 + BC - 1 <= hi[0] && lo[1] <= k0 && k0 + BC - 1 <= hi[1];
    if (!inside) {
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + n * 8 + 2 * t4 + (e & 1), i = e >> 1;
          if (key < lo[i] || key > hi[i]) s[n][e] = -INFINITY;
        }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * i], s[n][2 * i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
      const float mnew = fmaxf(m[i], mx);
      // Nothing seen yet (all masked so far): any finite base keeps exp2 away from NaN.
      const float base = mnew == -INFINITY ? 0.f : mnew * LOG2E;
      const float alpha = exp2f(m[i] * LOG2E - base);
      m[i] = mnew;
      float rs = 0.f;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const float p0 = exp2f(s[n][2 * i] * LOG2E - base);
        const float p1 = exp2f(s[n][2 * i + 1] * LOG2E - base);
        s[n][2 * i] = p0;
        s[n][2 * i + 1] = p1;
        rs += p0 + p1;
      }
      l[i] = l[i] * alpha + rs;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        acc[n][2 * i] *= alpha;
        acc[n][2 * i + 1] *= alpha;
      }
    }
    cp_async_wait_all();
    __syncthreads();  // V ready; every warp done with the scores (K free)
    if (k0 + BC <= kmax) load_tile_async<HD, BC>(Ks, kb + (size_t)(k0 + BC) * HD, T - k0 - BC);
    cp_async_commit();
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      uint32_t pa[4];
      c_to_a(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int n = 0; n < NT; n += 2) {
        uint32_t bv[4];
        ldsm_b_pair_trans(bv, Vs, ST, n * 8, kk, lane);
        mma_bf16(acc[n], pa, bv[0], bv[1]);
        mma_bf16(acc[n + 1], pa, bv[2], bv[3]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffff, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffff, l[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (rows[i] >= T) continue;
    const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
    bf16* orow = o + ((size_t)bh * T + rows[i]) * HD;
#pragma unroll
    for (int n = 0; n < NT; ++n)
      *reinterpret_cast<uint32_t*>(orow + n * 8 + 2 * t4) =
          pack_bf16(acc[n][2 * i] * inv, acc[n][2 * i + 1] * inv);
    if (t4 == 0) lse[(size_t)bh * T + rows[i]] = l[i] > 0.f ? m[i] + logf(l[i]) : INFINITY;
  }
}

// ---- backward ------------------------------------------------------------------------------
// d[b, h, t] = Σ_i o[b, t, h, i] · do[b, t, h, i] from the token-major output and its gradient
// ([B, T, H·HD]), one warp per (b, t, h) row, written head-first [B, H, T].
__device__ void flash_bwd_dot(const bf16* __restrict__ o, const bf16* __restrict__ dout,
                              float* __restrict__ d, int rows, int H, int T, int HD) {
  const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const bf16* a = o + (size_t)row * HD;
  const bf16* b = dout + (size_t)row * HD;
  float s = 0.f;
  for (int i = lane; i < HD; i += 32) s += __bfloat162float(a[i]) * __bfloat162float(b[i]);
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffff, s, off);
  if (lane == 0) {
    const int h = row % H, t = (row / H) % T, bb = row / (H * T);
    d[((size_t)bb * H + h) * T + t] = s;
  }
}

// One block of 4 warps per (64 keys, batch row × kv head); each warp owns 16 keys and keeps
// their dK and dV in registers while the block walks the query tiles of 32 (of every query head
// of the group) that can see them, the next tile loading (cp.async, double-buffered) while this
// one is computed:
//   Sᵀ = K Qᵀ, Pᵀ = exp(Sᵀ − lse), dV += Pᵀ dO, dPᵀ = V dOᵀ, dSᵀ = Pᵀ ⊙ (dPᵀ − d), dK += dSᵀ Q,
//   dQ += dS K (dS through shared memory, added to the f32 dq with atomics).
// Dynamic shared memory: sizeof(BwdSmem<HD>) = 384·(HD + 8) + 6144 bytes (src/fused/flash.rs).
template <int HD>
struct BwdSmem {
  static constexpr int BC = 64, BR = 32, ST = HD + PAD, SS = BR + PAD;
  bf16 k[BC * ST];
  bf16 q[2][BR * ST];
  bf16 dout[2][BR * ST];
  bf16 ds[BC * SS];  // dSᵀ [key][query]
  float lse[2][BR];
  float d[2][BR];
  int win[2][2 * BR];
};
static_assert(sizeof(BwdSmem<96>) == 384 * (96 + PAD) + 6144, "flash.rs computes this size");
static_assert(sizeof(BwdSmem<16>) == 384 * (16 + PAD) + 6144, "flash.rs computes this size");

template <int HD>
__device__ void flash_bwd(const bf16* __restrict__ q, const bf16* __restrict__ k,
                          const bf16* __restrict__ v, const bf16* __restrict__ dout,
                          const float* __restrict__ lse, const float* __restrict__ dd,
                          const int* __restrict__ win, float* __restrict__ dq,
                          bf16* __restrict__ dk, bf16* __restrict__ dv, int H, int HKV, int T) {
  using Sm = BwdSmem<HD>;
  constexpr int BC = Sm::BC, BR = Sm::BR, KS = HD / 16, NT = HD / 8, ST = Sm::ST, SS = Sm::SS;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Sm& sm = *reinterpret_cast<Sm*>(smem_raw);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int bkv = blockIdx.y, b = bkv / HKV, kvh = bkv % HKV, group = H / HKV;
  const int k0 = blockIdx.x * BC, kw = warp * 16;
  const int kmax = min(k0 + BC, T) - 1;
  const bf16* kb = k + (size_t)bkv * T * HD;
  const bf16* vb = v + (size_t)bkv * T * HD;
  const int* wb = win ? win + (size_t)b * T * 2 : nullptr;

  // The query tiles that see these keys: from the one holding k0 (rows end at themselves) to the
  // first whose window starts past kmax (windows are non-decreasing).
  const int qstart = (k0 / BR) * BR;
  int qend = T;
  if (wb)
    for (int q0 = qstart; q0 < T; q0 += BR)
      if (wb[2 * q0] > kmax) {
        qend = q0;
        break;
      }
  const int nq = qend > qstart ? (qend - qstart + BR - 1) / BR : 0, total = group * nq;

  // Tile `n` (head n / nq of the group, query tile n % nq) into buffer `buf`.
  auto prefetch = [&](int n, int buf) {
    const int bh = b * H + kvh * group + n / nq, q0 = qstart + (n % nq) * BR;
    load_tile_async<HD, BR>(sm.q[buf], q + ((size_t)bh * T + q0) * HD, T - q0);
    load_tile_async<HD, BR>(sm.dout[buf], dout + ((size_t)bh * T + q0) * HD, T - q0);
    if (threadIdx.x < BR) {
      const int r = q0 + threadIdx.x;
      const bool ok = r < T;
      const size_t at = (size_t)bh * T + (ok ? r : q0);
      cp_async<4>(&sm.lse[buf][threadIdx.x], lse + at, ok);
      cp_async<4>(&sm.d[buf][threadIdx.x], dd + at, ok);
      if (wb) cp_async<8>(&sm.win[buf][2 * threadIdx.x], wb + 2 * (ok ? r : q0), ok);
    }
  };
  load_tile_async<HD, BC>(sm.k, kb + (size_t)k0 * HD, T - k0);
  if (total > 0) prefetch(0, 0);
  cp_async_commit();

  // This warp's rows of V as A fragments (keys × HD).
  uint32_t va[KS][4];
  load_a_rows<HD>(va, vb, k0 + kw + g, T, t4);
  float dka[NT][4], dva[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dka[n][e] = dva[n][e] = 0.f;

  for (int it = 0; it < total; ++it) {
    const int buf = it & 1;
    cp_async_wait_all();
    __syncthreads();  // this tile is in; every warp is done with the last one
    if (it + 1 < total) prefetch(it + 1, buf ^ 1);
    cp_async_commit();
    const int bh = b * H + kvh * group + it / nq, q0 = qstart + (it % nq) * BR;
    const bf16* Qs = sm.q[buf];
    const bf16* dOs = sm.dout[buf];
    // Sᵀ: this warp's 16 keys × 32 queries.
    float st[4][4];
#pragma unroll
    for (int n = 0; n < 4; ++n) st[n][0] = st[n][1] = st[n][2] = st[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      uint32_t ka[4];
      ldsm_a(ka, sm.k, ST, kw, kk, lane);
#pragma unroll
      for (int n = 0; n < 4; n += 2) {
        uint32_t qf[4];
        ldsm_b_pair(qf, Qs, ST, n * 8, kk, lane);
        mma_bf16(st[n], ka, qf[0], qf[1]);
        mma_bf16(st[n + 1], ka, qf[2], qf[3]);
      }
    }
    // Pᵀ (zero outside the windows). Every query of the tile sees every key of the block when
    // the last query's window starts at k0 or before and the first one's ends at kmax or after
    // (both ends are non-decreasing): no per-element test then.
    const int qlast = q0 + BR - 1;
    const bool inside = qlast < T && k0 + BC - 1 < T &&
                        (wb ? sm.win[buf][2 * (BR - 1)] <= k0 && sm.win[buf][1] >= k0 + BC - 1
                            : q0 >= k0 + BC - 1);
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = n * 8 + 2 * t4 + (e & 1);
        bool seen = true;
        if (!inside) {
          const int key = k0 + kw + g + (e >> 1) * 8, r = q0 + qi;
          int lo = 0, hi = r;
          if (r >= T) {
            lo = 1;
            hi = 0;
          } else if (wb) {
            lo = sm.win[buf][2 * qi];
            hi = sm.win[buf][2 * qi + 1];
          }
          seen = key >= lo && key <= hi;
        }
        st[n][e] = seen ? exp2f(st[n][e] * LOG2E - sm.lse[buf][qi] * LOG2E) : 0.f;
      }
    // dV += Pᵀ dO.
#pragma unroll
    for (int kk = 0; kk < BR / 16; ++kk) {
      uint32_t pa[4];
      c_to_a(pa, st[2 * kk], st[2 * kk + 1]);
#pragma unroll
      for (int n = 0; n < NT; n += 2) {
        uint32_t bo[4];
        ldsm_b_pair_trans(bo, dOs, ST, n * 8, kk, lane);
        mma_bf16(dva[n], pa, bo[0], bo[1]);
        mma_bf16(dva[n + 1], pa, bo[2], bo[3]);
      }
    }
    // dPᵀ = V dOᵀ, then dSᵀ = Pᵀ ⊙ (dPᵀ − d).
    float dp[4][4];
#pragma unroll
    for (int n = 0; n < 4; ++n) dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk)
#pragma unroll
      for (int n = 0; n < 4; n += 2) {
        uint32_t of[4];
        ldsm_b_pair(of, dOs, ST, n * 8, kk, lane);
        mma_bf16(dp[n], va[kk], of[0], of[1]);
        mma_bf16(dp[n + 1], va[kk], of[2], of[3]);
      }
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = n * 8 + 2 * t4 + (e & 1);
        dp[n][e] = st[n][e] * (dp[n][e] - sm.d[buf][qi]);
      }
    // dK += dSᵀ Q.
#pragma unroll
    for (int kk = 0; kk < BR / 16; ++kk) {
      uint32_t da[4];
      c_to_a(da, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
      for (int n = 0; n < NT; n += 2) {
        uint32_t bq[4];
        ldsm_b_pair_trans(bq, Qs, ST, n * 8, kk, lane);
        mma_bf16(dka[n], da, bq[0], bq[1]);
        mma_bf16(dka[n + 1], da, bq[2], bq[3]);
      }
    }
    // dSᵀ to shared memory for dQ.
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      bf16* row = sm.ds + (kw + g) * SS + n * 8 + 2 * t4;
      *reinterpret_cast<uint32_t*>(row) = pack_bf16(dp[n][0], dp[n][1]);
      *reinterpret_cast<uint32_t*>(row + 8 * SS) = pack_bf16(dp[n][2], dp[n][3]);
    }
    __syncthreads();
    // dQ (32 queries × HD) += dS K: warp w takes query rows 16·(w % 2) and half the columns.
    {
      constexpr int NH = NT / 2;
      const int mq = (warp & 1) * 16, nb = (warp >> 1) * NH;
      float* dqb = dq + (size_t)bh * T * HD;
      float dqa[NH][4];
#pragma unroll
      for (int n = 0; n < NH; ++n) dqa[n][0] = dqa[n][1] = dqa[n][2] = dqa[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BC / 16; ++kk) {
        uint32_t da[4];
        const int mat = lane >> 3;
        ldsm_x4_trans(da, sm.ds + (kk * 16 + (mat >> 1) * 8 + (lane & 7)) * SS + mq + (mat & 1) * 8);
#pragma unroll
        for (int n = 0; n < NH; n += 2) {
          uint32_t bk[4];
          if (n + 1 < NH) {
            ldsm_b_pair_trans(bk, sm.k, ST, (nb + n) * 8, kk, lane);
            mma_bf16(dqa[n], da, bk[0], bk[1]);
            mma_bf16(dqa[n + 1], da, bk[2], bk[3]);
          } else {
            ldsm_x2_trans(bk, sm.k + (kk * 16 + (lane & 15)) * ST + (nb + n) * 8);
            mma_bf16(dqa[n], da, bk[0], bk[1]);
          }
        }
      }
#pragma unroll
      for (int n = 0; n < NH; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = q0 + mq + g + (e >> 1) * 8;
          if (r < T) atomicAdd(dqb + (size_t)r * HD + (nb + n) * 8 + 2 * t4 + (e & 1), dqa[n][e]);
        }
    }
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = k0 + kw + g + i * 8;
    if (r >= T) continue;
    bf16* krow = dk + ((size_t)bkv * T + r) * HD;
    bf16* vrow = dv + ((size_t)bkv * T + r) * HD;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      *reinterpret_cast<uint32_t*>(krow + n * 8 + 2 * t4) = pack_bf16(dka[n][2 * i], dka[n][2 * i + 1]);
      *reinterpret_cast<uint32_t*>(vrow + n * 8 + 2 * t4) = pack_bf16(dva[n][2 * i], dva[n][2 * i + 1]);
    }
  }
}

#define FLASH(HD)                                                                                \
  extern "C" __global__ void __launch_bounds__(128) flash_fwd_##HD(                              \
      const bf16* q, const bf16* k, const bf16* v, const int* win, bf16* o, float* lse, int H,   \
      int HKV, int T) {                                                                          \
    flash_fwd<HD>(q, k, v, win, o, lse, H, HKV, T);                                              \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(128) flash_bwd_##HD(                              \
      const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse,           \
      const float* dd, const int* win, float* dq, bf16* dk, bf16* dv, int H, int HKV, int T) {   \
    flash_bwd<HD>(q, k, v, dout, lse, dd, win, dq, dk, dv, H, HKV, T);                           \
  }

FLASH(16)
FLASH(32)
FLASH(64)
FLASH(96)
FLASH(128)

extern "C" __global__ void flash_bwd_dot_bf16(const bf16* o, const bf16* dout, float* d, int rows,
                                             int H, int T, int HD) {
  flash_bwd_dot(o, dout, d, rows, H, T, HD);
}
