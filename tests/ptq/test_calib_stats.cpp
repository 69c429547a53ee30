// Calibration statistics (src/ptq/calib_stats.cpp): percentiles of |x| against the exact order
// statistic of the sorted values, and token coverage against hand-computed distributions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "nvfp4/error.hpp"
#include "nvfp4/ptq.hpp"

namespace {

using nvfp4::ptq::AbsStats;

TEST(PtqAbsStats, PercentilesBracketTheExactOrderStatistic) {
  std::mt19937_64 rng(5);
  std::student_t_distribution<float> heavy(3.0f);
  std::vector<float> x(200000);
  for (auto& v : x) v = 0.01f * heavy(rng);
  x[17] = 0.0f;
  x[99] = 1234.5f;  // an outlier: the max, far above the 99.99th percentile
  AbsStats a, b, all;
  a.add(std::span<const float>(x).first(70000));
  b.add(std::span<const float>(x).subspan(70000));
  all.add(x);
  a.merge(b);  // merged halves = the whole
  std::vector<float> mag(x.size());
  std::transform(x.begin(), x.end(), mag.begin(), [](float v) { return std::fabs(v); });
  std::sort(mag.begin(), mag.end());
  EXPECT_EQ(all.amax(), 1234.5f);
  EXPECT_EQ(all.count(), 200000);
  for (double p : {1.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0}) {
    const auto k = static_cast<size_t>(std::ceil(p / 100.0 * x.size())) - 1;  // the order statistic
    const float got = all.percentile(p), exact = mag[k];
    EXPECT_EQ(a.percentile(p), got) << p;
    EXPECT_GE(got, exact) << p;
    EXPECT_LE(got, exact * (1.0f + 1.0f / 64.0f) + 1e-30f) << p;
  }
  EXPECT_LT(all.percentile(99.99), 0.01f * 1234.5f);
}

TEST(PtqAbsStats, ZerosNonFiniteAndBadPercentiles) {
  AbsStats s;
  EXPECT_EQ(s.percentile(50), 0.0f);
  const std::vector<float> x = {0, 0, 0, 2, NAN, INFINITY, -3};
  s.add(x);
  EXPECT_EQ(s.count(), 5);
  EXPECT_EQ(s.non_finite(), 2);
  EXPECT_EQ(s.amax(), 3.0f);
  EXPECT_EQ(s.percentile(60), 0.0f);  // three of five are zeros
  EXPECT_GE(s.percentile(80), 2.0f);
  EXPECT_LE(s.percentile(80), 3.0f);
  EXPECT_THROW(s.percentile(0), nvfp4::Error);
  EXPECT_THROW(s.percentile(101), nvfp4::Error);
}

TEST(PtqCoverage, CountsAndJensenShannon) {
  const std::vector<int32_t> calib = {1, 1, 2, 3}, eval = {1, 2, 2, 4, 4, 4};
  const auto c = nvfp4::ptq::token_coverage(calib, eval);
  EXPECT_EQ(c.calib_tokens, 4);
  EXPECT_EQ(c.calib_distinct, 3);
  EXPECT_EQ(c.eval_tokens, 6);
  EXPECT_EQ(c.eval_distinct, 3);
  EXPECT_DOUBLE_EQ(c.eval_unseen_share, 0.5);  // the three 4s
  // By hand: P = (1/2, 1/4, 1/4, 0), Q = (1/6, 1/3, 0, 1/2) over ids 1, 2, 3, 4.
  const double P[] = {0.5, 0.25, 0.25, 0}, Q[] = {1.0 / 6, 1.0 / 3, 0, 0.5};
  double js = 0;
  for (int i = 0; i < 4; ++i) {
    const double m = (P[i] + Q[i]) / 2;
    if (P[i] > 0) js += 0.5 * P[i] * std::log2(P[i] / m);
    if (Q[i] > 0) js += 0.5 * Q[i] * std::log2(Q[i] / m);
  }
  EXPECT_NEAR(c.js_divergence_bits, js, 1e-15);
  EXPECT_EQ(nvfp4::ptq::token_coverage(calib, calib).js_divergence_bits, 0.0);
  EXPECT_NEAR(nvfp4::ptq::token_coverage(std::vector<int32_t>{1, 2}, std::vector<int32_t>{3, 4}).js_divergence_bits, 1.0,
              1e-15);
  EXPECT_EQ(nvfp4::ptq::token_coverage({}, eval).eval_unseen_share, 1.0);
}

}  // namespace
