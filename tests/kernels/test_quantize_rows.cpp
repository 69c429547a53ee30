// CPU NVFP4 row fake quantization (src/kernels/cpu/quantize_rows.cpp) against the format's own
// quantizer, bit for bit: each row equals nvfp4::quantize of that (1, K) row, dequantized without
// the tensor scale, and row_factor is the tensor factor (include/nvfp4/quantize.hpp). Then the
// flags and the fallback: NaN/Inf rows, blocks a calibrated amax makes saturate.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "kernels/test_cpu_ops_support.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/format.hpp"
#include "nvfp4/quantize.hpp"
#include "support/test_support.hpp"

namespace {

using namespace cpu_ops_test;
using nvfp4::test::error_of;

constexpr float kInf = std::numeric_limits<float>::infinity();

// What the format says for one row x (K values) quantized as a (1, K) NVFP4 tensor whose amax
// is `amax` (0: the row's own): the values without the tensor factor, with it, and the factor.
// A given amax above the row's is made the tensor's by one extra block holding it (blocks are
// quantized independently once the tensor scale is fixed).
struct FormatRow {
  Vf unscaled, scaled;
  float factor;
};
FormatRow format_row(const Vf& x, float amax) {
  Vf t = x;
  if (amax > 0.0f) {
    t.push_back(amax);
    t.resize(x.size() + 16, 0.0f);
  }
  nvfp4::QuantizeOptions opts;
  opts.format = nvfp4::Format::nvfp4;
  const auto q = nvfp4::quantize(t, 1, static_cast<int64_t>(t.size()), opts);
  FormatRow r;
  r.unscaled = nvfp4::dequantize(*q.row, q.options, /*apply_tensor_scale=*/false);
  r.scaled = nvfp4::dequantize(*q.row, q.options, /*apply_tensor_scale=*/true);
  r.unscaled.resize(x.size());
  r.scaled.resize(x.size());
  r.factor = nvfp4::format_traits(nvfp4::Format::nvfp4).tensor_decode_factor(q.row->amax);
  return r;
}

struct RowsOut {
  Vf out, factor;
  std::vector<uint8_t> flags;
};
RowsOut quantize_rows(const Vf& in, int64_t N, int64_t K, const nvfp4::fmt::Nvfp4InputScale& input, bool fallback) {
  RowsOut r{Vf(in.size(), -1.0f), Vf(N, -1.0f), std::vector<uint8_t>(N, 0xEE)};
  cpu::nvfp4_quantize_rows(r.out.data(), r.factor.data(), r.flags.data(), in.data(), N, K, input, fallback);
  return r;
}
RowsOut quantize_rows(const Vf& in, int64_t N, int64_t K, float input_amax, bool fallback) {
  return quantize_rows(in, N, K, nvfp4::fmt::Nvfp4InputScale{input_amax}, fallback);
}

Vf row_of(const Vf& x, int64_t n, int64_t K) { return Vf(x.begin() + n * K, x.begin() + (n + 1) * K); }

// Rows of different character: N(0, 1); heavy-tailed with a few outliers 100x larger; all zeros;
// tiny values (block scales underflow to E4M3 subnormals and zero); huge values.
Vf test_rows(int64_t N, int64_t K, uint64_t seed) {
  Vf x = randn(N * K, seed);
  std::mt19937_64 rng(seed + 1);
  for (int64_t n = 0; n < N; ++n) {
    float* r = x.data() + n * K;
    switch (n % 5) {
      case 1:
        for (int i = 0; i < 3; ++i) r[rng() % K] *= 100.0f;
        break;
      case 2:
        std::fill(r, r + K, 0.0f);
        break;
      case 3:
        for (int64_t k = 0; k < K; ++k) r[k] *= (k % 32 < 16) ? 1e-30f : 1.0f;
        break;
      case 4:
        for (int64_t k = 0; k < K; ++k) r[k] *= 1e30f;
        break;
      default:
        break;
    }
  }
  return x;
}

TEST(CpuOpsQuantizeRows, EqualsTheFormatQuantizerBitForBit) {
  for (const int64_t K : {int64_t{16}, int64_t{80}, int64_t{1024}}) {
    constexpr int64_t N2 = 10;
    SCOPED_TRACE("K=" + std::to_string(K));
    const Vf x = test_rows(N2, K, 130 + K);
    for (const bool fallback : {false, true}) {
      const RowsOut r = quantize_rows(x, N2, K, 0.0f, fallback);
      for (int64_t n = 0; n < N2; ++n) {
        SCOPED_TRACE("row " + std::to_string(n));
        const FormatRow f = format_row(row_of(x, n, K), 0.0f);
        EXPECT_TRUE(same_bits(row_of(r.out, n, K), f.unscaled));
        EXPECT_EQ(std::bit_cast<uint32_t>(r.factor[n]), std::bit_cast<uint32_t>(f.factor));
        Vf scaled = row_of(r.out, n, K);
        for (auto& v : scaled) v *= r.factor[n];
        EXPECT_TRUE(same_bits(scaled, f.scaled)) << "out x row_factor is the dequantized row";
        EXPECT_EQ(r.flags[n], 0);
      }
    }
  }
  // not trivially equal: the quantized row differs from the input
  const Vf x = test_rows(1, 64, 7);
  EXPECT_FALSE(same_bits(quantize_rows(x, 1, 64, 0.0f, false).out, x));
}

// A calibrated amax at or above every row's: no flags, each row quantized with that amax.
TEST(CpuOpsQuantizeRows, GivenAmaxIsTheTensorAmax) {
  constexpr int64_t N2 = 6, K = 96;
  const Vf x = randn(N2 * K, 140, 2.0f);
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  for (const float given : {amax, 3.0f * amax}) {
    const RowsOut r = quantize_rows(x, N2, K, given, true);
    for (int64_t n = 0; n < N2; ++n) {
      const FormatRow f = format_row(row_of(x, n, K), given);
      EXPECT_TRUE(same_bits(row_of(r.out, n, K), f.unscaled)) << "row " << n;
      EXPECT_EQ(r.factor[n], given / 2688.0f);
      EXPECT_EQ(r.factor[n], f.factor);
      EXPECT_EQ(r.flags[n], 0);
    }
  }
}

// NaN and Inf rows are flagged (nvfp4::quantize refuses them); with fallback they pass through
// with factor 1, without it they become NaN. The other rows are not affected.
TEST(CpuOpsQuantizeRows, NonFiniteRowsAreFlagged) {
  constexpr int64_t N2 = 5, K = 48;
  const Vf clean = randn(N2 * K, 150);
  Vf x = clean;
  x[1 * K + 17] = std::numeric_limits<float>::quiet_NaN();
  x[3 * K + 40] = -kInf;
  x[4 * K + 0] = kInf;
  EXPECT_THROW(nvfp4::quantize(row_of(x, 1, K), 1, K, {}), nvfp4::NonFiniteError);
  for (const float given : {0.0f, 1000.0f}) {
    const RowsOut fb = quantize_rows(x, N2, K, given, true), nofb = quantize_rows(x, N2, K, given, false);
    const RowsOut ref_given = quantize_rows(clean, N2, K, given, false);
    for (int64_t n = 0; n < N2; ++n) {
      SCOPED_TRACE("row " + std::to_string(n) + " input_amax " + std::to_string(given));
      const bool bad = n == 1 || n == 3 || n == 4;
      EXPECT_EQ(fb.flags[n], bad ? cpu::kRowNonFinite : 0);
      EXPECT_EQ(nofb.flags[n], fb.flags[n]);
      if (bad) {
        EXPECT_TRUE(same_bits(row_of(fb.out, n, K), row_of(x, n, K)));
        EXPECT_EQ(fb.factor[n], 1.0f);
        for (float v : row_of(nofb.out, n, K)) EXPECT_TRUE(std::isnan(v));
        EXPECT_EQ(nofb.factor[n], 1.0f);
      } else {
        EXPECT_TRUE(same_bits(row_of(fb.out, n, K), row_of(ref_given.out, n, K)));
        EXPECT_TRUE(same_bits(row_of(nofb.out, n, K), row_of(ref_given.out, n, K)));
        EXPECT_EQ(fb.factor[n], ref_given.factor[n]);
      }
    }
  }
}

// A calibrated amax below a row's largest value: that row is flagged (its block scale would
// saturate); with fallback it passes through, without it the block clips at 6 x 448 = 2688 (in
// units of the tensor factor) while the row's other blocks are quantized as usual.
TEST(CpuOpsQuantizeRows, SaturatingBlockIsFlagged) {
  constexpr int64_t N2 = 3, K = 64;
  Vf x = randn(N2 * K, 160);
  for (auto& v : x) v = std::clamp(v, -3.0f, 3.0f);
  const float given = 4.0f;
  x[1 * K + 37] = -9.0f;  // row 1, block 2: above the calibrated amax
  const RowsOut fb = quantize_rows(x, N2, K, given, true), nofb = quantize_rows(x, N2, K, given, false);
  for (int64_t n = 0; n < N2; ++n) {
    SCOPED_TRACE("row " + std::to_string(n));
    EXPECT_EQ(fb.flags[n], n == 1 ? cpu::kRowSaturated : 0);
    EXPECT_EQ(nofb.flags[n], fb.flags[n]);
  }
  EXPECT_TRUE(same_bits(row_of(fb.out, 1, K), row_of(x, 1, K)));
  EXPECT_EQ(fb.factor[1], 1.0f);
  // without fallback: the other blocks as the format quantizes them with that amax ...
  Vf others = row_of(x, 1, K);
  std::fill(others.begin() + 32, others.begin() + 48, 0.0f);
  const FormatRow f = format_row(others, given);
  for (int64_t k = 0; k < K; ++k) {
    if (k >= 32 && k < 48) continue;
    EXPECT_EQ(std::bit_cast<uint32_t>(nofb.out[K + k]), std::bit_cast<uint32_t>(f.unscaled[k])) << k;
  }
  // ... and the saturated block clipped: its largest value at -2688, none beyond
  EXPECT_EQ(nofb.out[K + 37], -2688.0f);
  for (int64_t k = 32; k < 48; ++k) EXPECT_LE(std::fabs(nofb.out[K + k]), 2688.0f);
  EXPECT_EQ(nofb.factor[1], given / 2688.0f);
  // rows 0 and 2 are the unflagged rows of the same call, with fallback or not
  for (const int64_t n : {int64_t{0}, int64_t{2}})
    EXPECT_TRUE(same_bits(row_of(nofb.out, n, K), format_row(row_of(x, n, K), given).unscaled)) << n;
}

TEST(CpuOpsQuantizeRows, InPlaceNullFlagsAndErrors) {
  constexpr int64_t N2 = 4, K = 32;
  const Vf x = test_rows(N2, K, 170);
  const RowsOut r = quantize_rows(x, N2, K, 0.0f, false);
  Vf inplace = x, factor(N2);
  cpu::nvfp4_quantize_rows(inplace.data(), factor.data(), nullptr, inplace.data(), N2, K, {}, false);
  EXPECT_TRUE(same_bits(inplace, r.out));
  EXPECT_TRUE(same_bits(factor, r.factor));
  Vf out(48);
  EXPECT_EQ(error_of([&] {
              cpu::nvfp4_quantize_rows(out.data(), factor.data(), nullptr, out.data(), 2, 24, {}, true);
            }),
            "cpu::nvfp4_quantize_rows: K = 24 is not a multiple of 16, the NVFP4 block; pad the rows or keep this "
            "GEMM's input in BF16");
  using IS = nvfp4::fmt::Nvfp4InputScale;
  for (const float bad : {-1.0f, kInf, std::numeric_limits<float>::quiet_NaN()}) {
    for (const IS in : {IS{bad}, IS{0.0f, bad, 1.0f}, IS{0.0f, 1.0f, bad}})
      EXPECT_THROW(cpu::nvfp4_quantize_rows(out.data(), factor.data(), nullptr, out.data(), 1, 16, in, true),
                   nvfp4::Error);
  }
  EXPECT_EQ(error_of([&] {
              cpu::nvfp4_quantize_rows(out.data(), factor.data(), nullptr, out.data(), 1, 16, IS{0.0f, 2.0f, 0.0f}, true);
            }),
            "cpu::nvfp4_quantize_rows: the input scale (amax 0.000000, encode 2.000000, decode 0.000000): stored "
            "factors come as a pair (encode and decode)");
  EXPECT_THROW(cpu::nvfp4_quantize_rows(out.data(), factor.data(), nullptr, out.data(), 1, 16, IS{1.0f, 2.0f, 0.5f}, true),
               nvfp4::Error);
}

// A checkpoint's stored factors (encode, decode): with encode = 2688 / amax and decode =
// amax / 2688 — the factors nvfp4_tensor_scale(amax) derives — every row equals the calibrated-amax
// quantization bit for bit; with another encode the block scales follow it (checked against the
// steps of src/format/nvfp4.hpp written out here), the output factor is the stored decode, and a
// row saturates when a block amax x encode / 6 passes 464 (E4M3 would round it to 480), not for
// the row holding the amax itself (its scale may land a rounding above 448).
TEST(CpuOpsQuantizeRows, StoredFactorsAreTheTensorScale) {
  using IS = nvfp4::fmt::Nvfp4InputScale;
  constexpr int64_t N2 = 6, K = 96;
  const Vf x = randn(N2 * K, 180, 2.0f);
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  const RowsOut calibrated = quantize_rows(x, N2, K, amax, true);
  const RowsOut stored = quantize_rows(x, N2, K, IS{0.0f, 2688.0f / amax, amax / 2688.0f}, true);
  EXPECT_TRUE(same_bits(stored.out, calibrated.out));
  EXPECT_TRUE(same_bits(stored.factor, calibrated.factor));
  EXPECT_EQ(stored.flags, calibrated.flags);

  // ModelOpt's reading of input_scale = amax / 2688: encode = 1 / input_scale, which need not
  // be 2688 / amax in FP32; the blocks written out from the definitions.
  const float decode = amax / 2688.0f, encode = 1.0f / decode;
  const RowsOut r = quantize_rows(x, N2, K, IS{0.0f, encode, decode}, false);
  const float inv6 = 1.0f / 6.0f, mult = encode * inv6, s_dec = 1.0f / encode;
  for (int64_t n = 0; n < N2; ++n) {
    EXPECT_EQ(r.factor[n], decode);
    EXPECT_EQ(r.flags[n], 0);
    for (int64_t b = 0; b < K; b += 16) {
      float bamax = 0.0f;
      for (int64_t j = 0; j < 16; ++j) bamax = std::max(bamax, std::fabs(x[n * K + b + j]));
      const float s = nvfp4::fmt::e4m3_decode(nvfp4::fmt::e4m3_encode(bamax * mult));
      const float e = 1.0f / (s * s_dec);
      for (int64_t j = 0; j < 16; ++j) {
        const float v = std::clamp(x[n * K + b + j] * e, -6.0f, 6.0f);
        const float want = nvfp4::fmt::e2m1_decode(nvfp4::fmt::e2m1_encode_rne(v)) * s;
        EXPECT_EQ(std::bit_cast<uint32_t>(r.out[n * K + b + j]), std::bit_cast<uint32_t>(want)) << n << " " << b + j;
      }
    }
  }
  // A value 4x the calibrated amax: its row's block scale would round to 480 (> 464), flagged.
  Vf y = x;
  y[2 * K + 5] = 4.0f * amax;
  const RowsOut sat = quantize_rows(y, N2, K, IS{0.0f, encode, decode}, true);
  for (int64_t n = 0; n < N2; ++n) EXPECT_EQ(sat.flags[n], n == 2 ? cpu::kRowSaturated : 0) << n;
  EXPECT_TRUE(same_bits(row_of(sat.out, 2, K), row_of(y, 2, K)));
}

}  // namespace
