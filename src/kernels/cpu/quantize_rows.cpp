// The CPU reference NVFP4 fake quantization of activation rows (ops.hpp, section "inference";
// CUDA twin: src/kernels/cuda/quantize_rows.cu). Every number comes from the format core's
// __host__ __device__ functions (src/format/nvfp4.hpp), the same ones the CUDA op calls and
// nvfp4::quantize calls: one definition of the arithmetic, so the three agree bit for bit.
#include "kernels/cpu/ops.hpp"

#include <cmath>
#include <limits>
#include <string>

#include "format/nvfp4.hpp"
#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

namespace {

// max |x| of n values as the bits of |x|: non-negative floats order like their bits, and a NaN or
// Inf gives a value >= 0x7F800000 (nvfp4::quantize finds its amax the same way).
uint32_t max_abs_bits(const float* x, int64_t n) {
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t b = fmt::f32_bits(x[i]) & 0x7FFFFFFFu;
    m = b > m ? b : m;
  }
  return m;
}

}  // namespace

void nvfp4_quantize_rows(float* out, float* row_factor, uint8_t* row_flags, const float* in, int64_t N, int64_t K,
                         const fmt::Nvfp4InputScale& input, bool fallback) {
  constexpr const char* op = "nvfp4_quantize_rows";
  constexpr int64_t kBlock = fmt::kNvfp4Block;
  require_nonnegative(op, {{"N", N}, {"K", K}});
  require(K % kBlock == 0, op,
          "K = " + std::to_string(K) + " is not a multiple of 16, the NVFP4 block; pad the rows or keep this "
          "GEMM's input in BF16");
  if (const char* problem = fmt::nvfp4_input_scale_problem(input)) {
    require(false, op,
            "the input scale (amax " + std::to_string(input.amax) + ", encode " + std::to_string(input.encode) +
                ", decode " + std::to_string(input.decode) + "): " + problem);
  }
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = in + n * K;
    float* y = out + n * K;
    const uint32_t row_bits = max_abs_bits(x, K);
    const bool finite = row_bits < 0x7F800000u;
    float decode = 1.0f;
    bool saturates = false;
    const fmt::Nvfp4TensorScale ts =
        fmt::nvfp4_input_tensor_scale(input, finite ? fmt::f32_from_bits(row_bits) : 0.0f, &decode, &saturates);
    const uint8_t flags = !finite ? kRowNonFinite : (saturates ? kRowSaturated : 0u);
    if (row_flags) row_flags[n] = flags;
    if (flags != 0 && fallback) {
      for (int64_t k = 0; k < K; ++k) y[k] = x[k];
      row_factor[n] = 1.0f;
      continue;
    }
    if (!finite) {
      for (int64_t k = 0; k < K; ++k) y[k] = std::numeric_limits<float>::quiet_NaN();
      row_factor[n] = 1.0f;
      continue;
    }
    for (int64_t b = 0; b < K; b += kBlock) {
      const uint8_t scale = fmt::nvfp4_block_scale(fmt::f32_from_bits(max_abs_bits(x + b, kBlock)), ts);
      const float e = fmt::nvfp4_block_encode_factor(scale, ts);
      // All 16 codes before any store: out may equal in.
      uint8_t codes[kBlock];
      for (int64_t j = 0; j < kBlock; ++j) codes[j] = fmt::nvfp4_encode_rne(x[b + j], e);
      for (int64_t j = 0; j < kBlock; ++j) y[b + j] = fmt::nvfp4_decode(codes[j], scale, 1.0f);
    }
    row_factor[n] = decode;
  }
}

}  // namespace nvfp4::cpu
