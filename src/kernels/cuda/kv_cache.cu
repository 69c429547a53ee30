// CUDA KV cache ops of inference: appending K/V rows to the cache and attention of query rows
// against it (include/nvfp4/cuda_ops.hpp, section "inference"; CPU twin: src/kernels/cpu/kv_cache.cpp).
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda {

using namespace ops_detail;

namespace {

// Where position j of slot s lives (nvfp4/kv_pages.hpp): its row among the cache's rows (slots x
// max_ctx contiguous, or blocks x block_size paged), or -1 when the table gives it no block.
struct CacheRows {
  const int32_t* table;
  int64_t block_size, blocks, per_seq, max_ctx;
  __device__ __forceinline__ int64_t row(int64_t s, int64_t j) const {
    if (!table) return s * max_ctx + j;
    const int32_t b = table[s * per_seq + j / block_size];
    return b >= 0 && b < blocks ? int64_t{b} * block_size + j % block_size : -1;
  }
};

CacheRows cache_rows(const char* op, const KvPages& pages, int64_t max_ctx) {
  if (!pages.table) return {nullptr, 1, 0, 1, max_ctx};
  require(pages.block_size > 0 && pages.blocks >= 0 && pages.blocks <= INT32_MAX, op,
          "a paged cache needs block_size > 0 (got " + std::to_string(pages.block_size) +
              ") and blocks in [0, 2^31) (got " + std::to_string(pages.blocks) + ")");
  return {pages.table, pages.block_size, pages.blocks, (max_ctx + pages.block_size - 1) / pages.block_size, max_ctx};
}

// ---- append --------------------------------------------------------------------------------------------

// Row n of k and v (NKV * HS = width elements each) to cache row (slot[n], pos[n]), bits unchanged.
template <bool kAligned>
__global__ void kv_append_kernel(uint16_t* __restrict__ k_cache, uint16_t* __restrict__ v_cache,
                                 const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
                                 const int32_t* __restrict__ slot, const int32_t* __restrict__ pos, int64_t N,
                                 int64_t width, int64_t slots, int64_t max_ctx, CacheRows cr, uint32_t* status) {
  const int64_t chunks = (width + kVec - 1) / kVec;
  NVFP4_FOR_ROW_CHUNKS(idx, N, chunks) {
    const int64_t n = idx / chunks, c = (idx % chunks) * kVec;
    const int32_t s = slot[n], p = pos[n];
    if (s < 0 || s >= slots || p < 0 || p >= max_ctx) {
      if (status && c == 0) atomicOr(status, kStatusBadPosition);
      continue;
    }
    const int64_t row = cr.row(s, p);
    if (row < 0) {
      if (status && c == 0) atomicOr(status, kStatusBadPosition);
      continue;
    }
    const int64_t at = row * width;
    copy8<kAligned>(k_cache + at, k + n * width, c, width);
    copy8<kAligned>(v_cache + at, v + n * width, c, width);
  }
}

// ---- the attention inputs of a step (qkv_rows) ---------------------------------------------------------
//
// One warp per (row n, head j of the NH + 2 NKV heads: q heads, then k, then v). The head's HS values
// go to shared memory as the BF16 values the separate ops would store: normed (rmsnorm_forward's
// warp_row_rstd and product order: the same bits) or read as they are. q and k heads are then
// rotated pair by pair (rope_rows' angle and rope_rotate), v heads copied bit for bit; k and v
// heads also go to the cache row (slot[n], pos[n]).

constexpr int kQkvMaxHS = 256;
constexpr int kQkvWarps = kThreads / 32;

struct QkvArgs {
  uint16_t *q, *k, *v;
  const uint16_t *q_in, *k_in, *v_in;
  int64_t q_ld, kv_ld;
  const uint16_t *q_norm, *k_norm;
  float eps;
  const int32_t* pos;
  const float* inv_freq;
  uint16_t *k_cache, *v_cache;
  const int32_t* slot;
  int64_t N;
  int NH, NKV, HS;
  int64_t slots, max_ctx;
  uint32_t* status;
  CacheRows cr;
};

__global__ void __launch_bounds__(kThreads) qkv_rows_kernel(QkvArgs a) {
  __shared__ float sx[kQkvWarps][kQkvMaxHS];
  dependent_wait();  // launched with launch_dependent (ops_common.cuh)
  dependent_trigger();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int heads = a.NH + 2 * a.NKV, HS = a.HS, half = HS / 2;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kQkvWarps + warp;
  if (item >= a.N * heads) return;  // whole warps only: no block barrier below
  const int64_t n = item / heads;
  const int j = static_cast<int>(item % heads);
  const int kind = j < a.NH ? 0 : j < a.NH + a.NKV ? 1 : 2;  // q, k, v
  const int h = kind == 0 ? j : kind == 1 ? j - a.NH : j - a.NH - a.NKV;
  const uint16_t* src = kind == 0 ? a.q_in + n * a.q_ld : kind == 1 ? a.k_in + n * a.kv_ld : a.v_in + n * a.kv_ld;
  src += static_cast<int64_t>(h) * HS;
  const int64_t out_at = (n * (kind == 0 ? a.NH : a.NKV) + h) * HS;
  uint16_t* dst = (kind == 0 ? a.q : kind == 1 ? a.k : a.v) + out_at;
  const uint16_t* norm = kind == 0 ? a.q_norm : kind == 1 ? a.k_norm : nullptr;
  const int32_t s = a.slot[n], p = a.pos[n];
  uint16_t* cache = nullptr;
  if (kind != 0) {
    const int64_t row = s < 0 || s >= a.slots || p < 0 || p >= a.max_ctx ? -1 : a.cr.row(s, p);
    if (row < 0) {
      if (a.status && lane == 0) atomicOr(a.status, kStatusBadPosition);
    } else {
      cache = (kind == 1 ? a.k_cache : a.v_cache) + (row * a.NKV + h) * HS;
    }
  }
  if (kind == 2) {  // v: the bits copied
    for (int c = lane; c < HS; c += 32) {
      const uint16_t b = src[c];
      dst[c] = b;
      if (cache) cache[c] = b;
    }
    return;
  }
  float* x = sx[warp];
  if (norm) {
    const float r = warp_row_rstd<false>(src, HS, a.eps, lane);
    for (int c = lane * kVec; c < HS; c += 32 * kVec) {
      float v[8], w[8];
      load8<false>(src, c, HS, v);
      load8<false>(norm, c, HS, w);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        if (c + e < HS) x[c + e] = bf16_to_f32(f32_to_bf16((v[e] * r) * w[e]));
      }
    }
  } else {
    for (int c = lane; c < HS; c += 32) x[c] = bf16_to_f32(src[c]);
  }
  __syncwarp();
  for (int i = lane; i < half; i += 32) {
    float sn, cs, y1, y2;
    sincosf(static_cast<float>(p) * a.inv_freq[i], &sn, &cs);
    rope_rotate(x[i], x[i + half], cs, sn, y1, y2);
    const uint16_t b1 = f32_to_bf16(y1), b2 = f32_to_bf16(y2);
    dst[i] = b1;
    dst[i + half] = b2;
    if (cache) cache[i] = b1, cache[i + half] = b2;
  }
}

// ---- attention against the cache ------------------------------------------------------------------------
//
// Layout: a thread-block cluster of `splits` CTAs (1-8: ac_splits, from max_ctx) of kAcWarps warps
// per (row n, kv head, chunk of up to kG query heads of its group) — flash-decoding's split of one
// sequence's keys over CTAs, so a single long sequence still fills the SMs. The row's visible keys
// [first, pos] are cut into tiles of 32 keys; warp w of rank r takes tiles 4r + w, 4r + w + 4s,
// 4r + w + 8s, ... (s = splits). Roles, per warp, in its own shared-memory region (no block barrier
// inside the loop):
//   producer  cp.async copies of the K tile and the V tile (rows padded to `pitch` elements, an odd
//             multiple of 8: the 16-byte reads of 8 lanes from 8 rows hit distinct banks), each key's
//             row found through the block table (lane r looks up key r, the copies take it by
//             shuffle); the next K tile is fetched while this tile's P·V runs, the next V tile while
//             its scores do. Pointers not 16-byte aligned (or HS % 8 != 0) take plain 2-byte copies.
//   consumer  lane l owns key l of the tile for the scores (q of the group's heads in shared memory
//             as FP32, read as broadcasts), then an online-softmax step per head (warp max and sum
//             by butterfly shuffles, identical in every lane); the weights go through shared memory
//             and lane l owns head dims 2l + 64c, 2l + 64c + 1 for P·V, accumulated in registers.
//   epilogue  every warp parks (m, l, acc) in its CTA's shared memory; after a cluster barrier the
//             cluster's warp states are combined in (rank, warp) order through distributed shared
//             memory: M = max m_w, f_w = exp(m_w - M), out = (sum_w f_w acc_w) / (sum_w f_w l_w),
//             rounded once to BF16, each CTA storing a slice of the outputs; a second cluster
//             barrier keeps every CTA's states alive until all have read them. No workspace in
//             device memory, no second launch (the decode step stays one graph node).
// The split (tiles to warps and CTAs) depends on nothing but the row's key range and max_ctx:
// deterministic, and a row's bits do not depend on the batch. With one CTA (max_ctx < 256) it is
// the warp-order combine of the kernel before the split, bit for bit.

constexpr int kAcWarps = 4;
constexpr int kAcThreads = 32 * kAcWarps;
constexpr int kAcTile = 32;    // keys per tile: one per lane in the score phase
constexpr int kAcMaxGroup = 8; // query heads per CTA at most
constexpr int kAcMaxSplits = 8;  // CTAs (a thread-block cluster) sharing one row's keys at most

struct AttCacheArgs {
  uint16_t* out;
  const uint16_t *q, *k_cache, *v_cache;
  const int32_t *slot, *pos;
  int NH, NKV, HS, G;    // G = NH / NKV
  int pitch, qpitch;     // shared-memory row lengths of the K/V tiles (bf16) and of q (fp32)
  int64_t slots, max_ctx, window;
  float scale;
  uint32_t* status;
  CacheRows cr;
  int splits;            // CTAs of a cluster sharing each row's keys (grid.x = N x splits)
};

// BF16 elements per shared-memory K/V row: HS rounded up to 8, then to an odd multiple of 8.
inline int ac_pitch(int HS) {
  const int p8 = (HS + 7) / 8 * 8;
  return (p8 / 8) % 2 == 0 ? p8 + 8 : p8;
}

// Dynamic shared memory of one CTA, in bytes: the warps' K and V tiles, q, the weights, the stats
// (running max and sum per warp, the combine factors of every warp of the cluster, the sums).
inline size_t ac_smem_bytes(int pitch, int qpitch, int kG) {
  const size_t kv = static_cast<size_t>(kAcWarps) * 2 * kAcTile * pitch * sizeof(uint16_t);
  const size_t q = static_cast<size_t>(kG) * qpitch * sizeof(float);
  const size_t weights = static_cast<size_t>(kAcWarps) * kAcTile * kG * sizeof(float);
  const size_t stats = static_cast<size_t>(2 * kAcWarps + kAcMaxSplits * kAcWarps + 1) * kG * sizeof(float);
  return kv + q + weights + stats;
}

// The CTAs that share a row's keys: a power of two up to kAcMaxSplits, from the cache's positions
// per slot alone (about one 32-key tile a warp at the full context) — never from the batch, so a
// row's bits do not depend on the rows beside it.
inline int ac_splits(int64_t max_ctx) {
  int splits = 1;
  while (splits < kAcMaxSplits && int64_t{splits} * 2 * kAcWarps * kAcTile <= max_ctx) splits *= 2;
  return splits;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, o));
  return x;
}

