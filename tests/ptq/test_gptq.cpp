// PTQ weight quantization (src/ptq/gptq.cpp): round to nearest under each scale rule against the
// format core's quantizer, and GPTQ against (a) round to nearest when the Hessian is the identity,
// (b) a textbook FP64 implementation of the optimal-brain-quantization update that re-inverts the
// Hessian column by column (no Cholesky), and (c) the layer output error it exists to lower.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "format/nvfp4.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/ptq.hpp"
#include "nvfp4/quantize.hpp"
#include "support/test_support.hpp"

namespace {

using nvfp4::ptq::GptqOptions;
using nvfp4::ptq::Nvfp4Weight;
using nvfp4::ptq::ScaleRule;
constexpr ScaleRule kRules[] = {ScaleRule::max, ScaleRule::mse, ScaleRule::four_over_six};

using nvfp4::test::error_of;
using nvfp4::test::randn;

// Calibration inputs with correlated features (a random mixing of independent ones, a few
// channels much larger: what makes GPTQ matter), (N, K) row-major, and their Hessian X^T X.
std::vector<float> correlated_inputs(int64_t N, int64_t K, uint64_t seed) {
  const auto z = randn(static_cast<size_t>(N * K), seed), a = randn(static_cast<size_t>(K * K), seed + 1, 0.3f);
  std::vector<float> x(static_cast<size_t>(N * K));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      double s = z[n * K + k];
      for (int64_t j = 0; j < K; ++j) s += double(z[n * K + j]) * a[j * K + k];
      x[n * K + k] = static_cast<float>(s * (k % 7 == 0 ? 4.0 : 1.0));
    }
  }
  return x;
}
std::vector<double> hessian(const std::vector<float>& x, int64_t N, int64_t K) {
  std::vector<double> H(static_cast<size_t>(K * K), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < K; ++i) {
      for (int64_t j = 0; j < K; ++j) H[i * K + j] += double(x[n * K + i]) * x[n * K + j];
    }
  }
  return H;
}

// || X W^T - X Q^T ||^2 over the calibration rows.
double output_error(const std::vector<float>& x, int64_t N, int64_t K, const std::vector<float>& w,
                    const std::vector<float>& q, int64_t OC) {
  double e = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t o = 0; o < OC; ++o) {
      double d = 0;
      for (int64_t k = 0; k < K; ++k) d += double(x[n * K + k]) * (double(w[o * K + k]) - q[o * K + k]);
      e += d * d;
    }
  }
  return e;
}

TEST(PtqRoundToNearest, MaxRuleIsTheFormatCoresQuantizer) {
  const int64_t rows = 24, cols = 80;
  const auto w = randn(static_cast<size_t>(rows * cols), 3, 0.05f);
  const Nvfp4Weight q = nvfp4::ptq::quantize_weight(w, rows, cols, ScaleRule::max);
  nvfp4::QuantizeOptions o;  // NVFP4 1x16, row-wise, round to nearest
  const auto ref = nvfp4::quantize(w, rows, cols, o);
  EXPECT_EQ(q.codes, ref.row->codes);
  EXPECT_EQ(q.scales, ref.row->scales);
  EXPECT_EQ(q.amax, ref.row->amax);
  EXPECT_EQ(nvfp4::ptq::dequantize(q), nvfp4::dequantize(*ref.row, o));
}

TEST(PtqRoundToNearest, EveryRuleErrsNoMoreThanMaxOnGaussianWeightsAndMseLeast) {
  const int64_t rows = 64, cols = 256;
  const auto w = randn(static_cast<size_t>(rows * cols), 4, 0.02f);
  double err[3] = {};
  for (ScaleRule r : kRules) {
    const auto d = nvfp4::ptq::dequantize(nvfp4::ptq::quantize_weight(w, rows, cols, r));
    for (size_t i = 0; i < w.size(); ++i) err[static_cast<int>(r)] += (double(w[i]) - d[i]) * (double(w[i]) - d[i]);
  }
  EXPECT_LT(err[2], err[0]);
  EXPECT_LE(err[1], err[2]);
}

