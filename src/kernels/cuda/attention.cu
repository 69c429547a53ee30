// CUDA causal grouped-query attention, FlashAttention-2 style (include/nvfp4/cuda_ops.hpp; CPU twin:
// src/kernels/cpu/attention.cpp).
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda {

using namespace ops_detail;
using namespace attention_detail;

namespace {

// ---- attention -------------------------------------------------------------------------------------
//
// FlashAttention-2 on the tensor cores: BF16 operands, FP32 accumulation, through
// mma.sync.m16n8k16 (sm_80 and later; it runs as HMMA on the H100) with ldmatrix fragments.
// Layout: a CTA of 4 warps works on a tile of 64 rows (query rows in the forward and the dq
// kernel, key rows in the dk/dv kernel); warp w owns rows [16w, 16w + 16) of it, i.e. the M
// side of every product. Query and key tiles are both 64 rows, so the causal diagonal is the
// tile pair qt == kt: only it (and the ragged last tile) needs the mask.
// A sliding window (window > 0: query t sees keys t2 with t - t2 < window) adds a second mask,
// below the diagonal; key tiles that no row of a query tile sees (and, in the dk/dv kernel, query
// tiles that see no key of the key tile) are skipped, not loaded. The kernels are instantiated
// with and without the window (kWindow): window 0 runs the code the kernels had before the window
// existed — every tile from 0, the causal mask only — so its bits are unchanged.
// Tiles of Q, K, V, dO live in shared memory as BF16, rows padded to HS + 8 elements (16 bytes:
// the 8 row addresses of one ldmatrix land in distinct banks); rows past T are zeros and never
// stored. Roles:
//   producer   every thread copies 16-byte pieces of the next tile with cp.async (double
//              buffered: tile i+1 is in flight while tile i is used); pointers that are not
//              16-byte aligned take plain 2-byte loads into the same layout
//   consumer   each warp: scores for its 16 rows against the 64 rows of the other tile
//              (accumulators in registers), softmax / probabilities in FP32 registers, then the
//              probabilities (or dS), rounded to BF16, are the A operand of the next product
//              straight from the accumulator registers (FA2's register reuse)
//   epilogue   scale, round once to BF16, store rows < T
// Fragment legend (PTX ISA, mma.m16n8k16): lane = 4 g + t; an accumulator tile (16, 8) holds
// rows g (elements 0, 1) and g + 8 (2, 3), columns 2t and 2t + 1. Softmax units, the fragment
// conversions and the row epilogue: attention_common.cuh (shared with attention_sm90.cu).

template <int HS>
struct AttMmaLayout {
  static_assert(HS % 32 == 0, "ldmatrix.x4 covers 16 head dims per k-step and 16 per pair of n-blocks");
  static constexpr int kTile = 64;                 // rows of every Q / K / V / dO tile
  static constexpr int kWarps = 4;                 // warp w owns tile rows [16w, 16w + 16)
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kPitch = HS + 8;            // BF16 elements per shared-memory row
  static constexpr int kTileElems = kTile * kPitch;
  static constexpr int kTileBytes = 2 * kTileElems;
  static constexpr int kDimSteps = HS / 16;        // k-steps of a product over the head dims
  static constexpr int kDimBlocks = HS / 8;        // n-blocks of an accumulator over the head dims
  static constexpr int kRowBlocks = kTile / 8;     // n-blocks of a score tile over 64 rows
  // Query rows per pass of the dk/dv kernel: two (16, 32) score tiles instead of two (16, 64)
  // keep HS = 128's dk and dv accumulators (64 registers each) clear of spills.
  static constexpr int kBwdPass = HS > 64 ? 32 : 64;
  static_assert(kTile % kBwdPass == 0 && kBwdPass % 16 == 0, "passes split the tile into k-steps of 16");
  static_assert(kTile == 16 * kWarps, "each warp owns 16 rows of the tile");
};

constexpr int kAttThreads = AttMmaLayout<64>::kThreads;
constexpr int kAttTile = AttMmaLayout<64>::kTile;

// Fragment addresses in a tile of kPitch-element rows (lane = this thread's lane):
//   A operand, rows [r0, r0 + 16) x cols [c0, c0 + 16) of a row-major (M, K) tile
template <int HS>
__device__ __forceinline__ uint32_t a_frag_addr(const uint16_t* tile, int r0, int c0, int lane) {
  return smem_addr(tile + (r0 + (lane & 15)) * AttMmaLayout<HS>::kPitch + c0 + (lane >> 4) * 8);
}
//   B operands of two n-blocks, B[k][n] = tile[n][k]: tile rows [n0, n0 + 16), cols [k0, k0 + 16);
//   ldsm_x4 gives {b0, b1} of n-block n0 in r[0], r[1] and of n0 + 8 in r[2], r[3]
template <int HS>
__device__ __forceinline__ uint32_t bt_frag_addr(const uint16_t* tile, int n0, int k0, int lane) {
  return smem_addr(tile + (n0 + (lane & 7) + (lane >> 4) * 8) * AttMmaLayout<HS>::kPitch + k0 + ((lane >> 3) & 1) * 8);
}
//   B operands of two n-blocks, B[k][n] = tile[k][n]: tile rows [k0, k0 + 16), cols [n0, n0 + 16);
//   ldsm_x4_trans gives them in the same register order
template <int HS>
__device__ __forceinline__ uint32_t b_frag_addr(const uint16_t* tile, int k0, int n0, int lane) {
  return smem_addr(tile + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * AttMmaLayout<HS>::kPitch + n0 + (lane >> 4) * 8);
}

// acc (16, 8 N) += A (16, HS) · B where B[k][n] = tile[n0 + n][k] (a product with a row-major
// tile's transpose: Q·Kᵀ, dO·Vᵀ, K·Qᵀ, V·dOᵀ). A from shared memory at rows [r0, r0 + 16).
template <int HS, int N>
__device__ __forceinline__ void mma_abt(float (&acc)[N][4], const uint16_t* a_tile, int r0, const uint16_t* b_tile,
                                        int n0, int lane) {
  using L = AttMmaLayout<HS>;
#pragma unroll
  for (int kb = 0; kb < L::kDimSteps; ++kb) {
    uint32_t a[4];
    ldsm_x4(a, a_frag_addr<HS>(a_tile, r0, 16 * kb, lane));
#pragma unroll
    for (int nb2 = 0; nb2 < N / 2; ++nb2) {
      uint32_t b[4];
      ldsm_x4(b, bt_frag_addr<HS>(b_tile, n0 + 16 * nb2, 16 * kb, lane));
      mma_bf16(acc[2 * nb2], a, b[0], b[1]);
      mma_bf16(acc[2 * nb2 + 1], a, b[2], b[3]);
    }
  }
}

// acc (16, HS) += A (16, 16 KS) · tile rows [k0, k0 + 16 KS) (P·V, Pᵀ·dO, dSᵀ·Q, dS·K).
template <int HS, int KS>
__device__ __forceinline__ void mma_ab(float (&acc)[HS / 8][4], const uint32_t (&a)[KS][4], const uint16_t* b_tile,
                                       int k0, int lane) {
#pragma unroll
  for (int kk = 0; kk < KS; ++kk)
#pragma unroll
    for (int nb2 = 0; nb2 < HS / 16; ++nb2) {
      uint32_t b[4];
      ldsm_x4_trans(b, b_frag_addr<HS>(b_tile, k0 + 16 * kk, 16 * nb2, lane));
      mma_bf16(acc[2 * nb2], a[kk], b[0], b[1]);
      mma_bf16(acc[2 * nb2 + 1], a[kk], b[2], b[3]);
    }
}

// Producer: rows [row0, row0 + 64) of one head of a (T, heads, HS) BF16 tensor (g points at
// row 0 of that head; rows are row_stride elements apart) into a padded BF16 tile; rows >= T
// are zeros. Aligned: 16-byte cp.async (the caller commits and waits); else 2-byte loads.
template <int HS>
__device__ __forceinline__ void load_tile_async(uint16_t* tile, const uint16_t* g, int64_t row_stride, int row0,
                                                int T, bool aligned) {
  using L = AttMmaLayout<HS>;
  constexpr int kVecs = HS / kVec;
  for (int idx = threadIdx.x; idx < L::kTile * kVecs; idx += L::kThreads) {
    const int r = idx / kVecs, c = (idx % kVecs) * kVec;
    uint16_t* dst = tile + r * L::kPitch + c;
    if (row0 + r >= T) {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
      continue;
    }
    const uint16_t* src = g + static_cast<int64_t>(row0 + r) * row_stride + c;
    if (aligned) {
      cp_async16(smem_addr(dst), src);
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e) dst[e] = src[e];
    }
  }
}

// Whether query position tq sees key position tk besides causality: inside the sliding window
// (always without one).
template <bool kWindow>
__device__ __forceinline__ bool in_window(int tq, int tk, int window) {
  if constexpr (kWindow) return tq - tk < window;
  return true;
}

// The first key tile that some query row of tile qt sees (0 without a window).
template <bool kWindow>
__device__ __forceinline__ int first_key_tile(int qt, int window, int tile) {
  if constexpr (kWindow) return max(0, qt * tile - window + 1) / tile;
  return 0;
}

template <int HS>
constexpr size_t att_forward_smem() {
  return static_cast<size_t>(AttMmaLayout<HS>::kTileBytes) * 5;  // Q, 2 stages of K and V
}

// Forward: one CTA per (query tile, head, batch); loops over key tiles kt_lo..qt (kt_lo = 0
// without a window) with an online softmax in registers.
template <int HS, bool kWindow>
__global__ void __launch_bounds__(kAttThreads) attention_forward_mma_kernel(uint16_t* __restrict__ out,
                                                                            float* __restrict__ lse,
                                                                            const uint16_t* __restrict__ q,
                                                                            const uint16_t* __restrict__ k,
                                                                            const uint16_t* __restrict__ v,
                                                                            AttShape s) {
  using L = AttMmaLayout<HS>;
  extern __shared__ uint4 att_smem[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>(att_smem);
  uint16_t* sK = sQ + L::kTileElems;      // stage i at sK + i * kTileElems
  uint16_t* sV = sK + 2 * L::kTileElems;  // likewise

  const int qt = gridDim.x - 1 - blockIdx.x;  // the longest (latest) query tiles start first
  const int h = blockIdx.y, b = blockIdx.z;
  // The sequence's first row and length: b x T and T, or its packed rows (varlen).
  const int64_t first_row = s.cu_seqlens ? s.cu_seqlens[b] : static_cast<int64_t>(b) * s.T;
  const int T = s.cu_seqlens ? s.cu_seqlens[b + 1] - s.cu_seqlens[b] : s.T;
  if (qt * L::kTile >= T) return;  // past this sequence's rows (varlen): the whole CTA, no barrier
  const int kvh = h / (s.NH / s.NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int r0 = 16 * warp;  // the warp's rows in the tile
  const int64_t qstride = static_cast<int64_t>(s.NH) * HS, kstride = static_cast<int64_t>(s.NKV) * HS;
  const uint16_t* qb = q + first_row * qstride + h * HS;
  const uint16_t* kb = k + first_row * kstride + kvh * HS;
  const uint16_t* vb = v + first_row * kstride + kvh * HS;
  const float scale_log2 = s.scale * kLog2e;
  const int kt_lo = first_key_tile<kWindow>(qt, s.window, L::kTile);

  load_tile_async<HS>(sQ, qb, qstride, qt * L::kTile, T, s.aligned);
  load_tile_async<HS>(sK, kb, kstride, kt_lo * L::kTile, T, s.aligned);
  load_tile_async<HS>(sV, vb, kstride, kt_lo * L::kTile, T, s.aligned);
  cp_async_commit();

  float o[L::kDimBlocks][4] = {};
  float m[2] = {-INFINITY, -INFINITY};  // running max (log2 units) of rows g, g + 8
  float l[2] = {0.0f, 0.0f};            // this thread's part of the running sums

  for (int kt = kt_lo; kt <= qt; ++kt) {
    const int stage = (kt - kt_lo) & 1;
    const uint16_t* cK = sK + stage * L::kTileElems;
    const uint16_t* cV = sV + stage * L::kTileElems;
    __syncthreads();  // every warp is done with tile kt - 1, whose buffers receive tile kt + 1
    if (kt < qt) {
      load_tile_async<HS>(sK + (stage ^ 1) * L::kTileElems, kb, kstride, (kt + 1) * L::kTile, T, s.aligned);
      load_tile_async<HS>(sV + (stage ^ 1) * L::kTileElems, vb, kstride, (kt + 1) * L::kTile, T, s.aligned);
    }
    cp_async_commit();
    cp_async_wait_prev();  // tile kt (and Q) landed
    __syncthreads();

    // S = Q Kᵀ for the warp's 16 rows x 64 keys
    float sc[L::kRowBlocks][4] = {};
    mma_abt<HS, L::kRowBlocks>(sc, sQ, r0, cK, 0, lane);

    // scale (log2 units), causal mask on the diagonal tile, window mask, online softmax
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < L::kRowBlocks; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = sc[nb][e] * scale_log2;
        const int kc = 8 * nb + 2 * t + (e & 1), qr = r0 + g + 8 * (e >> 1);  // column and row in the tiles
        if (kt == qt && kc > qr) x = -INFINITY;
        if (!in_window<kWindow>(qt * L::kTile + qr, kt * L::kTile + kc, s.window)) x = -INFINITY;
        sc[nb][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    float alpha[2], m_exp[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xFFFFFFFFu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xFFFFFFFFu, mx[i], 2));
      // NOTE: without a window key 0 is visible to every row, so m is finite after tile 0 and no
      // exp sees -inf - -inf. With one, a row may see no key of its first tile(s): its max stays
      // -inf and the exponents subtract 0 instead (alpha and every p are then 0; o and l stay 0).
      const float m_new = fmaxf(m[i], mx[i]);
      if constexpr (kWindow) m_exp[i] = m_new == -INFINITY ? 0.0f : m_new;
      else m_exp[i] = m_new;
      alpha[i] = exp2f(m[i] - m_exp[i]);  // 0 on the first tile (m = -inf)
      m[i] = m_new;
      l[i] *= alpha[i];
    }
#pragma unroll
    for (int nb = 0; nb < L::kRowBlocks; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(sc[nb][e] - m_exp[e >> 1]);
        l[e >> 1] += p;
        sc[nb][e] = p;
      }
#pragma unroll
    for (int nb = 0; nb < L::kDimBlocks; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[nb][e] *= alpha[e >> 1];

    // O += P V with P rounded to BF16 (the sum l keeps the FP32 values)
    uint32_t pa[L::kRowBlocks / 2][4];
    acc_to_a<L::kRowBlocks>(pa, sc);
    mma_ab<HS, L::kRowBlocks / 2>(o, pa, cV, 0, lane);
  }

  // epilogue: O / l and lse; lse is (B, NH, T), T the longest (varlen)
  store_forward_rows<HS>(out + first_row * qstride + h * HS, qstride, qt * L::kTile + r0, T, o, l, m,
                         lse + (static_cast<int64_t>(b) * s.NH + h) * s.T, s.amax, lane, s.aligned);
}

// D[b, h, t] = sum_d dout[b,t,h,d] * out[b,t,h,d]: HS / 8 threads per (b, t, h) row (4, 8 or 16
// lanes of one warp), 8 elements each through 16-byte loads, then a butterfly over the row's
// lanes. (One warp per row with 2-byte loads ran at a third of the bandwidth on the H100.)
template <bool kAligned>
__global__ void __launch_bounds__(kThreads) attention_rowdot_kernel(float* __restrict__ D,
                                                                    const uint16_t* __restrict__ dout,
                                                                    const uint16_t* __restrict__ out, int64_t rows,
                                                                    int T, int NH, int HS) {
  const int per_row = HS / kVec;  // a power of two dividing 32 (HS = 32, 64 or 128)
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = id / per_row;  // (b, t, h)
  const int part = static_cast<int>(id % per_row);
  float acc = 0.0f;
  if (row < rows) {
    float a[8], b[8];
    load8<kAligned>(dout + row * HS, static_cast<int64_t>(part) * kVec, HS, a);
    load8<kAligned>(out + row * HS, static_cast<int64_t>(part) * kVec, HS, b);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc += a[e] * b[e];
  }
  for (int o = per_row / 2; o > 0; o /= 2) acc += __shfl_xor_sync(0xFFFFFFFFu, acc, o);  // every lane takes part
  if (row < rows && part == 0) {
    const int64_t h = row % NH, bt = row / NH, t = bt % T, b = bt / T;
    D[(b * NH + h) * T + t] = acc;
  }
}

template <int HS>
constexpr size_t att_dkdv_smem() {
  // K, V, 2 stages of Q and dO, 2 stages of the query rows' lse (log2 units) and D
  return static_cast<size_t>(AttMmaLayout<HS>::kTileBytes) * 6 + sizeof(float) * 4 * kAttTile;
}

// dk, dv for one key tile of one KV head: loops over the group's query heads, then the query
// tiles that see this key tile (kt .. the last within the window), in increasing order
// (deterministic, no atomics). Warp w owns
// key rows [16w, 16w + 16); per query tile (in passes of kBwdPass query rows):
//   Sᵀ = K Qᵀ, Pᵀ = exp(Sᵀ scale - lse), dV += Pᵀ dO, dPᵀ = V dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ - D), dK += dSᵀ Q.
template <int HS, bool kWindow>
__global__ void __launch_bounds__(kAttThreads) attention_backward_dkdv_mma_kernel(
    uint16_t* __restrict__ dk, uint16_t* __restrict__ dv, const uint16_t* __restrict__ dout,
    const uint16_t* __restrict__ q, const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
    const float* __restrict__ lse, const float* __restrict__ D, AttShape s) {
  using L = AttMmaLayout<HS>;
  constexpr int kP = L::kBwdPass;
  extern __shared__ uint4 att_smem[];
  uint16_t* sK = reinterpret_cast<uint16_t*>(att_smem);
  uint16_t* sV = sK + L::kTileElems;
  uint16_t* sQ = sV + L::kTileElems;        // stage i at sQ + i * kTileElems
  uint16_t* sdO = sQ + 2 * L::kTileElems;   // likewise
  float* sL = reinterpret_cast<float*>(sdO + 2 * L::kTileElems);  // stage i at sL + i * kTile
  float* sD = sL + 2 * L::kTile;                                  // likewise

  const int kt = blockIdx.x;  // early key tiles see the most query tiles: they start first
  const int kvh = blockIdx.y, b = blockIdx.z;
  const int group = s.NH / s.NKV;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int r0 = 16 * warp;  // the warp's key rows in the tile
  const int n_qt = (s.T + L::kTile - 1) / L::kTile;
  // The last query tile that sees a key of this tile: its last key's window ends at row
  // kt * kTile + kTile - 1 + window - 1 (window < T here, so no overflow).
  const int qt_hi = kWindow ? min(n_qt - 1, (kt * L::kTile + L::kTile + s.window - 2) / L::kTile) : n_qt - 1;
  const int steps_per_head = qt_hi - kt + 1;
  const int n_steps = group * steps_per_head;
  const int64_t qstride = static_cast<int64_t>(s.NH) * HS, kstride = static_cast<int64_t>(s.NKV) * HS;
  const int64_t kv_off = static_cast<int64_t>(b) * s.T * kstride + kvh * HS;
  const float scale_log2 = s.scale * kLog2e;

  // Producer for step i: query tile qt of head h = kvh * group + hh, into stage i % 2.
  auto load_step = [&](int i) {
    const int hh = i / steps_per_head, qt = kt + i % steps_per_head;
    const int h = kvh * group + hh;
    const int64_t q_off = static_cast<int64_t>(b) * s.T * qstride + h * HS;
    const int64_t row_off = (static_cast<int64_t>(b) * s.NH + h) * s.T;
    const int st = i & 1;
    load_tile_async<HS>(sQ + st * L::kTileElems, q + q_off, qstride, qt * L::kTile, s.T, s.aligned);
    load_tile_async<HS>(sdO + st * L::kTileElems, dout + q_off, qstride, qt * L::kTile, s.T, s.aligned);
    for (int idx = threadIdx.x; idx < L::kTile; idx += L::kThreads) {
      const int tq = qt * L::kTile + idx;
      sL[st * L::kTile + idx] = tq < s.T ? lse[row_off + tq] * kLog2e : 0.0f;
      sD[st * L::kTile + idx] = tq < s.T ? D[row_off + tq] : 0.0f;
    }
  };

  load_tile_async<HS>(sK, k + kv_off, kstride, kt * L::kTile, s.T, s.aligned);
  load_tile_async<HS>(sV, v + kv_off, kstride, kt * L::kTile, s.T, s.aligned);
  load_step(0);
  cp_async_commit();

  float dka[L::kDimBlocks][4] = {}, dva[L::kDimBlocks][4] = {};
  const int tk_lo = kt * L::kTile + r0 + g;  // key of accumulator elements 0, 1 (+8: 2, 3)

  for (int i = 0; i < n_steps; ++i) {
    const int st = i & 1;
    const int qt = kt + i % steps_per_head;
    const uint16_t* cQ = sQ + st * L::kTileElems;
    const uint16_t* cdO = sdO + st * L::kTileElems;
    const float* cL = sL + st * L::kTile;
    const float* cD = sD + st * L::kTile;
    __syncthreads();  // every warp is done with step i - 1, whose buffers receive step i + 1
    if (i + 1 < n_steps) load_step(i + 1);
    cp_async_commit();
    cp_async_wait_prev();  // step i (and K, V) landed
    __syncthreads();

#pragma unroll 1
    for (int p0 = 0; p0 < L::kTile; p0 += kP) {
      // Sᵀ (16 keys, kP queries) = K Qᵀ, then Pᵀ in FP32
      float pt[kP / 8][4] = {};
      mma_abt<HS, kP / 8>(pt, sK, r0, cQ, p0, lane);
#pragma unroll
      for (int nb = 0; nb < kP / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qc = p0 + 8 * nb + 2 * t + (e & 1);
          const int tq = qt * L::kTile + qc;
          const int tk = tk_lo + 8 * (e >> 1);
          const bool visible = tq >= tk && tq < s.T && in_window<kWindow>(tq, tk, s.window);
          pt[nb][e] = visible ? exp2f(pt[nb][e] * scale_log2 - cL[qc]) : 0.0f;
        }
      // dV += Pᵀ dO (Pᵀ rounded to BF16)
      {
        uint32_t pa[kP / 16][4];
        acc_to_a<kP / 8>(pa, pt);
        mma_ab<HS, kP / 16>(dva, pa, cdO, p0, lane);
      }
      // dPᵀ = V dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ - D)
      float dpt[kP / 8][4] = {};
      mma_abt<HS, kP / 8>(dpt, sV, r0, cdO, p0, lane);
#pragma unroll
      for (int nb = 0; nb < kP / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) dpt[nb][e] = pt[nb][e] * (dpt[nb][e] - cD[p0 + 8 * nb + 2 * t + (e & 1)]);
      // dK += dSᵀ Q (dSᵀ rounded to BF16; the scale comes at the end)
      uint32_t dsa[kP / 16][4];
      acc_to_a<kP / 8>(dsa, dpt);
      mma_ab<HS, kP / 16>(dka, dsa, cQ, p0, lane);
    }
  }
  const int row0 = kt * L::kTile + r0;
  store_acc_rows<HS>(dk + kv_off, kstride, row0, s.T, dka, s.scale, s.scale, lane, s.aligned);
  fold_amax(s.amax, store_acc_rows<HS>(dv + kv_off, kstride, row0, s.T, dva, 1.0f, 1.0f, lane, s.aligned));
}

template <int HS>
constexpr size_t att_dq_smem() {
  return static_cast<size_t>(AttMmaLayout<HS>::kTileBytes) * 6;  // Q, dO, 2 stages of K and V
}

// dq for one query tile of one head: loops over key tiles kt_lo..qt in order (as the forward). Warp w owns query
// rows [16w, 16w + 16): S = Q Kᵀ, P = exp(S scale - lse), dP = dO Vᵀ, dS = P ∘ (dP - D),
// dQ += dS K.
template <int HS, bool kWindow>
__global__ void __launch_bounds__(kAttThreads) attention_backward_dq_mma_kernel(
    uint16_t* __restrict__ dq, const uint16_t* __restrict__ dout, const uint16_t* __restrict__ q,
    const uint16_t* __restrict__ k, const uint16_t* __restrict__ v, const float* __restrict__ lse,
    const float* __restrict__ D, AttShape s) {
  using L = AttMmaLayout<HS>;
  extern __shared__ uint4 att_smem[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>(att_smem);
  uint16_t* sdO = sQ + L::kTileElems;
  uint16_t* sK = sdO + L::kTileElems;     // stage i at sK + i * kTileElems
  uint16_t* sV = sK + 2 * L::kTileElems;  // likewise

  const int qt = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (s.NH / s.NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int r0 = 16 * warp;
  const int64_t qstride = static_cast<int64_t>(s.NH) * HS, kstride = static_cast<int64_t>(s.NKV) * HS;
  const int64_t q_off = static_cast<int64_t>(b) * s.T * qstride + h * HS;
  const int64_t kv_off = static_cast<int64_t>(b) * s.T * kstride + kvh * HS;
  const int64_t row_off = (static_cast<int64_t>(b) * s.NH + h) * s.T;
  const float scale_log2 = s.scale * kLog2e;
  const int kt_lo = first_key_tile<kWindow>(qt, s.window, L::kTile);

  load_tile_async<HS>(sQ, q + q_off, qstride, qt * L::kTile, s.T, s.aligned);
  load_tile_async<HS>(sdO, dout + q_off, qstride, qt * L::kTile, s.T, s.aligned);
  load_tile_async<HS>(sK, k + kv_off, kstride, kt_lo * L::kTile, s.T, s.aligned);
  load_tile_async<HS>(sV, v + kv_off, kstride, kt_lo * L::kTile, s.T, s.aligned);
  cp_async_commit();

  // lse (log2 units) and D of rows g, g + 8; rows >= T are never stored (0 keeps them finite)
  float lse_r[2], D_r[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int tq = qt * L::kTile + r0 + g + 8 * i;
    lse_r[i] = tq < s.T ? lse[row_off + tq] * kLog2e : 0.0f;
    D_r[i] = tq < s.T ? D[row_off + tq] : 0.0f;
  }
  float dqa[L::kDimBlocks][4] = {};

  for (int kt = kt_lo; kt <= qt; ++kt) {
    const int stage = (kt - kt_lo) & 1;
    const uint16_t* cK = sK + stage * L::kTileElems;
    const uint16_t* cV = sV + stage * L::kTileElems;
    __syncthreads();
    if (kt < qt) {
      load_tile_async<HS>(sK + (stage ^ 1) * L::kTileElems, k + kv_off, kstride, (kt + 1) * L::kTile, s.T, s.aligned);
      load_tile_async<HS>(sV + (stage ^ 1) * L::kTileElems, v + kv_off, kstride, (kt + 1) * L::kTile, s.T, s.aligned);
    }
    cp_async_commit();
    cp_async_wait_prev();
    __syncthreads();

    float ps[L::kRowBlocks][4] = {};
    mma_abt<HS, L::kRowBlocks>(ps, sQ, r0, cK, 0, lane);
#pragma unroll
    for (int nb = 0; nb < L::kRowBlocks; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kc = 8 * nb + 2 * t + (e & 1), qr = r0 + g + 8 * (e >> 1);  // column and row in the tiles
        const bool visible =
            (kt < qt || kc <= qr) && in_window<kWindow>(qt * L::kTile + qr, kt * L::kTile + kc, s.window);
        ps[nb][e] = visible ? exp2f(ps[nb][e] * scale_log2 - lse_r[e >> 1]) : 0.0f;
      }
    float dps[L::kRowBlocks][4] = {};
    mma_abt<HS, L::kRowBlocks>(dps, sdO, r0, cV, 0, lane);
#pragma unroll
    for (int nb = 0; nb < L::kRowBlocks; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) dps[nb][e] = ps[nb][e] * (dps[nb][e] - D_r[e >> 1]);
    // dQ += dS K (dS rounded to BF16; the scale comes at the end)
    uint32_t dsa[L::kRowBlocks / 2][4];
    acc_to_a<L::kRowBlocks>(dsa, dps);
    mma_ab<HS, L::kRowBlocks / 2>(dqa, dsa, cK, 0, lane);
  }
  store_acc_rows<HS>(dq + q_off, qstride, qt * L::kTile + r0, s.T, dqa, s.scale, s.scale, lane, s.aligned);
}

// Raises a kernel's dynamic shared-memory limit once (the attention tiles need more than 48 KB).
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes, const char* op) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), op);
}

// kWindow: the instances with the sliding window's mask and tile bounds (s.window > 0).
template <int HS, bool kWindow>
void attention_forward_hs(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t B,
                          const AttShape& s, Stream stream) {
  constexpr size_t smem = att_forward_smem<HS>();
  static const bool once = (allow_smem(attention_forward_mma_kernel<HS, kWindow>, smem, "attention_forward"), true);
  (void)once;
  const dim3 grid((s.T + kAttTile - 1) / kAttTile, s.NH, static_cast<unsigned>(B));
  attention_forward_mma_kernel<HS, kWindow><<<grid, kAttThreads, smem, stream>>>(out, lse, q, k, v, s);
  check_launch("attention_forward");
}

template <int HS, bool kWindow>
void attention_backward_hs(uint16_t* dq, uint16_t* dk, uint16_t* dv, const uint16_t* dout, const uint16_t* q,
                           const uint16_t* k, const uint16_t* v, const float* lse, const float* D, int64_t B,
                           const AttShape& s, Stream stream) {
  constexpr size_t smem_kv = att_dkdv_smem<HS>(), smem_q = att_dq_smem<HS>();
  static const bool once =
      (allow_smem(attention_backward_dkdv_mma_kernel<HS, kWindow>, smem_kv, "attention_backward"),
       allow_smem(attention_backward_dq_mma_kernel<HS, kWindow>, smem_q, "attention_backward"), true);
  (void)once;
  const unsigned tiles = (s.T + kAttTile - 1) / kAttTile;
  attention_backward_dkdv_mma_kernel<HS, kWindow>
      <<<dim3(tiles, s.NKV, static_cast<unsigned>(B)), kAttThreads, smem_kv, stream>>>(dk, dv, dout, q, k, v, lse, D,
                                                                                       s);
  check_launch("attention_backward (dk, dv)");
  attention_backward_dq_mma_kernel<HS, kWindow>
      <<<dim3(tiles, s.NH, static_cast<unsigned>(B)), kAttThreads, smem_q, stream>>>(dq, dout, q, k, v, lse, D, s);
  check_launch("attention_backward (dq)");
}

template <int HS>
void attention_forward_hs(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t B,
                          const AttShape& s, Stream stream) {
  if (s.window > 0) attention_forward_hs<HS, true>(out, lse, q, k, v, B, s, stream);
  else attention_forward_hs<HS, false>(out, lse, q, k, v, B, s, stream);
}

template <int HS>
void attention_backward_hs(uint16_t* dq, uint16_t* dk, uint16_t* dv, const uint16_t* dout, const uint16_t* q,
                           const uint16_t* k, const uint16_t* v, const float* lse, const float* D, int64_t B,
                           const AttShape& s, Stream stream) {
  if (s.window > 0) attention_backward_hs<HS, true>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream);
  else attention_backward_hs<HS, false>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream);
}

