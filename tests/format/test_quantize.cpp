// Tensor-level quantizers: every registered format (iterated from the traits table), shapes,
// layouts, 2D tiles, RHT, stochastic rounding at tensor level, non-finite input, options.
#include <gtest/gtest.h>

#include <bit>

#include <cmath>
#include <cstring>
#include <random>

#include "format/fp8.hpp"
#include "format/mxfp4.hpp"
#include "format/nvfp4.hpp"
#include "format/rht.hpp"
#include "format/swizzle.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/quantize.hpp"
#include "support/test_support.hpp"

namespace {

using nvfp4::BlockShape;
using nvfp4::Format;
using nvfp4::QuantizeOptions;

std::vector<float> gaussian(int64_t n, uint64_t seed, float sigma = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

uint8_t code_at(const nvfp4::QuantizedCopy& c, int64_t r, int64_t k) {
  const uint8_t b = c.codes[(r * c.cols + k) / 2];
  return ((r * c.cols + k) & 1) ? b >> 4 : b & 0xF;
}

// The format core's own decode of element (r, k) of a row-wise copy — what nvfp4::dequantize()
// (one loop over the traits table) must give bit for bit.
float reference_decode(const nvfp4::FormatTraits& t, nvfp4::BlockShape blk, const nvfp4::QuantizedCopy& c, int64_t r,
                       int64_t k) {
  if (t.format == Format::nvfp4) {
    return nvfp4::fmt::nvfp4_decode(code_at(c, r, k), c.scales[r * c.scale_cols + k / 16],
                                    nvfp4::fmt::nvfp4_tensor_decode_factor(c.amax));
  }
  if (t.packed_fp4) return nvfp4::fmt::mxfp4_decode(code_at(c, r, k), c.scales[r * c.scale_cols + k / 32]);
  const float si = blk.per_tensor() ? c.scale_inv[0] : c.scale_inv[(r / blk.rows) * c.scale_cols + k / blk.cols];
  const auto kind = t.format == Format::fp8_e4m3 ? nvfp4::fmt::Fp8Kind::e4m3 : nvfp4::fmt::Fp8Kind::e5m2;
  return nvfp4::fmt::fp8_decode(c.codes[r * c.cols + k], kind) * si;
}

// ---- every format of the traits table ---------------------------------------------------

TEST(Formats, TableIsConsistentAndParsable) {
  ASSERT_GE(nvfp4::format_table().size(), 5u);
  for (const auto& t : nvfp4::format_table()) {
    SCOPED_TRACE(std::string(t.name));
    EXPECT_EQ(nvfp4::parse_format(t.name), t.format);
    EXPECT_EQ(&nvfp4::format_traits(t.format), &t);
    EXPECT_FALSE(t.blocks.empty());
    EXPECT_NE(std::find(t.blocks.begin(), t.blocks.end(), t.default_block), t.blocks.end());
    for (const auto& b : t.blocks) EXPECT_EQ(nvfp4::parse_block(nvfp4::block_name(b)), b);
    EXPECT_GT(t.gaussian_rel_rms_budget, 0.0);
  }
  EXPECT_FALSE(nvfp4::parse_format("nvfp5"));
  EXPECT_FALSE(nvfp4::parse_block("16"));
  EXPECT_FALSE(nvfp4::parse_block("0x16"));
}

// Every format, every block shape it supports: dequantized Gaussian data stays within the
// format's registered error budget, and the error is not implausibly small either (a
// quantizer that copied its input would pass a one-sided test).
TEST(Formats, TheTableCarriesWhatCodeUsedToSwitchOn) {
  // Storage cost, scale naming and codecs, RHT size: read from the table, never re-derived.
  const auto& nv = format_traits(Format::nvfp4);
  const auto& mx = format_traits(Format::mxfp4);
  const auto& e4 = format_traits(Format::fp8_e4m3);
  EXPECT_DOUBLE_EQ(storage_bits_per_value(nv, {1, 16}, 1024, 4096), 4.5 + 32.0 / (1024 * 4096));
  EXPECT_DOUBLE_EQ(storage_bits_per_value(nv, {16, 16}, 1024, 4096), 4.5 + 32.0 / (1024 * 4096));  // per row
  EXPECT_DOUBLE_EQ(storage_bits_per_value(mx, {1, 32}, 64, 64), 4.25);
  EXPECT_DOUBLE_EQ(storage_bits_per_value(e4, {0, 0}, 64, 64), 8.0 + 32.0 / 4096);
  EXPECT_DOUBLE_EQ(storage_bits_per_value(e4, {128, 128}, 256, 200), 8.0 + (32.0 * 4 + 32.0) / (256 * 200));
  EXPECT_EQ(nv.scale_tensor, "s");
  EXPECT_EQ(mx.scale_tensor, "e8m0");
  EXPECT_EQ(e4.scale_tensor, "scale_inv");
  EXPECT_EQ(nv.rht_points, 16);
  EXPECT_EQ(mx.rht_points, 32);
  for (const nvfp4::FormatTraits& t : nvfp4::format_table()) {
    SCOPED_TRACE(std::string(t.name));
    EXPECT_EQ(t.rht_points > 0, t.supports_rht);
    EXPECT_EQ(t.scale_decode != nullptr, t.scale_dtype.has_value());  // byte-coded scales decode
    if (t.scale_decode) {
      EXPECT_TRUE(t.scale_saturated(t.format == Format::nvfp4 ? 0x7E : 254));
      EXPECT_EQ(t.scale_decode(t.format == Format::nvfp4 ? 0x7E : 254), t.format == Format::nvfp4 ? 448.0f : std::ldexp(1.0f, 127));
    }
  }
}

// The decoders in the table are the format core's (GaussianRoundTripWithinBudget checks that
// nvfp4::dequantize(), one loop over the table, gives their per-format decode bit for bit).
TEST(Formats, TableDecodersAreTheFormatCoresAndDequantizeIsTheirProduct) {
  for (int c = 0; c < 256; ++c) {
    const auto b = static_cast<uint8_t>(c);
    if (c < 16) {
      EXPECT_EQ(std::bit_cast<uint32_t>(format_traits(Format::nvfp4).element_decode(b)),
                std::bit_cast<uint32_t>(nvfp4::fmt::e2m1_decode(b)));
    }
    const float e4 = format_traits(Format::fp8_e4m3).element_decode(b), e5 = format_traits(Format::fp8_e5m2).element_decode(b);
    if (!std::isnan(e4)) {
      EXPECT_EQ(e4, nvfp4::fmt::e4m3_decode(b)) << c;
    }
    if (!std::isnan(e5)) {
      EXPECT_EQ(e5, nvfp4::fmt::e5m2_decode(b)) << c;
    }
  }
  EXPECT_EQ(format_traits(Format::nvfp4).tensor_decode_factor(2688.0f), 1.0f);
  EXPECT_EQ(format_traits(Format::mxfp4).tensor_decode_factor, nullptr);
}

// What a format costs a tensor, as `nvfp4 formats` reports it (library entry points).
TEST(Formats, MeasureFormatAndScaleStatistics) {
  const auto x = nvfp4::synthetic_tensor("gaussian", 64 * 256, 3);
  EXPECT_EQ(x, nvfp4::synthetic_tensor("gaussian", 64 * 256, 3));
  EXPECT_NE(x, nvfp4::synthetic_tensor("gaussian", 64 * 256, 4));
  EXPECT_THROW(nvfp4::synthetic_tensor("uniform", 16, 1), nvfp4::Error);
  EXPECT_EQ(nvfp4::synthetic_kinds().size(), 3u);
  QuantizeOptions o;
  const nvfp4::FormatCost c = nvfp4::measure_format(x, 64, 256, o, 2);
  EXPECT_LT(c.error.rel_rms, format_traits(Format::nvfp4).gaussian_rel_rms_budget);
  EXPECT_GT(c.error.rel_rms, 0.02);
  EXPECT_DOUBLE_EQ(c.bits_per_value, 4.5 + 32.0 / (64 * 256));
  EXPECT_GT(c.cpu_gbps, 0.0);
  EXPECT_EQ(nvfp4::measure_format(x, 64, 256, o, 0).cpu_gbps, 0.0);
  o.block = nvfp4::BlockShape{16, 16};
  EXPECT_THROW(nvfp4::measure_format(x, 60, 256, o, 0), nvfp4::Error);  // not a [60, 256] matrix

  // Scale statistics: a block of zeros has a zero scale; the block holding the amax the largest.
  std::vector<float> y(32 * 16, 1.0f);
  for (int i = 0; i < 16; ++i) y[i] = 0.0f;     // block 0: zeros
  for (int i = 16; i < 32; ++i) y[i] = 0.01f;  // block 1: scale 0.01/6 * 2688/1000 = 0.0045, E4M3-subnormal
  y[100] = 1000.0f;
  QuantizeOptions p;
  const auto q = nvfp4::quantize(y, 32, 16, p);
  const nvfp4::ScaleStats s = nvfp4::scale_stats(*q.row, Format::nvfp4);
  EXPECT_EQ(s.count, 32);
  EXPECT_EQ(s.zero, 1);
  EXPECT_EQ(s.saturated, 1);  // the block holding the tensor amax gets the largest scale, 448
  EXPECT_EQ(s.max, 448.0);
  EXPECT_EQ(s.subnormal, 1);
}

TEST(Formats, DequantizeAsInputUndoesTheRhtAndTheTranspose) {
  const auto x = nvfp4::test::randn(64 * 96, 5);
  for (Format f : {Format::nvfp4, Format::mxfp4}) {
    QuantizeOptions o;
    o.format = f;
    o.rowwise = o.columnwise = true;
    o.rht = true;
    const nvfp4::QuantizedTensor q = nvfp4::quantize(x, 64, 96, o);
    const auto row = nvfp4::dequantize_as_input(q, false), col = nvfp4::dequantize_as_input(q, true);
    ASSERT_EQ(col.size(), x.size());
    // Both approximate x in x's layout; the column-wise copy through its inverse transform.
    EXPECT_LT(nvfp4::error_stats(x, col).rel_rms, format_traits(f).gaussian_rel_rms_budget * 1.2);
    EXPECT_LT(nvfp4::error_stats(x, row).rel_rms, format_traits(f).gaussian_rel_rms_budget);
  }
}

TEST(Formats, GaussianRoundTripWithinBudget) {
  const int64_t M = 256, K = 512;
  const auto x = gaussian(M * K, 1);
  for (const auto& t : nvfp4::format_table()) {
    for (const auto& b : t.blocks) {
      SCOPED_TRACE(std::string(t.name) + " " + nvfp4::block_name(b));
      QuantizeOptions o;
      o.format = t.format;
      o.block = b;
      o.columnwise = true;
      const auto q = nvfp4::quantize(x, M, K, o);
      const auto row = nvfp4::dequantize(*q.row, q.options);
      int differ = 0;
      for (int64_t i = 0; i < M * K; ++i) {
        differ += std::bit_cast<uint32_t>(row[i]) != std::bit_cast<uint32_t>(reference_decode(t, b, *q.row, i / K, i % K));
      }
      EXPECT_EQ(differ, 0) << "elements whose decode is not the format core's";
      const auto s = nvfp4::error_stats(x, row);
      EXPECT_LT(s.rel_rms, t.gaussian_rel_rms_budget * (b.rows > 1 ? 1.35 : 1.0));
      EXPECT_GT(s.rel_rms, t.gaussian_rel_rms_budget * 0.25);
      // The column-wise copy represents x^T: same budget.
      const auto col = nvfp4::dequantize(*q.col, q.options);
      std::vector<float> xt(x.size());
      for (int64_t r = 0; r < M; ++r)
        for (int64_t k = 0; k < K; ++k) xt[k * M + r] = x[r * K + k];
      EXPECT_LT(nvfp4::error_stats(xt, col).rel_rms, t.gaussian_rel_rms_budget * (b.rows > 1 ? 1.35 : 1.0));
    }
  }
}

TEST(Formats, ZeroTensorGivesZeroCodesAndDecodesToZero) {
  const std::vector<float> x(64 * 128, 0.0f);
  for (const auto& t : nvfp4::format_table()) {
    SCOPED_TRACE(std::string(t.name));
    QuantizeOptions o;
    o.format = t.format;
    const auto q = nvfp4::quantize(x, 64, 128, o);
    for (uint8_t c : q.row->codes) ASSERT_EQ(c, 0);
    for (float v : nvfp4::dequantize(*q.row, q.options)) ASSERT_EQ(v, 0.0f);
  }
}

TEST(Formats, EmptyTensorIsFine) {
  for (const auto& t : nvfp4::format_table()) {
    QuantizeOptions o;
    o.format = t.format;
    const auto q = nvfp4::quantize({}, 0, 64, o);
    EXPECT_TRUE(q.row->codes.empty());
  }
}

// ---- non-finite input --------------------------------------------------------------------

TEST(NonFinite, DetectedAndLocatedForEveryFormat) {
  const float specials[] = {std::nanf(""), INFINITY, -INFINITY};
  for (const auto& t : nvfp4::format_table()) {
    for (float sv : specials) {
      auto x = gaussian(32 * 64, 3);
      x[5 * 64 + 17] = sv;
      x[30 * 64 + 2] = sv;
      QuantizeOptions o;
      o.format = t.format;
      try {
        nvfp4::quantize(x, 32, 64, o);
        ADD_FAILURE() << t.name << ": non-finite input was quantized";
      } catch (const nvfp4::NonFiniteError& e) {
        EXPECT_EQ(e.first_index(), 5 * 64 + 17);
        EXPECT_EQ(e.count(), 2);
        EXPECT_NE(std::string(e.what()).find("[5, 17]"), std::string::npos) << e.what();
      }
    }
  }
}

// ---- NVFP4 specifics ---------------------------------------------------------------------

TEST(Nvfp4, BlockScaleAndCodesFollowTheSpecByHand) {
  // One block: amax 6 in a tensor of amax 6 -> S_enc = 448, block scale 448 (0x7E),
  // encode factor 1 / (448 * (1/448)) = 1 -> codes are plain E2M1 of the values.
  std::vector<float> x = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  const auto q = nvfp4::quantize(x, 1, 16, QuantizeOptions{});
  EXPECT_EQ(q.row->amax, 6.0f);
  EXPECT_EQ(q.row->scales[0], 0x7E);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(code_at(*q.row, 0, j), j == 8 ? 0 : j) << j;  // -0.0 -> code 0
  // Codes x block scale are exact; the FP32 tensor factor 6/2688 then costs at most an ulp or two.
  const auto exact = nvfp4::dequantize(*q.row, q.options, /*apply_tensor_scale=*/false);
  const auto d = nvfp4::dequantize(*q.row, q.options);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(exact[j], x[j] * 448.0f) << j;
    EXPECT_NEAR(d[j], x[j], 4e-7 * std::abs(x[j])) << j;
  }
}

TEST(Nvfp4, TwoDimensionalTilesShareScalesAndTransposeExactly) {
  const int64_t M = 64, K = 96;
  auto x = gaussian(M * K, 7);
  x[17 * K + 40] = 30.0f;  // an outlier inflates exactly one 16x16 tile
  QuantizeOptions o;
  o.block = BlockShape{16, 16};
  o.columnwise = true;
  const auto q = nvfp4::quantize(x, M, K, o);
  const auto& row = *q.row;
  const auto& col = *q.col;
  EXPECT_EQ(row.amax, col.amax);
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t b = 0; b < K / 16; ++b) {
      EXPECT_EQ(row.scales[r * (K / 16) + b], row.scales[(r / 16 * 16) * (K / 16) + b]);  // replicated
      EXPECT_EQ(row.scales[r * (K / 16) + b], col.scales[(b * 16) * (M / 16) + r / 16]);  // same tile
    }
    for (int64_t k = 0; k < K; ++k) ASSERT_EQ(code_at(row, r, k), code_at(col, k, r)) << r << "," << k;
  }
  // 1x16 blocks do NOT have this property on the same data (the check above can fail).
  o.block = BlockShape{1, 16};
  const auto q1 = nvfp4::quantize(x, M, K, o);
  int differ = 0;
  for (int64_t r = 0; r < M; ++r)
    for (int64_t k = 0; k < K; ++k) differ += code_at(*q1.row, r, k) != code_at(*q1.col, k, r);
  EXPECT_GT(differ, 0);
}

