// The amax passes of the CUDA quantizers: max |x| of a tensor (and of its 16-point RHT, for
// NVFP4's column-wise copy) before any block scale, one tensor or many per launch
// (include/nvfp4/cuda_quantize.hpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "format/rht.hpp"

#include "kernels/cuda/quantize_common.cuh"

namespace nvfp4::cuda {

using namespace quantize_detail;

namespace {

// ---- amax pass ----------------------------------------------------------------------------
//
// With RHT (the column copy's amax is post-RHT). Thread = 16 rows x one 32-bit word of columns
// (2 BF16 or 1 FP32): a warp reads 128 contiguous bytes of each row. It takes |x| for the row
// amax and transforms each of its columns' 16-row chunk exactly as the quantize kernel will.
template <typename T>
__global__ void __launch_bounds__(256) rht_amax_kernel(const T* __restrict__ x, int64_t M, int64_t K, uint16_t sign_mask,
                                                   float* row_amax, float* col_amax, uint32_t* nonfinite) {
  constexpr int W = 4 / sizeof(T);  // columns per 32-bit word
  const int64_t words_per_row = K / W;
  const int64_t chunks = (M / 16) * words_per_row;
  const uint32_t* xw = reinterpret_cast<const uint32_t*>(x);
  float rmax = 0.0f, cmax = 0.0f;
  uint32_t bad = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < chunks; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m0 = (i / words_per_row) * 16, w = i % words_per_row;
    uint32_t raw[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) raw[j] = __ldcs(xw + (m0 + j) * words_per_row + w);
#pragma unroll
    for (int c = 0; c < W; ++c) {
      float col[16];
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        union {
          uint32_t u;
          T e[W];
        } v{raw[j]};
        col[j] = Elem<T>::to_f32(v.e[c]);
        bad += fmt::is_finite(col[j]) ? 0u : 1u;
        rmax = fmaxf(rmax, fmt::abs_f32(col[j]));
      }
      fmt::rht16(col, sign_mask);
#pragma unroll
      for (int j = 0; j < 16; ++j) cmax = fmaxf(cmax, fmt::abs_f32(Elem<T>::round(col[j])));
    }
  }
  count_nonfinite(nonfinite, bad);
  rmax = warp_max(rmax);
  cmax = warp_max(cmax);
  if ((threadIdx.x & 31) == 0) {
    if (row_amax) atomic_max_nonneg(row_amax, rmax);
    if (col_amax) atomic_max_nonneg(col_amax, cmax);
  }
}

// Without RHT both copies' amax is max |x|: one flat pass of 16-byte loads (x is 16-byte
// aligned and M K is a multiple of 16), the block's maximum folded with one atomic. (The
// chunked kernel above, which served this case too, read it at 1.76 TB/s on an H100.)
//
// Block b of nb reads 16-byte vectors b*256 + t, + nb*256, ... of x (n values); returns this
// thread's max |x| (NaN ignored) and adds its non-finite count to bad.
template <typename T>
__device__ __forceinline__ float strided_max_abs(const T* __restrict__ x, int64_t n, int64_t b, int64_t nb,
                                                 uint32_t& bad) {
  constexpr int V = Elem<T>::kPerVec;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const int64_t nv = n / V;
  float m = 0.0f;
  for (int64_t i = b * 256 + threadIdx.x; i < nv; i += nb * 256) {
    union {
      uint4 u;
      T e[V];
    } v{__ldcs(xv + i)};
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float f = Elem<T>::to_f32(v.e[e]);
      bad += fmt::is_finite(f) ? 0u : 1u;
      m = fmaxf(m, fmt::abs_f32(f));
    }
  }
  return m;
}

// The block's maximum of m (every thread of the 256 calls), folded into a and b (either null).
__device__ __forceinline__ void fold_block_max(float m, float* a, float* b) {
  __shared__ float warp_m[8];
  m = warp_max(m);
  if ((threadIdx.x & 31) == 0) warp_m[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < 8; ++w) m = fmaxf(m, warp_m[w]);
    if (a) atomic_max_nonneg(a, m);
    if (b) atomic_max_nonneg(b, m);
  }
}

template <typename T>
__global__ void __launch_bounds__(256) flat_amax_kernel(const T* __restrict__ x, int64_t n, float* row_amax,
                                                        float* col_amax, uint32_t* nonfinite) {
  uint32_t bad = 0;
  const float m = strided_max_abs(x, n, blockIdx.x, gridDim.x, bad);
  count_nonfinite(nonfinite, bad);
  fold_block_max(m, row_amax, col_amax);
}

