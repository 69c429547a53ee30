// Number formats and tensor quantization on the CPU — the reference every GPU kernel is
// tested against.
//
// Formats are described once, in a traits table (format_table()); the CLI, the tests and the
// file writers iterate it, so a format is listed, documented and tested the moment it is
// registered (style.md #2).
//
// A quantized tensor of logical shape [M, K] (K contiguous) has up to two copies:
//   row-wise    codes of x,   blocks along K: codes (M, K/2) bytes, scales (M, K/16) e4m3
//   column-wise codes of x^T, blocks along M: codes (K, M/2) bytes, scales (K, M/16) e4m3
// each with its own FP32 amax (the column-wise input may be Hadamard-transformed first).
// GEMMs consume both operands contiguous along the contraction dimension ("TN").
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/dtype.hpp"
#include "nvfp4/sr_key.hpp"  // SrKey, kTeRhtSignMask

namespace nvfp4 {

enum class Format : uint8_t {
  nvfp4,      // E2M1 values, E4M3 scale per 16, FP32 per-tensor scale
  mxfp4,      // E2M1 values, E8M0 scale per 32, exponent rounded UP (TE, the NVFP4 paper)
  mxfp4_ocp,  // E2M1 values, E8M0 scale per 32, OCP v1.0 rule floor(log2 amax) - 2
  fp8_e4m3,   // E4M3 values, FP32 scale per tensor or per 1x128 / 128x128 block
  fp8_e5m2,   // E5M2 values, likewise
};

enum class Rounding : uint8_t { rne, stochastic };

// A block of `rows` x `cols` elements shares one scale. {0, 0} means one scale per tensor.
struct BlockShape {
  int rows = 1;
  int cols = 16;
  bool per_tensor() const { return rows == 0 && cols == 0; }
  bool operator==(const BlockShape&) const = default;
};
std::string block_name(BlockShape b);                      // "1x16", "16x16", "tensor"
std::optional<BlockShape> parse_block(std::string_view s);  // inverse of block_name


struct QuantizeOptions {
  Format format = Format::nvfp4;
  std::optional<BlockShape> block;  // empty: the format's default block
  bool rowwise = true;
  bool columnwise = false;
  bool rht = false;                      // 16-point RHT on the column-wise copy (NVFP4 1x16)
  uint16_t rht_sign_mask = kTeRhtSignMask;
  Rounding rounding = Rounding::rne;     // stochastic: FP4 formats only
  SrKey sr_key{};
};

struct FormatTraits {
  Format format;
  std::string_view name;         // CLI spelling: "nvfp4", "mxfp4", "mxfp4-ocp", "fp8-e4m3", ...
  std::string_view description;  // one line for --help and `nvfp4 formats`
  int element_bits;              // 4 or 8
  BlockShape default_block;
  std::span<const BlockShape> blocks;  // block shapes this format supports
  std::string_view scale_kind;   // "E4M3 + FP32 tensor", "E8M0", "FP32"
  bool packed_fp4;               // two E2M1 codes per byte
  bool supports_rht;
  bool supports_sr;
  // Relative RMS error budget on standard-normal data (1x16/1x32/per-tensor default block).
  // Tests hold every format to it; `nvfp4 formats` prints the measured value beside it.
  double gaussian_rel_rms_budget;
  // File naming: the dtype of the stored codes and scales (qtensor files, checkpoints).
  DType code_dtype;
  std::optional<DType> scale_dtype;  // none for FP8 (it stores FP32 scale_inv)
  // An FP32 per-tensor scale derived from max |x| besides the block scales (NVFP4: amax / 2688).
  // (A per-tensor block, FP8's "tensor", is the other way to have an amax-derived scale.)
  bool tensor_scale_from_amax;
  // Storage: bits of one stored block scale (E4M3 / E8M0 bytes, FP8's FP32 scale_inv), and the
  // FP32 values stored once per copy (NVFP4's amax; FP8's amax), for storage_bits_per_value.
  int scale_bits;
  int per_copy_f32;
  // The stored block scales' tensor name within a copy (qtensor files, NVIDIA's golden naming):
  // "s" (E4M3), "e8m0", "scale_inv" (FP32).
  std::string_view scale_tensor;
  int rht_points;  // the RHT along the contraction dimension: 16 (NVFP4, TE), 32 (MXFP4), 0: none
  // The byte-coded block scales (nullptr: FP32 scales): value, and whether a byte is the largest
  // finite scale (saturated) or a subnormal one — for `nvfp4 inspect`'s scale statistics.
  float (*scale_decode)(uint8_t);
  bool (*scale_saturated)(uint8_t);
  bool (*scale_subnormal)(uint8_t);
};

// Stored bits per value of a (rows, cols) tensor in format t with `block`: element bits plus
// the scales amortized over the values they cover (16x16 tiles store their scale once per row,
// as the golden layout does) plus the per-copy FP32 values.
double storage_bits_per_value(const FormatTraits& t, BlockShape block, int64_t rows, int64_t cols);

std::span<const FormatTraits> format_table();
const FormatTraits& format_traits(Format f);
std::optional<Format> parse_format(std::string_view name);
std::string format_names(std::string_view separator = "|");  // "nvfp4|mxfp4|..." for help

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

// Block scales (rows, cols) row-major <-> the "128x4" layout cuBLAS / CUTLASS block-scaled
// GEMMs read (docs/numerics.md §2): padded with zeros to (roundup(rows,128), roundup(cols,4)).
std::vector<uint8_t> swizzle_scales(std::span<const uint8_t> scales, int64_t rows, int64_t cols);
std::vector<uint8_t> unswizzle_scales(std::span<const uint8_t> swizzled, int64_t rows, int64_t cols);

// Error statistics of an approximation `approx` of `ref`.
struct ErrorStats {
  double sqnr_db = 0;      // 10 log10(sum ref^2 / sum (ref - approx)^2); +inf when exact
  double rel_rms = 0;      // sqrt(sum (ref - approx)^2 / sum ref^2)
  double max_abs = 0;      // max |ref - approx|
};
ErrorStats error_stats(std::span<const float> ref, std::span<const float> approx);

}  // namespace nvfp4