TEST(Nvfp4, CodesTimesBlockScaleAreExactInBf16) {
  const auto x = gaussian(128 * 256, 11, 3.0f);
  const auto q = nvfp4::quantize(x, 128, 256, QuantizeOptions{});
  for (float v : nvfp4::dequantize(*q.row, q.options, /*apply_tensor_scale=*/false)) {
    ASSERT_EQ(nvfp4::fmt::bf16_round(v), v);
  }
}

TEST(Nvfp4, RhtCopyIsTheTransformOfTheTransposeAndInverts) {
  const int64_t M = 64, K = 48;
  auto x = gaussian(M * K, 5);
  for (auto& v : x) v = nvfp4::fmt::bf16_round(v);
  QuantizeOptions o;
  o.columnwise = true;
  o.rht = true;
  const auto q = nvfp4::quantize(x, M, K, o, nvfp4::DType::BF16);
  ASSERT_EQ(q.col_rht_input.size(), x.size());
  // Undo: H is orthogonal and symmetric up to the sign diagonal: x = (y * H16 / 4) * diag(s).
  double max_err = 0;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t m0 = 0; m0 < M; m0 += 16) {
      float y[16];
      for (int j = 0; j < 16; ++j) y[j] = q.col_rht_input[k * M + m0 + j];
      nvfp4::fmt::rht16(y, 0);  // y * H16 / 4
      for (int j = 0; j < 16; ++j) {
        const float back = ((nvfp4::kTeRhtSignMask >> j) & 1) ? -y[j] : y[j];
        max_err = std::max(max_err, std::abs(static_cast<double>(back) - x[(m0 + j) * K + k]));
      }
    }
  }
  EXPECT_LT(max_err, 0.05);  // BF16 rounding of the transformed values only
  EXPECT_GT(max_err, 0.0);   // ... which is not nothing
  // Its amax is the amax of the transformed input, not of x.
  float amax = 0;
  for (float v : q.col_rht_input) amax = std::max(amax, std::abs(v));
  EXPECT_EQ(q.col->amax, amax);
  EXPECT_NE(q.col->amax, q.row->amax);
}

