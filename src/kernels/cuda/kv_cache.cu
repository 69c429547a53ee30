// CUDA KV cache ops of inference: appending K/V rows to the cache and attention of query rows
// against it (include/nvfp4/cuda_ops.hpp, section "inference"; CPU twin: src/kernels/cpu/kv_cache.cpp).
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

// ---- append --------------------------------------------------------------------------------------------

// Row n of k and v (NKV * HS = width elements each) to cache row (slot[n], pos[n]), bits unchanged.
template <bool kAligned>
__global__ void kv_append_kernel(uint16_t* __restrict__ k_cache, uint16_t* __restrict__ v_cache,
                                 const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
                                 const int32_t* __restrict__ slot, const int32_t* __restrict__ pos, int64_t N,
                                 int64_t width, int64_t slots, int64_t max_ctx, uint32_t* status) {
  const int64_t chunks = (width + kVec - 1) / kVec;
  NVFP4_FOR_ROW_CHUNKS(idx, N, chunks) {
    const int64_t n = idx / chunks, c = (idx % chunks) * kVec;
    const int32_t s = slot[n], p = pos[n];
    if (s < 0 || s >= slots || p < 0 || p >= max_ctx) {
      if (status && c == 0) atomicOr(status, kStatusBadPosition);
      continue;
    }
    const int64_t at = (static_cast<int64_t>(s) * max_ctx + p) * width;
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
    if (s < 0 || s >= a.slots || p < 0 || p >= a.max_ctx) {
      if (a.status && lane == 0) atomicOr(a.status, kStatusBadPosition);
    } else {
      cache = (kind == 1 ? a.k_cache : a.v_cache) + (static_cast<int64_t>(s) * a.max_ctx + p) * a.NKV * HS +
              static_cast<int64_t>(h) * HS;
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
// Layout: one CTA of kAcWarps warps per (row n, kv head, chunk of up to kG query heads of its group).
// The row's visible keys [first, pos] are cut into tiles of 32 keys; warp w takes tiles w, w + 4,
// w + 8, ... Roles, per warp, in its own shared-memory region (no block barrier inside the loop):
//   producer  cp.async copies of the K tile and the V tile (rows padded to `pitch` elements, an odd
//             multiple of 8: the 16-byte reads of 8 lanes from 8 rows hit distinct banks); the next
//             K tile is fetched while this tile's P·V runs, the next V tile while its scores do.
//             Pointers not 16-byte aligned (or HS % 8 != 0) take plain 2-byte copies instead.
//   consumer  lane l owns key l of the tile for the scores (q of the group's heads in shared memory
//             as FP32, read as broadcasts), then an online-softmax step per head (warp max and sum
//             by butterfly shuffles, identical in every lane); the weights go through shared memory
//             and lane l owns head dims 2l + 64c, 2l + 64c + 1 for P·V, accumulated in registers.
//   epilogue  after a block barrier every warp parks (m, l, acc) in shared memory; the warps'
//             states are combined in warp order: M = max m_w, f_w = exp(m_w - M),
//             out = (sum_w f_w acc_w) / (sum_w f_w l_w), rounded once to BF16.
// The split (tiles to warps) depends on nothing but the row's key range: deterministic, and a row's
// bits do not depend on the batch. NOTE: one CTA per (row, kv head) leaves most SMs idle for a
// single long sequence (N = 1); splitting its keys over CTAs (flash-decoding) would need a second
// combine pass.

constexpr int kAcWarps = 4;
constexpr int kAcThreads = 32 * kAcWarps;
constexpr int kAcTile = 32;    // keys per tile: one per lane in the score phase
constexpr int kAcMaxGroup = 8; // query heads per CTA at most

struct AttCacheArgs {
  uint16_t* out;
  const uint16_t *q, *k_cache, *v_cache;
  const int32_t *slot, *pos;
  int NH, NKV, HS, G;    // G = NH / NKV
  int pitch, qpitch;     // shared-memory row lengths of the K/V tiles (bf16) and of q (fp32)
  int64_t slots, max_ctx, window;
  float scale;
  uint32_t* status;
};

// BF16 elements per shared-memory K/V row: HS rounded up to 8, then to an odd multiple of 8.
inline int ac_pitch(int HS) {
  const int p8 = (HS + 7) / 8 * 8;
  return (p8 / 8) % 2 == 0 ? p8 + 8 : p8;
}

// Dynamic shared memory of one CTA, in bytes: the warps' K and V tiles, q, the weights, the stats.
inline size_t ac_smem_bytes(int pitch, int qpitch, int kG) {
  const size_t kv = static_cast<size_t>(kAcWarps) * 2 * kAcTile * pitch * sizeof(uint16_t);
  const size_t q = static_cast<size_t>(kG) * qpitch * sizeof(float);
  const size_t weights = static_cast<size_t>(kAcWarps) * kAcTile * kG * sizeof(float);
  const size_t stats = static_cast<size_t>(3 * kAcWarps + 1) * kG * sizeof(float);
  return kv + q + weights + stats;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, o));
  return x;
}

// Rows [0, nv) of a K or V tile into dst (rows of `pitch` elements): key j0 + r of the slot's
// cache at src + (j0 + r) * stride. Every lane of the warp calls it.
template <bool kAligned>
__device__ __forceinline__ void ac_load_tile(uint16_t* dst, const uint16_t* src, int64_t stride, int j0, int nv,
                                             int HS, int pitch, int lane) {
  if constexpr (kAligned) {
    const int cpr = HS / 8;  // 16-byte pieces per row
    for (int i = lane; i < nv * cpr; i += 32) {
      const int r = i / cpr, c = (i % cpr) * 8;
      cp_async16(smem_addr(dst + r * pitch + c), src + (j0 + r) * stride + c);
    }
  } else {
    for (int i = lane; i < nv * HS; i += 32) {
      const int r = i / HS, c = i % HS;
      dst[r * pitch + c] = src[(j0 + r) * stride + c];
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
  float* sF = sL + kAcWarps * kG;                          // (warps, kG) combine factors
  float* sSum = sF + kAcWarps * kG;                        // (kG) combined sum
  dependent_wait();  // launched with launch_dependent (ops_common.cuh)
  dependent_trigger();

  const int64_t n = blockIdx.x;
  const int kvh = blockIdx.y, g0 = blockIdx.z * kG;
  const int heads = min(kG, a.G - g0);  // query heads of this CTA
  const int h0 = kvh * a.G + g0;
  const int32_t s = a.slot[n], p = a.pos[n];
  if (s < 0 || s >= a.slots || p < 0 || p >= a.max_ctx) {
    if (a.status && threadIdx.x == 0) atomicOr(a.status, kStatusBadPosition);
    for (int i = threadIdx.x; i < heads * HS; i += kAcThreads) a.out[(n * a.NH + h0) * HS + i] = 0;
    return;
  }
  const int64_t window_first = p - a.window + 1;  // the first position a window of that size sees
  const int first = a.window > 0 && window_first > 0 ? static_cast<int>(window_first) : 0;
  const int ntiles = (p + 1 - first + kAcTile - 1) / kAcTile;
  const int64_t stride = static_cast<int64_t>(a.NKV) * HS;  // between consecutive positions
  const uint16_t* kbase = a.k_cache + static_cast<int64_t>(s) * a.max_ctx * stride + kvh * HS;
  const uint16_t* vbase = a.v_cache + static_cast<int64_t>(s) * a.max_ctx * stride + kvh * HS;

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

  // Prologue: this warp's first K tile, then its V tile (two commit groups).
  int t = warp;
  if (t < ntiles) {
    const int nv = min(kAcTile, p + 1 - first - t * kAcTile);
    ac_load_tile<kAligned>(sK, kbase, stride, first + t * kAcTile, nv, HS, pitch, lane);
    cp_async_commit();
    ac_load_tile<kAligned>(sV, vbase, stride, first + t * kAcTile, nv, HS, pitch, lane);
  } else {
    cp_async_commit();
  }
  cp_async_commit();

  for (; t < ntiles; t += kAcWarps) {
    const int nv = min(kAcTile, p + 1 - first - t * kAcTile);  // valid keys of this tile, >= 1
    const int tn = t + kAcWarps;                                // this warp's next tile
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
    if (nv_next > 0) ac_load_tile<kAligned>(sK, kbase, stride, first + tn * kAcTile, nv_next, HS, pitch, lane);
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
    if (nv_next > 0) ac_load_tile<kAligned>(sV, vbase, stride, first + tn * kAcTile, nv_next, HS, pitch, lane);
    cp_async_commit();
  }
  cp_async_wait_all();

  // ---- epilogue: combine the warps in order ------------------------------------------------------
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
  __syncthreads();
  if (threadIdx.x < kG) {
    const int g = threadIdx.x;
    float M = -INFINITY, L = 0.0f;
    for (int w = 0; w < kAcWarps; ++w) M = fmaxf(M, sM[w * kG + g]);
    for (int w = 0; w < kAcWarps; ++w) {
      const float f = expf(sM[w * kG + g] - M);  // 0 for a warp without tiles (m = -inf)
      sF[w * kG + g] = f;
      L += sL[w * kG + g] * f;
    }
    sSum[g] = L;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < heads * HS; i += kAcThreads) {
    const int g = i / HS, d = i % HS;
    float o = 0.0f;
    for (int w = 0; w < kAcWarps; ++w) {
      const float* wacc = reinterpret_cast<const float*>(ac_smem + w * 2 * kAcTile * pitch * sizeof(uint16_t));
      o += wacc[g * HS + d] * sF[w * kG + g];
    }
    a.out[(n * a.NH + h0 + g) * HS + d] = f32_to_bf16(o / sSum[g]);
  }
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
  const dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(a.NKV), static_cast<unsigned>(chunks));
  launch_dependent(kernel, grid, dim3(kAcThreads), ac_smem_bytes(a.pitch, a.qpitch, kG), stream, a);
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
               uint32_t* status, Stream stream) {
  constexpr const char* op = "kv_append";
  require_nonnegative(op, {{"N", N}, {"NKV", NKV}, {"HS", HS}, {"slots", slots}, {"max_ctx", max_ctx}});
  const int64_t width = NKV * HS;
  if (N == 0 || width == 0) return;
  const bool aligned = width % kVec == 0 && aligned16(k_cache) && aligned16(v_cache) && aligned16(k) && aligned16(v);
  NVFP4_LAUNCH_ALIGNED(aligned, kv_append_kernel, grid_for(N * ((width + kVec - 1) / kVec)), kThreads, 0, stream,
                       k_cache, v_cache, k, v, slot, pos, N, width, slots, max_ctx, status);
  check_launch(op);
}

void qkv_rows(uint16_t* q, uint16_t* k, uint16_t* v, const uint16_t* q_in, const uint16_t* k_in, const uint16_t* v_in,
              int64_t q_ld, int64_t kv_ld, const uint16_t* q_norm, const uint16_t* k_norm, float eps,
              const int32_t* pos, const float* inv_freq, uint16_t* k_cache, uint16_t* v_cache, const int32_t* slot,
              int64_t N, int64_t NH, int64_t NKV, int64_t HS, int64_t slots, int64_t max_ctx, uint32_t* status,
              Stream stream) {
  constexpr const char* op = "qkv_rows";
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
                     static_cast<int>(HS), slots, max_ctx, status};
  launch_dependent(qkv_rows_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, args);
  check_launch(op);
}

void attention_cache(uint16_t* out, const uint16_t* q, const uint16_t* k_cache, const uint16_t* v_cache,
                     const int32_t* slot, const int32_t* pos, int64_t N, int64_t NH, int64_t NKV, int64_t HS,
                     int64_t slots, int64_t max_ctx, int64_t window, float scale, uint32_t* status, Stream stream) {
  constexpr const char* op = "attention_cache";
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
  a.slots = slots, a.max_ctx = max_ctx, a.window = window, a.scale = scale, a.status = status;
  const bool aligned = HS % 8 == 0 && aligned16(k_cache) && aligned16(v_cache);
  if (HS <= 64) launch_attention_cache_hs<64>(a, N, aligned, stream);
  else if (HS <= 128) launch_attention_cache_hs<128>(a, N, aligned, stream);
  else launch_attention_cache_hs<256>(a, N, aligned, stream);
  check_launch(op);
}

}  // namespace nvfp4::cuda
