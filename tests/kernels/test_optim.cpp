// CPU reference AdamW and global norm (src/kernels/cpu/optim.cpp): steps by hand. Harness:
// test_cpu_ops_support.hpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "kernels/test_cpu_ops_support.hpp"
#include "nvfp4/error.hpp"

namespace {

using namespace cpu_ops_test;

// By hand, with hyperparameters that are exact binary fractions so that m, v and the bias
// corrections are exact in FP32: lr 1/8, betas (7/8, 15/16), eps 2^-20, weight decay 1/16.
//  step 1, p = 1, g = 1/2:  m = 1/16, v = 1/64, mhat = 1/2, vhat = 1/4,
//          p = 1 - 1/8 * (1/2 / (1/2 + 2^-20) + 1/16 * 1) = 0.867187738...
//  step 2, g = -1/4:        m = 3/128, v = 19/1024, corrections 15/64 and 31/256,
//          mhat = 1/10, vhat = 19/124, p -= 1/8 * (mhat / (sqrt(vhat) + 2^-20) + 1/16 * p)
//  decoupled decay alone (g = 0, so m = v = 0): p = 2 - 1/8 * 1/16 * 2 = 1.984375 exactly;
//  L2 decay coupled into the gradient would instead move p by about lr (Adam normalizes it).
TEST(CpuOpsAdamW, MatchesHandComputedSteps) {
  constexpr float lr = 0.125f, b1 = 0.875f, b2 = 0.9375f, wd = 0.0625f;
  const float eps = std::ldexp(1.0f, -20);
  float p[2] = {1.0f, 2.0f}, m[2] = {0.0f, 0.0f}, v[2] = {0.0f, 0.0f};
  const float g1[2] = {0.5f, 0.0f};
  cpu::adamw_update(p, g1, m, v, 2, lr, b1, b2, eps, wd, 1);
  EXPECT_EQ(m[0], 1.0f / 16);
  EXPECT_EQ(v[0], 1.0f / 64);
  const double p1 = 1.0 - 0.125 * (0.5 / (0.5 + std::ldexp(1.0, -20)) + 0.0625);
  EXPECT_NEAR(p[0], p1, 2 * kEps32);
  EXPECT_EQ(p[1], 1.984375f);
  EXPECT_EQ(m[1], 0.0f);
  EXPECT_EQ(v[1], 0.0f);

  const float g2[2] = {-0.25f, 0.0f};
  cpu::adamw_update(p, g2, m, v, 2, lr, b1, b2, eps, wd, 2);
  EXPECT_EQ(m[0], 3.0f / 128);
  EXPECT_EQ(v[0], 19.0f / 1024);
  const double mhat = 0.1, vhat = 19.0 / 124;
  const double p2 = p1 - 0.125 * (mhat / (std::sqrt(vhat) + std::ldexp(1.0, -20)) + 0.0625 * p1);
  EXPECT_NEAR(p[0], p2, 4 * kEps32);
  EXPECT_THROW(cpu::adamw_update(p, g2, m, v, 2, lr, b1, b2, eps, wd, 0), nvfp4::Error);
}

TEST(CpuOpsAdamW, GlobalNorm) {
  const float g[2] = {3.0f, 4.0f};
  EXPECT_EQ(cpu::global_norm(g, 2), 5.0);
  EXPECT_EQ(cpu::global_norm(g, 0), 0.0);
  const Vf x = randn(10001, 61);  // three chunks, the last partial
  double want = 0.0;
  for (float f : x) want += double(f) * f;
  EXPECT_NEAR(cpu::global_norm(x.data(), 10001), std::sqrt(want), 1e-12 * std::sqrt(want));
}

}  // namespace