TEST(PtqRoundToNearest, ASharedAmaxSetsTheTensorScale) {
  const int64_t rows = 4, cols = 32;
  const auto w = randn(static_cast<size_t>(rows * cols), 5);
  const Nvfp4Weight q = nvfp4::ptq::quantize_weight(w, rows, cols, ScaleRule::four_over_six, 100.0f);
  EXPECT_EQ(q.amax, 100.0f);
  EXPECT_EQ(q.decode, 100.0f / 1536.0f);
  // Below the weight's own amax, with a bad shape, or with NaN: errors that say so.
  EXPECT_NE(error_of([&] { nvfp4::ptq::quantize_weight(w, rows, cols, ScaleRule::max, 0.1f); }).find("below the weight's own"),
            std::string::npos);
  EXPECT_NE(error_of([&] { nvfp4::ptq::quantize_weight(w, 8, 32, ScaleRule::max); }).find("128 values for a 8 x 32"),
            std::string::npos);
  EXPECT_NE(error_of([&] { nvfp4::ptq::quantize_weight(std::vector<float>(24), 2, 12, ScaleRule::max); })
                .find("multiple of 16; such a layer stays BF16"),
            std::string::npos);
  auto bad = w;
  bad[37] = NAN;
  EXPECT_THROW(nvfp4::ptq::quantize_weight(bad, rows, cols, ScaleRule::max), nvfp4::NonFiniteError);
  EXPECT_NE(error_of([&] { nvfp4::ptq::quantize_weight(bad, rows, cols, ScaleRule::max); }).find("row 1, column 5"),
            std::string::npos);
}

TEST(PtqGptq, IdentityHessianIsRoundToNearest) {
  const int64_t rows = 16, cols = 64;
  const auto w = randn(static_cast<size_t>(rows * cols), 6, 0.1f);
  std::vector<double> H(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t i = 0; i < cols; ++i) H[i * cols + i] = 3.0;
  for (ScaleRule r : kRules) {
    for (bool act_order : {false, true}) {
      GptqOptions o;
      o.rule = r;
      o.act_order = act_order;
      const auto g = nvfp4::ptq::gptq_quantize(w, rows, cols, H, o);
      const auto rtn = nvfp4::ptq::quantize_weight(w, rows, cols, r);
      EXPECT_EQ(g.weight.codes, rtn.codes) << nvfp4::ptq::scale_rule_name(r) << act_order;
      EXPECT_EQ(g.weight.scales, rtn.scales) << nvfp4::ptq::scale_rule_name(r) << act_order;
      EXPECT_EQ(g.dead_columns, 0);
    }
  }
}

// The optimal-brain-quantization step as first written (Frantar & Alistarh, 2022), in FP64: keep
// the inverse of the (damped) Hessian over the columns not yet quantized; quantize column j, move
// the others by -(w_j - q_j) / Hinv_jj * Hinv_{:,j}, and remove j from the inverse by one step of
// Gaussian elimination. The block scales as gptq_quantize fixes them (from the row's current values
// when a block's first column comes). GPTQ's Cholesky form computes the same thing.
std::vector<uint8_t> textbook_codes(const std::vector<float>& w, int64_t rows, int64_t cols, std::vector<double> H,
                                    double damp, ScaleRule rule, float decode_amax) {
  double mean = 0;
  for (int64_t i = 0; i < cols; ++i) mean += H[i * cols + i];
  mean /= cols;
  for (int64_t i = 0; i < cols; ++i) H[i * cols + i] += damp * mean;
  // The inverse by Gauss-Jordan elimination.
  std::vector<double> A = H, inv(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t i = 0; i < cols; ++i) inv[i * cols + i] = 1;
  for (int64_t c = 0; c < cols; ++c) {
    const double p = A[c * cols + c];
    for (int64_t k = 0; k < cols; ++k) A[c * cols + k] /= p, inv[c * cols + k] /= p;
    for (int64_t r = 0; r < cols; ++r) {
      if (r == c) continue;
      const double f = A[r * cols + c];
      for (int64_t k = 0; k < cols; ++k) A[r * cols + k] -= f * A[c * cols + k], inv[r * cols + k] -= f * inv[c * cols + k];
    }
  }
  const float range = nvfp4::ptq::scale_rule_range(rule);
  const auto t = nvfp4::fmt::nvfp4_tensor_scale_for_range(decode_amax, range);
  const float decode = decode_amax / range;
  std::vector<uint8_t> codes;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> row(w.begin() + r * cols, w.begin() + (r + 1) * cols), Hinv = inv;
    uint8_t scale = 0;
    float enc = 0;
    for (int64_t j = 0; j < cols; ++j) {
      if (j % 16 == 0) {
        float x[16], bm = 0;
        for (int e = 0; e < 16; ++e) x[e] = static_cast<float>(row[j + e]), bm = std::max(bm, std::fabs(x[e]));
        scale = rule == ScaleRule::max ? nvfp4::fmt::nvfp4_block_scale(bm, t)
                : rule == ScaleRule::mse ? nvfp4::fmt::nvfp4_block_scale_mse(x, 16, bm, t, decode)
                                         : nvfp4::fmt::nvfp4_block_scale_four_over_six(x, 16, bm, t, decode);
        enc = nvfp4::fmt::nvfp4_block_encode_factor(scale, t);
      }
      const uint8_t code = nvfp4::fmt::nvfp4_encode_rne(static_cast<float>(row[j]), enc);
      codes.push_back(code);
      const double q = nvfp4::fmt::nvfp4_decode(code, scale, decode);
      const double d = Hinv[j * cols + j], err = (row[j] - q) / d;
      for (int64_t k = j + 1; k < cols; ++k) row[k] -= err * Hinv[k * cols + j];
      for (int64_t a = j + 1; a < cols; ++a) {
        for (int64_t b = j + 1; b < cols; ++b) Hinv[a * cols + b] -= Hinv[a * cols + j] * Hinv[j * cols + b] / d;
      }
    }
  }
  return codes;
}