// Rows [0, nv) of a K or V tile into dst (rows of `pitch` elements): key j0 + r of slot s, at its
// cache row (CacheRows) x stride + head. Every lane of the warp calls it: lane r finds key j0 + r's
// row, and the copies take it by shuffle. A key without a block reads as zeros and flags *status.
template <bool kAligned>
__device__ __forceinline__ void ac_load_tile(uint16_t* dst, const uint16_t* cache, const CacheRows& cr, int64_t s,
                                             int64_t stride, int64_t head, int j0, int nv, int HS, int pitch,
                                             int lane, uint32_t* status) {
  int64_t mine = -1;
  if (lane < nv) {
    mine = cr.row(s, j0 + lane);
    if (mine < 0 && status) atomicOr(status, kStatusBadPosition);
  }
  const int per_row = kAligned ? HS / 8 : HS;  // 16-byte pieces, or elements
  for (int base = 0; base < nv * per_row; base += 32) {
    const int i = base + lane, r = min(i / per_row, 31);
    const int64_t row = __shfl_sync(0xFFFFFFFFu, mine, r);
    if (i >= nv * per_row) continue;
    if constexpr (kAligned) {
      const int c = (i % per_row) * 8;
      if (row >= 0) cp_async16(smem_addr(dst + r * pitch + c), cache + row * stride + head + c);
      else *reinterpret_cast<uint4*>(dst + r * pitch + c) = make_uint4(0, 0, 0, 0);
    } else {
      const int c = i % per_row;
      dst[r * pitch + c] = row >= 0 ? cache[row * stride + head + c] : uint16_t{0};
    }
  }
}

