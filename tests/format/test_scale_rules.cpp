// The post-training block-scale rules of src/format/nvfp4.hpp (max, mse, 4/6) against a brute
// force written from the definitions alone: E4M3 and E2M1 values from their bit fields, the
// nearest grid value by search (ties to the even code), squared errors in double. Random blocks
// of several shapes (Gaussian, Laplace, one outlier, tiny values, repeated values) with fixed seeds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "format/codec_test_util.hpp"
#include "format/nvfp4.hpp"

namespace {

using namespace nvfp4::fmt;
using nvfp4::codec_test::bits_of;

// E4M3 (FN) value of a code from its fields: 4 exponent bits (bias 7), 3 mantissa bits.
double e4m3_value(int code) {
  const int e = (code >> 3) & 0xF, m = code & 7;
  const double v = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return (code & 0x80) ? -v : v;
}

// The E2M1 magnitudes of codes 0..7.
constexpr double kGrid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

// Round-to-nearest-even onto the E2M1 grid by search: |v| saturates at 6, ties go to the even code.
double e2m1_rne(double v) {
  const double a = std::min(std::fabs(v), 6.0);
  int best = 0;
  for (int k = 1; k < 8; ++k) {
    const double dk = std::fabs(a - kGrid[k]), db = std::fabs(a - kGrid[best]);
    if (dk < db || (dk == db && k % 2 == 0)) best = k;
  }
  return v < 0 ? -kGrid[best] : kGrid[best];
}

// The error of a block under scale code k, computed from the definitions: the encode factor is
// the FP32 reciprocal of (scale x S_dec), the scaled value is an FP32 product, the decoded value
// is grid x scale x decode in FP32 (left to right), the squares summed in double.
double brute_error(const std::vector<float>& x, int k, const Nvfp4TensorScale& t, float decode) {
  const float s = static_cast<float>(e4m3_value(k));
  const float enc = std::min(1.0f / (s * t.s_dec), FLT_MAX);
  double err = 0;
  for (float v : x) {
    const float q = static_cast<float>(e2m1_rne(static_cast<double>(v * enc)));
    const float xhat = q * s * decode;
    err += (static_cast<double>(v) - xhat) * (static_cast<double>(v) - xhat);
  }
  return err;
}

float block_amax(const std::vector<float>& x) {
  float m = 0;
  for (float v : x) m = std::max(m, std::fabs(v));
  return m;
}

// Blocks of 16 (and a short one) of several kinds, scaled so that their amax spans many binades of
// the tensor amax `tensor_amax`.
std::vector<std::vector<float>> test_blocks(uint64_t seed, float tensor_amax) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::exponential_distribution<float> expo(1.0f);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<std::vector<float>> blocks;
  for (int b = 0; b < 600; ++b) {
    const int kind = b % 5, n = b % 37 == 0 ? 7 : 16;
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) {
      switch (kind) {
        case 0: v = gauss(rng); break;
        case 1: v = (uni(rng) < 0 ? -1.0f : 1.0f) * expo(rng); break;
        case 2: v = 0.05f * gauss(rng); break;
        case 3: v = uni(rng); break;
        default: v = std::round(4 * uni(rng)) / 4; break;  // repeated values, exact ties
      }
    }
    if (kind == 2) x[static_cast<size_t>(b) % x.size()] = 3.0f;  // one outlier
    const float m = block_amax(x);
    if (m == 0) continue;
    // Block amax from 1 (the tensor amax itself) down to 2^-20 of it.
    const float target = tensor_amax * std::ldexp(1.0f, -static_cast<int>(b % 21));
    for (auto& v : x) v = v / m * target;
    blocks.push_back(std::move(x));
  }
  return blocks;
}

TEST(ScaleRules, RangeTwentySixEightyIsTheStandardTensorScale) {
  for (float amax : {0.0f, 1e-30f, 0.37f, 1.0f, 448.0f, 3.4e38f, INFINITY}) {
    const auto a = nvfp4_tensor_scale(amax), b = nvfp4_tensor_scale_for_range(amax, 2688.0f);
    EXPECT_EQ(bits_of(a.s_enc), bits_of(b.s_enc)) << amax;
    EXPECT_EQ(bits_of(a.s_dec), bits_of(b.s_dec)) << amax;
    EXPECT_EQ(bits_of(a.mult), bits_of(b.mult)) << amax;
  }
  // 4/6's range keeps the max rule's block scales at most 256 and the 4-rule's at most 384.
  const auto t = nvfp4_tensor_scale_for_range(5.5f, kNvfp4FourOverSixRange);
  EXPECT_EQ(e4m3_decode(nvfp4_block_scale(5.5f, t)), 256.0f);
  EXPECT_EQ(e4m3_decode(e4m3_encode(5.5f * t.s_enc * 0.25f)), 384.0f);
}

