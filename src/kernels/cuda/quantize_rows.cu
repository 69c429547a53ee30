// CUDA NVFP4 fake quantization of activation rows (include/nvfp4/cuda_ops.hpp, section "inference";
// CPU twin: src/kernels/cpu/quantize_rows.cpp, bit for bit). The arithmetic is the format core's
// __host__ __device__ functions (src/format/nvfp4.hpp), the CPU op's and nvfp4::quantize's too;
// this file is compiled without FMA contraction (CMakeLists.txt).
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "format/nvfp4.hpp"
#include "kernels/cpu/ops.hpp"  // cpu::kRowNonFinite, cpu::kRowSaturated: the flags' one definition
#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda {

using namespace ops_detail;

namespace {

constexpr int kBlock = fmt::kNvfp4Block;
constexpr int kRowsPerBlock = kThreads / 32;  // one warp per row

// The 16 values of NVFP4 block b of a BF16 row, as FP32 (exact). kAligned: 16-byte aligned row.
template <bool kAligned>
__device__ __forceinline__ void load_block(const uint16_t* row, int64_t b, float (&v)[kBlock]) {
  float lo[8], hi[8];
  load8<kAligned>(row, b * kBlock, b * kBlock + kBlock, lo);
  load8<kAligned>(row, b * kBlock + 8, b * kBlock + kBlock, hi);
#pragma unroll
  for (int e = 0; e < 8; ++e) v[e] = lo[e], v[e + 8] = hi[e];
}

template <bool kAligned>
__device__ __forceinline__ void store_block(uint16_t* row, int64_t b, const float (&v)[kBlock]) {
  float lo[8], hi[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) lo[e] = v[e], hi[e] = v[e + 8];
  store8<kAligned>(row, b * kBlock, b * kBlock + kBlock, lo);
  store8<kAligned>(row, b * kBlock + 8, b * kBlock + kBlock, hi);
}

// max |v| over a block as the bits of |v| (NaN and Inf give >= 0x7F800000), as the CPU op.
__device__ __forceinline__ uint32_t block_max_abs_bits(const float (&v)[kBlock]) {
  uint32_t m = 0;
#pragma unroll
  for (int e = 0; e < kBlock; ++e) m = max(m, fmt::f32_bits(v[e]) & 0x7FFFFFFFu);
  return m;
}

// One warp per row; lane l takes blocks l, l + 32, ... Pass 1 finds the row's amax (a warp max of
// the bits), pass 2 reads the row again (from L1/L2) and writes it. A lane writes only the blocks
// it read, after pass 1 has read them all: out may equal in.
template <bool kAligned>
__global__ void __launch_bounds__(kThreads) nvfp4_quantize_rows_kernel(uint16_t* out, float* row_factor,
                                                                       uint8_t* row_flags, const uint16_t* in,
                                                                       int64_t N, int64_t K,
                                                                       fmt::Nvfp4InputScale input, bool fallback,
                                                                       uint32_t* flagged_count) {
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (n >= N) return;  // the whole warp
  const uint16_t* x = in + n * K;
  uint16_t* y = out + n * K;
  const int64_t nb = K / kBlock;

  uint32_t bits = 0;
  for (int64_t b = lane; b < nb; b += 32) {
    float v[kBlock];
    load_block<kAligned>(x, b, v);
    bits = max(bits, block_max_abs_bits(v));
  }
  bits = __reduce_max_sync(0xFFFFFFFFu, bits);
  const bool finite = bits < 0x7F800000u;
  float decode = 1.0f;
  bool saturates = false;
  const fmt::Nvfp4TensorScale ts =
      fmt::nvfp4_input_tensor_scale(input, finite ? fmt::f32_from_bits(bits) : 0.0f, &decode, &saturates);
  const uint8_t flags = !finite ? cpu::kRowNonFinite : (saturates ? cpu::kRowSaturated : 0u);
  if (lane == 0) {
    if (row_flags) row_flags[n] = flags;
    if (flagged_count && flags != 0) atomicAdd(flagged_count, 1u);
  }

  if (flags != 0 && fallback) {  // the row as it is; the GEMM computes W4A16 for it
    if (y != x)
      for (int64_t b = lane; b < nb; b += 32) {
        copy8<kAligned>(y, x, b * kBlock, K);
        copy8<kAligned>(y, x, b * kBlock + 8, K);
      }
    if (lane == 0) row_factor[n] = 1.0f;
    return;
  }
  if (!finite) {
    for (int64_t k = lane; k < K; k += 32) y[k] = 0x7FC0u;  // NaN, as the CPU op's quiet NaN rounded
    if (lane == 0) row_factor[n] = 1.0f;
    return;
  }
  for (int64_t b = lane; b < nb; b += 32) {
    float v[kBlock];
    load_block<kAligned>(x, b, v);
    const uint8_t scale = fmt::nvfp4_block_scale(fmt::f32_from_bits(block_max_abs_bits(v)), ts);
    const float e = fmt::nvfp4_block_encode_factor(scale, ts);
#pragma unroll
    for (int j = 0; j < kBlock; ++j) v[j] = fmt::nvfp4_decode(fmt::nvfp4_encode_rne(v[j], e), scale, 1.0f);
    store_block<kAligned>(y, b, v);  // code x E4M3 scale: exact in BF16
  }
  if (lane == 0) row_factor[n] = decode;
}

}  // namespace

void nvfp4_quantize_rows(uint16_t* out, float* row_factor, uint8_t* row_flags, const uint16_t* in, int64_t N, int64_t K,
                         const fmt::Nvfp4InputScale& input, bool fallback, uint32_t* flagged_count, Stream stream) {
  constexpr const char* op = "nvfp4_quantize_rows";
  require_nonnegative(op, {{"N", N}, {"K", K}});
  require(K % kBlock == 0, op,
          "K = " + std::to_string(K) + " is not a multiple of 16, the NVFP4 block; pad the rows or keep this "
          "GEMM's input in BF16");
  if (const char* problem = fmt::nvfp4_input_scale_problem(input)) {
    require(false, op,
            "the input scale (amax " + std::to_string(input.amax) + ", encode " + std::to_string(input.encode) +
                ", decode " + std::to_string(input.decode) + "): " + problem);
  }
  require(N / kRowsPerBlock < INT_MAX, op, "N = " + std::to_string(N) + " exceeds the kernel's grid");
  if (N == 0) return;
  require_ptr(row_factor, op, "row_factor");
  const bool aligned = aligned16(out) && aligned16(in);
  const unsigned grid = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  NVFP4_LAUNCH_ALIGNED(aligned, nvfp4_quantize_rows_kernel, grid, kThreads, 0, stream, out, row_factor, row_flags, in,
                       N, K, input, fallback, flagged_count);
  check_launch(op);
}

}  // namespace nvfp4::cuda