void attention_check(const char* op, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HS, int64_t window) {
  require_nonnegative(op, {{"B", B}, {"T", T}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}, {"window", window}});
  require_head_groups(op, NH, NKV);
  require(HS == 32 || HS == 64 || HS == 128 || NH == 0, op,
          "HS = " + std::to_string(HS) + " is not supported by the CUDA attention kernels (32, 64 or 128)");
  require(T <= INT_MAX / 2 && NH <= 65535 && B <= 65535, op, "B, T or NH too large for the launch grid");
}

// The kernels' window: 0 for none and for a window >= T (every earlier key visible: the same bits).
int kernel_window(int64_t window, int64_t T) { return window > 0 && window < T ? static_cast<int>(window) : 0; }

}  // namespace

// ---- attention ------------------------------------------------------------------------------------

void attention_forward(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t B,
                       int64_t T, int64_t NH, int64_t NKV, int64_t HS, Stream stream, float* amax, int64_t window,
                       const int32_t* cu_seqlens, int64_t rows, AttentionKernel kernel) {
  constexpr const char* op = "attention_forward";
  attention_check(op, B, T, NH, NKV, HS, window);
  require(cu_seqlens == nullptr || rows > 0, op,
          "packed sequences (cu_seqlens) need rows = cu_seqlens[B], the packed row count (got " +
              std::to_string(rows) + ")");
  if (B == 0 || T == 0 || NH == 0) return;
  const AttShape s{static_cast<int>(T),
                   static_cast<int>(NH),
                   static_cast<int>(NKV),
                   1.0f / sqrtf(static_cast<float>(HS)),
                   aligned16(out) && aligned16(q) && aligned16(k) && aligned16(v),
                   amax,
                   kernel_window(window, T),
                   cu_seqlens};
  if (kernel == AttentionKernel::wgmma ||
      (kernel == AttentionKernel::automatic && attention_sm90_forward_fits(HS, s))) {
    attention_sm90_forward(out, lse, q, k, v, B, cu_seqlens ? rows : B * T, HS, s, stream);
    return;
  }
  switch (HS) {
    case 32: attention_forward_hs<32>(out, lse, q, k, v, B, s, stream); break;
    case 64: attention_forward_hs<64>(out, lse, q, k, v, B, s, stream); break;
    default: attention_forward_hs<128>(out, lse, q, k, v, B, s, stream); break;
  }
}