template <int kMaxHS, int kG, bool kAligned>
__global__ void __launch_bounds__(kAcThreads) attention_cache_kernel(AttCacheArgs a) {
  static_assert(kMaxHS % 64 == 0, "lane l owns dims 2l + 64c, 2l + 64c + 1");
  constexpr int kPairs = kMaxHS / 64;
  extern __shared__ __align__(16) unsigned char ac_smem[];
  const int HS = a.HS, pitch = a.pitch, qpitch = a.qpitch;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  uint16_t* sK = reinterpret_cast<uint16_t*>(ac_smem) + warp * 2 * kAcTile * pitch;  // (32, pitch) bf16
  uint16_t* sV = sK + kAcTile * pitch;                                               // (32, pitch) bf16
  float* sQ = reinterpret_cast<float*>(ac_smem + kAcWarps * 2 * kAcTile * pitch * sizeof(uint16_t));  // (kG, qpitch)
  float* sP = sQ + kG * qpitch + warp * kAcTile * kG;  // this warp's weights (32 keys, kG heads)
  float* sM = sQ + kG * qpitch + kAcWarps * kAcTile * kG;  // (warps, kG) running max
  float* sL = sM + kAcWarps * kG;                          // (warps, kG) running sum
  float* sF = sL + kAcWarps * kG;                          // (splits x warps, kG) combine factors
  float* sSum = sF + kAcMaxSplits * kAcWarps * kG;         // (kG) combined sum
  dependent_wait();  // launched with launch_dependent (ops_common.cuh)
  dependent_trigger();

  const int splits = a.splits, rank = static_cast<int>(blockIdx.x) % splits;  // rank: in the cluster
  const int64_t n = blockIdx.x / splits;
  const int kvh = blockIdx.y, g0 = blockIdx.z * kG;
  const int heads = min(kG, a.G - g0);  // query heads of this CTA
  const int h0 = kvh * a.G + g0;
  const int32_t s = a.slot[n], p = a.pos[n];
  if (s < 0 || s >= a.slots || p < 0 || p >= a.max_ctx) {
    if (a.status && threadIdx.x == 0) atomicOr(a.status, kStatusBadPosition);
    // Every CTA of the cluster returns here (the row is the cluster's): no cluster barrier waits.
    for (int i = threadIdx.x; rank == 0 && i < heads * HS; i += kAcThreads) a.out[(n * a.NH + h0) * HS + i] = 0;
    return;
  }
  const int64_t window_first = p - a.window + 1;  // the first position a window of that size sees
  const int first = a.window > 0 && window_first > 0 ? static_cast<int>(window_first) : 0;
  const int ntiles = (p + 1 - first + kAcTile - 1) / kAcTile;
  const int64_t stride = static_cast<int64_t>(a.NKV) * HS, head = static_cast<int64_t>(kvh) * HS;  // per cache row

  // q of this CTA's heads as FP32; heads past `heads` and dims past HS are zeros.
  for (int i = threadIdx.x; i < kG * qpitch; i += kAcThreads) {
    const int g = i / qpitch, d = i % qpitch;
    sQ[i] = g < heads && d < HS ? bf16_to_f32(a.q[(n * a.NH + h0 + g) * HS + d]) : 0.0f;
  }
  __syncthreads();

  float m[kG], l[kG], acc[kG][kPairs][2];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int c = 0; c < kPairs; ++c) acc[g][c][0] = acc[g][c][1] = 0.0f;
  }

  // Prologue: this warp's first K tile, then its V tile (two commit groups). The cluster's warps
  // take the tiles in turn: warp w of rank r tiles r * kAcWarps + w, then every splits * kAcWarps.
  const int step = splits * kAcWarps;
  int t = rank * kAcWarps + warp;
  if (t < ntiles) {
    const int nv = min(kAcTile, p + 1 - first - t * kAcTile);
    ac_load_tile<kAligned>(sK, a.k_cache, a.cr, s, stride, head, first + t * kAcTile, nv, HS, pitch, lane, a.status);
    cp_async_commit();
    ac_load_tile<kAligned>(sV, a.v_cache, a.cr, s, stride, head, first + t * kAcTile, nv, HS, pitch, lane, a.status);
  } else {
    cp_async_commit();
  }
  cp_async_commit();

  for (; t < ntiles; t += step) {
    const int nv = min(kAcTile, p + 1 - first - t * kAcTile);  // valid keys of this tile, >= 1
    const int tn = t + step;                                    // this warp's next tile
    const int nv_next = tn < ntiles ? min(kAcTile, p + 1 - first - tn * kAcTile) : 0;

    // ---- scores: lane = key --------------------------------------------------------------------
    cp_async_wait_prev();  // the K tile (the V tile may still be in flight)
    __syncwarp();
    float sc[kG];
#pragma unroll
    for (int g = 0; g < kG; ++g) sc[g] = 0.0f;
    {
      const uint16_t* krow = sK + lane * pitch;
      int d = 0;
      for (; d + 8 <= HS; d += 8) {
        float kf[8];
        load8<true>(krow, d, d + 8, kf);  // 16-byte aligned: pitch and d are multiples of 8
#pragma unroll
        for (int g = 0; g < kG; ++g) {
          const float4 q0 = *reinterpret_cast<const float4*>(sQ + g * qpitch + d);
          const float4 q1 = *reinterpret_cast<const float4*>(sQ + g * qpitch + d + 4);
          sc[g] += q0.x * kf[0] + q0.y * kf[1] + q0.z * kf[2] + q0.w * kf[3] + q1.x * kf[4] + q1.y * kf[5] +
                   q1.z * kf[6] + q1.w * kf[7];
        }
      }
      for (; d < HS; d += 2) {  // HS % 8 != 0: the last pairs
        const float k0 = bf16_to_f32(krow[d]), k1 = bf16_to_f32(krow[d + 1]);
#pragma unroll
        for (int g = 0; g < kG; ++g) sc[g] += sQ[g * qpitch + d] * k0 + sQ[g * qpitch + d + 1] * k1;
      }
    }
    const bool valid = lane < nv;
    float corr[kG];
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      const float x = valid ? sc[g] * a.scale : -INFINITY;
      const float m_new = fmaxf(m[g], warp_max(x));  // finite: key 0 of the tile is valid
      corr[g] = expf(m[g] - m_new);                  // 0 on the first tile (m = -inf)
      const float w = valid ? expf(x - m_new) : 0.0f;
      l[g] = l[g] * corr[g] + warp_sum(w);
      m[g] = m_new;
      sP[lane * kG + g] = w;
    }
    __syncwarp();  // every lane is done with the K tile and has written its weights
    if (nv_next > 0) {
      ac_load_tile<kAligned>(sK, a.k_cache, a.cr, s, stride, head, first + tn * kAcTile, nv_next, HS, pitch, lane,
                             a.status);
    }
    cp_async_commit();

    // ---- P·V: lane = head dims -------------------------------------------------------------------
    cp_async_wait_prev();  // the V tile
    __syncwarp();
