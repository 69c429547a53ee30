// CPU reference SwiGLU and bias gradient (src/kernels/cpu/elementwise.cpp): the gradient checks;
// the inference row ops scale_rows_bias and gather_rows. Harness: test_cpu_ops_support.hpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "kernels/test_cpu_ops_support.hpp"
#include "nvfp4/error.hpp"
#include "support/test_support.hpp"

namespace {

using namespace cpu_ops_test;

Vd ref_swiglu(const Vd& gate, const Vd& up) {
  Vd out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) out[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  return out;
}

TEST(CpuOpsGrad, SwiGlu) {
  GradCase gc;
  gc.name = "swiglu";
  gc.inputs = {randn(N * F, 9, 2.0f), randn(N * F, 10)};
  gc.input_names = {"gate", "up"};
  gc.K = 8;
  gc.ref = [](const std::vector<Vd>& x) { return ref_swiglu(x[0], x[1]); };
  gc.fwd = [](const std::vector<Vf>& x) {
    Vf out(N * F);
    cpu::swiglu_forward(out.data(), x[0].data(), x[1].data(), N * F);
    return out;
  };
  gc.bwd = [](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
    cpu::swiglu_backward(g[0].data(), g[1].data(), dout.data(), x[0].data(), x[1].data(), N * F);
  };
  run_grad_case(gc);
}

// out = x + bias (scale_rows_bias in place, the forward of a linear layer's bias): dx is dout,
// dbias = bias_backward (column sums of dout), checked against finite differences.
TEST(CpuOpsGrad, Bias) {
  constexpr int64_t N2 = 37, OC = 19;
  GradCase gc;
  gc.name = "bias";
  gc.inputs = {randn(N2 * OC, 75), randn(OC, 76)};
  gc.input_names = {"x", "bias"};
  gc.K = N2 + 2;
  gc.ref = [](const std::vector<Vd>& x) {
    Vd out(x[0].size());
    for (int64_t n = 0; n < N2; ++n)
      for (int64_t o = 0; o < OC; ++o) out[n * OC + o] = x[0][n * OC + o] + x[1][o];
    return out;
  };
  gc.fwd = [](const std::vector<Vf>& x) {
    Vf out = x[0];
    cpu::scale_rows_bias(out.data(), out.data(), nullptr, x[1].data(), N2, OC);
    return out;
  };
  gc.bwd = [](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>&) {
    for (size_t i = 0; i < dout.size(); ++i) g[0][i] += dout[i];
    cpu::bias_backward(g[1].data(), dout.data(), N2, OC);
  };
  run_grad_case(gc);
}

// bias_backward's order: each column summed from zero in increasing n, then added to dbias.
TEST(CpuOpsElementwise, BiasBackwardOrderAndAccumulation) {
  constexpr int64_t N2 = 300, OC = 5;
  const Vf dout = randn(N2 * OC, 77), start = randn(OC, 78);
  Vf db = start, want(OC);
  cpu::bias_backward(db.data(), dout.data(), N2, OC);
  for (int64_t o = 0; o < OC; ++o) {
    float sum = 0.0f;
    for (int64_t n = 0; n < N2; ++n) sum += dout[n * OC + o];
    want[o] = start[o] + sum;
  }
  EXPECT_TRUE(same_bits(db, want));
  Vf none = start;
  cpu::bias_backward(none.data(), dout.data(), 0, OC);  // no rows: adds 0
  EXPECT_TRUE(same_bits(none, start));
}

// Each output is the product rounded, then the sum rounded (no fused multiply-add), with a null
// factor or bias skipping its step; in place gives the same bits.
TEST(CpuOpsElementwise, ScaleRowsBias) {
  constexpr int64_t N2 = 7, OC = 45;
  const Vf in = randn(N2 * OC, 71, 3.0f), factor = randn(N2, 72), bias = randn(OC, 73);
  for (const bool with_factor : {false, true})
    for (const bool with_bias : {false, true}) {
      SCOPED_TRACE(std::string("factor ") + (with_factor ? "yes" : "no") + ", bias " + (with_bias ? "yes" : "no"));
      Vf out(in.size()), want(in.size()), inplace = in;
      const float* f = with_factor ? factor.data() : nullptr;
      const float* b = with_bias ? bias.data() : nullptr;
      cpu::scale_rows_bias(out.data(), in.data(), f, b, N2, OC);
      cpu::scale_rows_bias(inplace.data(), inplace.data(), f, b, N2, OC);
      for (int64_t n = 0; n < N2; ++n)
        for (int64_t o = 0; o < OC; ++o) {
          const float prod = with_factor ? in[n * OC + o] * factor[n] : in[n * OC + o];
          want[n * OC + o] = with_bias ? prod + bias[o] : prod;
        }
      EXPECT_TRUE(same_bits(out, want));
      EXPECT_TRUE(same_bits(inplace, want));
    }
  // -0.0 stays -0.0 without a bias (0 is not added)
  const Vf negzero = {-0.0f};
  Vf y(1);
  cpu::scale_rows_bias(y.data(), negzero.data(), nullptr, nullptr, 1, 1);
  EXPECT_TRUE(std::signbit(y[0]));
}

TEST(CpuOpsElementwise, GatherRows) {
  constexpr int64_t NIN = 11, C2 = 13;
  const Vf in = randn(NIN * C2, 74);
  const Ints rows = {10, 0, 3, 3, 7};
  Vf out(rows.size() * C2);
  cpu::gather_rows(out.data(), in.data(), rows.data(), static_cast<int64_t>(rows.size()), NIN, C2);
  for (size_t i = 0; i < rows.size(); ++i)
    for (int64_t c = 0; c < C2; ++c) EXPECT_EQ(out[i * C2 + c], in[rows[i] * C2 + c]) << i << "," << c;
  const Ints bad = {1, 11};
  EXPECT_EQ(nvfp4::test::error_of([&] { cpu::gather_rows(out.data(), in.data(), bad.data(), 2, NIN, C2); }),
            "cpu::gather_rows: rows[1] = 11 is outside the input's rows [0, 11)");
}

}  // namespace