TEST(Mxfp4, RhtCopyIsTheColumnCopyOfThe32PointTransformedInput) {
  const int64_t M = 96, K = 40;
  auto x = gaussian(M * K, 6);
  for (auto& v : x) v = nvfp4::fmt::bf16_round(v);
  for (auto fmt_ : {nvfp4::Format::mxfp4, nvfp4::Format::mxfp4_ocp}) {
    QuantizeOptions o;
    o.format = fmt_;
    o.rowwise = false;
    o.columnwise = true;
    o.rht = true;
    o.rounding = nvfp4::Rounding::stochastic;
    o.sr_key = {5, 6, 7, 8};
    const auto q = nvfp4::quantize(x, M, K, o, nvfp4::DType::BF16);
    // The same, by hand: transform each 32-row segment of each column, round to BF16, then the
    // plain column-wise quantization (same key) of that tensor.
    std::vector<float> y = x;
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t m0 = 0; m0 < M; m0 += 32) {
        float v[32];
        for (int j = 0; j < 32; ++j) v[j] = x[(m0 + j) * K + k];
        nvfp4::fmt::rht32(v, nvfp4::fmt::kRht32SignMask);
        for (int j = 0; j < 32; ++j) y[(m0 + j) * K + k] = nvfp4::fmt::bf16_round(v[j]);
      }
    }
    QuantizeOptions plain = o;
    plain.rht = false;
    const auto p = nvfp4::quantize(y, M, K, plain, nvfp4::DType::BF16);
    EXPECT_EQ(q.col->codes, p.col->codes);
    EXPECT_EQ(q.col->scales, p.col->scales);
    // And it differs from quantizing x itself.
    EXPECT_NE(q.col->codes, nvfp4::quantize(x, M, K, plain, nvfp4::DType::BF16).col->codes);
  }
  // Custom signs are the 16-point transform's only.
  QuantizeOptions bad;
  bad.format = nvfp4::Format::mxfp4;
  bad.columnwise = true;
  bad.rht = true;
  bad.rht_sign_mask = 0;
  const std::string e = nvfp4::test::error_of([&] { nvfp4::quantize(x, M, K, bad); });
  EXPECT_NE(e.find("32-point transform has fixed signs"), std::string::npos) << e;
}