#pragma unroll
    for (int g = 0; g < kG; ++g)
#pragma unroll
      for (int c = 0; c < kPairs; ++c) acc[g][c][0] *= corr[g], acc[g][c][1] *= corr[g];
    for (int j = 0; j < nv; ++j) {
      float w[kG];
      if constexpr (kG % 4 == 0) {
#pragma unroll
        for (int g = 0; g < kG; g += 4) {
          const float4 x = *reinterpret_cast<const float4*>(sP + j * kG + g);
          w[g] = x.x, w[g + 1] = x.y, w[g + 2] = x.z, w[g + 3] = x.w;
        }
      } else {
#pragma unroll
        for (int g = 0; g < kG; ++g) w[g] = sP[j * kG + g];
      }
      const uint16_t* vrow = sV + j * pitch;
#pragma unroll
      for (int c = 0; c < kPairs; ++c) {
        const int d = 2 * lane + 64 * c;
        if (d < HS) {
          const uint32_t v2 = *reinterpret_cast<const uint32_t*>(vrow + d);
          const float v0 = __uint_as_float(v2 << 16), v1 = __uint_as_float(v2 & 0xFFFF0000u);
#pragma unroll
          for (int g = 0; g < kG; ++g) {
            acc[g][c][0] += w[g] * v0;
            acc[g][c][1] += w[g] * v1;
          }
        }
      }
    }
    __syncwarp();  // every lane is done with the V tile and the weights
    if (nv_next > 0) {
      ac_load_tile<kAligned>(sV, a.v_cache, a.cr, s, stride, head, first + tn * kAcTile, nv_next, HS, pitch, lane,
                             a.status);
    }
    cp_async_commit();
  }
  cp_async_wait_all();

  // ---- epilogue: combine the cluster's warps in order (rank, then warp) ------------------------------
  __syncthreads();  // every warp is done with its tiles: their regions now hold the states
  float* sAcc = reinterpret_cast<float*>(sK);  // (kG, HS) fp32, fits: 4 kG HS <= 128 pitch bytes
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < kG; ++g) sM[warp * kG + g] = m[g], sL[warp * kG + g] = l[g];
  }
