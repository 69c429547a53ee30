// CUDA AdamW and the global gradient norm (include/nvfp4/cuda_ops.hpp; CPU twin: src/kernels/cpu/optim.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda {

using namespace ops_detail;

namespace {

// ---- optimizer ---------------------------------------------------------------------------------

struct AdamParams {
  float lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay, correction1, correction2;
};

// NOTE: every operation is an explicitly rounded intrinsic (never contracted into an FMA), in
// the CPU op's order, so the result equals the CPU op's bits (its host code has no contraction).
__global__ void adamw_kernel(float* __restrict__ params, uint16_t* __restrict__ params_bf16,
                             const float* __restrict__ grads, float* __restrict__ m, float* __restrict__ v, int64_t n,
                             AdamParams a) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = grads[i];
    const float mi = __fadd_rn(__fmul_rn(a.beta1, m[i]), __fmul_rn(a.one_minus_beta1, g));
    const float vi = __fadd_rn(__fmul_rn(a.beta2, v[i]), __fmul_rn(a.one_minus_beta2, __fmul_rn(g, g)));
    const float mhat = __fdiv_rn(mi, a.correction1);
    const float vhat = __fdiv_rn(vi, a.correction2);
    const float p = params[i];
    const float step = __fadd_rn(__fdiv_rn(mhat, __fadd_rn(__fsqrt_rn(vhat), a.eps)), __fmul_rn(a.weight_decay, p));
    const float pn = __fsub_rn(p, __fmul_rn(a.lr, step));
    m[i] = mi;
    v[i] = vi;
    params[i] = pn;
    if (params_bf16) params_bf16[i] = f32_to_bf16(pn);
  }
}

// Sum of squares in double with a FIXED reduction tree, so the result depends only on n and the
// data — never on the grid or the device — and every level runs in parallel:
//   level 1: block ch (kNormThreads threads) takes chunk ch of kNormChunk elements; thread t
//            sums elements t, t + kNormThreads, ... of the chunk in order, then the block adds
//            the per-thread sums by a fixed shared-memory tree -> partial[ch]
//   level 2: one block adds the partials the same way (thread t sums t, t + kNormThreads, ...).
// NOTE: this order differs from cpu::global_norm's (sequential 4096-chunks), so the two agree
// to double rounding (~1e-15 relative), not bit for bit; the CPU chunk-serial order took one
// thread per 4096 elements and was 16% of a GPT-2-small training step on the H100.
constexpr int64_t kNormChunk = 4096;
constexpr int kNormThreads = 256;

__device__ __forceinline__ double block_tree_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
#pragma unroll
  for (int w = kNormThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) sh[threadIdx.x] = __dadd_rn(sh[threadIdx.x], sh[threadIdx.x + w]);
    __syncthreads();
  }
  return sh[0];
}

__global__ void __launch_bounds__(kNormThreads) norm_partial_kernel(double* __restrict__ partial,
                                                                    const float* __restrict__ grads, int64_t n) {
  __shared__ double sh[kNormThreads];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kNormChunk;
  const int64_t end = min(n, begin + kNormChunk);
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kNormThreads) {
    const double g = grads[i];
    acc = __dadd_rn(acc, __dmul_rn(g, g));  // no DFMA contraction: the same bits on any device
  }
  const double total = block_tree_sum(acc, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kNormThreads) norm_final_kernel(double* __restrict__ out,
                                                                  const double* __restrict__ partial, int64_t chunks) {
  __shared__ double sh[kNormThreads];
  double acc = 0.0;
  for (int64_t ch = threadIdx.x; ch < chunks; ch += kNormThreads) acc = __dadd_rn(acc, partial[ch]);
  const double total = block_tree_sum(acc, sh);
  if (threadIdx.x == 0) *out = total;
}

}  // namespace

// ---- optimizer ------------------------------------------------------------------------------------

void adamw_update(float* params, uint16_t* params_bf16, const float* grads, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t step, Stream stream) {
  constexpr const char* op = "adamw_update";
  require_nonnegative(op, {{"n", n}});
  require(step >= 1, op, "step = " + std::to_string(step) + "; steps count from 1 (bias correction)");
  if (n == 0) return;
  // NOTE: the bias corrections on the host with the CPU op's expression (FP32 std::pow).
  const AdamParams a{lr,
                     beta1,
                     beta2,
                     1.0f - beta1,
                     1.0f - beta2,
                     eps,
                     weight_decay,
                     1.0f - std::pow(beta1, static_cast<float>(step)),
                     1.0f - std::pow(beta2, static_cast<float>(step))};
  adamw_kernel<<<grid_for(n), kThreads, 0, stream>>>(params, params_bf16, grads, m, v, n, a);
  check_launch(op);
}

size_t global_norm_scratch_bytes(int64_t n) {
  return sizeof(double) * static_cast<size_t>(std::max<int64_t>(1, (n + kNormChunk - 1) / kNormChunk));
}

void global_norm_squared(double* out, const float* grads, int64_t n, void* scratch, Stream stream) {
  constexpr const char* op = "global_norm_squared";
  require_nonnegative(op, {{"n", n}});
  require_ptr(out, op, "out");
  require_ptr(scratch, op, "scratch (global_norm_scratch_bytes)");
  const int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
  double* partial = static_cast<double*>(scratch);
  if (chunks > 0) {
    if (chunks > int64_t(INT32_MAX)) throw Error("global_norm_squared: n = " + std::to_string(n) + " is too large");
    norm_partial_kernel<<<static_cast<unsigned>(chunks), kNormThreads, 0, stream>>>(partial, grads, n);
    check_launch(op);
  }
  norm_final_kernel<<<1, kNormThreads, 0, stream>>>(out, partial, chunks);
  check_launch(op);
}

}  // namespace nvfp4::cuda