// ---- stochastic rounding at tensor level -------------------------------------------------

TEST(StochasticRounding, DeterministicPerKeyAndNeighboursOfRne) {
  const int64_t M = 64, K = 128;
  const auto x = gaussian(M * K, 9);
  QuantizeOptions rne;
  QuantizeOptions sr;
  sr.rounding = nvfp4::Rounding::stochastic;
  sr.sr_key = {1234, 7, 3, 2};
  const auto a = nvfp4::quantize(x, M, K, sr);
  const auto b = nvfp4::quantize(x, M, K, sr);
  EXPECT_EQ(a.row->codes, b.row->codes);
  EXPECT_EQ(a.row->scales, nvfp4::quantize(x, M, K, rne).row->scales);  // scales as for RNE
  for (auto change : {0, 1, 2, 3}) {
    auto o = sr;
    if (change == 0) o.sr_key.seed++;
    if (change == 1) o.sr_key.step++;
    if (change == 2) o.sr_key.layer++;
    if (change == 3) o.sr_key.role++;
    EXPECT_NE(nvfp4::quantize(x, M, K, o).row->codes, a.row->codes) << "key field " << change;
  }
  // Each SR value is the floor or ceiling grid neighbour of the scaled input.
  const auto ts = nvfp4::fmt::nvfp4_tensor_scale(a.row->amax);
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t k = 0; k < K; ++k) {
      const float e = nvfp4::fmt::nvfp4_block_encode_factor(a.row->scales[r * (K / 16) + k / 16], ts);
      const float v = nvfp4::fmt::nvfp4_scaled(x[r * K + k], e);
      const float got = nvfp4::fmt::e2m1_decode(code_at(*a.row, r, k));
      const float mag = std::abs(v);
      const float lo = nvfp4::fmt::e2m1_decode(static_cast<uint8_t>(nvfp4::fmt::e2m1_magnitude_code_floor(mag)));
      const float hi = lo == 6.0f ? 6.0f : nvfp4::fmt::e2m1_decode(static_cast<uint8_t>(nvfp4::fmt::e2m1_magnitude_code_floor(mag) + 1));
      ASSERT_TRUE(std::abs(got) == lo || std::abs(got) == hi) << v << " -> " << got;
    }
  }
}

