// The format traits table: every number format the project knows, described once.
#include <array>
#include <cmath>
#include <limits>

#include "format/fp8.hpp"
#include "format/nvfp4.hpp"
#include "format/rht.hpp"
#include "format/scalar.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/format.hpp"

namespace nvfp4 {


namespace {

// Block-scale codecs for the table (host function pointers over the format core's decoders).
float e4m3_value(uint8_t b) { return fmt::e4m3_decode(b); }
bool e4m3_saturated(uint8_t b) { return (b & 0x7F) == 0x7E; }                 // 448
bool e4m3_subnormal(uint8_t b) { return (b & 0x78) == 0 && (b & 7) != 0; }    // exponent field 0
float e8m0_value(uint8_t b) { return fmt::e8m0_decode(b); }
bool e8m0_saturated(uint8_t b) { return b == 254; }                            // 2^127
bool e8m0_subnormal(uint8_t b) { return b == 0; }                              // 2^-127, the smallest
float e2m1_value(uint8_t c) { return fmt::e2m1_decode(c); }
float e5m2_value(uint8_t c) { return fmt::e5m2_decode(c); }
float nvfp4_factor(float amax) { return fmt::nvfp4_tensor_decode_factor(amax); }

constexpr std::array<BlockShape, 2> kNvfp4Blocks{{{1, 16}, {16, 16}}};
constexpr std::array<BlockShape, 1> kMxfp4Blocks{{{1, 32}}};
constexpr std::array<BlockShape, 3> kFp8Blocks{{{0, 0}, {1, 128}, {128, 128}}};

// Budgets: measured relative RMS error on N(0, 1) data (`nvfp4 formats`, 2026-11-23) plus
// about 10% headroom for other seeds and shapes.
const std::array<FormatTraits, 5> kFormats{{
    {Format::nvfp4, "nvfp4", "NVIDIA NVFP4: E2M1 values, E4M3 scale per 16 (1x16 or 16x16), FP32 tensor scale", 4,
     BlockShape{1, 16}, kNvfp4Blocks, "E4M3 per block + FP32 per tensor", true, true, true, 0.105, DType::U8,
     DType::F8_E4M3, true, 8, 1, "s", fmt::kRhtSize, e4m3_value, e4m3_saturated, e4m3_subnormal, e2m1_value, nvfp4_factor},
    {Format::mxfp4, "mxfp4", "OCP MXFP4, E8M0 scale per 32 rounded UP (TE reference; NVFP4 paper baseline)", 4,
     BlockShape{1, 32}, kMxfp4Blocks, "E8M0 per block", true, true, true, 0.135, DType::U8, DType::U8, false, 8, 0,
     "e8m0", fmt::kRht32Size, e8m0_value, e8m0_saturated, e8m0_subnormal, e2m1_value, nullptr},
    {Format::mxfp4_ocp, "mxfp4-ocp", "OCP MXFP4, E8M0 scale per 32 = floor(log2 amax) - 2 (OCP v1.0 rule)", 4,
     BlockShape{1, 32}, kMxfp4Blocks, "E8M0 per block", true, true, true, 0.125, DType::U8, DType::U8, false, 8, 0,
     "e8m0", fmt::kRht32Size, e8m0_value, e8m0_saturated, e8m0_subnormal, e2m1_value, nullptr},
    {Format::fp8_e4m3, "fp8-e4m3", "FP8 E4M3 with current scaling, per tensor or 1x128 / 128x128 blocks", 8,
     BlockShape{0, 0}, kFp8Blocks, "FP32 per tensor or block", false, false, false, 0.030, DType::F8_E4M3,
     std::nullopt, false, 32, 1, "scale_inv", 0, nullptr, nullptr, nullptr, e4m3_value, nullptr},
    {Format::fp8_e5m2, "fp8-e5m2", "FP8 E5M2 with current scaling, per tensor or 1x128 / 128x128 blocks", 8,
     BlockShape{0, 0}, kFp8Blocks, "FP32 per tensor or block", false, false, false, 0.060, DType::F8_E5M2,
     std::nullopt, false, 32, 1, "scale_inv", 0, nullptr, nullptr, nullptr, e5m2_value, nullptr},
}};

}  // namespace

std::span<const FormatTraits> format_table() { return kFormats; }

const FormatTraits& format_traits(Format f) {
  for (const auto& t : kFormats) {
    if (t.format == f) return t;
  }
  throw Error("unknown format id " + std::to_string(static_cast<int>(f)));
}

std::optional<Format> parse_format(std::string_view name) {
  for (const auto& t : kFormats) {
    if (t.name == name) return t.format;
  }
  return std::nullopt;
}

std::string format_names(std::string_view separator) {
  std::string s;
  for (const auto& t : kFormats) {
    if (!s.empty()) s += separator;
    s += t.name;
  }
  return s;
}

std::string block_name(BlockShape b) {
  if (b.per_tensor()) return "tensor";
  return std::to_string(b.rows) + "x" + std::to_string(b.cols);
}

std::optional<BlockShape> parse_block(std::string_view s) {
  if (s == "tensor") return BlockShape{0, 0};
  const auto x = s.find('x');
  if (x == std::string_view::npos || x == 0 || x + 1 >= s.size()) return std::nullopt;
  auto parse_int = [](std::string_view t) -> int {
    int v = 0;
    for (char c : t) {
      if (c < '0' || c > '9' || v > 1000000) return -1;
      v = v * 10 + (c - '0');
    }
    return v;
  };
  const int r = parse_int(s.substr(0, x)), c = parse_int(s.substr(x + 1));
  if (r <= 0 || c <= 0) return std::nullopt;
  return BlockShape{r, c};
}

double storage_bits_per_value(const FormatTraits& t, BlockShape block, int64_t rows, int64_t cols) {
  const double n = static_cast<double>(std::max<int64_t>(rows * cols, 1));
  const double per_copy = 32.0 * t.per_copy_f32 / n;
  if (block.per_tensor()) return t.element_bits + per_copy;
  if (t.packed_fp4) return t.element_bits + static_cast<double>(t.scale_bits) / block.cols + per_copy;
  const double blocks = std::ceil(static_cast<double>(rows) / block.rows) * std::ceil(static_cast<double>(cols) / block.cols);
  return t.element_bits + t.scale_bits * blocks / n + per_copy;
}

ErrorStats error_stats(std::span<const float> ref, std::span<const float> approx) {
  if (ref.size() != approx.size()) throw Error("error_stats: reference and approximation differ in size");
  double sig = 0, err = 0, mx = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(ref[i]) - static_cast<double>(approx[i]);
    sig += static_cast<double>(ref[i]) * ref[i];
    err += d * d;
    mx = std::max(mx, std::abs(d));
  }
  ErrorStats s;
  s.max_abs = mx;
  s.rel_rms = sig > 0 ? std::sqrt(err / sig) : (err > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  s.sqnr_db = err > 0 ? 10.0 * std::log10(sig / err) : std::numeric_limits<double>::infinity();
  return s;
}

}  // namespace nvfp4
