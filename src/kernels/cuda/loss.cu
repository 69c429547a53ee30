// CUDA cross-entropy, forward and backward in one pass (include/nvfp4/cuda_ops.hpp; CPU twin:
// src/kernels/cpu/loss.cpp).
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda {

using namespace ops_detail;

namespace {

// ---- cross-entropy ------------------------------------------------------------------------------

constexpr int kCeThreads = 512;

// Online (max, sum of exp(x - max)) pairs: combine two.
__device__ __forceinline__ void combine_max_sum(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;  // both empty
  s = s * expf(m - mn) + s2 * expf(m2 - mn);
  m = mn;
}

template <bool kAligned>
__global__ void __launch_bounds__(kCeThreads) crossentropy_kernel(float* losses, uint16_t* dlogits,
                                                                  const uint16_t* logits, const int32_t* targets,
                                                                  int64_t V, float dloss_scale, uint32_t* status) {
  // NOTE: no __restrict__ on logits / dlogits: they may be the same buffer. Every element is read
  // and then written by the same thread, and the target logit is read before the first barrier.
  __shared__ float red_m[kCeThreads / 32], red_s[kCeThreads / 32];
  const int64_t n = blockIdx.x;
  const uint16_t* x = logits + n * V;  // (V)
  uint16_t* dx = dlogits + n * V;      // (V)
  const int32_t target = targets[n];
  const bool valid = target >= 0 && target < V;
  const float x_target = (threadIdx.x == 0 && valid) ? bf16_to_f32(x[target]) : 0.0f;

  // pass 1: online max and sum of exp over this thread's chunks, then over the block
  float m = -INFINITY, s = 0.0f;
  for (int64_t i = static_cast<int64_t>(threadIdx.x) * kVec; i < V; i += static_cast<int64_t>(kCeThreads) * kVec) {
    float v[8];
    load8<kAligned>(x, i, V, v);
    float cm = -INFINITY;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      if (i + e >= V) v[e] = -INFINITY;
      cm = fmaxf(cm, v[e]);
    }
    if (cm > m) {  // element i is in range, so cm is finite (for finite logits)
      s *= expf(m - cm);
      m = cm;
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) s += expf(v[e] - m);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xFFFFFFFFu, m, o), s2 = __shfl_xor_sync(0xFFFFFFFFu, s, o);
    combine_max_sum(m, s, m2, s2);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  if (lane == 0) red_m[warp] = m, red_s[warp] = s;
  __syncthreads();
  m = red_m[0], s = red_s[0];
  for (int w = 1; w < kCeThreads / 32; ++w) combine_max_sum(m, s, red_m[w], red_s[w]);  // fixed order, every thread

  if (threadIdx.x == 0) {
    // -log softmax[target] = log sum exp(x - max) - (x[target] - max), as the CPU op
    losses[n] = valid ? logf(s) - (x_target - m) : __int_as_float(0x7FC00000);
    if (!valid && status) atomicOr(status, kStatusBadTarget);
  }
  // pass 2: dlogits = (softmax - onehot) * dloss_scale
  const float inv = 1.0f / s;
  for (int64_t i = static_cast<int64_t>(threadIdx.x) * kVec; i < V; i += static_cast<int64_t>(kCeThreads) * kVec) {
    float v[8];
    load8<kAligned>(x, i, V, v);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float p = expf(v[e] - m) * inv;
      v[e] = valid ? (p - (i + e == target ? 1.0f : 0.0f)) * dloss_scale : 0.0f;
    }
    store8<kAligned>(dx, i, V, v);
  }
}

}  // namespace

// ---- cross-entropy ---------------------------------------------------------------------------------

void crossentropy_forward_backward(float* losses, uint16_t* dlogits, const uint16_t* logits, const int32_t* targets,
                                   int64_t N, int64_t V, float dloss_scale, uint32_t* status, Stream stream) {
  constexpr const char* op = "crossentropy_forward_backward";
  require_nonnegative(op, {{"N", N}, {"V", V}});
  require(V > 0 || N == 0, op, "V = 0: an empty vocabulary has no softmax");
  if (N == 0) return;
  require(N <= INT_MAX, op, "N too large for the launch grid");
  const bool aligned = V % kVec == 0 && aligned16(dlogits) && aligned16(logits);
  NVFP4_LAUNCH_ALIGNED(aligned, crossentropy_kernel, static_cast<unsigned>(N), kCeThreads, 0, stream, losses, dlogits,
                       logits, targets, V, dloss_scale, status);
  check_launch(op);
}

}  // namespace nvfp4::cuda