TEST(StochasticRounding, UnbiasedOverSeedsUnlikeRne) {
  // Every block holds one 6.0, which pins its scale so that the encode factor is exactly 1;
  // the other values are 1.3, between the grid points 1 and 1.5. RNE always gives 1.5,
  // SR's mean over draws converges on 1.3.
  const int64_t M = 16, K = 64;
  std::vector<float> x(M * K, 1.3f);
  for (int64_t i = 0; i < M * K; i += 16) x[i] = 6.0f;
  QuantizeOptions o;
  o.rounding = nvfp4::Rounding::stochastic;
  double sum_sr = 0, sum_rne = 0;
  int n = 0;
  const auto rne = nvfp4::dequantize(*nvfp4::quantize(x, M, K, QuantizeOptions{}).row, QuantizeOptions{});
  for (uint64_t seed = 0; seed < 64; ++seed) {
    o.sr_key.seed = seed;
    const auto d = nvfp4::dequantize(*nvfp4::quantize(x, M, K, o).row, o);
    for (size_t i = 0; i < d.size(); ++i) {
      if (i % 16 == 0) continue;  // the pins
      sum_sr += d[i];
      sum_rne += rne[i];
      ++n;
    }
  }
  EXPECT_NEAR(sum_sr / n, 1.3, 0.01);
  EXPECT_NEAR(sum_rne / n, 1.5, 1e-6);  // RNE is biased here (1.3 -> 1.5)
}