size_t attention_backward_scratch_bytes(int64_t B, int64_t T, int64_t NH) {
  return sizeof(float) * static_cast<size_t>(B * NH * T);
}

void attention_backward(uint16_t* dq, uint16_t* dk, uint16_t* dv, const uint16_t* dout, const uint16_t* out,
                        const uint16_t* q, const uint16_t* k, const uint16_t* v, const float* lse, int64_t B, int64_t T,
                        int64_t NH, int64_t NKV, int64_t HS, void* scratch, Stream stream, float* amax_dv,
                        int64_t window) {
  constexpr const char* op = "attention_backward";
  attention_check(op, B, T, NH, NKV, HS, window);
  if (B == 0 || T == 0 || NH == 0) return;
  require_ptr(scratch, op, "scratch (attention_backward_scratch_bytes)");
  float* D = static_cast<float*>(scratch);
  const int64_t rows = B * T * NH;
  NVFP4_LAUNCH_ALIGNED(aligned16(dout) && aligned16(out), attention_rowdot_kernel, grid_for(rows * (HS / kVec)),
                       kThreads, 0, stream, D, dout, out, rows, static_cast<int>(T), static_cast<int>(NH),
                       static_cast<int>(HS));
  check_launch(op);
  const AttShape s{static_cast<int>(T), static_cast<int>(NH), static_cast<int>(NKV),
                   1.0f / sqrtf(static_cast<float>(HS)),
                   aligned16(dq) && aligned16(dk) && aligned16(dv) && aligned16(dout) && aligned16(q) &&
                       aligned16(k) && aligned16(v),
                   amax_dv,
                   kernel_window(window, T)};
  switch (HS) {
    case 32: attention_backward_hs<32>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream); break;
    case 64: attention_backward_hs<64>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream); break;
    default: attention_backward_hs<128>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream); break;
  }
}

}  // namespace nvfp4::cuda