TEST(ScaleRules, ErrorHelperEqualsTheBruteForce) {
  const float amax = 7.25f;
  const auto t = nvfp4_tensor_scale(amax);
  const float decode = amax / 2688.0f;
  for (const auto& x : test_blocks(11, amax)) {
    for (int k : {1, 7, 8, 40, 64, 100, 126}) {
      EXPECT_EQ(nvfp4_block_sq_error(x.data(), static_cast<int>(x.size()), static_cast<uint8_t>(k), t, decode),
                brute_error(x, k, t, decode))
          << "code " << k;
    }
  }
}

TEST(ScaleRules, MseRuleChoosesTheLeastErrorInItsWindow) {
  int improved = 0, blocks = 0;
  double err_max = 0, err_mse = 0;
  for (float amax : {7.25f, 0.013f, 300.0f}) {
    const auto t = nvfp4_tensor_scale_for_range(amax, kNvfp4FourOverSixRange);
    const float decode = amax / kNvfp4FourOverSixRange;
    const auto t_std = nvfp4_tensor_scale(amax);
    const float decode_std = amax / 2688.0f;
    for (const auto& x : test_blocks(static_cast<uint64_t>(amax * 1000), amax)) {
      const int n = static_cast<int>(x.size());
      const float bm = block_amax(x);
      const uint8_t c = nvfp4_block_scale(bm, t);
      const uint8_t got = nvfp4_block_scale_mse(x.data(), n, bm, t, decode);
      ++blocks;
      if (c == 0) {
        EXPECT_EQ(got, 0);
        continue;
      }
      // Brute force over the window: the least error, c on a tie with c, else the lowest code.
      int want = c;
      double best = brute_error(x, c, t, decode);
      for (int k = std::max(1, c - 4); k <= std::min(0x7E, c + 8); ++k) {
        const double e = brute_error(x, k, t, decode);
        if (e < best || (e == best && want != c && k < want)) {
          best = e;
          want = k;
        }
      }
      ASSERT_EQ(got, want) << "block " << blocks << " amax " << amax;
      // Never worse than its own max-rule code, nor than 4/6's choice.
      EXPECT_LE(best, brute_error(x, c, t, decode));
      EXPECT_LE(best, brute_error(x, nvfp4_block_scale_four_over_six(x.data(), n, bm, t, decode), t, decode));
      const double e_max = brute_error(x, nvfp4_block_scale(bm, t_std), t_std, decode_std);
      improved += best < e_max;
      err_max += e_max / (amax * amax);
      err_mse += best / (amax * amax);
    }
  }
  // Against the standard max rule: most blocks and the total error improve (measured: the messages).
  EXPECT_GT(improved, blocks / 2) << improved << " of " << blocks;
  EXPECT_LT(err_mse, 0.7 * err_max) << "mse/max total error " << err_mse / err_max;
  std::printf("mse rule: %d of %d blocks improve on max; total squared error %.3fx max's\n", improved, blocks,
              err_mse / err_max);
}

TEST(ScaleRules, FourOverSixChoosesTheBetterOfSixAndFour) {
  int chose4 = 0, blocks = 0;
  double err_std = 0, err_46 = 0;
  for (float amax : {7.25f, 0.013f, 300.0f}) {
    const auto t = nvfp4_tensor_scale_for_range(amax, kNvfp4FourOverSixRange);
    const float decode = amax / kNvfp4FourOverSixRange;
    const auto t_std = nvfp4_tensor_scale(amax);
    const float decode_std = amax / 2688.0f;
    for (const auto& x : test_blocks(static_cast<uint64_t>(amax * 77), amax)) {
      const int n = static_cast<int>(x.size());
      const float bm = block_amax(x);
      const uint8_t got = nvfp4_block_scale_four_over_six(x.data(), n, bm, t, decode);
      // The two candidates from the definition: the block amax onto 6 and onto 4.
      const int c6 = nvfp4_block_scale(bm, t);
      const int c4 = e4m3_encode(bm * t.s_enc / 4.0f);
      EXPECT_LE(e4m3_value(c6), 256.0);
      EXPECT_LE(e4m3_value(c4), 384.0);
      const double e6 = brute_error(x, c6, t, decode), e4 = brute_error(x, c4, t, decode);
      ASSERT_EQ(got, e4 < e6 ? c4 : c6) << "block " << blocks;
      ++blocks;
      chose4 += got != c6;
      err_46 += std::min(e4, e6) / (amax * amax);
      err_std += brute_error(x, nvfp4_block_scale(bm, t_std), t_std, decode_std) / (amax * amax);
    }
  }
  EXPECT_GT(chose4, blocks / 10) << chose4 << " of " << blocks;
  EXPECT_LT(err_46, 0.95 * err_std) << "4/6 over max total error " << err_46 / err_std;
  std::printf("4/6 rule: %d of %d blocks map onto 4; total squared error %.3fx max's\n", chose4, blocks,
              err_46 / err_std);
}

}  // namespace