#pragma unroll
  for (int c = 0; c < kPairs; ++c) {
    const int d = 2 * lane + 64 * c;
    if (d < HS) {
#pragma unroll
      for (int g = 0; g < kG; ++g) sAcc[g * HS + d] = acc[g][c][0], sAcc[g * HS + d + 1] = acc[g][c][1];
    }
  }
  // The states of every CTA of the cluster (distributed shared memory; one CTA: its own).
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  if (splits > 1) cluster.sync();  // every CTA's states written and visible to the cluster
  else __syncthreads();
  const auto state = [&](float* local, int r) { return splits > 1 ? cluster.map_shared_rank(local, r) : local; };
  if (threadIdx.x < kG) {
    const int g = threadIdx.x;
    float M = -INFINITY, L = 0.0f;
    for (int r = 0; r < splits; ++r) {
      const float* rm = state(sM, r);
      for (int w = 0; w < kAcWarps; ++w) M = fmaxf(M, rm[w * kG + g]);
    }
    for (int r = 0; r < splits; ++r) {
      const float *rm = state(sM, r), *rl = state(sL, r);
      for (int w = 0; w < kAcWarps; ++w) {
        const float f = expf(rm[w * kG + g] - M);  // 0 for a warp without tiles (m = -inf)
        sF[(r * kAcWarps + w) * kG + g] = f;
        L += rl[w * kG + g] * f;
      }
    }
    sSum[g] = L;
  }
  __syncthreads();
  // This CTA's share of the outputs: elements rank x kAcThreads + threadIdx.x, every splits x kAcThreads.
  for (int i = rank * kAcThreads + threadIdx.x; i < heads * HS; i += splits * kAcThreads) {
    const int g = i / HS, d = i % HS;
    float o = 0.0f;
    for (int r = 0; r < splits; ++r) {
      for (int w = 0; w < kAcWarps; ++w) {
        float* wacc = reinterpret_cast<float*>(ac_smem + w * 2 * kAcTile * pitch * sizeof(uint16_t));
        o += state(wacc, r)[g * HS + d] * sF[(r * kAcWarps + w) * kG + g];
      }
    }
    a.out[(n * a.NH + h0 + g) * HS + d] = f32_to_bf16(o / sSum[g]);
  }
  if (splits > 1) cluster.sync();  // no CTA leaves (freeing its shared memory) while another reads it
}

