// CPU reference RMSNorm (src/kernels/cpu/norm.cpp): the gradient check. Harness: test_cpu_ops_support.hpp.
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

Vd ref_rmsnorm(const Vd& inp, const Vd& w, int64_t N, int64_t C, double eps) {
  Vd out(inp.size());
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0.0;
    for (int64_t c = 0; c < C; ++c) ss += inp[n * C + c] * inp[n * C + c];
    const double r = 1.0 / std::sqrt(ss / C + eps);
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = inp[n * C + c] * r * w[c];
  }
  return out;
}

TEST(CpuOpsGrad, RmsNorm) {
  constexpr float eps = 1e-5f;
  GradCase gc;
  gc.name = "rmsnorm";
  gc.inputs = {randn(N * C, 3), randn(C, 4)};
  gc.input_names = {"inp", "weight"};
  gc.K = C + 8;
  gc.ref = [](const std::vector<Vd>& x) { return ref_rmsnorm(x[0], x[1], N, C, eps); };
  gc.fwd = [](const std::vector<Vf>& x) {
    Vf out(N * C), rstd(N);
    cpu::rmsnorm_forward(out.data(), rstd.data(), x[0].data(), x[1].data(), N, C, eps);
    return out;
  };
  gc.bwd = [](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
    Vf out(N * C), rstd(N);
    cpu::rmsnorm_forward(out.data(), rstd.data(), x[0].data(), x[1].data(), N, C, eps);
    cpu::rmsnorm_backward(g[0].data(), g[1].data(), dout.data(), x[0].data(), x[1].data(), rstd.data(), N, C);
  };
  run_grad_case(gc);
}

}  // namespace