TEST(StochasticRounding, ColumnCopyUsesItsOwnStream) {
  const int64_t M = 32, K = 32;
  // Symmetric (x == x^T), so only the random stream can make the copies differ; the 6.0s
  // pin every block's scale so that 0.7 lands between grid points.
  std::vector<float> x(M * K, 0.7f);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < K; ++j)
      if (i % 16 == j % 16) x[i * K + j] = 6.0f;
  QuantizeOptions o;
  o.rounding = nvfp4::Rounding::stochastic;
  o.columnwise = true;
  const auto q = nvfp4::quantize(x, M, K, o);
  EXPECT_NE(q.row->codes, q.col->codes);
}

// ---- MXFP4 and FP8 specifics -------------------------------------------------------------

TEST(Mxfp4, ScaleRulesDifferAsSpecified) {
  // Block amax 5: round-up rule e = ceil(log2(5/6)) = 0 -> 5 stays 5 -> code of 5 (RNE: 4);
  // OCP rule e = floor(log2 5) - 2 = 0 as well. Block amax 7: round-up e = 1 (7/2 = 3.5 -> 4),
  // OCP e = 0 -> 7 saturates to 6.
  std::vector<float> x(32, 0.0f);
  x[0] = 7.0f;
  QuantizeOptions up, ocp;
  up.format = Format::mxfp4;
  ocp.format = Format::mxfp4_ocp;
  const auto a = nvfp4::quantize(x, 1, 32, up);
  const auto b = nvfp4::quantize(x, 1, 32, ocp);
  EXPECT_EQ(a.row->scales[0], 128);
  EXPECT_EQ(b.row->scales[0], 127);
  EXPECT_EQ(nvfp4::dequantize(*a.row, up)[0], 8.0f);
  EXPECT_EQ(nvfp4::dequantize(*b.row, ocp)[0], 6.0f);
}