// Raises a kernel's dynamic shared-memory limit to `bytes` once per process (HS = 256 needs more
// than the default 48 KB).
template <int kMaxHS, int kG, bool kAligned>
void launch_attention_cache(const AttCacheArgs& a, int64_t N, int chunks, Stream stream) {
  const auto kernel = attention_cache_kernel<kMaxHS, kG, kAligned>;
  static const bool once = [&] {
    const size_t most = ac_smem_bytes(kMaxHS + 8, kMaxHS, kG);  // the largest pitch of this HS range
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(most)),
          "attention_cache");
    return true;
  }();
  (void)once;
  const dim3 grid(static_cast<unsigned>(N * a.splits), static_cast<unsigned>(a.NKV), static_cast<unsigned>(chunks));
  // One CTA a row: no cluster (the kernel calls no cluster API then).
  launch_dependent_cluster(kernel, grid, dim3(kAcThreads), ac_smem_bytes(a.pitch, a.qpitch, kG), stream,
                           a.splits > 1 ? static_cast<unsigned>(a.splits) : 0u, a);
}

template <int kMaxHS, bool kAligned>
void launch_attention_cache_group(const AttCacheArgs& a, int64_t N, Stream stream) {
  const int chunks = (a.G + kAcMaxGroup - 1) / kAcMaxGroup;
  if (a.G <= 1) launch_attention_cache<kMaxHS, 1, kAligned>(a, N, 1, stream);
  else if (a.G <= 2) launch_attention_cache<kMaxHS, 2, kAligned>(a, N, 1, stream);
  else if (a.G <= 4) launch_attention_cache<kMaxHS, 4, kAligned>(a, N, 1, stream);
  else launch_attention_cache<kMaxHS, kAcMaxGroup, kAligned>(a, N, chunks, stream);
}