// multi_amax: task i owns blocks [first[i], first[i + 1]).
constexpr int kAmaxTasks = 48;  // per launch (the argument block stays under 2 KB)
struct MultiAmaxArgs {
  const void* x[kAmaxTasks];
  int64_t n[kAmaxTasks];
  float* amax[kAmaxTasks];
  int first[kAmaxTasks + 1];
  int count;
};

template <typename T>
__global__ void __launch_bounds__(256) multi_amax_kernel(const MultiAmaxArgs a) {
  int t = 0;
  while (t + 1 < a.count && a.first[t + 1] <= int(blockIdx.x)) ++t;  // uniform
  uint32_t bad = 0;
  const float m = strided_max_abs(static_cast<const T*>(a.x[t]), a.n[t], blockIdx.x - a.first[t],
                                  a.first[t + 1] - a.first[t], bad);
  fold_block_max(m, a.amax[t], nullptr);
}

}  // namespace

namespace quantize_detail {

template <typename T>
void launch_amax(const T* x, int64_t M, int64_t K, bool rht, uint16_t rht_sign_mask, float* row_amax, float* col_amax,
                 uint32_t* nonfinite, cudaStream_t s) {
  const int64_t chunks = (M / 16) * (K * static_cast<int64_t>(sizeof(T)) / 4);
  if (chunks == 0) return;
  int sms = 0, dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  const int64_t blocks = std::min<int64_t>((chunks + 255) / 256, int64_t(sms) * 8);
  if (!rht) {
    const int64_t vecs = M * K / Elem<T>::kPerVec;
    const int64_t flat_blocks = std::min<int64_t>((vecs + 255) / 256, int64_t(sms) * 8);
    flat_amax_kernel<T><<<static_cast<unsigned>(flat_blocks), 256, 0, s>>>(x, M * K, row_amax, col_amax, nonfinite);
  } else {
    rht_amax_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, s>>>(x, M, K, rht_sign_mask, row_amax, col_amax, nonfinite);
  }
  check(cudaGetLastError(), "amax_kernel launch");
}

template void launch_amax(const uint16_t*, int64_t, int64_t, bool, uint16_t, float*, float*, uint32_t*, cudaStream_t);
template void launch_amax(const float*, int64_t, int64_t, bool, uint16_t, float*, float*, uint32_t*, cudaStream_t);

}  // namespace quantize_detail

void multi_amax(const AmaxTask* tasks, int count, DType dtype, Stream stream) {
  require_bf16_or_f32("multi_amax", dtype);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const int64_t per_vec = dtype == DType::BF16 ? 8 : 4;
  for (int i0 = 0; i0 < count; i0 += kAmaxTasks) {
    MultiAmaxArgs a{};
    a.count = std::min(count - i0, kAmaxTasks);
    int blocks = 0;
    for (int j = 0; j < a.count; ++j) {
      const AmaxTask& t = tasks[i0 + j];
      if (t.n < 0 || t.n % 8 != 0 || !t.amax || (t.n > 0 && !t.x) || reinterpret_cast<uintptr_t>(t.x) % 16 != 0) {
        throw Error("multi_amax: task " + std::to_string(i0 + j) +
                    " needs a 16-byte aligned input, a size that is a multiple of 8 and an amax pointer");
      }
      a.x[j] = t.x;
      a.n[j] = t.n;
      a.amax[j] = t.amax;
      a.first[j] = blocks;
      // About 32 vectors per thread: enough work per block, enough blocks to fill the GPU.
      blocks += static_cast<int>(std::max<int64_t>(1, (t.n / per_vec + 256 * 32 - 1) / (256 * 32)));
    }
    a.first[a.count] = blocks;
    if (dtype == DType::BF16) multi_amax_kernel<uint16_t><<<static_cast<unsigned>(blocks), 256, 0, s>>>(a);
    else multi_amax_kernel<float><<<static_cast<unsigned>(blocks), 256, 0, s>>>(a);
    check(cudaGetLastError(), "multi_amax_kernel launch");
  }
}

void nvfp4_amax(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options, float* row_amax,
                float* col_amax, DeviceStatus status, Stream stream) {
  const QuantizeOptions o = nvfp4_options(options);
  validate_input("nvfp4_amax", x, dtype, M, K);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (row_amax) check(cudaMemsetAsync(row_amax, 0, sizeof(float), s), "cudaMemsetAsync");
  if (col_amax) check(cudaMemsetAsync(col_amax, 0, sizeof(float), s), "cudaMemsetAsync");
  if (dtype == DType::BF16) launch_amax(static_cast<const uint16_t*>(x), M, K, o.rht, o.rht_sign_mask, row_amax, col_amax, status.nonfinite_count, s);
  else launch_amax(static_cast<const float*>(x), M, K, o.rht, o.rht_sign_mask, row_amax, col_amax, status.nonfinite_count, s);
}

}  // namespace nvfp4::cuda