TEST(Fp8, PerTensorAndBlockScalingDecodeWithinHalfUlp) {
  const int64_t M = 256, K = 384;  // 384 = 3 blocks of 128; M not a multiple of 128 below
  auto x = gaussian(M * K, 21);
  x[3] = 100.0f;
  for (Format f : {Format::fp8_e4m3, Format::fp8_e5m2}) {
    for (BlockShape b : {BlockShape{0, 0}, BlockShape{1, 128}, BlockShape{128, 128}}) {
      QuantizeOptions o;
      o.format = f;
      o.block = b;
      const auto q = nvfp4::quantize(x, M, K, o);
      const auto d = nvfp4::dequantize(*q.row, q.options);
      const double rel = f == Format::fp8_e4m3 ? 1.0 / 16 : 1.0 / 8;  // half ulp, relative
      for (size_t i = 0; i < x.size(); ++i) {
        const int64_t r = static_cast<int64_t>(i) / K, c = static_cast<int64_t>(i) % K;
        const float si = b.per_tensor() ? q.row->scale_inv[0] : q.row->scale_inv[(r / b.rows) * q.row->scale_cols + c / b.cols];
        // Normal range: relative half-ulp; subnormal range: half the smallest step.
        const double tol = std::max(rel * std::abs(x[i]), (f == Format::fp8_e4m3 ? 0x1p-10 : 0x1p-17) * si);
        ASSERT_LE(std::abs(d[i] - x[i]), tol * 1.0001) << nvfp4::format_traits(f).name << " " << nvfp4::block_name(b);
      }
      // Block scales localise the outlier: 1x128 blocks away from x[3] are finer.
      if (b == BlockShape{1, 128}) {
        EXPECT_LT(q.row->scale_inv[5], q.row->scale_inv[0]);
      }
    }
  }
}

// ---- options and shapes ------------------------------------------------------------------