template <int kMaxHS>
void launch_attention_cache_hs(const AttCacheArgs& a, int64_t N, bool aligned, Stream stream) {
  if (aligned) launch_attention_cache_group<kMaxHS, true>(a, N, stream);
  else launch_attention_cache_group<kMaxHS, false>(a, N, stream);
}

}  // namespace

// ---- host entry points -------------------------------------------------------------------------------

void kv_append(uint16_t* k_cache, uint16_t* v_cache, const uint16_t* k, const uint16_t* v, const int32_t* slot,
               const int32_t* pos, int64_t N, int64_t NKV, int64_t HS, int64_t slots, int64_t max_ctx,
               uint32_t* status, Stream stream, const KvPages& pages) {
  constexpr const char* op = "kv_append";
  const CacheRows cr = cache_rows(op, pages, max_ctx);
  require_nonnegative(op, {{"N", N}, {"NKV", NKV}, {"HS", HS}, {"slots", slots}, {"max_ctx", max_ctx}});
  const int64_t width = NKV * HS;
  if (N == 0 || width == 0) return;
  const bool aligned = width % kVec == 0 && aligned16(k_cache) && aligned16(v_cache) && aligned16(k) && aligned16(v);
  NVFP4_LAUNCH_ALIGNED(aligned, kv_append_kernel, grid_for(N * ((width + kVec - 1) / kVec)), kThreads, 0, stream,
                       k_cache, v_cache, k, v, slot, pos, N, width, slots, max_ctx, cr, status);
  check_launch(op);
}

