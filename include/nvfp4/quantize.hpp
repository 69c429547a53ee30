// Number formats and tensor quantization on the CPU — the reference every GPU kernel is
// tested against.
//
// Formats are described once, in a traits table (nvfp4/format.hpp); this header quantizes.
//
// A quantized tensor of logical shape [M, K] (K contiguous) has up to two copies:
//   row-wise    codes of x,   blocks along K: codes (M, K/2) bytes, scales (M, K/16) e4m3
//   column-wise codes of x^T, blocks along M: codes (K, M/2) bytes, scales (K, M/16) e4m3
// each with its own FP32 amax (the column-wise input may be Hadamard-transformed first).
// GEMMs consume both operands contiguous along the contraction dimension ("TN").
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/dtype.hpp"
#include "nvfp4/format.hpp"  // Format, BlockShape, the traits table
#include "nvfp4/sr_key.hpp"  // SrKey, kTeRhtSignMask

namespace nvfp4 {

struct QuantizeOptions {
  Format format = Format::nvfp4;
  std::optional<BlockShape> block;  // empty: the format's default block
  bool rowwise = true;
  bool columnwise = false;
  bool rht = false;                      // 16-point RHT on the column-wise copy (NVFP4 1x16)
  uint16_t rht_sign_mask = kTeRhtSignMask;
  Rounding rounding = Rounding::rne;     // stochastic: FP4 formats only
  SrKey sr_key{};
  // GPU quantizers (include/nvfp4/cuda_quantize.hpp): write NVFP4 block scales in the 128x4
  // layout GEMMs read (swizzle_scales). The CPU quantizer writes them row-major.
  bool swizzled_scales = false;
};

// One orientation of a quantized tensor.
struct QuantizedCopy {
  int64_t rows = 0, cols = 0;     // logical shape of this copy: row-wise (M, K), column-wise (K, M)
  std::vector<uint8_t> codes;     // FP4: (rows, cols/2) bytes, element 2j in the LOW nibble;
                                  // FP8: (rows, cols) bytes
  std::vector<uint8_t> scales;    // NVFP4: (rows, cols/16) E4M3; MXFP4: (rows, cols/32) E8M0
  int64_t scale_rows = 0, scale_cols = 0;  // shape of `scales` or of `scale_inv`
  std::vector<float> scale_inv;   // FP8: decode factors, [1] per tensor or (scale_rows, scale_cols)
  float amax = 0.0f;              // max |input| of this copy (post-RHT for an RHT copy)
};

struct QuantizedTensor {
  QuantizeOptions options;  // as resolved (block filled in)
  DType input_dtype = DType::F32;
  int64_t M = 0, K = 0;
  std::optional<QuantizedCopy> row;
  std::optional<QuantizedCopy> col;
  // With options.rht: the transformed column-wise input, (K, M), rounded to input_dtype.
  std::vector<float> col_rht_input;
};

// Checks options against the format and the shape; throws nvfp4::Error saying which option
// or dimension is wrong and what would work. Returns the options with the block resolved.
QuantizeOptions resolve_options(const QuantizeOptions& options, int64_t M, int64_t K);

// Quantize x, (M, K) row-major. input_dtype says what x was before it was widened to FP32
// (BF16 input: the RHT output is rounded back to BF16, as TE does). Throws NonFiniteError if x
// holds NaN or Inf (nothing is quantized silently) and nvfp4::Error for bad options/shapes.
QuantizedTensor quantize(std::span<const float> x, int64_t M, int64_t K, const QuantizeOptions& options,
                         DType input_dtype = DType::F32);

// Values a copy represents, (copy.rows, copy.cols) row-major. With apply_tensor_scale = false,
// NVFP4 returns codes x block scales only (exact in BF16; the FP32 factor amax/2688 left to
// the caller, as a GEMM applies it in alpha).
std::vector<float> dequantize(const QuantizedCopy& copy, const QuantizeOptions& options,
                              bool apply_tensor_scale = true);

// The values of x (M, K) one copy of q represents, in x's layout: the row-wise copy decoded, or
// (column = true) the column-wise copy decoded, its RHT undone (the inverse transform of the
// format's RHT, traits' rht_points) and transposed back. Every scale applied.
std::vector<float> dequantize_as_input(const QuantizedTensor& q, bool column);

// ---- What a format costs a tensor (src/kernels/cpu/quantize_stats.cpp) -------------------------

// Error of quantizing x (rows, cols) row-wise with `options` and decoding it back, its stored
// bits per value, and (timed_repeats > 0) the CPU quantizer's throughput in GB/s of FP32 input,
// the median of that many runs on the threads OpenMP has. Throws what quantize() throws.
struct FormatCost {
  ErrorStats error;
  double bits_per_value = 0;
  double cpu_gbps = 0;  // 0: not timed
};
FormatCost measure_format(std::span<const float> x, int64_t rows, int64_t cols, const QuantizeOptions& options,
                          int timed_repeats);

// Standard data to compare formats on, n values from `seed`: "gaussian" N(0, 1), "laplace",
// "heavy-tailed" (Student-t, 3 degrees of freedom, 0.1 % outliers 50x larger).
std::span<const std::string_view> synthetic_kinds();
std::vector<float> synthetic_tensor(std::string_view kind, int64_t n, uint64_t seed);

// Statistics of one copy's block scales, decoded: "saturated" is the largest scale the scale
// format has (448 for E4M3; the 2^127 clamp for E8M0), "subnormal" an E4M3 subnormal scale
// (fewer than 4 significant bits) or E8M0 at the 2^-127 clamp. FP8: its FP32 scale_inv values.
struct ScaleStats {
  int64_t count = 0, zero = 0, saturated = 0, subnormal = 0;
  double min_nonzero = INFINITY, max = 0, mean = 0;
};
ScaleStats scale_stats(const QuantizedCopy& c, Format f);

// Block scales (rows, cols) row-major <-> the "128x4" layout cuBLAS / CUTLASS block-scaled
// GEMMs read (docs/numerics.md §2): padded with zeros to (roundup(rows,128), roundup(cols,4)).
std::vector<uint8_t> swizzle_scales(std::span<const uint8_t> scales, int64_t rows, int64_t cols);
std::vector<uint8_t> unswizzle_scales(std::span<const uint8_t> swizzled, int64_t rows, int64_t cols);

}  // namespace nvfp4
