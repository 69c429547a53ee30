// The format traits table: every number format the project knows, described once.
#include <array>
#include <cmath>
#include <limits>

#include "format/rht.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/quantize.hpp"

namespace nvfp4 {

static_assert(kTeRhtSignMask == fmt::kTeRhtSignMask, "public and core RHT sign masks must agree");

namespace {

constexpr std::array<BlockShape, 2> kNvfp4Blocks{{{1, 16}, {16, 16}}};
constexpr std::array<BlockShape, 1> kMxfp4Blocks{{{1, 32}}};
constexpr std::array<BlockShape, 3> kFp8Blocks{{{0, 0}, {1, 128}, {128, 128}}};

// Budgets: measured relative RMS error on N(0, 1) data (`nvfp4 formats`, 2026-11-23) plus
// about 10% headroom for other seeds and shapes.
const std::array<FormatTraits, 5> kFormats{{
    {Format::nvfp4, "nvfp4", "NVIDIA NVFP4: E2M1 values, E4M3 scale per 16 (1x16 or 16x16), FP32 tensor scale", 4,
     BlockShape{1, 16}, kNvfp4Blocks, "E4M3 per block + FP32 per tensor", true, true, true, 0.105, DType::U8,
     DType::F8_E4M3, true},
    {Format::mxfp4, "mxfp4", "OCP MXFP4, E8M0 scale per 32 rounded UP (TE reference; NVFP4 paper baseline)", 4,
     BlockShape{1, 32}, kMxfp4Blocks, "E8M0 per block", true, true, true, 0.135, DType::U8, DType::U8, false},
    {Format::mxfp4_ocp, "mxfp4-ocp", "OCP MXFP4, E8M0 scale per 32 = floor(log2 amax) - 2 (OCP v1.0 rule)", 4,
     BlockShape{1, 32}, kMxfp4Blocks, "E8M0 per block", true, true, true, 0.125, DType::U8, DType::U8, false},
    {Format::fp8_e4m3, "fp8-e4m3", "FP8 E4M3 with current scaling, per tensor or 1x128 / 128x128 blocks", 8,
     BlockShape{0, 0}, kFp8Blocks, "FP32 per tensor or block", false, false, false, 0.030, DType::F8_E4M3,
     std::nullopt, false},
    {Format::fp8_e5m2, "fp8-e5m2", "FP8 E5M2 with current scaling, per tensor or 1x128 / 128x128 blocks", 8,
     BlockShape{0, 0}, kFp8Blocks, "FP32 per tensor or block", false, false, false, 0.060, DType::F8_E5M2,
     std::nullopt, false},
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