void qkv_rows(uint16_t* q, uint16_t* k, uint16_t* v, const uint16_t* q_in, const uint16_t* k_in, const uint16_t* v_in,
              int64_t q_ld, int64_t kv_ld, const uint16_t* q_norm, const uint16_t* k_norm, float eps,
              const int32_t* pos, const float* inv_freq, uint16_t* k_cache, uint16_t* v_cache, const int32_t* slot,
              int64_t N, int64_t NH, int64_t NKV, int64_t HS, int64_t slots, int64_t max_ctx, uint32_t* status,
              Stream stream, const KvPages& pages) {
  constexpr const char* op = "qkv_rows";
  const CacheRows cr = cache_rows(op, pages, max_ctx);
  require_nonnegative(op, {{"N", N}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}, {"slots", slots}, {"max_ctx", max_ctx}});
  require(HS % 2 == 0 && HS <= kQkvMaxHS, op,
          "HS = " + std::to_string(HS) + " is not supported: the kernel takes even head sizes up to 256");
  require(q_ld >= NH * HS && kv_ld >= NKV * HS, op,
          "row strides q_ld = " + std::to_string(q_ld) + ", kv_ld = " + std::to_string(kv_ld) +
              " are shorter than the rows (NH * HS = " + std::to_string(NH * HS) +
              ", NKV * HS = " + std::to_string(NKV * HS) + ")");
  require(NH + 2 * NKV <= INT_MAX && N <= INT64_MAX / std::max<int64_t>(NH + 2 * NKV, 1) / kQkvWarps, op,
          "N or the head count exceeds the kernel's range");
  const int64_t warps = N * (NH + 2 * NKV);
  if (warps == 0 || HS == 0) return;
  for (const auto& [ptr, name] : {std::pair<const void*, const char*>{q, "q"}, {k, "k"}, {v, "v"}, {q_in, "q_in"},
                                  {k_in, "k_in"}, {v_in, "v_in"}, {pos, "pos"}, {inv_freq, "inv_freq"},
                                  {k_cache, "k_cache"}, {v_cache, "v_cache"}, {slot, "slot"}}) {
    require_ptr(ptr, op, name);
  }
  const int64_t blocks = (warps + kQkvWarps - 1) / kQkvWarps;
  require(blocks <= INT_MAX, op, "N = " + std::to_string(N) + " rows exceed the launch grid");
  const QkvArgs args{q,    k,        v,       q_in,    k_in,    v_in,
                     q_ld, kv_ld,    q_norm,  k_norm,  eps,     pos,
                     inv_freq, k_cache, v_cache, slot, N, static_cast<int>(NH), static_cast<int>(NKV),
                     static_cast<int>(HS), slots, max_ctx, status, cr};
  launch_dependent(qkv_rows_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, args);
  check_launch(op);
}

void attention_cache(uint16_t* out, const uint16_t* q, const uint16_t* k_cache, const uint16_t* v_cache,
                     const int32_t* slot, const int32_t* pos, int64_t N, int64_t NH, int64_t NKV, int64_t HS,
                     int64_t slots, int64_t max_ctx, int64_t window, float scale, uint32_t* status, Stream stream,
                     const KvPages& pages) {
  constexpr const char* op = "attention_cache";
  const CacheRows cr = cache_rows(op, pages, max_ctx);
  require_nonnegative(op, {{"N", N}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}, {"slots", slots}, {"max_ctx", max_ctx},
                           {"window", window}});
  require_head_groups(op, NH, NKV);
  require(HS % 2 == 0 && HS <= 256, op,
          "HS = " + std::to_string(HS) + " is not supported: the kernel takes even head sizes up to 256");
  require(N <= INT_MAX && NKV <= 65535 && NH <= INT_MAX / 256 && max_ctx <= INT_MAX, op,
          "N = " + std::to_string(N) + ", NKV = " + std::to_string(NKV) + " or max_ctx = " + std::to_string(max_ctx) +
              " exceeds the kernel's grid or int range");
  if (N == 0 || NH == 0 || HS == 0) return;
  AttCacheArgs a;
  a.out = out, a.q = q, a.k_cache = k_cache, a.v_cache = v_cache, a.slot = slot, a.pos = pos;
  a.NH = static_cast<int>(NH), a.NKV = static_cast<int>(NKV), a.HS = static_cast<int>(HS);
  a.G = static_cast<int>(NH / NKV);
  a.pitch = ac_pitch(a.HS), a.qpitch = (a.HS + 7) / 8 * 8;
  a.slots = slots, a.max_ctx = max_ctx, a.window = window, a.scale = scale, a.status = status, a.cr = cr;
  a.splits = ac_splits(max_ctx);
  require(N * a.splits <= INT_MAX, op, "N = " + std::to_string(N) + " rows exceed the launch grid");
  const bool aligned = HS % 8 == 0 && aligned16(k_cache) && aligned16(v_cache);
  if (HS <= 64) launch_attention_cache_hs<64>(a, N, aligned, stream);
  else if (HS <= 128) launch_attention_cache_hs<128>(a, N, aligned, stream);
  else launch_attention_cache_hs<256>(a, N, aligned, stream);
  check_launch(op);
}

}  // namespace nvfp4::cuda
