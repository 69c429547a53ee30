// CPU reference matmuls (src/kernels/cpu/gemm.cpp): the gradient check, BLAS against plain loops,
// empty shapes, errors. Harness: test_cpu_ops_support.hpp.
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

// The double-precision reference forward (independent of the ops).
Vd ref_matmul(const Vd& inp, const Vd& w, int64_t N, int64_t C, int64_t OC) {
  Vd out(static_cast<size_t>(N * OC), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t c = 0; c < C; ++c) out[n * OC + o] += inp[n * C + c] * w[o * C + c];
  return out;
}

TEST(CpuOpsGrad, Matmul) {
  constexpr int64_t OC = 12;
  GradCase gc;
  gc.name = "matmul";
  gc.inputs = {randn(N * C, 1), randn(OC * C, 2)};
  gc.input_names = {"inp", "weight"};
  gc.K = C;  // the longest reduction: C (forward), OC (dinp), N (dweight)
  gc.ref = [](const std::vector<Vd>& x) { return ref_matmul(x[0], x[1], N, C, OC); };
  gc.fwd = [](const std::vector<Vf>& x) {
    Vf out(N * OC);
    cpu::matmul_forward(out.data(), x[0].data(), x[1].data(), N, C, OC);
    return out;
  };
  gc.bwd = [](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
    cpu::matmul_backward(g[0].data(), g[1].data(), dout.data(), x[0].data(), x[1].data(), N, C, OC);
  };
  run_grad_case(gc);
}

// The BLAS call (row-major, weight transposed, leading dimensions) against three plain loops.
// Bound: each of the two FP32 dot products is within gamma_C * sum_c |x_c w_c| of the exact
// value (gamma_C = C u / (1 - C u), u = 2^-24), so they differ by at most twice that.
TEST(CpuOpsMatmul, BlasMatchesNaive) {
  struct Shape { int64_t n, c, oc; };
  for (const Shape s : {Shape{37, 53, 29}, Shape{1, 1, 1}, Shape{64, 300, 70}, Shape{5, 1000, 3}}) {
    SCOPED_TRACE("N=" + std::to_string(s.n) + " C=" + std::to_string(s.c) + " OC=" + std::to_string(s.oc));
    const Vf x = randn(s.n * s.c, 21), w = randn(s.oc * s.c, 22);
    Vf blas(s.n * s.oc, NAN), naive(s.n * s.oc, NAN);  // NaN: beta = 0 must not read out
    cpu::matmul_forward(blas.data(), x.data(), w.data(), s.n, s.c, s.oc);
    cpu::matmul_forward_naive(naive.data(), x.data(), w.data(), s.n, s.c, s.oc);
    const double u = kEps32 / 2, gamma = s.c * u / (1 - s.c * u);
    int bad = 0;
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t o = 0; o < s.oc; ++o) {
        double abs_sum = 0.0;
        for (int64_t c = 0; c < s.c; ++c) abs_sum += std::abs(double(x[n * s.c + c]) * w[o * s.c + c]);
        const double diff = std::abs(double(blas[n * s.oc + o]) - naive[n * s.oc + o]);
        if (!(diff <= 2 * gamma * abs_sum)) ++bad;
      }
    EXPECT_EQ(bad, 0);
  }
}

TEST(CpuOpsMatmul, EmptyShapesAndSkippedGradients) {
  Vf out(6, NAN);
  cpu::matmul_forward(out.data(), nullptr, nullptr, 2, 0, 3);  // empty contraction: zeros
  for (float o : out) EXPECT_EQ(o, 0.0f);
  cpu::matmul_forward(nullptr, nullptr, nullptr, 0, 4, 3);    // no rows: nothing happens
  // dinp = nullptr: only dweight is computed
  const Vf x = randn(4 * 3, 1), w = randn(2 * 3, 2), dout = randn(4 * 2, 3);
  Vf dw(2 * 3, 0.0f);
  cpu::matmul_backward(nullptr, dw.data(), dout.data(), x.data(), w.data(), 4, 3, 2);
  Vd want(6, 0.0);
  for (int64_t o = 0; o < 2; ++o)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t n = 0; n < 4; ++n) want[o * 3 + c] += double(dout[n * 2 + o]) * x[n * 3 + c];
  EXPECT_CLOSE(dw, want, 4, "dweight");
  EXPECT_THROW(cpu::matmul_forward(out.data(), x.data(), w.data(), -1, 3, 2), nvfp4::Error);
}

// The CLI prints "nvfp4: " + what(): an op's message names the op and the value, and must not
// carry that prefix itself (it did: "nvfp4: nvfp4: cpu::matmul_forward: ...").
TEST(CpuOpsMatmul, ErrorNamesTheOpWithoutTheCliPrefix) {
  try {
    cpu::matmul_forward(nullptr, nullptr, nullptr, -1, 3, 2);
    FAIL() << "N = -1 was accepted";
  } catch (const nvfp4::Error& e) {
    EXPECT_EQ(std::string(e.what()), "cpu::matmul_forward: N = -1 is negative");
  }
}

}  // namespace