TEST(Options, BadCombinationsAreExplained) {
  const auto x = gaussian(48 * 40, 2);
  auto expect_error = [&](QuantizeOptions o, int64_t M, int64_t K, const std::string& needle) {
    try {
      nvfp4::quantize(std::span<const float>(x.data(), M * K), M, K, o);
      ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
    } catch (const nvfp4::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(QuantizeOptions{}, 48, 40, "not a multiple of 16");  // K = 40
  QuantizeOptions o;
  o.columnwise = true;
  expect_error(o, 40, 48, "column-wise");  // M = 40
  o = {};
  o.block = BlockShape{1, 32};
  expect_error(o, 16, 64, "--block 1x32");
  o = {};
  o.rht = true;
  expect_error(o, 16, 64, "--columnwise");
  o.columnwise = true;
  o.block = BlockShape{16, 16};
  expect_error(o, 16, 64, "16x16");
  o = {};
  o.format = Format::fp8_e4m3;
  o.rounding = nvfp4::Rounding::stochastic;
  expect_error(o, 16, 64, "--sr");
  o = {};
  o.format = Format::fp8_e4m3;  // RHT is an FP4 technique (16-point NVFP4, 32-point MXFP4)
  o.rht = true;
  o.columnwise = true;
  expect_error(o, 32, 64, "--rht");
  o = {};
  o.rowwise = false;
  expect_error(o, 16, 64, "nothing to quantize");
}

// ---- GPU scale layout ---------------------------------------------------------------------

TEST(Swizzle, MatchesTheDocumentedFormulaAndIsABijection) {
  for (auto [R, C] : {std::pair<int64_t, int64_t>{128, 4}, {256, 12}, {130, 5}, {1, 1}, {300, 33}}) {
    const int64_t bytes = nvfp4::fmt::swizzled_scale_bytes(R, C);
    std::vector<int> seen(static_cast<size_t>(bytes), 0);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = nvfp4::fmt::swizzled_scale_offset(r, c, C);
        ASSERT_GE(off, 0);
        ASSERT_LT(off, bytes);
        ++seen[off];
      }
    for (int v : seen) ASSERT_LE(v, 1);
  }
  // Hand-computed: (r=33, c=5) in a [256, 12] matrix: tile (0, 1) -> 512, + (33%32)*16 = 16,
  // + ((33%128)/32)*4 = 4, + 5%4 = 1 -> 533.
  EXPECT_EQ(nvfp4::fmt::swizzled_scale_offset(33, 5, 12), 533);
  EXPECT_EQ(nvfp4::fmt::swizzled_scale_offset(128, 0, 12), 3 * 512);
}

TEST(Swizzle, RoundTripsRealScalesAndPadsWithZeros) {
  for (auto [M, K] : {std::pair<int64_t, int64_t>{256, 512}, {100, 48}, {16, 16}, {130, 80}}) {
    const auto x = gaussian(M * K, 17);
    const auto q = nvfp4::quantize(x, M, K, QuantizeOptions{});
    const auto& s = q.row->scales;
    const auto sw = nvfp4::swizzle_scales(s, M, K / 16);
    ASSERT_EQ(static_cast<int64_t>(sw.size()), nvfp4::fmt::swizzled_scale_bytes(M, K / 16));
    EXPECT_EQ(nvfp4::unswizzle_scales(sw, M, K / 16), s);
    // Every byte outside the image of the real (r, c) is padding and zero.
    std::vector<bool> used(sw.size(), false);
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < K / 16; ++c) used[nvfp4::fmt::swizzled_scale_offset(r, c, K / 16)] = true;
    for (size_t i = 0; i < sw.size(); ++i) {
      if (!used[i]) {
        ASSERT_EQ(sw[i], 0) << i;
      }
    }
    // The layout really moves bytes (a copy would pass the round trip).
    if (M >= 64) {
      EXPECT_NE(std::vector<uint8_t>(sw.begin(), sw.begin() + 64), std::vector<uint8_t>(s.begin(), s.begin() + 64));
    }
  }
  EXPECT_THROW(nvfp4::unswizzle_scales(std::vector<uint8_t>(10), 4, 4), nvfp4::Error);
}

}  // namespace
