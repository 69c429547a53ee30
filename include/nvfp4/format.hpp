// Number formats described once, in a traits table (style.md #2): what each format is, the
// block shapes it takes, how its scales are stored and decoded, what it costs in bits. The CLI,
// the tests and the file readers and writers iterate it and read it instead of switching on
// the format. Implemented in the format core (src/format/traits.cpp); nothing here quantizes
// (nvfp4/quantize.hpp does).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "nvfp4/dtype.hpp"

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
  // The format core's decoders (src/format/), host function pointers: the unscaled value of one
  // element code (E2M1 / E4M3 / E5M2), and the FP32 factor a per-tensor amax contributes
  // (NVFP4: amax / 2688; nullptr: none). A stored value is element * block scale * factor, left
  // to right — nvfp4::dequantize() is exactly that loop over the table.
  float (*element_decode)(uint8_t);
  float (*tensor_decode_factor)(float amax);
};

// Stored bits per value of a (rows, cols) tensor in format t with `block`: element bits plus
// the scales amortized over the values they cover (16x16 tiles store their scale once per row,
// as the golden layout does) plus the per-copy FP32 values.
double storage_bits_per_value(const FormatTraits& t, BlockShape block, int64_t rows, int64_t cols);

std::span<const FormatTraits> format_table();
const FormatTraits& format_traits(Format f);
std::optional<Format> parse_format(std::string_view name);
std::string format_names(std::string_view separator = "|");  // "nvfp4|mxfp4|..." for help

// Error statistics of an approximation `approx` of `ref`.
struct ErrorStats {
  double sqnr_db = 0;      // 10 log10(sum ref^2 / sum (ref - approx)^2); +inf when exact
  double rel_rms = 0;      // sqrt(sum (ref - approx)^2 / sum ref^2)
  double max_abs = 0;      // max |ref - approx|
};
ErrorStats error_stats(std::span<const float> ref, std::span<const float> approx);

}  // namespace nvfp4