uint8_t code_at(const Nvfp4Weight& q, int64_t i) {
  const uint8_t byte = q.codes[static_cast<size_t>(i / 2)];
  return i % 2 == 0 ? (byte & 0x0F) : (byte >> 4);
}

TEST(PtqGptq, EqualsTheTextbookFp64Update) {
  const int64_t rows = 12, cols = 48, N = 200;
  const auto x = correlated_inputs(N, cols, 7);
  const auto H = hessian(x, N, cols);
  const auto w = randn(static_cast<size_t>(rows * cols), 8, 0.1f);
  for (ScaleRule r : kRules) {
    GptqOptions o;
    o.rule = r;
    const auto g = nvfp4::ptq::gptq_quantize(w, rows, cols, H, o);
    const auto want = textbook_codes(w, rows, cols, H, o.damp, r, g.weight.amax);
    int64_t same = 0;
    for (int64_t i = 0; i < rows * cols; ++i) same += code_at(g.weight, i) == want[static_cast<size_t>(i)];
    // The two are equal in exact arithmetic; in FP64 a value within ~1e-12 of a rounding boundary
    // could go either way. None did on this data.
    EXPECT_EQ(same, rows * cols) << nvfp4::ptq::scale_rule_name(r);
  }
}

TEST(PtqGptq, LowersTheLayerOutputErrorBelowRoundToNearest) {
  const int64_t OC = 32, K = 64, N = 512;
  const auto x = correlated_inputs(N, K, 9);
  const auto H = hessian(x, N, K);
  const auto w = randn(static_cast<size_t>(OC * K), 10, 0.05f);
  for (ScaleRule r : kRules) {
    const double rtn = output_error(x, N, K, w, nvfp4::ptq::dequantize(nvfp4::ptq::quantize_weight(w, OC, K, r)), OC);
    for (bool act_order : {false, true}) {
      GptqOptions o;
      o.rule = r;
      o.act_order = act_order;
      const double g = output_error(x, N, K, w, nvfp4::ptq::dequantize(nvfp4::ptq::gptq_quantize(w, OC, K, H, o).weight), OC);
      EXPECT_LT(g, 0.8 * rtn) << nvfp4::ptq::scale_rule_name(r) << " act_order " << act_order << ": gptq/rtn " << g / rtn;
      std::printf("gptq %s%s: output error %.3fx round to nearest's\n", std::string(nvfp4::ptq::scale_rule_name(r)).c_str(),
                  act_order ? " act_order" : "", g / rtn);
    }
  }
}

TEST(PtqGptq, DeadInputsAndBadHessiansAreHandled) {
  const int64_t rows = 4, cols = 32, N = 100;
  auto x = correlated_inputs(N, cols, 11);
  for (int64_t n = 0; n < N; ++n) x[n * cols + 5] = 0;  // input 5 never fires
  auto H = hessian(x, N, cols);
  const auto w = randn(static_cast<size_t>(rows * cols), 12, 0.1f);
  const auto g = nvfp4::ptq::gptq_quantize(w, rows, cols, H, GptqOptions{});
  EXPECT_EQ(g.dead_columns, 1);
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(nvfp4::ptq::dequantize(g.weight)[r * cols + 5], 0.0f);
  EXPECT_THROW(nvfp4::ptq::gptq_quantize(w, rows, cols, std::vector<double>(10), GptqOptions{}), nvfp4::Error);
  H[3] = NAN;
  EXPECT_THROW(nvfp4::ptq::gptq_quantize(w, rows, cols, H, GptqOptions{}), nvfp4::Error);
}

}  // namespace
