// What the attention kernels share: the FlashAttention-2 kernels (attention.cu, mma.sync) and the
// Hopper ones (attention_sm90.cu, wgmma + TMA) — the softmax constants, the BF16 fragment
// conversions (a product's FP32 accumulators as the next product's A operand), the row epilogue and
// the shape the launches pass.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda::attention_detail {

// NOTE: probabilities are exp2(s * scale * log2(e) - m) with m in log2 units; lse is saved in
// natural-log units (m * ln 2 + ln l).
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Two FP32 values as a BF16 pair (RNE), lo in the low half: the lower column of a fragment.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The A fragments (16 rows, 16 columns per k-step) of a warp's score-shaped accumulators
// acc (16, 8 N) fp32: n-blocks 2kk and 2kk + 1 form k-step kk (no shared-memory round trip).
template <int N>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[N / 2][4], const float (&acc)[N][4]) {
  static_assert(N % 2 == 0, "a k-step of 16 is two n-blocks of 8");
#pragma unroll
  for (int kk = 0; kk < N / 2; ++kk) {
    a[kk][0] = pack_bf16(acc[2 * kk][0], acc[2 * kk][1]);
    a[kk][1] = pack_bf16(acc[2 * kk][2], acc[2 * kk][3]);
    a[kk][2] = pack_bf16(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
    a[kk][3] = pack_bf16(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
  }
}

// Epilogue: a warp's (16, HS) accumulator tile times `scale` as BF16 rows row0 + g and
// row0 + g + 8 (those < T) of one head (base: its row 0; rows row_stride elements apart).
template <int HS>
// Returns max |value| this thread stored, before BF16 rounding (for fold_amax).
__device__ __forceinline__ float store_acc_rows(uint16_t* base, int64_t row_stride, int row0, int T,
                                                const float (&acc)[HS / 8][4], float scale_lo, float scale_hi,
                                                int lane, bool aligned) {
  const int g = lane >> 2, t = lane & 3;
  float m = 0.0f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + g + 8 * half;
    if (row >= T) continue;
    const float sc = half ? scale_hi : scale_lo;
    uint16_t* dst = base + static_cast<int64_t>(row) * row_stride + 2 * t;
#pragma unroll
    for (int nb = 0; nb < HS / 8; ++nb) {
      const float a = acc[nb][2 * half] * sc, b = acc[nb][2 * half + 1] * sc;
      m = fmaxf(m, fmaxf(fabsf(a), fabsf(b)));
      const uint32_t w = pack_bf16(a, b);
      if (aligned) {
        *reinterpret_cast<uint32_t*>(dst + 8 * nb) = w;
      } else {
        dst[8 * nb] = static_cast<uint16_t>(w & 0xFFFFu);
        dst[8 * nb + 1] = static_cast<uint16_t>(w >> 16);
      }
    }
  }
  return m;
}

// The forwards' epilogue for a warp's rows row0 + g and row0 + g + 8 of one head (out_head: its
// row 0; rows row_stride elements apart): the quad's partial sums l, O / l rounded once to BF16
// (rows < T), the producer amax of what was stored, lse = m ln 2 + ln l into lse_row (rows < T).
template <int HS>
__device__ __forceinline__ void store_forward_rows(uint16_t* out_head, int64_t row_stride, int row0, int T,
                                                   const float (&o)[HS / 8][4], float (&l)[2], const float (&m)[2],
                                                   float* lse_row, float* amax, int lane, bool aligned) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xFFFFFFFFu, l[i], 1);
    l[i] += __shfl_xor_sync(0xFFFFFFFFu, l[i], 2);
  }
  ops_detail::fold_amax(amax, store_acc_rows<HS>(out_head, row_stride, row0, T, o, 1.0f / l[0], 1.0f / l[1], lane, aligned));
  const int g = lane >> 2;
  if ((lane & 3) == 0) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
      if (row0 + g + 8 * i < T) lse_row[row0 + g + 8 * i] = m[i] * kLn2 + logf(l[i]);
  }
}

struct AttShape {
  int T, NH, NKV;
  float scale;   // 1 / sqrt(HS)
  bool aligned;  // every BF16 tensor 16-byte aligned
  float* amax = nullptr;  // producer amax: of out (forward) or of dv (backward); may be null
  int window = 0;         // sliding window (0: none; the host passes 0 for a window >= T)
  // Forward only: sequences of different lengths packed row after row, sequence b at rows
  // [cu_seqlens[b], cu_seqlens[b + 1]) (device memory); T is then the longest. nullptr: B x T.
  const int32_t* cu_seqlens = nullptr;
};

// The Hopper forward (attention_sm90.cu): FlashAttention-3's scheme — TMA loads by a producer
// warp, two consumer warpgroups of 64 query rows each on wgmma, mbarrier-staged K/V tiles.
// attention_sm90_forward_fits: whether it takes this call (an sm_90 device, HS 64 or 128, no
// window, every tensor 16-byte aligned); `rows` is the packed row count (B x T, or cu_seqlens[B]).
bool attention_sm90_forward_fits(int64_t HS, const AttShape& s);
void attention_sm90_forward(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            int64_t B, int64_t rows, int64_t HS, const AttShape& s, cudaStream_t stream);

}  // namespace nvfp4::cuda::attention_detail
